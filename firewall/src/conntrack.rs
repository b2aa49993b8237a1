//! The kernel's connection tracking table, read with a ctnetlink dump (`IPCTNL_MSG_CT_GET`
//! under `NFNL_SUBSYS_CTNETLINK`) on a socket of its own: `/csf/conntrack/status` counts it by
//! protocol, TCP state and family, `/csf/conntrack/connections` pages through it with filters.
//! A dump is parsed as it streams in; only the counts and the page asked for are kept, so a
//! table of a million entries costs its parse time, not its size in memory.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::msg;
use crate::netlink::{Netlink, NetlinkError};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;

const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;

/// One direction of a connection: addresses and ports (0 for protocols without ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// One tracked connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub proto: u8,
    pub orig: Tuple,
    pub reply: Option<Tuple>,
    /// TCP's state (`ESTABLISHED`, `TIME_WAIT`, ...); `None` for other protocols.
    pub tcp_state: Option<&'static str>,
    /// Seconds until the kernel forgets it.
    pub timeout: u32,
    pub assured: bool,
    pub seen_reply: bool,
    pub mark: u32,
    /// Packets and bytes of the original direction (only with `nf_conntrack_acct` on).
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

impl Conn {
    pub fn protocol(&self) -> &'static str {
        proto_name(self.proto)
    }
}

/// The name `conntrack -L` gives an IP protocol.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        2 => "igmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => "other",
    }
}

/// TCP conntrack states (`enum tcp_conntrack`), as `conntrack -L` prints them.
pub const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn get<'a>(attrs: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, d)| *d)
}

fn tuple(data: &[u8]) -> Option<(Tuple, u8)> {
    let attrs = msg::attrs(data);
    let ip = msg::attrs(get(&attrs, CTA_TUPLE_IP)?);
    let (src, dst) = if let (Some(s), Some(d)) = (get(&ip, CTA_IP_V4_SRC), get(&ip, CTA_IP_V4_DST))
    {
        let s: [u8; 4] = s.get(..4)?.try_into().ok()?;
        let d: [u8; 4] = d.get(..4)?.try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
    } else {
        let s: [u8; 16] = get(&ip, CTA_IP_V6_SRC)?.get(..16)?.try_into().ok()?;
        let d: [u8; 16] = get(&ip, CTA_IP_V6_DST)?.get(..16)?.try_into().ok()?;
        (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
    };
    let proto = msg::attrs(get(&attrs, CTA_TUPLE_PROTO)?);
    let num = *get(&proto, CTA_PROTO_NUM)?.first()?;
    let sport = get(&proto, CTA_PROTO_SRC_PORT).and_then(be16).unwrap_or(0);
    let dport = get(&proto, CTA_PROTO_DST_PORT).and_then(be16).unwrap_or(0);
    Some((
        Tuple {
            src,
            dst,
            sport,
            dport,
        },
        num,
    ))
}

/// One `IPCTNL_MSG_CT_NEW` answer of a dump (its payload after the netlink header).
pub fn parse(payload: &[u8]) -> Option<Conn> {
    // nfgenmsg: family, version, res_id
    let attrs = msg::attrs(payload.get(4..)?);
    let (orig, proto) = tuple(get(&attrs, CTA_TUPLE_ORIG)?)?;
    let reply = get(&attrs, CTA_TUPLE_REPLY).and_then(tuple).map(|(t, _)| t);
    let status = get(&attrs, CTA_STATUS).and_then(be32).unwrap_or(0);
    let tcp_state = get(&attrs, CTA_PROTOINFO)
        .map(msg::attrs)
        .and_then(|p| get(&p, CTA_PROTOINFO_TCP).map(msg::attrs))
        .and_then(|t| get(&t, CTA_PROTOINFO_TCP_STATE).and_then(|s| s.first().copied()))
        .map(|s| TCP_STATES.get(usize::from(s)).copied().unwrap_or("NONE"));
    let counters = get(&attrs, CTA_COUNTERS_ORIG).map(msg::attrs);
    let counter = |ty| counters.as_ref().and_then(|c| get(c, ty)).and_then(be64);
    Some(Conn {
        proto,
        orig,
        reply,
        tcp_state: if proto == 6 {
            Some(tcp_state.unwrap_or("NONE"))
        } else {
            None
        },
        timeout: get(&attrs, CTA_TIMEOUT).and_then(be32).unwrap_or(0),
        assured: status & IPS_ASSURED != 0,
        seen_reply: status & IPS_SEEN_REPLY != 0,
        mark: get(&attrs, CTA_MARK).and_then(be32).unwrap_or(0),
        packets: counter(CTA_COUNTERS_PACKETS),
        bytes: counter(CTA_COUNTERS_BYTES),
    })
}

/// Dumps the table of this network namespace, handing every connection to `each`.
pub fn dump(mut each: impl FnMut(Conn)) -> Result<u64, NetlinkError> {
    let mut nl = Netlink::open()?;
    let mut skipped = 0u64;
    nl.dump(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        0, // AF_UNSPEC: both families
        |payload| {
            match parse(payload) {
                Some(c) => each(c),
                None => skipped += 1,
            }
            true
        },
    )?;
    Ok(skipped)
}

/// What `/csf/conntrack/status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub by_protocol: BTreeMap<&'static str, u64>,
    pub tcp_states: BTreeMap<&'static str, u64>,
    pub assured: u64,
    /// `nf_conntrack_max` and `nf_conntrack_count` from /proc, when readable.
    pub max: Option<u64>,
    pub kernel_count: Option<u64>,
    /// Dump messages that could not be read.
    pub unparsed: u64,
}

