//! SMTP replies as values: a code, an RFC 3463 enhanced status code and text lines.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code (`5.1.1`), or none (greeting, EHLO).
    pub status: Option<&'static str>,
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code, one line per entry.
    pub fn plain(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form; CR and LF inside the text can't break the framing.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}", self.code).as_bytes());
            if let Some(s) = self.status {
                out.extend_from_slice(s.as_bytes());
                out.push(b' ');
            }
            out.extend(
                line.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line_replies() {
        let mut out = Vec::new();
        Reply::new(550, "5.1.1", "no\r\nsuch user").write_to(&mut out);
        assert_eq!(out, b"550 5.1.1 no  such user\r\n");
        out.clear();
        Reply::plain(
            250,
            vec!["mx Hello".into(), "PIPELINING".into(), "SIZE 10".into()],
        )
        .write_to(&mut out);
        assert_eq!(out, b"250-mx Hello\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }
}
