//! Port-scan detection (`PS_*`): the kernel sends what reached the end of the input chain
//! unaccepted (new TCP connections and UDP packets to `PS_PORTS`, ICMP echo requests) to an
//! NFLOG group, at most 4 × `PS_LIMIT` per source per `PS_INTERVAL`; this thread counts, per
//! source, the hits in the window and the distinct ports among them (what the kernel can't
//! count), in O(1) per packet and bounded memory, and bans a source that reaches `PS_LIMIT`
//! hits on at least `PS_DIVERSITY` ports through the blacklist, with an alert.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::unpoison;
use crate::engine::{EntryRequest, Firewall, ListKind, now};
use crate::netlink::{Netlink, NetlinkError};
use crate::plan::{PORTSCAN_GROUP, PORTSCAN_SNAPLEN};

/// Sources tracked at once (then the quiet ones go, or all).
const MAX_TRACKED: usize = 100_000;
/// Distinct ports remembered per source, at most (enough for any `PS_DIVERSITY` shown).
const MAX_PORTS: usize = 64;
/// "Port" an ICMP echo request counts as.
const ICMP: u32 = 1 << 16;

#[derive(Debug, Default)]
struct Track {
    hits: VecDeque<i64>,
    ports: VecDeque<u32>,
    last: i64,
}

/// What `/csf/portscan/status` shows of the detector.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PsState {
    /// The NFLOG group is bound and read.
    pub running: bool,
    pub packets_seen: u64,
    pub tracked: usize,
    pub bans_total: u64,
    pub last_ban: Option<(String, i64)>,
    pub last_error: Option<String>,
}

/// (source, destination port or [`ICMP`]) of a logged packet, from its network header on.
pub fn packet(family: u8, p: &[u8]) -> Option<(IpAddr, u32)> {
    match family {
        2 => {
            let ihl = usize::from(*p.first()? & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let proto = *p.get(9)?;
            let port = match proto {
                6 | 17 => u32::from(u16::from_be_bytes(
                    p.get(ihl + 2..ihl + 4)?.try_into().ok()?,
                )),
                1 => ICMP,
                _ => return None,
            };
            Some((IpAddr::from(src), port))
        }
        10 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let port = match *p.get(6)? {
                6 | 17 => u32::from(u16::from_be_bytes(p.get(42..44)?.try_into().ok()?)),
                58 => ICMP,
                _ => return None,
            };
            Some((IpAddr::from(src), port))
        }
        _ => None,
    }
}

fn port_name(p: u32) -> String {
    if p == ICMP {
        "ICMP".into()
    } else {
        p.to_string()
    }
}

impl Firewall {
    /// Counts one logged packet; bans when the source crosses the trigger.
    fn portscan_hit(
        &self,
        settings: &crate::model::Settings,
        tracks: &mut HashMap<IpAddr, Track>,
        ip: IpAddr,
        port: u32,
    ) {
        let ps = &settings.lfd.ps;
        if ps.interval <= 0 || !settings.lfd.daemon {
            return;
        }
        let ip = ip.to_canonical();
        let lfd = self.lfd();
        unpoison(lfd.ps.lock()).packets_seen += 1;
        if lfd.is_local(&ip) {
            return;
        }
        let t = now();
        if tracks.len() >= MAX_TRACKED && !tracks.contains_key(&ip) {
            tracks.retain(|_, k| k.last > t - ps.interval);
            if tracks.len() >= MAX_TRACKED {
                tracks.clear();
            }
        }
        let k = tracks.entry(ip).or_default();
        k.last = t;
        k.hits.push_back(t);
        let keep = usize::try_from(ps.limit).unwrap_or(usize::MAX).max(1);
        while k.hits.front().is_some_and(|x| *x <= t - ps.interval) || k.hits.len() > keep {
            k.hits.pop_front();
        }
        if !k.ports.contains(&port) {
            k.ports.push_back(port);
            if k.ports.len() > MAX_PORTS {
                k.ports.pop_front();
            }
        }
        let distinct = k.ports.len();
        let hits = k.hits.len();
        if (hits as u64) < u64::from(ps.limit) || (distinct as u64) < u64::from(ps.diversity) {
            return;
        }
        let ports: Vec<String> = k.ports.iter().take(10).map(|p| port_name(*p)).collect();
        tracks.remove(&ip);
        let n = hits;
        if settings.lfd.ignored(ip)
            || lfd.trusted(&ip)
            || matches!(self.entry(ListKind::Black, ip), Ok(Some(_)))
        {
            return;
        }
        let comment = format!(
            "lfd: port scan: {n} hits on closed ports in {}s ({})",
            ps.interval,
            ports.join(", ")
        );
        let req = EntryRequest {
            ip: ip.to_string(),
            comment: comment.chars().take(200).collect(),
            ttl: ps.ttl,
            force: false,
            caller: None,
        };
        match self.add_from(ListKind::Black, req, "portscan") {
            Ok(_) => {
                let how = if ps.ttl == 0 {
                    "permanently".to_string()
                } else {
                    format!("for {}s", ps.ttl)
                };
                let message = format!(
                    "{ip} blocked {how}: a port scan, {n} hits on closed ports in {}s ({})",
                    ps.interval,
                    ports.join(", ")
                );
                if let Err(e) = self.alerts().raise(
                    "portscan",
                    Some(ip.to_string()),
                    None,
                    message,
                    ps.email_alert,
                ) {
                    tracing::error!(error = %e, "could not store a port scan alert");
                }
                let mut st = unpoison(lfd.ps.lock());
                st.bans_total += 1;
                st.last_ban = Some((ip.to_string(), t));
                tracing::warn!(%ip, hits = n, "port scan ban");
            }
            Err(e) => tracing::info!(%ip, error = %e, "port scan: not banned"),
        }
    }

