//! nfnetlink message encoding for nf_tables, sans-IO: a [`Batch`] is the exact bytes of one
//! atomic transaction (BATCH_BEGIN, messages, BATCH_END) ready for a single `sendmsg`.

/// nf_tables message types (`enum nf_tables_msg_types`).
#[derive(Debug, Clone, Copy)]
#[repr(u16)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
    NewSet = 9,
    NewSetElem = 12,
    GetSetElem = 13,
    DelSetElem = 14,
    NewObj = 18,
    GetObj = 19,
}

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NFPROTO_INET: u8 = 1;

const NLA_F_NESTED: u16 = 0x8000;

/// A netlink byte buffer with nested-attribute bookkeeping.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    msg_start: usize,
    nests: Vec<usize>,
    /// An attribute, a nest or a message came out longer than its length field holds; the
    /// bytes are not sent (see [`Writer::overflowed`]).
    overflow: bool,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
            msg_start: 0,
            nests: Vec::new(),
            overflow: false,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Starts a message: nlmsghdr + nfgenmsg.
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in end()
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Finishes the current message, patching its length.
    pub fn end(&mut self) {
        let len = u32::try_from(self.buf.len() - self.msg_start).unwrap_or_else(|_| {
            self.overflow = true;
            u32::MAX
        });
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        let field = u16::try_from(len).unwrap_or_else(|_| {
            self.overflow = true;
            u16::MAX
        });
        self.buf.extend_from_slice(&field.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + align4(len) - len, 0);
    }

    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    /// A big-endian u32 (nf_tables' convention for numeric attributes).
    pub fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn u64(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn nest(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn unnest(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or_else(|_| {
                self.overflow = true;
                u16::MAX
            });
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// Bytes written since `mark` (a value of [`Writer::len`]).
    pub fn since(&self, mark: usize) -> usize {
        self.buf.len() - mark
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Whether some length did not fit its field: the bytes would be misread by the kernel.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// One nf_tables transaction: every message between BATCH_BEGIN and BATCH_END is applied by the
/// kernel all together or not at all.
#[derive(Debug)]
pub struct Batch {
    pub w: Writer,
    next_seq: u32,
    /// Sequence numbers of the messages that asked for an acknowledgement.
    pub acked: Vec<u32>,
}

impl Batch {
    pub fn new(first_seq: u32) -> Self {
        let mut w = Writer::with_capacity(4096);
        w.begin(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        w.end();
        Batch {
            w,
            next_seq: first_seq.wrapping_add(1),
            acked: Vec::new(),
        }
    }

    /// Starts an nf_tables message that asks for an acknowledgement.
    pub fn msg(&mut self, ty: MsgType, flags: u16, family: u8) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.acked.push(seq);
        self.w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | ty as u16,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            family,
            0,
        );
    }

    pub fn end_msg(&mut self) {
        self.w.end();
    }

    /// Number of nf_tables messages in the batch.
    pub fn len(&self) -> usize {
        self.acked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acked.is_empty()
    }

    /// Whether a length in the batch did not fit its field (then it must not be sent).
    pub fn overflowed(&self) -> bool {
        self.w.overflowed()
    }

    /// Closes the batch; returns its bytes and the sequence numbers to await.
    pub fn finish(mut self) -> (Vec<u8>, Vec<u32>, u32) {
        let seq = self.next_seq;
        self.w.begin(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.w.end();
        (self.w.into_bytes(), self.acked, seq.wrapping_add(1))
    }
}

/// A parsed netlink message header with its payload.
#[derive(Debug)]
pub struct Reply<'a> {
    pub ty: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a received datagram into messages; stops at a truncated one.
pub fn replies(mut buf: &[u8]) -> Vec<Reply<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        out.push(Reply {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[16..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The errno of an NLMSG_ERROR payload (0 = acknowledgement).
pub fn error_code(payload: &[u8]) -> Option<i32> {
    payload
        .get(0..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Iterates the attributes of a payload: (type without flags, data); stops at a malformed one.
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_too_long_for_its_length_field_is_an_error_not_a_wrap() {
        let mut b = Batch::new(1);
        b.msg(MsgType::NewSetElem, 0, NFPROTO_INET);
        b.w.nest(3);
        b.w.attr(1, &vec![0u8; 70_000]);
        b.w.unnest();
        b.end_msg();
        assert!(b.overflowed());
        let mut ok = Batch::new(1);
        ok.msg(MsgType::NewTable, 0, NFPROTO_INET);
        ok.w.attr(1, &[0u8; 60_000]);
        ok.end_msg();
        assert!(!ok.overflowed());
    }

    #[test]
    fn batch_frames_messages_with_lengths_and_alignment() {
        let mut b = Batch::new(100);
        b.msg(MsgType::NewTable, NLM_F_CREATE, NFPROTO_INET);
        b.w.str(1, "wispd");
        b.w.nest(3);
        b.w.u32(1, 7);
        b.w.unnest();
        b.end_msg();
        let (bytes, acked, next) = b.finish();
        assert_eq!(acked, vec![101]);
        assert_eq!(next, 103);
        let msgs = replies(&bytes);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].ty, 0x10);
        assert_eq!(msgs[1].ty, NFNL_SUBSYS_NFTABLES << 8);
        assert_eq!(msgs[2].ty, 0x11);
        let a = attrs(&msgs[1].payload[4..]);
        assert_eq!(a[0], (1, &b"wispd\0"[..]));
        assert_eq!(a[1].0, 3);
        assert_eq!(attrs(a[1].1), vec![(1u16, &7u32.to_be_bytes()[..])]);
        assert_eq!(bytes.len() % 4, 0);
    }
}
