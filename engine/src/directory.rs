//! The mail directory: accounts (with their mailboxes and quota), forwarders and catch-alls, in
//! the store. Passwords are kept only as Argon2id hashes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use wispd_store::schema::{
    AUTORESPONDERS, MAIL_ACCOUNTS, MAIL_ADDRESSES, MAIL_CATCHALL, MAIL_ENTRIES, MAIL_FORWARDERS,
    MAIL_MAILBOXES, MAIL_META, MailAccount, MailCatchall, MailForwarder, Mailbox, SIEVE_SCRIPTS,
    SIEVE_SEEN,
};
use wispd_store::{Store, StoreError, Write};

use crate::address;

pub const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;
/// 1 PiB in MiB: quotas above are surely a mistake.
const MAX_QUOTA_MB: i64 = 1 << 30;

/// The mailboxes every account starts with, and their special-use attributes.
pub const STANDARD_MAILBOXES: [(&str, Option<&str>); 5] = [
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
];

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("password hash: {0}")]
    Hash(#[from] argon2::password_hash::Error),
    #[error("Argon2: {0}")]
    Argon2(#[from] argon2::Error),
    #[error("OS randomness: {0}")]
    Randomness(#[from] getrandom::Error),
    #[error("password hashing task: {0}")]
    HashTask(#[from] tokio::task::JoinError),
    #[error("stored password hash has no {0}")]
    StoredHash(&'static str),
    #[error("stored password hash needs {0} KiB of memory, more than allowed")]
    TooCostly(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A part the request needs is not working (the delivery writer).
    #[error("{0}")]
    Unavailable(String),
}

/// A request to create an account.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub domain: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub quota_mb: Option<i64>,
    /// Instead of `password`: a hash brought over from another server (`{SHA512-CRYPT}…`,
    /// see [`crate::passwords`]), replaced by Argon2id at the first login that matches it.
    pub password_hash: Option<String>,
}

/// The directory over the store. Clones share one routing cache, so build it once and hand
/// clones to the API and the mail engine.
#[derive(Debug, Clone)]
pub struct Directory {
    pub(crate) store: Store,
    routing: Arc<Mutex<RoutingCache>>,
}

/// Where mail for a recipient address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Not a domain this server receives mail for.
    Foreign,
    /// A local domain without such a user (and no catch-all).
    Unknown,
    /// Who gets a copy: local accounts (the account, forwarders, catch-all), each once, and
    /// addresses in other domains that forwarders point at (they go out through the queue).
    Local {
        accounts: Vec<MailAccount>,
        remote: Vec<String>,
    },
}

/// The routing view of the directory (which domains are local, who forwards where), rebuilt
/// after any change instead of scanning the store for every recipient.
#[derive(Debug, Default)]
struct RoutingCache {
    generation: u64,
    routes: Option<Arc<Routes>>,
}

#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) domains: HashSet<String>,
    pub(crate) accounts: HashSet<String>,
    pub(crate) forwards: HashMap<String, Vec<String>>,
    pub(crate) catchall: HashMap<String, String>,
    /// Mailing lists: address -> list id.
    pub(crate) lists: HashMap<String, u64>,
}

use wispd_store::unix_now as now;

pub(crate) fn hash(password: &str) -> Result<String, DirError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    let salt = SaltString::encode_b64(&bytes)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(DirError::from)
}

fn check_password(password: &str) -> Result<(), DirError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(DirError::Invalid(format!(
            "Password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    // SASL PLAIN separates fields with NUL and IMAP/SMTP lines end at CR/LF: a password with
    // control characters could never be typed into a client.
    if password.chars().any(char::is_control) {
        return Err(DirError::Invalid(
            "Password must not contain control characters".into(),
        ));
    }
    Ok(())
}

fn check_quota(q: i64) -> Result<u64, DirError> {
    if !(0..=MAX_QUOTA_MB).contains(&q) {
        return Err(DirError::Invalid(format!(
            "quota_mb must be 0 (unlimited) to {MAX_QUOTA_MB}"
        )));
    }
    Ok(u64::try_from(q).unwrap_or(0))
}

fn next_id(w: &Write<'_>, key: &str) -> Result<u64, StoreError> {
    let id = w.get(&MAIL_META, key)?.unwrap_or(1).max(1);
    w.put(&MAIL_META, key, &(id + 1))?;
    Ok(id)
}

impl Directory {
    pub fn new(store: Store) -> Directory {
        Directory {
            store,
            routing: Arc::default(),
        }
    }

    /// A store write that also drops the routing cache once it is over.
    pub(crate) fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let result = self.store.write(f);
        let mut cache = self.routing.lock().unwrap_or_else(PoisonError::into_inner);
        cache.generation += 1;
        cache.routes = None;
        result
    }

    pub(crate) fn routes(&self) -> Result<Arc<Routes>, DirError> {
        let generation = {
            let cache = self.routing.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = &cache.routes {
                return Ok(r.clone());
            }
            cache.generation
        };
        let (accounts, forwarders, catchalls, lists) = self.store.read(|r| {
            Ok::<_, StoreError>((
                r.all(&MAIL_ACCOUNTS)?,
                r.all(&MAIL_FORWARDERS)?,
                r.all(&MAIL_CATCHALL)?,
                r.all(&wispd_store::schema::MAIL_LISTS)?,
            ))
        })?;
        let mut routes = Routes::default();
        for l in lists {
            routes.domains.insert(l.domain.clone());
            routes.lists.insert(l.address(), l.id);
        }
        for a in accounts {
            routes.domains.insert(a.domain.clone());
            routes.accounts.insert(a.email());
        }
        for f in forwarders {
            if let Some((_, d)) = f.source.rsplit_once('@') {
                routes.domains.insert(d.to_string());
            }
            routes
                .forwards
                .entry(f.source)
                .or_default()
                .push(f.destination);
        }
        for c in catchalls {
            routes.domains.insert(c.domain.clone());
            if c.enabled && !c.destination.is_empty() {
                routes.catchall.insert(c.domain, c.destination);
            }
        }
        let routes = Arc::new(routes);
        let mut cache = self.routing.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.generation == generation {
            cache.routes = Some(routes.clone());
        }
        Ok(routes)
    }

    /// Whether mail for `domain` (lowercase) is received here: it has an account, a forwarder
    /// or a catch-all.
    pub fn is_local_domain(&self, domain: &str) -> Result<bool, DirError> {
        Ok(self.routes()?.domains.contains(domain))
    }

    /// Where mail for `recipient` goes: the account with that address, plus every forwarder
    /// destination (followed through further forwarders); when neither exists, the domain's
    /// catch-all. `user+tag@domain` falls back to `user@domain`, as with Postfix's
    /// `recipient_delimiter = +`.
    pub fn resolve(&self, recipient: &str) -> Result<Resolution, DirError> {
        let Some((local, domain)) = address::address(recipient) else {
            return Ok(Resolution::Unknown);
        };
        let routes = self.routes()?;
        if !routes.domains.contains(&domain) {
            return Ok(Resolution::Foreign);
        }
        let mut address = format!("{local}@{domain}");
        if !routes.accounts.contains(&address)
            && !routes.forwards.contains_key(&address)
            && let Some((base, _tag)) = local.split_once('+')
        {
            let plain = format!("{base}@{domain}");
            if routes.accounts.contains(&plain) || routes.forwards.contains_key(&plain) {
                address = plain;
            }
        }
        let mut targets = BTreeSet::new();
        let mut remote = BTreeSet::new();
        let mut seen = HashSet::new();
        let mut todo = vec![address.clone()];
        while let Some(a) = todo.pop() {
            if !seen.insert(a.clone()) {
                continue;
            }
            if routes.accounts.contains(&a) {
                targets.insert(a.clone());
            } else if a
                .rsplit_once('@')
                .is_some_and(|(_, d)| !routes.domains.contains(d))
            {
                remote.insert(a.clone());
            }
            if let Some(next) = routes.forwards.get(&a) {
                todo.extend(next.iter().cloned());
            }
        }
        if targets.is_empty()
            && !routes.forwards.contains_key(&address)
            && let Some(dest) = routes.catchall.get(&domain)
        {
            targets.insert(dest.clone());
        }
        if targets.is_empty() && remote.is_empty() {
            return Ok(Resolution::Unknown);
        }
        let accounts = self.store.read(|r| {
            let mut out = Vec::with_capacity(targets.len());
            for t in &targets {
                if let Some(id) = r.get(&MAIL_ADDRESSES, t.as_str())?
                    && let Some(a) = r.get(&MAIL_ACCOUNTS, id)?
                {
                    out.push(a);
                }
            }
            Ok::<_, StoreError>(out)
        })?;
        Ok(if accounts.is_empty() && remote.is_empty() {
            Resolution::Unknown
        } else {
            Resolution::Local {
                accounts,
                remote: remote.into_iter().collect(),
            }
        })
    }

    /// Creates an account with its standard mailboxes, all in one transaction.
    pub fn create_account(&self, req: NewAccount) -> Result<MailAccount, DirError> {
        let domain_in = req.domain.as_deref().map(str::trim).unwrap_or_default();
        if domain_in.is_empty() {
            return Err(DirError::Invalid("Domain is required".into()));
        }
        let user_in = req.username.as_deref().map(str::trim).unwrap_or_default();
        if user_in.is_empty() {
            return Err(DirError::Invalid("Username is required".into()));
        }
        let imported = req.password_hash.filter(|h| !h.is_empty());
        let password = req.password.unwrap_or_default();
        if password.is_empty() && imported.is_none() {
            return Err(DirError::Invalid("Password is required".into()));
        }
        let domain = address::domain(domain_in)
            .ok_or_else(|| DirError::Invalid(format!("Invalid domain: {domain_in:?}")))?;
        let username = address::local_part(user_in)
            .ok_or_else(|| DirError::Invalid(format!("Invalid username: {user_in:?} (letters, digits and .!#$%&'*+/=?^_`{{|}}~- ; no leading, trailing or double dots)")))?;
        let quota_mb = check_quota(req.quota_mb.unwrap_or(0))?;
        let password_hash = match imported {
            Some(h) => {
                crate::passwords::check(&h)
                    .map_err(|why| DirError::Invalid(format!("password_hash: {why}")))?;
                h
            }
            None => {
                check_password(&password)?;
                hash(&password)?
            }
        };
        let email = format!("{username}@{domain}");
        if self.is_list_address(&email)? {
            return Err(DirError::Conflict(format!(
                "{email} is a mailing list address"
            )));
        }
        self.write(|w| {
            if w.get(&MAIL_ADDRESSES, email.as_str())?.is_some() {
                return Err(DirError::Conflict(format!(
                    "The account {email} already exists"
                )));
            }
            let id = next_id(w, "next_account_id")?;
            let t = now();
            let account = MailAccount {
                id,
                domain,
                username,
                password_hash,
                quota_mb,
                used_bytes: 0,
                enabled: true,
                created_at: t,
            };
            w.put(&MAIL_ACCOUNTS, id, &account)?;
            w.put(&MAIL_ADDRESSES, email.as_str(), &id)?;
            // UIDVALIDITY: seconds since the epoch, as Dovecot does, made unique per mailbox.
            let base = u32::try_from(t & 0x7fff_ffff).unwrap_or(1);
            for (i, (name, special)) in (0u32..).zip(STANDARD_MAILBOXES) {
                let mb = Mailbox {
                    name: name.to_string(),
                    special_use: special.map(str::to_string),
                    uidvalidity: base.wrapping_add(i).max(1),
                    uidnext: 1,
                    highest_modseq: 1,
                    subscribed: true,
                    recent_uid: 0,
                    vanished_count: 0,
                    vanished_floor: 0,
                    imported: None,
                };
                w.put(&MAIL_MAILBOXES, (id, name), &mb)?;
            }
            Ok(account)
        })
    }

    /// After a login matched a brought-over hash: the account gets an Argon2id hash of the
    /// same password (unless its hash changed meanwhile).
    pub fn rehash(&self, id: u64, old: &str, password: &str) -> Result<bool, DirError> {
        let new = hash(password)?;
        self.write(|w| {
            let Some(mut a) = w.get(&MAIL_ACCOUNTS, id)? else {
                return Ok(false);
            };
            if a.password_hash != old {
                return Ok(false);
            }
            a.password_hash = new;
            w.put(&MAIL_ACCOUNTS, id, &a)?;
            Ok::<_, DirError>(true)
        })
    }

    /// Accounts, in id order; `domains` limits them to those domains.
    pub fn accounts(&self, domains: Option<&[String]>) -> Result<Vec<MailAccount>, DirError> {
        let all = self.store.read(|r| r.all(&MAIL_ACCOUNTS))?;
        Ok(all
            .into_iter()
            .filter(|a| domains.is_none_or(|d| d.contains(&a.domain)))
            .collect())
    }

    pub fn account(&self, id: u64) -> Result<MailAccount, DirError> {
        self.store
            .read(|r| r.get(&MAIL_ACCOUNTS, id))?
            .ok_or_else(|| DirError::NotFound(format!("No account with id {id}")))
    }

    /// The account's mailboxes, by name.
    pub fn mailboxes(&self, id: u64) -> Result<Vec<Mailbox>, DirError> {
        Ok(self
            .store
            .read(|r| r.values_in(&MAIL_MAILBOXES, (id, "")..(id + 1, "")))?)
    }

    /// Changes the password and/or the quota.
    pub fn update_account(
        &self,
        id: u64,
        password: Option<String>,
        quota_mb: Option<i64>,
    ) -> Result<MailAccount, DirError> {
        if password.is_none() && quota_mb.is_none() {
            return Err(DirError::Invalid(
                "Nothing to change: send password and/or quota_mb".into(),
            ));
        }
        let password_hash = match password {
            Some(p) => {
                check_password(&p)?;
                Some(hash(&p)?)
            }
            None => None,
        };
        let quota = quota_mb.map(check_quota).transpose()?;
        self.write(|w| {
            let mut a = w
                .get(&MAIL_ACCOUNTS, id)?
                .ok_or_else(|| DirError::NotFound(format!("No account with id {id}")))?;
            if let Some(h) = password_hash {
                a.password_hash = h;
            }
            if let Some(q) = quota {
                a.quota_mb = q;
            }
            w.put(&MAIL_ACCOUNTS, id, &a)?;
            Ok(a)
        })
    }

    /// Enables a disabled account or disables an enabled one.
    pub fn toggle_account(&self, id: u64) -> Result<MailAccount, DirError> {
        self.write(|w| {
            let mut a = w
                .get(&MAIL_ACCOUNTS, id)?
                .ok_or_else(|| DirError::NotFound(format!("No account with id {id}")))?;
            a.enabled = !a.enabled;
            w.put(&MAIL_ACCOUNTS, id, &a)?;
            Ok(a)
        })
    }

    /// Deletes an account, its address and its mailboxes.
    pub fn delete_account(&self, id: u64) -> Result<MailAccount, DirError> {
        self.write(|w| {
            let a = w
                .get(&MAIL_ACCOUNTS, id)?
                .ok_or_else(|| DirError::NotFound(format!("No account with id {id}")))?;
            w.remove(&MAIL_ACCOUNTS, id)?;
            w.remove(&MAIL_ADDRESSES, a.email().as_str())?;
            for mb in w.values_in(&MAIL_MAILBOXES, (id, "")..(id + 1, ""))? {
                let name = mb.name.as_str();
                for e in w.values_in(&MAIL_ENTRIES, (id, name, 0u32)..=(id, name, u32::MAX))? {
                    w.remove(&MAIL_ENTRIES, (id, name, e.uid))?;
                    crate::mailstore::release(w, e.message_id)?;
                }
                w.remove(&MAIL_MAILBOXES, (id, name))?;
            }
            // Its filters, autoresponder and what they remembered go with it.
            w.retain_in(&SIEVE_SCRIPTS, (id, "")..(id + 1, ""), |_| false)?;
            w.retain_in(&SIEVE_SEEN, (id, "")..(id + 1, ""), |_| false)?;
            w.remove(&AUTORESPONDERS, id)?;
            w.retain_in(
                &wispd_store::schema::MAIL_VANISHED,
                (id, "", 0u32)..(id + 1, "", 0u32),
                |_| false,
            )?;
            w.retain_in(
                &wispd_store::schema::MAIL_SUBSCRIPTIONS,
                (id, "")..(id + 1, ""),
                |_| false,
            )?;
            Ok(a)
        })
    }

    /// The account a login names (full address, any case), enabled or not; `None` when no
    /// account has that address. Passwords are checked by [`crate::login::Logins`].
    pub fn login_account(&self, email: &str) -> Result<Option<MailAccount>, DirError> {
        let Some((l, d)) = address::address(email) else {
            return Ok(None);
        };
        let key = format!("{l}@{d}");
        Ok(self.store.read(|r| {
            let Some(id) = r.get(&MAIL_ADDRESSES, key.as_str())? else {
                return Ok::<_, StoreError>(None);
            };
            r.get(&MAIL_ACCOUNTS, id)
        })?)
    }

    /// Adds a forwarder. The destination is a local account, another forwarder, or an address
    /// in a domain this server does not receive mail for (delivered through the outbound queue
    /// with SRS); an unknown address in a local domain and chains that would loop are refused.
    pub fn create_forwarder(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<MailForwarder, DirError> {
        if source.trim().is_empty() {
            return Err(DirError::Invalid("Source is required".into()));
        }
        if destination.trim().is_empty() {
            return Err(DirError::Invalid("Destination is required".into()));
        }
        let (sl, sd) = address::address(source)
            .ok_or_else(|| DirError::Invalid(format!("Invalid source address: {source:?}")))?;
        let (dl, dd) = address::address(destination).ok_or_else(|| {
            DirError::Invalid(format!("Invalid destination address: {destination:?}"))
        })?;
        let (src, dst) = (format!("{sl}@{sd}"), format!("{dl}@{dd}"));
        if src == dst {
            return Err(DirError::Invalid(
                "A forwarder cannot point at its own source".into(),
            ));
        }
        if self.is_list_address(&src)? {
            return Err(DirError::Conflict(format!(
                "{src} is a mailing list address"
            )));
        }
        self.write(|w| {
            let local = w.get(&MAIL_ADDRESSES, dst.as_str())?.is_some();
            let forwards_on = w.all(&MAIL_FORWARDERS)?.iter().any(|f| f.source == dst);
            if !local && !forwards_on && self.is_local_domain(&dd)? {
                return Err(DirError::Invalid(format!(
                    "{dst} is neither an account nor a forwarder, and mail for {dd} is received here"
                )));
            }
            let all = w.all(&MAIL_FORWARDERS)?;
            if all.iter().any(|f| f.source == src && f.destination == dst) {
                return Err(DirError::Conflict(format!("{src} already forwards to {dst}")));
            }
            // Would `dst` reach `src` again through existing forwarders?
            let mut seen = BTreeSet::new();
            let mut todo = vec![dst.clone()];
            while let Some(a) = todo.pop() {
                if a == src {
                    return Err(DirError::Invalid(format!("Refusing a forwarding loop: {dst} already forwards back to {src}")));
                }
                if seen.insert(a.clone()) {
                    todo.extend(all.iter().filter(|f| f.source == a).map(|f| f.destination.clone()));
                }
            }
            let id = next_id(w, "next_forwarder_id")?;
            let f = MailForwarder { id, source: src, destination: dst, created_at: now() };
            w.put(&MAIL_FORWARDERS, id, &f)?;
            Ok(f)
        })
    }

    pub fn forwarders(&self, domains: Option<&[String]>) -> Result<Vec<MailForwarder>, DirError> {
        let all = self.store.read(|r| r.all(&MAIL_FORWARDERS))?;
        Ok(all
            .into_iter()
            .filter(|f| {
                domains.is_none_or(|d| {
                    f.source
                        .rsplit_once('@')
                        .is_some_and(|(_, dom)| d.iter().any(|x| x == dom))
                })
            })
            .collect())
    }

    pub fn delete_forwarder(&self, id: u64) -> Result<MailForwarder, DirError> {
        self.write(|w| {
            let f = w
                .get(&MAIL_FORWARDERS, id)?
                .ok_or_else(|| DirError::NotFound(format!("No forwarder with id {id}")))?;
            w.remove(&MAIL_FORWARDERS, id)?;
            Ok(f)
        })
    }

    /// A domain's catch-all (disabled and empty when never set).
    pub fn catchall(&self, domain: &str) -> Result<MailCatchall, DirError> {
        let d = address::domain(domain)
            .ok_or_else(|| DirError::Invalid(format!("Invalid domain: {domain:?}")))?;
        Ok(self
            .store
            .read(|r| r.get(&MAIL_CATCHALL, d.as_str()))?
            .unwrap_or(MailCatchall {
                domain: d,
                enabled: false,
                destination: String::new(),
            }))
    }

    /// Sets a domain's catch-all; an enabled one needs a local destination.
    pub fn set_catchall(
        &self,
        domain: &str,
        enabled: bool,
        destination: Option<&str>,
    ) -> Result<MailCatchall, DirError> {
        let d = address::domain(domain)
            .ok_or_else(|| DirError::Invalid(format!("Invalid domain: {domain:?}")))?;
        let dest = match destination.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                let (l, dd) = address::address(s).ok_or_else(|| {
                    DirError::Invalid(format!("Invalid destination address: {s:?}"))
                })?;
                format!("{l}@{dd}")
            }
            None => String::new(),
        };
        self.write(|w| {
            if enabled && dest.is_empty() {
                return Err(DirError::Invalid("Destination is required to enable a catch-all".into()));
            }
            if !dest.is_empty() && w.get(&MAIL_ADDRESSES, dest.as_str())?.is_none() {
                return Err(DirError::Invalid(format!(
                    "{dest} is not a local account: a catch-all delivers to an account on this server (use a forwarder for other domains)"
                )));
            }
            let c = MailCatchall { domain: d.clone(), enabled, destination: dest.clone() };
            w.put(&MAIL_CATCHALL, d.as_str(), &c)?;
            Ok(c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> Directory {
        let d = std::env::temp_dir().join(format!("wispd-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Directory::new(Store::open(&d).expect("store"))
    }

    fn req(domain: &str, user: &str, pw: &str) -> NewAccount {
        NewAccount {
            password_hash: None,
            domain: Some(domain.into()),
            username: Some(user.into()),
            password: Some(pw.into()),
            quota_mb: Some(10),
        }
    }

    #[test]
    fn accounts_get_mailboxes_unique_addresses_and_login_lookups() {
        let d = dir("acct");
        let a = d
            .create_account(req("Example.com", "Info", "correct horse"))
            .expect("create");
        assert_eq!(a.email(), "info@example.com");
        let names: Vec<String> = d
            .mailboxes(a.id)
            .expect("mailboxes")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["Drafts", "INBOX", "Junk", "Sent", "Trash"]);
        assert!(matches!(
            d.create_account(req("example.com", "INFO", "another pw")),
            Err(DirError::Conflict(_))
        ));
        assert_eq!(
            d.login_account("Info@Example.com")
                .expect("lookup")
                .map(|a| a.id),
            Some(a.id)
        );
        assert!(
            d.login_account("nobody@example.com")
                .expect("lookup")
                .is_none()
        );
        assert!(matches!(
            d.update_account(a.id, Some("bad\0password".into()), None),
            Err(DirError::Invalid(m)) if m.contains("control characters")
        ));
        d.delete_account(a.id).expect("delete");
        assert!(d.mailboxes(a.id).expect("mailboxes").is_empty());
        assert!(
            d.login_account("info@example.com")
                .expect("lookup")
                .is_none()
        );
        assert!(
            d.create_account(req("example.com", "info", "correct horse"))
                .is_ok(),
            "address free again"
        );
    }

    #[test]
    fn forwarders_refuse_unknown_local_destinations_and_loops() {
        let d = dir("fwd");
        d.create_account(req("example.com", "a", "password1"))
            .expect("a");
        d.create_account(req("example.com", "b", "password1"))
            .expect("b");
        d.create_forwarder("sales@example.com", "a@example.com")
            .expect("fwd");
        d.create_forwarder("sales@example.com", "b@example.com")
            .expect("several destinations");
        d.create_forwarder("a@example.com", "b@example.com")
            .expect("chain");
        assert!(
            matches!(d.create_forwarder("b@example.com", "a@example.com"), Err(DirError::Invalid(m)) if m.contains("loop"))
        );
        assert!(
            matches!(d.create_forwarder("x@example.com", "nobody@example.com"), Err(DirError::Invalid(m)) if m.contains("neither an account nor a forwarder"))
        );
        // other domains go out through the queue; resolution says which addresses are remote
        d.create_forwarder("sales@example.com", "boss@elsewhere.org")
            .expect("external");
        match d.resolve("sales@example.com").expect("resolve") {
            Resolution::Local { accounts, remote } => {
                assert_eq!(accounts.len(), 2);
                assert_eq!(remote, vec!["boss@elsewhere.org".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.create_forwarder("sales@example.com", "a@example.com"),
            Err(DirError::Conflict(_))
        ));
    }
}
