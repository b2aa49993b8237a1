//! Virus scanning by clamd (`/email/clamav`): every message the MX or submission accepts goes
//! to clamd over its unix or TCP socket with `zINSTREAM` after DATA and before the `250`. A
//! virus is refused (`554 5.7.1` naming the signature) or held in a quarantine the admin lists,
//! reads and releases or deletes. clamd down, slow or failing is `451 4.3.0` or an accepted
//! message marked `X-Virus-Status: Unscanned`, as the operator chooses; nothing is dropped.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wispd_store::schema::{
    ClamavSettings, MAIL_CLAMAV, MAIL_META, MAIL_QUARANTINE, MAIL_QUARANTINE_DATA, QuarantineEntry,
};
use wispd_store::{Store, StoreError};

use crate::delivery::{BounceTo, DeliverError, Deliverer, Delivery, Outbound, Recipient};

/// A chunk of the stream (clamd reads each into memory up to its `StreamMaxLength`).
const CHUNK: usize = 64 * 1024;
/// The longest answer read from clamd.
const MAX_ANSWER: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes of `/email/status` and `/email/clamav`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Where Debian's packages put the daemon (`installed` when no socket is there yet).
const CLAMD_BINARIES: [&str; 2] = ["/usr/sbin/clamd", "/usr/bin/clamd"];
/// The header block of a quarantined message shown to the admin, at most.
const MAX_SHOWN_HEADERS: usize = 16 * 1024;
/// Quarantined messages listed per page, at most.
pub const MAX_PAGE: usize = 500;
/// The quarantine holds at most this many messages and bytes; past either a virus is refused
/// (`554 5.7.1`) as with `action` `reject`, so a flood of infected mail can't fill the disk.
pub const MAX_HELD: u64 = 10_000;
pub const MAX_HELD_BYTES: u64 = 2 << 30;

/// What clamd said of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    Clean,
    Virus(String),
    /// Larger than clamd takes (its `StreamMaxLength`, or ours).
    TooBig,
    Error(String),
}

/// What to do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Scanning is off.
    Skip,
    /// Deliver with this header; `virus` is Sieve's virustest value (RFC 5235: 0 not scanned,
    /// 1 clean).
    Deliver { header: String, virus: u32 },
    /// `code enhanced text`.
    Refuse(u16, &'static str, String),
    /// Hold it, naming the signature.
    Quarantine(String),
}

