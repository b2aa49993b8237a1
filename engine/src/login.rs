//! Password logins for every mail protocol (SMTP AUTH, IMAP): who may log in, at what cost and
//! how fast. Argon2 runs in a bounded pool (a permit per core, a short queue, the rest get a
//! temporary failure) on memory that is allocated once and reused, so a flood of wrong passwords
//! costs CPU time, not gigabytes. Unknown and disabled accounts cost the same hash as real ones
//! (a dummy hash), so timing does not tell which accounts exist. Failures are counted per client
//! address (IPv6 per /64) and per account over a sliding window, and once either has failed,
//! every later answer is held back — successes included, so parallel guessers learn nothing
//! sooner than the delay.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use wispd_store::schema::MailAccount;

use crate::directory::{DirError, Directory};

/// Logins waiting for a hashing permit beyond the running ones; more are refused at once.
const QUEUE_PER_PERMIT: usize = 16;
/// Argon2 memory accepted from a stored hash (imported hashes may be costlier than ours).
const MAX_HASH_BLOCKS: usize = 256 * 1024;
/// Failures older than this are forgotten.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// Keys each failure log holds at most.
const MAX_KEYS: usize = 100_000;
/// Longest user name counted per account (longer ones are cut there).
const MAX_USER_KEY: usize = 320;

/// What a login attempt came to.
#[derive(Debug)]
pub enum Verdict {
    Accepted(MailAccount),
    /// Wrong password, unknown or disabled account.
    Refused,
    /// Too many logins are being checked right now: try again.
    Busy,
    /// The store or a stored hash failed.
    Failed(DirError),
}

/// The protocol a login came in on (what lfd counts a refused one under).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
    ManageSieve,
}

impl Protocol {
    /// The name the log line of a refused login gives.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::ManageSieve => "managesieve",
        }
    }
}

/// Where refused logins are reported; the binary wires the firewall's lfd in. Must not block.
pub trait FailureSink: Send + Sync + std::fmt::Debug {
    fn login_failed(&self, protocol: Protocol, ip: IpAddr, user: &str);
}

/// The login gate every protocol shares. Build it once and hand clones of the `Arc` around.
#[derive(Debug)]
pub struct Logins {
    directory: Directory,
    hashing: Hashing,
    cache: LoginCache,
    dummy: String,
    by_ip: FailureLog<IpAddr>,
    by_user: FailureLog<String>,
    /// The delay per failure (a second; shorter in tests).
    unit: Duration,
    sink: std::sync::OnceLock<Arc<dyn FailureSink>>,
}

