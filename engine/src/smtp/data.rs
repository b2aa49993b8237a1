//! DATA and BDAT: the message itself, then its durable delivery. The final `250` is sent only
//! after the store has committed the message for every recipient that got it.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::reply::Reply;
use super::session::{Core, Flow, Transaction};
use crate::delivery::{Outcome, Recipient};

impl Core {
    pub(super) fn data(&mut self) -> Flow {
        let Some(tx) = self.tx.as_ref() else {
            return self.reply(Reply::new(503, "5.5.1", "Need MAIL command first"));
        };
        if tx.chunking {
            return self.reply(Reply::new(503, "5.5.1", "DATA after BDAT"));
        }
        if tx.accounts.is_empty() {
            return self.reply(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        self.codec.start_data(self.server.settings.max_message_size);
        self.reply(Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ))
    }

    pub(super) async fn data_end(&mut self, too_big: bool) -> Flow {
        if too_big {
            self.tx = None;
            return self.too_big();
        }
        let reply = self.deliver().await;
        self.reply(reply)
    }

    /// BDAT: the chunk follows the command at once, so it is read (or skipped) whatever the
    /// verdict; the reply comes after it.
    pub(super) fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let limit = self.server.settings.max_message_size;
        let verdict = match self.tx.as_mut() {
            None => Err(Reply::new(503, "5.5.1", "Need MAIL command first")),
            Some(tx) if tx.accounts.is_empty() => {
                Err(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(tx) => {
                let first = !tx.chunking;
                tx.chunking = true;
                Ok(first)
            }
        };
        match verdict {
            Ok(first) => self.codec.start_chunk(size, last, first, limit, true),
            Err(reply) => {
                self.bdat_rejected = Some(reply);
                self.codec.start_chunk(size, last, false, limit, false);
            }
        }
        Flow::Continue
    }

    pub(super) async fn chunk_end(&mut self, last: bool, too_big: bool) -> Flow {
        if let Some(reply) = self.bdat_rejected.take() {
            self.tx = None;
            return self.reply(reply);
        }
        if too_big {
            // The rest of this message's chunks are skipped as out of sequence.
            self.tx = None;
            return self.too_big();
        }
        if !last {
            let n = self.codec.message_len();
            return self.reply(Reply::new(250, "2.0.0", format!("{n} octets received")));
        }
        let reply = self.deliver().await;
        self.reply(reply)
    }

    fn too_big(&mut self) -> Flow {
        let limit = self.server.settings.max_message_size;
        self.reply(Reply::new(
            552,
            "5.3.4",
            format!("Message size exceeds fixed limit of {limit} bytes"),
        ))
    }

    /// Stores the message for every account of the transaction and says how it went.
    async fn deliver(&mut self) -> Reply {
        let body = self.codec.take_message();
        let Some(tx) = self.tx.take() else {
            return Reply::new(503, "5.5.1", "Need MAIL command first");
        };
        // Submission: the From: header must be the account's own too.
        if let Some(account) = &self.account
            && let Some(from) = header_from(&body)
            && !super::mail::owns(&account.email(), &from)
        {
            return Reply::new(
                553,
                "5.7.1",
                format!("From: <{from}> rejected: not owned by {}", account.email()),
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut message = self.trace_headers(&tx);
        message.extend_from_slice(&body);
        drop(body);
        let recipients: Vec<Recipient> = tx.accounts.iter().map(|&a| Recipient::inbox(a)).collect();
        let outcomes = match self
            .server
            .deliverer
            .deliver(message, recipients, now)
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(id = %tx.id, error = %e, "delivery failed");
                return Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure storing the message, try again later",
                );
            }
        };
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Stored { .. }))
            .count();
        let over_quota = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::OverQuota))
            .count();
        if stored < outcomes.len() {
            // With a single reply for the whole message, a partly failed delivery is accepted
            // for those who got it; the others are logged (a bounce needs the outbound queue).
            tracing::warn!(id = %tx.id, stored, over_quota, failed = outcomes.len() - stored, "some recipients did not get the message");
        }
        if stored > 0 {
            tracing::info!(id = %tx.id, from = %tx.from, rcpts = tx.rcpts.len(), stored, "message stored");
            Reply::new(250, "2.0.0", format!("Ok: stored as {}", tx.id))
        } else if over_quota > 0 {
            Reply::new(
                552,
                "5.2.2",
                "Mailbox full: the message does not fit in the recipient's quota",
            )
        } else {
            Reply::new(550, "5.1.1", "Recipient no longer available")
        }
    }

    /// `Return-Path:` and `Received:` for the message, Postfix-style.
    fn trace_headers(&self, tx: &Transaction) -> Vec<u8> {
        let helo = self.helo.as_ref();
        // RFC 3848 / RFC 6531 names: S for TLS, A for an authenticated client.
        let mut protocol = String::from(match (helo.is_some_and(|h| h.extended), tx.smtputf8) {
            (false, _) => "SMTP",
            (true, false) => "ESMTP",
            (true, true) => "UTF8SMTP",
        });
        if self.tls.is_some() {
            protocol.push('S');
        }
        if self.account.is_some() {
            protocol.push('A');
        }
        let date = OffsetDateTime::now_utc()
            .format(&Rfc2822)
            .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into());
        let mut h = format!(
            "Return-Path: <{}>\r\nReceived: from {} (unknown [{}])\r\n\tby {} (wispd) with {protocol} id {}",
            tx.from,
            helo.map_or("unknown", |h| h.name.as_str()),
            self.peer.ip(),
            self.server.settings.hostname,
            tx.id,
        );
        if let Some(tls) = &self.tls {
            h.push_str(&format!("\r\n\t(using {tls})"));
        }
        if let [only] = tx.rcpts.as_slice() {
            h.push_str(&format!("\r\n\tfor <{only}>"));
        }
        h.push_str(&format!("; {date}\r\n"));
        h.into_bytes()
    }
}

/// The first address of the message's From: header, if it has one.
fn header_from(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::default().parse_headers(message)?;
    let from = parsed.from()?;
    from.first()?.address().map(str::to_string)
}
