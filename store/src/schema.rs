//! The persisted records and the tables that hold them. Everything wispd keeps is declared here,
//! so that a schema version describes the whole file.

use serde::{Deserialize, Serialize};

use crate::Table;

/// Store metadata (`schema_version`, …).
pub const META: Table<&str, u32> = Table::new("meta");

/// API tokens by id; only a hash of each secret is kept.
pub const TOKENS: Table<&str, TokenRecord> = Table::new("api_tokens");

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Everything.
    Admin,
    /// The email endpoints of the token's domains only.
    User,
}

/// An API token as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: TokenRole,
    #[serde(default)]
    pub domains: Vec<String>,
    /// SHA-256 of the secret part of the token.
    pub secret_sha256: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
}

/// Firewall blacklist entries by canonical CIDR (`203.0.113.7/32`, `2001:db8::/48`).
pub const FW_BLACKLIST: Table<&str, FwEntry> = Table::new("fw_blacklist");

/// Firewall whitelist entries by canonical CIDR.
pub const FW_WHITELIST: Table<&str, FwEntry> = Table::new("fw_whitelist");

/// Basic firewall rules by id.
pub const FW_RULES: Table<u64, FwRule> = Table::new("fw_rules");

/// The firewall's settings and switches, under the key `"state"`.
pub const FW_STATE: Table<&str, FwState> = Table::new("fw_state");

