//! lfd's csf.conf keys: CSF's names, formats and defaults, plus the few wispd adds for what it
//! owns (`LF_API`, `LF_IGNORE`, `ALERT_WEBHOOK_URL`, `LF_ALERT_DIGEST`). Parsed with the rest of
//! the settings, so a bad value is refused with every other bad key of the same change.

use ipnet::IpNet;

use crate::model::{SettingError, parse_net};

/// The services lfd counts failures of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Sshd,
    SmtpAuth,
    Imapd,
    Pop3d,
    ManageSieve,
    Api,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Service::Sshd,
        Service::SmtpAuth,
        Service::Imapd,
        Service::Pop3d,
        Service::ManageSieve,
        Service::Api,
    ];

    /// As `/csf/lfd/failures` names it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Sshd => "sshd",
            Service::SmtpAuth => "smtpauth",
            Service::Imapd => "imapd",
            Service::Pop3d => "pop3d",
            Service::ManageSieve => "managesieve",
            Service::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|v| v.name() == s)
    }

    /// The csf.conf trigger key. ManageSieve logins are mail logins with the IMAP password, so
    /// they count as `LF_IMAPD` does (CSF's Dovecot rules have no ManageSieve line at all).
    pub fn key(self) -> &'static str {
        match self {
            Service::Sshd => "LF_SSHD",
            Service::SmtpAuth => "LF_SMTPAUTH",
            Service::Imapd | Service::ManageSieve => "LF_IMAPD",
            Service::Pop3d => "LF_POP3D",
            Service::Api => "LF_API",
        }
    }

    /// What failed, for ban comments and alerts (`5 failed IMAP logins`).
    pub fn what(self) -> &'static str {
        match self {
            Service::Sshd => "SSH logins",
            Service::SmtpAuth => "SMTP AUTH logins",
            Service::Imapd => "IMAP logins",
            Service::Pop3d => "POP3 logins",
            Service::ManageSieve => "ManageSieve logins",
            Service::Api => "API requests with a wrong token",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Every lfd key with its default.
pub const DEFAULTS: [(&str, &str); 45] = [
    ("LF_DAEMON", "1"),
    ("LF_TRIGGER", "0"),
    ("LF_TRIGGER_PERM", "1"),
    ("LF_SSHD", "5"),
    ("LF_SSHD_PERM", "1"),
    ("LF_SMTPAUTH", "5"),
    ("LF_SMTPAUTH_PERM", "1"),
    ("LF_IMAPD", "10"),
    ("LF_IMAPD_PERM", "1"),
    ("LF_POP3D", "10"),
    ("LF_POP3D_PERM", "1"),
    ("LF_API", "10"),
    ("LF_API_PERM", "3600"),
    ("LF_INTERVAL", "3600"),
    ("LF_PERMBLOCK", "1"),
    ("LF_PERMBLOCK_INTERVAL", "86400"),
    ("LF_PERMBLOCK_COUNT", "4"),
    ("LF_PERMBLOCK_ALERT", "1"),
    ("LF_EMAIL_ALERT", "1"),
    ("LF_TEMP_EMAIL_ALERT", "1"),
    ("LF_ALERT_TO", ""),
    ("LF_ALERT_FROM", ""),
    ("LF_ALERT_DIGEST", "60"),
    ("ALERT_WEBHOOK_URL", ""),
    ("IGNORE_ALLOW", "0"),
    ("LF_IGNORE", ""),
    ("SSHD_LOG", "/var/log/auth.log"),
    ("LF_TAMPER_ALERT", "1"),
    ("LF_BLOCKLIST_ALERT", "1"),
    ("LF_NETBLOCK", "0"),
    ("CT_LIMIT", "0"),
    ("CT_INTERVAL", "30"),
    ("CT_EMAIL_ALERT", "1"),
    ("CT_PERMANENT", "0"),
    ("CT_BLOCK_TIME", "1800"),
    ("CT_SKIP_TIME_WAIT", "0"),
    ("CT_STATES", ""),
    ("CT_PORTS", ""),
    ("PS_INTERVAL", "0"),
    ("PS_LIMIT", "10"),
    ("PS_PORTS", "0:65535,ICMP"),
    ("PS_DIVERSITY", "1"),
    ("PS_PERMANENT", "0"),
    ("PS_BLOCK_TIME", "3600"),
    ("PS_EMAIL_ALERT", "1"),
];

/// A trigger: failures within `LF_INTERVAL` that ban, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// 0 = this service is not watched.
    pub count: u32,
    /// 0 = permanent, else seconds.
    pub ttl: i64,
}

