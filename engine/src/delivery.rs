//! Durable local delivery with group commit. Deliveries from every session queue up for one
//! writer thread, which applies all that are waiting in a single redb transaction and answers them
//! only after that transaction is committed (fsync'd): a caller told "stored" can lose nothing to
//! a crash, and concurrent deliveries share one fsync instead of paying one each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use wispd_store::schema::{
    MAIL_ACCOUNTS, MAIL_ENTRIES, MAIL_MAILBOXES, MAIL_MESSAGE_META, MAIL_MESSAGES, MAIL_META,
    MAIL_QUEUE, MAIL_QUEUE_DATA, MailEntry, Mailbox, MessageMeta, QueuedMessage, QueuedRecipient,
    SIEVE_SEEN,
};
use wispd_store::{Store, StoreError, Write};

use crate::mailbox::Changes;
use crate::queue::dsn::Failure;

/// Most deliveries applied in one transaction.
const MAX_BATCH: usize = 512;
/// Most message bytes applied in one transaction.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// One local recipient of a message and where its copies go: INBOX unless a Sieve script
/// said otherwise; no copies when the script discarded or rejected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub account_id: u64,
    pub copies: Vec<Copy>,
}

/// One copy of the message in one of the recipient's mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub mailbox: String,
    /// RFC 6154 attribute (`fileinto :specialuse`): the account's mailbox with it wins.
    pub special_use: Option<String>,
    /// IMAP flags the copy starts with.
    pub flags: Vec<String>,
    /// Create the mailbox when it does not exist (`fileinto :create`); otherwise a missing
    /// mailbox means INBOX (RFC 5228 §2.10.6: an action that can't be done is a keep).
    pub create: bool,
    /// Index into the delivery's edited variants (`editheader`); `None`: the message itself.
    pub variant: Option<usize>,
}

impl Copy {
    pub fn inbox() -> Copy {
        Copy {
            mailbox: "INBOX".into(),
            special_use: None,
            flags: Vec::new(),
            create: false,
            variant: None,
        }
    }

    /// The account's `\Junk` mailbox (created as "Junk" if it has none).
    pub fn junk() -> Copy {
        Copy {
            mailbox: "Junk".into(),
            special_use: Some("\\Junk".into()),
            flags: Vec::new(),
            create: true,
            variant: None,
        }
    }
}

impl Recipient {
    pub fn inbox(account_id: u64) -> Recipient {
        Recipient {
            account_id,
            copies: vec![Copy::inbox()],
        }
    }

    pub fn junk(account_id: u64) -> Recipient {
        Recipient {
            account_id,
            copies: vec![Copy::junk()],
        }
    }

    /// Copies that would land in INBOX land in Junk instead (quarantine).
    pub fn quarantine(&mut self) {
        for c in &mut self.copies {
            if c.mailbox.eq_ignore_ascii_case("INBOX") && c.special_use.is_none() {
                let (flags, variant) = (std::mem::take(&mut c.flags), c.variant.take());
                *c = Copy {
                    flags,
                    variant,
                    ..Copy::junk()
                };
            }
        }
    }
}

/// Something a Sieve script sends (a redirect, a vacation reply, a rejection notice) and what
/// it remembers (`duplicate` ids, vacation replies per sender), committed with the delivery.
#[derive(Debug, Clone)]
pub struct Effect {
    pub account_id: u64,
    /// Remember this id until the given unix time. With an outbound message, the message is
    /// sent only when the id is not remembered already (so concurrent deliveries from one
    /// sender get one vacation reply between them).
    pub seen: Option<(String, i64)>,
    pub outbound: Option<Outbound>,
}

/// What happened to one recipient's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed, with this UID in the mailbox.
    Stored { uid: u32 },
    /// The message does not fit in the account's quota.
    OverQuota,
    /// The account is disabled.
    Disabled,
    /// No such account or mailbox (deleted meanwhile).
    Missing,
    /// The account's Sieve script discarded (or rejected) it: delivered, with no copy kept.
    Discarded,
}

