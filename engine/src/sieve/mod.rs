//! Sieve (RFC 5228) filters: the scripts each account keeps (edited through the API and
//! ManageSieve), the autoresponder that runs as a vacation rule beside them, and running them at
//! delivery ([`Filters::plan`]). Scripts are stored as source; their compiled form is cached in
//! memory by the SHA-256 of the source, so a script is compiled once, not once per message.

mod apply;
pub mod manage;
mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use ::sieve::compiler::grammar::Capability;
use ::sieve::{Compiler, Runtime, Sieve};
use wispd_store::schema::{AUTORESPONDERS, Autoresponder, SIEVE_SCRIPTS, SieveScript};
use wispd_store::{Store, StoreError};

pub use apply::{Filtered, Incoming, Outgoing};
pub use run::{MailEnvelope, Plan, Reply, SieveCopy};

/// Limits and places for Sieve (`[sieve]` in the config file).
#[derive(Debug, Clone)]
pub struct SieveSettings {
    /// Largest script accepted, in bytes.
    pub max_script_size: usize,
    /// Most scripts one account may keep.
    pub max_scripts: usize,
    /// Most instructions one delivery may run (all of an account's scripts together).
    pub cpu_limit: usize,
    /// Most `redirect`s one delivery may do.
    pub max_redirects: usize,
    /// Most messages (redirects and vacation replies) one delivery may send.
    pub max_out_messages: usize,
    /// Deepest `include` nesting.
    pub max_includes: usize,
    /// Where `include :global` scripts are read from (`NAME.sieve`); none when unset.
    pub global_dir: Option<PathBuf>,
    /// The server's name, for vacation Message-IDs and the `environment` extension.
    pub hostname: String,
}

impl Default for SieveSettings {
    fn default() -> Self {
        SieveSettings {
            max_script_size: 64 << 10,
            max_scripts: 32,
            cpu_limit: 20_000,
            max_redirects: 4,
            max_out_messages: 8,
            max_includes: 3,
            global_dir: None,
            hostname: "localhost".into(),
        }
    }
}

/// Extensions wispd does not offer: nothing could answer them (notification methods, external
/// lists, metadata, IMAP events) or they are not standard.
const WITHHELD: &[Capability] = &[
    Capability::Enotify,
    Capability::ExtLists,
    Capability::MboxMetadata,
    Capability::ServerMetadata,
    Capability::ImapSieve,
    Capability::MailboxId,
    Capability::Convert,
    Capability::RedirectDsn,
    Capability::RedirectDeliverBy,
    Capability::EnvelopeDeliverBy,
    Capability::Expressions,
    Capability::While,
];

/// A script that does not compile: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ScriptError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("Script does not compile: {0}")]
    Invalid(ScriptError),
    #[error("No such script: {0}")]
    NoSuchScript(String),
    #[error("A script named {0} already exists")]
    Exists(String),
    #[error("Script {0} is active; activate another (or none) first")]
    Active(String),
    #[error("Script is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("An account may keep at most {0} scripts")]
    TooMany(usize),
    #[error("Invalid script name: {0}")]
    BadName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// An account's filters as delivery runs them.
#[derive(Debug, Default)]
struct Compiled {
    /// The active script: its name and compiled form.
    script: Option<(String, Arc<Sieve>)>,
    /// The autoresponder as a vacation script, with the time window it runs in.
    responder: Option<(Arc<Sieve>, Option<i64>, Option<i64>)>,
    /// The active script names `redirect` (its copies are ARC-sealed).
    redirects: bool,
}

/// Compiled scripts kept at most (by source hash) and accounts whose filters are cached.
const CACHE_LIMIT: usize = 10_000;

struct Inner {
    store: Store,
    settings: SieveSettings,
    compiler: Compiler,
    runtime: Runtime,
    /// Compiled scripts by the SHA-256 of their source.
    compiled: Mutex<HashMap<[u8; 32], Arc<Sieve>>>,
    /// What delivery runs for each account (dropped whenever the account's filters change).
    accounts: Mutex<HashMap<u64, Arc<Compiled>>>,
}

