//! RCPT TO: resolves a recipient to local accounts and forwarding destinations, or refuses it.
//! The MX never relays: other domains are accepted only from authenticated submission, as
//! forwarder destinations, or as the original sender behind a genuine SRS address (a bounce).

use smtp_proto::RcptTo;

use super::Port;
use super::reply::Reply;
use super::session::{Core, Flow};
use crate::address;
use crate::directory::Resolution;
use crate::metrics::RcptRefusal;

impl Core {
    pub(super) fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let Some(tx) = self.tx.as_ref() else {
            return self.reply(Reply::new(503, "5.5.1", "Need MAIL command first"));
        };
        if tx.chunking {
            return self.reply(Reply::new(503, "5.5.1", "RCPT after BDAT"));
        }
        if tx.list.is_some() {
            return self.refuse_rcpt(
                RcptRefusal::TooMany,
                Reply::new(
                    452,
                    "4.5.3",
                    "Too many recipients: a mailing list takes a transaction of its own",
                ),
            );
        }
        if tx.rcpts.len() >= self.server.settings.max_recipients {
            return self.refuse_rcpt(
                RcptRefusal::TooMany,
                Reply::new(452, "4.5.3", "Too many recipients"),
            );
        }
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            let param = if to.orcpt.is_some() {
                "ORCPT"
            } else if to.rrvs != 0 {
                "RRVS"
            } else {
                "NOTIFY"
            };
            return self.refuse_rcpt(
                RcptRefusal::Syntax,
                Reply::new(
                    555,
                    "5.5.4",
                    format!("RCPT parameter {param} is not supported"),
                ),
            );
        }
        let mut rcpt = to.address.trim().to_string();
        if !rcpt.is_ascii() && !tx.smtputf8 {
            return self.refuse_rcpt(
                RcptRefusal::Syntax,
                Reply::new(
                    553,
                    "5.6.7",
                    "Non-ASCII recipient address needs the SMTPUTF8 parameter on MAIL",
                ),
            );
        }
        // RFC 5321 §4.5.1: postmaster is always accepted, bare or at a local domain.
        match self.postmaster(&rcpt) {
            Ok(Some(target)) => rcpt = target,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "recipient lookup failed");
                return self.refuse_rcpt(
                    RcptRefusal::Lookup,
                    Reply::new(451, "4.3.0", "Temporary lookup failure"),
                );
            }
        }
        // A mailing list's addresses (its own, requests, VERP bounces). Before the syntax
        // check: VERP local parts may be longer than 64 characters.
        if self.server.lists.is_some() {
            match self.server.directory.list_target(&rcpt) {
                Ok(Some(target)) => return self.accept_list(target, rcpt),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "recipient lookup failed");
                    return self.refuse_rcpt(
                        RcptRefusal::Lookup,
                        Reply::new(451, "4.3.0", "Temporary lookup failure"),
                    );
                }
            }
        }
        // A bounce coming back to an address this server rewrote when forwarding (SRS). Before
        // the syntax check: SRS local parts may be longer than 64 characters.
        if let Some(original) = self.server.queue.srs().reverse(&rcpt)
            && rcpt.rsplit_once('@').is_some_and(|(_, d)| {
                self.server
                    .directory
                    .is_local_domain(&d.to_ascii_lowercase())
                    .unwrap_or(false)
            })
        {
            return self.accept_remote(original, Some(rcpt));
        }
        if address::address(&rcpt).is_none() {
            // Not an address an account could have (quoted or non-ASCII local part, address
            // literal): unknown in a local domain, a relay attempt elsewhere.
            let Some((l, d)) = rcpt.rsplit_once('@').filter(|(l, d)| {
                !l.is_empty() && !d.is_empty() && !rcpt.chars().any(|c| c.is_control() || c == ' ')
            }) else {
                return self.refuse_rcpt(
                    RcptRefusal::Syntax,
                    Reply::new(501, "5.1.3", "Bad recipient address syntax"),
                );
            };
            let _ = l;
            let local = address::domain(d)
                .is_some_and(|d| self.server.directory.is_local_domain(&d).unwrap_or(false));
            return if local {
                self.refuse_rcpt(
                    RcptRefusal::UnknownUser,
                    Reply::new(
                        550,
                        "5.1.1",
                        format!("<{rcpt}>: Recipient address rejected: User unknown"),
                    ),
                )
            } else {
                self.refuse_rcpt(
                    RcptRefusal::RelayDenied,
                    Reply::new(554, "5.7.1", format!("<{rcpt}>: Relay access denied")),
                )
            };
        }
        let (accounts, remote) = match self.server.directory.resolve(&rcpt) {
            Ok(Resolution::Foreign) if self.port != Port::Mx => {
                if let Some(refused) = self.rate_recipient(false) {
                    return refused;
                }
                return self.accept_remote(rcpt, None);
            }
            Ok(Resolution::Foreign) => {
                return self.refuse_rcpt(
                    RcptRefusal::RelayDenied,
                    Reply::new(554, "5.7.1", format!("<{rcpt}>: Relay access denied")),
                );
            }
            Ok(Resolution::Unknown) => {
                return self.refuse_rcpt(
                    RcptRefusal::UnknownUser,
                    Reply::new(
                        550,
                        "5.1.1",
                        format!("<{rcpt}>: Recipient address rejected: User unknown"),
                    ),
                );
            }
            Ok(Resolution::Local { accounts, remote }) => (accounts, remote),
            Err(e) => {
                tracing::error!(error = %e, "recipient lookup failed");
                return self.refuse_rcpt(
                    RcptRefusal::Lookup,
                    Reply::new(451, "4.3.0", "Temporary lookup failure"),
                );
            }
        };
        let enabled: Vec<_> = accounts.into_iter().filter(|a| a.enabled).collect();
        if enabled.is_empty() && remote.is_empty() {
            return self.refuse_rcpt(
                RcptRefusal::Disabled,
                Reply::new(550, "5.2.1", format!("<{rcpt}>: Mailbox disabled")),
            );
        }
        let full = |a: &wispd_store::schema::MailAccount| {
            a.quota_mb > 0 && a.used_bytes >= a.quota_mb.saturating_mul(1 << 20)
        };
        if remote.is_empty() && enabled.iter().all(full) {
            return self.refuse_rcpt(
                RcptRefusal::MailboxFull,
                Reply::new(452, "4.2.2", format!("<{rcpt}>: Mailbox full")),
            );
        }
        if let Some(refused) = self.rate_recipient(true) {
            return refused;
        }
        if let Some(tx) = self.tx.as_mut() {
            for a in enabled.iter().filter(|a| !full(a)) {
                if !tx.accounts.contains(&a.id) {
                    tx.accounts.push(a.id);
                    tx.emails.push(a.email());
                    tx.envelope_to.push(rcpt.clone());
                }
            }
            for r in remote {
                if !tx.remote.iter().any(|(x, _)| *x == r) {
                    tx.remote.push((r, Some(rcpt.clone())));
                }
            }
            tx.rcpts.push(rcpt);
        }
        self.reply(Reply::new(250, "2.1.5", "Ok"))
    }
}

