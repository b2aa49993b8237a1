//! Pure planning: the desired ruleset -> the nf_tables batch that makes the kernel hold it.
//! Nothing here does I/O; `netlink.rs` sends what this builds.

use ipnet::IpNet;

use crate::blocklist::parse::Ranges;
use crate::model::{Interval, PortRange, Settings, bounds};
use crate::msg::{Batch, MsgType, NFPROTO_INET, NLM_F_CREATE, Writer};

// attribute numbers from linux/netfilter/nf_tables.h
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;

const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_LOCAL_OUT: u32 = 3;

const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_META_IIFTYPE: u32 = 8;
const NFT_META_OIFTYPE: u32 = 9;
const NFT_META_IIFNAME: u32 = 6;
const ARPHRD_LOOPBACK: u16 = 772;

const NFT_PAYLOAD_NETWORK: u32 = 1;
const NFT_PAYLOAD_TRANSPORT: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_GTE: u32 = 5;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_NEQ: u32 = 1;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

const CT_ESTABLISHED: u32 = 1 << 1;
const CT_RELATED: u32 = 1 << 2;
const CT_NEW: u32 = 1 << 3;
const NFT_SET_EVAL: u32 = 0x20;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFT_DYNSET_OP_ADD: u32 = 0;
const NFT_DYNSET_OP_UPDATE: u32 = 1;
/// Elements a protection set holds at most (sources tracked at once per port and family).
pub const PROTECT_SET_SIZE: u32 = 65_536;

const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;

/// Room left in one message for set elements (an attribute holds at most 64 KiB).
const ELEMENTS_PER_MSG_BYTES: usize = 60_000;

/// A kernel set of one address list: black or white, IPv4 or IPv6, single hosts (a hash set:
/// O(1) per change at any size) or networks (an interval set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListSet {
    pub black: bool,
    pub v6: bool,
    pub cidr: bool,
}

impl ListSet {
    /// Whitelist sets first: the rules are emitted in this order.
    pub const ALL: [ListSet; 8] = [
        ListSet {
            black: false,
            v6: false,
            cidr: false,
        },
        ListSet {
            black: false,
            v6: false,
            cidr: true,
        },
        ListSet {
            black: false,
            v6: true,
            cidr: false,
        },
        ListSet {
            black: false,
            v6: true,
            cidr: true,
        },
        ListSet {
            black: true,
            v6: false,
            cidr: false,
        },
        ListSet {
            black: true,
            v6: false,
            cidr: true,
        },
        ListSet {
            black: true,
            v6: true,
            cidr: false,
        },
        ListSet {
            black: true,
            v6: true,
            cidr: true,
        },
    ];

    /// The set that holds `net` in the black (`true`) or white list.
    pub fn of(black: bool, net: &IpNet) -> ListSet {
        ListSet {
            black,
            v6: net.addr().is_ipv6(),
            cidr: net.prefix_len() < net.max_prefix_len(),
        }
    }

    pub fn name(self) -> &'static str {
        match (self.black, self.v6, self.cidr) {
            (false, false, false) => "whitelist4",
            (false, false, true) => "whitelist4_net",
            (false, true, false) => "whitelist6",
            (false, true, true) => "whitelist6_net",
            (true, false, false) => "blacklist4",
            (true, false, true) => "blacklist4_net",
            (true, true, false) => "blacklist6",
            (true, true, true) => "blacklist6_net",
        }
    }

    fn id(self) -> u32 {
        1 + u32::from(self.black) * 4 + u32::from(self.v6) * 2 + u32::from(self.cidr)
    }
}

/// A port set: (csf key, set name, set id).
const PORT_SETS: [(&str, &str, u32); 8] = [
    ("TCP_IN", "tcp_in", 11),
    ("UDP_IN", "udp_in", 12),
    ("TCP6_IN", "tcp6_in", 13),
    ("UDP6_IN", "udp6_in", 14),
    ("TCP_OUT", "tcp_out", 15),
    ("UDP_OUT", "udp_out", 16),
    ("TCP6_OUT", "tcp6_out", 17),
    ("UDP6_OUT", "udp6_out", 18),
];

/// Which chain a basic rule lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Reject,
}

/// A basic firewall rule in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub direction: Direction,
    pub proto: Proto,
    pub port: Option<PortRange>,
    /// INPUT: the source address; OUTPUT: the remote (destination) address.
    pub peer: Option<IpNet>,
    pub action: Action,
}

/// Everything the kernel table should hold.
#[derive(Debug)]
pub struct Desired<'a> {
    pub table: &'a str,
    /// Chain policy: drop (restrictive) or accept (TESTING lifted it).
    pub policy_drop: bool,
    pub settings: &'a Settings,
    /// Elements of every list set (hosts as one-address intervals).
    pub lists: &'a std::collections::BTreeMap<ListSet, Vec<Interval>>,
    /// Every loaded list (blocklists and country lists) and its ranges: one set pair each.
    pub blocklists: &'a [(&'a str, &'a Ranges)],
    /// Lists whose addresses are dropped (blocklists, CC_DENY countries).
    pub drop_lists: &'a [&'a str],
    /// Lists whose addresses are accepted like the whitelist (CC_ALLOW countries).
    pub accept_lists: &'a [&'a str],
    /// CC_ALLOW_FILTER: incoming traffic from outside these ranges is dropped.
    pub allow_filter: Option<&'a Ranges>,
    /// LF_BOGON: the interface on which bogon sources are dropped.
    pub bogon_interface: Option<&'a str>,
    pub rules: &'a [Rule],
}