/// A blacklist or whitelist entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwEntry {
    /// Canonical CIDR.
    pub net: String,
    #[serde(default)]
    pub comment: String,
    /// Seconds; 0 = permanent.
    pub ttl: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` = permanent.
    pub expires_at: Option<i64>,
}

/// A basic firewall rule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwRule {
    pub id: u64,
    /// `INPUT` or `OUTPUT`.
    pub chain: String,
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// A port or `lo:hi` range; only with tcp/udp.
    pub port: Option<String>,
    /// A source address or CIDR.
    pub source: Option<String>,
    /// `ACCEPT`, `DROP` or `REJECT`.
    pub action: String,
    pub created_at: i64,
}

/// The firewall's persistent switches and csf.conf-style settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwState {
    /// `POST /firewall/toggle`: false = no filtering at all.
    pub enabled: bool,
    /// csf.conf keys wispd implements, as strings (`TCP_IN = "22,25"`).
    pub settings: std::collections::BTreeMap<String, String>,
    /// When TESTING started counting (unix seconds): the policy is lifted TESTING_INTERVAL later.
    pub testing_since: Option<i64>,
    pub next_rule_id: u64,
    /// The preconfigured blocklists were created once (deleting them must not bring them back).
    #[serde(default)]
    pub blocklists_seeded: bool,
}

/// Alerts (lfd bans and escalations, blocklist refresh errors, tamper repairs) by id; the
/// oldest are pruned past a bound.
pub const FW_ALERTS: Table<u64, FwAlert> = Table::new("fw_alerts");

/// How far each alert sender got: the id of the last alert `"email"` and `"webhook"` handled.
pub const FW_ALERT_CURSORS: Table<&str, u64> = Table::new("fw_alert_cursors");

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwAlert {
    pub id: u64,
    /// Unix seconds.
    pub at: i64,
    /// `ban`, `permblock`, `blocklist`, `tamper`.
    pub kind: String,
    #[serde(default)]
    pub ip: Option<String>,
    /// The lfd service whose failures led to it.
    #[serde(default)]
    pub service: Option<String>,
    pub message: String,
    /// Whether the settings at the time asked for an email about it.
    #[serde(default)]
    pub email: bool,
}

/// Blocklist definitions and their refresh status, by name.
pub const FW_BLOCKLISTS: Table<&str, FwBlocklist> = Table::new("fw_blocklists");

/// The last good copy of each blocklist's ranges (compact binary), by name.
pub const FW_BLOCKLIST_DATA: crate::RawTable = crate::RawTable::new("fw_blocklist_data");

/// A blocklist (CSF's `NAME|INTERVAL|MAX|URL`) and its refresh status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwBlocklist {
    pub name: String,
    pub url: String,
    /// Seconds between refreshes.
    pub interval: u64,
    /// Keep at most this many entries; 0 = all.
    pub max: u64,
    pub enabled: bool,
    #[serde(default)]
    pub entry_count: u64,
    #[serde(default)]
    pub invalid_lines: u64,
    #[serde(default)]
    pub last_error: String,
    /// Unix seconds of the last successful refresh.
    #[serde(default)]
    pub last_updated: Option<i64>,
    /// Unix seconds of the last attempt, successful or not.
    #[serde(default)]
    pub last_attempt: Option<i64>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
}

/// Mail accounts by id.
pub const MAIL_ACCOUNTS: Table<u64, MailAccount> = Table::new("mail_accounts");

/// Every address wispd delivers for (`user@domain`, lowercase) -> account id.
pub const MAIL_ADDRESSES: Table<&str, u64> = Table::new("mail_addresses");

/// Mailboxes by (account id, mailbox name).
pub const MAIL_MAILBOXES: Table<(u64, &str), Mailbox> = Table::new("mail_mailboxes");

/// Forwarders by id.
pub const MAIL_FORWARDERS: Table<u64, MailForwarder> = Table::new("mail_forwarders");

/// Catch-all settings by domain.
pub const MAIL_CATCHALL: Table<&str, MailCatchall> = Table::new("mail_catchall");

/// Mail counters (`next_account_id`, `next_forwarder_id`, …).
pub const MAIL_META: Table<&str, u64> = Table::new("mail_meta");

/// A mail account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAccount {
    pub id: u64,
    pub domain: String,
    /// The local part, lowercase.
    pub username: String,
    /// Argon2id, PHC string format.
    pub password_hash: String,
    /// 0 = unlimited.
    pub quota_mb: u64,
    pub used_bytes: u64,
    pub enabled: bool,
    pub created_at: i64,
}

impl MailAccount {
    pub fn email(&self) -> String {
        format!("{}@{}", self.username, self.domain)
    }
}

/// A mailbox (IMAP folder) of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub name: String,
    /// RFC 6154 attribute (`\Sent`, `\Drafts`, `\Trash`, `\Junk`), if any.
    pub special_use: Option<String>,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    pub subscribed: bool,
    /// Highest UID some read-write IMAP session has been told about: messages above it are
    /// `\Recent` to the next session that sees them (RFC 3501 2.3.2).
    #[serde(default)]
    pub recent_uid: u32,
    /// Expunged UIDs kept in [`MAIL_VANISHED`] for this mailbox.
    #[serde(default)]
    pub vanished_count: u32,
    /// Expunges at or below this modification sequence may have been forgotten (QRESYNC falls
    /// back to reporting every UID that no longer exists); 0 while the history is complete.
    #[serde(default)]
    pub vanished_floor: u64,
    /// How far `wispd import` has brought this mailbox over from another server.
    #[serde(default)]
    pub imported: Option<ImportMark>,
}

/// A mailbox's import progress: the highest UID, under the source's UIDVALIDITY, already
/// brought over (a rerun or a resumed import skips up to here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportMark {
    pub uidvalidity: u32,
    pub uid: u32,
}

/// Expunged messages by (account id, mailbox name, UID): (UID, modification sequence of the
/// expunge), for QRESYNC (RFC 7162 `VANISHED (EARLIER)`). Bounded per mailbox.
pub const MAIL_VANISHED: Table<(u64, &str, u32), (u32, u64)> = Table::new("mail_vanished");

/// Subscriptions by (account id, mailbox name): they outlive the mailbox (RFC 3501 6.3.6).
/// The value is the name.
pub const MAIL_SUBSCRIPTIONS: Table<(u64, &str), String> = Table::new("mail_subscriptions");

/// A forwarder: mail for `source` also goes to `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailForwarder {
    pub id: u64,
    pub source: String,
    pub destination: String,
    pub created_at: i64,
}