impl Core {
    /// A list address as the recipient: alone in its transaction (its copies differ from
    /// what other recipients would get, and its verdict is its own).
    fn accept_list(&mut self, target: crate::lists::ListTarget, rcpt: String) -> Flow {
        let busy = self
            .tx
            .as_ref()
            .is_some_and(|tx| !tx.rcpts.is_empty() || tx.list.is_some());
        if busy {
            return self.refuse_rcpt(
                RcptRefusal::TooMany,
                Reply::new(
                    452,
                    "4.5.3",
                    format!("Too many recipients: <{rcpt}> is a mailing list and takes a transaction of its own"),
                ),
            );
        }
        if let Some(refused) = self.rate_recipient(true) {
            return refused;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.list = Some(target);
            tx.rcpts.push(rcpt);
        }
        self.reply(Reply::new(250, "2.1.5", "Ok"))
    }

    /// Where mail for `rcpt` goes when it is a postmaster address this server must accept
    /// but no account or forwarder has: the configured `smtp.postmaster`, else the domain's
    /// first account (the server's first for a bare `<postmaster>`). `None`: not such an
    /// address, or it resolves by itself.
    fn postmaster(&self, rcpt: &str) -> Result<Option<String>, crate::directory::DirError> {
        let dir = &self.server.directory;
        let domain = match rcpt.rsplit_once('@') {
            None if rcpt.eq_ignore_ascii_case("postmaster") => None,
            Some((l, d)) if l.eq_ignore_ascii_case("postmaster") => {
                let Some(d) = address::domain(d) else {
                    return Ok(None);
                };
                if !dir.is_local_domain(&d)?
                    || !matches!(
                        dir.resolve(&format!("postmaster@{d}"))?,
                        Resolution::Unknown
                    )
                {
                    return Ok(None);
                }
                Some(d)
            }
            _ => return Ok(None),
        };
        let configured = &self.server.settings.postmaster;
        if !configured.is_empty() {
            return Ok(Some(configured.clone()));
        }
        let scope = domain.map(|d| vec![d]);
        Ok(dir
            .accounts(scope.as_deref())?
            .into_iter()
            .find(|a| a.enabled)
            .map(|a| a.email()))
    }

    /// A submitting account past its group's recipients per hour: `451 4.7.0` for this one.
    fn rate_recipient(&mut self, local: bool) -> Option<Flow> {
        let (Some(r), Some(account), Some(tx)) = (
            self.server.ratelimit.clone(),
            self.account.as_ref(),
            self.tx.as_ref(),
        ) else {
            return None;
        };
        let (remote, so_far) = (tx.remote.len() as u64, tx.accounts.len() as u64);
        match r.check_recipient(account, local, remote, so_far, wispd_store::unix_now()) {
            Ok(()) => None,
            Err(limited) => {
                tracing::info!(user = %account.email(), reason = %limited.0, "recipient refused: rate limit");
                Some(self.reply(Reply::new(451, "4.7.0", limited.0)))
            }
        }
    }

    /// Accepts `address` in another domain for the outbound queue (`original`: what the
    /// client wrote, when that was an SRS address).
    fn accept_remote(&mut self, address: String, original: Option<String>) -> Flow {
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpts
                .push(original.clone().unwrap_or_else(|| address.clone()));
            if !tx.remote.iter().any(|(x, _)| *x == address) {
                tx.remote.push((address, original));
            }
        }
        self.reply(Reply::new(250, "2.1.5", "Ok"))
    }
}