/// Builds the whole table in one batch: create-if-missing, delete, create, then every set,
/// chain, element and rule. The kernel swaps the old table for the new one atomically.
/// Returns the batch and the number of rules the table will hold.
pub fn full(batch: &mut Batch, d: &Desired<'_>, now: i64) -> usize {
    table_msg(batch, MsgType::NewTable, d.table);
    table_msg(batch, MsgType::DelTable, d.table);
    table_msg(batch, MsgType::NewTable, d.table);
    for set in ListSet::ALL {
        let (ty, len) = if set.v6 {
            (TYPE_IP6ADDR, 16)
        } else {
            (TYPE_IPADDR, 4)
        };
        let flags = if set.cidr {
            NFT_SET_INTERVAL | NFT_SET_TIMEOUT
        } else {
            NFT_SET_TIMEOUT
        };
        new_set(batch, d.table, set.name(), set.id(), flags, ty, len);
    }
    for (_, name, id) in PORT_SETS {
        new_set(
            batch,
            d.table,
            name,
            id,
            NFT_SET_INTERVAL,
            TYPE_INET_SERVICE,
            2,
        );
    }
    for (i, (name, ranges)) in (0u32..).zip(d.blocklists) {
        let (n4, n6) = blocklist_sets(name);
        range_set_pair(batch, d.table, (&n4, &n6), 100 + 2 * i, ranges);
    }
    if let Some(ranges) = d.allow_filter {
        range_set_pair(batch, d.table, ("ccfilter4", "ccfilter6"), 90, ranges);
    }
    if d.bogon_interface.is_some() {
        range_set_pair(batch, d.table, ("bogon4", "bogon6"), 92, &bogon_ranges());
    }
    let policy = if d.policy_drop { NF_DROP } else { NF_ACCEPT };
    base_chain(batch, d.table, "input", NF_INET_LOCAL_IN, policy);
    base_chain(batch, d.table, "output", NF_INET_LOCAL_OUT, policy);
    plain_chain(batch, d.table, "rules_in");
    plain_chain(batch, d.table, "rules_out");
    counter_obj(batch, d.table, SYNFLOOD_COUNTER);
    let mut id = 1000;
    for c in &d.settings.connlimit {
        for (v6, name) in [false, true].into_iter().zip(connlimit_sets(c.port)) {
            dyn_set(batch, d.table, &name, id, v6, None);
            id += 1;
        }
    }
    for p in &d.settings.portflood {
        for (v6, (meter, block)) in [false, true].into_iter().zip(portflood_sets(p)) {
            let window = u64::from(p.seconds) * 1000;
            dyn_set(batch, d.table, &meter, id, v6, Some(window * 2));
            dyn_set(batch, d.table, &block, id + 1, v6, Some(window));
            id += 2;
        }
    }
    let ps = &d.settings.lfd.ps;
    if ps.interval > 0 {
        new_set(
            batch,
            d.table,
            "ps_ports",
            990,
            NFT_SET_INTERVAL,
            TYPE_INET_SERVICE,
            2,
        );
        let ivs = port_intervals(&ps.ports);
        port_elements(batch, d.table, "ps_ports", &ivs);
        let window = u64::try_from(ps.interval).unwrap_or(1) * 1000;
        dyn_set(batch, d.table, "pslog4", 991, false, Some(window * 2));
        dyn_set(batch, d.table, "pslog6", 992, true, Some(window * 2));
    }
    for (set, ivs) in d.lists {
        list_elements(batch, d.table, *set, ivs, true, now);
    }
    for (key, name, _) in PORT_SETS {
        let ivs = port_intervals(d.settings.ports(key));
        port_elements(batch, d.table, name, &ivs);
    }
    let mut count = 0;
    for r in d.rules {
        count += basic_rule(batch, d.table, r);
    }
    count += skeleton(batch, d);
    count
}

/// What decides the table's sets (which exist, their keys and timeouts): while it stays the same
/// a change can rebuild the chains alone and keep every set and its contents.
pub fn shape(d: &Desired<'_>) -> String {
    let s = d.settings;
    format!(
        "{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
        s.connlimit.iter().map(|c| c.port).collect::<Vec<_>>(),
        s.portflood
            .iter()
            .map(|p| (p.port, p.udp, p.seconds))
            .collect::<Vec<_>>(),
        (s.lfd.ps.interval, format_ps(&s.lfd.ps.ports)),
        d.allow_filter.is_some(),
        d.bogon_interface,
        d.blocklists.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        d.drop_lists,
        d.accept_lists,
        s.cc_allow_filter,
    )
}

fn format_ps(p: &[PortRange]) -> String {
    crate::model::format_ports(p)
}

/// Rebuilds the chains alone, in one transaction: every rule is flushed and added again, the
/// policy and the port sets set anew, and every other set (lists, blocklists, the protections'
/// dynamic sets with what the packet path put in them) is kept as it is. Only for a table whose
/// [`shape`] is unchanged. Returns the number of rules.
pub fn chains(batch: &mut Batch, d: &Desired<'_>) -> usize {
    for chain in ["input", "output", "rules_in", "rules_out"] {
        batch.msg(MsgType::DelRule, 0, NFPROTO_INET);
        batch.w.str(NFTA_RULE_TABLE, d.table);
        batch.w.str(NFTA_RULE_CHAIN, chain);
        batch.end_msg();
    }
    policy(batch, d.table, d.policy_drop);
    replace_ports(batch, d.table, d.settings);
    let mut count = 0;
    for r in d.rules {
        count += basic_rule(batch, d.table, r);
    }
    count += skeleton(batch, d);
    count
}

/// The built-in bogon ranges, merged.
pub fn bogon_ranges() -> Ranges {
    let mut p = crate::blocklist::parse::Parser::new(0);
    for net in crate::model::BOGONS_V4
        .iter()
        .chain(crate::model::BOGONS_V6.iter())
    {
        p.feed(net.as_bytes());
        p.feed(b"\n");
    }
    p.finish().0
}

/// The kernel set names of a blocklist.
pub fn blocklist_sets(name: &str) -> (String, String) {
    (format!("bl_{name}4"), format!("bl_{name}6"))
}