fn proc_u64(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Counts the table.
pub fn summary() -> Result<Summary, NetlinkError> {
    let mut s = Summary::default();
    let unparsed = dump(|c| {
        s.entries += 1;
        if c.orig.src.is_ipv4() {
            s.ipv4 += 1;
        } else {
            s.ipv6 += 1;
        }
        *s.by_protocol.entry(c.protocol()).or_insert(0) += 1;
        if let Some(st) = c.tcp_state {
            *s.tcp_states.entry(st).or_insert(0) += 1;
        }
        if c.assured {
            s.assured += 1;
        }
    })?;
    s.unparsed = unparsed;
    s.max = proc_u64("nf_conntrack_max");
    s.kernel_count = proc_u64("nf_conntrack_count");
    Ok(s)
}

/// Which connections `/csf/conntrack/connections` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Either end of either direction.
    pub ip: Option<IpAddr>,
    /// Either port of the original direction.
    pub port: Option<u16>,
    /// A TCP state (upper case), or `ASSURED` / `UNREPLIED`.
    pub state: Option<String>,
    pub protocol: Option<u8>,
}

impl Filter {
    pub fn matches(&self, c: &Conn) -> bool {
        if let Some(ip) = self.ip {
            let ip = ip.to_canonical();
            let ends = [Some(c.orig), c.reply]
                .into_iter()
                .flatten()
                .flat_map(|t| [t.src, t.dst]);
            if !ends.into_iter().any(|a| a.to_canonical() == ip) {
                return false;
            }
        }
        if let Some(p) = self.port
            && c.orig.sport != p
            && c.orig.dport != p
        {
            return false;
        }
        if let Some(p) = self.protocol
            && c.proto != p
        {
            return false;
        }
        match self.state.as_deref() {
            None => true,
            Some("ASSURED") => c.assured,
            Some("UNREPLIED") => !c.seen_reply,
            Some(s) => c.tcp_state == Some(s),
        }
    }
}

/// The connections matching `f`: those from `offset` on, at most `limit`, and how many matched.
pub fn list(f: &Filter, offset: u64, limit: usize) -> Result<(Vec<Conn>, u64), NetlinkError> {
    let mut page = Vec::with_capacity(limit.min(1000));
    let mut matched = 0u64;
    dump(|c| {
        if f.matches(&c) {
            if matched >= offset && page.len() < limit {
                page.push(c);
            }
            matched += 1;
        }
    })?;
    Ok((page, matched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + data.len()).unwrap();
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nested(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(ty | 0x8000, &parts.concat())
    }

    fn tuple_attr(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        nested(
            ty,
            &[
                nested(
                    CTA_TUPLE_IP,
                    &[attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)],
                ),
                nested(
                    CTA_TUPLE_PROTO,
                    &[
                        attr(CTA_PROTO_NUM, &[6]),
                        attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
                        attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    #[test]
    fn a_dumped_tcp_connection_is_read() {
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(tuple_attr(
            CTA_TUPLE_ORIG,
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            40000,
            993,
        ));
        payload.extend(tuple_attr(
            CTA_TUPLE_REPLY,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            993,
            40000,
        ));
        payload.extend(attr(
            CTA_STATUS,
            &(IPS_ASSURED | IPS_SEEN_REPLY).to_be_bytes(),
        ));
        payload.extend(attr(CTA_TIMEOUT, &431_999u32.to_be_bytes()));
        payload.extend(nested(
            CTA_PROTOINFO,
            &[nested(
                CTA_PROTOINFO_TCP,
                &[attr(CTA_PROTOINFO_TCP_STATE, &[3])],
            )],
        ));
        let c = parse(&payload).expect("parsed");
        assert_eq!(c.protocol(), "tcp");
        assert_eq!(c.orig.src, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((c.orig.sport, c.orig.dport), (40000, 993));
        assert_eq!(c.tcp_state, Some("ESTABLISHED"));
        assert!(c.assured && c.seen_reply);
        assert_eq!(c.timeout, 431_999);
        let f = Filter {
            ip: "10.0.0.1".parse().ok(),
            port: Some(993),
            state: Some("ESTABLISHED".into()),
            protocol: Some(6),
        };
        assert!(f.matches(&c));
        assert!(
            !Filter {
                port: Some(25),
                ..Filter::default()
            }
            .matches(&c)
        );
    }

    #[test]
    fn truncated_or_odd_answers_are_skipped_not_trusted() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[2, 0, 0, 0]), None);
        // a length that runs past the buffer
        assert_eq!(parse(&[2, 0, 0, 0, 200, 0, 1, 0, 1, 2]), None);
        // an unknown TCP state number reads as NONE rather than out of bounds
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(tuple_attr(CTA_TUPLE_ORIG, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2));
        payload.extend(nested(
            CTA_PROTOINFO,
            &[nested(
                CTA_PROTOINFO_TCP,
                &[attr(CTA_PROTOINFO_TCP_STATE, &[200])],
            )],
        ));
        assert_eq!(parse(&payload).unwrap().tcp_state, Some("NONE"));
    }
}
