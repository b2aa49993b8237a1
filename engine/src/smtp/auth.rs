//! AUTH (submission ports): PLAIN and LOGIN, only over TLS, against the accounts. Failures are
//! delayed and counted per client address; a disabled account can't authenticate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::Port;
use super::reply::Reply;
use super::session::{Core, Flow};
use crate::login::Verdict;
use crate::metrics::{LoginResult, Protocol};

/// Where an AUTH exchange stands while it waits for the client's next line.
pub(super) enum AuthStep {
    /// PLAIN without an initial response: the whole credential comes next.
    Plain,
    /// LOGIN: the user name comes next.
    LoginUser,
    /// LOGIN: the password comes next, for this user.
    LoginPassword(String),
}

fn decode(b64: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(b64).ok()
}

impl Core {
    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if self.port == Port::Mx {
            return self.reply(Reply::new(
                503,
                "5.5.1",
                "AUTH is not available on this port",
            ));
        }
        if self.account.is_some() {
            return self.reply(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.tls.is_none() {
            return self.reply(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            ));
        }
        if self.tx.is_some() {
            return self.reply(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
        }
        let initial = initial.trim();
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => self.challenge(AuthStep::Plain, ""),
            AUTH_PLAIN => {
                let raw = if initial == "=" {
                    Some(Vec::new())
                } else {
                    decode(initial.as_bytes())
                };
                match raw {
                    Some(raw) => self.plain(&raw).await,
                    None => self.reply(Reply::new(501, "5.5.2", "Invalid base64 data")),
                }
            }
            AUTH_LOGIN if initial.is_empty() => self.challenge(AuthStep::LoginUser, "VXNlcm5hbWU6"),
            AUTH_LOGIN => match decode(initial.as_bytes()) {
                Some(user) => self.challenge(
                    AuthStep::LoginPassword(String::from_utf8_lossy(&user).into_owned()),
                    "UGFzc3dvcmQ6",
                ),
                None => self.reply(Reply::new(501, "5.5.2", "Invalid base64 data")),
            },
            _ => self.reply(Reply::new(504, "5.5.4", "Unrecognized authentication type")),
        }
    }

    /// Sends a `334` challenge and reads the next line raw.
    fn challenge(&mut self, step: AuthStep, text: &'static str) -> Flow {
        self.auth = Some(step);
        self.codec.start_line();
        Reply::plain(334, vec![text.into()]).write_to(&mut self.out);
        Flow::Continue
    }

    pub(super) async fn auth_line(&mut self, line: Vec<u8>) -> Flow {
        let Some(step) = self.auth.take() else {
            return self.reply(Reply::new(500, "5.5.2", "Command unrecognized"));
        };
        if line == b"*" {
            return self.reply(Reply::new(501, "5.7.0", "Authentication aborted"));
        }
        let Some(raw) = decode(&line) else {
            return self.reply(Reply::new(501, "5.5.2", "Invalid base64 data"));
        };
        match step {
            AuthStep::Plain => self.plain(&raw).await,
            AuthStep::LoginUser => self.challenge(
                AuthStep::LoginPassword(String::from_utf8_lossy(&raw).into_owned()),
                "UGFzc3dvcmQ6",
            ),
            AuthStep::LoginPassword(user) => {
                let pass = String::from_utf8_lossy(&raw).into_owned();
                self.verify(user, pass).await
            }
        }
    }

    /// SASL PLAIN: `authzid NUL authcid NUL password`; an authzid must be the same user.
    async fn plain(&mut self, raw: &[u8]) -> Flow {
        let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        let [authz, user, pass] = parts.as_slice() else {
            return self.reply(Reply::new(501, "5.5.2", "Invalid PLAIN credentials"));
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
            return self.reply(Reply::new(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            ));
        }
        let (user, pass) = (
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(pass).into_owned(),
        );
        self.verify(user, pass).await
    }

    async fn verify(&mut self, user: String, pass: String) -> Flow {
        let verdict = self
            .server
            .logins
            .check(crate::login::Protocol::Smtp, self.peer.ip(), &user, &pass)
            .await;
        self.server
            .metrics
            .login(Protocol::Smtp, LoginResult::from(&verdict));
        match verdict {
            Verdict::Accepted(account) => {
                tracing::info!(user = %account.email(), "smtp authenticated");
                self.account = Some(account);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            Verdict::Refused => {
                let n = self.server.logins.failures(self.peer.ip());
                tracing::debug!(failures = n, "smtp authentication failed");
                self.reply(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ))
            }
            Verdict::Busy => {
                tracing::warn!("smtp authentication refused: too many logins being checked");
                self.reply(Reply::new(454, "4.7.0", "Temporary authentication failure"))
            }
            Verdict::Failed(e) => {
                tracing::error!(error = %e, "login check failed");
                self.reply(Reply::new(454, "4.7.0", "Temporary authentication failure"))
            }
        }
    }
}
