//! The outbound queue. Messages for other domains (submission, external forwarders, bounces) are
//! committed to the store before the client hears `250`, with a state per recipient, and leave
//! it only when every recipient is delivered or has failed and the sender has been told (a DSN,
//! RFC 3464; never for a bounce). A scheduler wakes for new mail, for the next retry, or for a
//! flush, and hands each (message, destination domain) due to a delivery task: one SMTP
//! transaction for that domain's recipients, through `smtp.relay` or the domain's MX hosts.
//! Temporary failures retry with exponential backoff until the message is older than the
//! queue lifetime. Everything is in the store, so a restart resumes where it stopped.

pub mod dsn;
pub mod notice;
mod remote;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wispd_store::schema::{MAIL_QUEUE, MAIL_QUEUE_DATA, QueuedMessage};
use wispd_store::{Store, StoreError};

use crate::delivery::{self, Deliverer, NewlyQueued, Outbound, Outcome, Recipient};
use crate::directory::{Directory, Resolution};
use crate::srs::Srs;

/// How the queue delivers.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Our name in EHLO, `Received:` and DSNs.
    pub hostname: String,
    /// Smarthost for all outbound mail instead of MX lookups.
    pub relay: Option<(String, u16)>,
    /// First retry after a temporary failure; doubles each time up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// A message still undelivered this long after it was queued is returned to its sender.
    pub lifetime: Duration,
    /// Simultaneous deliveries to one destination domain (or to the relay).
    pub per_destination: usize,
    /// Simultaneous deliveries in all.
    pub max_deliveries: usize,
    pub connect_timeout: Duration,
    /// For each reply from a remote server (the DATA reply included).
    pub command_timeout: Duration,
    /// Port of MX hosts (25).
    pub mx_port: u16,
    /// Where mailing lists' one-click unsubscribe links point (the API's base URL).
    pub api_url: Arc<str>,
}