/// Replaces a blocklist's contents in one transaction: both sets flushed and refilled, so no
/// packet ever sees the list empty or half-loaded.
pub fn swap_blocklist(batch: &mut Batch, table: &str, name: &str, ranges: &Ranges) {
    let (n4, n6) = blocklist_sets(name);
    for set in [&n4, &n6] {
        batch.msg(MsgType::DelSetElem, 0, NFPROTO_INET);
        batch.w.str(NFTA_SET_ELEM_LIST_TABLE, table);
        batch.w.str(NFTA_SET_ELEM_LIST_SET, set);
        batch.end_msg();
    }
    fill_ranges(batch, table, (&n4, &n6), ranges);
}

/// Creates an IPv4 and an IPv6 interval set and fills them with `ranges`.
fn range_set_pair(batch: &mut Batch, table: &str, names: (&str, &str), id: u32, ranges: &Ranges) {
    new_set(batch, table, names.0, id, NFT_SET_INTERVAL, TYPE_IPADDR, 4);
    new_set(
        batch,
        table,
        names.1,
        id + 1,
        NFT_SET_INTERVAL,
        TYPE_IP6ADDR,
        16,
    );
    fill_ranges(batch, table, names, ranges);
}

fn fill_ranges(batch: &mut Batch, table: &str, names: (&str, &str), ranges: &Ranges) {
    let v4 = ranges
        .v4
        .iter()
        .map(|(a, b)| (u128::from(*a), u128::from(*b), None));
    elements(
        batch,
        MsgType::NewSetElem,
        table,
        names.0,
        v4,
        4,
        u128::from(u32::MAX),
    );
    let v6 = ranges.v6.iter().map(|(a, b)| (*a, *b, None));
    elements(
        batch,
        MsgType::NewSetElem,
        table,
        names.1,
        v6,
        16,
        u128::MAX,
    );
}

/// Deletes the table (if it exists) in one batch.
pub fn remove(batch: &mut Batch, table: &str) {
    table_msg(batch, MsgType::NewTable, table);
    table_msg(batch, MsgType::DelTable, table);
}

/// Adds or deletes list elements.
pub fn list_elements(
    batch: &mut Batch,
    table: &str,
    set: ListSet,
    ivs: &[Interval],
    add: bool,
    now: i64,
) {
    let ty = if add {
        MsgType::NewSetElem
    } else {
        MsgType::DelSetElem
    };
    let (len, top) = if set.v6 {
        (16, u128::MAX)
    } else {
        (4, u128::from(u32::MAX))
    };
    // A hash set holds single keys: no interval-end elements (top = 0 turns them off).
    let top = if set.cidr { top } else { 0 };
    let items = ivs.iter().filter_map(|iv| match iv.expires {
        // the kernel counts the timeout from now; an element already expired is left out
        Some(e) if add => {
            let left = u64::try_from(e.saturating_sub(now))
                .ok()
                .filter(|l| *l > 0)?;
            Some((iv.start, iv.end, Some(left.saturating_mul(1000))))
        }
        _ => Some((iv.start, iv.end, None)),
    });
    elements(batch, ty, table, set.name(), items, len, top);
}

/// Empties a set (DELSETELEM without elements).
pub fn flush_set(batch: &mut Batch, table: &str, set: ListSet) {
    batch.msg(MsgType::DelSetElem, 0, NFPROTO_INET);
    batch.w.str(NFTA_SET_ELEM_LIST_TABLE, table);
    batch.w.str(NFTA_SET_ELEM_LIST_SET, set.name());
    batch.end_msg();
}

/// The port sets: (csf key, set name).
pub fn port_set_names() -> impl Iterator<Item = (&'static str, &'static str)> {
    PORT_SETS.into_iter().map(|(k, n, _)| (k, n))
}

/// Replaces the contents of the port sets (`TCP_IN`, ...) and nothing else: a port change
/// leaves the chains, the lists and every blocklist's sets as they are.
pub fn replace_ports(batch: &mut Batch, table: &str, settings: &Settings) {
    for (key, name, _) in PORT_SETS {
        batch.msg(MsgType::DelSetElem, 0, NFPROTO_INET);
        batch.w.str(NFTA_SET_ELEM_LIST_TABLE, table);
        batch.w.str(NFTA_SET_ELEM_LIST_SET, name);
        batch.end_msg();
        let ivs = port_intervals(settings.ports(key));
        port_elements(batch, table, name, &ivs);
    }
}

/// Sets both base chains' policy.
pub fn policy(batch: &mut Batch, table: &str, drop: bool) {
    let policy = if drop { NF_DROP } else { NF_ACCEPT };
    for (name, hook) in [("input", NF_INET_LOCAL_IN), ("output", NF_INET_LOCAL_OUT)] {
        base_chain(batch, table, name, hook, policy);
    }
}

fn table_msg(batch: &mut Batch, ty: MsgType, table: &str) {
    batch.msg(
        ty,
        if matches!(ty, MsgType::NewTable) {
            NLM_F_CREATE
        } else {
            0
        },
        NFPROTO_INET,
    );
    batch.w.str(NFTA_TABLE_NAME, table);
    batch.end_msg();
}

fn new_set(
    batch: &mut Batch,
    table: &str,
    name: &str,
    id: u32,
    flags: u32,
    key_type: u32,
    key_len: u32,
) {
    batch.msg(MsgType::NewSet, NLM_F_CREATE, NFPROTO_INET);
    batch.w.str(NFTA_SET_TABLE, table);
    batch.w.str(NFTA_SET_NAME, name);
    batch.w.u32(NFTA_SET_FLAGS, flags);
    batch.w.u32(NFTA_SET_KEY_TYPE, key_type);
    batch.w.u32(NFTA_SET_KEY_LEN, key_len);
    batch.w.u32(NFTA_SET_ID, id);
    batch.end_msg();
}

