//! Builds every part from the config, binds the listeners, and runs until a signal, then drains.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wispd_api::ratelimit::RateLimit;
use wispd_api::{AppState, auth};
use wispd_engine::directory::Directory;
use wispd_engine::imap::ImapSettings;
use wispd_engine::pop3::Pop3Settings;
use wispd_engine::queue::QueueSettings;
use wispd_engine::service::{Mail, MailConfig};
use wispd_engine::smtp::SmtpSettings;
use wispd_firewall::{Firewall, FirewallConfig};
use wispd_store::Store;
use wispd_store::schema::{TOKENS, TokenRole};

use crate::config::Config;
use crate::tls;

/// How long in-flight work may take to finish after a stop signal; the process exits well
/// inside the contract's 10 s.
const DRAIN: Duration = Duration::from_secs(7);

pub async fn run(mut cfg: Config) -> Result<()> {
    if cfg.hostname.is_empty() {
        cfg.hostname = system_hostname();
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let store = Store::open(&cfg.data_dir)?;
    bootstrap_admin_token(&store, &cfg.data_dir)?;

    // The API's certificate (configured, or self-signed) is every listener's default; the mail
    // listeners may have their own, and all of them answer SNI from `[[tls.certificates]]`.
    let api_key = {
        let files = cfg
            .api
            .tls_files
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        // a specific listen address goes into a generated certificate too
        let ip = cfg.api.listen.ip();
        let extra: Vec<String> = if ip.is_unspecified() || ip.is_loopback() {
            vec![]
        } else {
            vec![ip.to_string()]
        };
        tls::default_key(files, &cfg.data_dir, &cfg.hostname, &extra)?
    };
    let tls_config = tls::with_sni(api_key.clone(), Arc::new(tls::Sni::default()))?;
    let sni = Arc::new(tls::Sni::load(&cfg.tls.sni).context("[tls] certificates")?);
    let mail_tls = |own: &Option<(std::path::PathBuf, std::path::PathBuf)>, key: &str| {
        let default = match own {
            Some((c, k)) => tls::load(c, k).with_context(|| format!("{key}.tls_cert"))?,
            None => api_key.clone(),
        };
        tls::with_sni(default, sni.clone())
    };
    let mail_certs = MailCerts {
        smtp: mail_tls(&cfg.tls.smtp, "smtp")?,
        imap: mail_tls(&cfg.tls.imap, "imap")?,
        pop3: mail_tls(&cfg.tls.pop3, "pop3")?,
    };
    if sni.len() > 0 {
        tracing::info!(names = sni.len(), "TLS certificates by SNI loaded");
    }
    let api_tls = cfg.api.tls.then(|| tls_config.clone());

    let api_listener = TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen)", cfg.api.listen))?;
    let api_addr = api_listener.local_addr()?;

    let firewall = Arc::new(start_firewall(&cfg, &store, api_addr.port()).await?);
    let limiter = Arc::new(RateLimit::per_minute(cfg.api.rate_limit_per_minute));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Mail sessions get their own tracker so the delivery writer outlives every one of them.
    let mail_tasks = TaskTracker::new();
    let mail = Arc::new(
        Mail::new(
            mail_config(&cfg, Some(mail_certs), &public_url(&cfg, api_addr.port())),
            store.clone(),
            Directory::new(store.clone()),
            shutdown.clone(),
            mail_tasks.clone(),
        )
        .context("starting the mail delivery writer")?,
    );
    if mail.installed()? {
        mail.start().await?;
    }
    let state = AppState {
        store: store.clone(),
        limiter: limiter.clone(),
        firewall: firewall.clone(),
        directory: mail.directory().clone(),
        mail: mail.clone(),
        metrics: Arc::new(wispd_api::metrics::Metrics::new(
            mail.metrics(),
            firewall.clone(),
            mail.queue().clone(),
        )),
    };
    tasks.spawn(wispd_api::server::serve(
        api_listener,
        api_tls.clone(),
        wispd_api::router(state),
        shutdown.clone(),
        DRAIN,
    ));
    tasks.spawn(sweep_limiter(limiter, shutdown.clone()));
    // lfd: every refused mail login reaches the firewall; alerts go out through the mail queue
    let lfd = firewall.start_lfd();
    mail.logins()
        .report_failures_to(Arc::new(LfdSink(lfd.clone())));
    let notices = mail.clone();
    let send_alert: wispd_firewall::alerts::MailFn = Arc::new(move |m| {
        let mail = notices.clone();
        Box::pin(async move {
            mail.send_notice(&m.from, &m.to, &m.subject, &m.body)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    });
    tasks.spawn(wispd_firewall::alerts::run(
        firewall.clone(),
        Some(send_alert),
        cfg.hostname.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(firewall_upkeep(firewall.clone(), shutdown.clone()));
    tasks.spawn(wispd_firewall::blocklist::run(firewall, shutdown.clone()));

    tracing::debug!(smtp = ?cfg.smtp, imap = ?cfg.imap, dns = ?cfg.dns, "engine settings");
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    // for the admin commands (`wispd status`, …): where this server's API answers
    let local = match api_addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], api_addr.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, api_addr.port()))
        }
        _ => api_addr,
    };
    let url_file = cfg.data_dir.join(crate::client::API_URL_FILE);
    crate::tls::write_file(&url_file, format!("{scheme}://{local}\n").as_bytes(), 0o644)?;
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        hostname = %cfg.hostname,
        "wispd ready api={scheme}://{api_addr}"
    );

    wait_for_signal().await?;
    let _ = std::fs::remove_file(&url_file);
    tracing::info!("stopping: draining connections");
    shutdown.cancel();
    tasks.close();
    mail_tasks.close();
    let drained = async {
        tasks.wait().await;
        mail_tasks.wait().await;
    };
    if tokio::time::timeout(DRAIN + Duration::from_secs(1), drained)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish in time");
    }
    // Every session has ended (or been abandoned): commit what is queued, stop the writer.
    match Arc::try_unwrap(mail) {
        Ok(mail) => tokio::task::spawn_blocking(move || mail.shutdown()).await?,
        Err(_) => tracing::warn!("mail service still in use at exit"),
    }
    drop(store);
    tracing::info!("wispd stopped");
    Ok(())
}

