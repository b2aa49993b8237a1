//! What the mail engine counts for operators (served in Prometheus text format at
//! `/api/v1/metrics`): SMTP sessions, messages and recipients by outcome, logins, delivery commit
//! batches and latency, the outbound queue's outcomes, IMAP sessions and command latency (the
//! queue's depth is read when scraped). Handles are cheap
//! clones of shared atomics; [`MailMetrics::register`] puts them in the registry the binary owns.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which SMTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    Mx,
    Submission,
    Submissions,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

/// What became of a message at the end of DATA/BDAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageOutcome {
    /// Stored and/or queued: `250`.
    Accepted,
    /// Over `max_message_size`: `552 5.3.4`.
    TooBig,
    /// The memory budget for messages in flight was full: `452 4.3.1`.
    NoMemory,
    /// Forwarding loop: `554 5.4.6`.
    Loop,
    /// Submission with authors the account doesn't own: `553 5.7.1`.
    Authors,
    /// Every recipient over quota, disabled or gone: `552`/`550`.
    NoRecipient,
    /// The store failed: `451 4.3.0`.
    StoreFailed,
    /// Every recipient's Sieve filter `ereject`ed it: `550 5.7.1`.
    Refused,
    /// The sender's DMARC policy refused it: `550 5.7.1`.
    Dmarc,
    /// Scored over `reject_score`, or denylisted: `550 5.7.1`.
    Spam,
    /// Greylisted, or the spam engine was unavailable: `451 4.7.1`.
    Deferred,
    /// clamd found a virus: refused or quarantined.
    Virus,
    /// The submitting account's rate-limit group is used up: `451 4.7.0`.
    RateLimited,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MessageLabels {
    pub listener: &'static str,
    pub outcome: &'static str,
}

/// Why RCPT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RcptRefusal {
    RelayDenied,
    UnknownUser,
    Disabled,
    MailboxFull,
    TooMany,
    Syntax,
    Lookup,
    Dnsbl,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RcptLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    Imap,
    ManageSieve,
    Pop3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginResult {
    Accepted,
    Refused,
    Busy,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LoginLabels {
    pub protocol: &'static str,
    pub result: &'static str,
}

/// What a delivery attempt of the outbound queue came to, per recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueOutcome {
    Delivered,
    Deferred,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct QueueLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CommandLabels {
    /// The IMAP command, upper case (`UID FETCH` as `FETCH`); unknown ones as `OTHER`.
    pub command: String,
}

/// Label values in Prometheus style (snake case), one per variant.
macro_rules! labels {
    ($($t:ident { $($v:ident => $l:literal),* $(,)? })*) => {$(
        impl $t {
            pub const fn label(self) -> &'static str {
                match self { $($t::$v => $l),* }
            }
        }
    )*};
}

labels! {
    Listener { Mx => "mx", Submission => "submission", Submissions => "submissions" }
    MessageOutcome {
        Accepted => "accepted", TooBig => "too_big", NoMemory => "no_memory", Loop => "loop",
        Authors => "authors", NoRecipient => "no_recipient", StoreFailed => "store_failed",
        Refused => "filter_refused", Dmarc => "dmarc", Spam => "spam", Deferred => "deferred",
        Virus => "virus", RateLimited => "rate_limited",
    }
    RcptRefusal {
        RelayDenied => "relay_denied", UnknownUser => "unknown_user", Disabled => "disabled",
        MailboxFull => "mailbox_full", TooMany => "too_many", Syntax => "syntax", Lookup => "lookup",
        Dnsbl => "dnsbl",
    }
    Protocol { Smtp => "smtp", Imap => "imap", ManageSieve => "managesieve", Pop3 => "pop3" }
    LoginResult { Accepted => "accepted", Refused => "refused", Busy => "busy", Failed => "failed" }
    QueueOutcome { Delivered => "delivered", Deferred => "deferred", Bounced => "bounced" }
}

fn latency() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The engine's metrics; clones share the same counters.
#[derive(Debug, Clone)]
pub struct MailMetrics {
    pub smtp_sessions: Family<ListenerLabel, Counter>,
    pub smtp_messages: Family<MessageLabels, Counter>,
    pub smtp_rcpt_refused: Family<RcptLabels, Counter>,
    pub logins: Family<LoginLabels, Counter>,
    pub delivery_batch_size: Histogram,
    pub delivery_commit_seconds: Histogram,
    pub queue_outcomes: Family<QueueLabels, Counter>,
    pub imap_sessions: Counter,
    pub pop3_sessions: Counter,
    pub imap_command_seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    /// Sieve runs at delivery (one per recipient with filters), by result (`ok`, `error`).
    pub sieve_runs: Family<SieveLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SieveLabels {
    pub result: &'static str,
}

impl Default for MailMetrics {
    fn default() -> Self {
        MailMetrics {
            smtp_sessions: Family::default(),
            smtp_messages: Family::default(),
            smtp_rcpt_refused: Family::default(),
            logins: Family::default(),
            delivery_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            delivery_commit_seconds: latency(),
            queue_outcomes: Family::default(),
            imap_sessions: Counter::default(),
            pop3_sessions: Counter::default(),
            imap_command_seconds: Family::new_with_constructor(latency),
            sieve_runs: Family::default(),
        }
    }
}

/// IMAP commands counted under their own name; anything else is `OTHER`, so a client can't
/// grow the label set.
const IMAP_COMMANDS: [&str; 31] = [
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "STARTTLS",
    "AUTHENTICATE",
    "LOGIN",
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "STATUS",
    "APPEND",
    "CHECK",
    "CLOSE",
    "EXPUNGE",
    "SEARCH",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "IDLE",
    "ENABLE",
    "NAMESPACE",
    "ID",
    "UNSELECT",
    "GETQUOTAROOT",
];

impl MailMetrics {
    pub fn new() -> MailMetrics {
        MailMetrics::default()
    }