impl QueueSettings {
    pub fn new(hostname: String) -> QueueSettings {
        QueueSettings {
            relay: None,
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(4000),
            lifetime: Duration::from_secs(5 * 86_400),
            per_destination: 4,
            max_deliveries: 32,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            mx_port: 25,
            api_url: Arc::from(format!("https://{hostname}:2083")),
            hostname,
        }
    }
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered {
        remote: Option<String>,
        reply: String,
    },
    /// Try again later.
    Deferred {
        remote: Option<String>,
        reply: String,
    },
    /// Give up and tell the sender; `status` is the enhanced status code (`5.1.1`).
    Failed {
        remote: Option<String>,
        reply: String,
        status: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Queue {
    settings: QueueSettings,
    store: Store,
    directory: Directory,
    deliverer: Deliverer,
    resolver: Option<TokioResolver>,
    srs: Srs,
    tls: tokio_rustls::TlsConnector,
    wake: Arc<NewlyQueued>,
    /// When each queued message is next due: (unix seconds, queue id). Built from the store
    /// on the first dispatch (and after a flush), then kept up to date, so the scheduler never
    /// scans the whole queue per delivery.
    schedule: Mutex<Schedule>,
    /// (queue id, destination) being delivered now.
    inflight: Mutex<HashSet<(u64, String)>>,
    metrics: crate::metrics::MailMetrics,
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    slots: Arc<Semaphore>,
    /// Idle connections by destination, for the next message there.
    connections: Mutex<HashMap<String, Vec<remote::Cached>>>,
    /// The recipients' Sieve filters, for mail the queue delivers locally (bounces).
    filters: Option<crate::sieve::Filters>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("settings", &self.settings)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Schedule {
    loaded: bool,
    due: BTreeSet<(i64, u64)>,
}

use wispd_store::unix_now as now;

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Queue {
    /// Counts delivery outcomes in `metrics` (a queue counts into its own until given these).
    pub fn with_metrics(mut self, metrics: crate::metrics::MailMetrics) -> Queue {
        self.metrics = metrics;
        self
    }

    /// Runs the recipients' Sieve filters on what the queue delivers locally.
    pub fn with_filters(mut self, filters: crate::sieve::Filters) -> Queue {
        self.filters = Some(filters);
        self
    }

    /// `nameservers` as in `[dns]`; empty means the system resolver.
    pub fn new(
        settings: QueueSettings,
        store: Store,
        directory: Directory,
        deliverer: Deliverer,
        nameservers: &[std::net::SocketAddr],
    ) -> std::io::Result<Queue> {
        let resolver = match crate::dkim::resolver(nameservers) {
            Ok(r) => Some(r),
            Err(e) => {
                // Deliveries through the relay still work; MX lookups defer until fixed.
                tracing::warn!(error = %e, "no DNS resolver for the outbound queue");
                None
            }
        };
        let srs = Srs::load(&store)?;
        let wake = deliverer.queued().clone();
        let slots = Arc::new(Semaphore::new(settings.max_deliveries.max(1)));
        Ok(Queue {
            tls: mail_send::smtp::tls::build_tls_connector(true),
            settings,
            store,
            directory,
            deliverer,
            resolver,
            srs,
            wake,
            schedule: Mutex::default(),
            inflight: Mutex::default(),
            metrics: crate::metrics::MailMetrics::default(),
            filters: None,
            destinations: Mutex::default(),
            slots,
            connections: Mutex::default(),
        })
    }

    pub fn srs(&self) -> &Srs {
        &self.srs
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Every queued message, oldest first.
    pub fn list(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        Ok(self.store.read(|r| r.all(&MAIL_QUEUE))?)
    }

    /// Makes every waiting recipient due now and wakes the scheduler; returns how many.
    pub fn flush(&self) -> Result<usize, QueueError> {
        let t = now();
        let n = self.store.write(|w| {
            let mut n = 0;
            for mut m in w.all(&MAIL_QUEUE)? {
                let mut changed = false;
                for r in m.recipients.iter_mut().filter(|r| r.status == "queued") {
                    n += 1;
                    if r.next_attempt > t {
                        r.next_attempt = t;
                        changed = true;
                    }
                }
                if changed {
                    w.put(&MAIL_QUEUE, m.id, &m)?;
                }
            }
            Ok::<_, StoreError>(n)
        })?;
        self.reload();
        self.wake.notify.notify_one();
        Ok(n)
    }

    /// Removes a message from the queue without telling its sender (as `postsuper -d`).
    pub fn delete(&self, id: u64) -> Result<QueuedMessage, QueueError> {
        self.store.write(|w| {
            let m = w
                .get(&MAIL_QUEUE, id)?
                .ok_or_else(|| QueueError::NotFound(format!("No queued message with id {id}")))?;
            w.remove(&MAIL_QUEUE, id)?;
            w.remove_raw(&MAIL_QUEUE_DATA, id)?;
            Ok(m)
        })
    }

    /// The scheduler: runs until `shutdown`, delivery tasks in `tracker`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tracker: TaskTracker) {
        loop {
            let next = match self.dispatch(&tracker, &shutdown) {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbound queue failed");
                    self.reload();
                    Some(now() + 5)
                }
            };
            self.prune_connections();
            let mut wait =
                Duration::from_secs(next.map_or(60, |t| (t - now()).clamp(0, 60)).unsigned_abs());
            if !self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                // Come back to close idle connections.
                wait = wait.min(remote::CACHE_TIME / 2);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts a delivery for every (message, domain) that is due and not already under way;
    /// returns when the next waiting message is due.
    fn dispatch(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<Option<i64>, StoreError> {
        let t = now();
        let mut schedule = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
        if !schedule.loaded {
            schedule.due.clear();
            for m in self.store.read(|r| r.all(&MAIL_QUEUE))? {
                if let Some(at) = m
                    .recipients
                    .iter()
                    .filter(|r| r.status == "queued")
                    .map(|r| r.next_attempt)
                    .min()
                {
                    schedule.due.insert((at, m.id));
                }
            }
            schedule.loaded = true;
        }
        for id in self.wake.take() {
            schedule.due.insert((t, id));
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(at, id)) = schedule.due.first()
            && at <= t
        {
            schedule.due.pop_first();
            let Some(m) = self.store.read(|r| r.get(&MAIL_QUEUE, id))? else {
                continue; // delivered, bounced or deleted meanwhile
            };
            let mut due: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut later: Option<i64> = None;
            for r in m.recipients.iter().filter(|r| r.status == "queued") {
                let domain = domain_of(&r.address);
                if inflight.contains(&(m.id, domain.clone())) {
                    continue; // rescheduled when that delivery ends
                }
                if r.next_attempt <= t {
                    due.entry(domain).or_default().push(r.address.clone());
                } else {
                    later = Some(later.map_or(r.next_attempt, |n| n.min(r.next_attempt)));
                }
            }
            if let Some(at) = later {
                schedule.due.insert((at, id));
            }
            for (domain, rcpts) in due {
                inflight.insert((id, domain.clone()));
                let q = self.clone();
                let stop = shutdown.clone();
                tracker.spawn(async move {
                    // At shutdown an attempt is abandoned unrecorded: it is retried after the
                    // restart (a recipient may then get it twice, never zero times).
                    tokio::select! {
                        () = q.attempt(id, &domain, rcpts) => {}
                        () = stop.cancelled() => {}
                    }
                    q.inflight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&(id, domain));
                    q.wake.notify.notify_one();
                });
            }
        }
        Ok(schedule.due.first().map(|&(at, _)| at))
    }

    /// Where a bounce for mail from `sender` goes: the sender, or the original sender behind an
    /// SRS address we made (forwarded mail).
    fn bounce_address(&self, sender: &str) -> String {
        self.srs
            .reverse(sender)
            .unwrap_or_else(|| sender.to_string())
    }

    /// What deliveries are grouped and limited by: the relay, or the recipient domain.
    fn destination_key(&self, domain: &str) -> String {
        match &self.settings.relay {
            Some((h, p)) => format!("{h}:{p}"),
            None => domain.to_string(),
        }
    }

    /// A cached connection to `key` young enough to reuse (older ones are dropped).
    fn cached_connection(&self, key: &str) -> Option<remote::Cached> {
        let mut all = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let list = all.get_mut(key)?;
        let found = loop {
            match list.pop() {
                Some(c) if c.fresh() => break Some(c),
                Some(_) => {}
                None => break None,
            }
        };
        if list.is_empty() {
            all.remove(key);
        }
        found
    }

    /// Keeps `c` for the next message to `key` unless enough are kept already (then it is
    /// handed back).
    fn cache_connection(&self, key: &str, c: remote::Cached) -> Option<remote::Cached> {
        let mut all = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let list = all.entry(key.to_string()).or_default();
        list.retain(remote::Cached::fresh);
        if list.len() >= self.settings.per_destination {
            return Some(c);
        }
        list.push(c);
        None
    }

    /// Drops cached connections nobody reused in time.
    fn prune_connections(&self) {
        let mut all = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.retain(|_, list| {
            list.retain(remote::Cached::fresh);
            !list.is_empty()
        });
    }

    /// Rebuilds the schedule from the store on the next dispatch.
    fn reload(&self) {
        self.schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .loaded = false;
    }

    fn destination_slot(&self, key: &str) -> Arc<Semaphore> {
        let mut d = self
            .destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        d.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() == 0);
        d.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_destination.max(1))))
            .clone()
    }

