//! The desired ruleset: settings parsed from csf.conf-style keys, list entries, port sets and
//! basic rules, and the disjoint intervals the kernel's interval sets hold.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// A CSF setting that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Option<PortRange> {
        let s = s.trim();
        let (lo, hi) = match s.split_once(':').or_else(|| s.split_once('-')) {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let p = s.parse().ok()?;
                (p, p)
            }
        };
        (lo > 0 && lo <= hi).then_some(PortRange { lo, hi })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}:{}", self.lo, self.hi)
        }
    }
}

/// A comma-separated CSF port list (`"22,25,30000:35000"`), sorted, with overlapping ranges merged
/// (`"20:25,22"` is `20:25`): a kernel interval set refuses overlapping elements (EEXIST), while
/// CSF users expect a port listed twice, or inside a range, to simply be open. Ranges that only
/// touch (`20,21,22`) stay as written: the kernel takes adjacent intervals, and CSF lists are read
/// port by port.
pub fn parse_ports(key: &str, s: &str) -> Result<Vec<PortRange>, SettingError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let r = PortRange::parse(part).ok_or_else(|| {
            bad(
                key,
                format!("{part:?} is not a port (1-65535) or range lo:hi"),
            )
        })?;
        out.push(r);
    }
    Ok(merge_ports(out))
}