/// The scanner and its counters.
#[derive(Debug)]
pub struct Clamav {
    store: Store,
    settings: RwLock<ClamavSettings>,
    scanned: AtomicU64,
    infected: AtomicU64,
    errors: AtomicU64,
    unscanned: AtomicU64,
    last_error: Mutex<Option<(i64, String)>>,
    /// What the quarantine holds: messages and bytes (kept with its writes).
    held: Mutex<(u64, u64)>,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClamavStats {
    pub scanned: u64,
    pub infected: u64,
    pub errors: u64,
    pub unscanned: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// What a probe of clamd found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub installed: bool,
    pub running: bool,
    pub version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClamavError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Deliver(#[from] DeliverError),
}

impl Clamav {
    pub fn new(store: Store) -> Result<Clamav, StoreError> {
        let settings = store
            .read(|r| r.get(&MAIL_CLAMAV, "clamav"))?
            .unwrap_or_default();
        let held = store.read(|r| {
            let all: Vec<QuarantineEntry> = r.values_in(&MAIL_QUARANTINE, 0u64..)?;
            Ok::<_, StoreError>((all.len() as u64, all.iter().map(|e| e.size).sum()))
        })?;
        Ok(Clamav {
            store,
            settings: RwLock::new(settings),
            scanned: AtomicU64::new(0),
            infected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unscanned: AtomicU64::new(0),
            last_error: Mutex::new(None),
            held: Mutex::new(held),
        })
    }

    pub fn settings(&self) -> ClamavSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn enabled(&self) -> bool {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .enabled
    }

    /// Checks, stores and applies `s`; returns it as stored.
    pub fn set(&self, mut s: ClamavSettings) -> Result<ClamavSettings, ClamavError> {
        validate(&mut s)?;
        self.store.write(|w| w.put(&MAIL_CLAMAV, "clamav", &s))?;
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = s.clone();
        Ok(s)
    }

    pub fn stats(&self) -> ClamavStats {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ClamavStats {
            scanned: self.scanned.load(Ordering::Relaxed),
            infected: self.infected.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            unscanned: self.unscanned.load(Ordering::Relaxed),
            last_error_at: last.as_ref().map(|l| l.0),
            last_error: last.map(|l| l.1),
        }
    }

    /// clamd at the configured socket: installed (the socket is there, or the daemon's binary
    /// is), running (it answers `PING`) and its `VERSION`.
    pub async fn probe(&self) -> Probe {
        probe(&self.settings().socket).await
    }

    /// Scans the message (as it will be stored, in `parts` so that it needn't be copied into
    /// one buffer) and says what to do with it.
    pub async fn check(&self, parts: &[&[u8]]) -> Decision {
        let s = self.settings();
        if !s.enabled {
            return Decision::Skip;
        }
        let limit = s.max_size_mb.saturating_mul(1 << 20);
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let scan = if u64::try_from(size).unwrap_or(u64::MAX) > limit {
            Scan::TooBig
        } else {
            let timeout = Duration::from_secs(s.timeout_seconds.max(1));
            match tokio::time::timeout(timeout, scan(&s.socket, parts)).await {
                Ok(r) => r,
                Err(_) => Scan::Error(format!("no answer within {}s", s.timeout_seconds)),
            }
        };
        match scan {
            Scan::Clean => {
                self.scanned.fetch_add(1, Ordering::Relaxed);
                Decision::Deliver {
                    header: "X-Virus-Status: Clean\r\n".into(),
                    virus: 1,
                }
            }
            Scan::Virus(name) => {
                self.scanned.fetch_add(1, Ordering::Relaxed);
                self.infected.fetch_add(1, Ordering::Relaxed);
                let (count, bytes) = *self.held.lock().unwrap_or_else(PoisonError::into_inner);
                let room = count < MAX_HELD && bytes.saturating_add(size as u64) <= MAX_HELD_BYTES;
                if s.action == "quarantine" && room {
                    Decision::Quarantine(name)
                } else {
                    if s.action == "quarantine" {
                        tracing::warn!(
                            count,
                            bytes,
                            "the quarantine is full; refusing the virus instead"
                        );
                    }
                    Decision::Refuse(554, "5.7.1", format!("Virus found: {name}"))
                }
            }
            Scan::TooBig => {
                if s.oversize == "reject" {
                    Decision::Refuse(
                        552,
                        "5.3.4",
                        format!(
                            "Message too large to be scanned for viruses (over {} MB)",
                            s.max_size_mb
                        ),
                    )
                } else {
                    self.unscanned.fetch_add(1, Ordering::Relaxed);
                    Decision::Deliver {
                        header: "X-Virus-Status: Unscanned (too large to scan)\r\n".into(),
                        virus: 0,
                    }
                }
            }
            Scan::Error(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(socket = %s.socket, error = %e, "virus scan failed");
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((wispd_store::unix_now(), e));
                if s.on_error == "accept" {
                    self.unscanned.fetch_add(1, Ordering::Relaxed);
                    Decision::Deliver {
                        header: "X-Virus-Status: Unscanned (scanner unavailable)\r\n".into(),
                        virus: 0,
                    }
                } else {
                    Decision::Refuse(
                        451,
                        "4.3.0",
                        "Virus scanner unavailable, try again later".into(),
                    )
                }
            }
        }
    }

    /// Holds `message` (the copy as received, without `Return-Path:`) with what its delivery
    /// would have been; durable in the delivery writer's next commit when this returns.
    pub async fn quarantine(
        &self,
        deliverer: &Deliverer,
        mut entry: QuarantineEntry,
        message: Vec<u8>,
    ) -> Result<u64, ClamavError> {
        let days = self.settings().quarantine_days.max(1);
        entry.expires = entry
            .received_at
            .saturating_add(i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX));
        entry.size = message.len() as u64;
        let size = entry.size;
        let id = deliverer
            .write(move |w| {
                let id = w
                    .get(&MAIL_META, "next_quarantine_id")?
                    .unwrap_or(1u64)
                    .max(1);
                w.put(&MAIL_META, "next_quarantine_id", &(id + 1))?;
                entry.id = id;
                w.put(&MAIL_QUARANTINE, id, &entry)?;
                w.put_raw(&MAIL_QUARANTINE_DATA, id, &message)?;
                Ok(id)
            })
            .await?;
        self.hold(1, size);
        Ok(id)
    }

    /// Counts messages into (`n` > 0) or out of the quarantine.
    fn hold(&self, n: i64, bytes: u64) {
        let mut h = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if n > 0 {
            h.0 += n.unsigned_abs();
            h.1 = h.1.saturating_add(bytes);
        } else {
            h.0 = h.0.saturating_sub(n.unsigned_abs());
            h.1 = h.1.saturating_sub(bytes);
        }
    }

    /// Held messages, newest first.
    pub fn quarantined(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<QuarantineEntry>, u64), StoreError> {
        self.store.read(|r| {
            let total = r.len(&MAIL_QUARANTINE)?;
            if limit == 0 {
                return Ok((Vec::new(), total));
            }
            let mut all: Vec<QuarantineEntry> = r.values_in(&MAIL_QUARANTINE, 0u64..)?;
            all.reverse();
            Ok((
                all.into_iter()
                    .skip(offset)
                    .take(limit.min(MAX_PAGE))
                    .collect(),
                total,
            ))
        })
    }

    /// One held message and its header block (as text, at most 16 KiB).
    pub fn held(&self, id: u64) -> Result<(QuarantineEntry, String), ClamavError> {
        let (entry, data) = self.store.read(|r| {
            Ok::<_, StoreError>((
                r.get(&MAIL_QUARANTINE, id)?,
                r.get_raw(&MAIL_QUARANTINE_DATA, id)?,
            ))
        })?;
        let entry = entry.ok_or_else(|| not_found(id))?;
        let data = data.unwrap_or_default();
        let end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(data.len(), |p| p + 2)
            .min(MAX_SHOWN_HEADERS);
        Ok((entry, String::from_utf8_lossy(&data[..end]).into_owned()))
    }

    /// Deletes a held message.
    pub fn delete(&self, id: u64) -> Result<(), ClamavError> {
        let found = self.store.write(|w| {
            let entry: Option<QuarantineEntry> = w.get(&MAIL_QUARANTINE, id)?;
            w.remove(&MAIL_QUARANTINE, id)?;
            w.remove_raw(&MAIL_QUARANTINE_DATA, id)?;
            Ok::<_, StoreError>(entry)
        })?;
        match found {
            Some(e) => {
                self.hold(-1, e.size);
                Ok(())
            }
            None => Err(not_found(id)),
        }
    }

    /// Delivers a held message as it would have been, without Sieve (to the local recipients'
    /// INBOX, DKIM-signed to other domains' for a submission) and marked as released; the
    /// entry goes in the same commit. Returns the queue id of the copy for other domains.
    pub async fn release(
        &self,
        deliverer: &Deliverer,
        hostname: &str,
        id: u64,
    ) -> Result<Option<u64>, ClamavError> {
        let (entry, data) = self.store.read(|r| {
            Ok::<_, StoreError>((
                r.get(&MAIL_QUARANTINE, id)?,
                r.get_raw(&MAIL_QUARANTINE_DATA, id)?,
            ))
        })?;
        let entry = entry.ok_or_else(|| not_found(id))?;
        let data = data.unwrap_or_default();
        let mark = format!(
            "X-Virus-Status: Infected ({}); released from quarantine by the administrator\r\n",
            entry.signature
        );
        let mut message = Vec::new();
        if !entry.accounts.is_empty() {
            message.extend_from_slice(format!("Return-Path: <{}>\r\n", entry.from).as_bytes());
            message.extend_from_slice(mark.as_bytes());
            message.extend_from_slice(&data);
        }
        let outbound = (!entry.remote.is_empty()).then(|| {
            let mut out = Vec::with_capacity(data.len() + 1024);
            if let Some(domain) = &entry.sign_domain {
                match crate::dkim::sign(&self.store, domain, &data) {
                    Ok(Some(h)) => out.extend_from_slice(h.as_bytes()),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(%domain, error = %e, "DKIM signing a released message failed; sending unsigned");
                    }
                }
            }
            out.extend_from_slice(&data);
            Outbound {
                message: out,
                sender: entry.remote_sender.clone(),
                source: if entry.source == "submission" {
                    "submission"
                } else {
                    "forward"
                },
                recipients: entry.remote.clone(),
            }
        });
        let delivered = deliverer
            .deliver_all(Delivery {
                message,
                recipients: entry
                    .accounts
                    .iter()
                    .map(|&a| Recipient::inbox(a))
                    .collect(),
                internal_date: entry.received_at,
                outbound,
                bounce: Some(BounceTo {
                    sender: entry.from.clone(),
                    hostname: hostname.to_string(),
                    id: entry.smtp_id.clone(),
                    addresses: entry.local.clone(),
                }),
                also: Some(crate::delivery::Also::new(move |w| {
                    w.remove(&MAIL_QUARANTINE, id)?;
                    w.remove_raw(&MAIL_QUARANTINE_DATA, id)?;
                    Ok(())
                })),
                ..Delivery::default()
            })
            .await?;
        if let Some(q) = delivered.queued {
            deliverer.queued().push(q);
        }
        if let Some(q) = delivered.bounced {
            deliverer.queued().push(q);
        }
        self.hold(-1, entry.size);
        tracing::info!(id, signature = %entry.signature, "quarantined message released");
        Ok(delivered.queued)
    }

