//! Inbound trust at the MX: SPF (HELO and MAIL FROM), DKIM of every signature, DMARC
//! alignment and policy, iprev — with mail-auth over the configured resolver and bounded
//! caches — summed up in one `Authentication-Results:` header (RFC 8601), with the ARC chain
//! the message arrived with (RFC 8617). Headers claiming this server's name that a message
//! arrives with are removed: only wispd speaks for itself. Mail that leaves again (a forwarder,
//! a Sieve redirect) is ARC-sealed with these results so the next hop can trust them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::ResolverOpts;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, MX, MessageAuthenticator, Parameters,
    RecordSet, ResolverCache, Txt,
};

/// What a DMARC `p=reject` (or `quarantine`) failure does (`[smtp] dmarc_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcMode {
    /// Reject as the domain asks (`550 5.7.1`), quarantine into Junk.
    #[default]
    Enforce,
    /// Both into Junk.
    Quarantine,
    /// Only the header.
    Record,
}

/// What the checks say about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// File into the recipients' Junk.
    Junk,
    /// Refuse with this reason.
    Reject(String),
}

/// The outcome: the header to add (CRLF-terminated), what to do, and each check's result
/// (the spam score counts them).
#[derive(Debug, Clone)]
pub struct Checked {
    pub header: String,
    pub action: Action,
    pub verdicts: Verdicts,
    /// The ARC set for the copy that leaves (asked for with a [`Seal`]), CRLF-terminated.
    pub arc_set: Option<String>,
}

/// What to ARC-seal a message with that wispd sends on: the sealing domain's key and the
/// header fields the outgoing copy has above the message as it arrived (`Received:`).
#[derive(Debug)]
pub struct Seal {
    pub key: crate::dkim::SigningKey,
    pub prefix: Vec<u8>,
}

/// One check's result, as RFC 8601 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Not checked, or nothing to check (no record, no signature).
    #[default]
    None,
    Pass,
    Fail,
    SoftFail,
    Neutral,
    TempError,
    PermError,
}

/// The results of a message's checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdicts {
    pub spf_helo: Verdict,
    pub spf: Verdict,
    /// Each DKIM signature's result and its `d=` domain.
    pub dkim: Vec<(Verdict, String)>,
    /// `Fail` only when the domain has a record and nothing aligned passed.
    pub dmarc: Verdict,
    pub iprev: Verdict,
    /// The ARC chain's validation (`None` without one).
    pub arc: Verdict,
}

impl Verdicts {
    /// Whether `domain` (or a subdomain of it) is vouched for by a passing SPF (for MAIL
    /// FROM's domain) or DKIM signature.
    pub fn authenticates(&self, domain: &str, mail_from_domain: &str) -> bool {
        let under = |d: &str| {
            let d = d.to_ascii_lowercase();
            d == domain || d.ends_with(&format!(".{domain}")) || domain.ends_with(&format!(".{d}"))
        };
        (self.spf == Verdict::Pass && under(mail_from_domain))
            || self
                .dkim
                .iter()
                .any(|(v, d)| *v == Verdict::Pass && under(d))
    }
}

fn spf_verdict(r: mail_auth::SpfResult) -> Verdict {
    use mail_auth::SpfResult as S;
    match r {
        S::Pass => Verdict::Pass,
        S::Fail => Verdict::Fail,
        S::SoftFail => Verdict::SoftFail,
        S::Neutral => Verdict::Neutral,
        S::TempError => Verdict::TempError,
        S::PermError => Verdict::PermError,
        S::None => Verdict::None,
    }
}

fn dkim_verdict(r: &mail_auth::DkimResult) -> Verdict {
    use mail_auth::DkimResult as D;
    match r {
        D::Pass => Verdict::Pass,
        // a body hash mismatch is reported as neutral by mail-auth; for scoring it is a failure
        D::Fail(_) | D::Neutral(_) => Verdict::Fail,
        D::PermError(_) => Verdict::PermError,
        D::TempError(_) => Verdict::TempError,
        D::None => Verdict::None,
    }
}

fn iprev_verdict(r: &mail_auth::IprevResult) -> Verdict {
    use mail_auth::IprevResult as I;
    match r {
        I::Pass => Verdict::Pass,
        I::Fail(_) => Verdict::Fail,
        I::TempError(_) => Verdict::TempError,
        I::PermError(_) => Verdict::PermError,
        I::None => Verdict::None,
    }
}