impl Outcome {
    /// The message reached the recipient (stored, or disposed of by the recipient's filter).
    pub fn delivered(self) -> bool {
        matches!(self, Outcome::Stored { .. } | Outcome::Discarded)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
    #[error("the store could not commit the delivery: {0}")]
    Store(#[source] std::sync::Arc<StoreError>),
    #[error("the delivery writer dropped the transaction")]
    Dropped,
    #[error("the delivery writer has stopped")]
    Stopped,
}

/// A message for the outbound queue, committed in the same transaction as the local copies.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Exactly what will be sent.
    pub message: Vec<u8>,
    /// Envelope sender; empty for a bounce.
    pub sender: String,
    /// `submission`, `forward` or `bounce`.
    pub source: &'static str,
    /// (address, the address the sender used when it differs).
    pub recipients: Vec<(String, Option<String>)>,
}

/// Who hears about local recipients that did not get the message (over quota, disabled or
/// deleted meanwhile) when others did: a DSN queued in the same transaction.
#[derive(Debug, Clone)]
pub struct BounceTo {
    /// The envelope sender; nothing is sent for the null sender.
    pub sender: String,
    pub hostname: String,
    /// The session's id for the message, named in the report.
    pub id: String,
    /// The address of each local recipient, in order.
    pub addresses: Vec<String>,
}

/// What a delivery did, after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Per local recipient, in order.
    pub outcomes: Vec<Outcome>,
    /// The queue id of the outbound part, if there was one.
    pub queued: Option<u64>,
    /// The queue id of the DSN about local recipients that did not get it, if one was sent.
    pub bounced: Option<u64>,
    /// Queue ids of what the recipients' filters sent.
    pub sent: Vec<u64>,
}

/// Everything one message's delivery commits together.
#[derive(Debug, Default)]
pub struct Delivery {
    pub message: Vec<u8>,
    /// Edited copies (Sieve `editheader`) that [`Copy::variant`] points at.
    pub variants: Vec<Vec<u8>>,
    pub recipients: Vec<Recipient>,
    pub internal_date: i64,
    pub outbound: Option<Outbound>,
    pub bounce: Option<BounceTo>,
    pub effects: Vec<Effect>,
    /// More writes that belong to this delivery (a rate-limit charge, a released quarantine
    /// entry), in its transaction.
    pub also: Option<Also>,
}

