//! Blocklists (CSF's `csf.blocklists`): named sources fetched on a schedule, parsed as they stream
//! in, merged into interval sets and swapped into the kernel in one transaction each. The last
//! good copy of every list is kept in the store and loaded at start, before any refresh.

pub mod fetch;
pub mod parse;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wispd_store::StoreError;
use wispd_store::schema::{FW_BLOCKLIST_DATA, FW_BLOCKLISTS, FwBlocklist};

use self::fetch::{Fetched, Validators};
use self::parse::Ranges;
use crate::engine::{Firewall, FwError, now};

/// Shortest refresh interval accepted (seconds).
pub const MIN_INTERVAL: u64 = 300;
/// Default refresh interval (seconds): daily, as CSF's examples.
pub const DEFAULT_INTERVAL: u64 = 86_400;
/// Failed refreshes are retried this soon (or at the list's interval, if shorter).
const RETRY_AFTER: u64 = 900;

/// The lists a fresh install has, enabled.
pub fn preconfigured() -> Vec<FwBlocklist> {
    [
        (
            "spamhaus_drop",
            "https://www.spamhaus.org/drop/drop_v4.json",
        ),
        (
            "spamhaus_dropv6",
            "https://www.spamhaus.org/drop/drop_v6.json",
        ),
    ]
    .into_iter()
    .map(|(name, url)| FwBlocklist {
        name: name.into(),
        url: url.into(),
        interval: DEFAULT_INTERVAL,
        max: 0,
        enabled: true,
        entry_count: 0,
        invalid_lines: 0,
        last_error: String::new(),
        last_updated: None,
        last_attempt: None,
        etag: None,
        last_modified: None,
    })
    .collect()
}

/// A request to create or change a blocklist; `None` keeps the current value (or the default).
#[derive(Debug, Clone, Default)]
pub struct BlocklistRequest {
    pub name: Option<String>,
    pub url: Option<String>,
    pub interval: Option<i64>,
    pub max: Option<i64>,
    pub enabled: Option<bool>,
}

/// Country lists are blocklists named `cc_<code>` and `cc_<code>_v6`, managed by the CC_*
/// settings rather than the blocklist API.
pub fn is_country(name: &str) -> bool {
    name.starts_with("cc_")
}

/// The two lists (IPv4 and IPv6 zone files) of a country.
pub fn country_lists(cc: &str) -> [String; 2] {
    [format!("cc_{cc}"), format!("cc_{cc}_v6")]
}

pub fn validate_name(name: &str) -> Result<(), FwError> {
    if name.is_empty() {
        return Err(FwError::Invalid("Name is required".into()));
    }
    if is_country(name) {
        return Err(FwError::Invalid(
            "Names starting with cc_ are reserved for country lists (CC_DENY, CC_ALLOW, CC_ALLOW_FILTER)".into(),
        ));
    }
    if name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(FwError::Invalid(format!(
            "Invalid blocklist name {name:?}: use 1-32 lowercase letters, digits or '_'"
        )));
    }
    Ok(())
}

fn validate_url(url: &str) -> Result<(), FwError> {
    let ok = url.starts_with("http://")
        || url.starts_with("https://")
        || url.starts_with("file:///")
        || url.starts_with('/');
    if url.is_empty() {
        return Err(FwError::Invalid("URL is required".into()));
    }
    if !ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
        return Err(FwError::Invalid(format!(
            "Invalid URL {url:?}: use http://, https://, file:// or an absolute path"
        )));
    }
    Ok(())
}

fn apply_request(def: &mut FwBlocklist, req: &BlocklistRequest) -> Result<(), FwError> {
    if let Some(url) = &req.url {
        let url = url.trim();
        validate_url(url)?;
        if url != def.url {
            def.url = url.to_string();
            def.etag = None;
            def.last_modified = None;
            def.last_attempt = None;
        }
    }
    if let Some(i) = req.interval {
        if !(i64::try_from(MIN_INTERVAL).unwrap_or(300)..=31_536_000).contains(&i) {
            return Err(FwError::Invalid(format!(
                "Interval must be between {MIN_INTERVAL} and 31536000 seconds"
            )));
        }
        def.interval = u64::try_from(i).unwrap_or(DEFAULT_INTERVAL);
    }
    if let Some(m) = req.max {
        if !(0..=100_000_000).contains(&m) {
            return Err(FwError::Invalid(
                "Max must be between 0 (all) and 100000000".into(),
            ));
        }
        def.max = u64::try_from(m).unwrap_or(0);
    }
    if let Some(e) = req.enabled {
        def.enabled = e;
    }
    Ok(())
}