impl Logins {
    pub fn new(directory: Directory) -> Result<Arc<Logins>, DirError> {
        let permits = std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2);
        Logins::with_permits(directory, permits, Duration::from_secs(1))
    }

    /// A gate with `permits` hashing workers, holding answers `unit` per recent failure.
    pub fn with_permits(
        directory: Directory,
        permits: usize,
        unit: Duration,
    ) -> Result<Arc<Logins>, DirError> {
        let permits = permits.max(1);
        // A hash of a random password with the parameters new accounts get: checking a login
        // against it costs what checking a real account costs.
        let mut secret = [0u8; 24];
        getrandom::fill(&mut secret)?;
        let dummy = crate::directory::hash(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            secret,
        ))?;
        Ok(Arc::new(Logins {
            directory,
            hashing: Hashing {
                permits: Arc::new(Semaphore::new(permits)),
                waiting: AtomicUsize::new(0),
                max_waiting: permits * QUEUE_PER_PERMIT,
                runs: std::sync::atomic::AtomicU64::new(0),
                memory: Arc::new(Mutex::new(Vec::new())),
            },
            cache: LoginCache::new(),
            dummy,
            by_ip: FailureLog::default(),
            by_user: FailureLog::default(),
            unit,
            sink: std::sync::OnceLock::new(),
        }))
    }

    /// Reports every refused login to `sink` from now on (once; later calls change nothing).
    pub fn report_failures_to(&self, sink: Arc<dyn FailureSink>) {
        let _ = self.sink.set(sink);
    }

    /// Checks `user`'s `password` for a client at `ip`, holding the answer back as long as
    /// this address or account has failed recently. A refusal is reported before the delay, so
    /// a ban can be in place by the time the client hears the answer.
    pub async fn check(
        &self,
        protocol: Protocol,
        peer: IpAddr,
        user: &str,
        password: &str,
    ) -> Verdict {
        let ip = ip_key(peer);
        let user_key = user_key(user);
        let now = Instant::now();
        let before = self
            .by_ip
            .count(&ip, now)
            .max(self.by_user.count(&user_key, now));
        let verdict = self.verify(user, password).await;
        let failures = match &verdict {
            Verdict::Accepted(_) => {
                // whoever knows the password owns the account: its own record starts over
                self.by_user.forget(&user_key);
                before
            }
            Verdict::Refused => {
                // At the verdict, before the delay: the line an outside log watcher reads (the
                // user name is cut and Debug-quoted, so it cannot forge a line of its own).
                let shown: String = user.chars().take(64).collect();
                tracing::info!(
                    protocol = protocol.name(),
                    ip = %peer.to_canonical(),
                    user = ?shown,
                    "login refused"
                );
                if let Some(sink) = self.sink.get() {
                    sink.login_failed(protocol, peer.to_canonical(), user);
                }
                let now = Instant::now();
                self.by_ip
                    .record(ip, now)
                    .max(self.by_user.record(user_key, now))
            }
            Verdict::Busy => before.max(1),
            Verdict::Failed(_) => 0,
        };
        if failures > 0 {
            tokio::time::sleep(self.unit * failures.clamp(1, MAX_DELAY_STEPS)).await;
        }
        verdict
    }

    /// Argon2 runs since start (every login but remembered ones costs one).
    pub fn hash_runs(&self) -> u64 {
        self.hashing.runs.load(Ordering::Relaxed)
    }

    /// Failed logins from `ip` (its /64 for IPv6) in the window.
    pub fn failures(&self, ip: IpAddr) -> u32 {
        self.by_ip.count(&ip_key(ip), Instant::now())
    }

    /// The check itself: the account's hash, or the dummy one when there is no such account,
    /// it is disabled, or the password can't be right; always one Argon2 run unless the
    /// password is remembered as correct.
    async fn verify(&self, user: &str, password: &str) -> Verdict {
        let account = match self.directory.login_account(user) {
            Ok(a) => a,
            Err(e) => return Verdict::Failed(e),
        };
        if let Some(a) = &account
            && a.enabled
            && self.cache.hit(&a.password_hash, password)
        {
            return Verdict::Accepted(a.clone());
        }
        let plausible = !password.is_empty() && !password.chars().any(char::is_control);
        let (hash, real) = match &account {
            Some(a) if a.enabled && plausible => (a.password_hash.clone(), true),
            _ => (self.dummy.clone(), false),
        };
        let matched = match self.hashing.verify(hash.clone(), password.as_bytes()).await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Verdict::Failed(e),
            None => return Verdict::Busy,
        };
        match account {
            Some(a) if real && matched => {
                self.cache.remember(&hash, password);
                if hash.starts_with('{') {
                    // a hash brought over from another server: ours from now on
                    let (dir, id, password) = (self.directory.clone(), a.id, password.to_string());
                    tokio::task::spawn_blocking(move || match dir.rehash(id, &hash, &password) {
                        Ok(true) => tracing::info!(
                            account = id,
                            "imported password hash replaced by Argon2id"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(account = id, error = %e, "rehashing an imported password failed")
                        }
                    });
                }
                Verdict::Accepted(a)
            }
            _ => Verdict::Refused,
        }
    }
}

impl From<&Verdict> for crate::metrics::LoginResult {
    fn from(v: &Verdict) -> Self {
        use crate::metrics::LoginResult;
        match v {
            Verdict::Accepted(_) => LoginResult::Accepted,
            Verdict::Refused => LoginResult::Refused,
            Verdict::Busy => LoginResult::Busy,
            Verdict::Failed(_) => LoginResult::Failed,
        }
    }
}

/// Answers are held a second per recent failure, up to this many (what Dovecot's auth
/// penalty does).
const MAX_DELAY_STEPS: u32 = 5;

/// Addresses as failures are counted: IPv4 (also when mapped into IPv6) as itself, IPv6 by
/// its /64, which one host usually has whole.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn user_key(user: &str) -> String {
    let mut k = user.trim().to_lowercase();
    if k.len() > MAX_USER_KEY {
        let mut cut = MAX_USER_KEY;
        while !k.is_char_boundary(cut) {
            cut -= 1;
        }
        k.truncate(cut);
    }
    k
}