    /// Deletes quarantined messages past their time; returns how many.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        let gone: Vec<(u64, u64)> = self.store.read(|r| {
            Ok::<_, StoreError>(
                r.values_in(&MAIL_QUARANTINE, 0u64..)?
                    .into_iter()
                    .filter(|e: &QuarantineEntry| e.expires <= now)
                    .map(|e| (e.id, e.size))
                    .collect(),
            )
        })?;
        if gone.is_empty() {
            return Ok(0);
        }
        self.store.write(|w| {
            for &(id, _) in &gone {
                w.remove(&MAIL_QUARANTINE, id)?;
                w.remove_raw(&MAIL_QUARANTINE_DATA, id)?;
            }
            Ok::<_, StoreError>(())
        })?;
        for &(_, size) in &gone {
            self.hold(-1, size);
        }
        Ok(gone.len())
    }
}

fn not_found(id: u64) -> ClamavError {
    ClamavError::NotFound(format!("No quarantined message {id}"))
}

/// Normalises and checks settings; the error names the field.
pub fn validate(s: &mut ClamavSettings) -> Result<(), ClamavError> {
    let bad = |m: String| Err(ClamavError::Invalid(m));
    s.socket = s.socket.trim().to_string();
    s.action = s.action.trim().to_ascii_lowercase();
    s.on_error = s.on_error.trim().to_ascii_lowercase();
    s.oversize = s.oversize.trim().to_ascii_lowercase();
    if s.socket.is_empty() || s.socket.len() > 256 || s.socket.chars().any(char::is_control) {
        return bad("socket: a unix socket path or host:port, at most 256 characters".into());
    }
    if !s.socket.starts_with('/') && s.socket.parse::<std::net::SocketAddr>().is_err() {
        return bad(format!(
            "socket: {:?} is neither an absolute unix socket path nor an IP address with a port (127.0.0.1:3310)",
            s.socket
        ));
    }
    if !["reject", "quarantine"].contains(&s.action.as_str()) {
        return bad("action: reject or quarantine".into());
    }
    if !["tempfail", "accept"].contains(&s.on_error.as_str()) {
        return bad("on_error: tempfail or accept".into());
    }
    if !["accept", "reject"].contains(&s.oversize.as_str()) {
        return bad("oversize: accept or reject".into());
    }
    if !(1..=4096).contains(&s.max_size_mb) {
        return bad("max_size_mb: between 1 and 4096".into());
    }
    if !(1..=600).contains(&s.timeout_seconds) {
        return bad("timeout_seconds: between 1 and 600".into());
    }
    if !(1..=3650).contains(&s.quarantine_days) {
        return bad("quarantine_days: between 1 and 3650".into());
    }
    Ok(())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(socket: &str) -> std::io::Result<Box<dyn Stream>> {
    let connecting = async {
        if socket.starts_with('/') {
            Ok(Box::new(tokio::net::UnixStream::connect(socket).await?) as Box<dyn Stream>)
        } else {
            let s = tokio::net::TcpStream::connect(socket).await?;
            s.set_nodelay(true).ok();
            Ok(Box::new(s) as Box<dyn Stream>)
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// clamd's answer to one `z` command: up to its NUL (or EOF), at most [`MAX_ANSWER`] bytes.
async fn answer(s: &mut Box<dyn Stream>) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&0) || buf.len() >= MAX_ANSWER {
            break;
        }
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).trim().to_string())
}