/// Seconds of jitter for a list (up to a tenth of its interval), stable per name so restarts
/// don't bunch refreshes together.
fn jitter(def: &FwBlocklist) -> i64 {
    let h = def.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    i64::try_from(h % (def.interval / 10).max(1)).unwrap_or(0)
}

fn due(def: &FwBlocklist, t: i64) -> bool {
    if !def.enabled {
        return false;
    }
    let Some(last) = def.last_attempt else {
        return true;
    };
    let wait = if def.last_error.is_empty() {
        def.interval
    } else {
        def.interval.min(RETRY_AFTER)
    };
    t >= last + i64::try_from(wait).unwrap_or(i64::MAX) + jitter(def)
}

/// Displays a range as a CIDR when it is one, else `first-last`.
pub fn range_text(a: IpAddr, b: IpAddr) -> String {
    let (lo, hi, bits) = match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            (u128::from(u32::from(x)), u128::from(u32::from(y)), 32u32)
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => (u128::from(x), u128::from(y), 128u32),
        _ => return format!("{a}-{b}"),
    };
    let size = hi.wrapping_sub(lo).wrapping_add(1);
    if size == 0 && bits == 128 {
        return format!("{a}/0");
    }
    if size.is_power_of_two() && lo % size == 0 {
        let prefix = bits - size.trailing_zeros();
        return format!("{a}/{prefix}");
    }
    format!("{a}-{b}")
}

impl Firewall {
    /// Every blocklist with its status.
    pub fn blocklists(&self) -> Result<Vec<FwBlocklist>, FwError> {
        Ok(self.store().read(|r| r.all(&FW_BLOCKLISTS))?)
    }

    /// The blocklists the API manages (country lists left out).
    pub fn user_blocklists(&self) -> Result<Vec<FwBlocklist>, FwError> {
        Ok(self
            .blocklists()?
            .into_iter()
            .filter(|d| !is_country(&d.name))
            .collect())
    }