fn base_chain(batch: &mut Batch, table: &str, name: &str, hook: u32, policy: u32) {
    batch.msg(MsgType::NewChain, NLM_F_CREATE, NFPROTO_INET);
    batch.w.str(NFTA_CHAIN_TABLE, table);
    batch.w.str(NFTA_CHAIN_NAME, name);
    batch.w.nest(NFTA_CHAIN_HOOK);
    batch.w.u32(NFTA_HOOK_HOOKNUM, hook);
    batch.w.u32(NFTA_HOOK_PRIORITY, 0);
    batch.w.unnest();
    batch.w.u32(NFTA_CHAIN_POLICY, policy);
    batch.w.str(NFTA_CHAIN_TYPE, "filter");
    batch.end_msg();
}

/// The NFLOG group port-scan candidates are logged to (lfd reads it).
pub const PORTSCAN_GROUP: u16 = 7331;
/// Bytes of each logged packet copied: the IP and transport headers.
pub const PORTSCAN_SNAPLEN: u32 = 80;

/// A `limit` expression's attributes: `r.count` packets per `r.per` seconds, bursts of
/// `r.burst`; `over` matches packets past the rate (`NFT_LIMIT_F_INV`), else those within it.
fn limit_attrs(w: &mut Writer, r: &crate::model::Rate, over: bool) {
    w.attr(1, &r.count.to_be_bytes()); // NFTA_LIMIT_RATE
    w.attr(2, &r.per.to_be_bytes()); // NFTA_LIMIT_UNIT (seconds)
    w.attr(3, &r.burst.to_be_bytes()); // NFTA_LIMIT_BURST
    w.attr(4, &0u32.to_be_bytes()); // NFTA_LIMIT_TYPE: packets
    w.attr(5, &u32::from(over).to_be_bytes()); // NFTA_LIMIT_FLAGS
}

/// Port-scan detection's rules, last in the input chain: what reaches them was accepted by
/// nothing. New TCP connections and UDP packets to `PS_PORTS` (and ICMP echo requests with
/// `ICMP`) go to NFLOG, at most 4 × `PS_LIMIT` per source per `PS_INTERVAL` (a meter in
/// a dynamic set): lfd counts distinct ports, which the kernel can't.
fn portscan(batch: &mut Batch, d: &Desired<'_>) -> usize {
    let ps = &d.settings.lfd.ps;
    if ps.interval <= 0 {
        return 0;
    }
    let k = u64::from(ps.limit.max(1)).saturating_mul(4);
    let rate = crate::model::Rate {
        count: k,
        per: u64::try_from(ps.interval).unwrap_or(1),
        burst: u32::try_from(k).unwrap_or(u32::MAX),
    };
    // under the rate: logged
    let meter = |w: &mut Writer| limit_attrs(w, &rate, false);
    let mut n = 0;
    for (v6, set) in [(false, "pslog4"), (true, "pslog6")] {
        n += rule(batch, d.table, "input", |e| {
            e.tcp_syn()
                .dport()
                .lookup("ps_ports")
                .nfproto(v6)
                .addr(v6, true)
                .dynset(set, NFT_DYNSET_OP_UPDATE, None, Some(("limit", &meter)))
                .log_group(PORTSCAN_GROUP, PORTSCAN_SNAPLEN);
        });
        n += rule(batch, d.table, "input", |e| {
            e.l4proto(IPPROTO_UDP)
                .dport()
                .lookup("ps_ports")
                .nfproto(v6)
                .addr(v6, true)
                .dynset(set, NFT_DYNSET_OP_UPDATE, None, Some(("limit", &meter)))
                .log_group(PORTSCAN_GROUP, PORTSCAN_SNAPLEN);
        });
        if ps.icmp {
            let (proto, echo) = if v6 {
                (IPPROTO_ICMPV6, 128u8)
            } else {
                (IPPROTO_ICMP, 8u8)
            };
            n += rule(batch, d.table, "input", |e| {
                e.nfproto(v6)
                    .l4proto(proto)
                    .payload(NFT_PAYLOAD_TRANSPORT, 0, 1)
                    .cmp(NFT_CMP_EQ, &[echo])
                    .addr(v6, true)
                    .dynset(set, NFT_DYNSET_OP_UPDATE, None, Some(("limit", &meter)))
                    .log_group(PORTSCAN_GROUP, PORTSCAN_SNAPLEN);
            });
        }
    }
    n
}

/// CONNLIMIT's sets for `port`: (IPv4, IPv6) sources with their connection counts.
pub fn connlimit_sets(port: u16) -> [String; 2] {
    [format!("cl4_{port}"), format!("cl6_{port}")]
}

/// PORTFLOOD's sets for an entry, per family (IPv4, IPv6): (the meter, the blocked sources).
pub fn portflood_sets(p: &crate::model::PortFlood) -> [(String, String); 2] {
    let proto = if p.udp { "udp" } else { "tcp" };
    [4, 6].map(|f| {
        (
            format!("pfm{f}_{proto}{}", p.port),
            format!("pfb{f}_{proto}{}", p.port),
        )
    })
}

/// A set the packet path adds to (`flags dynamic`), of source addresses, with a default
/// timeout when `timeout_ms` is given.
fn dyn_set(batch: &mut Batch, table: &str, name: &str, id: u32, v6: bool, timeout_ms: Option<u64>) {
    batch.msg(MsgType::NewSet, NLM_F_CREATE, NFPROTO_INET);
    batch.w.str(NFTA_SET_TABLE, table);
    batch.w.str(NFTA_SET_NAME, name);
    let flags = NFT_SET_EVAL
        | if timeout_ms.is_some() {
            NFT_SET_TIMEOUT
        } else {
            0
        };
    batch.w.u32(NFTA_SET_FLAGS, flags);
    batch.w.u32(
        NFTA_SET_KEY_TYPE,
        if v6 { TYPE_IP6ADDR } else { TYPE_IPADDR },
    );
    batch.w.u32(NFTA_SET_KEY_LEN, if v6 { 16 } else { 4 });
    batch.w.u32(NFTA_SET_ID, id);
    if let Some(ms) = timeout_ms {
        batch.w.u64(NFTA_SET_TIMEOUT, ms);
    }
    batch.w.nest(NFTA_SET_DESC);
    batch.w.u32(NFTA_SET_DESC_SIZE, PROTECT_SET_SIZE);
    batch.w.unnest();
    batch.end_msg();
}