/// Sorts `ports` and merges the ranges that overlap.
pub fn merge_ports(mut ports: Vec<PortRange>) -> Vec<PortRange> {
    ports.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ports.len());
    for r in ports {
        match out.last_mut() {
            Some(last) if r.lo <= last.hi => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

/// `ports` without the ports of `gone` (a range partly covered is split); `None` when no port of
/// `gone` was in `ports`.
pub fn subtract_ports(ports: &[PortRange], gone: PortRange) -> Option<Vec<PortRange>> {
    let mut hit = false;
    let mut out = Vec::with_capacity(ports.len() + 1);
    for r in ports {
        if r.hi < gone.lo || r.lo > gone.hi {
            out.push(*r);
            continue;
        }
        hit = true;
        if r.lo < gone.lo {
            out.push(PortRange {
                lo: r.lo,
                hi: gone.lo - 1,
            });
        }
        if r.hi > gone.hi {
            out.push(PortRange {
                lo: gone.hi + 1,
                hi: r.hi,
            });
        }
    }
    hit.then_some(out)
}

/// Whether `port` is in one of `ports`.
pub fn covers(ports: &[PortRange], port: u16) -> bool {
    ports.iter().any(|r| r.lo <= port && port <= r.hi)
}

pub fn format_ports(ports: &[PortRange]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The port-list keys and which set each one feeds.
pub const PORT_KEYS: [&str; 8] = [
    "TCP_IN", "TCP_OUT", "UDP_IN", "UDP_OUT", "TCP6_IN", "TCP6_OUT", "UDP6_IN", "UDP6_OUT",
];

/// Every csf.conf key wispd implements.
const FIREWALL_KEYS: [&str; 28] = [
    "TCP_IN",
    "TCP_OUT",
    "UDP_IN",
    "UDP_OUT",
    "TCP6_IN",
    "TCP6_OUT",
    "UDP6_IN",
    "UDP6_OUT",
    "ICMP_IN",
    "ICMP_IN_RATE",
    "ICMP_OUT",
    "DENY_IP_LIMIT",
    "DENY_TEMP_IP_LIMIT",
    "TESTING",
    "TESTING_INTERVAL",
    "CC_DENY",
    "CC_ALLOW",
    "CC_ALLOW_FILTER",
    "CC_SOURCE",
    "CC6_SOURCE",
    "CC_INTERVAL",
    "LF_BOGON",
    "BOGON_INTERFACE",
    "SYNFLOOD",
    "SYNFLOOD_RATE",
    "SYNFLOOD_BURST",
    "CONNLIMIT",
    "PORTFLOOD",
];

/// Whether wispd implements the csf.conf key `k`.
pub fn is_key(k: &str) -> bool {
    FIREWALL_KEYS.contains(&k) || crate::lfd::settings::DEFAULTS.iter().any(|(d, _)| *d == k)
}

/// Every csf.conf key wispd implements, in the order the settings list them.
pub fn keys() -> impl Iterator<Item = &'static str> {
    FIREWALL_KEYS
        .into_iter()
        .chain(crate::lfd::settings::DEFAULTS.iter().map(|(k, _)| *k))
}

/// Defaults of the keys that don't depend on the machine; a stored settings map that predates a
/// key reads it from here.
const STATIC_DEFAULTS: [(&str, &str); 13] = [
    ("CC_DENY", ""),
    ("CC_ALLOW", ""),
    ("CC_ALLOW_FILTER", ""),
    (
        "CC_SOURCE",
        "https://www.ipdeny.com/ipblocks/data/aggregated/{cc}-aggregated.zone",
    ),
    (
        "CC6_SOURCE",
        "https://www.ipdeny.com/ipv6/ipaddresses/aggregated/{cc}-aggregated.zone",
    ),
    ("CC_INTERVAL", "7"),
    ("LF_BOGON", "0"),
    ("BOGON_INTERFACE", ""),
    ("SYNFLOOD", "0"),
    ("SYNFLOOD_RATE", "100/s"),
    ("SYNFLOOD_BURST", "150"),
    ("CONNLIMIT", ""),
    ("PORTFLOOD", ""),
];

/// Parsed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Port sets by key (`TCP_IN`, …).
    pub ports: BTreeMap<&'static str, Vec<PortRange>>,
    pub icmp_in: bool,
    /// Packets per second; 0 = unlimited.
    pub icmp_in_rate: u32,
    pub icmp_out: bool,
    pub deny_ip_limit: usize,
    pub deny_temp_ip_limit: usize,
    pub testing: bool,
    /// Minutes.
    pub testing_interval: u32,
    /// Country codes (lowercase) whose addresses are dropped.
    pub cc_deny: Vec<String>,
    /// Country codes whose addresses are accepted like the whitelist.
    pub cc_allow: Vec<String>,
    /// When not empty, incoming traffic from anywhere else is dropped.
    pub cc_allow_filter: Vec<String>,
    /// Zone-file source templates with `{cc}`.
    pub cc_source: String,
    pub cc6_source: String,
    /// Days between country list refreshes.
    pub cc_interval: u32,
    pub bogon: bool,
    pub bogon_interface: String,
    /// SYNFLOOD: new TCP connections (SYNs) accepted at most at this rate, in all.
    pub synflood: Option<Rate>,
    /// `SYNFLOOD_RATE` / `SYNFLOOD_BURST` as parsed, whether SYNFLOOD is on or not.
    pub synflood_rate: Rate,
    /// CONNLIMIT: concurrent connections per source address to a TCP port.
    pub connlimit: Vec<ConnLimit>,
    /// PORTFLOOD: new connections per source address to a port in a window.
    pub portflood: Vec<PortFlood>,
    /// lfd's keys.
    pub lfd: crate::lfd::LfdSettings,
}

/// `CONNLIMIT` entry: at most `limit` connections from one address to TCP `port` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimit {
    pub port: u16,
    pub limit: u32,
}

/// `PORTFLOOD` entry: more than `hits` new connections to `port` within `seconds` from one
/// address block it until it has been quiet for `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFlood {
    pub port: u16,
    pub udp: bool,
    pub hits: u32,
    pub seconds: u32,
}

/// Entries CONNLIMIT and PORTFLOOD take at most (each is a rule and sets per family).
pub const MAX_PROTECT_ENTRIES: usize = 32;

