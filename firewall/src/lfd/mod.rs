//! lfd in process: login failures reported by wispd's own services (and sshd's log) are counted
//! per source address and, past a trigger, become ordinary blacklist entries with a TTL and a
//! comment saying why — in the kernel within the same call, with no log to parse.
//!
//! Counting is O(1) per failure: each address keeps, per service, the times of its last
//! `trigger` failures. Memory is bounded under a distributed attack by two generations of at
//! most [`GENERATION`] addresses each: when the current one fills, the older is dropped.

pub mod ct;
pub mod portscan;
pub mod settings;
pub mod sshd;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use settings::{LfdSettings, Service};

use crate::engine::{EntryRequest, Firewall, FwError, ListKind, now};

/// Addresses one generation of the tracker holds.
pub const GENERATION: usize = 50_000;
/// Failures waiting for the lfd thread; more are counted as dropped.
const QUEUE: usize = 65_536;
/// Longest user name kept with a failure.
const MAX_USER: usize = 64;
/// Admin API callers remembered as never to be banned.
const MAX_TRUSTED: usize = 1024;
/// How long a successful admin API caller stays protected.
const TRUST_SECS: i64 = 86_400;

/// One failed login.
#[derive(Debug, Clone)]
pub struct Failure {
    pub service: Service,
    pub ip: IpAddr,
    pub user: String,
}

/// Where services report failures; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: SyncSender<Failure>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    pub fn report(&self, service: Service, ip: IpAddr, user: &str) {
        let mut user = user.to_string();
        if user.len() > MAX_USER {
            let mut cut = MAX_USER;
            while !user.is_char_boundary(cut) {
                cut -= 1;
            }
            user.truncate(cut);
        }
        let f = Failure {
            service,
            ip: ip.to_canonical(),
            user,
        };
        match self.tx.try_send(f) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One address's recent failures.
#[derive(Debug, Clone, Default)]
struct Track {
    /// Times of the last failures per service (at most that service's trigger).
    windows: [VecDeque<i64>; 6],
    /// Cumulative mode (`LF_TRIGGER`): the last failures of every watched service.
    total: VecDeque<i64>,
    counts: [u64; 6],
    first: i64,
    last: i64,
    last_service: Option<Service>,
    last_user: String,
    /// The last ban lfd made: when, and until when (`None` = permanent).
    ban: Option<(i64, Option<i64>)>,
    /// Times of the temporary bans within LF_PERMBLOCK_INTERVAL.
    temp_bans: VecDeque<i64>,
    /// Why the last trigger did not ban.
    note: Option<String>,
}

#[derive(Debug, Default)]
struct Tracker {
    current: HashMap<IpAddr, Track>,
    older: HashMap<IpAddr, Track>,
}

impl Tracker {
    fn get(&mut self, ip: IpAddr) -> &mut Track {
        if !self.current.contains_key(&ip) {
            if self.current.len() >= GENERATION {
                self.older = std::mem::take(&mut self.current);
            }
            let t = self.older.remove(&ip).unwrap_or_default();
            self.current.insert(ip, t);
        }
        self.current.entry(ip).or_default()
    }

    fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Track)> {
        self.current.iter().chain(self.older.iter())
    }

    fn find(&self, ip: &IpAddr) -> Option<&Track> {
        self.current.get(ip).or_else(|| self.older.get(ip))
    }
}

/// One row of `/csf/lfd/failures`.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    pub ip: String,
    /// The service of the latest failure.
    pub service: String,
    /// Failures per service since the address was first seen.
    pub services: std::collections::BTreeMap<String, u64>,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_user: String,
    /// lfd banned it (and the ban is still on).
    pub banned: bool,
    pub banned_at: Option<i64>,
    /// `None` while banned permanently.
    pub ban_expires_at: Option<i64>,
    /// Why a trigger did not ban (ignored, whitelisted, …).
    pub note: Option<String>,
}

/// Counts for `/csf/lfd/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LfdCounts {
    pub failures_total: u64,
    pub tracked_ips: usize,
    pub bans_total: u64,
    pub bans_24h: usize,
    pub escalations: u64,
    /// Failures that found the queue full (a flood faster than lfd can count).
    pub dropped: u64,
}