    /// One delivery attempt of message `id` to `rcpts` in `domain`, then its record.
    async fn attempt(&self, id: u64, domain: &str, rcpts: Vec<String>) {
        let slot = self.destination_slot(&self.destination_key(domain));
        // The destination's slot first: a backlog for one domain must not hold the global slots
        // other domains need.
        let Ok(_one) = slot.acquire_owned().await else {
            return;
        };
        let Ok(_all) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let loaded = self.store.read(|r| {
            Ok::<_, StoreError>((r.get(&MAIL_QUEUE, id)?, r.get_raw(&MAIL_QUEUE_DATA, id)?))
        });
        let (entry, body) = match loaded {
            Ok((Some(e), Some(b))) => (e, b),
            Ok(_) => return, // deleted meanwhile
            Err(e) => {
                tracing::error!(queue_id = id, error = %e, "reading a queued message failed");
                self.reload();
                return;
            }
        };
        let local = self.directory.is_local_domain(domain).unwrap_or(false);
        let verdicts = if local {
            self.deliver_local(&entry.sender, &rcpts, &body).await
        } else if entry.source == "list" {
            // a member that forwards off-site: the copy is the member's (its VERP, its link)
            let originals: HashMap<&str, &str> = entry
                .recipients
                .iter()
                .filter_map(|r| r.original.as_deref().map(|o| (r.address.as_str(), o)))
                .collect();
            let members: Vec<String> = rcpts
                .iter()
                .map(|r| {
                    originals
                        .get(r.as_str())
                        .map_or_else(|| r.clone(), |m| (*m).to_string())
                })
                .collect();
            self.deliver_list(domain, &entry.sender, &rcpts, &members, &body)
                .await
        } else {
            remote::deliver(self, domain, &entry.sender, &rcpts, &[&body]).await
        };
        for (r, v) in rcpts.iter().zip(&verdicts) {
            use crate::metrics::QueueOutcome;
            self.metrics.queue_outcome(match v {
                Verdict::Delivered { .. } => QueueOutcome::Delivered,
                Verdict::Deferred { .. } => QueueOutcome::Deferred,
                Verdict::Failed { .. } => QueueOutcome::Bounced,
            });
            match v {
                Verdict::Delivered { remote, reply } => {
                    tracing::info!(queue_id = id, to = %r, relay = remote.as_deref().unwrap_or("local"), %reply, "delivered")
                }
                Verdict::Deferred { remote, reply } => {
                    tracing::warn!(queue_id = id, to = %r, relay = remote.as_deref().unwrap_or("none"), %reply, "deferred")
                }
                Verdict::Failed { remote, reply, .. } => {
                    tracing::warn!(queue_id = id, to = %r, relay = remote.as_deref().unwrap_or("none"), %reply, "bounced")
                }
            }
        }
        // Through the delivery writer: records share its group commits.
        let settings = self.settings.clone();
        let bounce_to = self.bounce_address(&entry.sender);
        let recorded = self
            .deliverer
            .write(move |w| record(w, &settings, id, &rcpts, verdicts, &bounce_to, now()))
            .await;
        match recorded {
            Ok((next, dsn)) => {
                let mut schedule = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(at) = next {
                    schedule.due.insert((at, id));
                }
                if let Some(d) = dsn {
                    schedule.due.insert((now(), d));
                }
            }
            Err(e) => {
                // Not at once: the attempt itself may have succeeded, and resending in a loop
                // would flood the recipient. The stored state still says "due"; try later.
                tracing::error!(queue_id = id, error = %e, "recording a delivery failed");
                self.schedule
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .due
                    .insert((now() + secs(self.settings.retry_initial), id));
            }
        }
    }