fn connlimit(v: &str) -> Result<Vec<ConnLimit>, SettingError> {
    let mut out: Vec<ConnLimit> = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(';').map(str::trim).collect();
        let parsed = match fields.as_slice() {
            [port, limit] => port.parse::<u16>().ok().filter(|p| *p > 0).zip(
                limit
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=100_000).contains(l)),
            ),
            _ => None,
        };
        let Some((port, limit)) = parsed else {
            return Err(bad(
                "CONNLIMIT",
                format!("{part:?} must be port;limit (a port 1-65535, a limit 1-100000)"),
            ));
        };
        if out.iter().any(|c| c.port == port) {
            return Err(bad("CONNLIMIT", format!("port {port} is listed twice")));
        }
        out.push(ConnLimit { port, limit });
    }
    if out.len() > MAX_PROTECT_ENTRIES {
        return Err(bad(
            "CONNLIMIT",
            format!("at most {MAX_PROTECT_ENTRIES} ports"),
        ));
    }
    Ok(out)
}

fn portflood(v: &str) -> Result<Vec<PortFlood>, SettingError> {
    let mut out: Vec<PortFlood> = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(';').map(str::trim).collect();
        let parsed = match fields.as_slice() {
            [port, proto, hits, seconds] => {
                let udp = match proto.to_ascii_lowercase().as_str() {
                    "tcp" => Some(false),
                    "udp" => Some(true),
                    _ => None,
                };
                match (
                    port.parse::<u16>().ok().filter(|p| *p > 0),
                    udp,
                    hits.parse::<u32>()
                        .ok()
                        .filter(|h| (1..=10_000).contains(h)),
                    seconds
                        .parse::<u32>()
                        .ok()
                        .filter(|s| (1..=86_400).contains(s)),
                ) {
                    (Some(port), Some(udp), Some(hits), Some(seconds)) => Some(PortFlood {
                        port,
                        udp,
                        hits,
                        seconds,
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(p) = parsed else {
            return Err(bad(
                "PORTFLOOD",
                format!(
                    "{part:?} must be port;tcp|udp;hits;seconds (hits 1-10000, seconds 1-86400)"
                ),
            ));
        };
        if out.iter().any(|o| o.port == p.port && o.udp == p.udp) {
            return Err(bad(
                "PORTFLOOD",
                format!("{part:?}: that port is listed twice"),
            ));
        }
        out.push(p);
    }
    if out.len() > MAX_PROTECT_ENTRIES {
        return Err(bad(
            "PORTFLOOD",
            format!("at most {MAX_PROTECT_ENTRIES} entries"),
        ));
    }
    Ok(out)
}

/// A kernel `limit`: `count` per `per` seconds, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: u64,
    pub burst: u32,
}

impl Rate {
    /// CSF's spelling: `100/s`, `30/m`, `10/h`, `100/d`.
    pub fn text(&self) -> String {
        let unit = match self.per {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => "d",
        };
        format!("{}/{unit}", self.count)
    }
}

/// `N/s`, `N/m`, `N/h` or `N/d` (N from 1 to `max`): (N, seconds).
fn rate_text(key: &str, v: &str, max: u64) -> Result<(u64, u64), SettingError> {
    let v = v.trim();
    let parsed = v.split_once('/').and_then(|(n, unit)| {
        let per = match unit.trim() {
            "s" | "second" => 1,
            "m" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return None,
        };
        let n = n
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))?;
        Some((n, per))
    });
    parsed.ok_or_else(|| {
        bad(
            key,
            format!("{v:?} must be N/s, N/m, N/h or N/d with N from 1 to {max}"),
        )
    })
}

impl Settings {
    /// Every country code used by any CC_* key.
    pub fn countries(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .cc_deny
            .iter()
            .chain(&self.cc_allow)
            .chain(&self.cc_allow_filter)
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

fn countries(key: &str, v: &str) -> Result<Vec<String>, SettingError> {
    let mut out = Vec::new();
    for cc in v
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
    {
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(bad(key, format!("{cc:?} is not a two-letter country code")));
        }
        if !out.contains(&cc) {
            out.push(cc);
        }
    }
    Ok(out)
}

fn source_template(key: &str, v: &str) -> Result<String, SettingError> {
    let v = v.trim();
    let scheme_ok = v.starts_with("http://")
        || v.starts_with("https://")
        || v.starts_with("file:///")
        || v.starts_with('/');
    if !scheme_ok || !v.contains("{cc}") || v.chars().any(char::is_whitespace) {
        return Err(bad(
            key,
            format!("{v:?} must be an http(s)://, file:// URL or absolute path containing {{cc}}"),
        ));
    }
    Ok(v.to_string())
}

/// The defaults for a fresh install: `tcp_in` are the ports that must stay reachable (ssh, the API,
/// wispd's own listeners).
pub fn default_settings(tcp_in: &[u16]) -> BTreeMap<String, String> {
    let mut tcp_in: Vec<u16> = tcp_in.to_vec();
    tcp_in.push(22);
    tcp_in.sort_unstable();
    tcp_in.dedup();
    let tcp_in = tcp_in
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = "20,21,22,25,53,80,110,113,443,465,587,993,995";
    [
        ("TCP_IN", tcp_in.as_str()),
        ("TCP_OUT", out),
        ("UDP_IN", ""),
        ("UDP_OUT", "20,21,53,113,123"),
        ("TCP6_IN", tcp_in.as_str()),
        ("TCP6_OUT", out),
        ("UDP6_IN", ""),
        ("UDP6_OUT", "20,21,53,113,123"),
        ("ICMP_IN", "1"),
        ("ICMP_IN_RATE", "1/s"),
        ("ICMP_OUT", "1"),
        ("DENY_IP_LIMIT", "200"),
        ("DENY_TEMP_IP_LIMIT", "100"),
        ("TESTING", "1"),
        ("TESTING_INTERVAL", "5"),
    ]
    .into_iter()
    .chain(STATIC_DEFAULTS)
    .chain(crate::lfd::settings::DEFAULTS)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn flag(key: &str, v: &str) -> Result<bool, SettingError> {
    match v.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(bad(key, format!("{other:?} must be 0 or 1"))),
    }
}

fn number(key: &str, v: &str, max: u64) -> Result<u64, SettingError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            bad(
                key,
                format!("{:?} must be a whole number from 0 to {max}", v.trim()),
            )
        })
}