/// One `zINSTREAM` of the message in `parts` to clamd at `socket`.
pub async fn scan(socket: &str, parts: &[&[u8]]) -> Scan {
    let mut s = match connect(socket).await {
        Ok(s) => s,
        Err(e) => return Scan::Error(format!("connecting to {socket}: {e}")),
    };
    let sent = async {
        s.write_all(b"zINSTREAM\0").await?;
        for chunk in parts.iter().flat_map(|p| p.chunks(CHUNK)) {
            let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(chunk).await?;
        }
        s.write_all(&0u32.to_be_bytes()).await?;
        s.flush().await
    }
    .await;
    // clamd answers and closes as soon as the stream passes its limit: the answer says so
    let reply = match (answer(&mut s).await, sent) {
        (Ok(r), _) if !r.is_empty() => r,
        (_, Err(e)) => return Scan::Error(format!("sending to clamd: {e}")),
        (Ok(_), Ok(())) => {
            return Scan::Error("clamd closed the connection without an answer".into());
        }
        (Err(e), Ok(())) => return Scan::Error(format!("reading clamd's answer: {e}")),
    };
    parse(&reply)
}

/// `stream: OK`, `stream: Eicar-Signature FOUND`, `INSTREAM size limit exceeded. ERROR`, ...
pub fn parse(reply: &str) -> Scan {
    let r = reply.trim();
    if r.contains("size limit exceeded") {
        return Scan::TooBig;
    }
    let body = r.strip_prefix("stream:").map_or(r, str::trim);
    if body == "OK" {
        return Scan::Clean;
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name: String = name
            .trim()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(200)
            .collect();
        return Scan::Virus(if name.is_empty() {
            "unnamed".into()
        } else {
            name
        });
    }
    let shown: String = r.chars().filter(|c| !c.is_control()).take(200).collect();
    Scan::Error(format!("clamd: {shown}"))
}

