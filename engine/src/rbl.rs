//! DNSBL lookups of connecting clients (`/email/rbl`): the address (IPv4 octets or IPv6
//! nibbles, reversed) under every zone at once, each with a deadline, once per connection.
//! A DNS failure is not a listing, and neither is an answer outside 127.0.0.0/8 or one of
//! Spamhaus' `127.255.255.x` error codes (they mean the query itself was refused).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use wispd_store::schema::{MAIL_RBL, RblSettings, RblZone};
use wispd_store::{Store, StoreError};

/// One lookup may take this long; then the zone counts as not listing the address.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Zones one configuration may name.
pub const MAX_ZONES: usize = 20;
/// Allowlist entries at most.
pub const MAX_ALLOWLIST: usize = 1000;

/// A zone that lists the address.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub zone: String,
    pub reject: bool,
    pub score: f64,
    /// The zone's TXT for the address (its reason), if it has one.
    pub reason: Option<String>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RblError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The DNSBL checker, shared by every SMTP session.
pub struct Rbl {
    store: Store,
    resolver: TokioResolver,
    settings: RwLock<RblSettings>,
    hits: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Rbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rbl").finish_non_exhaustive()
    }
}

impl Rbl {
    pub fn new(store: Store, nameservers: &[SocketAddr]) -> Result<Rbl, String> {
        let resolver = crate::dkim::resolver(nameservers).map_err(|e| e.to_string())?;
        let settings = store
            .read(|r| r.get(&MAIL_RBL, "rbl"))
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        Ok(Rbl {
            store,
            resolver,
            settings: RwLock::new(settings),
            hits: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> RblSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Listings per zone since the start.
    pub fn hits(&self) -> HashMap<String, u64> {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks and stores a new configuration (durable when this returns).
    pub fn set(&self, mut s: RblSettings) -> Result<RblSettings, RblError> {
        validate(&mut s)?;
        let stored = s.clone();
        self.store.write(|w| w.put(&MAIL_RBL, "rbl", &stored))?;
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = s.clone();
        Ok(s)
    }

    /// The zones that list `ip`, looked up in parallel; nothing when disabled or allowlisted.
    pub async fn lookup(&self, ip: IpAddr) -> Vec<Listing> {
        let s = self.settings();
        if !s.enabled || s.zones.is_empty() || allowlisted(&s.allowlist, ip) {
            return Vec::new();
        }
        let name = reversed(ip);
        let lookups = s.zones.iter().map(|z| self.one(z, &name));
        let found: Vec<Listing> = join_all(lookups).await.into_iter().flatten().collect();
        if !found.is_empty() {
            let mut hits = self.hits.lock().unwrap_or_else(PoisonError::into_inner);
            for l in &found {
                *hits.entry(l.zone.clone()).or_default() += 1;
            }
        }
        found
    }

    async fn one(&self, zone: &RblZone, reversed: &str) -> Option<Listing> {
        let query = format!("{reversed}.{}.", zone.zone);
        let answer =
            tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.ipv4_lookup(query.as_str())).await;
        let addrs: Vec<std::net::Ipv4Addr> = match answer {
            Ok(Ok(a)) => a
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
            // NXDOMAIN: not listed; anything else: a failure, which is not a listing either
            Ok(Err(e)) => {
                if !e.is_nx_domain() && !e.is_no_records_found() {
                    tracing::warn!(zone = %zone.zone, error = %e, "DNSBL lookup failed");
                }
                return None;
            }
            Err(_) => {
                tracing::warn!(zone = %zone.zone, "DNSBL lookup timed out");
                return None;
            }
        };
        let listed = addrs.iter().any(|a| {
            let o = a.octets();
            o[0] == 127 && !(o[1] == 255 && o[2] == 255)
        });
        if !listed {
            if !addrs.is_empty() {
                tracing::warn!(zone = %zone.zone, answer = ?addrs, "DNSBL answered an error code, not a listing");
            }
            return None;
        }
        let reason =
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.txt_lookup(query.as_str()))
                .await
            {
                Ok(Ok(txt)) => txt.answers().iter().find_map(|r| match &r.data {
                    RData::TXT(t) => {
                        let joined: Vec<u8> =
                            t.txt_data.iter().flat_map(|d| d.iter().copied()).collect();
                        Some(clean(&String::from_utf8_lossy(&joined)))
                    }
                    _ => None,
                }),
                _ => None,
            };
        Some(Listing {
            zone: zone.zone.clone(),
            reject: zone.action == "reject",
            score: zone.score,
            reason,
        })
    }
}

/// Runs the futures at once and collects their outputs in order (each is bounded by its own
/// timeouts, so the whole is bounded by the slowest).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.map(|f| Some(Box::pin(f))).collect();
    let mut done: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (p, d) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(f) = p {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *d = Some(v);
                        *p = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// A listing's reason as one printable line, bounded.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// `1.2.3.4` → `4.3.2.1`; IPv6 → its 32 nibbles, reversed, dot-separated.
pub fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return reversed(IpAddr::V4(v4));
            }
            let mut parts = Vec::with_capacity(32);
            for b in v6.octets().iter().rev() {
                parts.push(format!("{:x}", b & 0xf));
                parts.push(format!("{:x}", b >> 4));
            }
            parts.join(".")
        }
    }
}

