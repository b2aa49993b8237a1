//! The SMTP codec, sans-IO: bytes in, typed events out. Command lines are cut and bounded here,
//! checked for numbers that overflow, then parsed by smtp-proto; DATA is un-dot-stuffed by our
//! own receiver and ends only at exactly `CRLF . CRLF` (a dot line ended by a bare LF, by
//! `CR CR LF` or by anything else is data, so SMTP smuggling can't split a message); BDAT chunks
//! are counted. Line length and message size are bounded here: an oversize line is skipped up
//! to its end, an oversize message is read to its end and dropped, holding at most one read
//! buffer beyond the limit.

use std::slice::Iter;

use smtp_proto::request::receiver::RequestReceiver;
use smtp_proto::{Error, Request};

/// Longest command line accepted, CRLF included (Postfix's `line_length_limit`).
pub const MAX_COMMAND_LINE: usize = 2048;

/// What the codec found in the input.
#[derive(Debug)]
pub enum Event {
    Request(Request<String>),
    /// A command line that does not parse.
    Invalid(Error),
    /// A command line longer than [`MAX_COMMAND_LINE`] (skipped to its end).
    LineTooLong,
    /// A command carrying a number too large for any message (`BDAT`, `SIZE=`).
    NumberTooLarge,
    /// The end of DATA; the message is in [`Codec::take_message`] unless it was too big.
    DataEnd {
        too_big: bool,
    },
    /// The end of one BDAT chunk.
    ChunkEnd {
        last: bool,
        too_big: bool,
    },
    /// One line asked for with [`Codec::start_line`] (an AUTH response), without its CRLF.
    Line(Vec<u8>),
}

enum Mode {
    Command,
    /// One raw line (SASL response).
    Line(Vec<u8>),
    /// Inside an over-long command line: skip to the next LF.
    SkipLine,
    /// A DATA body; `keep` false once it is over the limit (read to its end, not stored).
    Data {
        rx: DataReceiver,
        keep: bool,
    },
    /// A BDAT chunk with `left` bytes to come; `keep` false skips them.
    Chunk {
        left: usize,
        last: bool,
        keep: bool,
    },
}

pub struct Codec {
    mode: Mode,
    /// The command line read so far.
    line: Vec<u8>,
    requests: RequestReceiver,
    message: Vec<u8>,
    limit: usize,
    too_big: bool,
    /// The message was dropped because the server's memory budget could not hold it.
    starved: bool,
    /// An event due without input (a zero-length BDAT chunk).
    pending: Option<Event>,
}

impl Default for Codec {
    fn default() -> Codec {
        Codec {
            mode: Mode::Command,
            line: Vec::new(),
            requests: RequestReceiver::default(),
            message: Vec::new(),
            limit: 0,
            too_big: false,
            starved: false,
            pending: None,
        }
    }
}

impl Codec {
    /// Switches to reading a DATA body of at most `limit` bytes.
    pub fn start_data(&mut self, limit: usize) {
        self.message.clear();
        self.limit = limit;
        self.too_big = false;
        self.starved = false;
        self.mode = Mode::Data {
            rx: DataReceiver::default(),
            keep: true,
        };
    }

    /// Switches to reading a BDAT chunk of `size` bytes. The first chunk of a message starts
    /// a new one; `keep` false reads the chunk only to skip it (a rejected BDAT).
    pub fn start_chunk(&mut self, size: usize, last: bool, first: bool, limit: usize, keep: bool) {
        if first {
            self.message.clear();
            self.too_big = false;
            self.starved = false;
        }
        self.limit = limit;
        if size == 0 {
            // nothing to read: the chunk ends here (`BDAT 0 LAST` closes a message)
            self.mode = Mode::Command;
            self.pending = Some(Event::ChunkEnd {
                last,
                too_big: keep && self.too_big,
            });
            return;
        }
        let fits = self.message.len().saturating_add(size) <= limit;
        if keep && !self.too_big && !fits {
            self.too_big = true;
            self.message = Vec::new();
        }
        self.mode = Mode::Chunk {
            left: size,
            last,
            keep: keep && !self.too_big,
        };
    }

    /// Drops the message being read (it goes on being read to its end): the memory budget
    /// can't hold it. Its end is reported as too big, and [`Codec::starved`] says why.
    pub fn starve(&mut self) {
        match &mut self.mode {
            Mode::Data { keep, .. } | Mode::Chunk { keep, .. } => *keep = false,
            _ => {}
        }
        self.message = Vec::new();
        self.too_big = true;
        self.starved = true;
    }