async fn command(socket: &str, cmd: &[u8]) -> Option<String> {
    let attempt = async {
        let mut s = connect(socket).await?;
        s.write_all(cmd).await?;
        answer(&mut s).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(r)) => Some(r),
        _ => None,
    }
}

/// clamd at `socket`: see [`Clamav::probe`].
pub async fn probe(socket: &str) -> Probe {
    let running = command(socket, b"zPING\0")
        .await
        .is_some_and(|r| r == "PONG");
    let version = if running {
        command(socket, b"zVERSION\0")
            .await
            .map(|v| v.chars().filter(|c| !c.is_control()).take(200).collect())
    } else {
        None
    };
    let installed = running
        || (socket.starts_with('/') && Path::new(socket).exists())
        || CLAMD_BINARIES.iter().any(|p| Path::new(p).exists());
    Probe {
        installed,
        running,
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_answers_are_read() {
        assert_eq!(parse("stream: OK"), Scan::Clean);
        assert_eq!(
            parse("stream: Eicar-Test-Signature FOUND"),
            Scan::Virus("Eicar-Test-Signature".into())
        );
        assert_eq!(parse("INSTREAM size limit exceeded. ERROR"), Scan::TooBig);
        assert!(matches!(
            parse("stream: Can't allocate memory ERROR"),
            Scan::Error(_)
        ));
        // a signature name cannot put a line break into the SMTP reply
        assert_eq!(
            parse("stream: Bad\r\n250 ok FOUND"),
            Scan::Virus("Bad250ok".into())
        );
    }

    #[test]
    fn settings_are_checked() {
        let mut s = ClamavSettings::default();
        assert!(validate(&mut s).is_ok());
        s.socket = "127.0.0.1:3310".into();
        assert!(validate(&mut s).is_ok());
        for bad in ["relative/path", "localhost", ""] {
            s.socket = bad.into();
            assert!(validate(&mut s).is_err(), "{bad}");
        }
        s.socket = "/run/clamav/clamd.ctl".into();
        s.max_size_mb = 0;
        assert!(validate(&mut s).is_err());
        s.max_size_mb = u64::MAX;
        assert!(validate(&mut s).is_err());
    }
}
