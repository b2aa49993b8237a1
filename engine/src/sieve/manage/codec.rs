//! ManageSieve commands off the wire, sans-IO (RFC 5804 §4): a command is atoms, quoted strings
//! and literals (`{n}` or `{n+}`) up to CRLF. Everything is bounded: a line without its literals
//! (`max_line`), each literal (`max_literal`: a bigger one is skipped byte by byte, never
//! buffered, and answered once it has passed), the literal length itself (no overflow).

/// One argument: an atom (command names, numbers, lenient clients' bare arguments) or a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Atom(String),
    Str(Vec<u8>),
}

impl Token {
    /// The argument as a string: a string's bytes, or an atom (clients send `PLAIN` bare).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Token::Atom(a) => a.as_bytes(),
            Token::Str(s) => s,
        }
    }
}

/// What the codec found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Command(Vec<Token>),
    /// A malformed command (its line is consumed): answer `NO` with this.
    Bad(String),
    /// A literal over `max_literal`: its bytes are being skipped, the command answered `NO`.
    TooBig {
        size: u64,
    },
}

enum State {
    Normal,
    /// Skipping an oversize literal, then the rest of its command line.
    Skip {
        remaining: u64,
    },
    /// Dropping up to the next CRLF (after an overlong or malformed line).
    Drain,
}

pub struct Codec {
    buf: Vec<u8>,
    state: State,
    max_line: usize,
    max_literal: usize,
}

enum Scan {
    Done(Vec<Token>, usize),
    Incomplete,
    Bad(String, bool),
    TooBig { size: u64, at: usize },
}

/// Longest literal length written out (20 digits overflow u64 anyway).
const MAX_DIGITS: usize = 12;

impl Codec {
    pub fn new(max_line: usize, max_literal: usize) -> Codec {
        Codec {
            buf: Vec::new(),
            state: State::Normal,
            max_line,
            max_literal,
        }
    }

    /// Literals at most this long from now on (larger after login).
    pub fn set_max_literal(&mut self, n: usize) {
        self.max_literal = n;
    }

