//! Running an account's filters over one message: what to keep where, what to send, what to
//! remember. Nothing here writes: the plan is committed with the delivery by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use ::sieve::{Envelope, Event, Input, Recipient, Script, Sieve};
use mail_parser::Message;
use wispd_store::StoreError;
use wispd_store::schema::{MAIL_MAILBOXES, Mailbox, SIEVE_SCRIPTS, SIEVE_SEEN, SieveScript};

use super::{Filters, valid_name};

/// A copy the script keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveCopy {
    pub mailbox: String,
    pub special_use: Option<String>,
    pub flags: Vec<String>,
    pub create: bool,
    /// Index into [`Plan::created`] when the script edited the message.
    pub message: Option<usize>,
}

/// A message the script sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `redirect`: the message (or its edited form, an index into [`Plan::created`]) to `to`.
    Redirect { to: String, message: Option<usize> },
    /// A vacation reply (the message is [`Plan::created`]`[message]`), sent only when `seen`
    /// is not remembered yet, which it then is until the given time.
    Vacation {
        to: String,
        message: usize,
        seen: (String, i64),
    },
}

/// What an account's filters decided for one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Where copies go; empty when the script discarded or rejected the message.
    pub copies: Vec<SieveCopy>,
    /// Messages the script made: edited copies and vacation replies.
    pub created: Vec<Vec<u8>>,
    pub replies: Vec<Reply>,
    /// `duplicate` ids to remember, until when.
    pub seen: Vec<(String, i64)>,
    /// `reject` (false) or `ereject` (true), with the reason.
    pub reject: Option<(bool, String)>,
    /// Why the script failed, when it did: then the plan is INBOX and nothing else.
    pub error: Option<String>,
}

impl Plan {
    fn inbox() -> Plan {
        Plan {
            copies: vec![SieveCopy {
                mailbox: "INBOX".into(),
                special_use: None,
                flags: Vec::new(),
                create: false,
                message: None,
            }],
            ..Plan::default()
        }
    }
}

/// The envelope as the account's filters see it.
#[derive(Debug, Clone, Copy)]
pub struct MailEnvelope<'a> {
    /// `MAIL FROM`; empty for the null sender.
    pub from: &'a str,
    /// The address the message was sent to for this account (`RCPT TO`, before aliases).
    pub to: &'a str,
    /// What `spamtest` reports.
    pub spam: crate::spam::SpamLevel,
    /// What `virustest` reports (0 not scanned, 1 clean).
    pub virus: u32,
}

/// The key a seen id is kept under: its kind and a hash (vacation ids hold the whole reason).
fn seen_key(id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if id.starts_with("_v") {
        format!("v:{hex}")
    } else {
        format!("d:{hex}")
    }
}

/// Flags a copy may start with: the IMAP system flags (but `\Recent`) and keyword atoms.
fn clean_flags(flags: Vec<String>) -> Vec<String> {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let f = if let Some(s) = SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(&f)) {
            (*s).to_string()
        } else if !f.is_empty()
            && f.len() <= 64
            && f.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
        {
            f
        } else {
            continue;
        };
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&f)) {
            out.push(f);
        }
    }
    out
}

/// RFC 3834 §2 / RFC 5230 §4.5 beyond what the interpreter checks: no reply to mailing lists
/// (`Precedence: list|junk|bulk`), or to list servers and daemons by their sender.
fn may_reply(message: &Message<'_>, from: &str) -> bool {
    let local = from
        .rsplit_once('@')
        .map_or(from, |(l, _)| l)
        .to_ascii_lowercase();
    if from.is_empty()
        || [
            "mailer-daemon",
            "postmaster",
            "listserv",
            "majordomo",
            "owner-",
        ]
        .iter()
        .any(|p| local.starts_with(p))
        || local.ends_with("-request")
        || local.ends_with("-bounces")
    {
        return false;
    }
    let Some(head) = message.parts.first() else {
        return false;
    };
    !head.headers.iter().any(|h| {
        let name = h.name.as_str().to_ascii_lowercase();
        let raw = message
            .raw_message
            .get(h.offset_start as usize..h.offset_end as usize)
            .unwrap_or_default();
        let value = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        match name.as_str() {
            "precedence" => ["list", "junk", "bulk"].contains(&value.as_str()),
            "auto-submitted" => value.split(';').next().is_none_or(|v| v.trim() != "no"),
            "x-auto-response-suppress" => value
                .split(',')
                .any(|v| ["all", "oof", "autoreply"].contains(&v.trim())),
            n => n.starts_with("list-"),
        }
    })
}

