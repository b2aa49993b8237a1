//! RETR and TOP (RFC 1939 §5, §7): a message, or its header and first lines, byte-stuffed and
//! streamed out in pieces (the message is read from the store whole; the stuffed copy is not
//! built whole). RETR marks the message for `\Seen` at QUIT; TOP doesn't.

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Session, State};
use super::wire::{Code, Reply, Stuffer};
use crate::mailbox;

/// Message bytes stuffed at a time.
const PIECE: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// RETR `n` (`top` = None) or TOP `n` `top`.
    pub(super) async fn retr(&mut self, n: u64, top: Option<u64>) -> std::io::Result<()> {
        let State::Transaction(m) = &self.state else {
            return Ok(());
        };
        let message_id = match m.get(n) {
            Ok(msg) => msg.message_id,
            Err(why) => {
                self.missing(n, why);
                return Ok(());
            }
        };
        // a store read, done in place as IMAP's FETCH does: reads don't wait for commits
        let bytes = match mailbox::message(&self.server.store, message_id) {
            Ok(Some(b)) => b,
            Ok(None) => {
                // expunged over IMAP since this session's login
                self.reply(&Reply::err(format!("message {n} no longer exists")));
                return Ok(());
            }
            Err(e) => {
                tracing::error!(error = %e, "pop3 message read failed");
                self.reply(
                    &Reply::err("Cannot read the message, try again later").with(Code::SysTemp),
                );
                return Ok(());
            }
        };
        let body = match top {
            None => {
                if let State::Transaction(m) = &mut self.state
                    && let Ok(msg) = m.get_mut(n)
                {
                    msg.retrieved = true;
                }
                // the octets as sent (LIST's size unless the message holds bare LFs)
                self.reply(&Reply::ok(format!(
                    "{} octets",
                    super::wire::sent_size(&bytes)
                )));
                &bytes[..]
            }
            Some(lines) => {
                self.reply(&Reply::ok(""));
                super::wire::top(&bytes, lines)
            }
        };
        let mut stuffer = Stuffer::default();
        for piece in body.chunks(PIECE) {
            stuffer.push(piece, &mut self.out);
            self.flush_if_full().await?;
        }
        stuffer.finish(&mut self.out);
        Ok(())
    }
}