    /// What the port-scan detector is doing.
    pub fn portscan_state(&self) -> PsState {
        unpoison(self.lfd().ps.lock()).clone()
    }
}

/// Reads the NFLOG group while `PS_INTERVAL` is set, until the firewall is dropped.
pub(super) fn run(fw: Arc<Firewall>) {
    let mut sock: Option<Netlink> = None;
    let mut tracks: HashMap<IpAddr, Track> = HashMap::new();
    loop {
        if Arc::strong_count(&fw) == 1 {
            return;
        }
        // read once per datagram, not once per packet in it
        let settings = fw
            .parsed_settings()
            .ok()
            .filter(|s| fw.config().kernel && s.lfd.ps.interval > 0 && s.lfd.daemon);
        let Some(settings) = settings else {
            if sock.take().is_some() {
                unpoison(fw.lfd().ps.lock()).running = false;
                tracks.clear();
            }
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        if sock.is_none() {
            match Netlink::nflog(PORTSCAN_GROUP, PORTSCAN_SNAPLEN) {
                Ok(nl) => {
                    sock = Some(nl);
                    let mut st = unpoison(fw.lfd().ps.lock());
                    st.running = true;
                    st.last_error = None;
                }
                Err(e) => {
                    let mut st = unpoison(fw.lfd().ps.lock());
                    st.running = false;
                    st.last_error = Some(format!("NFLOG group {PORTSCAN_GROUP}: {e}"));
                    drop(st);
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(nl) = sock.as_mut() else {
            continue;
        };
        let mut seen = Vec::new();
        match nl.nflog_packets(|family, p| {
            if let Some(hit) = packet(family, p) {
                seen.push(hit);
            }
        }) {
            Ok(()) | Err(NetlinkError::Timeout(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "port scan detection: reading NFLOG failed");
                unpoison(fw.lfd().ps.lock()).last_error = Some(e.to_string());
                sock = None;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        for (ip, port) in seen {
            fw.portscan_hit(&settings, &mut tracks, ip, port);
        }
        unpoison(fw.lfd().ps.lock()).tracked = tracks.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_packets_give_the_source_and_port() {
        let mut v4 = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        v4.extend_from_slice(&[0x9c, 0x40, 0x75, 0x31]); // 40000 -> 30001
        assert_eq!(packet(2, &v4), Some(("10.0.0.2".parse().unwrap(), 30001)));
        v4[9] = 1;
        assert_eq!(packet(2, &v4), Some(("10.0.0.2".parse().unwrap(), ICMP)));
        // truncated, odd header lengths and unknown families are skipped
        assert_eq!(packet(2, &v4[..10]), None);
        assert_eq!(packet(2, &[0x41, 0, 0, 0]), None);
        assert_eq!(packet(7, &v4), None);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 17, 64];
        v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0x9c, 0x40, 0, 53]);
        assert_eq!(packet(10, &v6), Some(("fd00::2".parse().unwrap(), 53)));
    }
}
