//! CAPA (RFC 2449 §5): what this session may do now. USER and SASL PLAIN only where plaintext
//! logins are allowed (TLS or loopback), STLS only before TLS and login.

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Session, State};
use super::wire::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn capa(&mut self) {
        self.reply(&Reply::ok("Capability list follows"));
        let before_login = matches!(self.state, State::Authorization { .. });
        let mut lines = vec!["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"];
        if before_login && self.plaintext_ok() {
            lines.push("USER");
            lines.push("SASL PLAIN");
        }
        if self.stls_offered() {
            lines.push("STLS");
        }
        lines.push("IMPLEMENTATION wispd");
        for l in lines {
            self.raw(l.as_bytes());
            self.raw(b"\r\n");
        }
        self.raw(b".\r\n");
    }
}
