//! POP3 commands off the wire, sans-IO (RFC 1939 §3, RFC 2449 §4): a command is one line, a
//! case-insensitive keyword and its arguments separated by spaces, ended by CRLF (a bare LF is
//! taken as well: nothing a client sends is message data). Lines are bounded: RFC 2449 allows
//! 255 octets, we take up to `max_line`; a longer line is answered once and dropped up to its
//! end, never buffered. Message numbers are checked for overflow here.

/// Longest command line taken, line end excluded (RFC 2449 §4 asks for 255; SASL responses
/// and long passwords get room).
pub const MAX_LINE: usize = 1024;

/// What the codec found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete line without its line end.
    Line(Vec<u8>),
    /// A line over the limit; it is dropped up to its end.
    TooLong,
}

#[derive(Debug)]
pub struct Codec {
    buf: Vec<u8>,
    max_line: usize,
    /// Dropping the rest of an overlong line.
    draining: bool,
    /// Bytes of `buf` known to hold no LF.
    scanned: usize,
}

impl Codec {
    pub fn new(max_line: usize) -> Codec {
        Codec {
            buf: Vec::new(),
            max_line,
            draining: false,
            scanned: 0,
        }
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
            let lf = memchr::memchr(b'\n', &self.buf[self.scanned..]).map(|p| p + self.scanned);
            let Some(lf) = lf else {
                if self.draining {
                    self.buf.clear();
                    self.scanned = 0;
                    return None;
                }
                // room for the CR of a line exactly at the limit
                if self.buf.len() > self.max_line + 1 {
                    self.buf.clear();
                    self.scanned = 0;
                    self.draining = true;
                    return Some(Event::TooLong);
                }
                self.scanned = self.buf.len();
                return None;
            };
            let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
            self.scanned = 0;
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if std::mem::take(&mut self.draining) {
                continue;
            }
            if line.len() > self.max_line {
                return Some(Event::TooLong);
            }
            return Some(Event::Line(line));
        }
    }
}

/// A message number or line count that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Not a decimal number (empty, a sign, letters).
    Invalid,
    /// More than fits in 64 bits.
    TooLarge,
}

/// A command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    User(String),
    /// The rest of the line: passwords may hold spaces.
    Pass(String),
    /// `AUTH` alone lists the mechanisms; the initial response is base64 (or `=`: empty).
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Stat,
    List(Option<u64>),
    Uidl(Option<u64>),
    Retr(u64),
    Top(u64, u64),
    Dele(u64),
    Rset,
    Noop,
    Quit,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    Unknown(String),
    Syntax(&'static str),
    Number(NumberError),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Unknown(k) => write!(f, "Unknown command: {k}"),
            Bad::Syntax(s) => f.write_str(s),
            Bad::Number(NumberError::Invalid) => f.write_str("Invalid message number"),
            Bad::Number(NumberError::TooLarge) => f.write_str("Number out of range"),
        }
    }
}

/// A decimal number as RFC 1939 writes them: digits only, no sign, no overflow.
pub fn number(s: &str) -> Result<u64, NumberError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::Invalid);
    }
    s.bytes().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(NumberError::TooLarge)
    })
}