/// The Argon2 pool: a permit per worker, a bounded queue, and the workers' memory, kept.
#[derive(Debug)]
struct Hashing {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Argon2 runs so far.
    runs: std::sync::atomic::AtomicU64,
    /// Memory of finished runs, handed to the next one (at most one per permit exists).
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

/// Decrements the waiting count when a queued login stops waiting, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hashing {
    /// Whether `password` matches the PHC string `hash`; `None` when the queue is full.
    async fn verify(&self, hash: String, password: &[u8]) -> Option<Result<bool, DirError>> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let waiting = Waiting(&self.waiting);
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        drop(waiting);
        self.runs.fetch_add(1, Ordering::Relaxed);
        let pool = self.memory.clone();
        let password = password.to_vec();
        let run = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .unwrap_or_default();
            let result = if hash.starts_with('{') {
                crate::passwords::verify(&hash, &password, |phc| {
                    verify_phc(phc, &password, &mut memory)
                })
            } else {
                verify_phc(&hash, &password, &mut memory)
            };
            pool.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(memory);
            result
        });
        Some(match run.await {
            Ok(r) => r,
            Err(e) => Err(DirError::HashTask(e)),
        })
    }
}

/// Argon2 passes at most, and memory × passes at most (in 1 KiB blocks): a stored hash can't
/// make one check run for long, whatever its memory.
const MAX_ARGON2_PASSES: u32 = 16;
const MAX_ARGON2_WORK: u64 = 4 * 256 * 1024;