/// The filter engine; cheap to clone.
#[derive(Clone)]
pub struct Filters(Arc<Inner>);

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("settings", &self.0.settings)
            .finish()
    }
}

/// A script name as RFC 5804 allows it: 1–128 characters, no controls, no `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 128
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\u{2028}' || c == '\u{2029}')
}

impl Filters {
    pub fn new(store: Store, settings: SieveSettings) -> Filters {
        let compiler = Compiler::new()
            .with_max_script_size(settings.max_script_size)
            .with_max_includes(settings.max_includes.max(1) * 2)
            .with_max_string_size(settings.max_script_size.min(64 << 10));
        let runtime = Runtime::new()
            .without_capabilities(WITHHELD.iter().cloned())
            .with_cpu_limit(settings.cpu_limit)
            .with_max_redirects(settings.max_redirects)
            .with_max_out_messages(settings.max_out_messages)
            .with_max_nested_includes(settings.max_includes)
            .with_max_received_headers(30)
            .with_max_variable_size(16 << 10)
            .with_max_header_size(4096)
            .with_protected_header("Received")
            .with_protected_header("Auto-Submitted")
            .with_protected_header("Return-Path")
            .with_default_vacation_expiry(7 * 86_400)
            .with_default_duplicate_expiry(7 * 86_400)
            .with_local_hostname(settings.hostname.clone())
            .with_env_variable("name", "wispd")
            .with_env_variable("version", env!("CARGO_PKG_VERSION"))
            .with_env_variable("domain", settings.hostname.clone())
            .with_env_variable("host", settings.hostname.clone())
            .with_env_variable("location", "MDA")
            .with_env_variable("phase", "during");
        Filters(Arc::new(Inner {
            store,
            settings,
            compiler,
            runtime,
            compiled: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }))
    }

    pub fn settings(&self) -> &SieveSettings {
        &self.0.settings
    }

    /// The extensions scripts may require, space-separated (ManageSieve's `SIEVE` capability).
    pub fn extensions(&self) -> String {
        let mut names: Vec<String> = Capability::all()
            .iter()
            .filter(|c| !WITHHELD.contains(c))
            .filter(|c| {
                // Comparators are listed by name; the test comparator of the suite is not one.
                !matches!(
                    c,
                    Capability::Comparator(::sieve::compiler::grammar::Comparator::Elbonia)
                )
            })
            .map(ToString::to_string)
            .collect();
        names.sort();
        names.dedup();
        names.join(" ")
    }