/// DKIM signing keys by domain.
pub const DKIM_KEYS: Table<&str, DkimKey> = Table::new("dkim_keys");

/// A domain's DKIM key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// PKCS#8 DER, base64.
    pub private_key: String,
    /// What goes after `p=` in the DNS record, base64.
    pub public_key: String,
    pub created_at: i64,
}

/// A domain's catch-all: mail for unknown local parts goes to `destination` when enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailCatchall {
    pub domain: String,
    pub enabled: bool,
    pub destination: String,
}

/// Message contents by message id, each stored once however many mailboxes hold it.
pub const MAIL_MESSAGES: crate::RawTable<u64> = crate::RawTable::new("mail_messages");

/// Per-message bookkeeping by message id.
pub const MAIL_MESSAGE_META: Table<u64, MessageMeta> = Table::new("mail_message_meta");

/// Messages in mailboxes by (account id, mailbox name, UID).
pub const MAIL_ENTRIES: Table<(u64, &str, u32), MailEntry> = Table::new("mail_entries");

/// A stored message's size and how many mailbox entries point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub size: u64,
    pub refs: u32,
}

/// A message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailEntry {
    pub message_id: u64,
    pub uid: u32,
    pub flags: Vec<String>,
    /// Unix seconds.
    pub internal_date: i64,
    pub size: u64,
    pub modseq: u64,
}

/// The outbound queue: messages on their way to other servers, by queue id. An entry leaves the
/// queue when every recipient is delivered or has failed (and been reported to the sender).
pub const MAIL_QUEUE: Table<u64, QueuedMessage> = Table::new("mail_queue");

/// Queued message contents by queue id, exactly as they will be sent (trace and DKIM headers
/// included).
pub const MAIL_QUEUE_DATA: crate::RawTable<u64> = crate::RawTable::new("mail_queue_data");

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub id: u64,
    /// Envelope sender (`MAIL FROM`); empty for a bounce, which never bounces itself.
    pub sender: String,
    /// Unix seconds the message entered the queue; retries stop at this plus the queue lifetime.
    pub created_at: i64,
    pub size: u64,
    /// What queued it: `submission`, `forward` or `bounce`.
    pub source: String,
    pub recipients: Vec<QueuedRecipient>,
}

/// One recipient of a queued message and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    pub address: String,
    /// The address the sender used when it differs (a forwarder's source), for the DSN.
    #[serde(default)]
    pub original: Option<String>,
    /// `queued`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// Unix seconds of the next try (for `queued`).
    pub next_attempt: i64,
    #[serde(default)]
    pub last_attempt: Option<i64>,
    /// The last answer: the remote server's reply, or why it could not be reached.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The server that gave it.
    #[serde(default)]
    pub remote: Option<String>,
}

/// Secrets the mail engine keeps (the SRS key), by name.
pub const MAIL_SECRETS: crate::RawTable = crate::RawTable::new("mail_secrets");

/// Sieve scripts by (account id, script name). At most one per account is active.
pub const SIEVE_SCRIPTS: Table<(u64, &str), SieveScript> = Table::new("sieve_scripts");

/// A user's Sieve script as stored (its source; compiled forms are cached in memory by hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SieveScript {
    pub name: String,
    pub source: String,
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Autoresponders by account id, run as a vacation rule beside the account's own script.
pub const AUTORESPONDERS: Table<u64, Autoresponder> = Table::new("mail_autoresponders");

/// An account's autoresponder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoresponder {
    pub enabled: bool,
    pub subject: String,
    pub body: String,
    /// The reply's From: (an address the account owns); empty = the account's own address.
    #[serde(default)]
    pub from: String,
    /// Unix seconds; replies only from/until then.
    #[serde(default)]
    pub start: Option<i64>,
    #[serde(default)]
    pub end: Option<i64>,
    /// One reply per sender per this many days.
    pub interval_days: u32,
    pub updated_at: i64,
}

