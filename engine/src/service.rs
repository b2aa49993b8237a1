//! The mail stack as one service: the directory, the delivery writer and the listeners. The
//! listeners run only once the stack is installed (`POST /email/install`), which is persisted,
//! so an installed stack listens again after a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wispd_store::schema::MAIL_META;
use wispd_store::{Store, StoreError};

use crate::delivery::Deliverer;
use crate::directory::Directory;
use crate::imap::{self, ImapSettings};
use crate::limits::MemoryBudget;
use crate::login::Logins;
use crate::metrics::MailMetrics;
use crate::pop3::{self, Pop3Settings};
use crate::queue::{Queue, QueueSettings};
use crate::smtp::{self, Port, SmtpSettings};

/// `MAIL_META` key holding the unix time the stack was installed.
const INSTALLED_AT: &str = "installed_at";

/// What the mail service is built from.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub smtp: SmtpSettings,
    /// Inbound (MX) listeners.
    pub smtp_listen: Vec<SocketAddr>,
    /// Submission listeners: STARTTLS (587) and implicit TLS (465).
    pub submission_listen: Vec<SocketAddr>,
    pub submissions_listen: Vec<SocketAddr>,
    pub imap: ImapSettings,
    /// IMAP listeners (STARTTLS) and IMAPS listeners (implicit TLS).
    pub imap_listen: Vec<SocketAddr>,
    pub imaps_listen: Vec<SocketAddr>,
    /// DNS servers for lookups (`[dns].nameservers`); empty = the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Check the senders of mail arriving at the MX (`None`: don't).
    pub verify_senders: Option<crate::inbound::DmarcMode>,
    /// TLS for SMTP STARTTLS, submission(s) and ManageSieve; without it STARTTLS is not
    /// offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS for IMAP and POP3 when their certificates differ (`None`: `tls`).
    pub imap_tls: Option<Arc<rustls::ServerConfig>>,
    pub pop3_tls: Option<Arc<rustls::ServerConfig>>,
    /// The outbound queue.
    pub queue: QueueSettings,
    /// Bytes of message data (SMTP bodies, IMAP APPEND literals) held in memory at once.
    pub memory_budget: usize,
    /// Sieve limits (`[sieve]`).
    pub sieve: crate::sieve::SieveSettings,
    /// ManageSieve listeners (`[sieve] listen`).
    pub sieve_listen: Vec<SocketAddr>,
    pub pop3: Pop3Settings,
    /// POP3 listeners (STLS) and POP3S listeners (implicit TLS).
    pub pop3_listen: Vec<SocketAddr>,
    pub pop3s_listen: Vec<SocketAddr>,
    /// Seconds a rate-limit "hour" lasts (`[smtp] rate_window_seconds`; a day is 24 of them).
    pub rate_hour_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// The state of the stack, for `/email/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailStatus {
    pub installed: bool,
    /// Addresses the SMTP engine listens on, MX then submission (empty when it isn't running).
    pub smtp: Vec<SocketAddr>,
    /// Addresses the IMAP engine listens on (IMAP and IMAPS).
    pub imap: Vec<SocketAddr>,
}

pub struct Mail {
    config: MailConfig,
    store: Store,
    directory: Directory,
    deliverer: Deliverer,
    queue: Arc<Queue>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Bound (SMTP, IMAP) addresses once started.
    running: tokio::sync::Mutex<(Vec<SocketAddr>, Vec<SocketAddr>)>,
    logins: Arc<Logins>,
    memory: Arc<MemoryBudget>,
    metrics: MailMetrics,
    filters: crate::sieve::Filters,
    rbl: Arc<crate::rbl::Rbl>,
    spam: Arc<crate::spam::Spam>,
    clamav: Arc<crate::clamav::Clamav>,
    ratelimit: Arc<crate::ratelimit::RateLimits>,
    lists: Arc<crate::lists::Lists>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("config", &self.config)
            .finish()
    }
}

