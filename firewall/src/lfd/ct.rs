//! `CT_LIMIT`: every `CT_INTERVAL` seconds the conntrack table is dumped and the connections
//! of each remote address counted (CSF counts the same from its connection table); an address
//! over the limit is banned through the blacklist for `CT_BLOCK_TIME` (or for good with
//! `CT_PERMANENT`), with an alert. Local addresses, `LF_IGNORE`, the whitelist and admin-API
//! callers are never banned, as for the login triggers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::unpoison;
use crate::conntrack;
use crate::engine::{EntryRequest, Firewall, ListKind, now};

/// Remote addresses counted per pass, at most (a table of more distinct sources than this
/// counts the first ones; the rest wait for the next pass).
const MAX_SOURCES: usize = 200_000;

/// What the last passes did, for `/csf/conntrack/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CtState {
    pub last_check_at: Option<i64>,
    pub last_check_ms: Option<u64>,
    /// Connections the last pass counted (after `CT_STATES`, `CT_PORTS`, `CT_SKIP_TIME_WAIT`).
    pub counted: u64,
    /// The most connections one remote address had in the last pass.
    pub top: Option<(String, u32)>,
    pub bans_total: u64,
    pub last_error: Option<String>,
}

impl Firewall {
    /// Counts the table once against `CT_LIMIT` and bans who is over it; returns the bans.
    pub fn ct_check(&self) -> Result<Vec<IpAddr>, crate::FwError> {
        let settings = self.parsed_settings()?;
        let s = &settings.lfd.ct;
        if s.limit == 0 || !settings.lfd.daemon {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let lfd = self.lfd();
        let mut per: HashMap<IpAddr, u32> = HashMap::new();
        let mut counted = 0u64;
        conntrack::dump(|c| {
            let src = c.orig.src.to_canonical();
            if lfd.is_local(&src) {
                return;
            }
            if !s.ports.is_empty() && !s.ports.contains(&c.orig.dport) {
                return;
            }
            if let Some(st) = c.tcp_state {
                if s.skip_time_wait && st == "TIME_WAIT" {
                    return;
                }
                if !s.states.is_empty() && !s.states.iter().any(|x| x == st) {
                    return;
                }
            } else if !s.states.is_empty() {
                return;
            }
            if per.len() >= MAX_SOURCES && !per.contains_key(&src) {
                return;
            }
            counted += 1;
            *per.entry(src).or_insert(0) += 1;
        })?;
        let top = per.iter().max_by_key(|(_, n)| **n).map(|(ip, n)| (*ip, *n));
        let mut banned = Vec::new();
        for (ip, n) in per {
            if n <= s.limit {
                continue;
            }
            if lfd.trusted(&ip)
                || settings.lfd.ignored(ip)
                || matches!(self.entry(ListKind::Black, ip), Ok(Some(_)))
            {
                continue;
            }
            let comment = format!("lfd: CT_LIMIT: {n} connections (limit {})", s.limit);
            let req = EntryRequest {
                ip: ip.to_string(),
                comment: comment.clone(),
                ttl: s.ttl,
                force: false,
                caller: None,
            };
            match self.add_from(ListKind::Black, req, "ct") {
                Ok(_) => {
                    banned.push(ip);
                    let how = if s.ttl == 0 {
                        "permanently".to_string()
                    } else {
                        format!("for {}s", s.ttl)
                    };
                    let message = format!(
                        "{ip} blocked {how}: {n} connections tracked, over CT_LIMIT {}",
                        s.limit
                    );
                    if let Err(e) = self.alerts().raise(
                        "ct_limit",
                        Some(ip.to_string()),
                        None,
                        message,
                        s.email_alert,
                    ) {
                        tracing::error!(error = %e, "could not store a CT_LIMIT alert");
                    }
                    tracing::warn!(%ip, connections = n, limit = s.limit, "CT_LIMIT ban");
                }
                // the whitelist and the lockout guard refuse some: that is not an error here
                Err(e) => tracing::info!(%ip, error = %e, "CT_LIMIT: not banned"),
            }
        }
        let mut st = unpoison(lfd.ct.lock());
        st.last_check_at = Some(now());
        st.last_check_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        st.counted = counted;
        st.top = top.map(|(ip, n)| (ip.to_string(), n));
        st.bans_total += banned.len() as u64;
        st.last_error = None;
        Ok(banned)
    }

    /// What the CT_LIMIT passes did.
    pub fn ct_state(&self) -> CtState {
        unpoison(self.lfd().ct.lock()).clone()
    }
}

/// Runs [`Firewall::ct_check`] every `CT_INTERVAL` until the firewall is dropped.
pub(super) fn run(fw: Arc<Firewall>) {
    let mut next = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if Arc::strong_count(&fw) == 1 {
            return;
        }
        if Instant::now() < next {
            continue;
        }
        let interval = fw
            .parsed_settings()
            .map(|s| s.lfd.ct.interval)
            .unwrap_or(30);
        next = Instant::now() + Duration::from_secs(u64::try_from(interval).unwrap_or(30));
        if let Err(e) = fw.ct_check() {
            tracing::warn!(error = %e, "CT_LIMIT: the conntrack table can't be read");
            unpoison(fw.lfd().ct.lock()).last_error = Some(e.to_string());
        }
    }
}
