//! Spam handling at the MX (`/email/spam`): a score from rules written as data (the sender
//! checks' results, DNSBL listings, header sanity, the operator's own rules) or from rspamd,
//! the `X-Spam-*` headers, Junk and refusal thresholds, and greylisting of (network, sender,
//! recipient) triplets kept in the store.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wispd_store::schema::{GreyEntry, MAIL_GREYLIST, MAIL_SPAM, SpamRule, SpamSettings};
use wispd_store::{Store, StoreError};

use crate::inbound::{Verdict, Verdicts};
use crate::rbl::Listing;

/// Entries the allowlist and the denylist may hold each.
pub const MAX_LIST: usize = 1000;
/// The operator's rules at most.
pub const MAX_RULES: usize = 200;
/// A rule's `contains` at most (bytes).
pub const MAX_CONTAINS: usize = 200;
/// Of the body, operator `body` rules look at this much.
const BODY_SCAN: usize = 64 << 10;
/// A triplet that never passed is forgotten after this long (or twice the delay).
const UNPASSED_LIFE: i64 = 2 * 86_400;
/// A passed triplet's expiry is pushed out again once it is this old.
const RENEW_AFTER: i64 = 86_400;
/// rspamd may take this long per message.
const RSPAMD_TIMEOUT: Duration = Duration::from_secs(15);
/// rspamd's answer at most (bytes).
const RSPAMD_MAX_REPLY: usize = 1 << 20;
/// Idle connections to rspamd kept for reuse.
const RSPAMD_POOL: usize = 16;

/// One built-in rule: its name (as `tests=` lists it), default score, what it means, and
/// the test.
pub struct Rule {
    pub name: &'static str,
    pub score: f64,
    pub description: &'static str,
    test: fn(&Facts<'_>) -> bool,
}

/// The built-in rules. A score is overridden (or a rule turned off with 0) by the settings'
/// `scores`.
pub const RULES: &[Rule] = &[
    Rule {
        name: "SPF_FAIL",
        score: 3.0,
        description: "SPF of the MAIL FROM domain fails",
        test: |f| f.auth().is_some_and(|v| v.spf == Verdict::Fail),
    },
    Rule {
        name: "SPF_SOFTFAIL",
        score: 1.0,
        description: "SPF of the MAIL FROM domain soft-fails",
        test: |f| f.auth().is_some_and(|v| v.spf == Verdict::SoftFail),
    },
    Rule {
        name: "SPF_HELO_FAIL",
        score: 1.0,
        description: "SPF of the HELO name fails",
        test: |f| f.auth().is_some_and(|v| v.spf_helo == Verdict::Fail),
    },
    Rule {
        name: "DKIM_INVALID",
        score: 2.0,
        description: "a DKIM signature does not verify and none does",
        test: |f| {
            f.auth().is_some_and(|v| {
                v.dkim.iter().any(|(r, _)| *r == Verdict::Fail)
                    && !v.dkim.iter().any(|(r, _)| *r == Verdict::Pass)
            })
        },
    },
    Rule {
        name: "DMARC_FAIL",
        score: 3.0,
        description: "the From: domain publishes DMARC and nothing aligned passes",
        test: |f| f.auth().is_some_and(|v| v.dmarc == Verdict::Fail),
    },
    Rule {
        name: "RDNS_NONE",
        score: 1.0,
        description: "the client's address has no matching reverse DNS",
        test: |f| {
            f.auth()
                .is_some_and(|v| !matches!(v.iprev, Verdict::Pass | Verdict::TempError))
        },
    },
    Rule {
        name: "MISSING_DATE",
        score: 1.0,
        description: "no Date: header",
        test: |f| f.header("date").is_none(),
    },
    Rule {
        name: "MISSING_MID",
        score: 1.0,
        description: "no Message-ID: header",
        test: |f| f.header("message-id").is_none(),
    },
    Rule {
        name: "MISSING_FROM",
        score: 2.0,
        description: "no From: header",
        test: |f| f.header("from").is_none(),
    },
    Rule {
        name: "MISSING_SUBJECT",
        score: 0.5,
        description: "no Subject: header",
        test: |f| f.header("subject").is_none(),
    },
    Rule {
        name: "DATE_IN_FUTURE",
        score: 1.5,
        description: "the Date: is more than a day ahead",
        test: |f| {
            f.header("date")
                .and_then(|d| mail_parser::DateTime::parse_rfc822(d.trim()))
                .is_some_and(|d| d.to_timestamp() > f.now + 86_400)
        },
    },
    Rule {
        name: "FROM_NOT_ENVELOPE",
        score: 0.5,
        description: "the From: domain is not the MAIL FROM domain nor related to it",
        test: |f| {
            let envelope = domain_of(f.mail_from);
            match (f.header_from_domain(), envelope) {
                (Some(h), Some(e)) => !related(&h, &e),
                _ => false,
            }
        },
    },
    Rule {
        name: "HELO_BARE_IP",
        score: 1.5,
        description: "the HELO name is an IP address without brackets",
        test: |f| f.helo.parse::<IpAddr>().is_ok(),
    },
    Rule {
        name: "HELO_NOT_FQDN",
        score: 1.0,
        description: "the HELO name is not a domain name with a dot",
        test: |f| {
            !f.helo.starts_with('[') && f.helo.parse::<IpAddr>().is_err() && !f.helo.contains('.')
        },
    },
    Rule {
        name: "HELO_LITERAL_MISMATCH",
        score: 1.0,
        description: "the HELO address literal is not the client's address",
        test: |f| {
            f.helo
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .map(|h| h.strip_prefix("IPv6:").unwrap_or(h))
                .and_then(|h| h.parse::<IpAddr>().ok())
                .is_some_and(|a| a != f.ip)
        },
    },
    Rule {
        name: "HELO_IS_US",
        score: 2.5,
        description: "the client names itself as this server or one of its domains",
        test: |f| {
            let h = f.helo.trim_end_matches('.').to_ascii_lowercase();
            h == f.hostname.to_ascii_lowercase() || (f.local_domain)(&h)
        },
    },
    Rule {
        name: "SUBJ_ALL_CAPS",
        score: 0.5,
        description: "the Subject: has ten letters or more, all capitals",
        test: |f| {
            f.header("subject").is_some_and(|s| {
                let letters: Vec<char> = s.chars().filter(|c| c.is_alphabetic()).collect();
                letters.len() >= 10 && letters.iter().all(|c| c.is_uppercase())
            })
        },
    },
];

/// A listed sender or client never scored as spam, nor greylisted.
pub const ALLOWLISTED: (&str, f64) = ("ALLOWLISTED", -100.0);
/// A listed sender or client.
pub const DENYLISTED: (&str, f64) = ("DENYLISTED", 100.0);

/// What is known of a message when it is scored.
pub struct Facts<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// `MAIL FROM` (empty: the null sender).
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub message: &'a [u8],
    /// The sender checks' results, when they ran.
    pub verdicts: Option<&'a Verdicts>,
    /// The DNSBL zones that list the client.
    pub listings: &'a [Listing],
    pub hostname: &'a str,
    pub local_domain: &'a (dyn Fn(&str) -> bool + Sync),
    pub now: i64,
    headers: Vec<(String, String)>,
}