    /// Brings the country lists in line with the CC_* settings: creates the missing ones (due at
    /// once), follows source and interval changes, removes the ones no longer named.
    /// Returns the names of the lists removed.
    pub(crate) fn sync_countries(
        &self,
        settings: &crate::model::Settings,
    ) -> Result<Vec<String>, FwError> {
        let wanted = settings.countries();
        let interval = u64::from(settings.cc_interval) * 86_400;
        let existing = self.blocklists()?;
        let mut gone = Vec::new();
        self.store().write(|w| {
            for d in existing.iter().filter(|d| is_country(&d.name)) {
                let cc = d.name.trim_start_matches("cc_").trim_end_matches("_v6");
                if !wanted.iter().any(|c| c == cc) {
                    w.remove(&FW_BLOCKLISTS, d.name.as_str())?;
                    w.remove_raw(&FW_BLOCKLIST_DATA, d.name.as_str())?;
                    gone.push(d.name.clone());
                }
            }
            for cc in &wanted {
                let [v4, v6] = country_lists(cc);
                for (name, template) in [(v4, &settings.cc_source), (v6, &settings.cc6_source)] {
                    let url = template.replace("{cc}", cc);
                    let known = existing.iter().find(|d| d.name == name).cloned();
                    let mut def = known.clone().unwrap_or_else(|| {
                        let mut d = preconfigured().remove(0);
                        d.name = name.clone();
                        d
                    });
                    if def.url != url {
                        def.url = url;
                        def.etag = None;
                        def.last_modified = None;
                        def.last_attempt = None;
                    }
                    def.interval = interval;
                    def.enabled = true;
                    if known.as_ref() != Some(&def) {
                        w.put(&FW_BLOCKLISTS, name.as_str(), &def)?;
                    }
                }
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(gone)
    }

    /// Country blocking as configured: the parsed settings, each country's lists, and whether
    /// CC_ALLOW_FILTER is in force (it waits until every listed country has data).
    pub fn geoip(&self) -> Result<(crate::model::Settings, Vec<FwBlocklist>, bool), FwError> {
        let state = self.settings()?;
        let settings = crate::model::Settings::parse(&state).map_err(FwError::Settings)?;
        let defs = self.blocklists()?;
        let active = self.with_loaded(|loaded| {
            crate::engine::ListPlan::new(&settings, &defs, loaded)
                .filter
                .is_some()
        });
        let countries = defs.into_iter().filter(|d| is_country(&d.name)).collect();
        Ok((settings, countries, active))
    }

    /// A blocklist the API may touch (not a country list).
    pub fn user_blocklist(&self, name: &str) -> Result<FwBlocklist, FwError> {
        if is_country(name) {
            return Err(FwError::NotFound(format!(
                "{name:?} is a country list: it follows CC_DENY, CC_ALLOW and CC_ALLOW_FILTER in /csf/config"
            )));
        }
        self.blocklist(name)
    }

    pub fn blocklist(&self, name: &str) -> Result<FwBlocklist, FwError> {
        self.store()
            .read(|r| r.get(&FW_BLOCKLISTS, name))?
            .ok_or_else(|| FwError::NotFound(format!("No blocklist named {name:?}")))
    }

    /// Creates a blocklist (empty until its first refresh, which the scheduler starts at once).
    pub fn create_blocklist(&self, req: BlocklistRequest) -> Result<FwBlocklist, FwError> {
        let name = req
            .name
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        validate_name(&name)?;
        if req
            .url
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .is_empty()
        {
            return Err(FwError::Invalid("URL is required".into()));
        }
        let mut def = preconfigured().remove(0);
        def.name = name.clone();
        def.url = String::new();
        apply_request(&mut def, &req)?;
        let created = self.store().write(|w| {
            if w.get(&FW_BLOCKLISTS, name.as_str())?.is_some() {
                return Err(FwError::Conflict(format!(
                    "A blocklist named {name:?} already exists"
                )));
            }
            w.put(&FW_BLOCKLISTS, name.as_str(), &def)?;
            Ok(def)
        })?;
        if let Err(e) = self.reapply() {
            self.store()
                .write(|w| w.remove(&FW_BLOCKLISTS, name.as_str()))?;
            return Err(e);
        }
        Ok(created)
    }

    /// Changes a blocklist's source, interval, max or enabled flag.
    pub fn update_blocklist(
        &self,
        name: &str,
        req: BlocklistRequest,
    ) -> Result<FwBlocklist, FwError> {
        let before = self.user_blocklist(name)?;
        let mut def = before.clone();
        apply_request(&mut def, &req)?;
        self.store().write(|w| w.put(&FW_BLOCKLISTS, name, &def))?;
        if before.enabled != def.enabled
            && let Err(e) = self.reapply()
        {
            self.store()
                .write(|w| w.put(&FW_BLOCKLISTS, name, &before))?;
            return Err(e);
        }
        Ok(def)
    }

    /// Removes a blocklist, its sets and rules, and its stored copy.
    pub fn delete_blocklist(&self, name: &str) -> Result<FwBlocklist, FwError> {
        let def = self.user_blocklist(name)?;
        self.store().write(|w| {
            w.remove(&FW_BLOCKLISTS, name)?;
            w.remove_raw(&FW_BLOCKLIST_DATA, name)?;
            Ok::<_, StoreError>(())
        })?;
        self.forget_ranges(name);
        if let Err(e) = self.reapply() {
            tracing::warn!(error = %e, "blocklist removed from the store; the kernel table follows on the next upkeep");
            self.mark_stale();
            return Err(e);
        }
        Ok(def)
    }

    /// Swaps new ranges into the kernel (one transaction), then stores them and the status.
    pub fn install_blocklist(
        &self,
        name: &str,
        ranges: Ranges,
        entries: u64,
        invalid: u64,
        validators: Validators,
    ) -> Result<FwBlocklist, FwError> {
        let t = now();
        let ranges = Arc::new(ranges);
        let started = std::time::Instant::now();
        let bytes = ranges.to_bytes();
        // Kernel swap, stored copy and in-memory copy change together under the engine lock, so
        // a reload in between can't put the old ranges back; only the status fields of the
        // definition are written, so a concurrent edit of the list is kept.
        let def = self.install_ranges(name, ranges.clone(), || {
            self.store().write(|w| {
                let Some(mut def) = w.get(&FW_BLOCKLISTS, name)? else {
                    return Err(FwError::NotFound(format!("No blocklist named {name:?}")));
                };
                def.entry_count = entries;
                def.invalid_lines = invalid;
                def.last_error = String::new();
                def.last_updated = Some(t);
                def.last_attempt = Some(t);
                def.etag = validators.etag;
                def.last_modified = validators.last_modified;
                w.put_raw(&FW_BLOCKLIST_DATA, name, &bytes)?;
                w.put(&FW_BLOCKLISTS, name, &def)?;
                Ok(def)
            })
        })?;
        tracing::info!(list = %name, ranges = ranges.len(), took = ?started.elapsed(), "blocklist installed");
        Ok(def)
    }

    /// Records a refresh that found the source unchanged.
    pub fn blocklist_unchanged(&self, name: &str) -> Result<FwBlocklist, FwError> {
        let mut def = self.blocklist(name)?;
        let t = now();
        def.last_error = String::new();
        def.last_attempt = Some(t);
        def.last_updated = Some(t);
        self.store().write(|w| w.put(&FW_BLOCKLISTS, name, &def))?;
        Ok(def)
    }

    /// Records a failed refresh; the previous entries stay in force.
    pub fn blocklist_failed(&self, name: &str, error: &str) -> Result<FwBlocklist, FwError> {
        let error: String = error.chars().take(500).collect();
        *self
            .counters()
            .blocklist_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_string())
            .or_insert(0) += 1;
        let (def, was_failing) = self.store().write(|w| {
            let Some(mut def) = w.get(&FW_BLOCKLISTS, name)? else {
                return Err(FwError::NotFound(format!("No blocklist named {name:?}")));
            };
            let was_failing = !def.last_error.is_empty();
            def.last_error = error.clone();
            def.last_attempt = Some(now());
            w.put(&FW_BLOCKLISTS, name, &def)?;
            Ok((def, was_failing))
        })?;
        // one alert when a list starts failing, not one per retry
        if !was_failing {
            let email = self.parsed_settings().is_ok_and(|s| s.lfd.blocklist_alert);
            if let Err(e) = self.alerts().raise(
                "blocklist",
                None,
                None,
                format!("blocklist {name} could not be refreshed (its last good copy stays in force): {error}"),
                email,
            ) {
                tracing::error!(error = %e, "could not store a blocklist alert");
            }
        }
        Ok(def)
    }

    /// Names of the lists whose refresh is due.
    pub fn due_blocklists(&self) -> Result<Vec<String>, FwError> {
        let t = now();
        Ok(self
            .blocklists()?
            .into_iter()
            .filter(|d| due(d, t))
            .map(|d| d.name)
            .collect())
    }
}

/// Fetches `name`'s source now and installs the result (or records the failure).
pub async fn refresh(fw: Arc<Firewall>, name: String) -> Result<FwBlocklist, FwError> {
    let guard_owner = fw.clone();
    let _one_at_a_time = guard_owner.refreshing.lock().await;
    let f = fw.clone();
    let n = name.clone();
    let def = tokio::task::spawn_blocking(move || f.blocklist(&n))
        .await
        .map_err(join)??;
    let validators = Validators {
        etag: def.etag.clone(),
        last_modified: def.last_modified.clone(),
    };
    let max = usize::try_from(def.max).unwrap_or(usize::MAX);
    let started = std::time::Instant::now();
    let outcome = fetch::fetch(&def.url, &validators, max).await;
    tracing::debug!(list = %name, took = ?started.elapsed(), "blocklist fetched and parsed");
    tokio::task::spawn_blocking(move || match outcome {
        Ok(Fetched::NotModified) => fw.blocklist_unchanged(&name),
        Ok(Fetched::Parsed { ranges, entries, invalid, validators }) => {
            tracing::info!(list = %name, entries, invalid, "blocklist refreshed");
            match fw.install_blocklist(&name, ranges, entries, invalid, validators) {
                Ok(d) => Ok(d),
                Err(e) => fw.blocklist_failed(&name, &format!("loading into the kernel: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(list = %name, error = %e, "blocklist refresh failed; previous entries stay");
            fw.blocklist_failed(&name, &e.to_string())
        }
    })
    .await
    .map_err(join)?
}

fn join(e: tokio::task::JoinError) -> FwError {
    FwError::Invalid(format!("blocklist task failed: {e}"))
}

/// The refresh schedule: every few seconds, refresh the lists that are due, one at a time.
pub async fn run(fw: Arc<Firewall>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let f = fw.clone();
        let due = match tokio::task::spawn_blocking(move || f.due_blocklists()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "blocklist schedule");
                continue;
            }
            Err(_) => continue,
        };
        for name in due {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = refresh(fw.clone(), name) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "blocklist refresh");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_as_cidr_when_aligned() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(range_text(ip("10.0.0.0"), ip("10.0.0.255")), "10.0.0.0/24");
        assert_eq!(
            range_text(ip("10.0.0.0"), ip("10.0.2.255")),
            "10.0.0.0-10.0.2.255"
        );
        assert_eq!(range_text(ip("1.2.3.4"), ip("1.2.3.4")), "1.2.3.4/32");
        assert_eq!(
            range_text(
                ip("2001:db8::"),
                ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")
            ),
            "2001:db8::/32"
        );
    }

    #[test]
    fn failed_lists_retry_sooner_and_disabled_ones_never() {
        let mut d = preconfigured().remove(0);
        assert!(due(&d, 1000));
        d.last_attempt = Some(1000);
        assert!(!due(&d, 1000 + 3600));
        d.last_error = "down".into();
        assert!(due(&d, 1000 + 900 + jitter(&d)));
        d.enabled = false;
        assert!(!due(&d, i64::MAX / 2));
    }
}