/// lfd's parsed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfdSettings {
    pub daemon: bool,
    /// `LF_TRIGGER`: 0 = per-service counts; more = cumulative count across the services whose
    /// trigger is not 0.
    pub trigger: u32,
    pub trigger_ttl: i64,
    /// By [`Service::index`].
    pub services: [Trigger; 6],
    pub interval: i64,
    pub permblock: bool,
    pub permblock_interval: i64,
    pub permblock_count: u32,
    pub permblock_alert: bool,
    pub email_alert: bool,
    pub temp_email_alert: bool,
    pub alert_to: String,
    pub alert_from: String,
    /// Seconds: alerts raised within this long of the last alert email wait and go together.
    pub alert_digest: i64,
    pub webhook: String,
    pub ignore_allow: bool,
    pub ignore: Vec<IpNet>,
    pub sshd_log: String,
    pub tamper_alert: bool,
    pub blocklist_alert: bool,
    pub ct: CtSettings,
    pub ps: PsSettings,
}

/// Port-scan detection (`PS_*`): hits on closed ports per source within `interval` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsSettings {
    /// 0 = off.
    pub interval: i64,
    pub limit: u32,
    /// Ports watched (TCP SYNs and UDP packets that no rule accepted).
    pub ports: Vec<crate::model::PortRange>,
    /// Dropped ICMP echo requests count too (`ICMP` in `PS_PORTS`).
    pub icmp: bool,
    /// Distinct ports (ICMP counting as one) among the hits before a ban.
    pub diversity: u32,
    /// 0 = permanent (`PS_PERMANENT`), else `PS_BLOCK_TIME`.
    pub ttl: i64,
    pub email_alert: bool,
}

/// Connection tracking limits (`CT_*`): connections per remote address, counted every
/// `interval` seconds from the conntrack table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtSettings {
    /// 0 = off.
    pub limit: u32,
    pub interval: i64,
    pub email_alert: bool,
    /// 0 = permanent, else seconds (`CT_PERMANENT` / `CT_BLOCK_TIME`).
    pub ttl: i64,
    pub skip_time_wait: bool,
    /// Only TCP connections in these states count (empty: every connection).
    pub states: Vec<String>,
    /// Only connections to these local ports count (empty: every port).
    pub ports: Vec<u16>,
}

impl LfdSettings {
    /// The trigger that applies to `service`: (count, ttl, cumulative).
    pub fn trigger_for(&self, service: Service) -> (u32, i64, bool) {
        let own = self.services[service.index()];
        if self.trigger > 0 {
            if own.count == 0 {
                return (0, 0, true);
            }
            return (self.trigger, self.trigger_ttl, true);
        }
        (own.count, own.ttl, false)
    }

    /// Whether `ip` is never banned by lfd (`LF_IGNORE`).
    pub fn ignored(&self, ip: std::net::IpAddr) -> bool {
        self.ignore.iter().any(|n| n.contains(&ip))
    }
}

fn bad(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_string(),
        message: message.into(),
    }
}

fn count(key: &str, v: &str, max: u64, errors: &mut Vec<SettingError>) -> u64 {
    match v.trim().parse::<u64>() {
        Ok(n) if n <= max => n,
        _ => {
            errors.push(bad(
                key,
                format!("{:?} must be a whole number from 0 to {max}", v.trim()),
            ));
            0
        }
    }
}

fn flag(key: &str, v: &str, errors: &mut Vec<SettingError>) -> bool {
    match v.trim() {
        "1" => true,
        "0" => false,
        other => {
            errors.push(bad(key, format!("{other:?} must be 0 or 1")));
            false
        }
    }
}

/// `_PERM`: 1 = permanent, more = a temporary block of that many seconds.
fn perm(key: &str, v: &str, errors: &mut Vec<SettingError>) -> i64 {
    match v.trim().parse::<i64>() {
        Ok(1) => 0,
        Ok(n) if (2..=crate::engine::MAX_TTL).contains(&n) => n,
        _ => {
            errors.push(bad(
                key,
                format!(
                    "{:?} must be 1 (block permanently) or a block time of 2 to {} seconds",
                    v.trim(),
                    crate::engine::MAX_TTL
                ),
            ));
            0
        }
    }
}

fn address(key: &str, v: &str, errors: &mut Vec<SettingError>) -> String {
    let v = v.trim();
    let ok = v.is_empty()
        || (v.len() <= 254
            && v.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
            })
            && !v
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c)));
    if !ok {
        errors.push(bad(key, format!("{v:?} is not an email address")));
    }
    v.to_string()
}