impl<'a> Facts<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ip: IpAddr,
        helo: &'a str,
        mail_from: &'a str,
        recipients: &'a [String],
        message: &'a [u8],
        verdicts: Option<&'a Verdicts>,
        listings: &'a [Listing],
        hostname: &'a str,
        local_domain: &'a (dyn Fn(&str) -> bool + Sync),
        now: i64,
    ) -> Facts<'a> {
        Facts {
            ip,
            helo,
            mail_from,
            recipients,
            message,
            verdicts,
            listings,
            hostname,
            local_domain,
            now,
            headers: headers(message),
        }
    }

    fn auth(&self) -> Option<&Verdicts> {
        self.verdicts
    }

    /// The first header field named `name` (lower case), unfolded.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The domain of the From: header's (first) address.
    fn header_from_domain(&self) -> Option<String> {
        let v = self.header("from")?;
        let addr = match (v.rfind('<'), v.rfind('>')) {
            (Some(a), Some(b)) if a < b => &v[a + 1..b],
            _ => v.trim(),
        };
        domain_of(addr)
    }

    fn body(&self) -> &[u8] {
        let start =
            memchr::memmem::find(self.message, b"\r\n\r\n").map_or(self.message.len(), |p| p + 4);
        let body = &self.message[start..];
        &body[..body.len().min(BODY_SCAN)]
    }
}

fn domain_of(address: &str) -> Option<String> {
    let (_, d) = address.trim().rsplit_once('@')?;
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

/// Whether two domains are the same or one is under the other, or they share the last two
/// labels (`mail.example.com` and `news.example.com`).
fn related(a: &str, b: &str) -> bool {
    let tail = |d: &str| {
        let labels: Vec<&str> = d.rsplitn(3, '.').collect();
        if labels.len() >= 2 {
            format!("{}.{}", labels[1], labels[0])
        } else {
            d.to_string()
        }
    };
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}")) || tail(a) == tail(b)
}

/// The header fields (name in lower case, value unfolded), the first 256 at most.
fn headers(message: &[u8]) -> Vec<(String, String)> {
    let end = memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |p| p + 2);
    let head = &message[..end.min(256 << 10)];
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some((_, v)) = out.last_mut()
                && v.len() < 4096
            {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        if out.len() >= 256 {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon])
                .trim()
                .to_ascii_lowercase();
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            out.push((name, value));
        }
    }
    out
}

/// A message's score and the rules that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub score: f64,
    pub tests: Vec<String>,
    pub allowlisted: bool,
}

/// Scores a message with the built-in rules, the DNSBL listings and the operator's rules.
pub fn score(settings: &SpamSettings, f: &Facts<'_>) -> Score {
    let mut total = 0.0;
    let mut tests = Vec::new();
    let mut add = |name: &str, default: f64, tests: &mut Vec<String>| {
        let s = settings.scores.get(name).copied().unwrap_or(default);
        if s != 0.0 {
            total += s;
            tests.push(name.to_string());
        }
    };
    let sender = f.mail_from.to_ascii_lowercase();
    let allowlisted = listed(&settings.allowlist, &sender, f.ip);
    if allowlisted {
        add(ALLOWLISTED.0, ALLOWLISTED.1, &mut tests);
    }
    if listed(&settings.denylist, &sender, f.ip) {
        add(DENYLISTED.0, DENYLISTED.1, &mut tests);
    }
    for r in RULES {
        if (r.test)(f) {
            add(r.name, r.score, &mut tests);
        }
    }
    for l in f.listings.iter().filter(|l| !l.reject) {
        add(&zone_rule(&l.zone), l.score, &mut tests);
    }
    for r in &settings.rules {
        if matches_rule(r, f) {
            add(&r.name, r.score, &mut tests);
        }
    }
    Score {
        score: (total * 100.0_f64).round() / 100.0,
        tests,
        allowlisted,
    }
}

