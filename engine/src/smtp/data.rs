//! DATA and BDAT: the message itself, then its durable delivery. The final `250` is sent only
//! after the store has committed the message for every recipient that got it.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::reply::Reply;
use super::session::{Core, Flow, Transaction};
use crate::delivery::{BounceTo, Delivery, Outbound, Outcome, Recipient};
use crate::metrics::MessageOutcome;
use crate::sieve::{Incoming, Outgoing};

/// Messages up to this size are filtered on the session's own task.
const INLINE_FILTER_BYTES: usize = 256 * 1024;

impl Core {
    pub(super) fn data(&mut self) -> Flow {
        let Some(tx) = self.tx.as_ref() else {
            return self.reply(Reply::new(503, "5.5.1", "Need MAIL command first"));
        };
        if tx.chunking {
            return self.reply(Reply::new(503, "5.5.1", "DATA after BDAT"));
        }
        if tx.accounts.is_empty() && tx.remote.is_empty() && tx.list.is_none() {
            return self.reply(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        let deadline = tokio::time::Instant::now() + self.server.settings.data_timeout;
        if let Some(tx) = self.tx.as_mut() {
            tx.deadline = Some(deadline);
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
        self.memory.release();
        self.reply(reply)
    }

    /// BDAT: the chunk follows the command at once, so it is read (or skipped) whatever the
    /// verdict; the reply comes after it.
    pub(super) fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let limit = self.server.settings.max_message_size;
        let verdict = match self.tx.as_mut() {
            None => Err(Reply::new(503, "5.5.1", "Need MAIL command first")),
            Some(tx) if tx.accounts.is_empty() && tx.remote.is_empty() && tx.list.is_none() => {
                Err(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(tx) => {
                let first = !tx.chunking;
                tx.chunking = true;
                if first {
                    tx.deadline =
                        Some(tokio::time::Instant::now() + self.server.settings.data_timeout);
                }
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
        self.memory.release();
        self.reply(reply)
    }

    fn too_big(&mut self) -> Flow {
        self.memory.release();
        if self.codec.starved() {
            self.count_message(MessageOutcome::NoMemory);
            return self.reply(Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage: too many messages in transfer, try again later",
            ));
        }
        self.count_message(MessageOutcome::TooBig);
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
        // A message that has passed this many servers is looping (Postfix's hopcount_limit).
        if hops(&body) >= MAX_HOPS {
            tracing::warn!(id = %tx.id, from = %tx.from, "mail forwarding loop refused");
            self.count_message(MessageOutcome::Loop);
            return Reply::new(554, "5.4.6", "Too many hops: mail forwarding loop");
        }
        // Submission: the From: header (and Sender:) must be the account's own too.
        if let Some(account) = &self.account
            && let Err(why) = check_authors(&account.email(), &body)
        {
            tracing::info!(id = %tx.id, user = %account.email(), %why, "submission refused");
            self.count_message(MessageOutcome::Authors);
            return Reply::new(553, "5.7.1", why);
        }
        // Mail arriving at the MX for local accounts or forwarders: who sent it, per
        // SPF/DKIM/DMARC/iprev/ARC.
        let mut body = body;
        let mut authentication = None;
        let mut verdicts = None;
        let mut arc_set = None;
        let mut junk = false;
        let mx = self.account.is_none()
            && self.port == super::Port::Mx
            && (!tx.accounts.is_empty() || !tx.remote.is_empty() || tx.list.is_some());
        let helo = self
            .helo
            .as_ref()
            .map(|h| h.name.clone())
            .unwrap_or_default();
        let received = self.received(&tx);
        let spam = self.server.spam.clone().filter(|s| mx && s.enabled());
        if mx && let Some(inbound) = self.server.inbound.clone() {
            body = crate::inbound::strip_forged(&body, &self.server.settings.hostname);
            if spam.is_some() {
                body = crate::inbound::strip_spam_fields(&body);
            }
            let seal = self.seal(&tx, &received);
            let checked = inbound
                .check(self.peer.ip(), &helo, &tx.from, &body, seal)
                .await;
            match checked.action {
                crate::inbound::Action::Reject(why) => {
                    tracing::info!(id = %tx.id, from = %tx.from, %why, "refused by DMARC");
                    self.count_message(MessageOutcome::Dmarc);
                    return Reply::new(550, "5.7.1", why);
                }
                crate::inbound::Action::Junk => junk = true,
                crate::inbound::Action::Accept => {}
            }
            authentication = Some(checked.header);
            verdicts = Some(checked.verdicts);
            arc_set = checked.arc_set;
        }
        // Then the spam score and greylisting (`/email/spam`).
        let mut spam_headers = String::new();
        let mut spam_level = crate::spam::SpamLevel::Unknown;
        if let Some(spam) = spam {
            if authentication.is_none() {
                body = crate::inbound::strip_spam_fields(&body);
            }
            let listings = self.dnsbl.listings().await.to_vec();
            // whom it is for here: the accounts' addresses and the forwarders'
            let recipients: Vec<String> = tx
                .envelope_to
                .iter()
                .cloned()
                .chain(tx.remote.iter().filter_map(|(_, o)| o.clone()))
                .collect();
            let directory = self.server.directory.clone();
            let local = move |d: &str| directory.is_local_domain(d).unwrap_or(false);
            let facts = crate::spam::Facts::new(
                self.peer.ip(),
                &helo,
                &tx.from,
                &recipients,
                &body,
                verdicts.as_ref(),
                &listings,
                &self.server.settings.hostname,
                &local,
                wispd_store::unix_now(),
            );
            match spam.check(&facts).await {
                crate::spam::Decision::Reject(why) => {
                    tracing::info!(id = %tx.id, from = %tx.from, %why, "refused as spam");
                    self.count_message(MessageOutcome::Spam);
                    return Reply::new(550, "5.7.1", why);
                }
                crate::spam::Decision::Defer(why) => {
                    tracing::info!(id = %tx.id, from = %tx.from, %why, "deferred");
                    self.count_message(MessageOutcome::Deferred);
                    return Reply::new(451, "4.7.1", why);
                }
                crate::spam::Decision::Deliver {
                    headers,
                    junk: j,
                    status,
                } => {
                    spam_headers = headers;
                    spam_level = status;
                    junk |= j;
                }
            }
        }
        let now = wispd_store::unix_now();
        // Viruses (`/email/clamav`): the message as it would be stored, MX and submission alike.
        let mut virus_header = String::new();
        let mut virus = 0;
        if let Some(clamav) = self.server.clamav.clone().filter(|c| c.enabled())
            && (!tx.accounts.is_empty() || !tx.remote.is_empty() || tx.list.is_some())
        {
            body = crate::inbound::strip_virus_fields(&body);
            match clamav.check(&[&received, &body]).await {
                crate::clamav::Decision::Skip => {}
                crate::clamav::Decision::Deliver { header, virus: v } => {
                    virus_header = header;
                    virus = v;
                }
                crate::clamav::Decision::Refuse(code, enhanced, why) => {
                    tracing::info!(id = %tx.id, from = %tx.from, %why, "refused by the virus scan");
                    self.count_message(MessageOutcome::Virus);
                    return Reply::new(code, enhanced, why);
                }
                crate::clamav::Decision::Quarantine(signature) => {
                    return self
                        .quarantine(
                            &tx,
                            &clamav,
                            signature,
                            [&received[..], &body].concat(),
                            &body,
                        )
                        .await;
                }
            }
        }
        // A mailing-list address: the list takes it from here.
        if let (Some(target), Some(lists)) = (tx.list.clone(), self.server.lists.clone()) {
            let mut trace = authentication.unwrap_or_default();
            trace.push_str(&spam_headers);
            trace.push_str(&virus_header);
            let post = crate::lists::Post {
                sender: tx.from.clone(),
                authenticated: self.account.as_ref().map(|a| a.email()),
                dkim_pass: verdicts.as_ref().map_or(Vec::new(), |v| {
                    v.dkim
                        .iter()
                        .filter(|(r, _)| *r == crate::inbound::Verdict::Pass)
                        .map(|(_, d)| d.clone())
                        .collect()
                }),
                spf_pass: verdicts
                    .as_ref()
                    .is_some_and(|v| v.spf == crate::inbound::Verdict::Pass),
                trace,
                junk,
            };
            let mut message = received;
            message.extend_from_slice(&body);
            drop(body);
            return match lists.receive(&target, post, message).await {
                crate::lists::Received::Done(text) => {
                    self.count_message(MessageOutcome::Accepted);
                    tracing::info!(id = %tx.id, from = %tx.from, list = %target.list, %text, "list mail taken");
                    Reply::new(250, "2.0.0", text)
                }
                crate::lists::Received::Refused(code, status, text) => {
                    self.count_message(MessageOutcome::Refused);
                    tracing::info!(id = %tx.id, from = %tx.from, list = %target.list, %text, "list mail refused");
                    Reply::new(code, status, text)
                }
                crate::lists::Received::Failed(why) => {
                    self.count_message(MessageOutcome::StoreFailed);
                    tracing::error!(id = %tx.id, list = %target.list, error = %why, "list mail failed");
                    Reply::new(
                        451,
                        "4.3.0",
                        "Temporary failure handling the list's mail, try again later",
                    )
                }
            };
        }
        // Submission: the account's rate-limit group, charged with this message; the charge
        // is committed with the delivery (and given back if it fails).
        let mut charge = None;
        if let (Some(r), Some(account)) = (self.server.ratelimit.clone(), &self.account) {
            match r.charge(
                account,
                tx.remote.len() as u64,
                tx.accounts.len() as u64,
                now,
            ) {
                Ok(c) => charge = c.map(|c| (r, c)),
                Err(limited) => {
                    tracing::info!(id = %tx.id, user = %account.email(), reason = %limited.0, "message refused: rate limit");
                    self.count_message(MessageOutcome::RateLimited);
                    return Reply::new(451, "4.7.0", limited.0);
                }
            }
        }
        let outbound = (!tx.remote.is_empty())
            .then(|| self.outbound(&tx, arc_set.as_deref(), &received, &body));
        let mut message = Vec::new();
        if !tx.accounts.is_empty() {
            message.reserve(received.len() + body.len() + 64);
            message.extend_from_slice(format!("Return-Path: <{}>\r\n", tx.from).as_bytes());
            if let Some(header) = &authentication {
                message.extend_from_slice(header.as_bytes());
            }
            message.extend_from_slice(spam_headers.as_bytes());
            message.extend_from_slice(virus_header.as_bytes());
            message.extend_from_slice(&received);
            message.extend_from_slice(&body);
        }
        // DMARC quarantine or a spam score: into Junk (a recipient's Sieve script runs after
        // and may move it)
        let mut recipients: Vec<Recipient> = tx
            .accounts
            .iter()
            .map(|&a| {
                if junk {
                    Recipient::junk(a)
                } else {
                    Recipient::inbox(a)
                }
            })
            .collect();
        let mut variants = Vec::new();
        let mut effects = Vec::new();
        if let Some(filters) = self.server.filters.clone()
            && tx.accounts.iter().any(|&a| filters.active(a))
        {
            let incoming: Vec<Incoming> = tx
                .accounts
                .iter()
                .zip(&tx.emails)
                .zip(&tx.envelope_to)
                .map(|((&account_id, email), to)| Incoming {
                    account_id,
                    email: email.clone(),
                    envelope_to: to.clone(),
                })
                .collect();
            let server = self.server.clone();
            let (id, from) = (tx.id.clone(), tx.from.clone());
            let run = move |message: Vec<u8>| {
                let directory = server.directory.clone();
                let local = move |d: &str| directory.is_local_domain(d).unwrap_or(false);
                let f = filters.filter(
                    &message,
                    &incoming,
                    &Outgoing {
                        store: &server.store,
                        srs: server.queue.srs(),
                        hostname: &server.settings.hostname,
                        id: &id,
                        from: &from,
                        local_domain: &local,
                        now,
                        spam: spam_level,
                        virus,
                        arc_set: arc_set.as_deref(),
                    },
                );
                (message, f)
            };
            // A small message is filtered in place: parsing it is microseconds and the script
            // is bounded by the CPU limit, so the hop to a blocking thread would cost more than
            // the work (it showed as a tenth of the throughput). Large ones go off the workers.
            let filtered = if message.len() <= INLINE_FILTER_BYTES {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(message)))
                    .map_err(|_| ())
            } else {
                tokio::task::spawn_blocking(move || run(message))
                    .await
                    .map_err(|_| ())
            };
            let Ok((m, f)) = filtered else {
                tracing::error!(id = %tx.id, "Sieve filtering panicked");
                self.count_message(MessageOutcome::StoreFailed);
                return Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure filtering the message, try again later",
                );
            };
            message = m;
            self.server.metrics.sieve(f.filtered, f.errors);
            if let Some(reason) = f.refused
                && tx.remote.is_empty()
            {
                tracing::info!(id = %tx.id, from = %tx.from, %reason, "refused by the recipients' filters (ereject)");
                self.count_message(MessageOutcome::Refused);
                return Reply::new(550, "5.7.1", clean_reason(&reason));
            }
            recipients = f.recipients;
            if junk {
                recipients.iter_mut().for_each(Recipient::quarantine);
            }
            variants = f.variants;
            effects = f.effects;
        }
        let delivered = match self
            .server
            .deliverer
            .deliver_all(Delivery {
                message,
                variants,
                recipients,
                internal_date: now,
                outbound,
                bounce: Some(BounceTo {
                    sender: tx.from.clone(),
                    hostname: self.server.settings.hostname.clone(),
                    id: tx.id.clone(),
                    addresses: tx.emails.clone(),
                }),
                effects,
                also: charge.as_ref().map(|(_, (_, also))| also.clone()),
            })
            .await
        {
            Ok(d) => d,
            Err(e) => {
                if let Some((r, (c, _))) = charge {
                    r.refund(c);
                }
                tracing::error!(id = %tx.id, error = %e, "delivery failed");
                self.count_message(MessageOutcome::StoreFailed);
                return Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure storing the message, try again later",
                );
            }
        };
        let outcomes = &delivered.outcomes;
        let stored = outcomes.iter().filter(|o| o.delivered()).count();
        let over_quota: Vec<u64> = tx
            .accounts
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| matches!(o, Outcome::OverQuota))
            .map(|(&a, _)| a)
            .collect();
        if let Some(q) = delivered.queued {
            tracing::info!(id = %tx.id, queue_id = q, from = %tx.from, remote = tx.remote.len(), "message queued for other domains");
        }
        self.count_message(if stored > 0 || delivered.queued.is_some() {
            MessageOutcome::Accepted
        } else {
            MessageOutcome::NoRecipient
        });
        if stored > 0 || delivered.queued.is_some() {
            if stored < outcomes.len() {
                // One reply covers the whole message: it is accepted for those who got it, and
                // the sender hears about the rest in a bounce.
                tracing::warn!(id = %tx.id, stored, over_quota = over_quota.len(), failed = outcomes.len() - stored, bounce = ?delivered.bounced, "some recipients did not get the message");
            }
            if stored > 0 {
                tracing::info!(id = %tx.id, from = %tx.from, rcpts = tx.rcpts.len(), stored, "message stored");
            }
            // Postfix says "queued"; a message only stored locally is already in its mailboxes.
            let what = if delivered.queued.is_some() {
                "queued"
            } else {
                "stored"
            };
            Reply::new(250, "2.0.0", format!("Ok: {what} as {}", tx.id))
        } else if !over_quota.is_empty() {
            Reply::new(
                552,
                "5.2.2",
                "Mailbox full: the message does not fit in the recipient's quota",
            )
        } else {
            Reply::new(550, "5.1.1", "Recipient no longer available")
        }
    }