/// The named counter SYNFLOOD's drops are counted in (read back for `/csf/synflood/status`).
pub const SYNFLOOD_COUNTER: &str = "synflood_drops";
/// `NFT_OBJECT_COUNTER`.
pub const OBJ_COUNTER: u32 = 1;

fn counter_obj(batch: &mut Batch, table: &str, name: &str) {
    batch.msg(MsgType::NewObj, NLM_F_CREATE, NFPROTO_INET);
    batch.w.str(1, table); // NFTA_OBJ_TABLE
    batch.w.str(2, name); // NFTA_OBJ_NAME
    batch.w.attr(3, &OBJ_COUNTER.to_be_bytes()); // NFTA_OBJ_TYPE
    batch.w.nest(4); // NFTA_OBJ_DATA
    batch.w.attr(1, &0u64.to_be_bytes()); // NFTA_COUNTER_BYTES
    batch.w.attr(2, &0u64.to_be_bytes()); // NFTA_COUNTER_PACKETS
    batch.w.unnest();
    batch.end_msg();
}

fn plain_chain(batch: &mut Batch, table: &str, name: &str) {
    batch.msg(MsgType::NewChain, NLM_F_CREATE, NFPROTO_INET);
    batch.w.str(NFTA_CHAIN_TABLE, table);
    batch.w.str(NFTA_CHAIN_NAME, name);
    batch.end_msg();
}

fn key_bytes(v: u128, len: usize) -> Vec<u8> {
    v.to_be_bytes()[16 - len..].to_vec()
}

/// Port ranges as the intervals of a port set.
fn port_intervals(ports: &[PortRange]) -> Vec<Interval> {
    ports
        .iter()
        .map(|p| Interval {
            start: u128::from(p.lo),
            end: u128::from(p.hi),
            expires: None,
        })
        .collect()
}

fn port_elements(batch: &mut Batch, table: &str, set: &str, ivs: &[Interval]) {
    let items = ivs.iter().map(|iv| (iv.start, iv.end, None));
    elements(
        batch,
        MsgType::NewSetElem,
        table,
        set,
        items,
        2,
        u128::from(u16::MAX),
    );
}

/// Set elements `(start, end, timeout ms)`, split across messages of bounded size. For an
/// interval set each range also gets its interval-end element at `end + 1` (none past `top`);
/// `top = 0` means a hash set of single keys.
fn elements(
    batch: &mut Batch,
    ty: MsgType,
    table: &str,
    set: &str,
    items: impl Iterator<Item = (u128, u128, Option<u64>)>,
    len: usize,
    top: u128,
) {
    let add = matches!(ty, MsgType::NewSetElem);
    let mut open = false;
    let mut mark = 0;
    for (start, end, timeout_ms) in items {
        if open && batch.w.since(mark) > ELEMENTS_PER_MSG_BYTES {
            batch.w.unnest();
            batch.end_msg();
            open = false;
        }
        if !open {
            batch.msg(ty, if add { NLM_F_CREATE } else { 0 }, NFPROTO_INET);
            batch.w.str(NFTA_SET_ELEM_LIST_TABLE, table);
            batch.w.str(NFTA_SET_ELEM_LIST_SET, set);
            batch.w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            mark = batch.w.len();
            open = true;
        }
        element(&mut batch.w, &key_bytes(start, len), false, timeout_ms);
        if top > 0 && end < top {
            element(&mut batch.w, &key_bytes(end + 1, len), true, None);
        }
    }
    if open {
        batch.w.unnest();
        batch.end_msg();
    }
}

fn element(w: &mut Writer, key: &[u8], end: bool, timeout_ms: Option<u64>) {
    w.nest(NFTA_LIST_ELEM);
    w.nest(NFTA_SET_ELEM_KEY);
    w.attr(NFTA_DATA_VALUE, key);
    w.unnest();
    if end {
        w.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    }
    if let Some(ms) = timeout_ms {
        w.u64(NFTA_SET_ELEM_TIMEOUT, ms);
    }
    w.unnest();
}

/// Expressions of one rule, appended to a message being built.
struct Exprs<'w> {
    w: &'w mut Writer,
}