/// What Sieve has seen, by (account id, id): vacation replies sent (`_v…`, per sender and
/// handle) and `duplicate` ids. The value is when the record expires (unix seconds).
pub const SIEVE_SEEN: Table<(u64, &str), i64> = Table::new("sieve_seen");

/// Mail settings the API changes, by name (`"rbl"`: [`RblSettings`]).
pub const MAIL_RBL: Table<&str, RblSettings> = Table::new("mail_rbl");

/// DNSBL checks of connecting clients (`/email/rbl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RblSettings {
    pub enabled: bool,
    pub zones: Vec<RblZone>,
    /// Addresses and networks never looked up (`192.0.2.0/24`, `2001:db8::1`).
    pub allowlist: Vec<String>,
}

/// One DNSBL zone and what a listing in it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RblZone {
    pub zone: String,
    /// `reject` or `score`.
    pub action: String,
    pub score: f64,
}

/// The spam settings (`/email/spam`), under `"spam"`.
pub const MAIL_SPAM: Table<&str, SpamSettings> = Table::new("mail_spam");

/// Spam scoring, greylisting and the engine that decides (`/email/spam`). Every field has a
/// default, so a record written by an older wispd reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpamSettings {
    pub enabled: bool,
    /// `builtin` (wispd's rules) or `rspamd` (the message goes to `url`).
    pub engine: String,
    pub url: String,
    /// From this score on the message carries `X-Spam-Status` and `X-Spam-Score`.
    pub add_header_score: f64,
    /// From this score on it is filed into the recipients' Junk.
    pub junk_score: f64,
    /// From this score on it is refused (`550 5.7.1`).
    pub reject_score: f64,
    pub greylisting: GreylistSettings,
    /// Senders (`user@domain`, `@domain`, `domain`) and client addresses/networks that are
    /// neither greylisted nor scored as spam.
    pub allowlist: Vec<String>,
    /// The same forms, refused.
    pub denylist: Vec<String>,
    /// A rule's score instead of its built-in one (0 turns it off).
    pub scores: std::collections::BTreeMap<String, f64>,
    /// The operator's own rules.
    pub rules: Vec<SpamRule>,
    /// When the engine can't be reached: `accept` (unscored) or `defer` (`451 4.7.1`).
    pub on_failure: String,
}

impl Default for SpamSettings {
    fn default() -> Self {
        SpamSettings {
            enabled: false,
            engine: "builtin".into(),
            url: String::new(),
            add_header_score: 0.0,
            junk_score: 5.0,
            reject_score: 15.0,
            greylisting: GreylistSettings::default(),
            allowlist: Vec::new(),
            denylist: Vec::new(),
            scores: std::collections::BTreeMap::new(),
            rules: Vec::new(),
            on_failure: "accept".into(),
        }
    }
}

/// Greylisting of (client network, sender, recipient) triplets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GreylistSettings {
    pub enabled: bool,
    /// Seconds a new triplet is deferred.
    pub delay: u64,
    /// Seconds a triplet that passed stays allowed (renewed by each message).
    pub window: u64,
    /// A sender authenticated by SPF or DKIM for a domain that already passed is not delayed.
    pub pass_authenticated: bool,
}

impl Default for GreylistSettings {
    fn default() -> Self {
        GreylistSettings {
            enabled: false,
            delay: 300,
            window: 36 * 86_400,
            pass_authenticated: true,
        }
    }
}

/// An operator's rule: `score` when `header` (or `body`) contains `contains`, ignoring case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpamRule {
    pub name: String,
    pub header: String,
    pub contains: String,
    pub score: f64,
}

/// Greylisting records: `t <network> <sender> <recipient>` (a triplet) and `d <domain>` (a
/// domain that authenticated and passed), each with when it was first seen and until when
/// it is kept.
pub const MAIL_GREYLIST: Table<&str, GreyEntry> = Table::new("mail_greylist");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreyEntry {
    pub first: i64,
    /// When a retry passed (0: not yet).
    #[serde(default)]
    pub passed: i64,
    pub expires: i64,
}

