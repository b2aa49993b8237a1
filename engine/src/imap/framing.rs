//! IMAP framing, sans-IO: splits the byte stream into whole commands (a line, plus the literals
//! it announces and the lines after them). Synchronising literals need a `+` continuation
//! from the server first; LITERAL+ (`{n+}`) ones don't. Line length and literal size are
//! bounded here, and every literal must be admitted by the caller (the memory budget); a
//! refused literal is skipped without buffering it, and so is the rest of its command.

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command, CRLFs and literals included.
    Command(Vec<u8>),
    /// A synchronising literal was announced: the server must answer `+` before the client
    /// sends it.
    Continue,
    /// A line longer than the limit (skipped to its end); the tag, if one was seen.
    TooLong(Option<String>),
    /// A literal larger than the limit; `sync` says whether the client waits for a `+` (if
    /// not, its bytes and the rest of the command are skipped).
    LiteralTooBig { tag: Option<String>, sync: bool },
    /// A literal the caller did not admit (no memory for it now), skipped as a too-big one.
    LiteralRefused { tag: Option<String>, sync: bool },
}

/// The end of a skipped line kept to see whether it announces another literal.
const TAIL: usize = 32;

pub struct Framer {
    buf: Vec<u8>,
    /// Where the current line starts in `buf`.
    line_start: usize,
    literal_left: usize,
    skip_left: usize,
    skipping_line: bool,
    /// The rest of a refused command is being skipped; `tail` ends its current line.
    discarding: bool,
    tail: Vec<u8>,
    line_limit: usize,
    literal_limit: usize,
    max_literal: usize,
}