/// Entries each cache holds at most; past that it starts over.
const CACHE_ENTRIES: usize = 20_000;
/// The whole check may take this long; then the results so far are temporary errors.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A bounded DNS answer cache that honours each record's TTL.
pub struct Cache<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Cache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, (value, valid_until));
    }
}

#[derive(Default)]
struct Caches {
    txt: Cache<Box<str>, Txt>,
    mx: Cache<Box<str>, RecordSet<MX>>,
    ipv4: Cache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: Cache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: Cache<IpAddr, RecordSet<Box<str>>>,
}

/// The checker, shared by every SMTP session.
pub struct Inbound {
    auth: MessageAuthenticator,
    hostname: String,
    mode: DmarcMode,
    caches: Caches,
}

/// A resolver for SPF/DKIM/DMARC over `[dns] nameservers` (the system's when empty).
pub(crate) fn authenticator(nameservers: &[SocketAddr]) -> Result<MessageAuthenticator, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    if nameservers.is_empty() {
        MessageAuthenticator::new_system_conf()
    } else {
        MessageAuthenticator::new(crate::dkim::nameserver_config(nameservers), opts)
    }
    .map_err(|e| e.to_string())
}

/// Whether a failing message falls in the `pct` share the policy applies to.
fn sampled(pct: u8) -> bool {
    if pct >= 100 {
        return true;
    }
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        return true;
    }
    u16::from_ne_bytes(b) % 100 < u16::from(pct)
}

