//! The only kernel I/O of the firewall: one NETLINK_NETFILTER socket that sends a [`Batch`] in a
//! single `sendmsg` (so the kernel applies it atomically) and collects every acknowledgement.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

use crate::msg::{
    self, Batch, MsgType, NFPROTO_INET, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
};

/// A failed netlink exchange.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel rejected the change ({}): {what}", errno_name(*.errno))]
    Rejected { errno: i32, what: String },
    #[error("no answer from the kernel within {0:?}")]
    Timeout(Duration),
}

impl NetlinkError {
    /// True when the process lacks CAP_NET_ADMIN (or nf_tables is unavailable).
    pub fn is_permission(&self) -> bool {
        match self {
            NetlinkError::Rejected { errno, .. } => *errno == 1 || *errno == 13,
            NetlinkError::Io(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
            NetlinkError::Timeout(_) => false,
        }
    }

    /// True when the kernel gave no verdict (timeout, socket error): the batch may or may not
    /// have been applied.
    pub fn is_unknown(&self) -> bool {
        !matches!(self, NetlinkError::Rejected { .. })
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Rejected { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        1 => "EPERM",
        2 => "ENOENT",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        22 => "EINVAL",
        28 => "ENOSPC",
        39 => "ENOTEMPTY",
        90 => "EMSGSIZE",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        105 => "ENOBUFS",
        _ => return format!("errno {e}"),
    };
    format!("{name}, errno {e}")
}

const RECV_TIMEOUT: Duration = Duration::from_secs(10);
const RECV_BUF: usize = 1 << 20;

/// A netlink socket to nf_tables.
pub struct Netlink {
    /// A batch went out without a verdict coming back (timeout, socket error).
    unknown: bool,
    fd: OwnedFd,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

impl Netlink {
    pub fn open() -> Result<Netlink, NetlinkError> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(rustix::net::netlink::NETFILTER),
        )
        .map_err(std::io::Error::from)?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0)).map_err(std::io::Error::from)?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        )
        .map_err(std::io::Error::from)?;
        // Acknowledgements of a large batch arrive together; FORCE needs CAP_NET_ADMIN.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20)
            .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 8 << 20));
        let seq = u32::try_from(wispd_store::unix_now() & 0xffff_ffff).unwrap_or(1);
        Ok(Netlink {
            unknown: false,
            fd,
            seq,
            sndbuf: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// The next sequence number to start a batch with.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Sends `batch` as one transaction and waits until the kernel has answered every message.
    /// A `Rejected` error means the kernel applied none of it; after `Timeout` or `Io` the outcome
    /// is unknown.
    pub fn commit(&mut self, batch: Batch) -> Result<(), NetlinkError> {
        let result = self.exchange(batch);
        if result.as_ref().is_err_and(NetlinkError::is_unknown) {
            self.unknown = true;
        }
        result
    }

    /// Whether a batch since the last call went without a verdict.
    pub fn take_unknown(&mut self) -> bool {
        std::mem::take(&mut self.unknown)
    }

    fn exchange(&mut self, batch: Batch) -> Result<(), NetlinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.overflowed() {
            // sent, the kernel would read a wrapped length as something else: refuse it whole
            return Err(NetlinkError::Rejected {
                errno: 90,
                what: "a netlink attribute longer than 65,535 bytes was built; nothing was sent"
                    .into(),
            });
        }
        let (bytes, acked, next) = batch.finish();
        self.seq = next;
        let first = acked.first().copied().unwrap_or(0).wrapping_sub(1);
        let last = acked.last().copied().unwrap_or(0);
        // The whole batch must fit one skb: size the send buffer to it.
        let need = bytes.len() + (64 << 10);
        if need > self.sndbuf {
            rustix::net::sockopt::set_socket_send_buffer_size_force(&self.fd, need)
                .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(&self.fd, need))
                .map_err(std::io::Error::from)?;
            self.sndbuf = need;
        }
        rustix::net::send(&self.fd, &bytes, SendFlags::empty()).map_err(std::io::Error::from)?;
        let mut first_error: Option<(i32, u32)> = None;
        loop {
            let n = self.recv()?;
            let mut done = false;
            for reply in msg::replies(&self.buf[..n]) {
                // Only answers to this batch count (a late reply to an earlier, timed-out
                // exchange must not fail this one).
                let ours = reply.seq.wrapping_sub(first) <= last.wrapping_sub(first);
                if reply.ty != NLMSG_ERROR || !ours {
                    continue;
                }
                let code = msg::error_code(reply.payload).unwrap_or(0);
                if code != 0 && first_error.is_none() {
                    first_error = Some((-code, reply.seq));
                }
                // An error on BATCH_BEGIN (e.g. EPERM) is the only answer the batch gets.
                if reply.seq == last || (code != 0 && reply.seq == first) {
                    done = true;
                }
            }
            if done {
                break;
            }
        }
        match first_error {
            None => Ok(()),
            Some((errno, seq)) => {
                let what = match acked.iter().position(|s| *s == seq) {
                    Some(i) => format!("message {} of {}", i + 1, acked.len()),
                    None => "batch".to_string(),
                };
                Err(NetlinkError::Rejected { errno, what })
            }
        }
    }

    fn recv(&mut self) -> Result<usize, NetlinkError> {
        match rustix::net::recv(&self.fd, &mut self.buf, RecvFlags::empty()) {
            Ok((n, _)) => Ok(n),
            Err(e) if e == rustix::io::Errno::AGAIN => Err(NetlinkError::Timeout(RECV_TIMEOUT)),
            Err(e) => Err(NetlinkError::Io(e.into())),
        }
    }

    /// Sends one request (`ty`, `flags`, the nfgenmsg `family` and `res_id`, the attributes
    /// `attrs` writes) and hands each reply to it to `each` until `each` gives a result.
    fn request<R>(
        &mut self,
        ty: u16,
        flags: u16,
        (family, res_id): (u8, u16),
        attrs: impl FnOnce(&mut msg::Writer),
        mut each: impl FnMut(&msg::Reply<'_>) -> Option<Result<R, NetlinkError>>,
    ) -> Result<R, NetlinkError> {
        let seq = self.bump();
        let mut w = msg::Writer::with_capacity(96);
        w.begin(ty, NLM_F_REQUEST | flags, seq, family, res_id);
        attrs(&mut w);
        w.end();
        rustix::net::send(&self.fd, &w.into_bytes(), SendFlags::empty())
            .map_err(std::io::Error::from)?;
        loop {
            let n = self.recv()?;
            for reply in msg::replies(&self.buf[..n]) {
                if reply.seq != seq {
                    continue;
                }
                if let Some(r) = each(&reply) {
                    return r;
                }
            }
        }
    }

    /// An nf_tables request about `table` (and `name`, when given) in the inet family.
    fn nft_request<R>(
        &mut self,
        ty: MsgType,
        flags: u16,
        names: &[(u16, &str)],
        each: impl FnMut(&msg::Reply<'_>) -> Option<Result<R, NetlinkError>>,
    ) -> Result<R, NetlinkError> {
        self.request(
            (msg::NFNL_SUBSYS_NFTABLES << 8) | ty as u16,
            flags,
            (NFPROTO_INET, 0),
            |w| {
                for (attr, name) in names {
                    w.str(*attr, name);
                }
            },
            each,
        )
    }

    /// How many rules the table has, or `None` when it does not exist.
    pub fn rule_count(&mut self, table: &str) -> Result<Option<usize>, NetlinkError> {
        let mut count = 0usize;
        // NFTA_RULE_TABLE
        self.nft_request(
            MsgType::GetRule,
            NLM_F_DUMP,
            &[(1, table)],
            |reply| match reply.ty {
                NLMSG_DONE => Some(Ok(Some(count))),
                NLMSG_ERROR => match errno(reply) {
                    0 => None,
                    2 => Some(Ok(None)),
                    e => Some(Err(rejected(e, "rule dump"))),
                },
                _ => {
                    count += 1;
                    None
                }
            },
        )
    }

    /// A socket bound to NFLOG `group` (nfnetlink_log), copying the first `snaplen` bytes of
    /// each logged packet. Fails with `EBUSY` when another process has the group.
    pub fn nflog(group: u16, snaplen: u32) -> Result<Netlink, NetlinkError> {
        const NFNL_SUBSYS_ULOG: u16 = 4;
        const NFULNL_MSG_CONFIG: u16 = 1;
        const NFULA_CFG_CMD: u16 = 1;
        const NFULA_CFG_MODE: u16 = 2;
        const NFULNL_CFG_CMD_BIND: u8 = 1;
        const NFULNL_COPY_PACKET: u8 = 2;
        let mut nl = Netlink::open()?;
        let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
        let acked = |reply: &msg::Reply<'_>| {
            (reply.ty == NLMSG_ERROR).then(|| match errno(reply) {
                0 => Ok(()),
                e => Err(rejected(e, "NFLOG configuration")),
            })
        };
        nl.request(
            ty,
            msg::NLM_F_ACK,
            (0, group),
            |w| w.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]),
            acked,
        )?;
        let mut mode = snaplen.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        nl.request(
            ty,
            msg::NLM_F_ACK,
            (0, group),
            |w| w.attr(NFULA_CFG_MODE, &mode),
            acked,
        )?;
        Ok(nl)
    }

    /// Waits for logged packets (up to the socket's receive timeout) and hands each one's
    /// family and bytes (from the network header on) to `each`. Returns after one datagram, or
    /// with `Timeout` when none came.
    pub fn nflog_packets(&mut self, mut each: impl FnMut(u8, &[u8])) -> Result<(), NetlinkError> {
        const NFULA_PAYLOAD: u16 = 9;
        let n = self.recv()?;
        for reply in msg::replies(&self.buf[..n]) {
            if reply.ty != (4 << 8) {
                continue; // NFULNL_MSG_PACKET of NFNL_SUBSYS_ULOG
            }
            let Some(&family) = reply.payload.first() else {
                continue;
            };
            for (ty, data) in msg::attrs(reply.payload.get(4..).unwrap_or(&[])) {
                if ty == NFULA_PAYLOAD {
                    each(family, data);
                }
            }
        }
        Ok(())
    }

    /// Whether `set` in `table` holds any element (`None`: there is no such set). Reads only
    /// the start of the dump: use a socket of its own and drop it afterwards.
    pub fn has_elements(&mut self, table: &str, set: &str) -> Result<Option<bool>, NetlinkError> {
        // NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET
        self.nft_request(
            MsgType::GetSetElem,
            NLM_F_DUMP,
            &[(1, table), (2, set)],
            |reply| match reply.ty {
                NLMSG_DONE => Some(Ok(Some(false))),
                NLMSG_ERROR => match errno(reply) {
                    0 => Some(Ok(Some(false))),
                    2 => Some(Ok(None)),
                    e => Some(Err(rejected(e, "set element dump"))),
                },
                _ => element_lists(reply)
                    .any(|list| !msg::attrs(list).is_empty())
                    .then_some(Ok(Some(true))),
            },
        )
    }

    /// The elements of `set` in `table`: (key bytes, milliseconds until it expires). `None`
    /// when the set does not exist.
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Option<Vec<(Vec<u8>, Option<u64>)>>, NetlinkError> {
        let mut out = Vec::new();
        self.nft_request(
            MsgType::GetSetElem,
            NLM_F_DUMP,
            &[(1, table), (2, set)],
            |reply| {
                match reply.ty {
                    NLMSG_DONE => return Some(Ok(true)),
                    NLMSG_ERROR => {
                        return match errno(reply) {
                            0 => None,
                            2 => Some(Ok(false)),
                            e => Some(Err(rejected(e, "set element dump"))),
                        };
                    }
                    _ => {}
                }
                for list in element_lists(reply) {
                    for (_, elem) in msg::attrs(list) {
                        let e = msg::attrs(elem);
                        let key = attr(&e, 1) // NFTA_SET_ELEM_KEY
                        .and_then(|k| attr(&msg::attrs(k), 1).map(<[u8]>::to_vec)); // NFTA_DATA_VALUE
                        let expires = attr(&e, 5).and_then(be64); // NFTA_SET_ELEM_EXPIRATION
                        if let Some(k) = key {
                            out.push((k, expires));
                        }
                    }
                }
                None
            },
        )
        .map(|found| found.then_some(out))
    }

    /// The packets and bytes of the named counter object, or `None` when it does not exist.
    pub fn counter(&mut self, table: &str, name: &str) -> Result<Option<(u64, u64)>, NetlinkError> {
        let counter_type = crate::plan::OBJ_COUNTER.to_be_bytes();
        self.request(
            (msg::NFNL_SUBSYS_NFTABLES << 8) | MsgType::GetObj as u16,
            0,
            (NFPROTO_INET, 0),
            |w| {
                w.str(1, table); // NFTA_OBJ_TABLE
                w.str(2, name); // NFTA_OBJ_NAME
                w.attr(3, &counter_type); // NFTA_OBJ_TYPE
            },
            |reply| {
                if reply.ty == NLMSG_ERROR {
                    return Some(match errno(reply) {
                        0 | 2 => Ok(None),
                        e => Err(rejected(e, "counter read")),
                    });
                }
                let attrs = msg::attrs(reply.payload.get(4..).unwrap_or(&[]));
                let data = attr(&attrs, 4).map(msg::attrs).unwrap_or_default(); // NFTA_OBJ_DATA
                // NFTA_COUNTER_PACKETS, NFTA_COUNTER_BYTES
                let (packets, bytes) =
                    (attr(&data, 2).and_then(be64), attr(&data, 1).and_then(be64));
                Some(Ok(Some((packets.unwrap_or(0), bytes.unwrap_or(0)))))
            },
        )
    }

    /// Sends a dump request (`ty`, with the nfgenmsg `family` and no attributes) and hands each
    /// answer's payload (the nfgenmsg header first) to `each` as it arrives, until the kernel
    /// says the dump is done. Nothing is kept between datagrams.
    pub fn dump(
        &mut self,
        ty: u16,
        family: u8,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), NetlinkError> {
        let mut going = true;
        self.request(
            ty,
            NLM_F_DUMP,
            (family, 0),
            |_| {},
            |reply| match reply.ty {
                NLMSG_DONE => Some(Ok(())),
                NLMSG_ERROR => match errno(reply) {
                    0 => None,
                    e => Some(Err(rejected(e, "dump"))),
                },
                _ => {
                    if going {
                        going = each(reply.payload);
                    }
                    None
                }
            },
        )
    }

    fn bump(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }
}

/// The errno an NLMSG_ERROR reply carries (0: an acknowledgement).
fn errno(reply: &msg::Reply<'_>) -> i32 {
    -msg::error_code(reply.payload).unwrap_or(0)
}

fn rejected(errno: i32, what: &str) -> NetlinkError {
    NetlinkError::Rejected {
        errno,
        what: what.into(),
    }
}

fn attr<'a>(attrs: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, d)| *d)
}

fn be64(v: &[u8]) -> Option<u64> {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// The NFTA_SET_ELEM_LIST_ELEMENTS of a set element dump answer.
fn element_lists<'a>(reply: &msg::Reply<'a>) -> impl Iterator<Item = &'a [u8]> {
    msg::attrs(reply.payload.get(4..).unwrap_or(&[]))
        .into_iter()
        .filter(|(t, _)| *t == 3)
        .map(|(_, list)| list)
}