impl Settings {
    /// Validates a full settings map; every problem is returned.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Settings, Vec<SettingError>> {
        let mut errors = Vec::new();
        for k in map.keys() {
            if !is_key(k) {
                errors.push(bad(k, "is not a setting wispd implements"));
            }
        }
        let get = |k: &str| {
            map.get(k)
                .map(String::as_str)
                .or_else(|| {
                    STATIC_DEFAULTS
                        .iter()
                        .chain(crate::lfd::settings::DEFAULTS.iter())
                        .find(|(d, _)| *d == k)
                        .map(|(_, v)| *v)
                })
                .unwrap_or("")
        };
        let mut ports = BTreeMap::new();
        for key in PORT_KEYS {
            match parse_ports(key, get(key)) {
                Ok(p) => {
                    ports.insert(key, p);
                }
                Err(e) => errors.push(e),
            }
        }
        let mut take = |r: Result<u64, SettingError>| r.map_err(|e| errors.push(e)).unwrap_or(0);
        let deny_ip_limit = take(number("DENY_IP_LIMIT", get("DENY_IP_LIMIT"), 1_000_000));
        let deny_temp_ip_limit = take(number(
            "DENY_TEMP_IP_LIMIT",
            get("DENY_TEMP_IP_LIMIT"),
            1_000_000,
        ));
        let testing_interval = take(number("TESTING_INTERVAL", get("TESTING_INTERVAL"), 10_080));
        let cc_interval = take(number("CC_INTERVAL", get("CC_INTERVAL"), 365));
        if cc_interval == 0 {
            errors.push(bad("CC_INTERVAL", "must be 1 to 365 days"));
        }
        let mut list_of = |k: &str| {
            countries(k, get(k))
                .map_err(|e| errors.push(e))
                .unwrap_or_default()
        };
        let cc_deny = list_of("CC_DENY");
        let cc_allow = list_of("CC_ALLOW");
        let cc_allow_filter = list_of("CC_ALLOW_FILTER");
        let mut template = |k: &str| {
            source_template(k, get(k))
                .map_err(|e| errors.push(e))
                .unwrap_or_default()
        };
        let cc_source = template("CC_SOURCE");
        let cc6_source = template("CC6_SOURCE");
        let bogon_interface = get("BOGON_INTERFACE").trim().to_string();
        if bogon_interface.len() > 15
            || !bogon_interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-@".contains(&b))
        {
            errors.push(bad(
                "BOGON_INTERFACE",
                format!("{bogon_interface:?} is not an interface name"),
            ));
        }
        let icmp_in_rate = match get("ICMP_IN_RATE").trim() {
            "" | "0" => 0,
            r => match r
                .strip_suffix("/s")
                .and_then(|n| n.trim().parse::<u32>().ok())
            {
                Some(n) if (1..=100_000).contains(&n) => n,
                _ => {
                    errors.push(bad(
                        "ICMP_IN_RATE",
                        format!("{r:?} must be N/s (1-100000) or 0"),
                    ));
                    0
                }
            },
        };
        let synflood_rate = rate_text("SYNFLOOD_RATE", get("SYNFLOOD_RATE"), 1_000_000)
            .map_err(|e| errors.push(e))
            .unwrap_or((100, 1));
        let synflood_burst = number("SYNFLOOD_BURST", get("SYNFLOOD_BURST"), 1_000_000)
            .map_err(|e| errors.push(e))
            .unwrap_or(150);
        if synflood_burst == 0 {
            errors.push(bad("SYNFLOOD_BURST", "must be at least 1"));
        }
        let connlimit = connlimit(get("CONNLIMIT"))
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let portflood = portflood(get("PORTFLOOD"))
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let lfd = crate::lfd::settings::parse(get, &mut errors);
        let mut flag_of = |k: &str| flag(k, get(k)).map_err(|e| errors.push(e)).unwrap_or(false);
        let icmp_in = flag_of("ICMP_IN");
        let icmp_out = flag_of("ICMP_OUT");
        let testing = flag_of("TESTING");
        let bogon = flag_of("LF_BOGON");
        let synflood_rate = Rate {
            count: synflood_rate.0,
            per: synflood_rate.1,
            burst: u32::try_from(synflood_burst).unwrap_or(u32::MAX),
        };
        let synflood = flag_of("SYNFLOOD").then_some(synflood_rate);
        if bogon && bogon_interface.is_empty() {
            errors.push(bad(
                "BOGON_INTERFACE",
                "is required while LF_BOGON is 1 (bogons are filtered on one interface only)",
            ));
        }
        if testing && testing_interval == 0 {
            errors.push(bad(
                "TESTING_INTERVAL",
                "must be at least 1 minute while TESTING is 1",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Settings {
            ports,
            icmp_in,
            icmp_in_rate,
            icmp_out,
            deny_ip_limit: usize::try_from(deny_ip_limit).unwrap_or(usize::MAX),
            deny_temp_ip_limit: usize::try_from(deny_temp_ip_limit).unwrap_or(usize::MAX),
            testing,
            testing_interval: u32::try_from(testing_interval).unwrap_or(u32::MAX),
            cc_deny,
            cc_allow,
            cc_allow_filter,
            cc_source,
            cc6_source,
            cc_interval: u32::try_from(cc_interval).unwrap_or(7),
            bogon,
            bogon_interface,
            synflood,
            synflood_rate,
            connlimit,
            portflood,
            lfd,
        })
    }

    pub fn ports(&self, key: &str) -> &[PortRange] {
        self.ports.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Parses an address or CIDR into its canonical network (`10.1.2.3/8` -> `10.0.0.0/8`,
/// `::ffff:1.2.3.4` -> `1.2.3.4/32`; see [`unmap`]).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net = match s.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => s.parse::<IpNet>().ok()?.trunc(),
    };
    Some(unmap(net))
}

/// An IPv4-mapped IPv6 address or network (`::ffff:1.2.3.4`, `::ffff:1.2.3.0/120`) as the IPv4
/// it stands for (`1.2.3.4/32`, `1.2.3.0/24`: prefix minus 96). Packets never carry mapped
/// addresses (a dual-stack socket shows IPv4 peers that way), so kept as IPv6 such an entry would
/// match nothing — a ban that never bans — and `::ffff:127.0.0.1` would slip past loopback checks.
/// Networks shorter than /96 are not mapped ones and stay as they are.
pub fn unmap(net: IpNet) -> IpNet {
    let IpNet::V6(n) = net else {
        return net;
    };
    let Some(v4) = n.network().to_ipv4_mapped() else {
        return net;
    };
    match n.prefix_len().checked_sub(96).map(|p| Ipv4Net::new(v4, p)) {
        Some(Ok(v4net)) => IpNet::V4(v4net.trunc()),
        _ => net,
    }
}

/// Shortest IPv4 prefix a list entry may have without `force`: /8 is the largest block IANA ever
/// assigned to a single holder, so anything wider spans many unrelated networks and is far more
/// often a typo (`/1` for `/21`) than an intent.
pub const MIN_PREFIX_V4: u8 = 8;
/// The IPv6 counterpart: /32 is the standard minimum allocation to an ISP (LIR).
pub const MIN_PREFIX_V6: u8 = 32;

/// The bound above for `net`'s family.
pub fn min_prefix(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    }
}

/// Whether `net` is wider than [`min_prefix`] allows without `force`.
pub fn is_broad(net: &IpNet) -> bool {
    net.prefix_len() < min_prefix(net)
}

/// A closed interval of addresses, as u128 (IPv4 in the low 32 bits), with an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub start: u128,
    pub end: u128,
    /// Unix seconds; `None` = permanent.
    pub expires: Option<i64>,
}