/// The ClamAV settings (`/email/clamav`), under `"clamav"`.
pub const MAIL_CLAMAV: Table<&str, ClamavSettings> = Table::new("mail_clamav");

/// Virus scanning by clamd. Every field has a default, so a record written by an older wispd
/// reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClamavSettings {
    pub enabled: bool,
    /// clamd's socket: a unix socket path, or `host:port` for its TCP socket.
    pub socket: String,
    /// A virus: `reject` (`554 5.7.1`) or `quarantine` (held for the admin).
    pub action: String,
    /// clamd down or failing: `tempfail` (`451 4.3.0`) or `accept` (`X-Virus-Status: Unscanned`).
    pub on_error: String,
    /// Messages larger than this are not sent to clamd (its `StreamMaxLength`).
    pub max_size_mb: u64,
    /// A message over `max_size_mb`: `accept` (unscanned) or `reject` (`552 5.3.4`).
    pub oversize: String,
    /// Seconds a scan may take before it counts as an error.
    pub timeout_seconds: u64,
    /// Days a quarantined message is kept before it is deleted.
    pub quarantine_days: u64,
}

impl Default for ClamavSettings {
    fn default() -> Self {
        ClamavSettings {
            enabled: false,
            socket: "/run/clamav/clamd.ctl".into(),
            action: "reject".into(),
            on_error: "tempfail".into(),
            max_size_mb: 25,
            oversize: "accept".into(),
            timeout_seconds: 30,
            quarantine_days: 30,
        }
    }
}

/// Messages held because clamd found a virus (action `quarantine`), by id; the message itself
/// is in [`MAIL_QUARANTINE_DATA`] under the same id.
pub const MAIL_QUARANTINE: Table<u64, QuarantineEntry> = Table::new("mail_quarantine");
pub const MAIL_QUARANTINE_DATA: crate::RawTable<u64> = crate::RawTable::new("mail_quarantine_data");

/// A held message and what its delivery would have been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub id: u64,
    pub received_at: i64,
    /// `mx` or `submission`.
    pub source: String,
    /// What clamd named.
    pub signature: String,
    /// The envelope sender as received.
    pub from: String,
    /// The submitting account's address (submission).
    #[serde(default)]
    pub account: Option<String>,
    pub subject: String,
    pub size: u64,
    /// Local recipients: account ids and the addresses they were reached at.
    pub accounts: Vec<u64>,
    pub local: Vec<String>,
    /// Other domains' recipients (address, the forwarder's address it came through).
    pub remote: Vec<(String, Option<String>)>,
    /// The envelope sender the copy for other domains leaves with (SRS for a forward).
    pub remote_sender: String,
    /// The domain whose DKIM key signs that copy when it is released (submission).
    #[serde(default)]
    pub sign_domain: Option<String>,
    /// The client's address and the SMTP transaction id.
    pub client: String,
    pub smtp_id: String,
    pub expires: i64,
}

/// Rate-limit groups for outgoing mail (`/email/ratelimit`), by name; `default` covers every
/// account no other group has.
pub const MAIL_RATE_GROUPS: Table<&str, RateGroup> = Table::new("mail_rate_groups");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateGroup {
    pub name: String,
    /// 0: no limit.
    pub messages_per_hour: u64,
    pub recipients_per_hour: u64,
    pub messages_per_day: u64,
    /// Whether recipients on this server count (local accounts, any of its domains).
    #[serde(default)]
    pub count_local: bool,
    pub created_at: i64,
}

/// Who is in which group: an account (`user@domain`) or a whole domain (`domain`) -> group.
/// An account's own entry wins over its domain's.
pub const MAIL_RATE_MEMBERS: Table<&str, RateMember> = Table::new("mail_rate_members");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateMember {
    pub member: String,
    pub group: String,
}