/// `pct=` of a DMARC record's text, when it is there and valid (0 to 100).
fn parse_pct(record: &str) -> Option<u8> {
    if !record.trim_start().starts_with("v=DMARC1") {
        return None;
    }
    record.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("pct"))
            .then(|| v.trim().parse::<u8>().ok().filter(|p| *p <= 100))
            .flatten()
    })
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("hostname", &self.hostname)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// The `pct` of the DMARC record that applies to `domain`: its own, else its parents'
    /// (the DMARCbis tree walk, up to two labels). `None`: no record says `pct`.
    async fn dmarc_pct(&self, domain: &str) -> Option<u8> {
        let mut d = domain.trim_end_matches('.').to_ascii_lowercase();
        loop {
            if let Ok(raw) = self.auth.txt_raw_lookup(format!("_dmarc.{d}.")).await {
                let text = String::from_utf8_lossy(&raw);
                if text.contains("v=DMARC1") {
                    return parse_pct(&text);
                }
            }
            let (_, parent) = d.split_once('.')?;
            if !parent.contains('.') {
                return None;
            }
            d = parent.to_string();
        }
    }

    /// Over the configured nameservers (`[dns] nameservers`), or the system's.
    pub fn new(
        nameservers: &[SocketAddr],
        hostname: String,
        mode: DmarcMode,
    ) -> Result<Inbound, String> {
        let auth = authenticator(nameservers)?;
        Ok(Inbound {
            auth,
            hostname,
            mode,
            caches: Caches::default(),
        })
    }

    /// Checks a message that arrived from `ip` after `helo` and `MAIL FROM:<mail_from>`.
    /// With `seal`, the ARC set for the copy that leaves comes too.
    pub async fn check(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        message: &[u8],
        seal: Option<Seal>,
    ) -> Checked {
        let run = self.run(ip, helo, mail_from, message, seal);
        match tokio::time::timeout(CHECK_TIMEOUT, run).await {
            Ok(c) => c,
            Err(_) => Checked {
                header: format!(
                    "Authentication-Results: {}; dkim=temperror; spf=temperror; dmarc=temperror (DNS too slow)\r\n",
                    self.hostname
                ),
                action: Action::Accept,
                verdicts: Verdicts {
                    spf_helo: Verdict::TempError,
                    spf: Verdict::TempError,
                    dkim: Vec::new(),
                    dmarc: Verdict::TempError,
                    iprev: Verdict::TempError,
                    arc: Verdict::TempError,
                },
                arc_set: None,
            },
        }
    }

    async fn run(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        message: &[u8],
        seal: Option<Seal>,
    ) -> Checked {
        let c = &self.caches;
        macro_rules! params {
            ($p:expr) => {
                Parameters::new($p)
                    .with_txt_cache(&c.txt)
                    .with_mx_cache(&c.mx)
                    .with_ipv4_cache(&c.ipv4)
                    .with_ipv6_cache(&c.ipv6)
                    .with_ptr_cache(&c.ptr)
            };
        }
        let helo = if helo.is_empty() { "unknown" } else { helo };
        let from_domain = mail_from
            .rsplit_once('@')
            .map_or(helo, |(_, d)| d)
            .to_ascii_lowercase();
        let spf_helo = self
            .auth
            .verify_spf(params!(SpfParameters::verify_ehlo(
                ip,
                helo,
                &self.hostname
            )))
            .await;
        let sender = if mail_from.is_empty() {
            format!("postmaster@{helo}")
        } else {
            mail_from.to_string()
        };
        let spf = self
            .auth
            .verify_spf(params!(SpfParameters::verify_mail_from(
                ip,
                helo,
                &self.hostname,
                &sender
            )))
            .await;
        let iprev = self.auth.verify_iprev(params!(ip)).await;
        let mut verdicts = Verdicts {
            spf_helo: spf_verdict(spf_helo.result()),
            spf: spf_verdict(spf.result()),
            dkim: Vec::new(),
            dmarc: Verdict::None,
            iprev: iprev_verdict(iprev.result()),
            arc: Verdict::None,
        };
        let Some(msg) = parse_authenticated(message) else {
            let header = AuthenticationResults::new(&self.hostname)
                .with_spf_ehlo_result(&spf_helo, ip, helo)
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .with_iprev_result(&iprev, ip);
            return Checked {
                header: header_line(&header.to_string()),
                action: Action::Accept,
                verdicts,
                arc_set: None,
            };
        };
        let dkim = self.auth.verify_dkim(params!(&msg)).await;
        let arc = self.auth.verify_arc(params!(&msg)).await;
        verdicts.arc = dkim_verdict(arc.result());
        let dmarc = self
            .auth
            .verify_dmarc(params!(DmarcParameters::new(
                &msg,
                &dkim,
                &from_domain,
                &spf
            )))
            .await;
        let results = AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&dkim, msg.from())
            .with_spf_ehlo_result(&spf_helo, ip, helo)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_iprev_result(&iprev, ip)
            .with_dmarc_result(&dmarc)
            .with_arc_result(&arc, ip);
        // DMARC fails when the domain has a record and neither aligned DKIM nor aligned SPF
        // passes; a temporary error on either side is no verdict (nothing is enforced)
        let (d, s) = (dmarc.dkim_result(), dmarc.spf_result());
        let temp = |r: &DmarcResult| matches!(r, DmarcResult::TempError(_));
        let failed = dmarc.dmarc_record().is_some()
            && *d != DmarcResult::Pass
            && *s != DmarcResult::Pass
            && !temp(d)
            && !temp(s);
        // `t=y` (testing, DMARCbis) asks for one step less than the policy
        let testing = dmarc.dmarc_record().is_some_and(|r| r.t);
        verdicts.dkim = dkim
            .iter()
            .map(|o| {
                let d = o
                    .signature()
                    .map(|s| s.d.to_ascii_lowercase())
                    .unwrap_or_default();
                (dkim_verdict(o.result()), d)
            })
            .collect();
        verdicts.dmarc = if failed {
            Verdict::Fail
        } else if *d == DmarcResult::Pass || *s == DmarcResult::Pass {
            Verdict::Pass
        } else if temp(d) || temp(s) {
            Verdict::TempError
        } else {
            Verdict::None
        };
        // RFC 7489 6.6.4: `pct` below 100 applies the policy to that share of failing mail and
        // the next-lower policy to the rest. mail-auth 0.12 reads DMARCbis, which dropped
        // `pct`, so the record is read here again (from the resolver's cache).
        let mut policy = dmarc.policy();
        if failed
            && matches!(policy, Policy::Reject | Policy::Quarantine)
            && let Some(pct) = self.dmarc_pct(dmarc.domain()).await
            && !sampled(pct)
        {
            policy = if policy == Policy::Reject {
                Policy::Quarantine
            } else {
                Policy::None
            };
        }
        let action = match (failed, policy, self.mode) {
            (false, ..) | (_, _, DmarcMode::Record) => Action::Accept,
            (true, Policy::Reject, DmarcMode::Enforce) if !testing => Action::Reject(format!(
                "DMARC policy of {} rejects this message",
                dmarc.domain()
            )),
            (true, Policy::Reject | Policy::Quarantine, _) => Action::Junk,
            _ => Action::Accept,
        };
        let mut header = results.to_string();
        if failed {
            // mail-auth writes `none` when no aligned identifier passed; with a record that is
            // a failure (RFC 7489 6.6.2)
            header = header.replace("dmarc=none header.from=", "dmarc=fail header.from=");
        }
        let arc_set = seal.and_then(|seal| {
            let domain = seal.key.domain.clone();
            let mut leaving = seal.prefix;
            leaving.extend_from_slice(message);
            let parsed = parse_authenticated(&leaving)?;
            match seal.key.arc(&parsed, &results, &arc) {
                Ok(set) => set,
                Err(e) => {
                    tracing::error!(%domain, error = %e, "ARC sealing failed; sent unsealed");
                    None
                }
            }
        });
        Checked {
            header: header_line(&header),
            action,
            verdicts,
            arc_set,
        }
    }
}