impl Exprs<'_> {
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Writer)) -> &mut Self {
        self.w.nest(NFTA_LIST_ELEM);
        self.w.str(NFTA_EXPR_NAME, name);
        self.w.nest(NFTA_EXPR_DATA);
        body(self.w);
        self.w.unnest();
        self.w.unnest();
        self
    }

    fn meta(&mut self, key: u32) -> &mut Self {
        self.expr("meta", |w| {
            w.u32(2, key); // NFTA_META_KEY
            w.u32(1, 1); // NFTA_META_DREG = reg 1
        })
    }

    fn cmp(&mut self, op: u32, data: &[u8]) -> &mut Self {
        self.expr("cmp", |w| {
            w.u32(1, 1); // NFTA_CMP_SREG
            w.u32(2, op); // NFTA_CMP_OP
            w.nest(3); // NFTA_CMP_DATA
            w.attr(NFTA_DATA_VALUE, data);
            w.unnest();
        })
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.expr("payload", |w| {
            w.u32(1, 1); // NFTA_PAYLOAD_DREG
            w.u32(2, base);
            w.u32(3, offset);
            w.u32(4, len);
        })
    }

    fn bitwise(&mut self, mask: &[u8]) -> &mut Self {
        let zero = vec![0u8; mask.len()];
        self.expr("bitwise", |w| {
            w.u32(1, 1); // SREG
            w.u32(2, 1); // DREG
            w.u32(3, u32::try_from(mask.len()).unwrap_or(0)); // LEN
            w.nest(4); // MASK
            w.attr(NFTA_DATA_VALUE, mask);
            w.unnest();
            w.nest(5); // XOR
            w.attr(NFTA_DATA_VALUE, &zero);
            w.unnest();
        })
    }

    fn lookup(&mut self, set: &str) -> &mut Self {
        self.expr("lookup", |w| {
            w.str(1, set); // NFTA_LOOKUP_SET
            w.u32(2, 1); // NFTA_LOOKUP_SREG
        })
    }

    /// Matches when the key is *not* in the set.
    fn lookup_inverted(&mut self, set: &str) -> &mut Self {
        self.expr("lookup", |w| {
            w.str(1, set);
            w.u32(2, 1);
            w.u32(5, 1); // NFTA_LOOKUP_FLAGS = NFT_LOOKUP_F_INV
        })
    }

    fn counter(&mut self) -> &mut Self {
        self.expr("counter", |w| {
            w.u64(1, 0);
            w.u64(2, 0);
        })
    }

    fn limit_per_second(&mut self, rate: u32) -> &mut Self {
        self.expr("limit", |w| {
            w.u64(1, u64::from(rate)); // RATE
            w.u64(2, 1); // UNIT: seconds
            w.u32(3, rate.max(5)); // BURST
            w.u32(4, 0); // TYPE: packets
            w.u32(5, 0); // FLAGS
        })
    }

    /// Matches packets *over* `r` (`limit rate over`): the kernel's token bucket, `count`
    /// per `per` seconds with bursts of `burst`.
    fn limit_over(&mut self, r: &crate::model::Rate) -> &mut Self {
        self.expr("limit", |w| limit_attrs(w, r, true))
    }

    /// Adds or updates the key in register 1 in `set` (`op`), with `timeout_ms`, and with the
    /// element's expression `inner` (`name` and its data) when given: the rule goes on only
    /// when that expression matches.
    fn dynset(
        &mut self,
        set: &str,
        op: u32,
        timeout_ms: Option<u64>,
        inner: Option<(&str, &dyn Fn(&mut Writer))>,
    ) -> &mut Self {
        self.expr("dynset", |w| {
            w.str(1, set); // NFTA_DYNSET_SET_NAME
            w.u32(3, op); // NFTA_DYNSET_OP
            w.u32(4, 1); // NFTA_DYNSET_SREG_KEY: reg 1
            if let Some(ms) = timeout_ms {
                w.u64(6, ms); // NFTA_DYNSET_TIMEOUT
            }
            if let Some((name, body)) = inner {
                w.nest(7); // NFTA_DYNSET_EXPR
                w.str(1, name); // NFTA_EXPR_NAME
                w.nest(2); // NFTA_EXPR_DATA
                body(w);
                w.unnest();
                w.unnest();
            }
        })
    }

    fn log_group(&mut self, group: u16, snaplen: u32) -> &mut Self {
        self.expr("log", |w| {
            w.attr(1, &group.to_be_bytes()); // NFTA_LOG_GROUP
            w.u32(3, snaplen); // NFTA_LOG_SNAPLEN
            w.attr(4, &0u16.to_be_bytes()); // NFTA_LOG_QTHRESHOLD
        })
    }

    fn ct_new(&mut self) -> &mut Self {
        self.expr("ct", |w| {
            w.u32(1, 1); // DREG
            w.u32(2, 0); // NFT_CT_STATE
        })
        .bitwise(&CT_NEW.to_ne_bytes())
        .cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes())
    }

    /// Counts in the named counter object `name`.
    fn objref_counter(&mut self, name: &str) -> &mut Self {
        self.expr("objref", |w| {
            w.attr(1, &OBJ_COUNTER.to_be_bytes()); // NFTA_OBJREF_IMM_TYPE
            w.str(2, name); // NFTA_OBJREF_IMM_NAME
        })
    }

    /// A TCP packet with SYN set and ACK, RST and FIN clear: a new connection's first packet.
    fn tcp_syn(&mut self) -> &mut Self {
        self.l4proto(IPPROTO_TCP)
            .payload(NFT_PAYLOAD_TRANSPORT, 13, 1)
            .bitwise(&[0x17])
            .cmp(NFT_CMP_EQ, &[0x02])
    }

    fn ct_established(&mut self) -> &mut Self {
        self.expr("ct", |w| {
            w.u32(1, 1); // DREG
            w.u32(2, 0); // NFT_CT_STATE
        })
        .bitwise(&(CT_ESTABLISHED | CT_RELATED).to_ne_bytes())
        .cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes())
    }

    fn nfproto(&mut self, v6: bool) -> &mut Self {
        self.meta(NFT_META_NFPROTO)
            .cmp(NFT_CMP_EQ, &[if v6 { 10 } else { 2 }])
    }

    fn l4proto(&mut self, p: u8) -> &mut Self {
        self.meta(NFT_META_L4PROTO).cmp(NFT_CMP_EQ, &[p])
    }

    /// Loads the source (`src`) or destination address of the IP header.
    fn addr(&mut self, v6: bool, src: bool) -> &mut Self {
        let (off, len) = match (v6, src) {
            (false, true) => (12, 4),
            (false, false) => (16, 4),
            (true, true) => (8, 16),
            (true, false) => (24, 16),
        };
        self.payload(NFT_PAYLOAD_NETWORK, off, len)
    }

    fn dport(&mut self) -> &mut Self {
        self.payload(NFT_PAYLOAD_TRANSPORT, 2, 2)
    }

    fn verdict(&mut self, code: u32) -> &mut Self {
        self.expr("immediate", |w| {
            w.u32(1, 0); // DREG: verdict register
            w.nest(2); // NFTA_IMMEDIATE_DATA
            w.nest(NFTA_DATA_VERDICT);
            w.u32(NFTA_VERDICT_CODE, code);
            w.unnest();
            w.unnest();
        })
    }

    fn jump(&mut self, chain: &str) -> &mut Self {
        self.expr("immediate", |w| {
            w.u32(1, 0);
            w.nest(2);
            w.nest(NFTA_DATA_VERDICT);
            w.attr(NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
            w.str(NFTA_VERDICT_CHAIN, chain);
            w.unnest();
            w.unnest();
        })
    }

    fn reject(&mut self, tcp: bool) -> &mut Self {
        self.expr("reject", |w| {
            if tcp {
                w.u32(1, 1); // NFT_REJECT_TCP_RST
            } else {
                w.u32(1, 2); // NFT_REJECT_ICMPX_UNREACH
                w.attr(2, &[3]); // admin prohibited
            }
        })
    }
}

