//! DELE and RSET (RFC 1939 §5): deletion marks, kept in the session until QUIT commits them.

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Session, State};
use super::wire::Reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn dele(&mut self, n: u64) {
        let State::Transaction(m) = &mut self.state else {
            return;
        };
        match m.get_mut(n) {
            Ok(msg) => {
                msg.deleted = true;
                self.reply(&Reply::ok(format!("message {n} deleted")));
            }
            Err(why) => self.missing(n, why),
        }
    }

    pub(super) fn rset(&mut self) {
        let State::Transaction(m) = &mut self.state else {
            return;
        };
        m.undelete();
        let (n, octets) = m.stat();
        self.reply(&Reply::ok(format!(
            "maildrop has {n} messages ({octets} octets)"
        )));
    }
}