/// Whether an Argon2 hash with `params` is cheap enough to check at a login.
pub(crate) fn argon2_cost_ok(params: &Params) -> Result<(), String> {
    let work = u64::from(params.t_cost()) * params.block_count() as u64;
    if params.t_cost() > MAX_ARGON2_PASSES
        || params.block_count() > MAX_HASH_BLOCKS
        || work > MAX_ARGON2_WORK
        || params.p_cost() > 16
    {
        return Err(format!(
            "Argon2 m={} KiB t={} p={}: wispd takes at most {MAX_ARGON2_PASSES} passes over {MAX_HASH_BLOCKS} KiB and {MAX_ARGON2_WORK} KiB-passes in all",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

/// Verifies `password` against an Argon2 PHC string on `memory`, growing it only when this
/// hash needs more than it has.
fn verify_phc(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> Result<bool, DirError> {
    let parsed = PasswordHash::new(hash)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let salt = parsed.salt.ok_or(DirError::StoredHash("salt"))?;
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let expected = parsed.hash.ok_or(DirError::StoredHash("hash"))?;
    let blocks = params.block_count();
    if blocks > MAX_HASH_BLOCKS || argon2_cost_ok(&params).is_err() {
        return Err(DirError::TooCostly(blocks));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut memory[..],
    )?;
    Ok(bool::from(out.ct_eq(expected.as_bytes())))
}

/// Successful logins, remembered for an hour so a client that reconnects often doesn't pay
/// the Argon2 cost every time (Dovecot's `auth_cache`). Keyed by the stored hash, so a
/// password change forgets them; holds only an HMAC-SHA256 of the password under a key made
/// at start, never the password. Failures are never cached.
#[derive(Debug)]
struct LoginCache {
    /// `None` without OS randomness: the cache then never matches.
    key: Option<ring::hmac::Key>,
    entries: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

const LOGIN_CACHE_TTL: Duration = Duration::from_secs(3600);
const LOGIN_CACHE_MAX: usize = 100_000;

impl LoginCache {
    fn new() -> LoginCache {
        let mut key = [0u8; 32];
        let key = getrandom::fill(&mut key)
            .ok()
            .map(|()| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key));
        LoginCache {
            key,
            entries: Mutex::default(),
        }
    }

    fn digest(&self, password: &str) -> Option<[u8; 32]> {
        let tag = ring::hmac::sign(self.key.as_ref()?, password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Some(out)
    }

    fn hit(&self, stored_hash: &str, password: &str) -> bool {
        let Some(digest) = self.digest(password) else {
            return false;
        };
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(stored_hash)
            .is_some_and(|(d, at)| at.elapsed() < LOGIN_CACHE_TTL && bool::from(d.ct_eq(&digest)))
    }

    fn remember(&self, stored_hash: &str, password: &str) {
        let Some(digest) = self.digest(password) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= LOGIN_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < LOGIN_CACHE_TTL);
            if entries.len() >= LOGIN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(stored_hash.to_string(), (digest, Instant::now()));
    }
}

/// Buckets the window is cut into: a count is exact to one bucket's width.
const BUCKETS: usize = 20;
const BUCKET: Duration = Duration::from_secs(FAILURE_WINDOW.as_secs() / BUCKETS as u64);

/// Failures per key over a sliding window, in O(1) per record or count: each key holds a ring
/// of per-bucket counts. Keys with nothing left in the window are swept out at most once per
/// bucket width; the map never holds more than [`MAX_KEYS`].
#[derive(Debug)]
struct FailureLog<K> {
    inner: Mutex<Log<K>>,
}

#[derive(Debug)]
struct Log<K> {
    keys: HashMap<K, Ring>,
    epoch: Instant,
    swept: u64,
}

impl<K> Default for FailureLog<K> {
    fn default() -> Self {
        FailureLog {
            inner: Mutex::new(Log {
                keys: HashMap::new(),
                epoch: Instant::now(),
                swept: 0,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ring {
    counts: [u32; BUCKETS],
    /// The bucket number (since the log's epoch) of the newest count.
    newest: u64,
}

impl Ring {
    /// Moves the ring forward to bucket `now`, zeroing the buckets that fell out of the window.
    fn advance(&mut self, now: u64) {
        if now <= self.newest {
            return;
        }
        let steps = (now - self.newest).min(BUCKETS as u64);
        for i in 1..=steps {
            self.counts[((self.newest + i) % BUCKETS as u64) as usize] = 0;
        }
        self.newest = now;
    }

    fn total(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, &c| a.saturating_add(c))
    }
}

impl<K: Hash + Eq + Clone> FailureLog<K> {
    fn bucket(log: &Log<K>, now: Instant) -> u64 {
        (now.saturating_duration_since(log.epoch).as_secs()) / BUCKET.as_secs()
    }

    /// Records a failure of `key`; returns its failures in the window, this one included.
    fn record(&self, key: K, now: Instant) -> u32 {
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let b = Self::bucket(&log, now);
        if b > log.swept {
            log.swept = b;
            log.keys.retain(|_, r| {
                r.advance(b);
                r.total() > 0
            });
        }
        if log.keys.len() >= MAX_KEYS && !log.keys.contains_key(&key) {
            // Full of live keys (a spray from many addresses): make room by dropping an
            // arbitrary eighth; each of those starts over, and the spray still pays its delays.
            let drop: Vec<K> = log.keys.keys().take(MAX_KEYS / 8).cloned().collect();
            for k in drop {
                log.keys.remove(&k);
            }
        }
        let ring = log.keys.entry(key).or_insert(Ring {
            counts: [0; BUCKETS],
            newest: b,
        });
        ring.advance(b);
        let slot = &mut ring.counts[(b % BUCKETS as u64) as usize];
        *slot = slot.saturating_add(1);
        ring.total()
    }

    /// Failures of `key` in the window.
    fn count(&self, key: &K, now: Instant) -> u32 {
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let b = Self::bucket(&log, now);
        log.keys.get_mut(key).map_or(0, |r| {
            r.advance(b);
            r.total()
        })
    }

    fn forget(&self, key: &K) {
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        log.keys.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::NewAccount;
    use wispd_store::Store;

    fn directory(name: &str) -> Directory {
        let d = std::env::temp_dir().join(format!("wispd-login-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Directory::new(Store::open(&d).expect("store"))
    }

    fn accepted(v: &Verdict) -> bool {
        matches!(v, Verdict::Accepted(_))
    }

    #[test]
    fn failures_slide_out_of_the_window_bucket_by_bucket() {
        let log = FailureLog::<u32>::default();
        let t0 = log.inner.lock().expect("lock").epoch;
        assert_eq!(log.record(1, t0), 1);
        assert_eq!(log.record(1, t0 + BUCKET * 5), 2);
        assert_eq!(log.count(&1, t0 + BUCKET * 19), 2);
        // the first failure's bucket leaves the window, the second stays
        assert_eq!(log.count(&1, t0 + BUCKET * 20), 1);
        assert_eq!(log.count(&1, t0 + BUCKET * 25), 0);
        assert_eq!(log.count(&2, t0), 0);
        // a long silence empties the ring and the sweep drops the key
        assert_eq!(log.record(3, t0 + BUCKET * 100), 1);
        assert!(!log.inner.lock().expect("lock").keys.contains_key(&1));
    }

    #[test]
    fn the_log_never_holds_more_than_its_cap() {
        let log = FailureLog::<u32>::default();
        let t0 = Instant::now();
        for k in 0..(MAX_KEYS as u32 + 5_000) {
            log.record(k, t0);
        }
        assert!(log.inner.lock().expect("lock").keys.len() <= MAX_KEYS);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::5".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }

    #[tokio::test]
    async fn logins_are_checked_remembered_and_delayed_after_failures() {
        let dir = directory("gate");
        let a = dir
            .create_account(NewAccount {
                password_hash: None,
                domain: Some("example.com".into()),
                username: Some("info".into()),
                password: Some("correct horse".into()),
                quota_mb: None,
            })
            .expect("account");
        let unit = Duration::from_millis(50);
        let logins = Logins::with_permits(dir.clone(), 1, unit).expect("logins");
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(accepted(
            &logins
                .check(Protocol::Imap, ip, "Info@Example.com", "correct horse")
                .await
        ));
        assert!(matches!(
            logins
                .check(Protocol::Imap, ip, "info@example.com", "wrong")
                .await,
            Verdict::Refused
        ));
        assert!(matches!(
            logins
                .check(Protocol::Imap, ip, "nobody@example.com", "wrong")
                .await,
            Verdict::Refused
        ));
        assert_eq!(logins.failures(ip), 2);
        // the unknown address cost a hash as the real one did: same time, nothing to learn
        assert_eq!(logins.hash_runs(), 3);
        // the right password from the failing address waits as a wrong one would
        let t = Instant::now();
        assert!(accepted(
            &logins
                .check(Protocol::Imap, ip, "info@example.com", "correct horse")
                .await
        ));
        assert!(t.elapsed() >= unit * 2, "{:?}", t.elapsed());
        // another address trying the account that failed waits too, until its owner logs in
        let t = Instant::now();
        assert!(matches!(
            logins
                .check(Protocol::Imap, other, "info@example.com", "wrong again")
                .await,
            Verdict::Refused
        ));
        assert!(t.elapsed() >= unit);
        // NUL and other control characters are never a password
        assert!(matches!(
            logins
                .check(Protocol::Imap, other, "info@example.com", "correct\0horse")
                .await,
            Verdict::Refused
        ));
        // a new password forgets the remembered one; a disabled account is refused
        dir.update_account(a.id, Some("new horse!".into()), None)
            .expect("update");
        assert!(matches!(
            logins
                .check(Protocol::Imap, other, "info@example.com", "correct horse")
                .await,
            Verdict::Refused
        ));
        assert!(accepted(
            &logins
                .check(Protocol::Imap, other, "info@example.com", "new horse!")
                .await
        ));
        dir.toggle_account(a.id).expect("toggle");
        assert!(matches!(
            logins
                .check(Protocol::Imap, other, "info@example.com", "new horse!")
                .await,
            Verdict::Refused
        ));
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_instead_of_hashing() {
        let dir = directory("busy");
        let logins = Logins::with_permits(dir, 1, Duration::from_millis(1)).expect("logins");
        let mut tasks = Vec::new();
        for i in 0..(QUEUE_PER_PERMIT + 12) {
            let l = logins.clone();
            tasks.push(tokio::spawn(async move {
                l.hashing
                    .verify(l.dummy.clone(), format!("guess{i}").as_bytes())
                    .await
                    .is_none()
            }));
        }
        let mut busy = 0;
        for t in tasks {
            if t.await.expect("task") {
                busy += 1;
            }
        }
        assert!(busy > 0, "some attempts must be refused as busy");
        assert!(
            logins.hashing.memory.lock().expect("lock").len() <= 1,
            "one permit, one buffer"
        );
    }
}