/// What an account has sent in its current windows, by account id (written with the
/// deliveries that count, in their commit).
pub const MAIL_RATE_USAGE: Table<u64, RateUsage> = Table::new("mail_rate_usage");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RateUsage {
    pub account: u64,
    /// Start of the hour window (unix seconds) and what it has counted.
    pub hour_start: i64,
    pub hour_messages: u64,
    pub hour_recipients: u64,
    pub day_start: i64,
    pub day_messages: u64,
}

/// Limits on the MX per client network (an IPv4 /24, an IPv6 /64), under `"inbound"`.
pub const MAIL_RATE_INBOUND: Table<&str, InboundRate> = Table::new("mail_rate_inbound");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InboundRate {
    /// 0: no limit.
    pub connections_per_minute: u64,
    pub messages_per_minute: u64,
}

/// Mailing lists by address (`name@domain`, lowercase).
pub const MAIL_LISTS: Table<&str, MailList> = Table::new("mail_lists");

/// List members by (list id, member address, lowercase).
pub const MAIL_LIST_MEMBERS: Table<(u64, &str), ListMember> = Table::new("mail_list_members");

/// Posts held for the moderator by id, and their messages.
pub const MAIL_LIST_HELD: Table<u64, HeldPost> = Table::new("mail_list_held");
pub const MAIL_LIST_HELD_DATA: crate::RawTable<u64> = crate::RawTable::new("mail_list_held_data");

/// Subscribe/unsubscribe requests by mail waiting for their confirmation, by token.
pub const MAIL_LIST_PENDING: Table<&str, PendingRequest> = Table::new("mail_list_pending");

/// Archived posts by (list id, post number), and their messages by archive id.
pub const MAIL_LIST_ARCHIVE: Table<(u64, u64), ArchivedPost> = Table::new("mail_list_archive");
pub const MAIL_LIST_ARCHIVE_DATA: crate::RawTable<(u64, u64)> =
    crate::RawTable::new("mail_list_archive_data");

/// A mailing list as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailList {
    pub id: u64,
    pub domain: String,
    /// The local part, lowercase.
    pub name: String,
    pub owner: String,
    /// `members`, `anyone`, `moderated` or `announce`.
    pub policy: String,
    /// `list` or `author`.
    pub reply_to: String,
    #[serde(default)]
    pub subject_prefix: Option<String>,
    #[serde(default)]
    pub archive: bool,
    /// Bounces after which a member is disabled.
    pub bounce_limit: u32,
    /// Key of the per-member unsubscribe links (hex), made at creation.
    pub secret: String,
    /// Posts distributed so far (the archive's numbering).
    #[serde(default)]
    pub posts: u64,
    pub created_at: i64,
}

impl MailList {
    pub fn address(&self) -> String {
        format!("{}@{}", self.name, self.domain)
    }
}

/// One member of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMember {
    pub address: String,
    /// False once `bounces` reached the list's limit (or set so by the API).
    pub enabled: bool,
    #[serde(default)]
    pub bounces: u32,
    /// Unix seconds.
    pub added_at: i64,
    #[serde(default)]
    pub last_bounce: Option<i64>,
}

/// A post waiting for the moderator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPost {
    pub id: u64,
    pub list_id: u64,
    /// Envelope sender.
    pub sender: String,
    /// The From: address.
    pub author: String,
    pub subject: String,
    pub size: u64,
    pub received_at: i64,
    /// Whether the author's domain asks for DMARC enforcement (the From: is rewritten).
    #[serde(default)]
    pub dmarc_strict: bool,
}

/// A subscribe/unsubscribe request by mail waiting for the reply that confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub token: String,
    pub list_id: u64,
    pub address: String,
    /// `subscribe` or `unsubscribe`.
    pub action: String,
    pub expires_at: i64,
}

/// An archived post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedPost {
    pub number: u64,
    pub author: String,
    pub subject: String,
    pub size: u64,
    pub posted_at: i64,
}