pub fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Breakpoint: an address, or one past the top of the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Point {
    At(u128),
    Top,
}

fn after(x: u128, top: u128) -> Point {
    if x >= top {
        Point::Top
    } else {
        Point::At(x + 1)
    }
}

/// Disjoint, sorted intervals covering the union of `nets`; where entries overlap, the interval
/// lives as long as the longest-lived entry covering it. Expired entries are dropped.
pub fn intervals<'a>(
    nets: impl Iterator<Item = (&'a IpNet, Option<i64>)>,
    v6: bool,
    now: i64,
) -> Vec<Interval> {
    let top = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    // expiry as a sortable key: permanent = i64::MAX
    let mut events: Vec<(Point, bool, i64)> = Vec::new();
    for (net, expires) in nets {
        if net.addr().is_ipv6() != v6 || expires.is_some_and(|e| e <= now) {
            continue;
        }
        let (s, e) = bounds(net);
        let exp = expires.unwrap_or(i64::MAX);
        events.push((Point::At(s), true, exp));
        events.push((after(e, top), false, exp));
    }
    events.sort_unstable_by_key(|e| e.0);
    let mut active: BTreeMap<i64, usize> = BTreeMap::new();
    let mut out: Vec<Interval> = Vec::new();
    let mut i = 0;
    let mut cursor: Option<(u128, i64)> = None; // open segment: start, expiry
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, open, exp) = events[i];
            if open {
                *active.entry(exp).or_default() += 1;
            } else if let Some(c) = active.get_mut(&exp) {
                *c -= 1;
                if *c == 0 {
                    active.remove(&exp);
                }
            }
            i += 1;
        }
        let now_max = active.keys().next_back().copied();
        let Point::At(pos) = at else {
            if let Some((s, exp)) = cursor.take() {
                push(&mut out, s, top, exp);
            }
            break;
        };
        match (cursor, now_max) {
            (Some((s, exp)), Some(m)) if m != exp => {
                push(&mut out, s, pos - 1, exp);
                cursor = Some((pos, m));
            }
            (Some((s, exp)), None) => {
                push(&mut out, s, pos - 1, exp);
                cursor = None;
            }
            (None, Some(m)) => cursor = Some((pos, m)),
            _ => {}
        }
    }
    out
}