/// lfd's state inside the firewall.
#[derive(Debug, Default)]
pub struct Lfd {
    tracker: Mutex<Tracker>,
    trusted: Mutex<HashMap<IpAddr, i64>>,
    bans: Mutex<VecDeque<i64>>,
    failures_total: AtomicU64,
    bans_total: AtomicU64,
    escalations: AtomicU64,
    dropped: Arc<AtomicU64>,
    running: std::sync::atomic::AtomicBool,
    /// The local addresses and when they were read.
    local: Mutex<(i64, Vec<IpAddr>)>,
    pub(crate) sshd: Mutex<sshd::SourceState>,
    reporter: std::sync::OnceLock<Reporter>,
    /// Alerts wait here for their own writer, so that storing one holds up no ban.
    alert_tx: std::sync::OnceLock<SyncSender<PendingAlert>>,
    pub(crate) ct: Mutex<ct::CtState>,
    pub(crate) ps: Mutex<portscan::PsState>,
}

/// An alert on its way to the store.
#[derive(Debug)]
struct PendingAlert {
    kind: &'static str,
    ip: IpAddr,
    service: Service,
    message: String,
    email: bool,
}

fn unpoison<T>(r: std::sync::LockResult<T>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Lfd {
    /// Remembers an address that just authenticated with an admin token: it is never banned
    /// (the panel must not be shut out by a burst of failures from the same place).
    pub fn trust(&self, ip: IpAddr) {
        let mut t = unpoison(self.trusted.lock());
        let at = now();
        if t.len() >= MAX_TRUSTED && !t.contains_key(&ip.to_canonical()) {
            t.retain(|_, seen| *seen > at - TRUST_SECS);
            if t.len() >= MAX_TRUSTED {
                return;
            }
        }
        t.insert(ip.to_canonical(), at);
    }

    fn trusted(&self, ip: &IpAddr) -> bool {
        unpoison(self.trusted.lock())
            .get(ip)
            .is_some_and(|at| *at > now() - TRUST_SECS)
    }

    fn is_local(&self, ip: &IpAddr) -> bool {
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        let t = now();
        let mut local = unpoison(self.local.lock());
        if local.0 + 60 < t {
            *local = (t, crate::engine::local_addresses());
        }
        local.1.contains(ip)
    }

    /// What the sshd log follower is at.
    pub fn sshd_state(&self) -> sshd::SourceState {
        unpoison(self.sshd.lock()).clone()
    }

    /// Reports a failure (from a service wispd runs) once lfd is started; never blocks.
    pub fn report(&self, service: Service, ip: IpAddr, user: &str) {
        if let Some(r) = self.reporter.get() {
            r.report(service, ip, user);
        }
    }

    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub fn counts(&self) -> LfdCounts {
        let t = now();
        let mut bans = unpoison(self.bans.lock());
        while bans.front().is_some_and(|at| *at <= t - 86_400) {
            bans.pop_front();
        }
        let tr = unpoison(self.tracker.lock());
        LfdCounts {
            failures_total: self.failures_total.load(Ordering::Relaxed),
            tracked_ips: tr.current.len() + tr.older.len(),
            bans_total: self.bans_total.load(Ordering::Relaxed),
            bans_24h: bans.len(),
            escalations: self.escalations.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The tracked addresses, latest failure first, at most `limit`; only `ip` if given.
    pub fn failures(&self, ip: Option<IpAddr>, limit: usize) -> Vec<FailureRow> {
        let t = now();
        let tr = unpoison(self.tracker.lock());
        let row = |ip: &IpAddr, k: &Track| {
            let live = k.ban.filter(|(_, until)| until.is_none_or(|u| u > t));
            FailureRow {
                ip: ip.to_string(),
                service: k.last_service.map(Service::name).unwrap_or("").to_string(),
                services: Service::ALL
                    .into_iter()
                    .filter(|s| k.counts[s.index()] > 0)
                    .map(|s| (s.name().to_string(), k.counts[s.index()]))
                    .collect(),
                count: k.counts.iter().sum(),
                first_seen: k.first,
                last_seen: k.last,
                last_user: k.last_user.clone(),
                banned: live.is_some(),
                banned_at: live.map(|(at, _)| at),
                ban_expires_at: live.and_then(|(_, until)| until),
                note: k.note.clone(),
            }
        };
        if let Some(ip) = ip {
            let ip = ip.to_canonical();
            return tr.find(&ip).map(|k| row(&ip, k)).into_iter().collect();
        }
        let mut all: Vec<(&IpAddr, &Track)> = tr.iter().collect();
        all.sort_by_key(|(_, k)| std::cmp::Reverse(k.last));
        all.into_iter()
            .take(limit)
            .map(|(ip, k)| row(ip, k))
            .collect()
    }
}

/// What one failure decided.
enum Decision {
    Nothing,
    Ban {
        ttl: i64,
        comment: String,
        escalated: bool,
    },
}

fn push_window(w: &mut VecDeque<i64>, t: i64, interval: i64, keep: usize) -> usize {
    w.push_back(t);
    while w.front().is_some_and(|x| *x <= t - interval) || w.len() > keep {
        w.pop_front();
    }
    w.len()
}

impl Firewall {
    /// Starts the lfd thread (and the sshd log follower) and returns where failures go.
    pub fn start_lfd(self: &Arc<Self>) -> Reporter {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let reporter = Reporter {
            tx,
            dropped: self.lfd().dropped.clone(),
        };
        let _ = self.lfd().reporter.set(reporter.clone());
        let (alert_tx, alert_rx) = std::sync::mpsc::sync_channel::<PendingAlert>(QUEUE);
        let _ = self.lfd().alert_tx.set(alert_tx);
        let fw = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wispd-lfd-alerts".into())
            .spawn(move || {
                while let Ok(a) = alert_rx.recv() {
                    fw.store_alert(a);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the lfd alert writer");
        }
        let fw = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wispd-lfd".into())
            .spawn(move || fw.lfd_loop(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start lfd");
        }
        let fw = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wispd-lfd-portscan".into())
            .spawn(move || portscan::run(fw));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start port scan detection");
        }
        let fw = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wispd-lfd-ct".into())
            .spawn(move || ct::run(fw));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the CT_LIMIT counter");
        }
        let fw = self.clone();
        let sshd_reporter = reporter.clone();
        let spawned = std::thread::Builder::new()
            .name("wispd-lfd-sshd".into())
            .spawn(move || sshd::follow(fw, sshd_reporter));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the sshd log follower");
        }
        reporter
    }

    fn lfd_loop(self: Arc<Self>, rx: Receiver<Failure>) {
        self.lfd().running.store(true, Ordering::Relaxed);
        // the thread ends when every Reporter is gone
        while let Ok(f) = rx.recv() {
            self.lfd_failure(f);
        }
        self.lfd().running.store(false, Ordering::Relaxed);
    }

    /// Counts one failure and bans when it crosses the trigger.
    pub fn lfd_failure(&self, f: Failure) {
        let Ok(settings) = self.parsed_settings() else {
            return;
        };
        let s = settings.lfd;
        if !s.daemon {
            return;
        }
        let lfd = self.lfd();
        lfd.failures_total.fetch_add(1, Ordering::Relaxed);
        let t = now();
        let ip = f.ip.to_canonical();
        let (limit, ttl, cumulative) = s.trigger_for(f.service);
        let protected = if lfd.is_local(&ip) {
            Some("not banned: a local address".to_string())
        } else if s.ignored(ip) {
            Some("not banned: in LF_IGNORE".to_string())
        } else if lfd.trusted(&ip) {
            Some("not banned: authenticated to the API with an admin token".to_string())
        } else {
            None
        };
        // what the blacklist says, not what lfd last did: an operator may have lifted the ban
        let listed = matches!(self.entry(ListKind::Black, ip), Ok(Some(_)));
        let decision = {
            let mut tr = unpoison(lfd.tracker.lock());
            let k = tr.get(ip);
            if k.first == 0 {
                k.first = t;
            }
            k.last = t;
            k.last_service = Some(f.service);
            k.last_user = f.user.clone();
            k.counts[f.service.index()] += 1;
            let keep = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
            let n = if cumulative {
                push_window(&mut k.total, t, s.interval, keep)
            } else {
                push_window(&mut k.windows[f.service.index()], t, s.interval, keep)
            };
            if !listed {
                k.ban = None;
            }
            if limit == 0 || (n as u64) < u64::from(limit) || listed {
                Decision::Nothing
            } else if let Some(why) = &protected {
                k.note = Some(why.clone());
                k.windows[f.service.index()].clear();
                k.total.clear();
                Decision::Nothing
            } else {
                let what = if cumulative {
                    "logins (all services)"
                } else {
                    f.service.what()
                };
                let mut comment = format!("lfd: {n} failed {what} in {}s", s.interval);
                let mut ttl = ttl;
                let mut escalated = false;
                if ttl > 0 && s.permblock {
                    let c = push_window(
                        &mut k.temp_bans,
                        t,
                        s.permblock_interval,
                        s.permblock_count as usize,
                    );
                    if c as u64 >= u64::from(s.permblock_count) {
                        ttl = 0;
                        escalated = true;
                        comment = format!(
                            "lfd: {c} temporary bans in {}s, now permanent (last: {n} failed {what})",
                            s.permblock_interval
                        );
                        k.temp_bans.clear();
                    }
                }
                k.windows[f.service.index()].clear();
                k.total.clear();
                k.note = None;
                k.ban = Some((t, (ttl > 0).then_some(t + ttl)));
                Decision::Ban {
                    ttl,
                    comment,
                    escalated,
                }
            }
        };
        let Decision::Ban {
            ttl,
            comment,
            escalated,
        } = decision
        else {
            return;
        };
        match self.lfd_ban(ip, ttl, &comment) {
            Ok(()) => {
                lfd.bans_total.fetch_add(1, Ordering::Relaxed);
                unpoison(lfd.bans.lock()).push_back(t);
                if escalated {
                    lfd.escalations.fetch_add(1, Ordering::Relaxed);
                }
                let kind = if escalated { "permblock" } else { "ban" };
                let email = s.email_alert
                    && (ttl == 0 || s.temp_email_alert)
                    && (!escalated || s.permblock_alert);
                let how = if ttl == 0 {
                    "permanently".to_string()
                } else {
                    format!("for {ttl}s")
                };
                let message = format!(
                    "{ip} blocked {how}: {}",
                    comment.trim_start_matches("lfd: ")
                );
                let alert = PendingAlert {
                    kind,
                    ip,
                    service: f.service,
                    message,
                    email,
                };
                match lfd.alert_tx.get() {
                    Some(tx) => {
                        if let Err(e) = tx.try_send(alert) {
                            tracing::error!(error = %e, "lfd alert queue full; alert lost");
                        }
                    }
                    None => self.store_alert(alert),
                }
            }
            Err(e) => {
                let mut tr = unpoison(lfd.tracker.lock());
                let k = tr.get(ip);
                k.ban = None;
                k.note = Some(format!("not banned: {e}"));
                tracing::warn!(%ip, error = %e, "lfd could not ban");
            }
        }
    }

    fn store_alert(&self, a: PendingAlert) {
        if let Err(e) = self.alerts().raise(
            a.kind,
            Some(a.ip.to_string()),
            Some(a.service.name()),
            a.message,
            a.email,
        ) {
            tracing::error!(error = %e, "could not store an lfd alert");
        }
    }

    /// Bans `ip` (the caller saw no live blacklist entry for it).
    fn lfd_ban(&self, ip: IpAddr, ttl: i64, comment: &str) -> Result<(), FwError> {
        self.add_from(
            ListKind::Black,
            EntryRequest {
                ip: ip.to_string(),
                comment: comment.to_string(),
                ttl,
                force: false,
                caller: None,
            },
            "lfd",
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_stays_bounded_under_a_distributed_attack() {
        let mut tr = Tracker::default();
        for i in 0..(3 * GENERATION as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let k = tr.get(ip);
            k.last = 1;
            push_window(&mut k.windows[0], 1, 3600, 5);
        }
        assert!(tr.current.len() + tr.older.len() <= 2 * GENERATION);
        // a recent address survives a generation change and keeps its history
        let recent = IpAddr::from(std::net::Ipv4Addr::from(
            0x0a00_0000 + 3 * GENERATION as u32 - 1,
        ));
        assert_eq!(tr.find(&recent).map(|k| k.windows[0].len()), Some(1));
    }

    #[test]
    fn a_window_keeps_only_the_trigger_and_the_interval() {
        let mut w = VecDeque::new();
        for t in 0..100 {
            push_window(&mut w, t, 3600, 5);
        }
        assert_eq!(w.len(), 5);
        assert_eq!(push_window(&mut w, 10_000, 3600, 5), 1);
    }
}
