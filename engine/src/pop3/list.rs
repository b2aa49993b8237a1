//! STAT, LIST and UIDL (RFC 1939 §5, §7): the maildrop's listings, deleted messages left out.
//! Sizes are the stored octet counts: messages arrive over SMTP and IMAP with CRLF line ends,
//! so that is what RETR sends (a bare LF, which RETR sends as CRLF, is the exception; see
//! [`super::wire::sent_size`]).

use tokio::io::{AsyncRead, AsyncWrite};

use super::maildrop::{Maildrop, Message};
use super::session::{Session, State};
use super::wire::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn stat(&mut self) {
        let State::Transaction(m) = &self.state else {
            return;
        };
        let (n, octets) = m.stat();
        self.reply(&Reply::ok(format!("{n} {octets}")));
    }

    pub(super) fn list(&mut self, n: Option<u64>) {
        self.listing(n, |_, msg| msg.size.to_string());
    }

    pub(super) fn uidl(&mut self, n: Option<u64>) {
        self.listing(n, Maildrop::uidl);
    }

    /// One message's line (`+OK n value`), or every visible message's (`+OK` then `n value`
    /// lines and `.`).
    fn listing(&mut self, n: Option<u64>, value: impl Fn(&Maildrop, &Message) -> String) {
        let State::Transaction(m) = &self.state else {
            return;
        };
        match n {
            Some(n) => match m.get(n) {
                Ok(msg) => {
                    let r = Reply::ok(format!("{n} {}", value(m, msg)));
                    self.reply(&r);
                }
                Err(why) => self.missing(n, why),
            },
            None => {
                let (count, octets) = m.stat();
                let mut body = Vec::with_capacity(count * 24 + 32);
                Reply::ok(format!("{count} messages ({octets} octets)")).write_to(&mut body);
                for (i, msg) in m.visible() {
                    body.extend_from_slice(format!("{i} {}\r\n", value(m, msg)).as_bytes());
                }
                body.extend_from_slice(b".\r\n");
                self.raw(&body);
            }
        }
    }
}