    /// Whether the last message was dropped for want of memory rather than for its size.
    pub fn starved(&self) -> bool {
        self.starved
    }

    /// Memory the message being read holds.
    pub fn message_capacity(&self) -> usize {
        self.message.capacity()
    }

    /// Reads the next line raw (an AUTH response) instead of a command.
    pub fn start_line(&mut self) {
        self.mode = Mode::Line(Vec::new());
    }

    /// The message read by DATA or BDAT; the codec forgets it.
    pub fn take_message(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.message)
    }

    /// Bytes of the message so far.
    pub fn message_len(&self) -> usize {
        self.message.len()
    }

    /// The next event from `input`, consuming what it used; `None` when more bytes are needed
    /// (everything given was consumed).
    pub fn decode(&mut self, input: &mut Iter<'_, u8>) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.take() {
                return Some(event);
            }
            if input.as_slice().is_empty() {
                return None;
            }
            match &mut self.mode {
                Mode::Command => {
                    let rest = input.as_slice();
                    let Some(p) = rest.iter().position(|&b| b == b'\n') else {
                        if self.line.len() + rest.len() > MAX_COMMAND_LINE {
                            self.line.clear();
                            self.mode = Mode::SkipLine;
                        } else {
                            self.line.extend_from_slice(rest);
                            *input = [].iter();
                        }
                        continue;
                    };
                    *input = rest[p + 1..].iter();
                    if self.line.len() + p + 1 > MAX_COMMAND_LINE {
                        self.line.clear();
                        return Some(Event::LineTooLong);
                    }
                    self.line.extend_from_slice(&rest[..=p]);
                    let line = std::mem::take(&mut self.line);
                    if overflowing_number(&line) {
                        return Some(Event::NumberTooLarge);
                    }
                    let event = match self.requests.ingest(&mut line.iter()) {
                        // smtp-proto reads the bare `<Postmaster>` (RFC 5321 §4.1.1.3) as an
                        // empty address, as it does `<>`: tell the two apart
                        Ok(Request::Rcpt { to }) if to.address.is_empty() => {
                            let mut to = to.into_owned();
                            if line
                                .to_ascii_lowercase()
                                .windows(12)
                                .any(|w| w == b"<postmaster>")
                            {
                                to.address = "postmaster".into();
                            }
                            Event::Request(Request::Rcpt { to })
                        }
                        Ok(r) => Event::Request(r.into_owned()),
                        Err(Error::NeedsMoreData { .. } | Error::ResponseTooLong) => {
                            Event::Invalid(Error::SyntaxError {
                                syntax: "a command line ended by CRLF",
                            })
                        }
                        Err(e) => Event::Invalid(e),
                    };
                    // one whole line went in: nothing of it may linger in the parser
                    self.requests = RequestReceiver::default();
                    self.line = line;
                    self.line.clear();
                    return Some(event);
                }
                Mode::Line(buf) => {
                    let rest = input.as_slice();
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => {
                            buf.extend_from_slice(&rest[..p]);
                            *input = rest[p + 1..].iter();
                            let mut line = std::mem::take(buf);
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                            self.mode = Mode::Command;
                            if line.len() > MAX_COMMAND_LINE {
                                return Some(Event::LineTooLong);
                            }
                            return Some(Event::Line(line));
                        }
                        None => {
                            if buf.len() + rest.len() > MAX_COMMAND_LINE {
                                self.mode = Mode::SkipLine;
                            } else {
                                buf.extend_from_slice(rest);
                                *input = [].iter();
                            }
                        }
                    }
                }
                Mode::SkipLine => {
                    let rest = input.as_slice();
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => {
                            *input = rest[p + 1..].iter();
                            self.mode = Mode::Command;
                            return Some(Event::LineTooLong);
                        }
                        None => {
                            *input = [].iter();
                            return None;
                        }
                    }
                }
                Mode::Data { rx, keep } => {
                    if *keep {
                        make_room(&mut self.message, input.as_slice().len(), self.limit);
                    }
                    let done = rx.ingest(input, &mut self.message);
                    if !*keep {
                        self.message.clear();
                    }
                    if done {
                        let too_big = !*keep;
                        self.mode = Mode::Command;
                        return Some(Event::DataEnd { too_big });
                    }
                    if *keep && self.message.len() > self.limit {
                        *keep = false;
                        self.message = Vec::new();
                        self.too_big = true;
                    }
                }
                Mode::Chunk { left, last, keep } => {
                    let rest = input.as_slice();
                    let n = (*left).min(rest.len());
                    if *keep {
                        make_room(&mut self.message, n, self.limit);
                        self.message.extend_from_slice(&rest[..n]);
                    }
                    *input = rest[n..].iter();
                    *left -= n;
                    if *left == 0 {
                        let last = *last;
                        self.mode = Mode::Command;
                        return Some(Event::ChunkEnd {
                            last,
                            too_big: self.too_big,
                        });
                    }
                }
            }
        }
    }
}

