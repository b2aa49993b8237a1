//! Flood protection read back from the kernel: SYNFLOOD's limit and what it dropped.

use std::net::IpAddr;

use super::{Firewall, FwError};
use crate::netlink::Netlink;

/// `/csf/synflood/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynfloodStatus {
    /// `SYNFLOOD` is 1.
    pub enabled: bool,
    /// `SYNFLOOD_RATE` as CSF writes it (`100/s`) and `SYNFLOOD_BURST`.
    pub rate: String,
    pub burst: u32,
    /// The kernel's counter of SYNs dropped over the rate since the ruleset was last rebuilt
    /// (`None` when the firewall is off or the table is not there).
    pub dropped_packets: Option<u64>,
    pub dropped_bytes: Option<u64>,
}

impl Firewall {
    pub fn synflood_status(&self) -> Result<SynfloodStatus, FwError> {
        let s = self.parsed_settings()?;
        let (rate, burst) = (s.synflood_rate.text(), s.synflood_rate.burst);
        let counter = if self.config().kernel {
            Netlink::open()
                .ok()
                .and_then(|mut nl| {
                    nl.counter(&self.config().table, crate::plan::SYNFLOOD_COUNTER)
                        .ok()
                })
                .flatten()
        } else {
            None
        };
        Ok(SynfloodStatus {
            enabled: s.synflood.is_some(),
            rate,
            burst,
            dropped_packets: counter.map(|c| c.0),
            dropped_bytes: counter.map(|c| c.1),
        })
    }
}

/// One PORTFLOOD entry and the sources it blocks now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortfloodEntry {
    pub port: u16,
    pub protocol: &'static str,
    pub hits: u32,
    pub seconds: u32,
    /// Blocked now, with milliseconds left (renewed by every new attempt), at most
    /// [`MAX_LISTED`]; `blocked_count` has them all.
    pub blocked: Vec<(std::net::IpAddr, Option<u64>)>,
    pub blocked_count: usize,
}

/// One CONNLIMIT entry and how many sources hold connections to it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnlimitEntry {
    pub port: u16,
    pub limit: u32,
    pub sources: usize,
}

/// `/csf/portflood/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortfloodStatus {
    pub portflood: Vec<PortfloodEntry>,
    pub connlimit: Vec<ConnlimitEntry>,
    /// The sets could be read (the firewall is on and the table is there).
    pub applied: bool,
}

/// Blocked sources listed per entry, at most.
pub const MAX_LISTED: usize = 1000;

fn addr(key: &[u8]) -> Option<std::net::IpAddr> {
    match key.len() {
        4 => <[u8; 4]>::try_from(key)
            .ok()
            .map(|b| std::net::IpAddr::from(b)),
        16 => <[u8; 16]>::try_from(key)
            .ok()
            .map(|b| std::net::IpAddr::from(b)),
        _ => None,
    }
}

impl Firewall {
    pub fn portflood_status(&self) -> Result<PortfloodStatus, FwError> {
        let s = self.parsed_settings()?;
        let table = self.config().table.clone();
        let mut nl = if self.config().kernel {
            Netlink::open().ok()
        } else {
            None
        };
        let mut applied = nl.is_some();
        let mut read = |set: &str| -> Vec<(Vec<u8>, Option<u64>)> {
            match nl.as_mut().map(|n| n.set_elements(&table, set)) {
                Some(Ok(Some(v))) => v,
                _ => {
                    applied = false;
                    Vec::new()
                }
            }
        };
        let mut portflood = Vec::new();
        for p in &s.portflood {
            let mut blocked = Vec::new();
            let mut count = 0;
            for (_, block) in crate::plan::portflood_sets(p) {
                for (key, expires) in read(&block) {
                    count += 1;
                    if blocked.len() < MAX_LISTED
                        && let Some(ip) = addr(&key)
                    {
                        blocked.push((ip, expires));
                    }
                }
            }
            portflood.push(PortfloodEntry {
                port: p.port,
                protocol: if p.udp { "udp" } else { "tcp" },
                hits: p.hits,
                seconds: p.seconds,
                blocked,
                blocked_count: count,
            });
        }
        let mut connlimit = Vec::new();
        for c in &s.connlimit {
            let sources = crate::plan::connlimit_sets(c.port)
                .iter()
                .map(|set| read(set).len())
                .sum();
            connlimit.push(ConnlimitEntry {
                port: c.port,
                limit: c.limit,
                sources,
            });
        }
        Ok(PortfloodStatus {
            portflood,
            connlimit,
            applied,
        })
    }
}

