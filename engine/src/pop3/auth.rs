//! USER/PASS (RFC 1939 §7) and AUTH PLAIN (RFC 5034, RFC 4616), through the login gate every
//! protocol shares (failures counted and delayed as for IMAP), then the maildrop opened: its
//! lock taken (`[IN-USE]` when another session holds it) and INBOX's snapshot read.
//! Plaintext credentials only over TLS or from loopback; `[AUTH]` for wrong credentials,
//! `[SYS/TEMP]` when the gate is busy (RFC 2449, RFC 3206).

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};
use wispd_store::schema::MailAccount;

use super::maildrop::Maildrop;
use super::session::{Session, State};
use super::wire::{Code, Reply};
use crate::login::Verdict;
use crate::mailbox;
use crate::metrics::{LoginResult, Protocol};

fn needs_tls() -> Reply {
    Reply::err("Plaintext authentication disallowed on non-secure connections: STLS first")
        .with(Code::SysPerm)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn user(&mut self, name: String) {
        if !self.plaintext_ok() {
            self.reply(&needs_tls());
            return;
        }
        if let State::Authorization { user, .. } = &mut self.state {
            *user = Some(name);
        }
        self.reply(&Reply::ok(""));
    }

    pub(super) async fn pass(&mut self, password: String) {
        if !self.plaintext_ok() {
            self.reply(&needs_tls());
            return;
        }
        let State::Authorization { user, .. } = &mut self.state else {
            return;
        };
        // a failed PASS needs a new USER (RFC 1939 §7)
        let Some(name) = user.take() else {
            self.reply(&Reply::err("USER first"));
            return;
        };
        self.login(name, password).await;
    }

    pub(super) async fn auth(&mut self, mechanism: Option<String>, initial: Option<String>) {
        let Some(mechanism) = mechanism else {
            // the mechanism list (what clients before RFC 5034 ask with a bare AUTH)
            self.reply(&Reply::ok(""));
            if self.plaintext_ok() {
                self.raw(b"PLAIN\r\n");
            }
            self.raw(b".\r\n");
            return;
        };
        if mechanism != "PLAIN" {
            self.reply(&Reply::err(
                "Unsupported authentication mechanism: PLAIN only",
            ));
            return;
        }
        if !self.plaintext_ok() {
            self.reply(&needs_tls());
            return;
        }
        match initial {
            Some(i) => self.plain(i.as_bytes()).await,
            None => {
                if let State::Authorization { sasl, .. } = &mut self.state {
                    *sasl = true;
                }
                self.raw(b"+ \r\n");
            }
        }
    }

    /// The line after `AUTH PLAIN` and its `+ ` continuation.
    pub(super) async fn sasl_response(&mut self, line: &[u8]) {
        if line == b"*" {
            self.reply(&Reply::err("Authentication aborted"));
            return;
        }
        self.plain(line).await;
    }

    /// A SASL PLAIN response: base64 of `authzid NUL authcid NUL password` (`=` is empty);
    /// authzid empty or the user itself.
    async fn plain(&mut self, b64: &[u8]) {
        let b64 = if b64 == b"=" { &b""[..] } else { b64 };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            self.reply(&Reply::err("Invalid base64"));
            return;
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authz, user, pass] = parts.as_slice() else {
            self.reply(&Reply::err("Invalid PLAIN response").with(Code::Auth));
            return;
        };
        let (user, pass) = (
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(pass).into_owned(),
        );
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user.as_bytes()) {
            self.reply(&Reply::err("Can't act as another user").with(Code::Auth));
            return;
        }
        self.login(user, pass).await;
    }

    async fn login(&mut self, user: String, pass: String) {
        let verdict = self
            .server
            .logins
            .check(crate::login::Protocol::Pop3, self.peer.ip(), &user, &pass)
            .await;
        self.server
            .metrics
            .login(Protocol::Pop3, LoginResult::from(&verdict));
        match verdict {
            Verdict::Accepted(account) => self.open(account),
            Verdict::Refused => {
                let n = self.server.logins.failures(self.peer.ip());
                tracing::debug!(failures = n, "pop3 login failed");
                self.reply(&Reply::err("Authentication failed.").with(Code::Auth));
            }
            Verdict::Busy => {
                tracing::warn!("pop3 login refused: too many logins being checked");
                self.reply(
                    &Reply::err("Temporary authentication failure, try again later")
                        .with(Code::SysTemp),
                );
            }
            Verdict::Failed(e) => {
                tracing::error!(error = %e, "login check failed");
                self.reply(
                    &Reply::err("Temporary authentication failure, try again later")
                        .with(Code::SysTemp),
                );
            }
        }
    }

    /// The TRANSACTION state: the account's lock, then INBOX as it is now.
    fn open(&mut self, account: MailAccount) {
        let Some(lock) = self.server.locks.try_lock(account.id) else {
            tracing::info!(user = %account.email(), "pop3 login: maildrop in use");
            self.reply(&Reply::err("Mailbox is locked by another POP3 session").with(Code::InUse));
            return;
        };
        let maildrop = match mailbox::snapshot(&self.server.store, account.id, "INBOX") {
            Ok(Some((mb, entries))) => Maildrop::new(account, mb.uidvalidity, entries, lock),
            // no INBOX (never for accounts the directory made): an empty maildrop
            Ok(None) => Maildrop::new(account, 0, Vec::new(), lock),
            Err(e) => {
                tracing::error!(error = %e, "pop3: reading INBOX failed");
                self.reply(
                    &Reply::err("Cannot open the maildrop, try again later").with(Code::SysTemp),
                );
                return;
            }
        };
        let (n, octets) = maildrop.stat();
        tracing::info!(user = %maildrop.account.email(), messages = n, "pop3 login");
        self.state = State::Transaction(maildrop);
        self.reply(&Reply::ok(format!(
            "Logged in, maildrop has {n} messages ({octets} octets)"
        )));
    }
}