/// Makes room in `message` for `incoming` more bytes, growing by half (not doubling) and never
/// far past `limit`, so the memory a message holds stays close to its size (the budget counts
/// capacity).
fn make_room(message: &mut Vec<u8>, incoming: usize, limit: usize) {
    if message.capacity() - message.len() >= incoming {
        return;
    }
    let want = (message.len() / 2).max(64 * 1024);
    let room = limit.saturating_add(incoming).saturating_sub(message.len());
    message.reserve_exact(want.min(room).max(incoming));
}

/// Where a DATA body stands between bytes. Lines end only at CRLF; a bare CR or LF is data.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line (after CRLF, or right after the DATA command).
    #[default]
    LineStart,
    /// A line that started with a dot.
    Dot,
    /// A line that is `.` then CR so far: LF ends the message, anything else is data.
    DotCr,
    /// Inside a line.
    Text,
    /// Inside a line, right after a CR.
    Cr,
}

/// Un-dot-stuffs a DATA body (RFC 5321 §4.5.2) until exactly `CRLF . CRLF`. The CRLF before
/// the dot belongs to the message.
#[derive(Debug, Default)]
struct DataReceiver {
    state: DataState,
}

impl DataReceiver {
    /// Appends what `input` holds of the message to `out`; true at the end of the data (the
    /// rest of `input` is what the client sent after it).
    fn ingest(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> bool {
        let mut rest = input.as_slice();
        let mut done = false;
        while !rest.is_empty() {
            if self.state == DataState::Text {
                // the bulk of a message: copy up to the next CR at once
                let n = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
                out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if rest.is_empty() {
                    break;
                }
            }
            let b = rest[0];
            rest = &rest[1..];
            self.state = match (self.state, b) {
                (DataState::LineStart, b'.') => DataState::Dot,
                (DataState::DotCr, b'\n') => {
                    self.state = DataState::LineStart;
                    done = true;
                    break;
                }
                // `.` CR then something else: the stuffed dot goes, the CR stays
                (DataState::DotCr, b) => {
                    out.push(b'\r');
                    Self::after_cr(out, b)
                }
                (DataState::Dot, b'\r') => DataState::DotCr,
                (DataState::Cr, b) => Self::after_cr(out, b),
                (DataState::LineStart | DataState::Text, b'\r') => {
                    out.push(b'\r');
                    DataState::Cr
                }
                // a dot line with more on it: the first dot was stuffing
                (DataState::LineStart | DataState::Dot | DataState::Text, b) => {
                    out.push(b);
                    DataState::Text
                }
            };
        }
        *input = rest.iter();
        done
    }

    /// The state after byte `b` that follows a CR inside a line (the CR is already out).
    fn after_cr(out: &mut Vec<u8>, b: u8) -> DataState {
        out.push(b);
        match b {
            b'\n' => DataState::LineStart,
            b'\r' => DataState::Cr,
            _ => DataState::Text,
        }
    }
}

/// Whether a command line carries a number no message could have: a `BDAT` chunk size or a
/// `SIZE=` value that does not fit 64 bits (smtp-proto would saturate or wrap it).
fn overflowing_number(line: &[u8]) -> bool {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let mut words = text.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let Some(verb) = words.next() else {
        return false;
    };
    let too_big = |digits: &[u8]| {
        !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .is_none()
    };
    if verb.eq_ignore_ascii_case(b"BDAT") {
        return words.next().is_some_and(too_big);
    }
    words.any(|w| w.len() > 5 && w[..5].eq_ignore_ascii_case(b"SIZE=") && too_big(&w[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` one after another, as separate reads.
    fn events(codec: &mut Codec, parts: &[&[u8]]) -> Vec<Event> {
        let mut out = Vec::new();
        for p in parts {
            let mut it = p.iter();
            while let Some(e) = codec.decode(&mut it) {
                out.push(e);
            }
            assert!(it.as_slice().is_empty());
        }
        out
    }

    #[test]
    fn split_command_lines_parse_once_complete() {
        let mut c = Codec::default();
        let ev = events(
            &mut c,
            &[
                b"MAIL FR",
                b"OM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nNO",
                b"OP\r\n",
            ],
        );
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(
            matches!(&ev[0], Event::Request(Request::Mail { from }) if from.address == "a@b.example")
        );
        assert!(
            matches!(&ev[1], Event::Request(Request::Rcpt { to }) if to.address == "c@d.example")
        );
        assert!(matches!(&ev[2], Event::Request(Request::Noop { .. })));
    }

    #[test]
    fn unknown_and_malformed_commands_are_events_not_failures() {
        let mut c = Codec::default();
        let ev = events(&mut c, &[b"FOO bar\r\nMAIL TO:<x>\r\n\xff\xfe\r\nQUIT\r\n"]);
        assert!(
            matches!(ev[0], Event::Invalid(Error::UnknownCommand)),
            "{ev:?}"
        );
        assert!(matches!(ev[1], Event::Invalid(_)), "{ev:?}");
        assert!(matches!(ev[2], Event::Invalid(_)), "{ev:?}");
        assert!(matches!(ev[3], Event::Request(Request::Quit)), "{ev:?}");
    }

    #[test]
    fn an_overlong_line_is_skipped_to_its_end_in_any_split() {
        let long = vec![b'a'; 10_000];
        for split in [100, 2040, 2050, 4095, 4097, 9_000] {
            let mut c = Codec::default();
            let mut first = b"NOOP ".to_vec();
            first.extend_from_slice(&long[..split]);
            let mut second = long[split..].to_vec();
            second.extend_from_slice(b"\r\nRSET\r\n");
            let ev = events(&mut c, &[&first, &second]);
            assert_eq!(ev.len(), 2, "split {split}: {ev:?}");
            assert!(matches!(ev[0], Event::LineTooLong));
            assert!(matches!(ev[1], Event::Request(Request::Rset)));
        }
    }

    #[test]
    fn an_overlong_line_in_one_read_is_refused_too() {
        let mut c = Codec::default();
        let mut line = b"NOOP ".to_vec();
        line.extend(std::iter::repeat_n(b'x', 3000));
        line.extend_from_slice(b"\r\nQUIT\r\n");
        let ev = events(&mut c, &[&line]);
        assert!(matches!(ev[0], Event::LineTooLong), "{ev:?}");
        assert!(matches!(ev[1], Event::Request(Request::Quit)), "{ev:?}");
    }

    #[test]
    fn data_is_unstuffed_and_ends_only_at_crlf_dot_crlf() {
        let mut c = Codec::default();
        c.start_data(1000);
        let ev = events(
            &mut c,
            &[
                b"Subject: x\r\n\r\n..dot\r\nbare\n.\nstill in\r",
                b"\n.",
                b"\r\nQUIT\r\n",
            ],
        );
        assert!(matches!(ev[0], Event::DataEnd { too_big: false }), "{ev:?}");
        assert_eq!(
            c.take_message(),
            b"Subject: x\r\n\r\n.dot\r\nbare\n.\nstill in\r\n".to_vec()
        );
        assert!(matches!(ev[1], Event::Request(Request::Quit)));
    }

    #[test]
    fn oversize_data_is_read_to_its_end_and_dropped() {
        let mut c = Codec::default();
        c.start_data(100);
        let big = vec![b'x'; 5000];
        let ev = events(&mut c, &[&big, &big, b"\r\n.\r\nNOOP\r\n"]);
        assert!(matches!(ev[0], Event::DataEnd { too_big: true }), "{ev:?}");
        assert!(c.take_message().is_empty());
        assert!(matches!(ev[1], Event::Request(Request::Noop { .. })));
    }

    #[test]
    fn bdat_chunks_accumulate_and_oversize_chunks_are_skipped() {
        let mut c = Codec::default();
        let ev = events(&mut c, &[b"BDAT 5\r\n"]);
        let Event::Request(Request::Bdat {
            chunk_size: 5,
            is_last: false,
        }) = ev[0]
        else {
            panic!("{ev:?}")
        };
        c.start_chunk(5, false, true, 8, true);
        let ev = events(&mut c, &[b"hel", b"loBDAT 3 LAST\r\n"]);
        assert!(matches!(
            ev[0],
            Event::ChunkEnd {
                last: false,
                too_big: false
            }
        ));
        c.start_chunk(3, true, false, 8, true);
        let ev = events(&mut c, &[b"!!!"]);
        assert!(matches!(
            ev[0],
            Event::ChunkEnd {
                last: true,
                too_big: false
            }
        ));
        assert_eq!(c.take_message(), b"hello!!!");
        // BDAT 0 LAST ends the message with no bytes to wait for
        c.start_chunk(2, false, true, 8, true);
        let ev = events(&mut c, &[b"hi"]);
        assert!(matches!(
            ev[0],
            Event::ChunkEnd {
                last: false,
                too_big: false
            }
        ));
        c.start_chunk(0, true, false, 8, true);
        let mut empty = [].iter();
        assert!(matches!(
            c.decode(&mut empty),
            Some(Event::ChunkEnd {
                last: true,
                too_big: false
            })
        ));
        assert_eq!(c.take_message(), b"hi");
        // a message over the limit: chunk skipped, flagged, stream stays in sync
        c.start_chunk(9, true, true, 8, true);
        let ev = events(&mut c, &[b"123456789NOOP\r\n"]);
        assert!(
            matches!(
                ev[0],
                Event::ChunkEnd {
                    last: true,
                    too_big: true
                }
            ),
            "{ev:?}"
        );
        assert!(matches!(ev[1], Event::Request(Request::Noop { .. })));
    }

    /// The end-of-data variants published for SMTP smuggling (SEC Consult, 2023, and the
    /// `\r\n.\r\r\n` an outside probe found here): none may end DATA, in any split of the input.
    #[test]
    fn smuggled_end_of_data_variants_are_data_in_every_split() {
        let variants: [&[u8]; 14] = [
            b"\n.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r\n.\r\r\n",
            b"\r\r\n.\r\r\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
            b"\r\n .\r\n",
            b"\r\n.\n\r\n",
            b"\r.\n",
        ];
        for v in variants {
            let mut input = b"Subject: a\r\n\r\nhello".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(
                b"MAIL FROM:<ceo@a.test>\r\nRCPT TO:<x@a.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n",
            );
            for split in 0..=input.len() {
                let mut c = Codec::default();
                c.start_data(100_000);
                let ev = events(&mut c, &[&input[..split], &input[split..]]);
                assert_eq!(ev.len(), 2, "{v:?} split {split}: {ev:?}");
                assert!(matches!(ev[0], Event::DataEnd { too_big: false }), "{v:?}");
                assert!(matches!(ev[1], Event::Request(Request::Quit)), "{v:?}");
                let m = c.take_message();
                assert!(m.ends_with(b"forged\r\n"), "{v:?} split {split}: {m:?}");
                assert!(
                    m.windows(22).any(|w| w == b"MAIL FROM:<ceo@a.test>"),
                    "{v:?}: the smuggled command is data"
                );
            }
            // and byte by byte
            let mut c = Codec::default();
            c.start_data(100_000);
            let parts: Vec<&[u8]> = input.chunks(1).collect();
            let ev = events(&mut c, &parts);
            assert_eq!(ev.len(), 2, "{v:?} bytewise: {ev:?}");
        }
    }

    #[test]
    fn only_crlf_dot_crlf_ends_data_and_stuffed_dots_are_removed() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b".\r\n", b""),
            (b"a\r\n.\r\n", b"a\r\n"),
            (b"..\r\n.\r\n", b".\r\n"),
            (b"a\r\n.\r\r\nb\r\n.\r\n", b"a\r\n\r\r\nb\r\n"),
            (b"a\r\n..x\rb\r\n.\r\n", b"a\r\n.x\rb\r\n"),
        ];
        for (input, want) in cases {
            let mut c = Codec::default();
            c.start_data(1000);
            let ev = events(&mut c, &[input]);
            assert!(
                matches!(ev[..], [Event::DataEnd { too_big: false }]),
                "{input:?}: {ev:?}"
            );
            assert_eq!(c.take_message(), want, "{input:?}");
        }
    }

    #[test]
    fn overflowing_numbers_are_refused_before_parsing() {
        let mut c = Codec::default();
        let ev = events(
            &mut c,
            &[b"BDAT 184467440737095516160000000021 LAST\r\nMAIL FROM:<> SIZE=99999999999999999999999\r\nMAIL FROM:<> SIZE=1000\r\nBDAT 21 LAST\r\n"],
        );
        assert!(matches!(ev[0], Event::NumberTooLarge), "{ev:?}");
        assert!(matches!(ev[1], Event::NumberTooLarge), "{ev:?}");
        assert!(
            matches!(&ev[2], Event::Request(Request::Mail { .. })),
            "{ev:?}"
        );
        assert!(
            matches!(
                ev[3],
                Event::Request(Request::Bdat {
                    chunk_size: 21,
                    is_last: true
                })
            ),
            "{ev:?}"
        );
    }
}