/// Parses one line (without its line end).
pub fn parse(line: &[u8]) -> Result<Command, Bad> {
    let text = String::from_utf8_lossy(line);
    let (keyword, rest) = match text.split_once(' ') {
        Some((k, r)) => (k, r),
        None => (text.as_ref(), ""),
    };
    let keyword = keyword.to_ascii_uppercase();
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let none = |c: Command| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(Bad::Syntax("No arguments expected"))
        }
    };
    let msg = |i: usize| -> Result<u64, Bad> {
        args.get(i)
            .ok_or(Bad::Syntax("Message number expected"))
            .and_then(|a| number(a).map_err(Bad::Number))
    };
    let optional = || -> Result<Option<u64>, Bad> {
        match args.len() {
            0 => Ok(None),
            1 => msg(0).map(Some),
            _ => Err(Bad::Syntax("One message number at most")),
        }
    };
    let one = || -> Result<u64, Bad> {
        if args.len() == 1 {
            msg(0)
        } else {
            Err(Bad::Syntax("One message number expected"))
        }
    };
    match keyword.as_str() {
        "CAPA" => none(Command::Capa),
        "STLS" => none(Command::Stls),
        "STAT" => none(Command::Stat),
        "RSET" => none(Command::Rset),
        "NOOP" => none(Command::Noop),
        "QUIT" => none(Command::Quit),
        "USER" => match args.as_slice() {
            [u] => Ok(Command::User((*u).to_string())),
            _ => Err(Bad::Syntax("USER takes one name")),
        },
        "PASS" if !rest.is_empty() => Ok(Command::Pass(rest.to_string())),
        "PASS" => Err(Bad::Syntax("PASS takes a password")),
        "AUTH" => match args.as_slice() {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [m] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: None,
            }),
            [m, i] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: Some((*i).to_string()),
            }),
            _ => Err(Bad::Syntax(
                "AUTH takes a mechanism and an initial response",
            )),
        },
        "LIST" => optional().map(Command::List),
        "UIDL" => optional().map(Command::Uidl),
        "RETR" => one().map(Command::Retr),
        "DELE" => one().map(Command::Dele),
        "TOP" => {
            if args.len() != 2 {
                return Err(Bad::Syntax("TOP takes a message number and a line count"));
            }
            Ok(Command::Top(msg(0)?, msg(1)?))
        }
        "" => Err(Bad::Syntax("Empty command")),
        _ => {
            let mut k = keyword;
            if k.len() > 16 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                k = "(unprintable or long)".into();
            }
            Err(Bad::Unknown(k))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(c: &mut Codec, input: &[u8]) -> Vec<Event> {
        c.feed(input);
        std::iter::from_fn(|| c.next()).collect()
    }

    fn line(s: &str) -> Event {
        Event::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_end_at_crlf_or_lf_and_split_input_waits_for_the_rest() {
        let mut c = Codec::new(100);
        assert_eq!(all(&mut c, b"US"), vec![]);
        assert_eq!(all(&mut c, b"ER ann\r"), vec![]);
        assert_eq!(
            all(&mut c, b"\nSTAT\nLIST 1\r\nNO"),
            vec![line("USER ann"), line("STAT"), line("LIST 1")]
        );
        assert_eq!(all(&mut c, b"OP\r\n"), vec![line("NOOP")]);
        assert_eq!(c.buffered(), 0);
        // byte by byte
        let mut got = Vec::new();
        for b in b"RETR 1\r\nQUIT\r\n" {
            got.extend(all(&mut c, &[*b]));
        }
        assert_eq!(got, vec![line("RETR 1"), line("QUIT")]);
    }

    #[test]
    fn an_overlong_line_is_answered_once_then_the_next_line_is_read() {
        let mut c = Codec::new(16);
        let mut input = vec![b'A'; 40];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(all(&mut c, &input), vec![Event::TooLong, line("NOOP")]);
        // a line exactly at the limit passes
        let at = "B".repeat(16);
        assert_eq!(all(&mut c, format!("{at}\r\n").as_bytes()), vec![line(&at)]);
        // one that never ends is not buffered without bound, whatever the reads
        let mut c = Codec::new(16);
        let mut got = Vec::new();
        for _ in 0..1000 {
            got.extend(all(&mut c, &[b'C'; 100]));
            assert!(c.buffered() <= 100);
        }
        assert_eq!(got, vec![Event::TooLong]);
        assert_eq!(all(&mut c, b"CC\r\nQUIT\r\n"), vec![line("QUIT")]);
        // over the limit but complete in one read
        let mut c = Codec::new(16);
        assert_eq!(
            all(&mut c, format!("{}\nSTAT\n", "D".repeat(17)).as_bytes()),
            vec![Event::TooLong, line("STAT")]
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_arguments_checked() {
        assert_eq!(parse(b"stat"), Ok(Command::Stat));
        assert_eq!(parse(b"LiSt"), Ok(Command::List(None)));
        assert_eq!(parse(b"list 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"Top 2 0"), Ok(Command::Top(2, 0)));
        assert_eq!(parse(b"uidl  7"), Ok(Command::Uidl(Some(7))));
        assert_eq!(
            parse(b"user Ann@Example.com"),
            Ok(Command::User("Ann@Example.com".into()))
        );
        assert_eq!(
            parse(b"PASS with  spaces "),
            Ok(Command::Pass("with  spaces ".into()))
        );
        assert_eq!(
            parse(b"auth plain AGFubgBwdw=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGFubgBwdw==".into())
            })
        );
        assert_eq!(parse(b"STAT 1"), Err(Bad::Syntax("No arguments expected")));
        assert_eq!(
            parse(b"RETR"),
            Err(Bad::Syntax("One message number expected"))
        );
        assert_eq!(
            parse(b"TOP 1"),
            Err(Bad::Syntax("TOP takes a message number and a line count"))
        );
        assert_eq!(parse(b"XYZZY"), Err(Bad::Unknown("XYZZY".into())));
        assert_eq!(parse(b""), Err(Bad::Syntax("Empty command")));
        assert_eq!(parse(b"APOP ann 0123"), Err(Bad::Unknown("APOP".into())));
    }

    #[test]
    fn message_numbers_overflow_sign_and_garbage_are_errors() {
        assert_eq!(number("0"), Ok(0));
        assert_eq!(number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(number("18446744073709551616"), Err(NumberError::TooLarge));
        assert_eq!(number("99999999999999999999"), Err(NumberError::TooLarge));
        assert_eq!(number("-1"), Err(NumberError::Invalid));
        assert_eq!(number("+1"), Err(NumberError::Invalid));
        assert_eq!(number("1x"), Err(NumberError::Invalid));
        assert_eq!(number(""), Err(NumberError::Invalid));
        assert_eq!(
            parse(b"RETR 99999999999999999999"),
            Err(Bad::Number(NumberError::TooLarge))
        );
        assert_eq!(parse(b"DELE -1"), Err(Bad::Number(NumberError::Invalid)));
        assert_eq!(parse(b"TOP 1 x"), Err(Bad::Number(NumberError::Invalid)));
        assert_eq!(parse(b"DELE \xff"), Err(Bad::Number(NumberError::Invalid)));
    }
}