/// The API of a stopped server's data dir, served in this process on a loopback port for
/// `wispd import`: the same router and engines over the same store, with no mail listener, no
/// queue run and the firewall kept to the store (the next `wispd serve` applies what changed).
pub struct Offline {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    mail: Arc<Mail>,
}

/// The store cache of an in-process import: it writes, and reads back only the indexes.
const IMPORT_CACHE: usize = 32 << 20;

impl Offline {
    /// Opens the store and starts serving its API; `None` when a running server has the store.
    pub async fn start(cfg: &Config, data_dir: &Path) -> Result<Option<Offline>> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        match Store::open_with_cache(data_dir, IMPORT_CACHE) {
            Ok(store) => Self::serve(cfg, store, data_dir).await.map(Some),
            Err(wispd_store::StoreError::InUse { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn serve(cfg: &Config, store: Store, data_dir: &Path) -> Result<Offline> {
        bootstrap_admin_token(&store, data_dir)?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let fw_cfg = FirewallConfig {
            table: cfg.firewall.table.clone(),
            kernel: false,
            protected_tcp_ports: protected_ports(cfg, cfg.api.listen.port()),
            api_port: Some(cfg.api.listen.port()).filter(|&p| p != 0),
        };
        let fw_store = store.clone();
        let firewall = Arc::new(
            tokio::task::spawn_blocking(move || Firewall::start(fw_store, fw_cfg))
                .await?
                .context("opening the firewall settings")?,
        );
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mail = Arc::new(
            Mail::new(
                mail_config(cfg, None, &public_url(cfg, cfg.api.listen.port())),
                store.clone(),
                Directory::new(store.clone()),
                shutdown.clone(),
                TaskTracker::new(),
            )
            .context("starting the mail delivery writer")?,
        );
        let state = AppState {
            store: store.clone(),
            limiter: Arc::new(RateLimit::per_minute(std::num::NonZeroU32::MAX)),
            firewall: firewall.clone(),
            directory: mail.directory().clone(),
            mail: mail.clone(),
            metrics: Arc::new(wispd_api::metrics::Metrics::new(
                mail.metrics(),
                firewall,
                mail.queue().clone(),
            )),
        };
        tasks.spawn(wispd_api::server::serve(
            listener,
            None,
            wispd_api::router(state),
            shutdown.clone(),
            DRAIN,
        ));
        Ok(Offline {
            base: format!("http://{addr}"),
            shutdown,
            tasks,
            mail,
        })
    }

    /// Stops serving and commits what the writer holds.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Ok(mail) = Arc::try_unwrap(self.mail) {
            let _ = tokio::task::spawn_blocking(move || mail.shutdown()).await;
        }
    }
}

/// The mail listeners' TLS configurations.
struct MailCerts {
    smtp: Arc<rustls::ServerConfig>,
    imap: Arc<rustls::ServerConfig>,
    pop3: Arc<rustls::ServerConfig>,
}

/// Where links in mail reach the API: `[api] public_url`, else the hostname and API port.
fn public_url(cfg: &Config, port: u16) -> String {
    if !cfg.api.public_url.is_empty() {
        return cfg.api.public_url.clone();
    }
    let scheme = if cfg.api.tls { "https" } else { "http" };
    format!("{scheme}://{}:{port}", cfg.hostname)
}

fn mail_config(cfg: &Config, certs: Option<MailCerts>, api_url: &str) -> MailConfig {
    let mut smtp = SmtpSettings::new(
        cfg.hostname.clone(),
        usize::try_from(cfg.smtp.max_message_size).unwrap_or(usize::MAX),
    );
    smtp.max_recipients = cfg.smtp.max_recipients;
    smtp.max_connections_per_ip = cfg.smtp.max_connections_per_ip;
    smtp.idle_timeout = cfg.smtp.idle_timeout;
    smtp.data_timeout = cfg.smtp.data_timeout;
    smtp.postmaster = cfg.smtp.postmaster.clone();
    MailConfig {
        smtp,
        smtp_listen: cfg.smtp.listen.clone(),
        submission_listen: cfg.smtp.submission.clone(),
        submissions_listen: cfg.smtp.submissions.clone(),
        imap: {
            let mut imap = ImapSettings::new(
                cfg.hostname.clone(),
                usize::try_from(cfg.smtp.max_message_size).unwrap_or(usize::MAX),
            );
            imap.idle_timeout = cfg.imap.idle_timeout;
            imap.max_connections_per_ip = cfg.imap.max_connections_per_ip;
            imap
        },
        imap_listen: cfg.imap.listen.clone(),
        imaps_listen: cfg.imap.imaps.clone(),
        nameservers: cfg.dns.nameservers.clone(),
        rate_hour_seconds: cfg.smtp.rate_window,
        verify_senders: cfg.smtp.verify_senders,
        tls: certs.as_ref().map(|c| c.smtp.clone()),
        imap_tls: certs.as_ref().map(|c| c.imap.clone()),
        pop3_tls: certs.map(|c| c.pop3),
        queue: {
            let mut q = QueueSettings::new(cfg.hostname.clone());
            q.relay = cfg.smtp.relay.clone();
            q.retry_initial = cfg.smtp.retry;
            q.retry_max = cfg.smtp.max_retry;
            q.lifetime = cfg.smtp.queue_lifetime;
            q.per_destination = cfg.smtp.destination_concurrency;
            q.api_url = std::sync::Arc::from(api_url);
            q
        },
        memory_budget: cfg
            .smtp
            .max_inflight_bytes
            .max(usize::try_from(cfg.smtp.max_message_size).unwrap_or(usize::MAX)),
        sieve: wispd_engine::sieve::SieveSettings {
            hostname: cfg.hostname.clone(),
            ..cfg.sieve.settings.clone()
        },
        sieve_listen: cfg.sieve.listen.clone(),
        pop3: Pop3Settings::default(),
        pop3_listen: cfg.pop3.listen.clone(),
        pop3s_listen: cfg.pop3.pop3s.clone(),
    }
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// Starts the firewall engine: a fresh install keeps ssh, the API and wispd's own listeners open.
async fn start_firewall(cfg: &Config, store: &Store, api_port: u16) -> Result<Firewall> {
    let protected = protected_ports(cfg, api_port);
    let fw_cfg = FirewallConfig {
        table: cfg.firewall.table.clone(),
        kernel: cfg.firewall.enabled,
        protected_tcp_ports: protected,
        api_port: Some(api_port),
    };
    let store = store.clone();
    tokio::task::spawn_blocking(move || Firewall::start(store, fw_cfg))
        .await?
        .context("starting the firewall")
}

/// The ports a fresh install keeps open besides ssh: the API's and every mail listener's.
fn protected_ports(cfg: &Config, api_port: u16) -> Vec<u16> {
    let mut protected = vec![api_port];
    for a in cfg
        .smtp
        .listen
        .iter()
        .chain(&cfg.smtp.submission)
        .chain(&cfg.smtp.submissions)
        .chain(&cfg.imap.listen)
        .chain(&cfg.imap.imaps)
        .chain(&cfg.pop3.listen)
        .chain(&cfg.pop3.pop3s)
        .chain(&cfg.sieve.listen)
    {
        protected.push(a.port());
    }
    protected.retain(|&p| p != 0);
    protected
}

/// Hands the mail engine's refused logins to lfd (the engine and the firewall do not know
/// each other).
#[derive(Debug)]
struct LfdSink(wispd_firewall::lfd::Reporter);

impl wispd_engine::login::FailureSink for LfdSink {
    fn login_failed(
        &self,
        protocol: wispd_engine::login::Protocol,
        ip: std::net::IpAddr,
        user: &str,
    ) {
        use wispd_engine::login::Protocol;
        use wispd_firewall::lfd::Service;
        let service = match protocol {
            Protocol::Smtp => Service::SmtpAuth,
            Protocol::Imap => Service::Imapd,
            Protocol::Pop3 => Service::Pop3d,
            Protocol::ManageSieve => Service::ManageSieve,
        };
        self.0.report(service, ip, user);
    }
}

/// Every 2 s: TESTING lift, tamper check and restore, expired-entry cleanup.
async fn firewall_upkeep(firewall: Arc<Firewall>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let fw = firewall.clone();
                match tokio::task::spawn_blocking(move || fw.tick()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "firewall upkeep failed"),
                    Err(e) => tracing::warn!(error = %e, "firewall upkeep task failed"),
                }
            }
        }
    }
}

async fn sweep_limiter(limiter: Arc<RateLimit>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => limiter.shrink(),
        }
    }
}

/// On the first start (no token in the store), mints an admin token and writes it to
/// `DATA_DIR/admin.token` (0600). The file is written before the token is stored, so a crash in
/// between leaves an empty token table and the next start simply mints again.
fn bootstrap_admin_token(store: &Store, data_dir: &Path) -> Result<()> {
    if store.read(|r| r.len(&TOKENS))? > 0 {
        return Ok(());
    }
    let minted = auth::mint("admin", TokenRole::Admin, Vec::new(), wispd_api::unix_now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = data_dir.join("admin.token");
    tls::write_file(&path, format!("{}\n", minted.token).as_bytes(), 0o600)?;
    store.write(|w| w.put(&TOKENS, minted.record.id.as_str(), &minted.record))?;
    tracing::info!(path = %path.display(), "first start: admin API token written");
    Ok(())
}

fn system_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