impl Framer {
    pub fn new(line_limit: usize, literal_limit: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            line_start: 0,
            literal_left: 0,
            skip_left: 0,
            skipping_line: false,
            discarding: false,
            tail: Vec::new(),
            line_limit,
            literal_limit,
            max_literal: literal_limit,
        }
    }

    fn tag(&self) -> Option<String> {
        let first = self
            .buf
            .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .next()?;
        (!first.is_empty() && first.len() <= 64)
            .then(|| String::from_utf8_lossy(first).into_owned())
    }

    /// The next frame from `input`, consuming what it used; `None` when more bytes are needed.
    /// `admit` is asked before a literal is read, with the bytes the command will then hold.
    pub fn next(
        &mut self,
        input: &mut &[u8],
        literal_limit: usize,
        admit: &mut dyn FnMut(usize) -> bool,
    ) -> Option<Frame> {
        self.literal_limit = literal_limit.min(self.max_literal);
        loop {
            if input.is_empty() {
                return None;
            }
            if self.skip_left > 0 {
                let n = self.skip_left.min(input.len());
                self.skip_left -= n;
                *input = &input[n..];
                continue;
            }
            if self.discarding {
                let (line, end) = match input.iter().position(|&b| b == b'\n') {
                    Some(p) => (&input[..=p], true),
                    None => (*input, false),
                };
                self.tail
                    .extend_from_slice(&line[line.len().saturating_sub(TAIL)..]);
                if self.tail.len() > TAIL {
                    self.tail.drain(..self.tail.len() - TAIL);
                }
                *input = &input[line.len()..];
                if end {
                    match literal_announced(&self.tail) {
                        Some((n, false)) => self.skip_left = n,
                        // the command is over (a synchronising literal waits for a `+` that
                        // does not come, and the client gives up on it)
                        _ => self.discarding = false,
                    }
                    self.tail.clear();
                }
                continue;
            }
            if self.literal_left > 0 {
                let n = self.literal_left.min(input.len());
                self.buf.extend_from_slice(&input[..n]);
                self.literal_left -= n;
                *input = &input[n..];
                if self.literal_left == 0 {
                    self.line_start = self.buf.len();
                }
                continue;
            }
            if self.skipping_line {
                match input.iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        *input = &input[p + 1..];
                        self.skipping_line = false;
                        let tag = self.tag();
                        self.buf.clear();
                        self.line_start = 0;
                        return Some(Frame::TooLong(tag));
                    }
                    None => {
                        *input = &[];
                        return None;
                    }
                }
            }
            let Some(p) = input.iter().position(|&b| b == b'\n') else {
                if self.buf.len() - self.line_start + input.len() > self.line_limit {
                    // keep the start of the command for its tag, drop the rest
                    if self.buf.len() < 64 {
                        let k = (64 - self.buf.len()).min(input.len());
                        self.buf.extend_from_slice(&input[..k]);
                    }
                    self.skipping_line = true;
                } else {
                    self.buf.extend_from_slice(input);
                }
                *input = &[];
                continue;
            };
            if self.buf.len() - self.line_start + p + 1 > self.line_limit {
                let tag_src = if self.line_start == 0 {
                    &input[..p.min(64)]
                } else {
                    &[][..]
                };
                let mut t = self.buf.clone();
                t.extend_from_slice(tag_src);
                *input = &input[p + 1..];
                self.buf = t;
                let tag = self.tag();
                self.buf.clear();
                self.line_start = 0;
                return Some(Frame::TooLong(tag));
            }
            self.buf.extend_from_slice(&input[..=p]);
            *input = &input[p + 1..];
            match literal_announced(&self.buf[self.line_start..]) {
                // one command carries at most one literal limit plus its lines
                Some((n, sync))
                    if n > self.literal_limit
                        || self.buf.len().saturating_add(n)
                            > self.literal_limit.saturating_add(4 * self.line_limit) =>
                {
                    return Some(self.refuse(n, sync, false));
                }
                Some((n, sync)) if !admit(self.buf.len().saturating_add(n)) => {
                    return Some(self.refuse(n, sync, true));
                }
                Some((n, sync)) => {
                    // literal8 (`~{n}`, RFC 3516 APPEND) is handed on as a plain literal
                    if let Some(open) = self.buf[self.line_start..].iter().rposition(|&c| c == b'{')
                        && let Some(tilde) = (self.line_start + open).checked_sub(1)
                        && self.buf.get(tilde) == Some(&b'~')
                    {
                        self.buf.remove(tilde);
                    }
                    if !sync {
                        // LITERAL- (`{n-}`, RFC 7888) is handed on as LITERAL+ (`{n+}`): with
                        // LITERAL+ also offered, any size is fine, and imap-codec knows `+`
                        let close = self.buf.len() - 2 - usize::from(self.buf.ends_with(b"\r\n"));
                        if let Some(m) = close.checked_sub(1)
                            && self.buf.get(m) == Some(&b'-')
                        {
                            self.buf[m] = b'+';
                        }
                    }
                    self.literal_left = n;
                    self.line_start = self.buf.len();
                    if n == 0 {
                        continue;
                    }
                    if sync {
                        return Some(Frame::Continue);
                    }
                }
                None => {
                    self.line_start = 0;
                    return Some(Frame::Command(std::mem::take(&mut self.buf)));
                }
            }
        }
    }
}

impl Framer {
    /// Drops the command whose literal of `n` bytes can't be taken; a LITERAL+ one is on its
    /// way, so it and the rest of its command are skipped.
    fn refuse(&mut self, n: usize, sync: bool, busy: bool) -> Frame {
        let tag = self.tag();
        self.buf.clear();
        self.line_start = 0;
        if !sync {
            self.skip_left = n;
            self.discarding = true;
        }
        if busy {
            Frame::LiteralRefused { tag, sync }
        } else {
            Frame::LiteralTooBig { tag, sync }
        }
    }
}