fn allowlisted(list: &[String], ip: IpAddr) -> bool {
    list.iter().any(|e| contains(e, ip))
}

/// Whether `entry` (an address or a CIDR network) holds `ip`.
pub(crate) fn contains(entry: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (entry, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

fn validate(s: &mut RblSettings) -> Result<(), RblError> {
    let bad = |m: String| Err(RblError::Invalid(m));
    if s.zones.len() > MAX_ZONES {
        return bad(format!("zones: at most {MAX_ZONES}"));
    }
    if s.allowlist.len() > MAX_ALLOWLIST {
        return bad(format!("allowlist: at most {MAX_ALLOWLIST} entries"));
    }
    for z in &mut s.zones {
        z.zone = z.zone.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = !z.zone.is_empty()
            && z.zone.len() <= 200
            && z.zone.contains('.')
            && z.zone.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return bad(format!("zones: {:?} is not a DNS zone", z.zone));
        }
        z.action = z.action.trim().to_ascii_lowercase();
        if z.action != "reject" && z.action != "score" {
            return bad(format!(
                "zones: action {:?} is not reject or score",
                z.action
            ));
        }
        if !z.score.is_finite() || !(-100.0..=100.0).contains(&z.score) {
            return bad(format!(
                "zones: score {} is not between -100 and 100",
                z.score
            ));
        }
    }
    let mut names: Vec<&str> = s.zones.iter().map(|z| z.zone.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return bad("zones: a zone is named twice".into());
    }
    for e in &mut s.allowlist {
        *e = e.trim().to_string();
        let (addr, bits) = match e.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (e.as_str(), None),
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            return bad(format!("allowlist: {e:?} is not an address or network"));
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if let Some(b) = bits
            && b.parse::<u32>().ok().filter(|&n| n <= max).is_none()
        {
            return bad(format!("allowlist: {e:?} has an invalid prefix length"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_reverse_as_dnsbls_want_them() {
        assert_eq!(reversed("192.0.2.1".parse().expect("ip")), "1.2.0.192");
        assert_eq!(
            reversed("2001:db8::1".parse().expect("ip")),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
        );
        assert_eq!(reversed("::ffff:10.0.0.2".parse().expect("ip")), "2.0.0.10");
    }

    #[test]
    fn allowlists_and_validation() {
        assert!(contains("192.0.2.0/24", "192.0.2.77".parse().expect("ip")));
        assert!(!contains("192.0.2.0/24", "192.0.3.1".parse().expect("ip")));
        assert!(contains(
            "2001:db8::/32",
            "2001:db8:1::5".parse().expect("ip")
        ));
        assert!(!contains("2001:db8::/32", "10.0.0.1".parse().expect("ip")));
        let zone = |z: &str, a: &str, s: f64| RblZone {
            zone: z.into(),
            action: a.into(),
            score: s,
        };
        let mut ok = RblSettings {
            enabled: true,
            zones: vec![zone("Zen.Spamhaus.org.", "Reject", 0.0)],
            allowlist: vec![" 10.0.0.0/8 ".into()],
        };
        validate(&mut ok).expect("valid");
        assert_eq!(ok.zones[0].zone, "zen.spamhaus.org");
        assert_eq!(ok.allowlist[0], "10.0.0.0/8");
        for bad in [
            RblSettings {
                zones: vec![zone("x", "reject", 1.0)],
                ..RblSettings::default()
            },
            RblSettings {
                zones: vec![zone("a.example", "drop", 1.0)],
                ..RblSettings::default()
            },
            RblSettings {
                zones: vec![zone("a.example", "score", f64::NAN)],
                ..RblSettings::default()
            },
            RblSettings {
                zones: vec![
                    zone("a.example", "score", 1.0),
                    zone("A.example", "score", 1.0),
                ],
                ..RblSettings::default()
            },
            RblSettings {
                allowlist: vec!["10.0.0.0/33".into()],
                ..RblSettings::default()
            },
        ] {
            let mut b = bad;
            assert!(validate(&mut b).is_err(), "{b:?}");
        }
    }
}