fn rule(batch: &mut Batch, table: &str, chain: &str, body: impl FnOnce(&mut Exprs<'_>)) -> usize {
    batch.msg(
        MsgType::NewRule,
        NLM_F_CREATE | 0x800, /* NLM_F_APPEND */
        NFPROTO_INET,
    );
    batch.w.str(NFTA_RULE_TABLE, table);
    batch.w.str(NFTA_RULE_CHAIN, chain);
    batch.w.nest(NFTA_RULE_EXPRESSIONS);
    body(&mut Exprs { w: &mut batch.w });
    batch.w.unnest();
    batch.end_msg();
    1
}

/// The fixed rules of both base chains, in the documented order.
fn skeleton(batch: &mut Batch, d: &Desired<'_>) -> usize {
    let t = d.table;
    let mut n = 0;
    for (chain, dir) in [("input", Direction::In), ("output", Direction::Out)] {
        let inbound = dir == Direction::In;
        let lo = if inbound {
            NFT_META_IIFTYPE
        } else {
            NFT_META_OIFTYPE
        };
        n += rule(batch, t, chain, |e| {
            e.meta(lo)
                .cmp(NFT_CMP_EQ, &ARPHRD_LOOPBACK.to_ne_bytes())
                .verdict(NF_ACCEPT);
        });
        n += rule(batch, t, chain, |e| {
            e.ct_established().verdict(NF_ACCEPT);
        });
        // `<family> <saddr|daddr> @set counter <verdict>`
        let match_set = |batch: &mut Batch, set: &str, v6: bool, verdict: u32| {
            rule(batch, t, chain, |e| {
                e.nfproto(v6)
                    .addr(v6, inbound)
                    .lookup(set)
                    .counter()
                    .verdict(verdict);
            })
        };
        for set in ListSet::ALL.into_iter().filter(|s| !s.black) {
            n += match_set(batch, set.name(), set.v6, NF_ACCEPT);
        }
        for name in d.accept_lists {
            let (n4, n6) = blocklist_sets(name);
            n += match_set(batch, &n4, false, NF_ACCEPT) + match_set(batch, &n6, true, NF_ACCEPT);
        }
        if let (true, Some(iface)) = (inbound, d.bogon_interface) {
            let mut name = [0u8; 16];
            for (dst, src) in name.iter_mut().zip(iface.bytes().take(15)) {
                *dst = src;
            }
            for (set, v6) in [("bogon4", false), ("bogon6", true)] {
                n += rule(batch, t, chain, |e| {
                    e.meta(NFT_META_IIFNAME)
                        .cmp(NFT_CMP_EQ, &name)
                        .nfproto(v6)
                        .addr(v6, true)
                        .lookup(set)
                        .counter()
                        .verdict(NF_DROP);
                });
            }
        }
        for set in ListSet::ALL.into_iter().filter(|s| s.black) {
            n += match_set(batch, set.name(), set.v6, NF_DROP);
        }
        if let (true, Some(_)) = (inbound, d.allow_filter) {
            for (set, v6) in [("ccfilter4", false), ("ccfilter6", true)] {
                n += rule(batch, t, chain, |e| {
                    e.nfproto(v6);
                    if v6 {
                        // neighbour discovery comes from link-local sources no country list has
                        e.meta(NFT_META_L4PROTO).cmp(NFT_CMP_NEQ, &[IPPROTO_ICMPV6]);
                    }
                    e.addr(v6, true)
                        .lookup_inverted(set)
                        .counter()
                        .verdict(NF_DROP);
                });
            }
        }
        for name in d.drop_lists {
            let (n4, n6) = blocklist_sets(name);
            n += match_set(batch, &n4, false, NF_DROP) + match_set(batch, &n6, true, NF_DROP);
        }
        // SYNFLOOD: past the rate, new connections are dropped (the lists above were applied
        // first: whitelisted and accepted-country sources are never limited)
        if let (true, Some(rate)) = (inbound, d.settings.synflood.as_ref()) {
            n += rule(batch, t, chain, |e| {
                e.tcp_syn()
                    .limit_over(rate)
                    .objref_counter(SYNFLOOD_COUNTER)
                    .verdict(NF_DROP);
            });
        }
        if inbound {
            n += protections(batch, d);
        }
        n += rule(batch, t, chain, |e| {
            e.jump(if inbound { "rules_in" } else { "rules_out" });
        });
        let sets: [(&str, bool, u8); 4] = if inbound {
            [
                ("tcp_in", false, IPPROTO_TCP),
                ("udp_in", false, IPPROTO_UDP),
                ("tcp6_in", true, IPPROTO_TCP),
                ("udp6_in", true, IPPROTO_UDP),
            ]
        } else {
            [
                ("tcp_out", false, IPPROTO_TCP),
                ("udp_out", false, IPPROTO_UDP),
                ("tcp6_out", true, IPPROTO_TCP),
                ("udp6_out", true, IPPROTO_UDP),
            ]
        };
        for (set, v6, proto) in sets {
            n += rule(batch, t, chain, |e| {
                e.nfproto(v6)
                    .l4proto(proto)
                    .dport()
                    .lookup(set)
                    .verdict(NF_ACCEPT);
            });
        }
        let icmp_on = if inbound {
            d.settings.icmp_in
        } else {
            d.settings.icmp_out
        };
        if icmp_on {
            let rate = if inbound { d.settings.icmp_in_rate } else { 0 };
            n += rule(batch, t, chain, |e| {
                e.nfproto(false).l4proto(IPPROTO_ICMP);
                if rate > 0 {
                    e.limit_per_second(rate);
                }
                e.verdict(NF_ACCEPT);
            });
        }
        // ICMPv6 carries neighbour discovery: IPv6 stops working without it.
        n += rule(batch, t, chain, |e| {
            e.nfproto(true).l4proto(IPPROTO_ICMPV6).verdict(NF_ACCEPT);
        });
        if inbound {
            n += portscan(batch, d);
        }
    }
    n
}

/// CONNLIMIT and PORTFLOOD: rules whose state is in dynamic sets the packet path updates (a
/// rule per port and family, never one per source).
fn protections(batch: &mut Batch, d: &Desired<'_>) -> usize {
    let t = d.table;
    let mut n = 0;
    for c in &d.settings.connlimit {
        for (v6, set) in [false, true].into_iter().zip(connlimit_sets(c.port)) {
            let count = |w: &mut Writer| {
                w.u32(1, c.limit); // NFTA_CONNLIMIT_COUNT
                w.u32(2, 1); // NFTA_CONNLIMIT_FLAGS: NFT_CONNLIMIT_F_INV ("over")
            };
            n += rule(batch, t, "input", |e| {
                e.nfproto(v6)
                    .l4proto(IPPROTO_TCP)
                    .dport()
                    .cmp(NFT_CMP_EQ, &c.port.to_be_bytes())
                    .ct_new()
                    .addr(v6, true)
                    .dynset(&set, NFT_DYNSET_OP_ADD, None, Some(("connlimit", &count)))
                    .reject(true);
            });
        }
    }
    for p in &d.settings.portflood {
        let proto = if p.udp { IPPROTO_UDP } else { IPPROTO_TCP };
        let window = u64::from(p.seconds) * 1000;
        for (v6, (meter, block)) in [false, true].into_iter().zip(portflood_sets(p)) {
            // blocked: each new attempt keeps the block on for another window
            n += rule(batch, t, "input", |e| {
                e.nfproto(v6)
                    .l4proto(proto)
                    .dport()
                    .cmp(NFT_CMP_EQ, &p.port.to_be_bytes())
                    .ct_new()
                    .addr(v6, true)
                    .lookup(&block)
                    .addr(v6, true)
                    .dynset(&block, NFT_DYNSET_OP_UPDATE, Some(window), None)
                    .counter()
                    .verdict(NF_DROP);
            });
            // more than `hits` in the window: blocked
            let rate = crate::model::Rate {
                count: u64::from(p.hits),
                per: u64::from(p.seconds),
                burst: p.hits,
            };
            let limit = |w: &mut Writer| limit_attrs(w, &rate, true);
            n += rule(batch, t, "input", |e| {
                e.nfproto(v6)
                    .l4proto(proto)
                    .dport()
                    .cmp(NFT_CMP_EQ, &p.port.to_be_bytes())
                    .ct_new()
                    .addr(v6, true)
                    .dynset(&meter, NFT_DYNSET_OP_UPDATE, None, Some(("limit", &limit)))
                    .addr(v6, true)
                    .dynset(&block, NFT_DYNSET_OP_ADD, Some(window), None)
                    .counter()
                    .verdict(NF_DROP);
            });
        }
    }
    n
}

/// One basic rule; `icmp` and `all` without an address may need one kernel rule per family.
fn basic_rule(batch: &mut Batch, table: &str, r: &Rule) -> usize {
    let chain = if r.direction == Direction::In {
        "rules_in"
    } else {
        "rules_out"
    };
    let families: Vec<bool> = match (r.peer, r.proto) {
        (Some(net), _) => vec![net.addr().is_ipv6()],
        (None, Proto::Icmp) => vec![false, true],
        (None, _) => vec![],
    };
    let emit = |batch: &mut Batch, family: Option<bool>| {
        rule(batch, table, chain, |e| {
            if let Some(v6) = family {
                e.nfproto(v6);
            }
            if let (Some(net), Some(v6)) = (r.peer, family) {
                let (start, _) = bounds(&net);
                let len = if v6 { 16 } else { 4 };
                e.addr(v6, r.direction == Direction::In);
                if net.prefix_len() < net.max_prefix_len() {
                    e.bitwise(&key_bytes(mask(net.prefix_len(), v6), len));
                }
                e.cmp(NFT_CMP_EQ, &key_bytes(start, len));
            }
            match r.proto {
                Proto::Tcp => {
                    e.l4proto(IPPROTO_TCP);
                }
                Proto::Udp => {
                    e.l4proto(IPPROTO_UDP);
                }
                Proto::Icmp => {
                    e.l4proto(if family == Some(true) {
                        IPPROTO_ICMPV6
                    } else {
                        IPPROTO_ICMP
                    });
                }
                Proto::All => {}
            }
            if let Some(p) = r.port {
                e.dport();
                if p.lo == p.hi {
                    e.cmp(NFT_CMP_EQ, &p.lo.to_be_bytes());
                } else {
                    e.cmp(NFT_CMP_GTE, &p.lo.to_be_bytes())
                        .cmp(NFT_CMP_LTE, &p.hi.to_be_bytes());
                }
            }
            e.counter();
            match r.action {
                Action::Accept => e.verdict(NF_ACCEPT),
                Action::Drop => e.verdict(NF_DROP),
                Action::Reject => e.reject(r.proto == Proto::Tcp),
            };
        })
    };
    if families.is_empty() {
        emit(batch, None)
    } else {
        families.into_iter().map(|f| emit(batch, Some(f))).sum()
    }
}

fn mask(prefix: u8, v6: bool) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let ones = u128::MAX << (128 - u32::from(prefix));
    if v6 { ones } else { ones >> 96 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask(24, false), 0xffff_ff00);
        assert_eq!(mask(8, false), 0xff00_0000);
        assert_eq!(mask(64, true), u128::MAX << 64);
    }
}