    /// Compiles `source` (cached by its hash), refusing what wispd does not offer.
    pub fn compile(&self, source: &str) -> Result<Arc<Sieve>, ScriptError> {
        if source.len() > self.0.settings.max_script_size {
            return Err(ScriptError {
                line: 1,
                column: 1,
                message: format!(
                    "script is {} bytes, the limit is {}",
                    source.len(),
                    self.0.settings.max_script_size
                ),
            });
        }
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, source.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if let Some(s) = self
            .0
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(s.clone());
        }
        // sieve-rs 0.7.2 panics on some malformed scripts (found by the sieve_script fuzz
        // target): a panic is a refusal here, not a dead session or a 500.
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.0.compiler.compile(source.as_bytes())
        }))
        .map_err(|_| ScriptError {
            line: 1,
            column: 1,
            message: "script is malformed (the compiler could not parse it)".into(),
        })?;
        let script = compiled
            .map_err(|e| script_error(source, e.line_num(), e.line_pos(), e.to_string()))?;
        unknown_names(&script, source)?;
        let script = Arc::new(script);
        self.offered(&script, source)?;
        let mut cache = self
            .0
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, script.clone());
        Ok(script)
    }

    /// Refuses a script that requires an extension wispd does not offer. `require` comes
    /// first in a script, so a dry run meets it before anything else.
    fn offered(&self, script: &Arc<Sieve>, source: &str) -> Result<(), ScriptError> {
        let mut ctx = self.0.runtime.filter(b"");
        let first = ctx.run(::sieve::Input::script("check", script.clone()));
        let missing = match first {
            Some(Err(::sieve::runtime::RuntimeError::CapabilityNotAllowed(c))) => c.to_string(),
            Some(Err(::sieve::runtime::RuntimeError::CapabilityNotSupported(c))) => c,
            _ => return Ok(()),
        };
        // Point at the require that names it.
        let (line, column) = source
            .lines()
            .enumerate()
            .find_map(|(i, l)| l.find(&format!("\"{missing}\"")).map(|c| (i + 1, c + 1)))
            .unwrap_or((1, 1));
        Err(ScriptError {
            line,
            column,
            message: format!("extension \"{missing}\" is not supported"),
        })
    }

    fn forget(&self, account: u64) {
        self.0
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&account);
    }

    /// The account's scripts, by name.
    pub fn scripts(&self, account: u64) -> Result<Vec<SieveScript>, FilterError> {
        Ok(self
            .0
            .store
            .read(|r| r.values_in(&SIEVE_SCRIPTS, (account, "")..(account + 1, "")))?)
    }

    pub fn script(&self, account: u64, name: &str) -> Result<Option<SieveScript>, FilterError> {
        Ok(self
            .0
            .store
            .read(|r| r.get(&SIEVE_SCRIPTS, (account, name)))?)
    }

    /// Whether `size` more bytes under `name` would fit the account's quota (RFC 5804
    /// HAVESPACE): within the size limit, and within the script count unless it replaces one.
    pub fn have_space(&self, account: u64, name: &str, size: usize) -> Result<(), FilterError> {
        if !valid_name(name) {
            return Err(FilterError::BadName(name.into()));
        }
        let limit = self.0.settings.max_script_size;
        if size > limit {
            return Err(FilterError::TooLarge { size, limit });
        }
        let scripts = self.scripts(account)?;
        if !scripts.iter().any(|s| s.name == name) && scripts.len() >= self.0.settings.max_scripts {
            return Err(FilterError::TooMany(self.0.settings.max_scripts));
        }
        Ok(())
    }

    /// Stores `source` under `name` after compiling it. `create_only`: refuse a name that
    /// exists. `activate`: `Some(true)` makes it the active script (deactivating the others),
    /// `Some(false)` deactivates it, `None` keeps its state (a new script is inactive).
    pub fn put(
        &self,
        account: u64,
        name: &str,
        source: &str,
        activate: Option<bool>,
        create_only: bool,
    ) -> Result<SieveScript, FilterError> {
        self.have_space(account, name, source.len())?;
        self.compile(source).map_err(FilterError::Invalid)?;
        let now = wispd_store::unix_now();
        let out = self.0.store.write(|w| {
            let old = w.get(&SIEVE_SCRIPTS, (account, name))?;
            if create_only && old.is_some() {
                return Err(FilterError::Exists(name.into()));
            }
            let count = w
                .values_in(&SIEVE_SCRIPTS, (account, "")..(account + 1, ""))?
                .len();
            if old.is_none() && count >= self.0.settings.max_scripts {
                return Err(FilterError::TooMany(self.0.settings.max_scripts));
            }
            let active = activate.unwrap_or(old.as_ref().is_some_and(|o| o.active));
            if active {
                deactivate_others(w, account, name)?;
            }
            let script = SieveScript {
                name: name.into(),
                source: source.into(),
                active,
                created_at: old.as_ref().map_or(now, |o| o.created_at),
                updated_at: now,
            };
            w.put(&SIEVE_SCRIPTS, (account, name), &script)?;
            Ok::<_, FilterError>(script)
        });
        self.forget(account);
        out
    }

    /// Makes `name` the account's active script; `None` (or `""`) deactivates them all.
    pub fn set_active(&self, account: u64, name: Option<&str>) -> Result<(), FilterError> {
        let name = name.filter(|n| !n.is_empty());
        let out = self.0.store.write(|w| {
            if let Some(n) = name {
                let Some(mut s) = w.get(&SIEVE_SCRIPTS, (account, n))? else {
                    return Err(FilterError::NoSuchScript(n.into()));
                };
                deactivate_others(w, account, n)?;
                if !s.active {
                    s.active = true;
                    w.put(&SIEVE_SCRIPTS, (account, n), &s)?;
                }
            } else {
                deactivate_others(w, account, "")?;
            }
            Ok::<_, FilterError>(())
        });
        self.forget(account);
        out
    }

    /// Deletes one script. The active one is refused unless `even_active` (RFC 5804 §2.10
    /// refuses it; the API deletes what it is told).
    pub fn delete(&self, account: u64, name: &str, even_active: bool) -> Result<(), FilterError> {
        let out = self.0.store.write(|w| {
            let Some(s) = w.get(&SIEVE_SCRIPTS, (account, name))? else {
                return Err(FilterError::NoSuchScript(name.into()));
            };
            if s.active && !even_active {
                return Err(FilterError::Active(name.into()));
            }
            w.remove(&SIEVE_SCRIPTS, (account, name))?;
            Ok::<_, FilterError>(())
        });
        self.forget(account);
        out
    }

    /// Deletes every script of the account; returns how many there were.
    pub fn delete_all(&self, account: u64) -> Result<u64, FilterError> {
        let out = self
            .0
            .store
            .write(|w| w.retain_in(&SIEVE_SCRIPTS, (account, "")..(account + 1, ""), |_| false));
        self.forget(account);
        Ok(out?)
    }

    /// Renames a script, keeping whether it is active.
    pub fn rename(&self, account: u64, from: &str, to: &str) -> Result<(), FilterError> {
        if !valid_name(to) {
            return Err(FilterError::BadName(to.into()));
        }
        let out = self.0.store.write(|w| {
            let Some(mut s) = w.get(&SIEVE_SCRIPTS, (account, from))? else {
                return Err(FilterError::NoSuchScript(from.into()));
            };
            if from == to {
                return Ok(());
            }
            if w.get(&SIEVE_SCRIPTS, (account, to))?.is_some() {
                return Err(FilterError::Exists(to.into()));
            }
            w.remove(&SIEVE_SCRIPTS, (account, from))?;
            s.name = to.into();
            s.updated_at = wispd_store::unix_now();
            w.put(&SIEVE_SCRIPTS, (account, to), &s)?;
            Ok::<_, FilterError>(())
        });
        self.forget(account);
        out
    }

    pub fn autoresponder(&self, account: u64) -> Result<Option<Autoresponder>, FilterError> {
        Ok(self.0.store.read(|r| r.get(&AUTORESPONDERS, account))?)
    }

    /// Stores the account's autoresponder (the caller has checked its fields).
    pub fn set_autoresponder(&self, account: u64, a: &Autoresponder) -> Result<(), FilterError> {
        responder_script(a)
            .map(|s| self.compile(&s))
            .transpose()
            .map_err(FilterError::Invalid)?;
        let out = self.0.store.write(|w| w.put(&AUTORESPONDERS, account, a));
        self.forget(account);
        Ok(out?)
    }

    /// What delivery runs for `account`, compiled, from the cache or the store.
    fn compiled(&self, account: u64) -> Result<Arc<Compiled>, StoreError> {
        if let Some(c) = self
            .0
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&account)
        {
            return Ok(c.clone());
        }
        let (scripts, responder) = self.0.store.read(|r| {
            let scripts: Vec<SieveScript> =
                r.values_in(&SIEVE_SCRIPTS, (account, "")..(account + 1, ""))?;
            let responder: Option<Autoresponder> = r.get(&AUTORESPONDERS, account)?;
            Ok::<_, StoreError>((scripts, responder))
        })?;
        let mut c = Compiled::default();
        if let Some(s) = scripts.into_iter().find(|s| s.active) {
            c.redirects = s.source.to_ascii_lowercase().contains("redirect");
            match self.compile(&s.source) {
                Ok(compiled) => c.script = Some((s.name, compiled)),
                Err(e) => {
                    tracing::error!(account, script = %s.name, error = %e, "active Sieve script does not compile; delivering without it");
                }
            }
        }
        if let Some(a) = responder
            && let Some(src) = responder_script(&a)
        {
            match self.compile(&src) {
                Ok(compiled) => c.responder = Some((compiled, a.start, a.end)),
                Err(e) => tracing::error!(account, error = %e, "autoresponder does not compile"),
            }
        }
        let c = Arc::new(c);
        let mut cache = self
            .0
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(account, c.clone());
        Ok(c)
    }

    /// Forgets vacation and `duplicate` records that have expired; returns how many.
    pub fn purge_seen(&self, now: i64) -> Result<u64, StoreError> {
        self.0.store.write(|w| {
            w.retain_in(&wispd_store::schema::SIEVE_SEEN, (0u64, "").., |until| {
                *until > now
            })
        })
    }

    /// Whether delivery to `account` runs anything (false: straight to INBOX).
    pub fn active(&self, account: u64) -> bool {
        self.compiled(account)
            .is_ok_and(|c| c.script.is_some() || c.responder.is_some())
    }

    /// Whether `account`'s active script may `redirect` (so a message for it is ARC-sealed).
    pub fn may_redirect(&self, account: u64) -> bool {
        self.compiled(account)
            .is_ok_and(|c| c.script.is_some() && c.redirects)
    }
}

