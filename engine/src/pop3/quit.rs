//! QUIT (RFC 1939 §6): in TRANSACTION the session enters UPDATE, where the messages marked
//! deleted are removed in one durable transaction (all or none) and the retrieved ones get
//! `\Seen` (as Dovecot does unless `pop3_no_flag_updates`); `+OK` only after the commit.

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{Flow, Session, State};
use super::wire::{Code, Reply};
use crate::mailbox::{self, FlagChange, FlagOp};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn quit(&mut self) -> Flow {
        let State::Transaction(maildrop) =
            std::mem::replace(&mut self.state, State::authorization())
        else {
            self.reply(&Reply::ok("wispd POP3 server signing off"));
            return Flow::Quit;
        };
        let account = maildrop.account.id;
        let deleted = maildrop.deleted();
        let seen = maildrop.newly_seen();
        let left = maildrop.len() - deleted.len();
        if deleted.is_empty() && seen.is_empty() {
            self.reply(&Reply::ok(format!(
                "wispd POP3 server signing off ({left} messages left)"
            )));
            return Flow::Quit;
        }
        let store = self.server.store.clone();
        let changes = self.server.changes.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let removed = if deleted.is_empty() {
                Ok(Vec::new())
            } else {
                mailbox::remove(&store, &changes, account, "INBOX", &deleted)
            };
            if removed.is_ok() && !seen.is_empty() {
                let flags = ["\\Seen".to_string()];
                let change = FlagChange {
                    op: FlagOp::Add,
                    flags: &flags,
                    unchanged_since: None,
                };
                if let Err(e) =
                    mailbox::set_flags(&store, &changes, account, "INBOX", &seen, change)
                {
                    // the deletes are committed; a missing \Seen is no reason to fail QUIT
                    tracing::warn!(error = %e, "pop3: marking retrieved messages seen failed");
                }
            }
            removed
        })
        .await;
        // the maildrop (and its lock) lives until the commit is done
        drop(maildrop);
        match committed {
            Ok(Ok(removed)) => {
                tracing::info!(removed = removed.len(), "pop3 update");
                self.reply(&Reply::ok(format!(
                    "wispd POP3 server signing off ({left} messages left)"
                )));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "pop3 update failed");
                self.reply(
                    &Reply::err("Deleted messages not removed, try again").with(Code::SysTemp),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "pop3 update task failed");
                self.reply(
                    &Reply::err("Deleted messages not removed, try again").with(Code::SysTemp),
                );
            }
        }
        Flow::Quit
    }
}
