//! What the POP3 server writes, sans-IO: status lines with RFC 2449 response codes, and
//! multi-line bodies byte-stuffed (RFC 1939 §3) with every line ended by CRLF.

use std::borrow::Cow;

/// RFC 2449 §8 / RFC 3206 response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The credentials were wrong (RFC 3206).
    Auth,
    /// A temporary failure: try again later (RFC 3206).
    SysTemp,
    /// A permanent failure: trying again won't help (RFC 3206).
    SysPerm,
    /// The maildrop is locked by another session (RFC 2449 §8.1.2).
    InUse,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
            Code::InUse => "IN-USE",
        }
    }
}

/// A status line: `+OK text` or `-ERR [CODE] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    ok: bool,
    code: Option<Code>,
    text: Cow<'static, str>,
}

impl Reply {
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            ok: true,
            code: None,
            text: text.into(),
        }
    }

    pub fn err(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            ok: false,
            code: None,
            text: text.into(),
        }
    }

    pub fn with(mut self, code: Code) -> Reply {
        self.code = Some(code);
        self
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if let Some(c) = self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(c.as_str().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            // a status line is one line, whatever the text holds
            out.extend(
                self.text
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Byte-stuffs a multi-line body as it is pushed in pieces: a line starting with `.` gets
/// another, a bare LF becomes CRLF (so the body's lines are the lines a client splits; a bare
/// CR is left as data), and [`Stuffer::finish`] ends the last line and writes the `.` line.
#[derive(Debug, Clone)]
pub struct Stuffer {
    line_start: bool,
    after_cr: bool,
}

impl Default for Stuffer {
    fn default() -> Stuffer {
        Stuffer {
            line_start: true,
            after_cr: false,
        }
    }
}

impl Stuffer {
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.reserve(data.len() + data.len() / 64 + 2);
        let mut rest = data;
        while !rest.is_empty() {
            if self.line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            self.line_start = false;
            match memchr::memchr(b'\n', rest) {
                Some(p) => {
                    let (line, tail) = rest.split_at(p);
                    out.extend_from_slice(line);
                    let cr_before = match line.last() {
                        Some(&b) => b == b'\r',
                        None => self.after_cr,
                    };
                    out.extend_from_slice(if cr_before { b"\n" } else { b"\r\n" });
                    self.line_start = true;
                    self.after_cr = false;
                    rest = &tail[1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.after_cr = rest.last() == Some(&b'\r');
                    rest = &[];
                }
            }
        }
    }

    /// Ends the body: a CRLF when its last line has none, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Octets of `data` as [`Stuffer`] sends it, stuffing aside (RFC 1939's size "as sent"):
/// the stored octets plus one for every bare LF.
pub fn sent_size(data: &[u8]) -> u64 {
    let bare = memchr::memchr_iter(b'\n', data)
        .filter(|&i| i == 0 || data[i - 1] != b'\r')
        .count();
    data.len() as u64 + bare as u64
}

/// The end of the header and the first `lines` body lines of `message` (TOP): everything up
/// to and including the empty line after the header, then that many lines. A message without
/// an empty line is all header.
pub fn top(message: &[u8], lines: u64) -> &[u8] {
    let mut at = 0;
    let mut in_header = true;
    let mut left = lines;
    while at < message.len() {
        if !in_header && left == 0 {
            break;
        }
        let end = memchr::memchr(b'\n', &message[at..]).map_or(message.len(), |p| at + p + 1);
        let line = &message[at..end];
        if in_header {
            if line == b"\r\n" || line == b"\n" {
                in_header = false;
            }
        } else {
            left -= 1;
        }
        at = end;
    }
    &message[..at]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = Stuffer::default();
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    /// What a client does with a multi-line body (RFC 1939 §3): lines up to CRLF, the
    /// termination line ends it, a leading dot is dropped.
    fn unstuffed(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in wire.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "every line ends in CRLF: {line:?}");
            if line == b".\r\n" {
                return out;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        panic!("no termination line in {wire:?}");
    }

    #[test]
    fn dots_are_stuffed_across_pieces_and_lines_end_in_crlf() {
        assert_eq!(stuffed(&[b"a\r\n.b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\r\n", b".", b"b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[b".\r\n"]), b"..\r\n.\r\n");
        assert_eq!(stuffed(&[b"x\r", b"\n.\r", b"\n"]), b"x\r\n..\r\n.\r\n");
        // bare LF becomes CRLF, bare CR stays, a last line without its end gets one
        assert_eq!(stuffed(&[b"a\nb\rc"]), b"a\r\nb\rc\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\n.\n"]), b"a\r\n..\r\n.\r\n");
        assert_eq!(stuffed(&[b""]), b".\r\n");
        assert_eq!(stuffed(&[b"x\r"]), b"x\r\r\n.\r\n");
    }

    #[test]
    fn a_client_gets_the_message_back_with_its_size() {
        let messages: [&[u8]; 4] = [
            b"Subject: x\r\n\r\n.\r\n..\r\n.x\r\nend\r\n",
            b"Subject: y\n\nbare\n.\nlf\n",
            b"no end.\r\n.",
            b"\r\n\r\n.\r\n\r\n",
        ];
        for m in messages {
            for cut in 1..m.len() {
                let pieces: Vec<&[u8]> = m.chunks(cut).collect();
                let back = unstuffed(&stuffed(&pieces));
                let want = if m.ends_with(b"\n") {
                    sent_size(m)
                } else {
                    sent_size(m) + 2
                };
                assert_eq!(back.len() as u64, want, "{m:?} cut {cut}");
                assert!(!back.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
            }
        }
        assert_eq!(sent_size(b"a\r\nb\nc"), 7);
    }

    #[test]
    fn top_is_the_header_and_n_body_lines() {
        let m = b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\nthree\r\n";
        assert_eq!(top(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top(m, 2), b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\n");
        assert_eq!(top(m, 99), m);
        assert_eq!(top(b"A: 1\r\nB: 2\r\n", 1), b"A: 1\r\nB: 2\r\n");
        assert_eq!(top(b"A: 1\n\nbody\nmore", 1), b"A: 1\n\nbody\n");
        assert_eq!(top(b"A: 1\n\nbody", 5), b"A: 1\n\nbody");
    }

    #[test]
    fn replies_carry_codes_and_stay_one_line() {
        let mut out = Vec::new();
        Reply::err("Authentication failed.")
            .with(Code::Auth)
            .write_to(&mut out);
        Reply::ok("2 320").write_to(&mut out);
        Reply::err("a\r\nb").with(Code::InUse).write_to(&mut out);
        assert_eq!(
            out,
            b"-ERR [AUTH] Authentication failed.\r\n+OK 2 320\r\n-ERR [IN-USE] a  b\r\n"
        );
    }
}