/// Writes committed with a delivery, or not at all.
#[derive(Clone)]
pub struct Also(Arc<dyn Fn(&Write<'_>) -> Result<(), StoreError> + Send + Sync>);

impl Also {
    pub fn new(f: impl Fn(&Write<'_>) -> Result<(), StoreError> + Send + Sync + 'static) -> Also {
        Also(Arc::new(f))
    }
}

impl std::fmt::Debug for Also {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Also(..)")
    }
}

/// Queue ids committed by the writer, for the queue's scheduler, and its wake-up call.
#[derive(Debug, Default)]
pub struct NewlyQueued {
    ids: std::sync::Mutex<Vec<u64>>,
    pub notify: tokio::sync::Notify,
}

impl NewlyQueued {
    pub fn push(&self, id: u64) {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id);
        self.notify.notify_one();
    }

    pub fn take(&self) -> Vec<u64> {
        std::mem::take(
            &mut *self
                .ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Called once the transaction that ran a [`Deliverer::write`] closure is over.
type Finish = Box<dyn FnOnce(Result<(), DeliverError>) + Send>;
type ApplyFn = Box<dyn FnOnce(&Write<'_>) -> Result<Finish, StoreError> + Send>;

/// What the writer applies: a delivery, or any other change that should share its commits.
enum Work {
    Deliver(Box<Job>),
    Apply {
        apply: Option<ApplyFn>,
        finish: Option<Finish>,
    },
}

impl Work {
    fn bytes(&self) -> usize {
        match self {
            Work::Deliver(job) => {
                job.message.len()
                    + job.variants.iter().map(Vec::len).sum::<usize>()
                    + job.outbound.as_ref().map_or(0, |o| o.message.len())
            }
            Work::Apply { .. } => 0,
        }
    }
}

struct Job {
    message: Vec<u8>,
    variants: Vec<Vec<u8>>,
    recipients: Vec<Recipient>,
    internal_date: i64,
    outbound: Option<Outbound>,
    bounce: Option<BounceTo>,
    effects: Vec<Effect>,
    also: Option<Also>,
    reply: tokio::sync::oneshot::Sender<Result<Delivered, DeliverError>>,
}

/// Handle to the delivery writer; cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    tx: mpsc::Sender<Work>,
    commits: Arc<AtomicU64>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    changes: Changes,
    queued: Arc<NewlyQueued>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("commits", &self.commits())
            .finish()
    }
}

impl Deliverer {
    /// Starts the writer thread. It ends when every handle is dropped, after answering what it has.
    pub fn start(store: Store) -> std::io::Result<Deliverer> {
        Deliverer::start_with_metrics(store, crate::metrics::MailMetrics::default())
    }

    /// [`Deliverer::start`], counting batch sizes and commit times in `metrics`.
    pub fn start_with_metrics(
        store: Store,
        metrics: crate::metrics::MailMetrics,
    ) -> std::io::Result<Deliverer> {
        let (tx, rx) = mpsc::channel::<Work>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let changes = Changes::default();
        let notify = changes.clone();
        let queued = Arc::new(NewlyQueued::default());
        let wake = queued.clone();
        let handle = std::thread::Builder::new()
            .name("wispd-deliver".into())
            .spawn(move || writer(store, rx, counter, notify, wake, metrics))?;
        Ok(Deliverer {
            tx,
            commits,
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
            changes,
            queued,
        })
    }

    /// Stores `message` once and links it into every recipient's mailbox; returns per recipient
    /// what happened, after the commit.
    pub async fn deliver(
        &self,
        message: Vec<u8>,
        recipients: Vec<Recipient>,
        internal_date: i64,
    ) -> Result<Vec<Outcome>, DeliverError> {
        Ok(self
            .deliver_and_queue(message, recipients, internal_date, None, None)
            .await?
            .outcomes)
    }

    /// Like [`Deliverer::deliver`], and queues `outbound` (and the DSN `bounce` asks for) in
    /// the same transaction: all are committed, or nothing.
    pub async fn deliver_and_queue(
        &self,
        message: Vec<u8>,
        recipients: Vec<Recipient>,
        internal_date: i64,
        outbound: Option<Outbound>,
        bounce: Option<BounceTo>,
    ) -> Result<Delivered, DeliverError> {
        self.deliver_all(Delivery {
            message,
            recipients,
            internal_date,
            outbound,
            bounce,
            ..Delivery::default()
        })
        .await
    }

    /// Commits `d` whole: the local copies, the outbound part, the DSN it asks for and what
    /// the recipients' filters sent and remembered.
    pub async fn deliver_all(&self, d: Delivery) -> Result<Delivered, DeliverError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Work::Deliver(Box::new(Job {
                message: d.message,
                variants: d.variants,
                recipients: d.recipients,
                internal_date: d.internal_date,
                outbound: d.outbound.filter(|o| !o.recipients.is_empty()),
                bounce: d.bounce,
                effects: d.effects,
                also: d.also,
                reply,
            })))
            .map_err(|_| DeliverError::Stopped)?;
        answer.await.map_err(|_| DeliverError::Stopped)?
    }

    /// Runs `f` in the writer's next transaction, beside the deliveries waiting then, and
    /// returns its result once that transaction is committed. If the transaction fails,
    /// nothing `f` did is stored.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Write<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, DeliverError> {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<R, DeliverError>>();
        let apply: ApplyFn = Box::new(move |w| {
            let r = f(w)?;
            Ok(Box::new(move |done: Result<(), DeliverError>| {
                let _ = reply.send(done.map(|()| r));
            }) as Finish)
        });
        self.tx
            .send(Work::Apply {
                apply: Some(apply),
                finish: None,
            })
            .map_err(|_| DeliverError::Stopped)?;
        answer.await.map_err(|_| DeliverError::Dropped)?
    }

    /// Where committed queue ids are announced.
    pub fn queued(&self) -> &Arc<NewlyQueued> {
        &self.queued
    }

    /// Stops the writer once every other handle is gone, after it has answered what was queued,
    /// and waits for it (so the store is no longer in use when this returns).
    pub fn shutdown(self) {
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        drop(self.tx);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Where committed deliveries are announced (IMAP IDLE listens there).
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Transactions committed so far (fewer than deliveries when they were grouped).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

fn writer(
    store: Store,
    rx: mpsc::Receiver<Work>,
    commits: Arc<AtomicU64>,
    changes: Changes,
    queued: Arc<NewlyQueued>,
    metrics: crate::metrics::MailMetrics,
) {
    let mut delivered = 0u64;
    let started = std::time::Instant::now();
    let mut commit_time = std::time::Duration::ZERO;
    while let Ok(first) = rx.recv() {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(work) => {
                    bytes += work.bytes();
                    batch.push(work);
                }
                Err(_) => break,
            }
        }
        let t = std::time::Instant::now();
        let result = store.write(|w| {
            let mut out = Vec::with_capacity(batch.len());
            for work in &mut batch {
                match work {
                    Work::Deliver(job) => out.push(Some(apply(w, job)?)),
                    Work::Apply { apply, finish } => {
                        if let Some(f) = apply.take() {
                            *finish = Some(f(w)?);
                        }
                        out.push(None);
                    }
                }
            }
            Ok::<_, StoreError>(out)
        });
        let took = t.elapsed();
        commit_time += took;
        metrics.delivery_commit_seconds.observe(took.as_secs_f64());
        metrics.delivery_batch_size.observe(batch.len() as f64);
        delivered += batch
            .iter()
            .filter(|w| matches!(w, Work::Deliver(_)))
            .count() as u64;
        commits.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(all) => {
                changes.bump();
                for id in all.iter().flatten().flat_map(|d| {
                    d.queued
                        .into_iter()
                        .chain(d.bounced)
                        .chain(d.sent.iter().copied())
                }) {
                    queued.push(id);
                }
                for (work, outcome) in batch.into_iter().zip(all) {
                    match (work, outcome) {
                        (Work::Deliver(job), Some(d)) => {
                            let _ = job.reply.send(Ok(d));
                        }
                        (Work::Apply { finish, .. }, _) => {
                            if let Some(f) = finish {
                                f(Ok(()));
                            }
                        }
                        (Work::Deliver(_), None) => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "delivery transaction failed; nothing of it was stored");
                let e = std::sync::Arc::new(e);
                for work in batch {
                    match work {
                        Work::Deliver(job) => {
                            let _ = job.reply.send(Err(DeliverError::Store(e.clone())));
                        }
                        Work::Apply { finish, .. } => {
                            if let Some(f) = finish {
                                f(Err(DeliverError::Store(e.clone())));
                            }
                        }
                    }
                }
            }
        }
    }
    tracing::info!(
        delivered,
        commits = commits.load(Ordering::Relaxed),
        busy_ms = commit_time.as_millis(),
        up_ms = started.elapsed().as_millis(),
        "delivery writer stopped"
    );
}