fn header_line(value: &str) -> String {
    format!("Authentication-Results: {value}\r\n")
}

/// The message without `Authentication-Results:` header fields whose authserv-id is
/// `hostname` (RFC 8601 5: a border server removes those it didn't write). Folded fields go
/// whole; the body is untouched.
pub fn strip_forged(message: &[u8], hostname: &str) -> Vec<u8> {
    strip_fields(message, |field| claims(field, hostname))
}

/// The message without the `X-Spam-Status`, `X-Spam-Score` and `X-Spam-Flag` fields it
/// arrived with: only this server's verdict may steer the recipients' filters.
pub fn strip_spam_fields(message: &[u8]) -> Vec<u8> {
    strip_fields(message, |field| {
        ["x-spam-status:", "x-spam-score:", "x-spam-flag:"]
            .iter()
            .any(|n| field.len() >= n.len() && field[..n.len()].eq_ignore_ascii_case(n.as_bytes()))
    })
}

/// The message without `X-Virus-Status:` / `X-Virus-Scanned:` fields: only the server's own
/// scan may say what it found.
pub fn strip_virus_fields(message: &[u8]) -> Vec<u8> {
    strip_fields(message, |field| {
        ["x-virus-status:", "x-virus-scanned:"]
            .iter()
            .any(|n| field.len() >= n.len() && field[..n.len()].eq_ignore_ascii_case(n.as_bytes()))
    })
}

/// The message without the header fields `drop` picks (each with its continuation lines).
fn strip_fields(message: &[u8], drop: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    let mut out = Vec::with_capacity(message.len());
    let mut changed = false;
    for field in header_fields(&message[..end]) {
        if drop(field) {
            changed = true;
        } else {
            out.extend_from_slice(field);
        }
    }
    if !changed {
        return message.to_vec();
    }
    out.extend_from_slice(&message[end..]);
    out
}

/// The fields of a header block, each with its continuation lines and line ends.
pub(crate) fn header_fields(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= head.len() {
            return None;
        }
        let mut j = i;
        loop {
            match memchr::memchr(b'\n', &head[j..]) {
                Some(p) => j += p + 1,
                None => {
                    j = head.len();
                    break;
                }
            }
            if !matches!(head.get(j), Some(b' ' | b'\t')) {
                break;
            }
        }
        let field = &head[i..j];
        i = j;
        Some(field)
    })
}

/// Whether a header field is an `Authentication-Results:` naming `hostname` as its authserv-id.
fn claims(field: &[u8], hostname: &str) -> bool {
    const NAME: &[u8] = b"authentication-results:";
    if field.len() < NAME.len() || !field[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return false;
    }
    let value = String::from_utf8_lossy(&field[NAME.len()..]);
    // skip CFWS before the authserv-id
    let mut v = value.trim_start();
    while let Some(rest) = v.strip_prefix('(') {
        v = rest.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    let id: String = v
        .chars()
        .take_while(|c| !matches!(c, ';' | ' ' | '\t' | '\r' | '\n' | '('))
        .collect();
    id.trim_end_matches('.').eq_ignore_ascii_case(hostname)
}

/// `AuthenticatedMessage::parse`, with the DKIM/ARC body hashes computed here: mail-auth
/// writes the canonical body into the digest one byte per call, which made body hashing most
/// of the cost of checking a message. Here runs of ordinary bytes go into a buffer that
/// reaches the digest 16 KiB at a time (the same canonical form: a test compares the two).
///
/// mail-auth parses only the headers, plus one byte past the blank line: its header parser
/// stopped at that blank line exactly when the body offset it reports is the blank line's end
/// (had it read on, it would have taken the extra byte too). Anything else is parsed whole.
pub(crate) fn parse_authenticated(message: &[u8]) -> Option<AuthenticatedMessage<'_>> {
    let Some(split) = header_end(message).filter(|&s| s < message.len()) else {
        return AuthenticatedMessage::parse(message);
    };
    let mut msg = AuthenticatedMessage::parse(&message[..split + 1])?;
    if msg.body_offset as usize != split {
        return AuthenticatedMessage::parse(message);
    }
    msg.raw_message = message;
    let body = &message[split..];
    for (canonicalization, algorithm, length, hash) in &mut msg.body_hashes {
        *hash = body_hash(*canonicalization, *algorithm, body, *length);
    }
    Some(msg)
}