/// `{n}`, `{n+}` or `{n-}` at the end of a line (before CRLF): the literal's size and whether it is
/// synchronising.
fn literal_announced(line: &[u8]) -> Option<(usize, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let sync = match digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse()
        .ok()
        .map(|n| (n, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, parts: &[&[u8]]) -> Vec<Frame> {
        let mut out = Vec::new();
        for p in parts {
            let mut input = *p;
            while let Some(fr) = f.next(&mut input, usize::MAX, &mut |_| true) {
                out.push(fr);
            }
            assert!(input.is_empty());
        }
        out
    }

    #[test]
    fn literal_minus_is_handed_on_as_literal_plus() {
        let mut f = Framer::new(100, 1000);
        let out = frames(&mut f, &[b"a1 LOGIN {3-}\r\nbob {4-}\r\npass\r\n"]);
        assert_eq!(
            out,
            vec![Frame::Command(
                b"a1 LOGIN {3+}\r\nbob {4+}\r\npass\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn literal8_is_handed_on_as_a_literal() {
        let mut f = Framer::new(100, 1000);
        let out = frames(&mut f, &[b"a1 APPEND INBOX ~{3+}\r\nabc\r\n"]);
        assert_eq!(
            out,
            vec![Frame::Command(b"a1 APPEND INBOX {3+}\r\nabc\r\n".to_vec())]
        );
    }

    #[test]
    fn lines_and_split_literals() {
        let mut f = Framer::new(100, 1000);
        let out = frames(
            &mut f,
            &[
                b"a1 NOOP\r\na2 LOGIN {3}\r\n",
                b"b",
                b"ob {4+}\r\npass\r\na3 NO",
                b"OP\r\n",
            ],
        );
        assert_eq!(
            out,
            vec![
                Frame::Command(b"a1 NOOP\r\n".to_vec()),
                Frame::Continue,
                Frame::Command(b"a2 LOGIN {3}\r\nbob {4+}\r\npass\r\n".to_vec()),
                Frame::Command(b"a3 NOOP\r\n".to_vec()),
            ]
        );
    }

    #[test]
    fn oversize_lines_and_literals_are_refused_and_skipped() {
        let mut f = Framer::new(20, 10);
        let long = [b"t1 NOOP ".as_slice(), &[b'x'; 50], b"\r\n"].concat();
        let out = frames(
            &mut f,
            &[
                &long[..30],
                &long[30..],
                b"t2 APPEND x {11}\r\n",
                b"t3 APPEND x {11+}\r\nhello world\r\n",
                b"t4 NOOP\r\n",
            ],
        );
        assert_eq!(
            out,
            vec![
                Frame::TooLong(Some("t1".into())),
                Frame::LiteralTooBig {
                    tag: Some("t2".into()),
                    sync: true
                },
                Frame::LiteralTooBig {
                    tag: Some("t3".into()),
                    sync: false
                },
                Frame::Command(b"t4 NOOP\r\n".to_vec()),
            ]
        );
    }

    #[test]
    fn literal_markers() {
        assert_eq!(literal_announced(b"a {12}\r\n"), Some((12, true)));
        assert_eq!(literal_announced(b"a {0+}\r\n"), Some((0, false)));
        assert_eq!(literal_announced(b"a {7-}\r\n"), Some((7, false)));
        assert_eq!(literal_announced(b"a \"{12}\"\r\n"), None);
        assert_eq!(literal_announced(b"a {x}\r\n"), None);
    }

    /// After a refused LITERAL+ literal the rest of its command was once parsed as a new one.
    #[test]
    fn a_refused_nonsync_literal_skips_the_rest_of_its_command() {
        let mut f = Framer::new(100, 10);
        let out = frames(
            &mut f,
            &[
                b"t1 LOGIN {20+}\r\n01234567890123456789",
                b" {3+}\r\nabc FOO\r\nt2 NOOP\r\n",
            ],
        );
        assert_eq!(
            out,
            vec![
                Frame::LiteralTooBig {
                    tag: Some("t1".into()),
                    sync: false
                },
                Frame::Command(b"t2 NOOP\r\n".to_vec()),
            ]
        );
        // a literal the memory budget refuses is skipped the same way
        let mut f = Framer::new(100, 1000);
        let mut input: &[u8] = b"t3 APPEND x {5+}\r\nhello\r\nt4 NOOP\r\n";
        let mut out = Vec::new();
        while let Some(fr) = f.next(&mut input, 1000, &mut |_| false) {
            out.push(fr);
        }
        assert_eq!(
            out,
            vec![
                Frame::LiteralRefused {
                    tag: Some("t3".into()),
                    sync: false
                },
                Frame::Command(b"t4 NOOP\r\n".to_vec()),
            ]
        );
    }
}