/// Parses lfd's keys through `get` (which falls back to [`DEFAULTS`]).
pub fn parse<'a>(get: impl Fn(&str) -> &'a str, errors: &mut Vec<SettingError>) -> LfdSettings {
    let day = 86_400 * 3650;
    let mut by_key = std::collections::BTreeMap::new();
    for key in ["LF_SSHD", "LF_SMTPAUTH", "LF_IMAPD", "LF_POP3D", "LF_API"] {
        let c = count(key, get(key), 100_000, errors);
        let perm_key = format!("{key}_PERM");
        let ttl = perm(&perm_key, get(&perm_key), errors);
        by_key.insert(
            key,
            Trigger {
                count: u32::try_from(c).unwrap_or(u32::MAX),
                ttl,
            },
        );
    }
    let mut services = [Trigger { count: 0, ttl: 0 }; 6];
    for service in Service::ALL {
        if let Some(t) = by_key.get(service.key()) {
            services[service.index()] = *t;
        }
    }
    let interval = count("LF_INTERVAL", get("LF_INTERVAL"), day, errors);
    if interval == 0 {
        errors.push(bad("LF_INTERVAL", "must be at least 1 second"));
    }
    let permblock_interval = count(
        "LF_PERMBLOCK_INTERVAL",
        get("LF_PERMBLOCK_INTERVAL"),
        day,
        errors,
    );
    let permblock_count = count(
        "LF_PERMBLOCK_COUNT",
        get("LF_PERMBLOCK_COUNT"),
        1000,
        errors,
    );
    let permblock = flag("LF_PERMBLOCK", get("LF_PERMBLOCK"), errors);
    if permblock && (permblock_count < 2 || permblock_interval == 0) {
        errors.push(bad(
            "LF_PERMBLOCK_COUNT",
            "must be at least 2 (with LF_PERMBLOCK_INTERVAL above 0) while LF_PERMBLOCK is 1",
        ));
    }
    let webhook = get("ALERT_WEBHOOK_URL").trim().to_string();
    if !webhook.is_empty()
        && (!(webhook.starts_with("https://") || webhook.starts_with("http://"))
            || webhook.len() > 2048
            || webhook.chars().any(|c| c.is_whitespace() || c.is_control())
            || reqwest::Url::parse(&webhook).is_err())
    {
        errors.push(bad(
            "ALERT_WEBHOOK_URL",
            format!("{webhook:?} is not an http(s):// URL"),
        ));
    }
    let mut ignore = Vec::new();
    for part in get("LF_IGNORE")
        .split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match parse_net(part) {
            Some(n) => ignore.push(n),
            None => errors.push(bad(
                "LF_IGNORE",
                format!("{part:?} is not an IP address or CIDR"),
            )),
        }
    }
    let sshd_log = get("SSHD_LOG").trim().to_string();
    if !(sshd_log.is_empty() || sshd_log.starts_with('/')) || sshd_log.chars().any(char::is_control)
    {
        errors.push(bad(
            "SSHD_LOG",
            format!("{sshd_log:?} must be an absolute path (or empty: sshd is not watched)"),
        ));
    }
    if flag("LF_NETBLOCK", get("LF_NETBLOCK"), errors) {
        errors.push(bad(
            "LF_NETBLOCK",
            "blocking whole networks is not built in wispd yet; leave it 0",
        ));
    }
    let alert_digest = count("LF_ALERT_DIGEST", get("LF_ALERT_DIGEST"), 86_400, errors);
    let ct = ct_settings(&get, errors);
    let ps = ps_settings(&get, errors);
    let trigger = count("LF_TRIGGER", get("LF_TRIGGER"), 100_000, errors);
    LfdSettings {
        daemon: flag("LF_DAEMON", get("LF_DAEMON"), errors),
        trigger: u32::try_from(trigger).unwrap_or(u32::MAX),
        trigger_ttl: perm("LF_TRIGGER_PERM", get("LF_TRIGGER_PERM"), errors),
        services,
        interval: i64::try_from(interval).unwrap_or(3600),
        permblock,
        permblock_interval: i64::try_from(permblock_interval).unwrap_or(86_400),
        permblock_count: u32::try_from(permblock_count).unwrap_or(4),
        permblock_alert: flag("LF_PERMBLOCK_ALERT", get("LF_PERMBLOCK_ALERT"), errors),
        email_alert: flag("LF_EMAIL_ALERT", get("LF_EMAIL_ALERT"), errors),
        temp_email_alert: flag("LF_TEMP_EMAIL_ALERT", get("LF_TEMP_EMAIL_ALERT"), errors),
        alert_to: address("LF_ALERT_TO", get("LF_ALERT_TO"), errors),
        alert_from: address("LF_ALERT_FROM", get("LF_ALERT_FROM"), errors),
        alert_digest: i64::try_from(alert_digest).unwrap_or(60),
        webhook,
        ignore_allow: flag("IGNORE_ALLOW", get("IGNORE_ALLOW"), errors),
        ignore,
        sshd_log,
        tamper_alert: flag("LF_TAMPER_ALERT", get("LF_TAMPER_ALERT"), errors),
        blocklist_alert: flag("LF_BLOCKLIST_ALERT", get("LF_BLOCKLIST_ALERT"), errors),
        ct,
        ps,
    }
}