impl Mail {
    /// Builds the service and starts the delivery writer; listeners start with [`Mail::start`].
    pub fn new(
        config: MailConfig,
        store: Store,
        directory: Directory,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> std::io::Result<Mail> {
        let metrics = MailMetrics::new();
        let deliverer = Deliverer::start_with_metrics(store.clone(), metrics.clone())?;
        let filters = crate::sieve::Filters::new(store.clone(), config.sieve.clone());
        let queue = Arc::new(
            Queue::new(
                config.queue.clone(),
                store.clone(),
                directory.clone(),
                deliverer.clone(),
                &config.nameservers,
            )?
            .with_metrics(metrics.clone())
            .with_filters(filters.clone()),
        );
        let lists = Arc::new(crate::lists::Lists::new(
            store.clone(),
            directory.clone(),
            deliverer.clone(),
            config.smtp.hostname.clone(),
            config.queue.api_url.to_string(),
            &config.nameservers,
        ));
        let logins = Logins::new(directory.clone()).map_err(std::io::Error::other)?;
        // the buffer a message is read into may run a read past its size: the largest message
        // must still fit when the server is otherwise idle
        let largest = config
            .smtp
            .max_message_size
            .saturating_add(crate::limits::READ_SLACK);
        let memory = MemoryBudget::new(config.memory_budget, largest);
        let rbl = Arc::new(
            crate::rbl::Rbl::new(store.clone(), &config.nameservers)
                .map_err(std::io::Error::other)?,
        );
        let spam = Arc::new(crate::spam::Spam::new(store.clone()).map_err(std::io::Error::other)?);
        let clamav =
            Arc::new(crate::clamav::Clamav::new(store.clone()).map_err(std::io::Error::other)?);
        let ratelimit = Arc::new(
            crate::ratelimit::RateLimits::new(store.clone(), config.rate_hour_seconds)
                .map_err(std::io::Error::other)?,
        );
        Ok(Mail {
            config,
            store,
            directory,
            deliverer,
            queue,
            shutdown,
            tracker,
            running: tokio::sync::Mutex::new((Vec::new(), Vec::new())),
            logins,
            memory,
            metrics,
            filters,
            rbl,
            spam,
            clamav,
            ratelimit,
            lists,
        })
    }

    /// Mailing lists (`/email/mailinglist`): held posts are approved through this.
    pub fn lists(&self) -> &Arc<crate::lists::Lists> {
        &self.lists
    }

    /// Queues a notice wispd itself sends (a firewall alert) to `to`, from `from` with the
    /// null return path; it is durable when this returns. Returns the queue id.
    pub async fn send_notice(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<u64, MailError> {
        let t = wispd_store::unix_now();
        let message =
            crate::queue::notice::build(&self.config.smtp.hostname, from, to, subject, body, t);
        let out = crate::delivery::Outbound {
            message,
            sender: String::new(),
            source: "notice",
            recipients: vec![(to.to_string(), None)],
        };
        let id = self
            .deliverer
            .write(move |w| crate::delivery::enqueue(w, &out, t))
            .await
            .map_err(|e| MailError::Config(format!("queueing the notice: {e}")))?;
        self.deliverer.queued().push(id);
        Ok(id)
    }

    /// DNSBL settings and lookups (`/email/rbl`).
    pub fn rbl(&self) -> &Arc<crate::rbl::Rbl> {
        &self.rbl
    }

    /// Spam scoring and greylisting (`/email/spam`).
    pub fn spam(&self) -> &Arc<crate::spam::Spam> {
        &self.spam
    }

    /// Virus scanning and the quarantine (`/email/clamav`).
    pub fn clamav(&self) -> &Arc<crate::clamav::Clamav> {
        &self.clamav
    }

    /// Rate-limit groups and the MX's per-network caps (`/email/ratelimit`).
    pub fn ratelimit(&self) -> &Arc<crate::ratelimit::RateLimits> {
        &self.ratelimit
    }

    pub fn hostname(&self) -> &str {
        &self.config.smtp.hostname
    }

    /// The accounts' Sieve scripts and autoresponders.
    pub fn filters(&self) -> &crate::sieve::Filters {
        &self.filters
    }

    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.config.nameservers
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Whether the stack has been installed.
    pub fn installed(&self) -> Result<bool, StoreError> {
        Ok(self
            .store
            .read(|r| r.get(&MAIL_META, INSTALLED_AT))?
            .is_some())
    }

    /// Binds every listener and starts serving; nothing is started unless all bind. Does
    /// nothing when already running.
    pub async fn start(&self) -> Result<(), MailError> {
        let mut running = self.running.lock().await;
        if !running.0.is_empty() || !running.1.is_empty() {
            return Ok(());
        }
        let listeners = bind("smtp.listen", &self.config.smtp_listen).await?;
        let submission = bind("smtp.submission", &self.config.submission_listen).await?;
        let submissions = bind("smtp.submissions", &self.config.submissions_listen).await?;
        let imap_listeners = bind("imap.listen", &self.config.imap_listen).await?;
        let imaps_listeners = bind("imap.imaps", &self.config.imaps_listen).await?;
        let sieve_listeners = bind("sieve.listen", &self.config.sieve_listen).await?;
        let pop3_listeners = bind("pop3.listen", &self.config.pop3_listen).await?;
        let pop3s_listeners = bind("pop3.pop3s", &self.config.pop3s_listen).await?;
        self.tracker.spawn(
            self.queue
                .clone()
                .run(self.shutdown.clone(), self.tracker.clone()),
        );
        self.tracker
            .spawn(purge_seen(self.filters.clone(), self.shutdown.clone()));
        let mut server = smtp::Server::new(
            self.config.smtp.clone(),
            self.store.clone(),
            self.directory.clone(),
            self.deliverer.clone(),
            self.queue.clone(),
            self.config.tls.clone(),
            self.shutdown.clone(),
            self.logins.clone(),
            self.memory.clone(),
            self.metrics.clone(),
        )
        .with_filters(self.filters.clone());
        if let Some(mode) = self.config.verify_senders {
            let inbound = crate::inbound::Inbound::new(
                &self.config.nameservers,
                self.config.smtp.hostname.clone(),
                mode,
            )
            .map_err(|e| MailError::Config(format!("the resolver for sender checks: {e}")))?;
            server = server.with_inbound(Arc::new(inbound));
        }
        self.tracker.spawn(prune_greylist(
            self.spam.clone(),
            self.clamav.clone(),
            self.shutdown.clone(),
        ));
        let server = Arc::new(
            server
                .with_rbl(self.rbl.clone())
                .with_spam(self.spam.clone())
                .with_clamav(self.clamav.clone())
                .with_ratelimit(self.ratelimit.clone())
                .with_lists(self.lists.clone()),
        );
        let mut bound = Vec::new();
        let all = listeners
            .into_iter()
            .map(|l| (l, Port::Mx))
            .chain(submission.into_iter().map(|l| (l, Port::Submission)))
            .chain(submissions.into_iter().map(|l| (l, Port::Submissions)));
        for (l, port) in all {
            if let Ok(a) = l.local_addr() {
                bound.push(a);
            }
            self.tracker
                .spawn(smtp::serve(l, server.clone(), self.tracker.clone(), port));
        }
        let imap = Arc::new(imap::Server::new(
            self.config.imap.clone(),
            self.store.clone(),
            self.deliverer.changes().clone(),
            self.config
                .imap_tls
                .clone()
                .or_else(|| self.config.tls.clone()),
            self.shutdown.clone(),
            self.logins.clone(),
            self.memory.clone(),
            self.metrics.clone(),
        ));
        let mut imap_bound = Vec::new();
        for (l, implicit) in imap_listeners
            .into_iter()
            .map(|l| (l, false))
            .chain(imaps_listeners.into_iter().map(|l| (l, true)))
        {
            if let Ok(a) = l.local_addr() {
                imap_bound.push(a);
            }
            self.tracker
                .spawn(imap::serve(l, imap.clone(), self.tracker.clone(), implicit));
        }
        let managesieve = Arc::new(crate::sieve::manage::Server::new(
            self.filters.clone(),
            self.config.tls.clone(),
            self.logins.clone(),
            self.shutdown.clone(),
            self.metrics.clone(),
        ));
        let mut sieve_bound = Vec::new();
        for l in sieve_listeners {
            if let Ok(a) = l.local_addr() {
                sieve_bound.push(a);
            }
            self.tracker.spawn(crate::sieve::manage::serve(
                l,
                managesieve.clone(),
                self.tracker.clone(),
            ));
        }
        let pop3 = Arc::new(pop3::Server::new(
            self.config.pop3.clone(),
            self.store.clone(),
            self.deliverer.changes().clone(),
            self.config
                .pop3_tls
                .clone()
                .or_else(|| self.config.tls.clone()),
            self.logins.clone(),
            self.shutdown.clone(),
            self.metrics.clone(),
        ));
        let mut pop3_bound = Vec::new();
        for (l, implicit) in pop3_listeners
            .into_iter()
            .map(|l| (l, false))
            .chain(pop3s_listeners.into_iter().map(|l| (l, true)))
        {
            if let Ok(a) = l.local_addr() {
                pop3_bound.push(a);
            }
            self.tracker
                .spawn(pop3::serve(l, pop3.clone(), self.tracker.clone(), implicit));
        }
        tracing::info!(smtp = ?bound, imap = ?imap_bound, sieve = ?sieve_bound, pop3 = ?pop3_bound, "mail listeners started");
        *running = (bound, imap_bound);
        Ok(())
    }

    /// What the engine counts, for `/api/v1/metrics`.
    pub fn metrics(&self) -> &MailMetrics {
        &self.metrics
    }

    /// The login gate (failures per client address, for the firewall's bans to read).
    pub fn logins(&self) -> &Arc<Logins> {
        &self.logins
    }

    /// Installs the stack: starts the listeners, then records that it is installed. Idempotent.
    pub async fn install(&self) -> Result<MailStatus, MailError> {
        self.start().await?;
        if !self.installed()? {
            let now = u64::try_from(wispd_store::unix_now()).unwrap_or(0);
            self.store
                .write(|w| w.put(&MAIL_META, INSTALLED_AT, &now))?;
            tracing::info!("mail stack installed");
        }
        self.status().await
    }

    pub async fn status(&self) -> Result<MailStatus, MailError> {
        let running = self.running.lock().await;
        Ok(MailStatus {
            installed: self.installed()?,
            smtp: running.0.clone(),
            imap: running.1.clone(),
        })
    }

    /// Stops the delivery writer after everything queued is committed. Call once the
    /// sessions have ended.
    pub fn shutdown(self) {
        // The queue holds a handle on the writer too: it goes first, or the writer never ends.
        let Mail {
            queue,
            deliverer,
            lists,
            ..
        } = self;
        if Arc::strong_count(&queue) > 1 {
            tracing::warn!("outbound queue still in use at exit");
        }
        drop(queue);
        // the list engine sends through the writer as well
        drop(lists);
        deliverer.shutdown();
    }
}

/// Forgets expired vacation and `duplicate` records every hour until shutdown.
async fn purge_seen(filters: crate::sieve::Filters, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let f = filters.clone();
        match tokio::task::spawn_blocking(move || f.purge_seen(wispd_store::unix_now())).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "expired Sieve records purged"),
            Ok(Err(e)) => tracing::warn!(error = %e, "purging expired Sieve records failed"),
            _ => {}
        }
    }
}

/// Forgets expired greylisting records and quarantined messages every hour until shutdown.
async fn prune_greylist(
    spam: Arc<crate::spam::Spam>,
    clamav: Arc<crate::clamav::Clamav>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = spam.clone();
        match tokio::task::spawn_blocking(move || s.prune(wispd_store::unix_now())).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "expired greylisting records pruned"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning greylisting records failed"),
            _ => {}
        }
        let c = clamav.clone();
        match tokio::task::spawn_blocking(move || c.prune(wispd_store::unix_now())).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(removed = n, "expired quarantined messages deleted")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning the quarantine failed"),
            _ => {}
        }
    }
}

/// Binds every address of one config key; all or nothing.
async fn bind(key: &'static str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, MailError> {
    let mut out = Vec::new();
    for &addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| MailError::Bind { addr, key, source })?;
        out.push(l);
    }
    Ok(out)
}