    /// Registers every metric under `wispd_` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "wispd_smtp_sessions",
            "SMTP sessions accepted, by listener",
            self.smtp_sessions.clone(),
        );
        registry.register(
            "wispd_smtp_messages",
            "Messages at the end of DATA/BDAT, by listener and outcome",
            self.smtp_messages.clone(),
        );
        registry.register(
            "wispd_smtp_recipients_refused",
            "RCPT TO refused, by reason",
            self.smtp_rcpt_refused.clone(),
        );
        registry.register(
            "wispd_logins",
            "Password logins, by protocol and result",
            self.logins.clone(),
        );
        registry.register(
            "wispd_delivery_batch_size",
            "Deliveries committed together in one store transaction (group commit)",
            self.delivery_batch_size.clone(),
        );
        registry.register(
            "wispd_delivery_commit_seconds",
            "Time to commit one delivery transaction, fsync included",
            self.delivery_commit_seconds.clone(),
        );
        registry.register(
            "wispd_queue_deliveries",
            "Outbound delivery attempts per recipient, by outcome",
            self.queue_outcomes.clone(),
        );
        registry.register(
            "wispd_imap_sessions",
            "IMAP sessions accepted",
            self.imap_sessions.clone(),
        );
        registry.register(
            "wispd_pop3_sessions",
            "POP3 sessions accepted (POP3 and POP3S)",
            self.pop3_sessions.clone(),
        );
        registry.register(
            "wispd_imap_command_seconds",
            "IMAP command latency, by command",
            self.imap_command_seconds.clone(),
        );
        registry.register(
            "wispd_sieve_runs",
            "Sieve filter runs at delivery, by result (error: the message went to INBOX)",
            self.sieve_runs.clone(),
        );
    }

    /// Counts `filtered` filter runs of which `errors` failed.
    pub fn sieve(&self, filtered: usize, errors: usize) {
        let ok = filtered.saturating_sub(errors) as u64;
        if ok > 0 {
            self.sieve_runs
                .get_or_create(&SieveLabels { result: "ok" })
                .inc_by(ok);
        }
        if errors > 0 {
            self.sieve_runs
                .get_or_create(&SieveLabels { result: "error" })
                .inc_by(errors as u64);
        }
    }

    pub fn session(&self, listener: Listener) {
        self.smtp_sessions
            .get_or_create(&ListenerLabel {
                listener: listener.label(),
            })
            .inc();
    }

    pub fn message(&self, listener: Listener, outcome: MessageOutcome) {
        self.smtp_messages
            .get_or_create(&MessageLabels {
                listener: listener.label(),
                outcome: outcome.label(),
            })
            .inc();
    }

    pub fn rcpt_refused(&self, reason: RcptRefusal) {
        self.smtp_rcpt_refused
            .get_or_create(&RcptLabels {
                reason: reason.label(),
            })
            .inc();
    }

    pub fn login(&self, protocol: Protocol, result: LoginResult) {
        self.logins
            .get_or_create(&LoginLabels {
                protocol: protocol.label(),
                result: result.label(),
            })
            .inc();
    }

    pub fn queue_outcome(&self, outcome: QueueOutcome) {
        self.queue_outcomes
            .get_or_create(&QueueLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Records how long an IMAP command took.
    pub fn imap_command(&self, name: &str, seconds: f64) {
        let upper = name.to_ascii_uppercase();
        let command = if IMAP_COMMANDS.contains(&upper.as_str()) {
            upper
        } else {
            "OTHER".to_string()
        };
        self.imap_command_seconds
            .get_or_create(&CommandLabels { command })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_as_prometheus_text_with_bounded_labels() {
        let m = MailMetrics::new();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.message(Listener::Mx, MessageOutcome::Accepted);
        m.rcpt_refused(RcptRefusal::RelayDenied);
        m.imap_command("fetch", 0.002);
        m.imap_command("X-EVIL-1", 0.001);
        m.imap_command("X-EVIL-2", 0.001);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        assert!(
            out.contains("wispd_smtp_messages_total{listener=\"mx\",outcome=\"accepted\"} 1"),
            "{out}"
        );
        assert!(out.contains("wispd_smtp_recipients_refused_total{reason=\"relay_denied\"} 1"));
        assert!(out.contains("wispd_imap_command_seconds_count{command=\"FETCH\"} 1"));
        assert!(out.contains("wispd_imap_command_seconds_count{command=\"OTHER\"} 2"));
        assert!(out.ends_with("# EOF\n"));
    }
}