fn apply(w: &Write<'_>, job: &Job) -> Result<Delivered, StoreError> {
    let outcomes = store_local(w, job)?;
    let queued = match &job.outbound {
        Some(o) => Some(enqueue(w, o, job.internal_date)?),
        None => None,
    };
    let bounced = match &job.bounce {
        Some(b) => bounce(w, job, b, &outcomes, queued.is_some())?,
        None => None,
    };
    let mut sent = Vec::new();
    for e in &job.effects {
        if let Some((id, expires)) = &e.seen {
            let key = (e.account_id, id.as_str());
            let remembered = w
                .get(&SIEVE_SEEN, key)?
                .is_some_and(|until: i64| until > job.internal_date);
            if remembered && e.outbound.is_some() {
                // Another delivery sent it meanwhile.
                continue;
            }
            if !remembered || e.outbound.is_none() {
                w.put(&SIEVE_SEEN, key, expires)?;
            }
        }
        if let Some(o) = &e.outbound
            && !o.recipients.is_empty()
        {
            sent.push(enqueue(w, o, job.internal_date)?);
        }
    }
    if let Some(also) = &job.also {
        (also.0)(w)?;
    }
    Ok(Delivered {
        outcomes,
        queued,
        bounced,
        sent,
    })
}

/// Queues a DSN for the local recipients that did not get the message, when some recipient
/// did (otherwise the SMTP reply itself is the refusal).
fn bounce(
    w: &Write<'_>,
    job: &Job,
    to: &BounceTo,
    outcomes: &[Outcome],
    queued: bool,
) -> Result<Option<u64>, StoreError> {
    let delivered = queued || outcomes.iter().any(|o| o.delivered());
    if to.sender.is_empty() || !delivered {
        return Ok(None);
    }
    let failures: Vec<Failure> = outcomes
        .iter()
        .zip(&to.addresses)
        .filter_map(|(o, address)| {
            let (status, reply) = match o {
                Outcome::Stored { .. } | Outcome::Discarded => return None,
                Outcome::OverQuota => (
                    "5.2.2",
                    "552 5.2.2 Mailbox full: the message does not fit in the recipient's quota",
                ),
                Outcome::Disabled => ("5.2.1", "550 5.2.1 Mailbox disabled"),
                Outcome::Missing => ("5.1.1", "550 5.1.1 Recipient no longer available"),
            };
            Some(Failure {
                recipient: address.clone(),
                original: None,
                status: status.into(),
                remote: None,
                diagnostic: reply.into(),
            })
        })
        .collect();
    if failures.is_empty() {
        return Ok(None);
    }
    let report = crate::queue::dsn::build(
        &to.hostname,
        &to.id,
        job.internal_date,
        &to.sender,
        &failures,
        &job.message,
    );
    let out = Outbound {
        message: report,
        sender: String::new(),
        source: "bounce",
        recipients: vec![(to.sender.clone(), None)],
    };
    enqueue(w, &out, job.internal_date).map(Some)
}