/// The offset just past the first empty line (`\r\n\r\n` or `\n\n`).
pub(crate) fn header_end(message: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\n', &message[at..]) {
        let nl = at + i;
        match message.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => at = nl + 1,
        }
    }
    None
}

fn body_hash(
    canonicalization: mail_auth::dkim::Canonicalization,
    algorithm: mail_auth::common::crypto::HashAlgorithm,
    body: &[u8],
    length: u64,
) -> Vec<u8> {
    use mail_auth::common::crypto::HashAlgorithm;
    use mail_auth::dkim::Canonicalization;
    let digest = match algorithm {
        HashAlgorithm::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlgorithm::Sha256 => &ring::digest::SHA256,
    };
    let mut out = Buffered {
        buf: Vec::with_capacity(Buffered::CHUNK + 64),
        ctx: ring::digest::Context::new(digest),
    };
    // the `l=` cut as mail-auth makes it (raw bytes)
    let body = if length == 0 || body.is_empty() {
        body
    } else {
        &body[..usize::try_from(length)
            .unwrap_or(usize::MAX)
            .min(body.len())]
    };
    match canonicalization {
        Canonicalization::Relaxed => relaxed_body(body, &mut out),
        Canonicalization::Simple => simple_body(body, &mut out),
    }
    out.finish()
}