    /// A list's post to members at `domain`: each its own transaction, with its return path
    /// (`name+bounces-user=host@`) and unsubscribe link, over up to `per_destination`
    /// connections at once.
    async fn deliver_list(
        &self,
        domain: &str,
        sender: &str,
        rcpts: &[String],
        members: &[String],
        body: &[u8],
    ) -> Vec<Verdict> {
        let Some(list) =
            crate::lists::ListSender::load(&self.store, sender, self.settings.api_url.clone())
        else {
            let gone = Verdict::Failed {
                remote: None,
                reply: "550 5.1.1 the mailing list no longer exists".into(),
                status: "5.1.1".into(),
            };
            return vec![gone; rcpts.len()];
        };
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out: Mutex<Vec<Option<Verdict>>> = Mutex::new(vec![None; rcpts.len()]);
        let workers = self.settings.per_destination.clamp(1, rcpts.len().max(1));
        let work = |_| async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(rcpt) = rcpts.get(i) else {
                    break;
                };
                let (from, header) = list.copy_for(members.get(i).unwrap_or(rcpt));
                let v = remote::deliver(
                    self,
                    domain,
                    &from,
                    std::slice::from_ref(rcpt),
                    &[header.as_bytes(), body],
                )
                .await
                .into_iter()
                .next();
                out.lock().unwrap_or_else(PoisonError::into_inner)[i] = v;
            }
        };
        futures_util::future::join_all((0..workers).map(work)).await;
        out.into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .map(|v| {
                v.unwrap_or_else(|| Verdict::Deferred {
                    remote: None,
                    reply: "451 4.4.2 not sent".into(),
                })
            })
            .collect()
    }

    /// Queue recipients in local domains (bounces to local senders, SRS bounces for local
    /// addresses): into their accounts' INBOX through the delivery writer, and on through the
    /// queue to the address's forwarders in other domains.
    async fn deliver_local(&self, sender: &str, rcpts: &[String], body: &[u8]) -> Vec<Verdict> {
        let mut message = format!("Return-Path: <{sender}>\r\n").into_bytes();
        message.extend_from_slice(body);
        let mut out = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let (accounts, remote) = match self.directory.resolve(rcpt) {
                Ok(Resolution::Local { accounts, remote }) => (accounts, remote),
                Ok(_) => {
                    out.push(Verdict::Failed {
                        remote: None,
                        reply: "550 5.1.1 Recipient address rejected: User unknown".into(),
                        status: "5.1.1".into(),
                    });
                    continue;
                }
                Err(e) => {
                    out.push(Verdict::Deferred {
                        remote: None,
                        reply: format!("451 4.3.0 lookup failed: {e}"),
                    });
                    continue;
                }
            };
            let mut targets: Vec<Recipient> = accounts
                .iter()
                .filter(|a| a.enabled)
                .map(|a| Recipient::inbox(a.id))
                .collect();
            let mut variants = Vec::new();
            let mut effects = Vec::new();
            if let Some(filters) = self.filters.clone()
                && targets.iter().any(|t| filters.active(t.account_id))
            {
                let incoming: Vec<crate::sieve::Incoming> = accounts
                    .iter()
                    .filter(|a| a.enabled)
                    .map(|a| crate::sieve::Incoming {
                        account_id: a.id,
                        email: a.email(),
                        envelope_to: rcpt.clone(),
                    })
                    .collect();
                let (store, srs, hostname) = (
                    self.store.clone(),
                    self.srs.clone(),
                    self.settings.hostname.clone(),
                );
                let (directory, sender_, msg) =
                    (self.directory.clone(), sender.to_string(), message.clone());
                let filtered = tokio::task::spawn_blocking(move || {
                    let local = move |d: &str| directory.is_local_domain(d).unwrap_or(false);
                    filters.filter(
                        &msg,
                        &incoming,
                        &crate::sieve::Outgoing {
                            store: &store,
                            srs: &srs,
                            hostname: &hostname,
                            id: "queue",
                            from: &sender_,
                            local_domain: &local,
                            now: now(),
                            spam: crate::spam::SpamLevel::Unknown,
                            virus: 0,
                            arc_set: None,
                        },
                    )
                })
                .await;
                if let Ok(f) = filtered {
                    self.metrics.sieve(f.filtered, f.errors);
                    targets = f.recipients;
                    variants = f.variants;
                    effects = f.effects;
                }
            }
            if targets.is_empty() && remote.is_empty() {
                out.push(Verdict::Failed {
                    remote: None,
                    reply: "550 5.2.1 Mailbox disabled".into(),
                    status: "5.2.1".into(),
                });
                continue;
            }
            let onward = (!remote.is_empty()).then(|| Outbound {
                message: body.to_vec(),
                sender: if sender.is_empty() {
                    String::new()
                } else {
                    self.srs.forward(sender, &domain_of(rcpt))
                },
                source: "forward",
                recipients: remote
                    .into_iter()
                    .map(|r| (r, Some(rcpt.clone())))
                    .collect(),
            });
            let local = if targets.is_empty() {
                Vec::new()
            } else {
                message.clone()
            };
            out.push(
                match self
                    .deliverer
                    .deliver_all(crate::delivery::Delivery {
                        message: local,
                        variants,
                        recipients: targets,
                        internal_date: now(),
                        outbound: onward,
                        bounce: None,
                        effects,
                        also: None,
                    })
                    .await
                {
                    Ok(d) if d.queued.is_some() || d.outcomes.iter().any(|x| x.delivered()) => {
                        Verdict::Delivered {
                            remote: None,
                            reply: "250 2.0.0 stored".into(),
                        }
                    }
                    Ok(d) if d.outcomes.contains(&Outcome::OverQuota) => Verdict::Deferred {
                        remote: None,
                        reply: "452 4.2.2 Mailbox full".into(),
                    },
                    Ok(_) => Verdict::Failed {
                        remote: None,
                        reply: "550 5.1.1 Recipient no longer available".into(),
                        status: "5.1.1".into(),
                    },
                    Err(e) => Verdict::Deferred {
                        remote: None,
                        reply: format!("451 4.3.0 {e}"),
                    },
                },
            );
        }
        out
    }
}