/// Puts `o` in the outbound queue, every recipient due now; returns its queue id.
pub fn enqueue(w: &Write<'_>, o: &Outbound, now: i64) -> Result<u64, StoreError> {
    let id = w.get(&MAIL_META, "next_queue_id")?.unwrap_or(1).max(1);
    w.put(&MAIL_META, "next_queue_id", &(id + 1))?;
    let entry = QueuedMessage {
        id,
        sender: o.sender.clone(),
        created_at: now,
        size: o.message.len() as u64,
        source: o.source.to_string(),
        recipients: o
            .recipients
            .iter()
            .map(|(address, original)| QueuedRecipient {
                address: address.clone(),
                original: original.clone(),
                status: "queued".into(),
                attempts: 0,
                next_attempt: now,
                last_attempt: None,
                last_error: None,
                remote: None,
            })
            .collect(),
    };
    w.put(&MAIL_QUEUE, id, &entry)?;
    w.put_raw(&MAIL_QUEUE_DATA, id, &o.message)?;
    Ok(id)
}

fn store_local(w: &Write<'_>, job: &Job) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(job.recipients.len());
    // Message ids of the message (index 0) and its variants, stored once each on first use,
    // with how many entries point at them.
    let mut stored: Vec<Option<(u64, u32)>> = vec![None; job.variants.len() + 1];
    let bytes = |variant: Option<usize>| -> &[u8] {
        variant
            .and_then(|v| job.variants.get(v))
            .map_or(job.message.as_slice(), Vec::as_slice)
    };
    for r in &job.recipients {
        let Some(mut account) = w.get(&MAIL_ACCOUNTS, r.account_id)? else {
            outcomes.push(Outcome::Missing);
            continue;
        };
        if !account.enabled {
            outcomes.push(Outcome::Disabled);
            continue;
        }
        if r.copies.is_empty() {
            outcomes.push(Outcome::Discarded);
            continue;
        }
        let size: u64 = r.copies.iter().map(|c| bytes(c.variant).len() as u64).sum();
        let limit = account.quota_mb.saturating_mul(1 << 20);
        if account.quota_mb > 0 && account.used_bytes.saturating_add(size) > limit {
            outcomes.push(Outcome::OverQuota);
            continue;
        }
        let mut first_uid = None;
        let mut placed: Vec<(String, Option<usize>)> = Vec::new();
        for copy in &r.copies {
            let Some((name, mut mailbox)) = target_mailbox(w, r.account_id, copy)? else {
                continue;
            };
            // The same message twice in one mailbox is one copy (RFC 5228 §2.10.3).
            if placed.contains(&(name.clone(), copy.variant)) {
                continue;
            }
            placed.push((name.clone(), copy.variant));
            let slot = copy.variant.map_or(0, |v| v + 1).min(job.variants.len());
            let id = match stored[slot] {
                Some((id, _)) => id,
                None => {
                    let id = w.get(&MAIL_META, "next_message_id")?.unwrap_or(1).max(1);
                    w.put(&MAIL_META, "next_message_id", &(id + 1))?;
                    w.put_raw(&MAIL_MESSAGES, id, bytes(copy.variant))?;
                    stored[slot] = Some((id, 0));
                    id
                }
            };
            if let Some((_, refs)) = stored[slot].as_mut() {
                *refs = refs.saturating_add(1);
            }
            let len = bytes(copy.variant).len() as u64;
            let uid = mailbox.uidnext;
            mailbox.uidnext = mailbox.uidnext.saturating_add(1);
            mailbox.highest_modseq += 1;
            let entry = MailEntry {
                message_id: id,
                uid,
                flags: copy.flags.clone(),
                internal_date: job.internal_date,
                size: len,
                modseq: mailbox.highest_modseq,
            };
            w.put(&MAIL_ENTRIES, (r.account_id, name.as_str(), uid), &entry)?;
            w.put(&MAIL_MAILBOXES, (r.account_id, name.as_str()), &mailbox)?;
            account.used_bytes = account.used_bytes.saturating_add(len);
            first_uid.get_or_insert(uid);
        }
        match first_uid {
            Some(uid) => {
                w.put(&MAIL_ACCOUNTS, r.account_id, &account)?;
                outcomes.push(Outcome::Stored { uid });
            }
            None => outcomes.push(Outcome::Missing),
        }
    }
    for (slot, s) in stored.iter().enumerate() {
        if let Some((id, refs)) = *s {
            let size = if slot == 0 {
                job.message.len()
            } else {
                job.variants[slot - 1].len()
            } as u64;
            w.put(&MAIL_MESSAGE_META, id, &MessageMeta { size, refs })?;
        }
    }
    Ok(outcomes)
}

