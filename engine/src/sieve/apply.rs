//! Turning the recipients' plans into one [`Delivery`]: their copies, the edited variants,
//! and what they send (redirects with SRS, vacation replies DKIM-signed, rejection notices),
//! all committed together with the message.

use mail_parser::MessageParser;
use wispd_store::Store;

use super::Filters;
use super::run::{MailEnvelope, Plan, Reply};
use crate::delivery::{Copy, Effect, Outbound, Recipient};
use crate::queue::dsn::Failure;
use crate::srs::Srs;

/// One local recipient of a message, before filtering.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub account_id: u64,
    /// The account's address.
    pub email: String,
    /// The address the message was sent to for it (`RCPT TO`).
    pub envelope_to: String,
}

/// The message's sending context: who sent it, how this server names itself.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub store: &'a Store,
    pub srs: &'a Srs,
    pub hostname: &'a str,
    /// The session's id for the message, named in notices.
    pub id: &'a str,
    /// `MAIL FROM`; empty for the null sender.
    pub from: &'a str,
    /// Whether a domain is one of this server's (a sender there is not SRS-rewritten).
    pub local_domain: &'a (dyn Fn(&str) -> bool + Sync),
    pub now: i64,
    /// What `spamtest` reports.
    pub spam: crate::spam::SpamLevel,
    /// What `virustest` reports (RFC 5235: 0 not scanned, 1 clean, 5 a virus).
    pub virus: u32,
    /// The ARC set (RFC 8617) for a copy redirected unchanged.
    pub arc_set: Option<&'a str>,
}

/// The recipients' filters applied: what to commit.
#[derive(Debug, Default)]
pub struct Filtered {
    pub recipients: Vec<Recipient>,
    pub variants: Vec<Vec<u8>>,
    pub effects: Vec<Effect>,
    /// Every recipient `ereject`ed the message: refuse it in the protocol, with this reason.
    pub refused: Option<String>,
    /// Scripts that failed (the message went to INBOX for those accounts).
    pub errors: usize,
    /// Recipients whose filters ran.
    pub filtered: usize,
}

/// Strips a leading `Return-Path:` (the receiving server adds its own).
fn without_return_path(message: &[u8]) -> &[u8] {
    if message.len() > 12 && message[..12].eq_ignore_ascii_case(b"Return-Path:") {
        let end = message
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(message.len(), |p| p + 2);
        return &message[end..];
    }
    message
}

impl Filters {
    /// Runs the filters of every recipient that has some over `message` (parsed once) and
    /// builds what the delivery commits. Runs CPU-bound work: call from a blocking thread.
    pub fn filter(&self, message: &[u8], rcpts: &[Incoming], out: &Outgoing<'_>) -> Filtered {
        let mut f = Filtered::default();
        let wanted: Vec<bool> = rcpts.iter().map(|r| self.active(r.account_id)).collect();
        if !wanted.iter().any(|&w| w) {
            f.recipients = rcpts
                .iter()
                .map(|r| Recipient::inbox(r.account_id))
                .collect();
            return f;
        }
        let parsed = MessageParser::new().parse(message).unwrap_or_default();
        let mut all_erejected = true;
        let mut reason = String::new();
        for (r, wanted) in rcpts.iter().zip(wanted) {
            let plan = wanted
                .then(|| {
                    self.plan(
                        r.account_id,
                        &r.email,
                        MailEnvelope {
                            from: out.from,
                            to: &r.envelope_to,
                            spam: out.spam,
                            virus: out.virus,
                        },
                        &parsed,
                        out.now,
                    )
                })
                .flatten();
            let Some(plan) = plan else {
                all_erejected = false;
                f.recipients.push(Recipient::inbox(r.account_id));
                continue;
            };
            f.filtered += 1;
            if plan.error.is_some() {
                f.errors += 1;
            }
            match &plan.reject {
                Some((true, why)) if plan.copies.is_empty() => {
                    if reason.is_empty() {
                        reason = why.clone();
                    }
                }
                _ => all_erejected = false,
            }
            self.apply(message, r, plan, out, &mut f);
        }
        if all_erejected && !rcpts.is_empty() {
            f.refused = Some(reason);
        }
        f
    }