/// Applies one attempt's verdicts to message `id`: delivered and failed recipients are final,
/// deferred ones wait (or fail once the message is older than the lifetime). Failures are
/// reported to the sender in one DSN, queued in the same transaction; a message with nothing
/// left to do leaves the queue. Returns when the message is next due (if it stays) and the
/// queue id of the DSN (if one was queued).
fn record(
    w: &wispd_store::Write<'_>,
    settings: &QueueSettings,
    id: u64,
    rcpts: &[String],
    verdicts: Vec<Verdict>,
    bounce_to: &str,
    t: i64,
) -> Result<(Option<i64>, Option<u64>), StoreError> {
    let Some(mut entry) = w.get(&MAIL_QUEUE, id)? else {
        return Ok((None, None));
    };
    let expired = t.saturating_sub(entry.created_at) >= secs(settings.lifetime);
    let mut failures = Vec::new();
    // by address, once: a list's entry has thousands of recipients
    let mut index: HashMap<String, usize> = HashMap::with_capacity(entry.recipients.len());
    for (i, r) in entry.recipients.iter().enumerate() {
        if r.status == "queued" {
            index.entry(r.address.clone()).or_insert(i);
        }
    }
    for (address, verdict) in rcpts.iter().zip(verdicts) {
        let Some(r) = index
            .get(address.as_str())
            .and_then(|&i| entry.recipients.get_mut(i))
            .filter(|r| r.status == "queued")
        else {
            continue;
        };
        r.attempts = r.attempts.saturating_add(1);
        r.last_attempt = Some(t);
        match verdict {
            Verdict::Delivered { remote, reply } => {
                r.status = "delivered".into();
                r.remote = remote;
                r.last_error = None;
                let _ = reply;
            }
            Verdict::Deferred { remote, reply } if expired => {
                r.status = "failed".into();
                failures.push(dsn::Failure {
                    recipient: r.address.clone(),
                    original: r.original.clone(),
                    status: "4.4.7".into(),
                    remote: remote.clone(),
                    diagnostic: format!("{reply} (delivery time expired)"),
                });
                r.remote = remote;
                r.last_error = Some(reply);
            }
            Verdict::Deferred { remote, reply } => {
                let shift = r.attempts.saturating_sub(1).min(20);
                let delay = secs(settings.retry_initial)
                    .saturating_mul(1 << shift)
                    .min(secs(settings.retry_max))
                    .max(1);
                r.next_attempt = t.saturating_add(delay);
                r.remote = remote;
                r.last_error = Some(reply);
            }
            Verdict::Failed {
                remote,
                reply,
                status,
            } => {
                r.status = "failed".into();
                failures.push(dsn::Failure {
                    recipient: r.address.clone(),
                    original: r.original.clone(),
                    status,
                    remote: remote.clone(),
                    diagnostic: reply.clone(),
                });
                r.remote = remote;
                r.last_error = Some(reply);
            }
        }
    }
    let mut bounced = None;
    if !failures.is_empty() {
        if entry.source == "list"
            && let Some(list) = crate::lists::list_of_bounce_address(&entry.sender)
        {
            // a list's copy: the bounce is the list's, counted against the member
            let members: Vec<String> = failures
                .iter()
                .map(|f| f.original.clone().unwrap_or_else(|| f.recipient.clone()))
                .collect();
            let disabled = crate::lists::record_bounces(w, &list, &members, t)?;
            tracing::info!(queue_id = id, %list, bounced = members.len(), disabled = disabled.len(), "list bounces counted");
        } else if entry.sender.is_empty() {
            tracing::warn!(
                queue_id = id,
                failed = failures.len(),
                "a bounce could not be delivered; it is dropped (no bounce for a bounce)"
            );
        } else {
            let original = w.get_raw(&MAIL_QUEUE_DATA, id)?.unwrap_or_default();
            let report = dsn::build(
                &settings.hostname,
                &id.to_string(),
                entry.created_at,
                bounce_to,
                &failures,
                &original,
            );
            let out = Outbound {
                message: report,
                sender: String::new(),
                source: "bounce",
                recipients: vec![(bounce_to.to_string(), None)],
            };
            let dsn_id = delivery::enqueue(w, &out, t)?;
            tracing::info!(queue_id = id, dsn = dsn_id, to = %bounce_to, failed = failures.len(), "delivery status notification queued");
            bounced = Some(dsn_id);
        }
    }
    let next = entry
        .recipients
        .iter()
        .filter(|r| r.status == "queued")
        .map(|r| r.next_attempt)
        .min();
    if next.is_none() {
        w.remove(&MAIL_QUEUE, id)?;
        w.remove_raw(&MAIL_QUEUE_DATA, id)?;
    } else {
        w.put(&MAIL_QUEUE, id, &entry)?;
    }
    Ok((next, bounced))
}
