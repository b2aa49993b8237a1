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

    /// How many rules the table has, or `None` when it does not exist.
    pub fn rule_count(&mut self, table: &str) -> Result<Option<usize>, NetlinkError> {
        let seq = self.bump();
        let mut w = msg::Writer::with_capacity(64);
        w.begin(
            (msg::NFNL_SUBSYS_NFTABLES << 8) | MsgType::GetRule as u16,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
        );
        w.str(1, table); // NFTA_RULE_TABLE
        w.end();
        rustix::net::send(&self.fd, &w.into_bytes(), SendFlags::empty())
            .map_err(std::io::Error::from)?;
        let mut count = 0usize;
        loop {
            let n = self.recv()?;
            for reply in msg::replies(&self.buf[..n]) {
                if reply.seq != seq {
                    continue;
                }
                match reply.ty {
                    NLMSG_DONE => return Ok(Some(count)),
                    NLMSG_ERROR => {
                        let code = msg::error_code(reply.payload).unwrap_or(0);
                        if code == -2 {
                            return Ok(None);
                        }
                        if code != 0 {
                            return Err(NetlinkError::Rejected {
                                errno: -code,
                                what: "rule dump".into(),
                            });
                        }
                    }
                    _ => count += 1,
                }
            }
        }
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
        let ask =
            |nl: &mut Netlink, build: &dyn Fn(&mut msg::Writer)| -> Result<(), NetlinkError> {
                let seq = nl.bump();
                let mut w = msg::Writer::with_capacity(64);
                w.begin(ty, NLM_F_REQUEST | msg::NLM_F_ACK, seq, 0, group);
                build(&mut w);
                w.end();
                rustix::net::send(&nl.fd, &w.into_bytes(), SendFlags::empty())
                    .map_err(std::io::Error::from)?;
                loop {
                    let n = nl.recv()?;
                    for reply in msg::replies(&nl.buf[..n]) {
                        if reply.seq == seq && reply.ty == NLMSG_ERROR {
                            return match msg::error_code(reply.payload).unwrap_or(0) {
                                0 => Ok(()),
                                c => Err(NetlinkError::Rejected {
                                    errno: -c,
                                    what: "NFLOG configuration".into(),
                                }),
                            };
                        }
                    }
                }
            };
        ask(&mut nl, &|w| w.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]))?;
        ask(&mut nl, &|w| {
            let mut mode = snaplen.to_be_bytes().to_vec();
            mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
            w.attr(NFULA_CFG_MODE, &mode);
        })?;
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
        let seq = self.bump();
        let mut w = msg::Writer::with_capacity(64);
        w.begin(
            (msg::NFNL_SUBSYS_NFTABLES << 8) | MsgType::GetSetElem as u16,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
        );
        w.str(1, table);
        w.str(2, set);
        w.end();
        rustix::net::send(&self.fd, &w.into_bytes(), SendFlags::empty())
            .map_err(std::io::Error::from)?;
        loop {
            let n = self.recv()?;
            for reply in msg::replies(&self.buf[..n]) {
                if reply.seq != seq {
                    continue;
                }
                match reply.ty {
                    NLMSG_DONE => return Ok(Some(false)),
                    NLMSG_ERROR => {
                        return match msg::error_code(reply.payload).unwrap_or(0) {
                            0 => Ok(Some(false)),
                            -2 => Ok(None),
                            c => Err(NetlinkError::Rejected {
                                errno: -c,
                                what: "set element dump".into(),
                            }),
                        };
                    }
                    _ => {
                        let attrs = msg::attrs(reply.payload.get(4..).unwrap_or(&[]));
                        if attrs
                            .iter()
                            .any(|(t, list)| *t == 3 && !msg::attrs(list).is_empty())
                        {
                            return Ok(Some(true));
                        }
                    }
                }
            }
        }
    }

    /// The elements of `set` in `table`: (key bytes, milliseconds until it expires). `None`
    /// when the set does not exist.
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Option<Vec<(Vec<u8>, Option<u64>)>>, NetlinkError> {
        let mut out = Vec::new();
        let r = self.dump_with(
            (msg::NFNL_SUBSYS_NFTABLES << 8) | MsgType::GetSetElem as u16,
            NFPROTO_INET,
            |w| {
                w.str(1, table); // NFTA_SET_ELEM_LIST_TABLE
                w.str(2, set); // NFTA_SET_ELEM_LIST_SET
            },
            |payload| {
                let attrs = msg::attrs(payload.get(4..).unwrap_or(&[]));
                for (ty, list) in attrs {
                    if ty != 3 {
                        continue; // NFTA_SET_ELEM_LIST_ELEMENTS
                    }
                    for (_, elem) in msg::attrs(list) {
                        let e = msg::attrs(elem);
                        let key = e
                            .iter()
                            .find(|(t, _)| *t == 1) // NFTA_SET_ELEM_KEY
                            .and_then(|(_, k)| msg::attrs(k).into_iter().find(|(t, _)| *t == 1))
                            .map(|(_, v)| v.to_vec());
                        let expires = e
                            .iter()
                            .find(|(t, _)| *t == 5) // NFTA_SET_ELEM_EXPIRATION
                            .and_then(|(_, v)| v.get(..8))
                            .and_then(|v| v.try_into().ok())
                            .map(u64::from_be_bytes);
                        if let Some(k) = key {
                            out.push((k, expires));
                        }
                    }
                }
                true
            },
        );
        match r {
            Ok(()) => Ok(Some(out)),
            Err(NetlinkError::Rejected { errno: 2, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The packets and bytes of the named counter object, or `None` when it does not exist.
    pub fn counter(&mut self, table: &str, name: &str) -> Result<Option<(u64, u64)>, NetlinkError> {
        let seq = self.bump();
        let mut w = msg::Writer::with_capacity(96);
        w.begin(
            (msg::NFNL_SUBSYS_NFTABLES << 8) | MsgType::GetObj as u16,
            NLM_F_REQUEST,
            seq,
            NFPROTO_INET,
            0,
        );
        w.str(1, table); // NFTA_OBJ_TABLE
        w.str(2, name); // NFTA_OBJ_NAME
        w.u32(3, crate::plan::OBJ_COUNTER); // NFTA_OBJ_TYPE
        w.end();
        rustix::net::send(&self.fd, &w.into_bytes(), SendFlags::empty())
            .map_err(std::io::Error::from)?;
        loop {
            let n = self.recv()?;
            for reply in msg::replies(&self.buf[..n]) {
                if reply.seq != seq {
                    continue;
                }
                if reply.ty == NLMSG_ERROR {
                    let code = msg::error_code(reply.payload).unwrap_or(0);
                    return match code {
                        0 => Ok(None),
                        -2 => Ok(None),
                        c => Err(NetlinkError::Rejected {
                            errno: -c,
                            what: "counter read".into(),
                        }),
                    };
                }
                let attrs = msg::attrs(reply.payload.get(4..).unwrap_or(&[]));
                let data = attrs
                    .iter()
                    .find(|(t, _)| *t == 4)
                    .map(|(_, d)| msg::attrs(d));
                let get = |ty: u16| {
                    data.as_ref()
                        .and_then(|d| d.iter().find(|(t, _)| *t == ty))
                        .and_then(|(_, v)| v.get(..8))
                        .and_then(|v| v.try_into().ok())
                        .map(u64::from_be_bytes)
                };
                return Ok(Some((get(2).unwrap_or(0), get(1).unwrap_or(0))));
            }
        }
    }

    /// Sends a dump request (`ty`, with the nfgenmsg `family` and no attributes) and hands each
    /// answer's payload (the nfgenmsg header first) to `each` as it arrives, until the kernel
    /// says the dump is done. Nothing is kept between datagrams.
    pub fn dump(
        &mut self,
        ty: u16,
        family: u8,
        each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), NetlinkError> {
        self.dump_with(ty, family, |_| {}, each)
    }

    /// [`Netlink::dump`] with attributes in the request.
    pub fn dump_with(
        &mut self,
        ty: u16,
        family: u8,
        attrs: impl FnOnce(&mut msg::Writer),
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), NetlinkError> {
        let seq = self.bump();
        let mut w = msg::Writer::with_capacity(64);
        w.begin(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0);
        attrs(&mut w);
        w.end();
        rustix::net::send(&self.fd, &w.into_bytes(), SendFlags::empty())
            .map_err(std::io::Error::from)?;
        let mut going = true;
        loop {
            let n = self.recv()?;
            for reply in msg::replies(&self.buf[..n]) {
                if reply.seq != seq {
                    continue;
                }
                match reply.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = msg::error_code(reply.payload).unwrap_or(0);
                        if code != 0 {
                            return Err(NetlinkError::Rejected {
                                errno: -code,
                                what: "dump".into(),
                            });
                        }
                    }
                    _ if going => going = each(reply.payload),
                    _ => {}
                }
            }
        }
    }

    fn bump(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }
}