    fn apply(
        &self,
        message: &[u8],
        r: &Incoming,
        plan: Plan,
        out: &Outgoing<'_>,
        f: &mut Filtered,
    ) {
        let Plan {
            copies,
            mut created,
            replies,
            seen,
            reject,
            ..
        } = plan;
        // Edited copies become variants of the delivery, each once.
        let mut variant_of: Vec<Option<usize>> = vec![None; created.len()];
        let mut variant = |i: usize, f: &mut Filtered, created: &mut Vec<Vec<u8>>| {
            if variant_of[i].is_none() {
                variant_of[i] = Some(f.variants.len());
                f.variants.push(std::mem::take(&mut created[i]));
            }
            variant_of[i]
        };
        let copies = copies
            .into_iter()
            .map(|c| Copy {
                variant: c.message.and_then(|i| variant(i, f, &mut created)),
                mailbox: c.mailbox,
                special_use: c.special_use,
                flags: c.flags,
                create: c.create,
            })
            .collect();
        f.recipients.push(Recipient {
            account_id: r.account_id,
            copies,
        });
        let account_domain = r.email.rsplit_once('@').map_or("", |(_, d)| d);
        for reply in replies {
            match reply {
                Reply::Redirect {
                    to,
                    message: edited,
                } => {
                    let body = match edited {
                        Some(i) => {
                            // Shared with a kept copy, or the script's own.
                            match variant_of[i] {
                                Some(v) => f.variants[v].clone(),
                                None => created[i].clone(),
                            }
                        }
                        // sealed as it arrived: the headers above it that this server added
                        // are not among those the seal signs
                        None => {
                            let message = without_return_path(message);
                            let mut copy = Vec::with_capacity(message.len() + 2048);
                            copy.extend_from_slice(out.arc_set.unwrap_or_default().as_bytes());
                            copy.extend_from_slice(message);
                            copy
                        }
                    };
                    let own = out
                        .from
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| (out.local_domain)(&d.to_ascii_lowercase()));
                    let sender = if out.from.is_empty() || own {
                        out.from.to_string()
                    } else {
                        out.srs.forward(out.from, account_domain)
                    };
                    tracing::info!(id = %out.id, account = %r.email, %to, "Sieve redirect");
                    f.effects.push(Effect {
                        account_id: r.account_id,
                        seen: None,
                        outbound: Some(Outbound {
                            message: without_return_path(&body).to_vec(),
                            sender,
                            source: "redirect",
                            recipients: vec![(to, Some(r.email.clone()))],
                        }),
                    });
                }
                Reply::Vacation {
                    to,
                    message: i,
                    seen,
                } => {
                    let mut reply = std::mem::take(&mut created[i]);
                    match crate::dkim::sign(out.store, account_domain, &reply) {
                        Ok(Some(header)) => {
                            let mut signed = header.into_bytes();
                            signed.append(&mut reply);
                            reply = signed;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(account = %r.email, error = %e, "DKIM signing of a vacation reply failed; sending unsigned");
                        }
                    }
                    f.effects.push(Effect {
                        account_id: r.account_id,
                        seen: Some(seen),
                        outbound: Some(Outbound {
                            message: reply,
                            sender: String::new(),
                            source: "vacation",
                            recipients: vec![(to, None)],
                        }),
                    });
                }
            }
        }
        for s in seen {
            f.effects.push(Effect {
                account_id: r.account_id,
                seen: Some(s),
                outbound: None,
            });
        }
        if let Some((_, why)) = reject
            && !out.from.is_empty()
        {
            tracing::info!(id = %out.id, account = %r.email, reason = %why, "Sieve reject");
            let notice = crate::queue::dsn::build(
                out.hostname,
                out.id,
                out.now,
                out.from,
                &[Failure {
                    recipient: r.email.clone(),
                    original: (r.envelope_to != r.email).then(|| r.envelope_to.clone()),
                    status: "5.7.1".into(),
                    remote: None,
                    diagnostic: format!("550 5.7.1 Rejected by the recipient's filter: {why}"),
                }],
                message,
            );
            f.effects.push(Effect {
                account_id: r.account_id,
                seen: None,
                outbound: Some(Outbound {
                    message: notice,
                    sender: String::new(),
                    source: "bounce",
                    recipients: vec![(out.from.to_string(), None)],
                }),
            });
        }
    }
}