/// PORTFLOOD alerts raised per upkeep tick at most (a summary alert counts the rest).
const MAX_ALERTS_PER_TICK: usize = 50;

impl Firewall {
    /// Raises a `portflood` alert for each source PORTFLOOD began blocking since the last call
    /// (the kernel blocks on its own; upkeep reads its block sets to tell the operator).
    pub fn portflood_alerts(&self) -> Result<usize, FwError> {
        let s = self.parsed_settings()?;
        if s.portflood.is_empty() || !self.config().kernel {
            super::unpoison(self.portflood_seen.lock()).clear();
            return Ok(0);
        }
        let Ok(mut nl) = Netlink::open() else {
            return Ok(0);
        };
        let mut now_blocked = std::collections::HashSet::new();
        let mut fresh = Vec::new();
        {
            let seen = super::unpoison(self.portflood_seen.lock());
            for p in &s.portflood {
                for (_, block) in crate::plan::portflood_sets(p) {
                    let Ok(Some(elements)) = nl.set_elements(&self.config().table, &block) else {
                        continue;
                    };
                    for (key, _) in elements {
                        if let Some(ip) = addr(&key) {
                            let k = (block.clone(), ip);
                            if !seen.contains(&k) {
                                fresh.push((*p, ip));
                            }
                            now_blocked.insert(k);
                        }
                    }
                }
            }
        }
        *super::unpoison(self.portflood_seen.lock()) = now_blocked;
        let email = s.lfd.email_alert;
        for (p, ip) in fresh.iter().take(MAX_ALERTS_PER_TICK) {
            let message = format!(
                "{ip} blocked on port {}/{}: more than {} new connections in {}s (PORTFLOOD), until quiet for {}s",
                p.port,
                if p.udp { "udp" } else { "tcp" },
                p.hits,
                p.seconds,
                p.seconds
            );
            if let Err(e) =
                self.alerts()
                    .raise("portflood", Some(ip.to_string()), None, message, email)
            {
                tracing::error!(error = %e, "could not store a PORTFLOOD alert");
            }
        }
        if fresh.len() > MAX_ALERTS_PER_TICK {
            let message = format!(
                "PORTFLOOD began blocking {} more sources in the last few seconds",
                fresh.len() - MAX_ALERTS_PER_TICK
            );
            if let Err(e) = self.alerts().raise("portflood", None, None, message, email) {
                tracing::error!(error = %e, "could not store a PORTFLOOD alert");
            }
        }
        Ok(fresh.len())
    }

    /// PORTFLOOD's blocks of `ip` now, for check-ip.
    pub(crate) fn portflood_matches(&self, ip: IpAddr) -> Vec<super::CheckResult> {
        let Ok(s) = self.parsed_settings() else {
            return Vec::new();
        };
        if s.portflood.is_empty() || !self.config().kernel {
            return Vec::new();
        }
        let Ok(mut nl) = Netlink::open() else {
            return Vec::new();
        };
        let t = super::now();
        let mut out = Vec::new();
        for p in &s.portflood {
            for (_, block) in crate::plan::portflood_sets(p) {
                let Ok(Some(elements)) = nl.set_elements(&self.config().table, &block) else {
                    continue;
                };
                for (key, expires) in elements {
                    if addr(&key).is_some_and(|a| a == ip) {
                        let proto = if p.udp { "udp" } else { "tcp" };
                        out.push(super::CheckResult {
                            list: "portflood",
                            name: Some(format!("{}/{proto}", p.port)),
                            entry: ip.to_string(),
                            comment: format!(
                                "PORTFLOOD {};{proto};{};{}: new connections to port {} dropped until quiet for {}s",
                                p.port, p.hits, p.seconds, p.port, p.seconds
                            ),
                            expires_at: expires.map(|ms| t + i64::try_from(ms.div_ceil(1000)).unwrap_or(0)),
                        });
                    }
                }
            }
        }
        out
    }
}