/// Bytes a canonicalizer treats one by one; runs of anything else are copied whole.
const fn special(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// RFC 6376 relaxed body canonicalization, byte for byte what mail-auth 0.12 computes
/// (`CanonicalBody::write`, which a test compares this with), a run of ordinary bytes at a time.
fn relaxed_body(body: &[u8], out: &mut Buffered) {
    const SPECIAL: [bool; 256] = special(b" \t");
    let (mut crlf_seq, mut last_ch, mut is_empty) = (0usize, 0u8, true);
    let mut i = 0;
    while i < body.len() {
        let ch = body[i];
        if !SPECIAL[ch as usize] {
            let start = i;
            while i < body.len() && !SPECIAL[body[i] as usize] {
                i += 1;
            }
            for _ in 0..crlf_seq {
                out.push(b"\r\n");
            }
            crlf_seq = 0;
            if last_ch == b' ' || last_ch == b'\t' {
                out.push(b" ");
            }
            out.push(&body[start..i]);
            is_empty = false;
            last_ch = body[i - 1];
            continue;
        }
        match ch {
            b' ' | b'\t' => {
                for _ in 0..crlf_seq {
                    out.push(b"\r\n");
                }
                crlf_seq = 0;
                is_empty = false;
            }
            b'\n' => crlf_seq += 1,
            _ => {} // \r
        }
        last_ch = ch;
        i += 1;
    }
    if !is_empty {
        out.push(b"\r\n");
    }
}

/// RFC 6376 simple body canonicalization as mail-auth 0.12 computes it.
fn simple_body(body: &[u8], out: &mut Buffered) {
    const SPECIAL: [bool; 256] = special(b"");
    let mut crlf_seq = 0usize;
    let mut i = 0;
    while i < body.len() {
        let ch = body[i];
        if !SPECIAL[ch as usize] {
            let start = i;
            while i < body.len() && !SPECIAL[body[i] as usize] {
                i += 1;
            }
            for _ in 0..crlf_seq {
                out.push(b"\r\n");
            }
            crlf_seq = 0;
            out.push(&body[start..i]);
            continue;
        }
        if ch == b'\n' {
            crlf_seq += 1;
        }
        i += 1;
    }
    out.push(b"\r\n");
}

struct Buffered {
    buf: Vec<u8>,
    ctx: ring::digest::Context,
}

impl Buffered {
    const CHUNK: usize = 16 * 1024;

    fn finish(mut self) -> Vec<u8> {
        self.ctx.update(&self.buf);
        self.ctx.finish().as_ref().to_vec()
    }
}

impl Buffered {
    #[inline]
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.ctx.update(&self.buf);
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_body_hashes_equal_mail_auths() {
        let sig = |c: &str, a: &str| {
            format!(
                "DKIM-Signature: v=1; a={a}; c={c}; d=example.com; s=s;\r\n h=from:subject; bh=AAAA; b=AAAA\r\n"
            )
        };
        let mut headers = String::new();
        for c in ["relaxed/relaxed", "simple/simple", "relaxed/simple"] {
            for a in ["rsa-sha256", "rsa-sha1"] {
                headers.push_str(&sig(c, a));
            }
        }
        headers.push_str("From: a@example.com\r\nSubject: x\r\n");
        let pieces: [&[u8]; 14] = [
            b"\r\n",
            b"\n",
            b" ",
            b"\t",
            b"a",
            b"\r",
            b"word ",
            b"\r\n\r\n",
            b".",
            b" \t \r\n",
            "\u{e9}t\u{e9}".as_bytes(),
            b"x\t",
            b"\r\r\n",
            b"\n\t",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases: Vec<Vec<u8>> = vec![
            format!("{headers}").into_bytes(),
            format!("{headers}\r\n").into_bytes(),
            format!("{headers}\r\nx").into_bytes(),
            format!("{headers}\n\nbody\n").into_bytes(),
            format!("{headers}garbage line\r\n\r\nbody\r\n").into_bytes(),
            format!("{headers} \r\n\r\nbody\r\n").into_bytes(),
            b"\r\n\r\nbody".to_vec(),
        ];
        for _ in 0..600 {
            let mut m = headers.clone().into_bytes();
            m.extend_from_slice(b"\r\n");
            for _ in 0..(next() % 40_000) / 8 {
                m.extend_from_slice(pieces[(next() % 14) as usize]);
            }
            cases.push(m);
        }
        let hashes = parse_authenticated(&cases[3]).unwrap().body_hashes;
        assert_eq!(hashes.len(), 4, "{hashes:?}");
        assert!(hashes.iter().all(|h| !h.3.is_empty()));
        for m in &cases {
            let ours = parse_authenticated(m).map(|a| (a.body_offset, a.body_hashes, a.headers));
            let theirs =
                AuthenticatedMessage::parse(m).map(|a| (a.body_offset, a.body_hashes, a.headers));
            assert_eq!(
                ours,
                theirs,
                "{:?}",
                String::from_utf8_lossy(&m[..m.len().min(600)])
            );
        }
    }

    #[test]
    fn pct_is_read_from_the_record_and_bounded() {
        assert_eq!(parse_pct("v=DMARC1; p=reject; pct=20"), Some(20));
        assert_eq!(
            parse_pct("v=DMARC1;p=reject;PCT = 0 ;rua=mailto:x@y"),
            Some(0)
        );
        assert_eq!(parse_pct("v=DMARC1; p=reject"), None);
        for bad in [
            "v=DMARC1; pct=101",
            "v=DMARC1; pct=-1",
            "v=DMARC1; pct=99999999999",
            "pct=5",
        ] {
            assert_eq!(parse_pct(bad), None, "{bad}");
        }
        assert!(sampled(100) && !sampled(0));
    }

    #[test]
    fn forged_results_for_this_host_are_removed_others_kept() {
        let m = b"Authentication-Results: MX.Example.COM; dkim=pass\r\n\
X-A: 1\r\n\
Authentication-Results: (comment) mx.example.com;\r\n\tspf=pass\r\n\
Authentication-Results: other.example; dkim=pass\r\n\
Authentication-Results: mx.example.com.evil; dkim=pass\r\n\
Subject: hi\r\n\r\nAuthentication-Results: mx.example.com; in the body\r\n";
        let out = strip_forged(m, "mx.example.com");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "X-A: 1\r\nAuthentication-Results: other.example; dkim=pass\r\n\
Authentication-Results: mx.example.com.evil; dkim=pass\r\n\
Subject: hi\r\n\r\nAuthentication-Results: mx.example.com; in the body\r\n"
        );
        let clean = b"Subject: x\r\n\r\nbody";
        assert_eq!(strip_forged(clean, "mx.example.com"), clean.to_vec());
    }
}
