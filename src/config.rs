//! The config file: TOML -> [`RawConfig`] (serde, unknown keys refused, defaults = the embedded
//! profile) -> [`Config`] (validated types). Every problem is collected and reported at once,
//! naming its key, before any port is bound.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: PathBuf,
    pub hostname: String,
    pub api: RawApi,
    pub smtp: RawSmtp,
    pub imap: RawImap,
    pub pop3: RawPop3,
    pub sieve: RawSieve,
    pub tls: RawTls,
    pub dns: RawDns,
    pub firewall: RawFirewall,
}

/// `[tls]`: certificates chosen by SNI on the mail listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    pub certificates: Vec<RawCertificate>,
}

/// One `[[tls.certificates]]`: the names it serves (`example.com`, `*.example.com`) and its
/// PEM files.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCertificate {
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawApi {
    pub listen: String,
    pub tls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub rate_limit_per_minute: i64,
    /// Where the API is reached from outside (`https://mail.example.com:2083`), for links in
    /// mail (mailing lists' one-click unsubscribe); empty: `https://HOSTNAME:PORT`.
    pub public_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSmtp {
    pub listen: Vec<String>,
    pub submission: Vec<String>,
    pub submissions: Vec<String>,
    pub max_message_size: i64,
    pub relay: String,
    pub max_recipients: i64,
    pub max_connections_per_ip: i64,
    pub idle_timeout_seconds: i64,
    pub retry_seconds: i64,
    pub max_retry_seconds: i64,
    pub queue_lifetime_seconds: i64,
    pub destination_concurrency: i64,
    pub data_timeout_seconds: i64,
    /// How long a rate-limit group's "hour" is (a day is 24 of them).
    pub rate_window_seconds: i64,
    pub max_inflight_mb: i64,
    pub postmaster: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// SPF/DKIM/DMARC/iprev of mail arriving at the MX.
    pub verify_senders: bool,
    /// `enforce`, `quarantine` or `record`.
    pub dmarc_policy: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawImap {
    pub listen: Vec<String>,
    pub imaps: Vec<String>,
    pub idle_timeout_seconds: i64,
    pub max_connections_per_ip: i64,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPop3 {
    /// POP3 listeners (STLS).
    pub listen: Vec<String>,
    /// POP3S listeners (implicit TLS).
    pub pop3s: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for RawPop3 {
    fn default() -> Self {
        RawPop3 {
            listen: vec!["127.0.0.1:5110".into()],
            pop3s: vec!["127.0.0.1:5995".into()],
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSieve {
    /// ManageSieve listeners.
    pub listen: Vec<String>,
    pub max_script_size: i64,
    pub max_scripts: i64,
    pub cpu_limit: i64,
    pub max_redirects: i64,
    pub max_out_messages: i64,
    pub max_includes: i64,
    /// Directory of `include :global` scripts; empty = none.
    pub global_dir: String,
}

impl Default for RawSieve {
    fn default() -> Self {
        let d = wispd_engine::sieve::SieveSettings::default();
        RawSieve {
            listen: vec!["127.0.0.1:4190".into()],
            max_script_size: d.max_script_size as i64,
            max_scripts: d.max_scripts as i64,
            cpu_limit: d.cpu_limit as i64,
            max_redirects: d.max_redirects as i64,
            max_out_messages: d.max_out_messages as i64,
            max_includes: d.max_includes as i64,
            global_dir: String::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDns {
    pub nameservers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFirewall {
    pub enabled: bool,
    pub table: String,
}

/// The embedded default profile: everything on loopback, high ports, data in `./wispd-data`.
impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            data_dir: PathBuf::from("./wispd-data"),
            hostname: String::new(),
            api: RawApi::default(),
            smtp: RawSmtp::default(),
            imap: RawImap::default(),
            pop3: RawPop3::default(),
            sieve: RawSieve::default(),
            tls: RawTls::default(),
            dns: RawDns::default(),
            firewall: RawFirewall::default(),
        }
    }
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: "127.0.0.1:2083".into(),
            tls: true,
            tls_cert: None,
            tls_key: None,
            rate_limit_per_minute: 60,
            public_url: String::new(),
        }
    }
}

impl Default for RawSmtp {
    fn default() -> Self {
        RawSmtp {
            listen: vec!["127.0.0.1:2525".into()],
            submission: vec!["127.0.0.1:5587".into()],
            submissions: vec!["127.0.0.1:5465".into()],
            max_message_size: 52_428_800,
            relay: String::new(),
            max_recipients: 100,
            max_connections_per_ip: 20,
            idle_timeout_seconds: 300,
            retry_seconds: 300,
            max_retry_seconds: 4000,
            queue_lifetime_seconds: 5 * 86_400,
            destination_concurrency: 4,
            data_timeout_seconds: 600,
            rate_window_seconds: 3600,
            max_inflight_mb: 256,
            postmaster: String::new(),
            tls_cert: None,
            tls_key: None,
            verify_senders: true,
            dmarc_policy: "enforce".into(),
        }
    }
}

impl Default for RawImap {
    fn default() -> Self {
        RawImap {
            listen: vec!["127.0.0.1:5143".into()],
            imaps: vec!["127.0.0.1:5993".into()],
            idle_timeout_seconds: 1800,
            max_connections_per_ip: 50,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for RawFirewall {
    fn default() -> Self {
        RawFirewall {
            enabled: true,
            table: "wispd".into(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Empty in the file means the machine's hostname.
    pub hostname: String,
    pub api: ApiConfig,
    pub smtp: SmtpConfig,
    pub imap: ImapConfig,
    pub pop3: Pop3Config,
    pub sieve: SieveConfig,
    pub tls: TlsConfig,
    pub dns: DnsConfig,
    pub firewall: FirewallConfig,
}

/// Certificates of the mail listeners: a default per listener kind (`None`: the API's, or
/// the self-signed one) and the certificates chosen by SNI, on every mail listener.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub smtp: Option<(PathBuf, PathBuf)>,
    pub imap: Option<(PathBuf, PathBuf)>,
    pub pop3: Option<(PathBuf, PathBuf)>,
    /// (lower-case names, cert, key).
    pub sni: Vec<(Vec<String>, PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tls: bool,
    /// Configured certificate and key; `None` means self-signed material under `DATA_DIR/tls/`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub rate_limit_per_minute: NonZeroU32,
    /// Empty: `https://HOSTNAME:PORT`.
    pub public_url: String,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub listen: Vec<SocketAddr>,
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub max_message_size: u64,
    /// Smarthost `(host, port)` for all outbound mail.
    pub relay: Option<(String, u16)>,
    pub max_recipients: usize,
    pub max_connections_per_ip: u32,
    pub idle_timeout: std::time::Duration,
    /// Outbound queue: first retry, longest retry interval, lifetime, per-destination limit.
    pub retry: std::time::Duration,
    pub max_retry: std::time::Duration,
    pub queue_lifetime: std::time::Duration,
    pub destination_concurrency: usize,
    /// A message must be transferred within this from DATA on.
    pub data_timeout: std::time::Duration,
    /// Seconds in a rate-limit hour.
    pub rate_window: u64,
    /// Message bytes in flight (SMTP and IMAP APPEND) held in memory at most.
    pub max_inflight_bytes: usize,
    /// Where postmaster mail goes when the domain has no such account (empty: the domain's first).
    pub postmaster: String,
    /// `None`: inbound senders are not checked.
    pub verify_senders: Option<wispd_engine::inbound::DmarcMode>,
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub listen: Vec<SocketAddr>,
    pub imaps: Vec<SocketAddr>,
    pub idle_timeout: std::time::Duration,
    pub max_connections_per_ip: u32,
}

#[derive(Debug, Clone)]
pub struct Pop3Config {
    pub listen: Vec<SocketAddr>,
    pub pop3s: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct SieveConfig {
    /// ManageSieve listeners.
    pub listen: Vec<SocketAddr>,
    pub settings: wispd_engine::sieve::SieveSettings,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Empty: the system resolver.
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct FirewallConfig {
    pub enabled: bool,
    pub table: String,
}

const MIN_MESSAGE_SIZE: i64 = 1024;
const MAX_MESSAGE_SIZE: i64 = 1 << 30;

impl Config {
    /// The embedded default profile.
    pub fn embedded() -> Config {
        match RawConfig::default().validate() {
            Ok(c) => c,
            // The defaults are constants checked by a unit test; this cannot be reached.
            Err(errors) => unreachable!("embedded profile is invalid: {errors:?}"),
        }
    }

    /// Reads and validates a config file; on failure, every problem found, each naming its key.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read config file {}: {e}", path.display())])?;
        Self::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            vec![format!("invalid TOML: {}", e.to_string().trim())]
        })?;
        match toml::Value::Table(table.clone()).try_into::<RawConfig>() {
            Ok(raw) => raw.validate(),
            Err(_) => {
                // Report the keys serde refuses, then validate what remains so that the
                // semantic problems show up in the same run.
                let (mut errors, rest) = diagnose(table);
                if let Ok(raw) = toml::Value::Table(rest).try_into::<RawConfig>()
                    && let Err(more) = raw.validate()
                {
                    errors.extend(more);
                }
                Err(errors)
            }
        }
    }
}

/// Finds every key that fails to deserialize by trying each one alone against the schema, so the
/// serde types stay the single description of what the file may contain.
fn diagnose(table: toml::Table) -> (Vec<String>, toml::Table) {
    let mut errors = Vec::new();
    let mut rest = toml::Table::new();
    for (key, value) in table {
        let alone = |v: toml::Value| {
            let mut t = toml::Table::new();
            t.insert(key.clone(), v);
            toml::Value::Table(t).try_into::<RawConfig>()
        };
        let Err(whole) = alone(value.clone()) else {
            rest.insert(key, value);
            continue;
        };
        let mut found = false;
        if let toml::Value::Table(section) = &value {
            let mut good = toml::Table::new();
            for (sub, sub_value) in section {
                let mut inner = toml::Table::new();
                inner.insert(sub.clone(), sub_value.clone());
                if let Err(e) = alone(toml::Value::Table(inner)) {
                    errors.push(format!("`{key}.{sub}`: {}", clean(&e)));
                    found = true;
                } else {
                    good.insert(sub.clone(), sub_value.clone());
                }
            }
            if found {
                rest.insert(key.clone(), toml::Value::Table(good));
            }
        }
        if !found {
            errors.push(format!("`{key}`: {}", clean(&whole)));
        }
    }
    if errors.is_empty() {
        errors.push("config does not match the expected schema".into());
    }
    (errors, rest)
}

fn clean(e: &toml::de::Error) -> String {
    e.message().trim().replace('\n', " ")
}

fn addr(key: &str, s: &str, errors: &mut Vec<String>) -> Option<SocketAddr> {
    // ":25" means every IPv4 address, as in the contract's table of production ports.
    let s = s.trim();
    let parsed = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}").parse(),
        None => s.parse(),
    };
    match parsed {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!(
                "`{key}`: {s:?} is not an address:port such as \"0.0.0.0:25\""
            ));
            None
        }
    }
}

fn addrs(key: &str, list: &[String], errors: &mut Vec<String>) -> Vec<SocketAddr> {
    list.iter().filter_map(|s| addr(key, s, errors)).collect()
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `{section}.tls_cert` and `{section}.tls_key`: both or neither.
fn cert_pair(
    section: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    errors: &mut Vec<String>,
) -> Option<(PathBuf, PathBuf)> {
    match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            errors.push(format!(
                "`{section}.tls_key`: required when `{section}.tls_cert` is set"
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(format!(
                "`{section}.tls_cert`: required when `{section}.tls_key` is set"
            ));
            None
        }
    }
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            errors.push("`data_dir`: must not be empty".into());
        }
        let hostname = self
            .hostname
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !hostname.is_empty() && !valid_hostname(&hostname) {
            errors.push(format!(
                "`hostname`: {:?} is not a valid host name",
                self.hostname
            ));
        }

        let api_listen = addr("api.listen", &self.api.listen, &mut errors);
        if let Some(a) = api_listen
            && !self.api.tls
            && !a.ip().is_loopback()
        {
            errors.push(format!(
                "`api.tls`: false is only allowed with a loopback `api.listen` (behind a local reverse proxy), not {a}"
            ));
        }
        let tls_files = cert_pair("api", self.api.tls_cert, self.api.tls_key, &mut errors);
        let mut sni: Vec<(Vec<String>, PathBuf, PathBuf)> = Vec::new();
        for (i, c) in self.tls.certificates.into_iter().enumerate() {
            let key = format!("tls.certificates[{i}]");
            if c.names.is_empty() {
                errors.push(format!("`{key}.names`: at least one name is needed"));
            }
            let mut names = Vec::new();
            for n in &c.names {
                let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
                let host = n.strip_prefix("*.").unwrap_or(&n);
                if !valid_hostname(host) || host.contains('*') {
                    errors.push(format!(
                        "`{key}.names`: {n:?} is not a host name or *.domain"
                    ));
                } else if sni.iter().any(|(other, _, _)| other.contains(&n)) {
                    errors.push(format!(
                        "`{key}.names`: {n:?} is already served by another certificate"
                    ));
                } else {
                    names.push(n);
                }
            }
            if c.cert.as_os_str().is_empty() || c.key.as_os_str().is_empty() {
                errors.push(format!("`{key}`: `cert` and `key` are both required"));
            }
            sni.push((names, c.cert, c.key));
        }
        let dmarc_mode = match self.smtp.dmarc_policy.trim().to_ascii_lowercase().as_str() {
            "enforce" => wispd_engine::inbound::DmarcMode::Enforce,
            "quarantine" => wispd_engine::inbound::DmarcMode::Quarantine,
            "record" => wispd_engine::inbound::DmarcMode::Record,
            other => {
                errors.push(format!(
                    "`smtp.dmarc_policy`: {other:?} is not one of enforce, quarantine, record"
                ));
                wispd_engine::inbound::DmarcMode::Enforce
            }
        };
        let verify_senders = self.smtp.verify_senders.then_some(dmarc_mode);
        let mail_tls = TlsConfig {
            smtp: cert_pair("smtp", self.smtp.tls_cert, self.smtp.tls_key, &mut errors),
            imap: cert_pair("imap", self.imap.tls_cert, self.imap.tls_key, &mut errors),
            pop3: cert_pair("pop3", self.pop3.tls_cert, self.pop3.tls_key, &mut errors),
            sni,
        };
        let rate = u32::try_from(self.api.rate_limit_per_minute)
            .ok()
            .and_then(NonZeroU32::new);
        if rate.is_none() {
            errors.push(format!(
                "`api.rate_limit_per_minute`: must be between 1 and {}, not {}",
                u32::MAX,
                self.api.rate_limit_per_minute
            ));
        }
        let public_url = self.api.public_url.trim().trim_end_matches('/').to_string();
        if !public_url.is_empty()
            && (!(public_url.starts_with("https://") || public_url.starts_with("http://"))
                || public_url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '>'))
        {
            errors.push(format!(
                "`api.public_url`: must be an http(s) URL such as https://mail.example.com:2083, not {:?}",
                self.api.public_url
            ));
        }

        let smtp_listen = addrs("smtp.listen", &self.smtp.listen, &mut errors);
        let submission = addrs("smtp.submission", &self.smtp.submission, &mut errors);
        let submissions = addrs("smtp.submissions", &self.smtp.submissions, &mut errors);
        if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&self.smtp.max_message_size) {
            errors.push(format!(
                "`smtp.max_message_size`: must be between {MIN_MESSAGE_SIZE} and {MAX_MESSAGE_SIZE} bytes, not {}",
                self.smtp.max_message_size
            ));
        }
        let relay = match self.smtp.relay.trim() {
            "" => None,
            r => match r
                .rsplit_once(':')
                .map(|(h, p)| (h.trim_matches(['[', ']']), p.parse::<u16>()))
            {
                Some((h, Ok(p)))
                    if !h.is_empty()
                        && p != 0
                        && (valid_hostname(h) || h.parse::<IpAddr>().is_ok()) =>
                {
                    Some((h.to_string(), p))
                }
                _ => {
                    errors.push(format!("`smtp.relay`: {r:?} is not host:port"));
                    None
                }
            },
        };

        let postmaster = match self.smtp.postmaster.trim() {
            "" => String::new(),
            p => match wispd_engine::address::address(p) {
                Some((l, d)) => format!("{l}@{d}"),
                None => {
                    errors.push(format!("`smtp.postmaster`: {p:?} is not an email address"));
                    String::new()
                }
            },
        };
        let mut bounded = |key: &str, v: i64, lo: i64, hi: i64| {
            if !(lo..=hi).contains(&v) {
                errors.push(format!("`{key}`: must be between {lo} and {hi}, not {v}"));
            }
            v.clamp(lo, hi).unsigned_abs()
        };
        let max_recipients = bounded("smtp.max_recipients", self.smtp.max_recipients, 1, 10_000);
        let per_ip = bounded(
            "smtp.max_connections_per_ip",
            self.smtp.max_connections_per_ip,
            1,
            10_000,
        );
        let idle = bounded(
            "smtp.idle_timeout_seconds",
            self.smtp.idle_timeout_seconds,
            1,
            3600,
        );
        let retry = bounded("smtp.retry_seconds", self.smtp.retry_seconds, 1, 86_400);
        let max_retry = bounded(
            "smtp.max_retry_seconds",
            self.smtp.max_retry_seconds,
            1,
            86_400,
        );
        let lifetime = bounded(
            "smtp.queue_lifetime_seconds",
            self.smtp.queue_lifetime_seconds,
            1,
            30 * 86_400,
        );
        let concurrency = bounded(
            "smtp.destination_concurrency",
            self.smtp.destination_concurrency,
            1,
            100,
        );
        let data_timeout = bounded(
            "smtp.data_timeout_seconds",
            self.smtp.data_timeout_seconds,
            10,
            86_400,
        );
        let rate_window = bounded(
            "smtp.rate_window_seconds",
            self.smtp.rate_window_seconds,
            1,
            86_400,
        );
        let inflight = bounded(
            "smtp.max_inflight_mb",
            self.smtp.max_inflight_mb,
            1,
            1 << 20,
        );
        let imap_idle = bounded(
            "imap.idle_timeout_seconds",
            self.imap.idle_timeout_seconds,
            1,
            86_400,
        );
        let imap_per_ip = bounded(
            "imap.max_connections_per_ip",
            self.imap.max_connections_per_ip,
            1,
            10_000,
        );
        let sieve_sizes = [
            bounded(
                "sieve.max_script_size",
                self.sieve.max_script_size,
                256,
                1 << 20,
            ),
            bounded("sieve.max_scripts", self.sieve.max_scripts, 1, 1000),
            bounded("sieve.cpu_limit", self.sieve.cpu_limit, 100, 10_000_000),
            bounded("sieve.max_redirects", self.sieve.max_redirects, 0, 100),
            bounded(
                "sieve.max_out_messages",
                self.sieve.max_out_messages,
                0,
                100,
            ),
            bounded("sieve.max_includes", self.sieve.max_includes, 0, 10),
        ]
        .map(|v| usize::try_from(v).unwrap_or(usize::MAX));
        let imap_listen = addrs("imap.listen", &self.imap.listen, &mut errors);
        let sieve_listen = addrs("sieve.listen", &self.sieve.listen, &mut errors);
        let global_dir = match self.sieve.global_dir.trim() {
            "" => None,
            d if Path::new(d).is_absolute() => Some(PathBuf::from(d)),
            d => {
                errors.push(format!(
                    "`sieve.global_dir`: {d:?} must be an absolute path"
                ));
                None
            }
        };
        let imaps = addrs("imap.imaps", &self.imap.imaps, &mut errors);
        let pop3_listen = addrs("pop3.listen", &self.pop3.listen, &mut errors);
        let pop3s = addrs("pop3.pop3s", &self.pop3.pop3s, &mut errors);

        let nameservers = self
            .dns
            .nameservers
            .iter()
            .filter_map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, 53)),
                Err(_) => addr("dns.nameservers", s, &mut errors),
            })
            .collect();

        let table = self.firewall.table.trim().to_string();
        if table.is_empty()
            || table.len() > 32
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            errors.push(format!(
                "`firewall.table`: {:?} must be 1-32 letters, digits, '_' or '-'",
                self.firewall.table
            ));
        }

        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        let listeners = api_listen
            .iter()
            .map(|a| (*a, "api.listen"))
            .chain(smtp_listen.iter().map(|a| (*a, "smtp.listen")))
            .chain(submission.iter().map(|a| (*a, "smtp.submission")))
            .chain(submissions.iter().map(|a| (*a, "smtp.submissions")))
            .chain(imap_listen.iter().map(|a| (*a, "imap.listen")))
            .chain(imaps.iter().map(|a| (*a, "imap.imaps")))
            .chain(pop3_listen.iter().map(|a| (*a, "pop3.listen")))
            .chain(pop3s.iter().map(|a| (*a, "pop3.pop3s")))
            .chain(sieve_listen.iter().map(|a| (*a, "sieve.listen")));
        for (a, key) in listeners {
            if a.port() == 0 {
                continue;
            }
            if let Some((_, other)) = seen.iter().find(|(b, _)| *b == a) {
                errors.push(format!("`{key}`: {a} is already used by `{other}`"));
            } else {
                seen.push((a, key));
            }
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(api_listen), Some(rate)) = (api_listen, rate) else {
            return Err(vec!["config is invalid".into()]);
        };
        Ok(Config {
            data_dir: self.data_dir,
            hostname,
            api: ApiConfig {
                listen: api_listen,
                tls: self.api.tls,
                tls_files,
                rate_limit_per_minute: rate,
                public_url,
            },
            smtp: SmtpConfig {
                listen: smtp_listen,
                submission,
                submissions,
                max_message_size: self.smtp.max_message_size.unsigned_abs(),
                relay,
                max_recipients: usize::try_from(max_recipients).unwrap_or(100),
                max_connections_per_ip: u32::try_from(per_ip).unwrap_or(20),
                idle_timeout: std::time::Duration::from_secs(idle),
                retry: std::time::Duration::from_secs(retry),
                max_retry: std::time::Duration::from_secs(max_retry.max(retry)),
                queue_lifetime: std::time::Duration::from_secs(lifetime),
                destination_concurrency: usize::try_from(concurrency).unwrap_or(4),
                data_timeout: std::time::Duration::from_secs(data_timeout),
                rate_window,
                max_inflight_bytes: usize::try_from(inflight)
                    .unwrap_or(256)
                    .saturating_mul(1 << 20),
                postmaster,
                verify_senders,
            },
            imap: ImapConfig {
                listen: imap_listen,
                imaps,
                idle_timeout: std::time::Duration::from_secs(imap_idle),
                max_connections_per_ip: u32::try_from(imap_per_ip).unwrap_or(50),
            },
            pop3: Pop3Config {
                listen: pop3_listen,
                pop3s,
            },
            sieve: SieveConfig {
                listen: sieve_listen,
                settings: wispd_engine::sieve::SieveSettings {
                    max_script_size: sieve_sizes[0],
                    max_scripts: sieve_sizes[1],
                    cpu_limit: sieve_sizes[2],
                    max_redirects: sieve_sizes[3],
                    max_out_messages: sieve_sizes[4],
                    max_includes: sieve_sizes[5],
                    global_dir,
                    hostname: String::new(),
                },
            },
            tls: mail_tls,
            dns: DnsConfig { nameservers },
            firewall: FirewallConfig {
                enabled: self.firewall.enabled,
                table,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_profile_is_valid_and_on_loopback() {
        let c = Config::embedded();
        assert_eq!(c.api.listen, "127.0.0.1:2083".parse().expect("addr"));
        assert_eq!(c.smtp.listen, vec!["127.0.0.1:2525".parse().expect("addr")]);
        assert_eq!(c.imap.imaps, vec!["127.0.0.1:5993".parse().expect("addr")]);
        assert_eq!(c.pop3.listen, vec!["127.0.0.1:5110".parse().expect("addr")]);
        assert_eq!(c.pop3.pop3s, vec!["127.0.0.1:5995".parse().expect("addr")]);
        assert_eq!(c.api.rate_limit_per_minute.get(), 60);
        assert_eq!(c.data_dir, PathBuf::from("./wispd-data"));
    }

    #[test]
    fn contract_example_parses() {
        let text = r#"
data_dir = "/var/lib/wispd"
hostname = "mail.example.com"
[api]
listen = "0.0.0.0:2083"
tls = true
tls_cert = "/etc/wispd/cert.pem"
tls_key  = "/etc/wispd/key.pem"
rate_limit_per_minute = 60
[smtp]
listen = ["0.0.0.0:25"]
submission = ["0.0.0.0:587"]
submissions = ["0.0.0.0:465"]
max_message_size = 52428800
relay = ""
[imap]
listen = ["0.0.0.0:143"]
imaps = ["0.0.0.0:993"]
[pop3]
listen = ["0.0.0.0:110"]
pop3s = ["0.0.0.0:995"]
[dns]
nameservers = []
[firewall]
enabled = true
table = "wispd"
"#;
        let c = Config::parse(text).expect("valid");
        assert_eq!(c.hostname, "mail.example.com");
        assert_eq!(c.smtp.listen, vec!["0.0.0.0:25".parse().expect("addr")]);
        assert_eq!(c.pop3.listen, vec!["0.0.0.0:110".parse().expect("addr")]);
        assert_eq!(c.pop3.pop3s, vec!["0.0.0.0:995".parse().expect("addr")]);
        assert!(c.api.tls_files.is_some());
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let text = r#"
bogus = 1
[api]
listen = "nope"
rate_limit_per_minute = "fast"
colour = "blue"
[smtp]
max_message_size = 5
relay = "no-port"
[pop3]
pop3s = ["nowhere"]
tls = true
[firewall]
table = "bad table!"
"#;
        let errors = Config::parse(text).expect_err("invalid");
        let all = errors.join("\n");
        for key in [
            "`bogus`",
            "`pop3.pop3s`",
            "`pop3.tls`",
            "`api.rate_limit_per_minute`",
            "`api.colour`",
            "`api.listen`",
            "`smtp.max_message_size`",
            "`smtp.relay`",
            "`firewall.table`",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
        let text = r#"
[api]
listen = "nope"
tls = false
[smtp]
max_message_size = 5
relay = "no-port"
listen = ["127.0.0.1:5143"]
[pop3]
listen = ["127.0.0.1:5995"]
[firewall]
table = "bad table!"
"#;
        let errors = Config::parse(text).expect_err("invalid");
        let all = errors.join("\n");
        for key in [
            "`api.listen`",
            "`smtp.max_message_size`",
            "`smtp.relay`",
            "`firewall.table`",
            "`imap.listen`",
            "`pop3.pop3s`",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
    }

    #[test]
    fn plaintext_api_only_on_loopback() {
        assert!(Config::parse("[api]\nlisten = \"127.0.0.1:8080\"\ntls = false\n").is_ok());
        let errs =
            Config::parse("[api]\nlisten = \"0.0.0.0:8080\"\ntls = false\n").expect_err("refused");
        assert!(errs[0].contains("`api.tls`"), "{errs:?}");
    }

    #[test]
    fn syntax_error_is_reported_with_location() {
        let errs = Config::parse("[api\nlisten=1").expect_err("syntax");
        assert!(errs[0].contains("invalid TOML"), "{errs:?}");
        assert!(errs[0].contains("line"), "{errs:?}");
    }
}