fn ps_settings<'a>(get: &impl Fn(&str) -> &'a str, errors: &mut Vec<SettingError>) -> PsSettings {
    let interval = count("PS_INTERVAL", get("PS_INTERVAL"), 86_400, errors);
    let limit = count("PS_LIMIT", get("PS_LIMIT"), 10_000, errors);
    if interval > 0 && limit == 0 {
        errors.push(bad(
            "PS_LIMIT",
            "must be at least 1 while PS_INTERVAL is set",
        ));
    }
    let diversity = count("PS_DIVERSITY", get("PS_DIVERSITY"), 65_536, errors);
    if diversity == 0 || diversity > limit.max(1) {
        errors.push(bad("PS_DIVERSITY", "must be from 1 to PS_LIMIT"));
    }
    let mut icmp = false;
    let mut ranges: Vec<String> = Vec::new();
    for part in get("PS_PORTS")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if part.eq_ignore_ascii_case("ICMP") {
            icmp = true;
        } else if let Some(hi) = part.strip_prefix("0:") {
            // CSF's default starts at port 0, which no packet goes to
            ranges.push(format!("1:{hi}"));
        } else if part != "0" {
            ranges.push(part.to_string());
        }
    }
    let ports = crate::model::parse_ports("PS_PORTS", &ranges.join(","))
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let permanent = flag("PS_PERMANENT", get("PS_PERMANENT"), errors);
    let block = count(
        "PS_BLOCK_TIME",
        get("PS_BLOCK_TIME"),
        u64::try_from(crate::engine::MAX_TTL).unwrap_or(u64::MAX),
        errors,
    );
    if !permanent && block == 0 {
        errors.push(bad(
            "PS_BLOCK_TIME",
            "must be at least 1 second (or PS_PERMANENT 1)",
        ));
    }
    PsSettings {
        interval: i64::try_from(interval).unwrap_or(0),
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        ports,
        icmp,
        diversity: u32::try_from(diversity).unwrap_or(1).max(1),
        ttl: if permanent {
            0
        } else {
            i64::try_from(block).unwrap_or(3600)
        },
        email_alert: flag("PS_EMAIL_ALERT", get("PS_EMAIL_ALERT"), errors),
    }
}

fn ct_settings<'a>(get: &impl Fn(&str) -> &'a str, errors: &mut Vec<SettingError>) -> CtSettings {
    let limit = count("CT_LIMIT", get("CT_LIMIT"), 1_000_000, errors);
    let interval = count("CT_INTERVAL", get("CT_INTERVAL"), 86_400, errors);
    if interval < 5 {
        errors.push(bad("CT_INTERVAL", "must be at least 5 seconds"));
    }
    let permanent = flag("CT_PERMANENT", get("CT_PERMANENT"), errors);
    let block = count(
        "CT_BLOCK_TIME",
        get("CT_BLOCK_TIME"),
        u64::try_from(crate::engine::MAX_TTL).unwrap_or(u64::MAX),
        errors,
    );
    if !permanent && block == 0 {
        errors.push(bad(
            "CT_BLOCK_TIME",
            "must be at least 1 second (or CT_PERMANENT 1)",
        ));
    }
    let mut states = Vec::new();
    for part in get("CT_STATES")
        .split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let s = part.to_ascii_uppercase();
        if crate::conntrack::TCP_STATES.contains(&s.as_str()) {
            states.push(s);
        } else {
            errors.push(bad(
                "CT_STATES",
                format!(
                    "{part:?} is not a TCP state ({})",
                    crate::conntrack::TCP_STATES.join(", ")
                ),
            ));
        }
    }
    let mut ports = Vec::new();
    for part in get("CT_PORTS")
        .split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.parse::<u16>() {
            Ok(p) if p > 0 => ports.push(p),
            _ => errors.push(bad(
                "CT_PORTS",
                format!("{part:?} is not a port (1 to 65535)"),
            )),
        }
    }
    CtSettings {
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        interval: i64::try_from(interval).unwrap_or(30).max(5),
        email_alert: flag("CT_EMAIL_ALERT", get("CT_EMAIL_ALERT"), errors),
        ttl: if permanent {
            0
        } else {
            i64::try_from(block).unwrap_or(1800)
        },
        skip_time_wait: flag("CT_SKIP_TIME_WAIT", get("CT_SKIP_TIME_WAIT"), errors),
        states,
        ports,
    }
}