fn push(out: &mut Vec<Interval>, start: u128, end: u128, exp: i64) {
    let expires = (exp != i64::MAX).then_some(exp);
    if let Some(last) = out.last_mut()
        && last.expires == expires
        && last.end.checked_add(1) == Some(start)
    {
        last.end = end;
        return;
    }
    out.push(Interval {
        start,
        end,
        expires,
    });
}

/// Addresses that never appear as a source on the public internet (IANA special-purpose
/// registries). IPv6 link-local and the unspecified address are left out: neighbour discovery
/// uses them.
pub const BOGONS_V4: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
pub const BOGONS_V6: [&str; 6] = [
    "::ffff:0:0/96",
    "100::/64",
    "2001:db8::/32",
    "3ffe::/16",
    "fc00::/7",
    "fec0::/10",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        parse_net(s).expect("net")
    }

    fn v4(s: &str) -> u128 {
        u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().expect("ip")))
    }

    #[test]
    fn canonical_nets() {
        assert_eq!(
            parse_net("10.1.2.3/8").map(|n| n.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_net(" 1.2.3.4 ").map(|n| n.to_string()),
            Some("1.2.3.4/32".into())
        );
        assert_eq!(
            parse_net("2001:db8::1/32").map(|n| n.to_string()),
            Some("2001:db8::/32".into())
        );
        assert!(parse_net("1.2.3.4/33").is_none());
        assert!(parse_net("nope").is_none());
    }

    #[test]
    fn ipv4_mapped_addresses_and_networks_are_stored_as_ipv4() {
        let p = |s: &str| parse_net(s).map(|n| n.to_string());
        assert_eq!(p("::ffff:5.6.7.8"), Some("5.6.7.8/32".into()));
        assert_eq!(p("::FFFF:5.6.7.8/128"), Some("5.6.7.8/32".into()));
        assert_eq!(p("::ffff:1.2.3.4/120"), Some("1.2.3.0/24".into()));
        assert_eq!(p("::ffff:127.0.0.1"), Some("127.0.0.1/32".into()));
        assert_eq!(p("::ffff:128.0.0.0/97"), Some("128.0.0.0/1".into()));
        assert_eq!(p("::ffff:0:0/96"), Some("0.0.0.0/0".into()));
        // not mapped: shorter than /96, or outside ::ffff:0:0/96
        assert_eq!(p("::ffff:0:0/64"), Some("::/64".into()));
        assert_eq!(p("::5.6.7.8"), Some("::506:708/128".into()));
        assert_eq!(p("2001:db8::1"), Some("2001:db8::1/128".into()));
    }

    #[test]
    fn prefixes_wider_than_a_slash_8_or_slash_32_are_broad() {
        for (s, broad) in [
            ("128.0.0.0/1", true),
            ("0.0.0.0/0", true),
            ("10.0.0.0/7", true),
            ("10.0.0.0/8", false),
            ("8000::/1", true),
            ("::/0", true),
            ("2001:d00::/24", true),
            ("2001:db8::/32", false),
            ("::ffff:128.0.0.0/97", true),
        ] {
            assert_eq!(is_broad(&net(s)), broad, "{s}");
        }
    }

    #[test]
    fn overlapping_entries_merge_with_longest_expiry_winning() {
        let a = net("10.0.0.0/8");
        let b = net("10.1.0.0/16");
        let c = net("11.0.0.0/8");
        let d = net("192.168.0.1");
        let list = [(&a, Some(100)), (&b, None), (&c, Some(100)), (&d, Some(50))];
        let got = intervals(list.iter().map(|(n, e)| (*n, *e)), false, 10);
        assert_eq!(
            got,
            vec![
                Interval {
                    start: v4("10.0.0.0"),
                    end: v4("10.0.255.255"),
                    expires: Some(100)
                },
                Interval {
                    start: v4("10.1.0.0"),
                    end: v4("10.1.255.255"),
                    expires: None
                },
                Interval {
                    start: v4("10.2.0.0"),
                    end: v4("11.255.255.255"),
                    expires: Some(100)
                },
                Interval {
                    start: v4("192.168.0.1"),
                    end: v4("192.168.0.1"),
                    expires: Some(50)
                },
            ]
        );
        // expired entries vanish
        let later = intervals(list.iter().map(|(n, e)| (*n, *e)), false, 60);
        assert_eq!(later.len(), 3);
    }

    #[test]
    fn whole_space_and_families_are_separate() {
        let all4 = net("0.0.0.0/0");
        let all6 = net("::/0");
        let list = [(&all4, None), (&all6, None)];
        assert_eq!(
            intervals(list.iter().map(|(n, e)| (*n, *e)), false, 0),
            vec![Interval {
                start: 0,
                end: u128::from(u32::MAX),
                expires: None
            }]
        );
        assert_eq!(
            intervals(list.iter().map(|(n, e)| (*n, *e)), true, 0),
            vec![Interval {
                start: 0,
                end: u128::MAX,
                expires: None
            }]
        );
    }

    #[test]
    fn ports_parse_ranges_and_refuse_junk() {
        assert_eq!(
            format_ports(&parse_ports("TCP_IN", "25, 22,30000:35000,22").expect("ok")),
            "22,25,30000:35000"
        );
        assert!(parse_ports("TCP_IN", "0").is_err());
        assert!(parse_ports("TCP_IN", "70000").is_err());
        assert!(parse_ports("TCP_IN", "5:3").is_err());
    }

    #[test]
    fn overlapping_port_ranges_merge_instead_of_reaching_the_kernel_twice() {
        let merged = |s: &str| format_ports(&parse_ports("TCP_IN", s).expect("ok"));
        assert_eq!(merged("22,20:25"), "20:25");
        assert_eq!(merged("40000:40010,40005"), "40000:40010");
        assert_eq!(merged("1:10,5:20,20:30,22"), "1:30");
        assert_eq!(merged("22,22,22"), "22");
        // touching ranges are not overlapping: the kernel takes them, the list stays readable
        assert_eq!(merged("20,21,22,25"), "20,21,22,25");
        assert_eq!(merged("20:25,26"), "20:25,26");
        assert_eq!(merged("65535,1:65535"), "1:65535");
    }

    #[test]
    fn removing_a_port_inside_a_range_splits_the_range() {
        let list = parse_ports("TCP_IN", "20:25,80,8000:8010").expect("ok");
        let cut = |s: &str| {
            subtract_ports(&list, PortRange::parse(s).expect("port")).map(|v| format_ports(&v))
        };
        assert_eq!(cut("22").as_deref(), Some("20:21,23:25,80,8000:8010"));
        assert_eq!(cut("20").as_deref(), Some("21:25,80,8000:8010"));
        assert_eq!(cut("80").as_deref(), Some("20:25,8000:8010"));
        assert_eq!(cut("8005:9000").as_deref(), Some("20:25,80,8000:8004"));
        assert_eq!(cut("1:65535").as_deref(), Some(""));
        assert_eq!(cut("81"), None);
        assert!(covers(&list, 8003) && !covers(&list, 79));
    }

    #[test]
    fn settings_report_every_bad_key() {
        let mut m = default_settings(&[2083]);
        m.insert("TCP_IN".into(), "x".into());
        m.insert("TESTING".into(), "maybe".into());
        m.insert("NOPE".into(), "1".into());
        let errs = Settings::parse(&m).expect_err("invalid");
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(
            keys.contains(&"TCP_IN") && keys.contains(&"TESTING") && keys.contains(&"NOPE"),
            "{keys:?}"
        );
        let ok = Settings::parse(&default_settings(&[2083, 2525])).expect("defaults valid");
        assert_eq!(format_ports(ok.ports("TCP_IN")), "22,2083,2525");
        assert!(ok.testing);
        // CSF's defaults for the protections: all off, PS_PORTS from port 0 read as 1:65535
        assert!(ok.synflood.is_none() && ok.connlimit.is_empty() && ok.portflood.is_empty());
        assert_eq!(ok.lfd.ps.interval, 0);
        assert!(ok.lfd.ps.icmp && format_ports(&ok.lfd.ps.ports) == "1:65535");
        assert_eq!(ok.lfd.ct.limit, 0);
    }
}