/// The mailbox a copy lands in, by name: the account's mailbox with the copy's special use,
/// else the named one (created when the copy asks for it), else INBOX. `None`: not even INBOX.
fn target_mailbox(
    w: &Write<'_>,
    account: u64,
    copy: &Copy,
) -> Result<Option<(String, Mailbox)>, StoreError> {
    if let Some(special) = copy.special_use.as_deref() {
        let all: Vec<Mailbox> = w.values_in(&MAIL_MAILBOXES, (account, "")..(account + 1, ""))?;
        if let Some(mb) = all.into_iter().find(|m| {
            m.special_use
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(special))
        }) {
            return Ok(Some((mb.name.clone(), mb)));
        }
    }
    let name = crate::mailbox::canonical(&copy.mailbox);
    if let Some(mb) = w.get(&MAIL_MAILBOXES, (account, name.as_str()))? {
        return Ok(Some((name, mb)));
    }
    if copy.create && crate::mailbox::check_name(&name).is_ok() {
        let mb = Mailbox {
            name: name.clone(),
            special_use: None,
            uidvalidity: crate::mailbox::new_uidvalidity(w)?,
            uidnext: 1,
            highest_modseq: 1,
            subscribed: true,
            recent_uid: 0,
            vanished_count: 0,
            vanished_floor: 0,
            imported: None,
        };
        w.put(&MAIL_MAILBOXES, (account, name.as_str()), &mb)?;
        return Ok(Some((name, mb)));
    }
    if name != "INBOX" {
        tracing::info!(account, mailbox = %name, "filter named a mailbox that does not exist; kept in INBOX");
    }
    Ok(w.get(&MAIL_MAILBOXES, (account, "INBOX"))?
        .map(|mb| ("INBOX".to_string(), mb)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{Directory, NewAccount};

    fn setup(name: &str) -> (std::path::PathBuf, Store, Directory) {
        let d = std::env::temp_dir().join(format!("wispd-deliver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let store = Store::open(&d).expect("store");
        (d, store.clone(), Directory::new(store))
    }

    fn account(dir: &Directory, user: &str, quota_mb: i64) -> u64 {
        dir.create_account(NewAccount {
            password_hash: None,
            domain: Some("example.com".into()),
            username: Some(user.into()),
            password: Some("password1".into()),
            quota_mb: Some(quota_mb),
        })
        .expect("account")
        .id
    }

    #[tokio::test]
    async fn one_message_stored_once_for_several_recipients_with_quota_kept() {
        let (_d, store, dir) = setup("once");
        let (a, b) = (account(&dir, "a", 0), account(&dir, "b", 1));
        let deliverer = Deliverer::start(store.clone()).expect("start");
        let msg = vec![b'x'; 600 * 1024];
        let out = deliverer
            .deliver(
                msg.clone(),
                vec![Recipient::inbox(a), Recipient::inbox(b)],
                7,
            )
            .await
            .expect("deliver");
        assert_eq!(
            out,
            vec![Outcome::Stored { uid: 1 }, Outcome::Stored { uid: 1 }]
        );
        let out = deliverer
            .deliver(
                msg.clone(),
                vec![Recipient::inbox(a), Recipient::inbox(b)],
                8,
            )
            .await
            .expect("deliver");
        assert_eq!(
            out,
            vec![Outcome::Stored { uid: 2 }, Outcome::OverQuota],
            "b's 1 MiB quota is full"
        );
        store
            .read(|r| {
                assert_eq!(
                    r.get(&MAIL_MESSAGE_META, 1u64)?,
                    Some(MessageMeta {
                        size: msg.len() as u64,
                        refs: 2
                    })
                );
                assert_eq!(
                    r.get(&MAIL_MESSAGE_META, 2u64)?,
                    Some(MessageMeta {
                        size: msg.len() as u64,
                        refs: 1
                    })
                );
                assert_eq!(
                    r.get_raw(&MAIL_MESSAGES, 1u64)?.map(|m| m.len()),
                    Some(msg.len())
                );
                let e = r.get(&MAIL_ENTRIES, (a, "INBOX", 2u32))?.expect("entry");
                assert_eq!((e.message_id, e.internal_date, e.modseq), (2, 8, 3));
                assert_eq!(
                    r.get(&MAIL_ACCOUNTS, b)?.map(|x| x.used_bytes),
                    Some(msg.len() as u64)
                );
                assert_eq!(
                    r.get(&MAIL_MAILBOXES, (a, "INBOX"))?.map(|m| m.uidnext),
                    Some(3)
                );
                Ok::<_, StoreError>(())
            })
            .expect("read");
        dir.toggle_account(a).expect("disable");
        let out = deliverer
            .deliver(
                b"hi".to_vec(),
                vec![Recipient::inbox(a), Recipient::inbox(999)],
                9,
            )
            .await
            .expect("deliver");
        assert_eq!(out, vec![Outcome::Disabled, Outcome::Missing]);
    }

    #[tokio::test]
    async fn other_writes_share_the_writer_and_fail_whole() {
        let (_d, store, _dir) = setup("write");
        let deliverer = Deliverer::start(store.clone()).expect("start");
        let v = deliverer
            .write(|w| {
                w.put(&MAIL_META, "probe", &7u64)?;
                Ok(42u32)
            })
            .await
            .expect("write");
        assert_eq!(v, 42);
        let read = || store.read(|r| r.get(&MAIL_META, "probe")).expect("read");
        assert_eq!(read(), Some(7));
        let failed = deliverer
            .write(|w| {
                w.put(&MAIL_META, "probe", &8u64)?;
                Err::<(), _>(StoreError::NoMigration { from: 0 })
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(read(), Some(7), "nothing of a failed write is stored");
    }

    #[tokio::test]
    async fn deleting_accounts_releases_their_messages() {
        let (_d, store, dir) = setup("release");
        let (a, b) = (account(&dir, "a", 0), account(&dir, "b", 0));
        let deliverer = Deliverer::start(store.clone()).expect("start");
        deliverer
            .deliver(
                b"shared".to_vec(),
                vec![Recipient::inbox(a), Recipient::inbox(b)],
                1,
            )
            .await
            .expect("deliver");
        dir.delete_account(a).expect("delete a");
        let meta = store
            .read(|r| r.get(&MAIL_MESSAGE_META, 1u64))
            .expect("read");
        assert_eq!(meta.map(|m| m.refs), Some(1), "b still holds it");
        dir.delete_account(b).expect("delete b");
        store
            .read(|r| {
                assert_eq!(r.get(&MAIL_MESSAGE_META, 1u64)?, None);
                assert_eq!(r.get_raw(&MAIL_MESSAGES, 1u64)?, None);
                assert_eq!(r.len(&MAIL_ENTRIES)?, 0);
                Ok::<_, StoreError>(())
            })
            .expect("read");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deliveries_share_commits_and_get_distinct_uids() {
        let (d, store, dir) = setup("group");
        let a = account(&dir, "a", 0);
        let deliverer = Deliverer::start(store.clone()).expect("start");
        let n = 300u32;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let dl = deliverer.clone();
                tokio::spawn(async move {
                    dl.deliver(
                        format!("message {i}").into_bytes(),
                        vec![Recipient::inbox(a)],
                        1,
                    )
                    .await
                })
            })
            .collect();
        let mut uids = Vec::new();
        for t in tasks {
            match t.await.expect("task").expect("deliver")[0] {
                Outcome::Stored { uid } => uids.push(uid),
                other => panic!("{other:?}"),
            }
        }
        uids.sort_unstable();
        assert_eq!(uids, (1..=n).collect::<Vec<_>>());
        assert!(
            deliverer.commits() < u64::from(n),
            "{} commits for {n} deliveries",
            deliverer.commits()
        );
        deliverer.shutdown();
        drop(dir);
        drop(store);
        // everything acknowledged is in the file
        let store = Store::open(&d).expect("reopen");
        let entries = store
            .read(|r| r.values_in(&MAIL_ENTRIES, (a, "INBOX", 0u32)..=(a, "INBOX", u32::MAX)))
            .expect("read");
        assert_eq!(entries.len(), n as usize);
    }
}