/// `zen.spamhaus.org` → `RCVD_IN_ZEN_SPAMHAUS_ORG`.
pub fn zone_rule(zone: &str) -> String {
    let upper: String = zone
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("RCVD_IN_{upper}")
}

fn matches_rule(r: &SpamRule, f: &Facts<'_>) -> bool {
    let needle = r.contains.to_ascii_lowercase();
    if r.header.eq_ignore_ascii_case("body") {
        let body = f.body();
        return memchr::memmem::find(&body.to_ascii_lowercase(), needle.as_bytes()).is_some();
    }
    let name = r.header.to_ascii_lowercase();
    f.headers
        .iter()
        .filter(|(n, _)| *n == name)
        .any(|(_, v)| v.to_ascii_lowercase().contains(&needle))
}

/// Whether the sender or the client is on `list` (`user@domain`, `@domain`, `domain` — a
/// domain covers its subdomains — or an address/network).
fn listed(list: &[String], sender: &str, ip: IpAddr) -> bool {
    let domain = domain_of(sender).unwrap_or_default();
    list.iter().any(|e| {
        if e.contains('/') || e.parse::<IpAddr>().is_ok() {
            return crate::rbl::contains(e, ip);
        }
        if let Some(d) = e.strip_prefix('@') {
            return domain == d;
        }
        if e.contains('@') {
            return sender == e;
        }
        domain == *e || domain.ends_with(&format!(".{e}"))
    })
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Deliver, with these header lines (CRLF-terminated; may be empty), into Junk when
    /// `junk`; `status` is what Sieve's `spamtest` sees.
    Deliver {
        headers: String,
        junk: bool,
        status: SpamLevel,
    },
    /// `550 5.7.1`.
    Reject(String),
    /// `451 4.7.1`.
    Defer(String),
}

/// The spam level Sieve's `spamtest` reports (RFC 5235).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SpamLevel {
    /// Not tested.
    #[default]
    Unknown,
    /// This fraction (0 to 1) of the way to certain spam.
    Score(f64),
}

impl SpamLevel {
    pub fn sieve(self) -> ::sieve::SpamStatus {
        match self {
            SpamLevel::Unknown => ::sieve::SpamStatus::Unknown,
            SpamLevel::Score(f) if f <= 0.0 => ::sieve::SpamStatus::Ham,
            SpamLevel::Score(f) if f >= 1.0 => ::sieve::SpamStatus::Spam,
            SpamLevel::Score(f) => ::sieve::SpamStatus::MaybeSpam(f),
        }
    }
}

/// Counts since the start, for `GET /email/spam`.
#[derive(Debug, Default)]
struct Counts {
    scored: AtomicU64,
    junked: AtomicU64,
    rejected: AtomicU64,
    greylisted: AtomicU64,
    failures: AtomicU64,
}

/// Counts since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub scored: u64,
    pub junked: u64,
    pub rejected: u64,
    pub greylisted: u64,
    /// Messages the engine (rspamd) couldn't score.
    pub failures: u64,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpamError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The spam checker, shared by every SMTP session.
pub struct Spam {
    store: Store,
    settings: RwLock<SpamSettings>,
    counts: Counts,
    /// Idle keep-alive connections to rspamd, with the address they go to.
    pool: Mutex<Vec<(String, TcpStream)>>,
}

impl std::fmt::Debug for Spam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spam").finish_non_exhaustive()
    }
}

impl Spam {
    pub fn new(store: Store) -> Result<Spam, StoreError> {
        let settings = store
            .read(|r| r.get(&MAIL_SPAM, "spam"))?
            .unwrap_or_default();
        Ok(Spam {
            store,
            settings: RwLock::new(settings),
            counts: Counts::default(),
            pool: Mutex::new(Vec::new()),
        })
    }