    /// Holds a message clamd found a virus in (action `quarantine`) with what its delivery
    /// would have been, and answers as for a delivered one: the sender learns nothing.
    async fn quarantine(
        &mut self,
        tx: &Transaction,
        clamav: &crate::clamav::Clamav,
        signature: String,
        message: Vec<u8>,
        body: &[u8],
    ) -> Reply {
        let submission = self.account.is_some();
        let remote_sender = if tx.remote.is_empty() {
            String::new()
        } else {
            self.outbound_sender(tx).0
        };
        let sign_domain = self.account.as_ref().and_then(|_| {
            header_from(body)
                .or_else(|| Some(tx.from.clone()))
                .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        });
        let entry = wispd_store::schema::QuarantineEntry {
            id: 0,
            received_at: wispd_store::unix_now(),
            source: if submission { "submission" } else { "mx" }.into(),
            signature: signature.clone(),
            from: tx.from.clone(),
            account: self.account.as_ref().map(|a| a.email()),
            subject: header_subject(body),
            size: 0,
            accounts: tx.accounts.clone(),
            local: tx.emails.clone(),
            remote: tx.remote.clone(),
            remote_sender,
            sign_domain,
            client: self.peer.ip().to_string(),
            smtp_id: tx.id.clone(),
            expires: 0,
        };
        match clamav
            .quarantine(&self.server.deliverer, entry, message)
            .await
        {
            Ok(q) => {
                tracing::warn!(id = %tx.id, from = %tx.from, %signature, quarantine_id = q, "virus quarantined");
                self.count_message(MessageOutcome::Virus);
                Reply::new(250, "2.0.0", format!("Ok: queued as {}", tx.id))
            }
            Err(e) => {
                tracing::error!(id = %tx.id, error = %e, "quarantining failed");
                self.count_message(MessageOutcome::StoreFailed);
                Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure storing the message, try again later",
                )
            }
        }
    }

    /// The queued copy for other domains: without `Return-Path:` (the receiving server adds
    /// it), DKIM-signed when submitted by an account whose From: domain has a key, and with
    /// the envelope sender rewritten (SRS) when forwarding someone else's mail.
    fn outbound(
        &self,
        tx: &Transaction,
        arc_set: Option<&str>,
        received: &[u8],
        body: &[u8],
    ) -> Outbound {
        let mut message = Vec::with_capacity(received.len() + body.len() + 4096);
        if let Some(set) = arc_set {
            message.extend_from_slice(set.as_bytes());
        }
        if self.account.is_some() {
            let domain = header_from(body)
                .or_else(|| Some(tx.from.clone()))
                .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
            if let Some(domain) = domain {
                let mut signed = received.to_vec();
                signed.extend_from_slice(body);
                match crate::dkim::sign(&self.server.store, &domain, &signed) {
                    Ok(Some(header)) => message.extend_from_slice(header.as_bytes()),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(id = %tx.id, %domain, error = %e, "DKIM signing failed; sending unsigned");
                    }
                }
            }
        }
        message.extend_from_slice(received);
        message.extend_from_slice(body);
        let (sender, source) = self.outbound_sender(tx);
        Outbound {
            message,
            sender,
            source,
            recipients: tx.remote.clone(),
        }
    }

    /// The envelope sender of the copy for other domains and what it is: the account's own
    /// for a submission; for a forward, the null sender or one of ours kept, any other
    /// rewritten (SRS) into the forwarding domain so SPF passes at the destination.
    fn outbound_sender(&self, tx: &Transaction) -> (String, &'static str) {
        if self.account.is_some() {
            (tx.from.clone(), "submission")
        } else {
            // Forwarded: keep a null sender (a bounce) or one of our own domains; rewrite any
            // other into the forwarding domain so SPF passes at the destination.
            let forwarding = tx
                .remote
                .iter()
                .find_map(|(_, o)| o.as_ref())
                .and_then(|o| o.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_else(|| self.server.settings.hostname.clone());
            let own = tx.from.rsplit_once('@').is_some_and(|(_, d)| {
                self.server
                    .directory
                    .is_local_domain(&d.to_ascii_lowercase())
                    .unwrap_or(false)
            });
            let sender = if tx.from.is_empty() || own {
                tx.from.clone()
            } else {
                self.server.queue.srs().forward(&tx.from, &forwarding)
            };
            (sender, "forward")
        }
    }

    /// The `Received:` header for the message, Postfix-style.
    /// The key to ARC-seal a message with that leaves again: one for a forwarder, or for an
    /// account whose Sieve script may redirect. The forwarding domain's DKIM key seals (the
    /// first forwarder's, else the first such account's); a domain without a key seals nothing.
    fn seal(&self, tx: &Transaction, received: &[u8]) -> Option<crate::inbound::Seal> {
        let forwarder = tx.remote.iter().find_map(|(_, o)| o.clone());
        let redirecting = || {
            let filters = self.server.filters.as_ref()?;
            tx.accounts
                .iter()
                .zip(&tx.emails)
                .find(|(a, _)| filters.may_redirect(**a))
                .map(|(_, e)| e.clone())
        };
        let address = forwarder.or_else(redirecting)?;
        let domain = address.rsplit_once('@')?.1.to_ascii_lowercase();
        match crate::dkim::SigningKey::load(&self.server.store, &domain) {
            Ok(key) => key.map(|key| crate::inbound::Seal {
                key,
                prefix: received.to_vec(),
            }),
            Err(e) => {
                tracing::error!(id = %tx.id, %domain, error = %e, "no ARC seal: the DKIM key failed to load");
                None
            }
        }
    }

    fn received(&self, tx: &Transaction) -> Vec<u8> {
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
            "Received: from {} (unknown [{}])\r\n\tby {} (wispd) with {protocol} id {}",
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

/// A filter's reject reason as one line of an SMTP reply: printable ASCII, bounded.
fn clean_reason(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(200)
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "Rejected by the recipient's filter".into()
    } else {
        line
    }
}

/// `Received:` headers a message may already carry.
const MAX_HOPS: usize = 50;

/// How many `Received:` headers the message's header block has.
fn hops(message: &[u8]) -> usize {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    message[..end]
        .split(|&b| b == b'\n')
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

/// Whether the authors a submitted message names are the account's own: exactly one From:
/// header, every mailbox in it (and in a Sender: header, of which there may be one) with an
/// address the account owns. Says what is wrong otherwise.
fn check_authors(account: &str, message: &[u8]) -> Result<(), String> {
    use mail_parser::HeaderName;
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(message) else {
        return Err("Message has no header".into());
    };
    for (name, what) in [(HeaderName::From, "From:"), (HeaderName::Sender, "Sender:")] {
        let headers: Vec<_> = parsed.headers().iter().filter(|h| h.name == name).collect();
        match headers.len() {
            0 if name == HeaderName::From => {
                return Err("Message has no From: header".into());
            }
            0 | 1 => {}
            _ => return Err(format!("Message has more than one {what} header")),
        }
        for h in headers {
            let Some(list) = h.value().as_address() else {
                return Err(format!("{what} header has no address"));
            };
            let mut any = false;
            for a in list.iter() {
                any = true;
                let Some(address) = a.address() else {
                    return Err(format!("{what} header has a mailbox without an address"));
                };
                if !super::mail::owns(account, address) {
                    return Err(format!(
                        "{what} <{address}> rejected: not owned by {account}"
                    ));
                }
            }
            if !any {
                return Err(format!("{what} header has no address"));
            }
        }
    }
    Ok(())
}

/// The first address of the message's From: header, if it has one.
/// The Subject: of a message, decoded and cut to 200 characters (empty when it has none).
fn header_subject(message: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(message)
        .and_then(|m| {
            m.subject()
                .map(|s| s.chars().filter(|c| !c.is_control()).take(200).collect())
        })
        .unwrap_or_default()
}

fn header_from(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::default().parse_headers(message)?;
    let from = parsed.from()?;
    from.first()?.address().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::check_authors;

    /// The From: forms an outside probe got through submission as alice@a.test.
    #[test]
    fn submitted_authors_must_all_be_the_accounts_own() {
        let me = "alice@a.test";
        let ok = [
            "From: alice@a.test\r\n\r\nx",
            "From: Alice <alice+news@a.test>\r\nSender: alice@a.test\r\n\r\nx",
            "From: =?utf-8?q?Al=C3=AFce?= <alice@a.test>\r\n\r\nx",
        ];
        for m in ok {
            assert_eq!(check_authors(me, m.as_bytes()), Ok(()), "{m}");
        }
        let refused = [
            "From: alice@a.test, ceo@a.test\r\n\r\nx",
            "From: <alice@a.test>, <bob@b.test>\r\n\r\nx",
            "From: alice@a.test\r\nFrom: ceo@a.test\r\n\r\nx",
            "Subject: no author\r\n\r\nx",
            "From: =?utf-8?q?ceo=40a=2Etest?=\r\n\r\nx",
            "From: team: alice@a.test, ceo@a.test;\r\n\r\nx",
            "From: alice@a.test\r\nSender: ceo@a.test\r\n\r\nx",
            "From: \"alice@a.test\" <ceo@a.test>\r\n\r\nx",
            "From:\r\n\r\nx",
        ];
        for m in refused {
            assert!(check_authors(me, m.as_bytes()).is_err(), "{m}");
        }
    }
}