/// Makes the reply's From: the account's own address unless the script named one the
/// account owns: a filter can't send mail as somebody else.
fn own_from(reply: Vec<u8>, email: &str) -> Vec<u8> {
    let line_end = reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(reply.len());
    let first = &reply[..line_end];
    if let Some(value) = first.strip_prefix(b"From: ") {
        let value = String::from_utf8_lossy(value);
        let owned = mail_parser::MessageParser::new()
            .parse_headers(format!("From: {value}\r\n\r\n").as_bytes())
            .and_then(|m| {
                m.from()
                    .and_then(|a| a.first())
                    .and_then(|a| a.address())
                    .map(str::to_string)
            })
            .is_some_and(|a| crate::address::owns(email, &a));
        if owned {
            return reply;
        }
    }
    let mut out = format!("From: <{email}>").into_bytes();
    out.extend_from_slice(&reply[line_end.min(reply.len())..]);
    out
}

impl Filters {
    /// Runs the account's autoresponder and active script over `message`; `None` when the
    /// account has neither (deliver to INBOX as usual). A failing script yields a plan that
    /// keeps the message in INBOX (and nothing else), with the error.
    pub fn plan(
        &self,
        account: u64,
        email: &str,
        envelope: MailEnvelope<'_>,
        message: &Message<'_>,
        now: i64,
    ) -> Option<Plan> {
        let compiled = match self.compiled(account) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(account, error = %e, "could not load the account's filters; delivering to INBOX");
                return None;
            }
        };
        if compiled.script.is_none() && compiled.responder.is_none() {
            return None;
        }
        let mut plan = Plan::default();
        if let Some((responder, start, end)) = &compiled.responder
            && start.is_none_or(|s| now >= s)
            && end.is_none_or(|e| now < e)
            && let Err(e) = self.run(
                account,
                email,
                envelope,
                message,
                ("autoresponder", responder.clone()),
                now,
                true,
                &mut plan,
            )
        {
            tracing::warn!(account, %email, error = %e, "autoresponder failed");
        }
        let mut own = Plan::default();
        match &compiled.script {
            Some((name, script)) => {
                if let Err(e) = self.run(
                    account,
                    email,
                    envelope,
                    message,
                    (name.as_str(), script.clone()),
                    now,
                    false,
                    &mut own,
                ) {
                    tracing::warn!(account, %email, script = %name, error = %e, "Sieve script failed; message kept in INBOX");
                    own = Plan::inbox();
                    own.error = Some(e);
                }
            }
            None => own = Plan::inbox(),
        }
        // The autoresponder's replies and memory join the script's plan.
        let offset = own.created.len();
        own.created.extend(plan.created);
        own.replies
            .extend(plan.replies.into_iter().map(|r| match r {
                Reply::Vacation { to, message, seen } => Reply::Vacation {
                    to,
                    message: message + offset,
                    seen,
                },
                other => other,
            }));
        own.seen.extend(plan.seen);
        Some(own)
    }

    /// One script over the message, its decisions added to `plan`. `replies_only`: only its
    /// vacation replies count (the autoresponder); keep/fileinto/discard/reject are ignored.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        account: u64,
        email: &str,
        envelope: MailEnvelope<'_>,
        message: &Message<'_>,
        (name, script): (&str, Arc<Sieve>),
        now: i64,
        replies_only: bool,
        plan: &mut Plan,
    ) -> Result<(), String> {
        let mut ctx = self
            .0
            .runtime
            .filter_parsed(message.clone())
            .with_user_address(email);
        if !envelope.from.is_empty() {
            ctx.set_envelope(Envelope::From, envelope.from);
        }
        ctx.set_envelope(Envelope::To, envelope.to);
        ctx.set_spam_status(envelope.spam.sieve());
        ctx.set_virus_status(match envelope.virus {
            1 => ::sieve::VirusStatus::Clean,
            5 => ::sieve::VirusStatus::Virus,
            _ => ::sieve::VirusStatus::Unknown,
        });
        let replying = may_reply(message, envelope.from);
        // Sieve's message numbers -> indexes into plan.created.
        let mut created: HashMap<usize, usize> = HashMap::new();
        // A vacation test that passed: its id, and the reply it then made.
        let mut vacation: Option<(String, i64)> = None;
        let mut vacation_message: Option<usize> = None;
        let mut input = Input::script(name.to_string(), script);
        let mut mailboxes: Option<Vec<Mailbox>> = None;
        // The latest edited form of the message (the implicit keep refers to number 0).
        let mut edited: Option<usize> = None;
        while let Some(event) = ctx.run(input) {
            input = Input::True;
            let event = event.map_err(|e| describe(&e))?;
            match event {
                Event::IncludeScript { name, optional } => match self.include(account, &name)? {
                    Some(s) => input = Input::script(name, s),
                    None if optional => input = Input::False,
                    None => return Err(format!("included script {name} does not exist")),
                },
                Event::MailboxExists {
                    mailboxes: names,
                    special_use,
                } => {
                    if mailboxes.is_none() {
                        mailboxes = Some(
                            self.0
                                .store
                                .read(|r| {
                                    r.values_in(&MAIL_MAILBOXES, (account, "")..(account + 1, ""))
                                })
                                .map_err(|e| e.to_string())?,
                        );
                    }
                    let have = mailboxes.as_deref().unwrap_or_default();
                    let all = names.iter().all(|m| match m {
                        ::sieve::Mailbox::Name(n) => {
                            let n = crate::mailbox::canonical(n);
                            have.iter().any(|b| b.name == n)
                        }
                        ::sieve::Mailbox::Id(_) => false,
                    }) && special_use.iter().all(|s| {
                        have.iter().any(|b| {
                            b.special_use
                                .as_deref()
                                .is_some_and(|u| u.eq_ignore_ascii_case(s))
                        })
                    });
                    input = all.into();
                }
                Event::ListContains { .. } => input = Input::False,
                Event::DuplicateId { id, expiry, last } => {
                    let key = seen_key(&id);
                    let until = now.saturating_add(i64::try_from(expiry).unwrap_or(i64::MAX));
                    let seen = self
                        .0
                        .store
                        .read(|r| r.get(&SIEVE_SEEN, (account, key.as_str())))
                        .map_err(|e| e.to_string())?
                        .is_some_and(|t: i64| t > now);
                    if id.starts_with("_v") {
                        vacation = (!seen).then_some((key, until));
                    } else if !seen || last {
                        plan.seen.push((key, until));
                    }
                    input = seen.into();
                }
                Event::SetEnvelope { .. } | Event::Notify { .. } => {}
                Event::Function { .. } => input = Input::False,
                Event::CreatedMessage {
                    message_id,
                    message,
                } => {
                    if vacation.is_some() {
                        vacation_message = Some(message_id);
                    } else {
                        edited = Some(message_id);
                    }
                    created.insert(message_id, plan.created.len());
                    plan.created.push(message);
                }
                Event::Keep { flags, message_id } if !replies_only => {
                    let message_id = if message_id == 0 {
                        edited.unwrap_or(0)
                    } else {
                        message_id
                    };
                    plan.copies.push(SieveCopy {
                        mailbox: "INBOX".into(),
                        special_use: None,
                        flags: clean_flags(flags),
                        create: false,
                        message: created.get(&message_id).copied(),
                    });
                }
                Event::FileInto {
                    folder,
                    flags,
                    special_use,
                    create,
                    message_id,
                    ..
                } if !replies_only => {
                    plan.copies.push(SieveCopy {
                        mailbox: folder,
                        special_use,
                        flags: clean_flags(flags),
                        create,
                        message: created.get(&message_id).copied(),
                    });
                }
                Event::Reject { extended, reason } if !replies_only => {
                    plan.reject = Some((extended, reason));
                }
                Event::SendMessage {
                    recipient,
                    message_id,
                    ..
                } => {
                    let Recipient::Address(to) = recipient else {
                        continue;
                    };
                    if vacation_message == Some(message_id)
                        && let Some(seen) = vacation.take()
                    {
                        vacation_message = None;
                        if let Some(&i) = created.get(&message_id)
                            && replying
                        {
                            let reply = std::mem::take(&mut plan.created[i]);
                            plan.created[i] = own_from(reply, email);
                            plan.replies.push(Reply::Vacation {
                                to,
                                message: i,
                                seen,
                            });
                        }
                    } else if !replies_only {
                        plan.replies.push(Reply::Redirect {
                            to,
                            message: created.get(&message_id).copied(),
                        });
                    }
                }
                Event::Keep { .. }
                | Event::FileInto { .. }
                | Event::Reject { .. }
                | Event::Discard => {}
            }
        }
        Ok(())
    }

    /// Runs `source` over `message` for a made-up account (for `fuzz/`).
    pub(crate) fn fuzz_run(&self, source: &str, message: &[u8]) {
        let Ok(script) = self.compile(source) else {
            return;
        };
        let parsed = mail_parser::MessageParser::new()
            .parse(message)
            .unwrap_or_default();
        let mut plan = Plan::default();
        let _ = self.run(
            u64::MAX,
            "c@d.test",
            MailEnvelope {
                from: "a@b.test",
                to: "c@d.test",
                spam: crate::spam::SpamLevel::Unknown,
                virus: 0,
            },
            &parsed,
            ("fuzz", script),
            0,
            false,
            &mut plan,
        );
    }

    /// An `include`d script: the account's own by name (`:personal`), or `NAME.sieve` from the
    /// global directory (`:global`). `None`: there is none.
    fn include(&self, account: u64, name: &Script) -> Result<Option<Arc<Sieve>>, String> {
        let source = match name {
            Script::Personal(n) => {
                let s: Option<SieveScript> = self
                    .0
                    .store
                    .read(|r| r.get(&SIEVE_SCRIPTS, (account, n.as_str())))
                    .map_err(|e: StoreError| e.to_string())?;
                s.map(|s| s.source)
            }
            Script::Global(n) => {
                let Some(dir) = &self.0.settings.global_dir else {
                    return Ok(None);
                };
                if !valid_name(n) || n.starts_with('.') {
                    return Ok(None);
                }
                match std::fs::read(dir.join(format!("{n}.sieve"))) {
                    Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("global script {n}: {e}")),
                }
            }
        };
        match source {
            Some(s) => self
                .compile(&s)
                .map(Some)
                .map_err(|e| format!("included script {name}: {e}")),
            None => Ok(None),
        }
    }
}

fn describe(e: &::sieve::runtime::RuntimeError) -> String {
    use ::sieve::runtime::RuntimeError as E;
    match e {
        E::TooManyIncludes => "too many nested includes".into(),
        E::InvalidInstruction(i) => format!(
            "invalid instruction {} at line {}, column {}",
            i.name(),
            i.line_num(),
            i.line_pos()
        ),
        E::ScriptErrorMessage(m) => format!("script error: {m}"),
        E::CapabilityNotAllowed(c) => format!("extension {c} is not allowed"),
        E::CapabilityNotSupported(c) => format!("extension {c} is not supported"),
        E::CPULimitReached => "CPU limit reached".into(),
    }
}