    pub fn settings(&self) -> SpamSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn enabled(&self) -> bool {
        let s = self.settings.read().unwrap_or_else(PoisonError::into_inner);
        s.enabled || s.greylisting.enabled
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counts;
        Stats {
            scored: c.scored.load(Ordering::Relaxed),
            junked: c.junked.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            greylisted: c.greylisted.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Greylisting records held (triplets and domains).
    pub fn greylist_entries(&self) -> Result<u64, StoreError> {
        self.store.read(|r| r.len(&MAIL_GREYLIST))
    }

    /// Checks and stores a new configuration (durable when this returns).
    pub fn set(&self, mut s: SpamSettings) -> Result<SpamSettings, SpamError> {
        validate(&mut s)?;
        let stored = s.clone();
        self.store.write(|w| w.put(&MAIL_SPAM, "spam", &stored))?;
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = s.clone();
        Ok(s)
    }

    /// Forgets greylisting records that have expired; returns how many.
    pub fn prune(&self, now: i64) -> Result<u64, StoreError> {
        self.store
            .write(|w| w.retain_in(&MAIL_GREYLIST, "".., |e| e.expires > now))
    }

    /// Decides on a message for local recipients (`f.recipients`).
    pub async fn check(&self, f: &Facts<'_>) -> Decision {
        let s = self.settings();
        let pass = Decision::Deliver {
            headers: String::new(),
            junk: false,
            status: SpamLevel::Unknown,
        };
        if !s.enabled && !s.greylisting.enabled {
            return pass;
        }
        let scored = if !s.enabled {
            None
        } else if s.engine == "rspamd" {
            match self.rspamd(&s.url, f).await {
                Ok(r) => Some(r),
                Err(e) => {
                    self.counts.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, url = %s.url, "rspamd failed");
                    if s.on_failure == "defer" {
                        return Decision::Defer(
                            "Spam scanning is unavailable, try again later".into(),
                        );
                    }
                    None
                }
            }
        } else {
            let sc = ScoreOf::from(score(&s, f), s.junk_score, s.reject_score);
            let verdict = if sc.score >= s.reject_score {
                Verdict2::Reject
            } else if sc.score >= s.junk_score {
                Verdict2::Junk
            } else {
                Verdict2::Ham
            };
            Some((sc, verdict))
        };
        if let Some((sc, v)) = &scored {
            self.counts.scored.fetch_add(1, Ordering::Relaxed);
            match v {
                Verdict2::Reject => {
                    self.counts.rejected.fetch_add(1, Ordering::Relaxed);
                    let why = format!(
                        "Message refused as spam (score {:.1}, {}){}",
                        sc.score,
                        tests(&sc.tests),
                        sc.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                    return Decision::Reject(within(why, MAX_REPLY_TEXT));
                }
                Verdict2::Defer => {
                    self.counts.greylisted.fetch_add(1, Ordering::Relaxed);
                    return Decision::Defer("Try again later (rspamd)".into());
                }
                _ => {}
            }
        }
        let allowlisted = scored.as_ref().is_some_and(|(sc, _)| sc.allowlisted)
            || listed(&s.allowlist, &f.mail_from.to_ascii_lowercase(), f.ip);
        if s.greylisting.enabled && !allowlisted {
            match self.greylist(&s, f).await {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    self.counts.greylisted.fetch_add(1, Ordering::Relaxed);
                    return Decision::Defer(format!("Greylisted, try again in {wait} seconds"));
                }
                // the store failing is no reason to hold mail back
                Err(e) => tracing::error!(error = %e, "greylisting failed; message passed"),
            }
        }
        let Some((sc, v)) = scored else {
            return pass;
        };
        let junk = v == Verdict2::Junk;
        if junk {
            self.counts.junked.fetch_add(1, Ordering::Relaxed);
        }
        let required = sc.required;
        // 0 or below (the default) marks every scored message, negative scores too
        let marked = s.add_header_score <= 0.0 || sc.score >= s.add_header_score;
        let headers = if marked || junk {
            let status = format!(
                "X-Spam-Status: {}, score={:.1} required={:.1} tests=",
                if junk { "Yes" } else { "No" },
                sc.score,
                required
            );
            format!(
                "{status}{}\r\nX-Spam-Score: {:.1}\r\n{}",
                folded(&tests(&sc.tests), status.len()),
                sc.score,
                if junk { "X-Spam-Flag: YES\r\n" } else { "" }
            )
        } else {
            String::new()
        };
        let top = sc.reject_at;
        let level = if top > 0.0 {
            SpamLevel::Score((sc.score / top).clamp(0.0, 1.0))
        } else {
            SpamLevel::Score(if junk { 1.0 } else { 0.0 })
        };
        Decision::Deliver {
            headers,
            junk,
            status: level,
        }
    }

    /// `Some(seconds)`: the message is deferred that long at least. Every recipient's
    /// triplet must have passed; one message from a domain that authenticated (SPF or
    /// DKIM) and passed before passes them all.
    async fn greylist(&self, s: &SpamSettings, f: &Facts<'_>) -> Result<Option<i64>, String> {
        let net = network(f.ip);
        let sender = f.mail_from.to_ascii_lowercase();
        let keys: Vec<String> = f
            .recipients
            .iter()
            .map(|r| triplet_key(&net, &sender, &r.to_ascii_lowercase()))
            .collect();
        let envelope_domain = domain_of(&sender).unwrap_or_default();
        // the domain that vouches for the sender: MAIL FROM's under SPF, else the first
        // passing DKIM signature's
        let authenticated = f.verdicts.and_then(|v| {
            if !envelope_domain.is_empty() && v.authenticates(&envelope_domain, &envelope_domain) {
                Some(envelope_domain.clone())
            } else {
                v.dkim
                    .iter()
                    .find(|(r, d)| *r == Verdict::Pass && !d.is_empty())
                    .map(|(_, d)| d.clone())
            }
        });
        let domain_key = authenticated.as_ref().map(|d| format!("d {d}"));
        let (now, delay, window) = (
            f.now,
            i64::try_from(s.greylisting.delay).unwrap_or(i64::MAX),
            i64::try_from(s.greylisting.window).unwrap_or(i64::MAX),
        );
        let pass_authenticated = s.greylisting.pass_authenticated;
        let store = self.store.clone();
        let run = move || -> Result<Option<i64>, StoreError> {
            let (entries, domain) = store.read(|r| {
                let entries = keys
                    .iter()
                    .map(|k| r.get(&MAIL_GREYLIST, k.as_str()))
                    .collect::<Result<Vec<_>, _>>()?;
                let domain = match &domain_key {
                    Some(k) => r.get(&MAIL_GREYLIST, k.as_str())?,
                    None => None,
                };
                Ok::<_, StoreError>((entries, domain))
            })?;
            let live = |e: &Option<GreyEntry>| e.filter(|e| e.expires > now);
            let known_domain = pass_authenticated && live(&domain).is_some_and(|e| e.passed > 0);
            let renewed = |e: &GreyEntry| GreyEntry {
                passed: e.passed.max(1),
                expires: now.saturating_add(window),
                ..*e
            };
            let mut writes: Vec<(String, GreyEntry)> = Vec::new();
            let mut wait = 0i64;
            for (k, e) in keys.iter().zip(&entries) {
                let e = live(e);
                match e {
                    Some(e) if e.passed > 0 => {
                        if e.expires - now < window.saturating_sub(RENEW_AFTER) {
                            writes.push((k.clone(), renewed(&e)));
                        }
                    }
                    _ if known_domain => {
                        let first = e.map_or(now, |e| e.first);
                        writes.push((
                            k.clone(),
                            renewed(&GreyEntry {
                                first,
                                passed: now,
                                expires: 0,
                            }),
                        ));
                    }
                    Some(e) if now - e.first >= delay => {
                        writes.push((
                            k.clone(),
                            GreyEntry {
                                first: e.first,
                                passed: now,
                                expires: now.saturating_add(window),
                            },
                        ));
                    }
                    Some(e) => wait = wait.max(delay - (now - e.first)),
                    None => {
                        wait = wait.max(delay);
                        let life = UNPASSED_LIFE.max(delay.saturating_mul(2));
                        writes.push((
                            k.clone(),
                            GreyEntry {
                                first: now,
                                passed: 0,
                                expires: now.saturating_add(life),
                            },
                        ));
                    }
                }
            }
            // a domain that authenticated and passed is known from now on
            if wait == 0
                && let Some(k) = &domain_key
            {
                let d = live(&domain);
                if d.is_none_or(|d| d.expires - now < window.saturating_sub(RENEW_AFTER)) {
                    writes.push((
                        k.clone(),
                        GreyEntry {
                            first: d.map_or(now, |d| d.first),
                            passed: now,
                            expires: now.saturating_add(window),
                        },
                    ));
                }
            }
            if !writes.is_empty() {
                store.write(|w| {
                    for (k, e) in &writes {
                        w.put(&MAIL_GREYLIST, k.as_str(), e)?;
                    }
                    Ok::<_, StoreError>(())
                })?;
            }
            Ok((wait > 0).then_some(wait))
        };
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// The message to rspamd's `/checkv2`, its answer as a score and what to do.
    async fn rspamd(&self, url: &str, f: &Facts<'_>) -> Result<(ScoreOf, Verdict2), String> {
        let addr = url
            .strip_prefix("http://")
            .ok_or("the url must be http://")?
            .trim_end_matches('/')
            .to_string();
        let mut head = format!(
            "POST /checkv2 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nIP: {}\r\nHelo: {}\r\nFrom: {}\r\nHostname: {}\r\nPass: all\r\n",
            f.message.len(),
            f.ip,
            header_safe(f.helo),
            header_safe(f.mail_from),
            header_safe(f.hostname),
        );
        for r in f.recipients {
            head.push_str(&format!("Rcpt: {}\r\n", header_safe(r)));
        }
        head.push_str("\r\n");
        let reply = tokio::time::timeout(
            RSPAMD_TIMEOUT,
            self.exchange(&addr, head.as_bytes(), f.message),
        )
        .await
        .map_err(|_| "timed out".to_string())??;
        #[derive(serde::Deserialize)]
        struct Reply {
            action: String,
            score: f64,
            #[serde(default)]
            required_score: f64,
            #[serde(default)]
            thresholds: std::collections::BTreeMap<String, f64>,
            #[serde(default)]
            symbols: std::collections::BTreeMap<String, serde_json::Value>,
            #[serde(default)]
            messages: std::collections::BTreeMap<String, serde_json::Value>,
        }
        let r: Reply = serde_json::from_slice(&reply).map_err(|e| format!("its answer: {e}"))?;
        let verdict = match r.action.as_str() {
            "reject" => Verdict2::Reject,
            "soft reject" | "greylist" => Verdict2::Defer,
            "add header" | "rewrite subject" => Verdict2::Junk,
            _ => Verdict2::Ham,
        };
        let reject_at = r
            .thresholds
            .get("reject")
            .copied()
            .unwrap_or(r.required_score);
        // rspamd's own words for a refusal (its `smtp_message`), kept to one short, printable line
        let message = r
            .messages
            .get("smtp_message")
            .and_then(|m| m.as_str())
            .map(|m| {
                m.chars()
                    .filter(|c| (' '..='~').contains(c))
                    .take(200)
                    .collect::<String>()
            })
            .filter(|m| !m.trim().is_empty());
        Ok((
            ScoreOf {
                score: (r.score * 100.0).round() / 100.0,
                tests: r
                    .symbols
                    .keys()
                    .take(100)
                    .map(|t| {
                        t.chars()
                            .filter(char::is_ascii_graphic)
                            .filter(|c| *c != ',')
                            .take(64)
                            .collect()
                    })
                    .collect(),
                allowlisted: false,
                required: r.required_score,
                reject_at,
                message,
            },
            verdict,
        ))
    }

    /// One request over a pooled (or new) connection; the response body.
    async fn exchange(&self, addr: &str, head: &[u8], body: &[u8]) -> Result<Vec<u8>, String> {
        let pooled = {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            pool.iter()
                .position(|(a, _)| a == addr)
                .map(|i| pool.swap_remove(i).1)
        };
        // a pooled connection may have been closed by rspamd meanwhile: then once more anew
        if let Some(mut conn) = pooled
            && let Ok(reply) = request(&mut conn, head, body).await
        {
            self.give_back(addr, conn, &reply);
            return Ok(reply.body);
        }
        let mut conn = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        conn.set_nodelay(true).ok();
        let reply = request(&mut conn, head, body).await?;
        self.give_back(addr, conn, &reply);
        Ok(reply.body)
    }

    fn give_back(&self, addr: &str, conn: TcpStream, reply: &HttpReply) {
        if reply.keep_alive {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < RSPAMD_POOL {
                pool.push((addr.to_string(), conn));
            }
        }
    }
}

/// What a scoring engine said.
#[derive(Debug, Clone, PartialEq)]
struct ScoreOf {
    score: f64,
    tests: Vec<String>,
    allowlisted: bool,
    /// The engine's threshold for Junk (shown as `required=`).
    required: f64,
    /// The engine's threshold for refusal (`spamtest`'s top).
    reject_at: f64,
    /// What the engine says to the client when it refuses.
    message: Option<String>,
}

impl ScoreOf {
    fn from(s: Score, required: f64, reject_at: f64) -> Self {
        ScoreOf {
            score: s.score,
            tests: s.tests,
            allowlisted: s.allowlisted,
            required,
            reject_at,
            message: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict2 {
    Ham,
    Junk,
    Reject,
    Defer,
}

struct HttpReply {
    body: Vec<u8>,
    keep_alive: bool,
}

/// One HTTP/1.1 exchange: a 200 with a Content-Length body, bounded.
async fn request(conn: &mut TcpStream, head: &[u8], body: &[u8]) -> Result<HttpReply, String> {
    conn.write_all(head).await.map_err(|e| e.to_string())?;
    conn.write_all(body).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(p) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 64 << 10 {
            return Err("its answer's header is too large".into());
        }
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("it closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or("its answer has no Content-Length")?;
    if length > RSPAMD_MAX_REPLY {
        return Err("its answer is too large".into());
    }
    let keep_alive = !head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"));
    let mut body = buf.split_off(header_end);
    while body.len() < length {
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("its answer was cut short".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    if status != "200" {
        return Err(format!(
            "it answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(HttpReply { body, keep_alive })
}

/// A value safe in an HTTP header line.
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).take(512).collect()
}

/// An SMTP reply line stays within RFC 5321's 512 octets.
const MAX_REPLY_TEXT: usize = 400;

/// `s` cut to at most `n` bytes, at a character boundary, with `…` when cut.
fn within(mut s: String, n: usize) -> String {
    if s.len() > n {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A comma-separated list folded (RFC 5322, as SpamAssassin folds `tests=`) so that no header
/// line grows past 78 characters where items allow; `line` is what precedes it on its line.
fn folded(list: &str, mut line: usize) -> String {
    let mut out = String::with_capacity(list.len() + 16);
    for (i, item) in list.split(',').enumerate() {
        if i > 0 {
            out.push(',');
            line += 1;
            if line + item.len() > 78 {
                out.push_str("\r\n\t");
                line = 8;
            }
        }
        out.push_str(item);
        line += item.len();
    }
    out
}

fn tests(t: &[String]) -> String {
    if t.is_empty() {
        "none".into()
    } else {
        t.join(",")
    }
}

/// The client's network as greylisting groups it: IPv4 /24, IPv6 /64.
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn triplet_key(net: &str, sender: &str, recipient: &str) -> String {
    format!("t {net} {sender} {recipient}")
}

fn validate(s: &mut SpamSettings) -> Result<(), SpamError> {
    let bad = |m: String| Err(SpamError::Invalid(m));
    s.engine = s.engine.trim().to_ascii_lowercase();
    if s.engine.is_empty() {
        s.engine = "builtin".into();
    }
    match s.engine.as_str() {
        "builtin" => {}
        "rspamd" => {
            s.url = s.url.trim().trim_end_matches('/').to_string();
            let Some(hostport) = s.url.strip_prefix("http://") else {
                return bad("url: rspamd is reached over http:// (host:port)".into());
            };
            if hostport.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!(
                    "url: {:?} is not http://address:port (e.g. http://127.0.0.1:11333)",
                    s.url
                ));
            }
        }
        other => return bad(format!("engine: {other:?} is not builtin or rspamd")),
    }
    s.on_failure = s.on_failure.trim().to_ascii_lowercase();
    if s.on_failure.is_empty() {
        s.on_failure = "accept".into();
    }
    if s.on_failure != "accept" && s.on_failure != "defer" {
        return bad(format!(
            "on_failure: {:?} is not accept or defer",
            s.on_failure
        ));
    }
    for (name, v) in [
        ("add_header_score", s.add_header_score),
        ("junk_score", s.junk_score),
        ("reject_score", s.reject_score),
    ] {
        if !v.is_finite() || !(-1000.0..=1000.0).contains(&v) {
            return bad(format!("{name}: {v} is not between -1000 and 1000"));
        }
    }
    if s.junk_score > s.reject_score {
        return bad("junk_score: must not be above reject_score".into());
    }
    let g = &s.greylisting;
    if g.delay > 86_400 {
        return bad("greylisting.delay: at most 86400 seconds".into());
    }
    if g.window < 3600 || g.window > 400 * 86_400 {
        return bad("greylisting.window: between 3600 seconds and 400 days".into());
    }
    for (name, list) in [
        ("allowlist", &mut s.allowlist),
        ("denylist", &mut s.denylist),
    ] {
        if list.len() > MAX_LIST {
            return bad(format!("{name}: at most {MAX_LIST} entries"));
        }
        for e in list.iter_mut() {
            *e = e.trim().trim_end_matches('.').to_ascii_lowercase();
            let ok = if e.contains('/') || e.parse::<IpAddr>().is_ok() {
                network_ok(e)
            } else {
                let domain = e.rsplit_once('@').map_or(e.as_str(), |(_, d)| d);
                !e.is_empty()
                    && e.len() <= 320
                    && !domain.is_empty()
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && !e.chars().any(|c| c.is_whitespace() || c.is_control())
            };
            if !ok {
                return bad(format!(
                    "{name}: {e:?} is not an address, @domain, domain or network"
                ));
            }
        }
    }
    if s.scores.len() > RULES.len() + 2 + 200 {
        return bad("scores: too many".into());
    }
    for (name, v) in &s.scores {
        if !v.is_finite() || !(-1000.0..=1000.0).contains(v) {
            return bad(format!("scores: {name}: {v} is not between -1000 and 1000"));
        }
        if !rule_name_ok(name) {
            return bad(format!("scores: {name:?} is not a rule name"));
        }
    }
    if s.rules.len() > MAX_RULES {
        return bad(format!("rules: at most {MAX_RULES}"));
    }
    let mut names: Vec<String> = RULES.iter().map(|r| r.name.to_string()).collect();
    names.extend([ALLOWLISTED.0.to_string(), DENYLISTED.0.to_string()]);
    for r in &mut s.rules {
        r.name = r.name.trim().to_ascii_uppercase();
        r.header = r.header.trim().to_string();
        if !rule_name_ok(&r.name) {
            return bad(format!(
                "rules: {:?}: a name is 1 to 64 of A-Z, 0-9 and _",
                r.name
            ));
        }
        if names.contains(&r.name) {
            return bad(format!(
                "rules: {:?} is named twice or is a built-in rule",
                r.name
            ));
        }
        names.push(r.name.clone());
        if r.header.is_empty()
            || r.header.len() > 100
            || !r.header.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return bad(format!(
                "rules: {}: header is a header name or body",
                r.name
            ));
        }
        if r.contains.is_empty() || r.contains.len() > MAX_CONTAINS {
            return bad(format!(
                "rules: {}: contains is 1 to {MAX_CONTAINS} bytes",
                r.name
            ));
        }
        if !r.score.is_finite() || !(-1000.0..=1000.0).contains(&r.score) {
            return bad(format!(
                "rules: {}: score is between -1000 and 1000",
                r.name
            ));
        }
    }
    Ok(())
}

fn rule_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn network_ok(e: &str) -> bool {
    let (addr, bits) = match e.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (e, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u32>().is_ok_and(|n| n <= max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        message: &'a [u8],
        helo: &'a str,
        from: &'a str,
        rcpts: &'a [String],
    ) -> Facts<'a> {
        static LOCAL: fn(&str) -> bool = |d| d == "example.com";
        Facts::new(
            "192.0.2.7".parse().expect("ip"),
            helo,
            from,
            rcpts,
            message,
            None,
            &[],
            "mx.example.com",
            &LOCAL,
            1_700_000_000,
        )
    }

    #[test]
    fn rules_fire_on_what_they_describe() {
        let rcpts = vec!["u@example.com".to_string()];
        let clean = b"From: A <a@remote.example>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
Message-ID: <1@remote.example>\r\nSubject: hello\r\n\r\nbody\r\n";
        let s = SpamSettings::default();
        let sc = score(
            &s,
            &facts(
                clean,
                "mail.remote.example",
                "a@bounce.remote.example",
                &rcpts,
            ),
        );
        assert_eq!(sc.tests, Vec::<String>::new());
        assert_eq!(sc.score, 0.0);
        let bare = b"Subject: BUY CHEAP WATCHES NOW\r\n\r\nbody\r\n";
        let sc = score(&s, &facts(bare, "192.0.2.7", "x@spam.example", &rcpts));
        assert_eq!(
            sc.tests,
            [
                "MISSING_DATE",
                "MISSING_MID",
                "MISSING_FROM",
                "HELO_BARE_IP",
                "SUBJ_ALL_CAPS"
            ]
        );
        assert_eq!(sc.score, 6.0);
        let us = score(&s, &facts(clean, "example.com", "a@remote.example", &rcpts));
        assert_eq!(us.tests, ["HELO_IS_US"]);
        let other = score(
            &s,
            &facts(clean, "[192.0.2.8]", "a@elsewhere.example", &rcpts),
        );
        assert_eq!(other.tests, ["FROM_NOT_ENVELOPE", "HELO_LITERAL_MISMATCH"]);
        let future = b"From: a@remote.example\r\nDate: Tue, 14 Nov 2034 22:13:20 +0000\r\n\
Message-ID: <1@r>\r\nSubject: x\r\n\r\n";
        assert_eq!(
            score(
                &s,
                &facts(future, "mail.remote.example", "a@remote.example", &rcpts)
            )
            .tests,
            ["DATE_IN_FUTURE"]
        );
    }

    #[test]
    fn scores_lists_and_operator_rules_are_data() {
        let rcpts = vec!["u@example.com".to_string()];
        let m = b"Subject: cheap pills\r\n\r\nClick HERE now\r\n";
        let mut s = SpamSettings::default();
        s.scores.insert("MISSING_FROM".into(), 0.0);
        s.scores.insert("MISSING_DATE".into(), 4.25);
        s.rules = vec![
            SpamRule {
                name: "PILLS".into(),
                header: "subject".into(),
                contains: "PILLS".into(),
                score: 2.0,
            },
            SpamRule {
                name: "CLICK".into(),
                header: "body".into(),
                contains: "click here".into(),
                score: 1.5,
            },
            SpamRule {
                name: "NOPE".into(),
                header: "x-none".into(),
                contains: "a".into(),
                score: 9.0,
            },
        ];
        s.denylist = vec!["@spam.example".into()];
        validate(&mut s).expect("valid");
        let sc = score(&s, &facts(m, "mail.spam.example", "x@spam.example", &rcpts));
        assert_eq!(
            sc.tests,
            [
                "DENYLISTED",
                "MISSING_DATE",
                "MISSING_MID",
                "PILLS",
                "CLICK"
            ]
        );
        assert_eq!(sc.score, 108.75);
        s.allowlist = vec!["192.0.2.0/24".into()];
        validate(&mut s).expect("valid");
        let sc = score(&s, &facts(m, "mail.spam.example", "x@spam.example", &rcpts));
        assert!(sc.allowlisted);
        assert_eq!(sc.score, 8.75);
    }

    type Edit = Box<dyn Fn(&mut SpamSettings)>;

    #[test]
    fn validation_refuses_what_cannot_work() {
        let bad: Vec<Edit> = vec![
            Box::new(|s| s.engine = "spamassassin".into()),
            Box::new(|s| {
                s.engine = "rspamd".into();
                s.url = "https://x:1".into();
            }),
            Box::new(|s| s.junk_score = f64::NAN),
            Box::new(|s| s.junk_score = 20.0),
            Box::new(|s| s.greylisting.window = 10),
            Box::new(|s| s.greylisting.delay = u64::MAX),
            Box::new(|s| s.allowlist = vec!["a b".into()]),
            Box::new(|s| s.denylist = vec!["10.0.0.0/40".into()]),
            Box::new(|s| s.on_failure = "drop".into()),
            Box::new(|s| {
                s.rules = vec![SpamRule {
                    name: "SPF_FAIL".into(),
                    header: "x".into(),
                    contains: "y".into(),
                    score: 1.0,
                }]
            }),
            Box::new(|s| {
                s.rules = vec![SpamRule {
                    name: "A".into(),
                    header: "x".into(),
                    contains: String::new(),
                    score: 1.0,
                }]
            }),
            Box::new(|s| {
                s.scores.insert("bad name".into(), 1.0);
            }),
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut s = SpamSettings::default();
            f(&mut s);
            assert!(validate(&mut s).is_err(), "case {i}: {s:?}");
        }
        let mut ok = SpamSettings {
            engine: "RSPAMD".into(),
            url: "http://127.0.0.1:11333/".into(),
            ..SpamSettings::default()
        };
        validate(&mut ok).expect("valid");
        assert_eq!(
            (ok.engine.as_str(), ok.url.as_str()),
            ("rspamd", "http://127.0.0.1:11333")
        );
    }

    #[test]
    fn long_verdicts_fold_and_replies_stay_short() {
        let list = (0..30).map(|i| format!("RULE_{i:02}")).collect::<Vec<_>>();
        let f = folded(&tests(&list), 50);
        let mut first = true;
        for line in f.split("\r\n") {
            let len = line.len() + if first { 50 } else { 0 };
            assert!(len <= 78, "{line:?}");
            assert!(first || line.starts_with('\t'));
            first = false;
        }
        assert_eq!(f.replace("\r\n\t", ""), list.join(","));
        assert_eq!(within("é".repeat(300), 401).len(), 400 + '…'.len_utf8());
        assert_eq!(within("short".into(), 400), "short");
    }

    #[test]
    fn networks_group_as_greylisting_wants() {
        assert_eq!(network("192.0.2.77".parse().expect("ip")), "192.0.2.0/24");
        assert_eq!(
            network("2001:db8:1:2:3::9".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            network("::ffff:10.1.2.3".parse().expect("ip")),
            "10.1.2.0/24"
        );
    }
}