/// sieve-rs compiles a test (or, under `ihave`, a command) it doesn't know into an
/// instruction that fails when it runs, so such a script would only fail at delivery. Its
/// compiled form names them (`Invalid { name, line_num, line_pos }`, seen through `Debug`:
/// the instructions are private); the first is refused here, where it was written.
fn unknown_names(script: &Sieve, source: &str) -> Result<(), ScriptError> {
    const MARK: &str = "Invalid { name: \"";
    let dump = format!("{script:?}");
    let Some(at) = dump.find(MARK) else {
        return Ok(());
    };
    let rest = &dump[at + MARK.len()..];
    let name = rest.split("\", line_num: ").next().unwrap_or_default();
    let num = |key: &str| -> usize {
        rest.split(key)
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    Err(script_error(
        source,
        num("line_num: "),
        num("line_pos: "),
        format!("unknown test or command \"{name}\""),
    ))
}

fn deactivate_others(
    w: &wispd_store::Write<'_>,
    account: u64,
    keep: &str,
) -> Result<(), StoreError> {
    for mut s in w.values_in(&SIEVE_SCRIPTS, (account, "")..(account + 1, ""))? {
        if s.active && s.name != keep {
            s.active = false;
            w.put(&SIEVE_SCRIPTS, (account, s.name.as_str()), &s)?;
        }
    }
    Ok(())
}

/// A compile error as people count: lines and columns from 1, the place said once. The
/// interpreter counts columns from 0 and has no place for an unknown command (line 0): then the
/// token it names is looked up in the source.
fn script_error(source: &str, line: usize, column: usize, message: String) -> ScriptError {
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    if line > 0 {
        return ScriptError {
            line,
            column: column + 1,
            message,
        };
    }
    let token = message
        .split("found \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|t| !t.is_empty());
    let place = token.and_then(|t| {
        source.lines().enumerate().find_map(|(i, l)| {
            l.match_indices(t).find_map(|(c, _)| {
                let before = l[..c].chars().next_back();
                let after = l[c + t.len()..].chars().next();
                let word =
                    |ch: Option<char>| ch.is_some_and(|ch| ch.is_alphanumeric() || ch == '_');
                (!word(before) && !word(after)).then_some((i + 1, c + 1))
            })
        })
    });
    let (line, column) = place.unwrap_or((1, 1));
    ScriptError {
        line,
        column,
        message,
    }
}

/// A Sieve quoted string (RFC 5228 §2.4.2): `"` and `\` escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The autoresponder as a vacation script; `None` when it is off.
pub fn responder_script(a: &Autoresponder) -> Option<String> {
    if !a.enabled {
        return None;
    }
    let mut s = String::from("require [\"vacation\", \"vacation-seconds\"];\r\nvacation");
    s.push_str(&format!(
        " :seconds {}",
        u64::from(a.interval_days).saturating_mul(86_400)
    ));
    if !a.subject.is_empty() {
        s.push_str(&format!(" :subject {}", quoted(&a.subject)));
    }
    if !a.from.is_empty() {
        s.push_str(&format!(" :from {}", quoted(&a.from)));
    }
    s.push_str(" :handle \"wispd-autoresponder\" ");
    s.push_str(&quoted(&a.body));
    s.push_str(";\r\n");
    Some(s)
}

#[cfg(test)]
mod tests;