    /// Takes in what was read.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held (tests check nothing is held without bound).
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next event, or `None` until more input arrives.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            match self.state {
                State::Skip { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    self.buf.drain(..n);
                    let left = remaining - n as u64;
                    if left > 0 {
                        self.state = State::Skip { remaining: left };
                        return None;
                    }
                    self.state = State::Drain;
                }
                State::Drain => match find_crlf(&self.buf) {
                    Some(p) => {
                        self.buf.drain(..p + 2);
                        self.state = State::Normal;
                    }
                    None => {
                        // keep a trailing CR in case its LF comes next
                        let keep = usize::from(self.buf.last() == Some(&b'\r'));
                        let n = self.buf.len() - keep;
                        self.buf.drain(..n);
                        return None;
                    }
                },
                State::Normal => {
                    return match self.scan() {
                        Scan::Done(tokens, used) => {
                            self.buf.drain(..used);
                            if tokens.is_empty() {
                                continue;
                            }
                            Some(Event::Command(tokens))
                        }
                        Scan::Incomplete => None,
                        Scan::Bad(why, line_consumed) => {
                            if !line_consumed {
                                self.state = State::Drain;
                            }
                            Some(Event::Bad(why))
                        }
                        Scan::TooBig { size, at } => {
                            self.buf.drain(..at);
                            self.state = State::Skip { remaining: size };
                            Some(Event::TooBig { size })
                        }
                    };
                }
            }
        }
    }

    fn scan(&self) -> Scan {
        let b = &self.buf;
        let mut i = 0;
        let mut line = 0usize; // bytes of the line outside literals
        let mut tokens = Vec::new();
        loop {
            if line > self.max_line {
                return Scan::Bad("Line too long".into(), false);
            }
            let Some(&c) = b.get(i) else {
                return Scan::Incomplete;
            };
            match c {
                b' ' | b'\t' => {
                    i += 1;
                    line += 1;
                }
                b'\r' => match b.get(i + 1) {
                    None => return Scan::Incomplete,
                    Some(b'\n') => return Scan::Done(tokens, i + 2),
                    Some(_) => return Scan::Bad("Bare CR in command".into(), false),
                },
                b'\n' => return Scan::Done(tokens, i + 1),
                b'"' => {
                    let mut s = Vec::new();
                    let mut j = i + 1;
                    loop {
                        if s.len() > self.max_line {
                            return Scan::Bad("Line too long".into(), false);
                        }
                        match b.get(j) {
                            None => return Scan::Incomplete,
                            Some(b'"') => break,
                            Some(b'\\') => match b.get(j + 1) {
                                None => return Scan::Incomplete,
                                Some(&e @ (b'"' | b'\\')) => {
                                    s.push(e);
                                    j += 2;
                                }
                                Some(_) => {
                                    return Scan::Bad(
                                        "Invalid escape in quoted string".into(),
                                        false,
                                    );
                                }
                            },
                            Some(b'\r' | b'\n') => {
                                return Scan::Bad("Line break in quoted string".into(), false);
                            }
                            Some(&x) => {
                                s.push(x);
                                j += 1;
                            }
                        }
                    }
                    line += j + 1 - i;
                    i = j + 1;
                    tokens.push(Token::Str(s));
                }
                b'{' => {
                    let mut j = i + 1;
                    let mut n: u64 = 0;
                    let mut digits = 0;
                    while let Some(&d) = b.get(j) {
                        if !d.is_ascii_digit() {
                            break;
                        }
                        digits += 1;
                        if digits > MAX_DIGITS {
                            return Scan::Bad("Literal length too large".into(), false);
                        }
                        n = n * 10 + u64::from(d - b'0');
                        j += 1;
                    }
                    if j >= b.len() {
                        return Scan::Incomplete;
                    }
                    if digits == 0 {
                        return Scan::Bad("Invalid literal".into(), false);
                    }
                    if b[j] == b'+' {
                        j += 1;
                    }
                    // `}` CRLF
                    match (b.get(j), b.get(j + 1), b.get(j + 2)) {
                        (Some(b'}'), Some(b'\r'), Some(b'\n')) => {}
                        (Some(b'}'), Some(b'\r'), None) | (Some(b'}'), None, _) | (None, _, _) => {
                            return Scan::Incomplete;
                        }
                        _ => return Scan::Bad("Invalid literal".into(), false),
                    }
                    let start = j + 3;
                    if n > self.max_literal as u64 {
                        return Scan::TooBig { size: n, at: start };
                    }
                    let n = n as usize;
                    if b.len() < start + n {
                        return Scan::Incomplete;
                    }
                    tokens.push(Token::Str(b[start..start + n].to_vec()));
                    line += start - i;
                    i = start + n;
                }
                _ => {
                    let mut j = i;
                    while let Some(&x) = b.get(j) {
                        if matches!(x, b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'{') {
                            break;
                        }
                        if x.is_ascii_control() {
                            return Scan::Bad("Control character in command".into(), false);
                        }
                        j += 1;
                        if j - i > self.max_line {
                            return Scan::Bad("Line too long".into(), false);
                        }
                    }
                    if j >= b.len() {
                        return Scan::Incomplete;
                    }
                    let atom = String::from_utf8_lossy(&b[i..j]).into_owned();
                    line += j - i;
                    i = j;
                    tokens.push(Token::Atom(atom));
                }
            }
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// `s` as a ManageSieve quoted string, or a literal when it can't be quoted (line breaks, long).
pub fn string(s: &[u8]) -> Vec<u8> {
    if s.len() <= 1024 && !s.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0) {
        let mut out = Vec::with_capacity(s.len() + 2);
        out.push(b'"');
        for &c in s {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
        out
    } else {
        let mut out = format!("{{{}}}\r\n", s.len()).into_bytes();
        out.extend_from_slice(s);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(c: &mut Codec, input: &[u8]) -> Vec<Event> {
        c.feed(input);
        std::iter::from_fn(|| c.next()).collect()
    }

    fn atoms(v: &[&str]) -> Vec<Token> {
        v.iter().map(|a| Token::Atom((*a).into())).collect()
    }

    #[test]
    fn atoms_quoted_strings_and_literals() {
        let mut c = Codec::new(100, 100);
        let ev = all(
            &mut c,
            b"CAPABILITY\r\nPUTSCRIPT \"a \\\"b\\\\\" {5+}\r\nkeep;\r\nGETSCRIPT {3}\r\nabc\r\n",
        );
        assert_eq!(
            ev,
            vec![
                Event::Command(atoms(&["CAPABILITY"])),
                Event::Command(vec![
                    Token::Atom("PUTSCRIPT".into()),
                    Token::Str(b"a \"b\\".to_vec()),
                    Token::Str(b"keep;".to_vec()),
                ]),
                Event::Command(vec![
                    Token::Atom("GETSCRIPT".into()),
                    Token::Str(b"abc".to_vec())
                ]),
            ]
        );
    }

    #[test]
    fn input_in_pieces_waits_for_the_rest() {
        let mut c = Codec::new(100, 100);
        let whole = b"PUTSCRIPT \"x\" {10+}\r\n0123456789\r\n";
        let mut got = Vec::new();
        for b in whole {
            c.feed(&[*b]);
            while let Some(e) = c.next() {
                got.push(e);
            }
        }
        assert_eq!(got.len(), 1, "{got:?}");
    }

    #[test]
    fn an_oversize_literal_is_skipped_and_the_session_goes_on() {
        let mut c = Codec::new(100, 10);
        let mut input = b"PUTSCRIPT \"x\" {50+}\r\n".to_vec();
        input.extend_from_slice(&[b'y'; 50]);
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let ev = all(&mut c, &input);
        assert_eq!(
            ev,
            vec![Event::TooBig { size: 50 }, Event::Command(atoms(&["NOOP"]))]
        );
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn huge_and_overflowing_numbers_are_errors_not_allocations() {
        let mut c = Codec::new(100, 10);
        let ev = all(
            &mut c,
            b"PUTSCRIPT \"x\" {99999999999999999999999+}\r\nNOOP\r\n",
        );
        assert_eq!(
            ev,
            vec![
                Event::Bad("Literal length too large".into()),
                Event::Command(atoms(&["NOOP"]))
            ]
        );
        let ev = all(&mut c, b"PUTSCRIPT \"x\" {4294967296+}\r\n");
        assert_eq!(
            ev,
            vec![Event::TooBig {
                size: 4_294_967_296
            }]
        );
    }

    #[test]
    fn overlong_lines_and_bad_syntax_are_answered_then_skipped() {
        let mut c = Codec::new(16, 10);
        let mut input = vec![b'A'; 40];
        input.extend_from_slice(b"\r\nNOOP\r\n\"open\r\nNOOP\r\n\"bad\\q\"\r\nLOGOUT\r\n");
        let ev = all(&mut c, &input);
        assert_eq!(
            ev,
            vec![
                Event::Bad("Line too long".into()),
                Event::Command(atoms(&["NOOP"])),
                Event::Bad("Line break in quoted string".into()),
                Event::Command(atoms(&["NOOP"])),
                Event::Bad("Invalid escape in quoted string".into()),
                Event::Command(atoms(&["LOGOUT"])),
            ]
        );
        // A line that never ends is not buffered without bound.
        let mut c = Codec::new(16, 10);
        c.feed(&[b'B'; 10_000]);
        assert_eq!(c.next(), Some(Event::Bad("Line too long".into())));
        assert_eq!(c.next(), None);
        assert!(c.buffered() < 2);
    }

    #[test]
    fn strings_are_quoted_or_sent_as_literals() {
        assert_eq!(string(b"a\"b\\c"), b"\"a\\\"b\\\\c\"".to_vec());
        assert_eq!(string(b"x\r\ny"), b"{4}\r\nx\r\ny".to_vec());
    }
}
