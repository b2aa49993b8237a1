//! The firewall engine: keeps the store and the kernel table in agreement. Every change is
//! planned against the store's state, committed to the kernel in one transaction, and only then
//! persisted; a rejected transaction leaves both as they were.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::blocklist::parse::Ranges;
use ipnet::IpNet;
use wispd_store::schema::{
    FW_BLACKLIST, FW_BLOCKLIST_DATA, FW_BLOCKLISTS, FW_RULES, FW_STATE, FW_WHITELIST, FwEntry,
    FwRule, FwState,
};
use wispd_store::{Store, StoreError, Table};

use crate::lockout::{self, Origin};
use crate::model::{self, Interval, PortRange, SettingError, Settings, intervals, parse_net};
use crate::msg::Batch;
use crate::netlink::{Netlink, NetlinkError};
use crate::plan::{self, Action, Desired, Direction, ListSet, Proto, Rule};

/// Longest TTL accepted: ten years.
pub const MAX_TTL: i64 = 10 * 365 * 24 * 3600;
const MAX_COMMENT: usize = 255;
const STATE_KEY: &str = "state";

/// What the engine needs from the binary.
#[derive(Debug, Clone)]
pub struct FirewallConfig {
    /// `inet <table>`.
    pub table: String,
    /// `[firewall] enabled`: false = never touch the kernel.
    pub kernel: bool,
    /// Ports a fresh install keeps open in TCP_IN besides ssh (the API and wispd's listeners).
    pub protected_tcp_ports: Vec<u16>,
    /// The API's TCP port: changes that would close it to the caller need `force`.
    pub api_port: Option<u16>,
}

/// Why a firewall request failed.
#[derive(Debug, thiserror::Error)]
pub enum FwError {
    #[error("{0}")]
    Invalid(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Settings(Vec<SettingError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Kernel(#[from] NetlinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether the kernel side works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Available,
    Unavailable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Black,
    White,
}

impl ListKind {
    fn table(self) -> &'static Table<&'static str, FwEntry> {
        match self {
            ListKind::Black => &FW_BLACKLIST,
            ListKind::White => &FW_WHITELIST,
        }
    }

    /// The kernel sets of this list.
    fn sets(self) -> impl Iterator<Item = ListSet> {
        let black = self == ListKind::Black;
        ListSet::ALL.into_iter().filter(move |s| s.black == black)
    }

    pub fn name(self) -> &'static str {
        match self {
            ListKind::Black => "blacklist",
            ListKind::White => "whitelist",
        }
    }
}

/// A request to add a list entry.
#[derive(Debug, Clone)]
pub struct EntryRequest {
    pub ip: String,
    pub comment: String,
    pub ttl: i64,
    pub force: bool,
    /// The API caller's address, protected unless `force`.
    pub caller: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct PortRequest {
    pub port: String,
    pub protocol: String,
    pub direction: String,
}

#[derive(Debug, Clone)]
pub struct RuleRequest {
    pub chain: String,
    pub protocol: String,
    pub port: Option<String>,
    pub source: Option<String>,
    pub action: String,
    /// Add it even though it would shut API clients or the server's own traffic out.
    pub force: bool,
    /// The API caller's address, protected unless `force`.
    pub caller: Option<IpAddr>,
}

/// How the loaded lists map onto the table for a given set of settings.
pub struct ListPlan {
    /// Every list that gets a set pair, with its ranges.
    pub sets: Vec<(String, std::sync::Arc<Ranges>)>,
    pub drop: Vec<String>,
    pub accept: Vec<String>,
    /// CC_ALLOW_FILTER's merged ranges, once every listed country has data.
    pub filter: Option<Ranges>,
}

impl ListPlan {
    pub fn new(
        settings: &Settings,
        defs: &[wispd_store::schema::FwBlocklist],
        loaded: &BTreeMap<String, std::sync::Arc<Ranges>>,
    ) -> ListPlan {
        let ranges = |n: &str| loaded.get(n).cloned().unwrap_or_default();
        let mut plan = ListPlan {
            sets: Vec::new(),
            drop: Vec::new(),
            accept: Vec::new(),
            filter: None,
        };
        for d in defs
            .iter()
            .filter(|d| d.enabled && !crate::blocklist::is_country(&d.name))
        {
            plan.sets.push((d.name.clone(), ranges(&d.name)));
            plan.drop.push(d.name.clone());
        }
        for cc in settings.countries() {
            for name in crate::blocklist::country_lists(&cc) {
                plan.sets.push((name.clone(), ranges(&name)));
                if settings.cc_deny.contains(&cc) {
                    plan.drop.push(name.clone());
                }
                if settings.cc_allow.contains(&cc) {
                    plan.accept.push(name);
                }
            }
        }
        if !settings.cc_allow_filter.is_empty() {
            let parts: Vec<std::sync::Arc<Ranges>> = settings
                .cc_allow_filter
                .iter()
                .map(|cc| {
                    let [v4, v6] = crate::blocklist::country_lists(cc);
                    let (a, b) = (ranges(&v4), ranges(&v6));
                    std::sync::Arc::new(Ranges::union([a.as_ref(), b.as_ref()]))
                })
                .collect();
            // Until every listed country has data, filtering would lock everyone out.
            if parts.iter().all(|r| !r.is_empty()) {
                plan.filter = Some(Ranges::union(parts.iter().map(AsRef::as_ref)));
            }
        }
        plan
    }
}

/// Where an address matches.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// `whitelist`, `blacklist` or `blocklist`.
    pub list: &'static str,
    /// The blocklist's name.
    pub name: Option<String>,
    /// The matching entry (`1.2.3.4`, a CIDR, or a `first-last` range of a merged blocklist).
    pub entry: String,
    pub comment: String,
    pub expires_at: Option<i64>,
}

/// A snapshot for the status endpoints.
#[derive(Debug, Clone)]
pub struct Status {
    pub backend: Backend,
    pub enabled: bool,
    pub table: String,
    pub testing: bool,
    /// Unix seconds at which TESTING lifts the restrictive policy (while it hasn't yet).
    pub testing_lifts_at: Option<i64>,
    pub policy_drop: bool,
    pub blacklist_count: usize,
    pub whitelist_count: usize,
    pub rule_count: usize,
    pub kernel_rules: usize,
}

struct Inner {
    /// The last good ranges of every blocklist, by name.
    blocklists: BTreeMap<String, std::sync::Arc<Ranges>>,
    nl: Option<Netlink>,
    backend: Backend,
    /// Intervals currently in each kernel list set.
    applied: BTreeMap<ListSet, Vec<Interval>>,
    /// The live entries of each list (black, white), mirrored from the store.
    cache: [Option<BTreeMap<String, FwEntry>>; 2],
    /// Rules the kernel table holds after our last full apply (0 = table absent).
    kernel_rules: usize,
    /// The kernel may differ from the store (a change reached one and not the other, or netlink
    /// gave no answer): the next upkeep tick rebuilds the table.
    stale: bool,
    policy_drop: bool,
    applied_at: i64,
}

/// The firewall engine. All methods block (netlink and store I/O): call them off the async runtime.
pub struct Firewall {
    /// One blocklist refresh at a time: a refresh asked for while another runs waits for it
    /// (and then usually finds the source unchanged).
    pub(crate) refreshing: tokio::sync::Mutex<()>,
    cfg: FirewallConfig,
    store: Store,
    inner: Mutex<Inner>,
    counters: Counters,
}

/// What the firewall counts for operators (read at scrape time by `/api/v1/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Blacklist entries added, by where they came from (`api` today; lfd and scans later).
    pub bans: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed refreshes per blocklist.
    pub blocklist_errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub(crate) fn ban(&self, source: &'static str) {
        *self
            .bans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(source)
            .or_insert(0) += 1;
    }
}

impl std::fmt::Debug for Firewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firewall")
            .field("table", &self.cfg.table)
            .finish()
    }
}

pub(crate) use wispd_store::unix_now as now;

/// `1.2.3.4` for a host entry, `10.0.0.0/8` for a network.
pub fn display_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

impl Firewall {
    /// Loads (or creates) the firewall state and applies the full ruleset to the kernel. Without
    /// CAP_NET_ADMIN the engine still starts, keeping everything in the store.
    pub fn start(store: Store, cfg: FirewallConfig) -> Result<Firewall, FwError> {
        let fw = Firewall {
            counters: Counters::default(),
            inner: Mutex::new(Inner {
                nl: None,
                backend: Backend::Unavailable("not started".into()),
                applied: BTreeMap::new(),
                cache: [None, None],
                kernel_rules: 0,
                stale: false,
                blocklists: BTreeMap::new(),
                policy_drop: false,
                applied_at: now(),
            }),
            cfg,
            store,
            refreshing: tokio::sync::Mutex::new(()),
        };
        let state = fw.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        fw.canonicalise_entries()?;
        fw.load_blocklists(state)?;
        for gone in fw.sync_countries(&settings)? {
            fw.forget_ranges(&gone);
        }
        let mut inner = fw.lock();
        if !fw.cfg.kernel {
            inner.backend =
                Backend::Unavailable("disabled in the config ([firewall] enabled = false)".into());
        } else {
            match Netlink::open() {
                Ok(nl) => {
                    inner.nl = Some(nl);
                    inner.backend = Backend::Available;
                    if let Err(e) = fw.apply_full(&mut inner) {
                        if e_is_permission(&e) {
                            inner.nl = None;
                            inner.backend = Backend::Unavailable(format!(
                                "no permission to program nftables (CAP_NET_ADMIN is required): {e}"
                            ));
                        } else {
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    inner.backend =
                        Backend::Unavailable(format!("cannot open a netlink socket: {e}"))
                }
            }
        }
        if let Backend::Unavailable(why) = &inner.backend {
            tracing::warn!(reason = %why, "firewall kernel backend unavailable; settings and lists are kept in the store");
        }
        drop(inner);
        Ok(fw)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Re-keys list entries stored under a name that is no longer canonical: IPv4-mapped entries
    /// (`::ffff:1.2.3.4/128`) stored before they were normalised would otherwise stay in the IPv6
    /// sets, where they match nothing, and could not be deleted by the address they now show.
    /// Where both spellings exist, the longer-lived entry is kept.
    fn canonicalise_entries(&self) -> Result<(), FwError> {
        for kind in [ListKind::Black, ListKind::White] {
            let moved: Vec<(String, FwEntry)> = self
                .entries(kind)?
                .into_iter()
                .filter_map(|e| {
                    let canonical = parse_net(&e.net)?.to_string();
                    (canonical != e.net).then_some((canonical, e))
                })
                .collect();
            if moved.is_empty() {
                continue;
            }
            tracing::info!(
                list = kind.name(),
                count = moved.len(),
                "re-keying list entries under their canonical address"
            );
            self.store.write(|w| {
                for (canonical, old) in &moved {
                    w.remove(kind.table(), old.net.as_str())?;
                    let mut entry = old.clone();
                    entry.net = canonical.clone();
                    let keep = match w.get(kind.table(), canonical.as_str())? {
                        Some(there)
                            if there
                                .expires_at
                                .is_none_or(|x| entry.expires_at.is_some_and(|y| y <= x)) =>
                        {
                            there
                        }
                        _ => entry,
                    };
                    w.put(kind.table(), canonical.as_str(), &keep)?;
                }
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(())
    }

    /// Seeds the preconfigured blocklists once, and loads every list's last good copy.
    fn load_blocklists(&self, state: FwState) -> Result<(), FwError> {
        if !state.blocklists_seeded {
            self.store.write(|w| {
                for def in crate::blocklist::preconfigured() {
                    if w.get(&FW_BLOCKLISTS, def.name.as_str())?.is_none() {
                        w.put(&FW_BLOCKLISTS, def.name.as_str(), &def)?;
                    }
                }
                let mut st = w.get(&FW_STATE, STATE_KEY)?.unwrap_or(state);
                st.blocklists_seeded = true;
                w.put(&FW_STATE, STATE_KEY, &st)
            })?;
        }
        let mut loaded = BTreeMap::new();
        for def in self.blocklists()? {
            let bytes = self
                .store
                .read(|r| r.get_raw(&FW_BLOCKLIST_DATA, def.name.as_str()))?;
            let ranges = bytes
                .as_deref()
                .and_then(Ranges::from_bytes)
                .unwrap_or_default();
            loaded.insert(def.name, std::sync::Arc::new(ranges));
        }
        self.lock().blocklists = loaded;
        Ok(())
    }

    /// Installs a blocklist's new ranges: swaps its sets in the kernel (a country list instead
    /// rebuilds the table, since it feeds several kinds of rules), runs `persist`, and keeps the
    /// ranges in memory — all under the engine lock. If `persist` fails after the kernel took the
    /// new ranges, the table is rebuilt from what is kept.
    pub(crate) fn install_ranges<R>(
        &self,
        name: &str,
        ranges: std::sync::Arc<Ranges>,
        persist: impl FnOnce() -> Result<R, FwError>,
    ) -> Result<R, FwError> {
        let enabled = self.blocklist(name)?.enabled;
        let country = crate::blocklist::is_country(name);
        let mut inner = self.lock();
        let live = inner.kernel_rules > 0 && enabled && !country;
        if live && let Some(nl) = inner.nl.as_mut() {
            let mut batch = Batch::new(nl.next_seq());
            plan::swap_blocklist(&mut batch, &self.cfg.table, name, &ranges);
            nl.commit(batch)?;
        }
        let out = match persist() {
            Ok(out) => out,
            Err(e) => {
                if live && let Err(again) = self.apply_full(&mut inner) {
                    tracing::error!(error = %again, "could not put the previous blocklist back");
                }
                return Err(e);
            }
        };
        inner.blocklists.insert(name.to_string(), ranges);
        if country {
            self.apply_full(&mut inner)?;
        }
        Ok(out)
    }

    pub(crate) fn with_loaded<R>(
        &self,
        f: impl FnOnce(&BTreeMap<String, std::sync::Arc<Ranges>>) -> R,
    ) -> R {
        f(&self.lock().blocklists)
    }

    /// The settings, parsed.
    pub fn parsed_settings(&self) -> Result<Settings, FwError> {
        Settings::parse(&self.settings()?).map_err(FwError::Settings)
    }

    pub(crate) fn forget_ranges(&self, name: &str) {
        self.lock().blocklists.remove(name);
    }

    /// Rebuilds the table from the store.
    pub(crate) fn reapply(&self) -> Result<(), FwError> {
        let mut inner = self.lock();
        self.apply_full(&mut inner)
    }

    /// Marks the kernel as unknown when netlink gave no verdict, so upkeep rebuilds it.
    pub(crate) fn mark_stale(&self) {
        self.lock().stale = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored state, created with defaults on first use.
    fn state(&self) -> Result<FwState, FwError> {
        if let Some(s) = self.store.read(|r| r.get(&FW_STATE, STATE_KEY))? {
            return Ok(s);
        }
        let protected = self.cfg.protected_tcp_ports.clone();
        Ok(self.store.write(|w| {
            if let Some(s) = w.get(&FW_STATE, STATE_KEY)? {
                return Ok::<_, StoreError>(s);
            }
            let s = FwState {
                enabled: true,
                settings: model::default_settings(&protected),
                testing_since: None,
                next_rule_id: 1,
                blocklists_seeded: false,
            };
            w.put(&FW_STATE, STATE_KEY, &s)?;
            Ok(s)
        })?)
    }

    fn entries(&self, kind: ListKind) -> Result<Vec<FwEntry>, FwError> {
        Ok(self.store.read(|r| r.all(kind.table()))?)
    }

    /// The entries of a list from the in-memory mirror (loaded from the store on first use).
    fn cached<'a>(
        &self,
        inner: &'a mut Inner,
        kind: ListKind,
    ) -> Result<&'a mut BTreeMap<String, FwEntry>, FwError> {
        let slot = &mut inner.cache[kind as usize];
        if slot.is_none() {
            *slot = Some(
                self.entries(kind)?
                    .into_iter()
                    .map(|e| (e.net.clone(), e))
                    .collect(),
            );
        }
        Ok(slot.get_or_insert_with(BTreeMap::new))
    }

    fn rules(&self) -> Result<Vec<FwRule>, FwError> {
        Ok(self.store.read(|r| r.all(&FW_RULES))?)
    }

    /// What the kernel set `set` must hold for these entries: networks merged into disjoint
    /// intervals, hosts as one-address elements.
    fn set_contents(entries: &[FwEntry], set: ListSet, t: i64) -> Vec<Interval> {
        let nets: Vec<(IpNet, Option<i64>)> = entries
            .iter()
            .filter_map(|e| parse_net(&e.net).map(|n| (n, e.expires_at)))
            .filter(|(n, _)| ListSet::of(set.black, n) == set)
            .collect();
        if set.cidr {
            return intervals(nets.iter().map(|(n, e)| (n, *e)), set.v6, t);
        }
        let mut hosts: Vec<Interval> = nets
            .iter()
            .filter(|(_, e)| e.is_none_or(|x| x > t))
            .map(|(n, e)| {
                let (a, _) = model::bounds(n);
                Interval {
                    start: a,
                    end: a,
                    expires: *e,
                }
            })
            .collect();
        hosts.sort_unstable();
        hosts
    }

    fn all_contents(
        black: &[FwEntry],
        white: &[FwEntry],
        t: i64,
    ) -> BTreeMap<ListSet, Vec<Interval>> {
        ListSet::ALL
            .into_iter()
            .map(|set| {
                (
                    set,
                    Self::set_contents(if set.black { black } else { white }, set, t),
                )
            })
            .collect()
    }

    /// The caller, if the firewall filters its packets at all: loopback and the server's own
    /// addresses arrive over `lo`, and whitelisted ones are accepted before anything can drop
    /// them, so no change can lock those out.
    fn exposed_caller(
        &self,
        inner: &mut Inner,
        caller: Option<IpAddr>,
    ) -> Result<Option<IpAddr>, FwError> {
        let Some(c) = caller.map(|c| c.to_canonical()) else {
            return Ok(None);
        };
        if c.is_loopback() || local_addresses().contains(&c) {
            return Ok(None);
        }
        let t = now();
        let white = self.cached(inner, ListKind::White)?;
        let whitelisted = white.values().any(|e| {
            e.expires_at.is_none_or(|x| x > t) && parse_net(&e.net).is_some_and(|n| n.contains(&c))
        });
        Ok((!whitelisted).then_some(c))
    }

    fn policy_for(&self, settings: &Settings, applied_at: i64, t: i64) -> bool {
        !(settings.testing && t >= applied_at + i64::from(settings.testing_interval) * 60)
    }

    /// Rebuilds the whole table from the store in one transaction (or removes it when the
    /// firewall is toggled off).
    fn apply_full(&self, inner: &mut Inner) -> Result<(), FwError> {
        let Some(nl) = inner.nl.as_mut() else {
            return Ok(());
        };
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let t = now();
        let mut batch = Batch::new(nl.next_seq());
        if !state.enabled {
            plan::remove(&mut batch, &self.cfg.table);
            nl.commit(batch)?;
            inner.applied.clear();
            inner.kernel_rules = 0;
            return Ok(());
        }
        let black = self.entries(ListKind::Black)?;
        let white = self.entries(ListKind::White)?;
        let index = |v: &[FwEntry]| v.iter().map(|e| (e.net.clone(), e.clone())).collect();
        inner.cache = [Some(index(&black)), Some(index(&white))];
        let lists = Self::all_contents(&black, &white, t);
        let plan_lists = ListPlan::new(&settings, &self.blocklists()?, &inner.blocklists);
        let blocklists: Vec<(&str, &Ranges)> = plan_lists
            .sets
            .iter()
            .map(|(n, r)| (n.as_str(), r.as_ref()))
            .collect();
        let drop_lists: Vec<&str> = plan_lists.drop.iter().map(String::as_str).collect();
        let accept_lists: Vec<&str> = plan_lists.accept.iter().map(String::as_str).collect();
        let rules: Vec<Rule> = self
            .rules()?
            .iter()
            .filter_map(|r| typed_rule(r).ok())
            .collect();
        let applied_at = t;
        let policy_drop = self.policy_for(&settings, applied_at, t);
        let d = Desired {
            table: &self.cfg.table,
            policy_drop,
            settings: &settings,
            lists: &lists,
            rules: &rules,
            blocklists: &blocklists,
            drop_lists: &drop_lists,
            accept_lists: &accept_lists,
            allow_filter: plan_lists.filter.as_ref(),
            bogon_interface: settings.bogon.then_some(settings.bogon_interface.as_str()),
        };
        let count = plan::full(&mut batch, &d, t);
        nl.commit(batch)?;
        inner.applied = lists;
        inner.kernel_rules = count;
        inner.stale = false;
        inner.policy_drop = policy_drop;
        inner.applied_at = applied_at;
        Ok(())
    }

    /// `POST /csf/reload` and `/csf/apply`: the whole ruleset again from the store.
    pub fn reload(&self) -> Result<Status, FwError> {
        let mut inner = self.lock();
        self.apply_full(&mut inner)?;
        drop(inner);
        self.status()
    }

    /// Adds (or updates) a list entry; effective in the kernel when this returns.
    pub fn add(&self, kind: ListKind, req: EntryRequest) -> Result<FwEntry, FwError> {
        let ip = req.ip.trim();
        if ip.is_empty() {
            return Err(FwError::Invalid("IP address is required".into()));
        }
        let net = parse_net(ip)
            .ok_or_else(|| FwError::Invalid(format!("Invalid IP address or CIDR: {ip:?}")))?;
        if !(0..=MAX_TTL).contains(&req.ttl) {
            return Err(FwError::Invalid(format!(
                "TTL must be between 0 (permanent) and {MAX_TTL} seconds"
            )));
        }
        if req.comment.chars().count() > MAX_COMMENT || req.comment.chars().any(char::is_control) {
            return Err(FwError::Invalid(format!(
                "Comment must be at most {MAX_COMMENT} printable characters"
            )));
        }
        let t = now();
        let ttl = u64::try_from(req.ttl).unwrap_or(0);
        let entry = FwEntry {
            net: net.to_string(),
            comment: req.comment.trim().to_string(),
            ttl,
            created_at: t,
            expires_at: (ttl > 0).then(|| t + req.ttl),
        };
        let caller = req.caller.map(|c| c.to_canonical());
        let mut inner = self.lock();
        match kind {
            ListKind::Black => {
                let white = self.cached(&mut inner, ListKind::White)?;
                refuse_unsafe_ban(white, &net, req.force, caller, t)?;
            }
            ListKind::White if model::is_broad(&net) && !req.force => {
                return Err(FwError::Invalid(format!(
                    "Refusing to whitelist {}: it is wider than /{} and would let a large part of \
                     the internet past the firewall; send \"force\": true to whitelist it anyway",
                    display_net(&net),
                    model::min_prefix(&net)
                )));
            }
            ListKind::White => {}
        }
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let live = |e: &FwEntry| e.expires_at.is_none_or(|x| x > t);
        let map = self.cached(&mut inner, kind)?;
        let replacing = map.get(&entry.net).is_some_and(live);
        // DENY_IP_LIMIT / DENY_TEMP_IP_LIMIT: the oldest entries of the same kind rotate out.
        let mut rotated: Vec<String> = Vec::new();
        let limit = match (kind, ttl) {
            (ListKind::Black, 0) => settings.deny_ip_limit,
            (ListKind::Black, _) => settings.deny_temp_ip_limit,
            (ListKind::White, _) => 0,
        };
        if limit > 0 {
            let mut same: Vec<&FwEntry> = map
                .values()
                .filter(|e| live(e) && e.net != entry.net && (e.ttl == 0) == (ttl == 0))
                .collect();
            if same.len() + 1 > limit {
                same.sort_by_key(|e| (e.created_at, e.net.clone()));
                let excess = (same.len() + 1).saturating_sub(limit);
                rotated = same.iter().take(excess).map(|e| e.net.clone()).collect();
            }
        }
        let fast = !replacing
            && rotated.is_empty()
            && self.add_disjoint(&mut inner, kind, &net, entry.expires_at, t)?;
        if !fast {
            let mut entries: Vec<FwEntry> = self
                .cached(&mut inner, kind)?
                .values()
                .filter(|e| live(e) && e.net != entry.net && !rotated.contains(&e.net))
                .cloned()
                .collect();
            entries.push(entry.clone());
            self.sync_list(&mut inner, kind, &entries, t)?;
        }
        let stored = self.store.write(|w| {
            for k in &rotated {
                w.remove(kind.table(), k.as_str())?;
            }
            w.put(kind.table(), entry.net.as_str(), &entry)
        });
        if let Err(e) = stored {
            // the kernel already has the ban: let the next tick rebuild it from the store
            inner.stale = true;
            inner.cache[kind as usize] = None;
            return Err(e.into());
        }
        let map = self.cached(&mut inner, kind)?;
        for k in &rotated {
            map.remove(k);
        }
        map.insert(entry.net.clone(), entry.clone());
        if kind == ListKind::Black {
            self.counters.ban("api");
        }
        Ok(entry)
    }

    /// What the firewall has counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The common case of a ban: the new network neither overlaps nor touches anything in its
    /// set, so one element is added and nothing is recomputed. False when that doesn't hold.
    fn add_disjoint(
        &self,
        inner: &mut Inner,
        kind: ListKind,
        net: &IpNet,
        expires: Option<i64>,
        t: i64,
    ) -> Result<bool, FwError> {
        if inner.nl.is_none() || inner.kernel_rules == 0 {
            return Ok(false);
        }
        let set = ListSet::of(kind == ListKind::Black, net);
        let (start, end) = model::bounds(net);
        let ivs = inner.applied.entry(set).or_default();
        // An interval set must stay disjoint and unmerged-adjacent; a hash set only needs the
        // key to be new. Either way `applied` stays sorted by start.
        let idx = if set.cidr {
            let idx = ivs.partition_point(|iv| iv.start <= end.saturating_add(1));
            if idx > 0 && ivs[idx - 1].end.saturating_add(1) >= start.saturating_sub(1) {
                return Ok(false);
            }
            idx
        } else {
            match ivs.binary_search_by_key(&start, |iv| iv.start) {
                Ok(_) => return Ok(false),
                Err(idx) => idx,
            }
        };
        let iv = Interval {
            start,
            end,
            expires,
        };
        let table = self.cfg.table.clone();
        let Some(nl) = inner.nl.as_mut() else {
            return Ok(false);
        };
        let mut batch = Batch::new(nl.next_seq());
        plan::list_elements(&mut batch, &table, set, std::slice::from_ref(&iv), true, t);
        nl.commit(batch)?;
        inner.applied.entry(set).or_default().insert(idx, iv);
        Ok(true)
    }

    /// Removes a list entry; 404 when it isn't there.
    pub fn remove(&self, kind: ListKind, ip: &str) -> Result<FwEntry, FwError> {
        let net = parse_net(ip)
            .ok_or_else(|| FwError::Invalid(format!("Invalid IP address or CIDR: {ip:?}")))?;
        let key = net.to_string();
        let t = now();
        let mut inner = self.lock();
        let map = self.cached(&mut inner, kind)?;
        let Some(found) = map
            .get(&key)
            .filter(|e| e.expires_at.is_none_or(|x| x > t))
            .cloned()
        else {
            return Err(FwError::NotFound(format!(
                "{} is not in the {}",
                display_net(&net),
                kind.name()
            )));
        };
        let rest: Vec<FwEntry> = map
            .values()
            .filter(|e| e.net != key && e.expires_at.is_none_or(|x| x > t))
            .cloned()
            .collect();
        self.sync_list(&mut inner, kind, &rest, t)?;
        if let Err(e) = self.store.write(|w| w.remove(kind.table(), key.as_str())) {
            inner.stale = true;
            inner.cache[kind as usize] = None;
            return Err(e.into());
        }
        self.cached(&mut inner, kind)?.remove(&key);
        Ok(found)
    }

    /// Brings the kernel sets of one list to `entries`: only the changed intervals are sent;
    /// if the kernel disagrees with what we think it holds, the sets are rewritten whole.
    fn sync_list(
        &self,
        inner: &mut Inner,
        kind: ListKind,
        entries: &[FwEntry],
        t: i64,
    ) -> Result<(), FwError> {
        if inner.nl.is_none() || inner.kernel_rules == 0 {
            return Ok(());
        }
        let sets: Vec<ListSet> = kind.sets().collect();
        let new: Vec<Vec<Interval>> = sets
            .iter()
            .map(|set| Self::set_contents(entries, *set, t))
            .collect();
        let table = self.cfg.table.clone();
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for (set, new) in sets.iter().zip(&new) {
            let old = inner
                .applied
                .get(set)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let old_set: HashSet<&Interval> = old.iter().collect();
            let new_set: HashSet<&Interval> = new.iter().collect();
            // Elements that expire within 2 s may be gone by the time the kernel sees the batch.
            // Elements about to expire are left to the kernel (they may be gone by the time it sees
            // the batch), except when the same key comes back: adding an existing element changes
            // nothing, so the old one must go first (a race with expiry lands in the rewrite below).
            let readded: HashSet<u128> = new
                .iter()
                .filter(|iv| !old_set.contains(iv))
                .map(|iv| iv.start)
                .collect();
            removed.push(
                old.iter()
                    .filter(|iv| {
                        !new_set.contains(iv)
                            && (iv.expires.is_none_or(|e| e > t + 2) || readded.contains(&iv.start))
                    })
                    .copied()
                    .collect::<Vec<_>>(),
            );
            added.push(
                new.iter()
                    .filter(|iv| !old_set.contains(iv))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        let Some(nl) = inner.nl.as_mut() else {
            return Ok(());
        };
        let mut batch = Batch::new(nl.next_seq());
        for (set, ivs) in sets.iter().zip(&removed) {
            plan::list_elements(&mut batch, &table, *set, ivs, false, t);
        }
        for (set, ivs) in sets.iter().zip(&added) {
            plan::list_elements(&mut batch, &table, *set, ivs, true, t);
        }
        if let Err(e) = nl.commit(batch) {
            // ENOENT/EEXIST: the kernel's sets differ from our picture (an element expired, or
            // someone edited them). Rewrite the list's sets whole, still in one transaction.
            if !matches!(e.errno(), Some(2) | Some(17)) {
                return Err(e.into());
            }
            tracing::debug!(error = %e, "incremental list update refused; rewriting the sets");
            let mut batch = Batch::new(nl.next_seq());
            for set in &sets {
                plan::flush_set(&mut batch, &table, *set);
            }
            for (set, ivs) in sets.iter().zip(&new) {
                plan::list_elements(&mut batch, &table, *set, ivs, true, t);
            }
            nl.commit(batch)?;
        }
        for (set, ivs) in sets.into_iter().zip(new) {
            inner.applied.insert(set, ivs);
        }
        Ok(())
    }

    /// Live entries of a list, oldest first.
    pub fn list(&self, kind: ListKind) -> Result<Vec<FwEntry>, FwError> {
        let t = now();
        let mut v: Vec<FwEntry> = self
            .entries(kind)?
            .into_iter()
            .filter(|e| e.expires_at.is_none_or(|x| x > t))
            .collect();
        v.sort_by_key(|e| (e.created_at, e.net.clone()));
        Ok(v)
    }

    /// Every list entry that matches `ip`.
    pub fn check(&self, ip: &str) -> Result<Vec<CheckResult>, FwError> {
        let ip = ip.trim();
        if ip.is_empty() {
            return Err(FwError::Invalid("IP address is required".into()));
        }
        // `::ffff:1.2.3.4` is checked as the IPv4 address it stands for, as lists store it
        let addr: IpAddr = ip
            .parse::<IpAddr>()
            .map_err(|_| FwError::Invalid(format!("Invalid IP address: {ip:?}")))?
            .to_canonical();
        let mut out = Vec::new();
        for kind in [ListKind::White, ListKind::Black] {
            for e in self.list(kind)? {
                if parse_net(&e.net).is_some_and(|n| n.contains(&addr)) {
                    out.push(CheckResult {
                        list: kind.name(),
                        name: None,
                        entry: parse_net(&e.net).map(|n| display_net(&n)).unwrap_or(e.net),
                        comment: e.comment,
                        expires_at: e.expires_at,
                    });
                }
            }
        }
        let enabled: Vec<String> = self
            .blocklists()?
            .into_iter()
            .filter(|d| d.enabled)
            .map(|d| d.name)
            .collect();
        let inner = self.lock();
        for name in enabled {
            if let Some((a, b)) = inner.blocklists.get(&name).and_then(|r| r.find(addr)) {
                out.push(CheckResult {
                    list: "blocklist",
                    name: Some(name.clone()),
                    entry: crate::blocklist::range_text(a, b),
                    comment: String::new(),
                    expires_at: None,
                });
            }
        }
        Ok(out)
    }

    /// The csf.conf-style settings.
    pub fn settings(&self) -> Result<BTreeMap<String, String>, FwError> {
        Ok(self.state()?.settings)
    }

    /// Merges `changes` into the settings, validates the result (every bad key reported) and
    /// applies it in one transaction; nothing changes if either step fails. A change that would
    /// close the API port to `origin`'s caller is refused unless `origin.force`.
    pub fn update_settings(
        &self,
        changes: BTreeMap<String, String>,
        origin: Origin,
    ) -> Result<BTreeMap<String, String>, FwError> {
        let mut inner = self.lock();
        let mut state = self.state()?;
        let before = state.clone();
        let unknown: Vec<SettingError> = changes
            .keys()
            .filter(|k| !model::KEYS.contains(&k.as_str()))
            .map(|k| SettingError {
                key: k.clone(),
                message: "is not a setting wispd implements".into(),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(FwError::Settings(unknown));
        }
        state.settings.extend(changes);
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        if !origin.force {
            // the stored settings were valid when stored; unparsable ones protect nothing
            if let (Ok(old), Some(caller)) = (
                Settings::parse(&before.settings),
                self.exposed_caller(&mut inner, origin.caller)?,
            ) {
                refuse_settings_lockout(
                    &self.cfg,
                    (&old, before.enabled),
                    (&settings, state.enabled),
                    caller,
                )?;
            }
        }
        for key in model::PORT_KEYS {
            state
                .settings
                .insert(key.to_string(), model::format_ports(settings.ports(key)));
        }
        self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &state))?;
        if let Err(e) = self.apply_full(&mut inner) {
            if let Err(restore) = self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &before)) {
                tracing::error!(error = %restore, "could not restore the settings after a refused apply");
            }
            return Err(e);
        }
        // Country lists follow the applied settings: new ones become due, dropped ones go.
        for gone in self.sync_countries(&settings)? {
            inner.blocklists.remove(&gone);
        }
        Ok(state.settings)
    }

    /// The open ports: `(port, protocol, direction)` from TCP_IN/UDP_IN/TCP_OUT/UDP_OUT.
    pub fn ports(&self) -> Result<Vec<(String, &'static str, &'static str)>, FwError> {
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let mut out = Vec::new();
        for (key, proto, dir) in [
            ("TCP_IN", "tcp", "in"),
            ("UDP_IN", "udp", "in"),
            ("TCP_OUT", "tcp", "out"),
            ("UDP_OUT", "udp", "out"),
        ] {
            for p in settings.ports(key) {
                out.push((p.to_string(), proto, dir));
            }
        }
        Ok(out)
    }

    fn port_keys(protocol: &str, direction: &str) -> Result<[&'static str; 2], FwError> {
        Ok(match (protocol, direction) {
            ("tcp", "in") => ["TCP_IN", "TCP6_IN"],
            ("udp", "in") => ["UDP_IN", "UDP6_IN"],
            ("tcp", "out") => ["TCP_OUT", "TCP6_OUT"],
            ("udp", "out") => ["UDP_OUT", "UDP6_OUT"],
            _ => {
                return Err(FwError::Invalid(
                    "Protocol must be tcp or udp and direction in or out".into(),
                ));
            }
        })
    }

    /// Opens a port (IPv4 and IPv6).
    pub fn add_port(&self, req: PortRequest) -> Result<(), FwError> {
        let port = req.port.trim();
        if port.is_empty() {
            return Err(FwError::Invalid("Port is required".into()));
        }
        let range = PortRange::parse(port).ok_or_else(|| {
            FwError::Invalid(format!(
                "Invalid port {port:?}: use 1-65535 or a range like 30000:35000"
            ))
        })?;
        let keys = Self::port_keys(&req.protocol, &req.direction)?;
        let current = self.settings()?;
        let mut changes = BTreeMap::new();
        for key in keys {
            let list = current.get(key).cloned().unwrap_or_default();
            changes.insert(
                key.to_string(),
                if list.is_empty() {
                    range.to_string()
                } else {
                    format!("{list},{range}")
                },
            );
        }
        // opening ports never shuts anyone out
        self.update_settings(changes, Origin::default()).map(|_| ())
    }

    /// Closes a port (or range) everywhere it is open, or only for `protocol`/`direction`; a range
    /// it cuts into is split (`20:25` without 22 is `20:21,23:25`).
    pub fn remove_port(
        &self,
        port: &str,
        protocol: Option<&str>,
        direction: Option<&str>,
        origin: Origin,
    ) -> Result<usize, FwError> {
        let range = PortRange::parse(port)
            .ok_or_else(|| FwError::Invalid(format!("Invalid port {port:?}")))?;
        let current = self.settings()?;
        let mut changes = BTreeMap::new();
        let mut removed = 0;
        for proto in ["tcp", "udp"] {
            for dir in ["in", "out"] {
                if protocol.is_some_and(|p| p != proto) || direction.is_some_and(|d| d != dir) {
                    continue;
                }
                for key in Self::port_keys(proto, dir)? {
                    let list =
                        model::parse_ports(key, current.get(key).map(String::as_str).unwrap_or(""))
                            .map_err(|e| FwError::Settings(vec![e]))?;
                    if let Some(kept) = model::subtract_ports(&list, range) {
                        removed += 1;
                        changes.insert(key.to_string(), model::format_ports(&kept));
                    }
                }
            }
        }
        if removed == 0 {
            return Err(FwError::NotFound(format!("Port {range} is not open")));
        }
        self.update_settings(changes, origin)?;
        Ok(removed)
    }

    /// Basic rules in id order.
    pub fn list_rules(&self) -> Result<Vec<FwRule>, FwError> {
        self.rules()
    }

    /// Adds a basic rule and applies it.
    pub fn add_rule(&self, req: RuleRequest) -> Result<FwRule, FwError> {
        let mut rule = FwRule {
            id: 0,
            chain: req.chain.trim().to_ascii_uppercase(),
            protocol: req.protocol.trim().to_ascii_lowercase(),
            port: req
                .port
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
            source: req
                .source
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            action: req.action.trim().to_ascii_uppercase(),
            created_at: now(),
        };
        let typed = typed_rule(&rule)?;
        if let Some(p) = typed.port {
            rule.port = Some(p.to_string());
        }
        if let Some(n) = typed.peer {
            rule.source = Some(display_net(&n));
        }
        let mut inner = self.lock();
        if !req.force {
            let caller = self.exposed_caller(&mut inner, req.caller)?;
            if let Some(why) = lockout::rule_lockout(&typed, self.cfg.api_port, caller) {
                return Err(FwError::Invalid(format!(
                    "Refusing to add the rule: {why}; send \"force\": true to add it anyway"
                )));
            }
        }
        let stored = self.store.write(|w| {
            let mut state = w.get(&FW_STATE, STATE_KEY)?.unwrap_or_default();
            rule.id = state.next_rule_id.max(1);
            state.next_rule_id = rule.id + 1;
            w.put(&FW_STATE, STATE_KEY, &state)?;
            w.put(&FW_RULES, rule.id, &rule)?;
            Ok::<_, StoreError>(rule.clone())
        })?;
        if let Err(e) = self.apply_full(&mut inner) {
            self.store.write(|w| w.remove(&FW_RULES, stored.id))?;
            return Err(e);
        }
        Ok(stored)
    }

    pub fn delete_rule(&self, id: u64) -> Result<FwRule, FwError> {
        let mut inner = self.lock();
        let Some(rule) = self.store.read(|r| r.get(&FW_RULES, id))? else {
            return Err(FwError::NotFound(format!("No firewall rule with id {id}")));
        };
        self.store.write(|w| w.remove(&FW_RULES, id))?;
        if let Err(e) = self.apply_full(&mut inner) {
            self.store.write(|w| w.put(&FW_RULES, id, &rule))?;
            return Err(e);
        }
        Ok(rule)
    }

    /// Turns filtering on or off (off removes the table; everything stays in the store). Turning
    /// it on with settings that close the API port to `origin`'s caller needs `origin.force`.
    pub fn toggle(&self, enabled: bool, origin: Origin) -> Result<Status, FwError> {
        let mut inner = self.lock();
        let before = self.state()?;
        let mut state = before.clone();
        state.enabled = enabled;
        if !origin.force
            && let Some(caller) = self.exposed_caller(&mut inner, origin.caller)?
            && let Ok(settings) = Settings::parse(&state.settings)
        {
            refuse_settings_lockout(
                &self.cfg,
                (&settings, before.enabled),
                (&settings, enabled),
                caller,
            )?;
        }
        self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &state))?;
        if let Err(e) = self.apply_full(&mut inner) {
            self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &before))?;
            return Err(e);
        }
        drop(inner);
        self.status()
    }

    pub fn status(&self) -> Result<Status, FwError> {
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let inner = self.lock();
        let lifts = settings
            .testing
            .then(|| inner.applied_at + i64::from(settings.testing_interval) * 60);
        Ok(Status {
            backend: inner.backend.clone(),
            enabled: state.enabled,
            table: self.cfg.table.clone(),
            testing: settings.testing,
            testing_lifts_at: lifts.filter(|_| inner.policy_drop),
            policy_drop: inner.policy_drop && state.enabled,
            blacklist_count: self.list(ListKind::Black)?.len(),
            whitelist_count: self.list(ListKind::White)?.len(),
            rule_count: self.rules()?.len(),
            kernel_rules: inner.kernel_rules,
        })
    }

    /// Periodic upkeep: lifts the TESTING policy when its time is up, restores the table if
    /// someone deleted or flushed it, and drops expired entries from the store.
    pub fn tick(&self) -> Result<(), FwError> {
        let t = now();
        let mut inner = self.lock();
        let state = self.state()?;
        if inner.nl.is_some() && state.enabled {
            let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
            let expected = inner.kernel_rules;
            let table = self.cfg.table.clone();
            let found = inner
                .nl
                .as_mut()
                .map(|nl| nl.rule_count(&table))
                .transpose()?
                .flatten();
            let unknown = inner.nl.as_mut().is_some_and(Netlink::take_unknown);
            if inner.stale || unknown {
                tracing::warn!(table = %table, "firewall table may differ from the store; rebuilding it");
                self.apply_full(&mut inner)?;
            } else if found != Some(expected) {
                tracing::warn!(?found, expected, table = %table, "firewall table was changed from outside; restoring it");
                self.apply_full(&mut inner)?;
            } else if inner.policy_drop && !self.policy_for(&settings, inner.applied_at, t) {
                tracing::warn!(
                    "TESTING: lifting the restrictive policy (set TESTING to 0 to keep it)"
                );
                if let Some(nl) = inner.nl.as_mut() {
                    let mut batch = Batch::new(nl.next_seq());
                    plan::policy(&mut batch, &table, false);
                    nl.commit(batch)?;
                }
                inner.policy_drop = false;
            }
        }
        drop(inner);
        for kind in [ListKind::Black, ListKind::White] {
            let expired: Vec<String> = self
                .entries(kind)?
                .into_iter()
                .filter(|e| e.expires_at.is_some_and(|x| x <= t))
                .map(|e| e.net)
                .collect();
            if !expired.is_empty() {
                // Under the lock, and checked again inside the transaction: an address banned
                // anew since the scan above must not be removed with its old entry.
                let mut inner = self.lock();
                self.store.write(|w| {
                    for k in &expired {
                        let still = w
                            .get(kind.table(), k.as_str())?
                            .is_some_and(|e| e.expires_at.is_some_and(|x| x <= t));
                        if still {
                            w.remove(kind.table(), k.as_str())?;
                        }
                    }
                    Ok::<_, StoreError>(())
                })?;
                inner.cache[kind as usize] = None;
            }
        }
        Ok(())
    }
}

fn refuse_unsafe_ban(
    white: &BTreeMap<String, FwEntry>,
    net: &IpNet,
    force: bool,
    caller: Option<IpAddr>,
    t: i64,
) -> Result<(), FwError> {
    let loopback: [IpNet; 2] = [
        loopback4(),
        IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ];
    if loopback.iter().any(|l| overlaps(l, net)) {
        return Err(FwError::Invalid(format!(
            "Refusing to blacklist {}: it covers loopback",
            display_net(net)
        )));
    }
    for addr in local_addresses() {
        if net.contains(&addr) {
            return Err(FwError::Invalid(format!(
                "Refusing to blacklist {}: it covers this server's own address {addr}",
                display_net(net)
            )));
        }
    }
    for w in white.values() {
        if w.expires_at.is_some_and(|x| x <= t) {
            continue;
        }
        if let Some(wn) = parse_net(&w.net)
            && overlaps(&wn, net)
        {
            return Err(FwError::Invalid(format!(
                "Refusing to blacklist {}: it overlaps whitelisted {}; remove that from the whitelist first",
                display_net(net),
                display_net(&wn)
            )));
        }
    }
    if let Some(c) = caller
        && net.contains(&c)
        && !force
    {
        return Err(FwError::Invalid(format!(
            "Refusing to blacklist {}: it covers your own address {c}; send \"force\": true to ban it anyway",
            display_net(net)
        )));
    }
    if model::is_broad(net) && !force {
        return Err(FwError::Invalid(format!(
            "Refusing to blacklist {}: it is wider than /{} and would drop a large part of the \
             internet; send \"force\": true to ban it anyway",
            display_net(net),
            model::min_prefix(net)
        )));
    }
    Ok(())
}

/// Refuses a settings change that newly shuts `caller` out of the API (see
/// [`lockout::settings_lockout`]).
fn refuse_settings_lockout(
    cfg: &FirewallConfig,
    before: (&Settings, bool),
    after: (&Settings, bool),
    caller: IpAddr,
) -> Result<(), FwError> {
    let Some(port) = cfg.api_port else {
        return Ok(());
    };
    match lockout::settings_lockout(before, after, port, caller) {
        Some(why) => Err(FwError::Invalid(format!(
            "Refusing the change: {why}; send \"force\": true to apply it anyway"
        ))),
        None => Ok(()),
    }
}

fn e_is_permission(e: &FwError) -> bool {
    matches!(e, FwError::Kernel(n) if n.is_permission())
}

fn loopback4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn local_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

/// Validates a stored or requested rule into its typed form.
pub fn typed_rule(r: &FwRule) -> Result<Rule, FwError> {
    let direction = match r.chain.as_str() {
        "INPUT" => Direction::In,
        "OUTPUT" => Direction::Out,
        "" => {
            return Err(FwError::Invalid(
                "Chain is required (INPUT or OUTPUT)".into(),
            ));
        }
        other => {
            return Err(FwError::Invalid(format!(
                "Chain must be INPUT or OUTPUT, not {other:?}"
            )));
        }
    };
    let proto = match r.protocol.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "all" | "" => Proto::All,
        other => {
            return Err(FwError::Invalid(format!(
                "Protocol must be tcp, udp, icmp or all, not {other:?}"
            )));
        }
    };
    let action = match r.action.as_str() {
        "ACCEPT" => Action::Accept,
        "DROP" => Action::Drop,
        "REJECT" => Action::Reject,
        "" => {
            return Err(FwError::Invalid(
                "Action is required (ACCEPT, DROP or REJECT)".into(),
            ));
        }
        other => {
            return Err(FwError::Invalid(format!(
                "Action must be ACCEPT, DROP or REJECT, not {other:?}"
            )));
        }
    };
    let port = match &r.port {
        None => None,
        Some(p) => {
            if !matches!(proto, Proto::Tcp | Proto::Udp) {
                return Err(FwError::Invalid("A port needs protocol tcp or udp".into()));
            }
            Some(
                PortRange::parse(p)
                    .ok_or_else(|| FwError::Invalid(format!("Invalid port {p:?}")))?,
            )
        }
    };
    let peer = match &r.source {
        None => None,
        Some(s) => Some(
            parse_net(s)
                .ok_or_else(|| FwError::Invalid(format!("Invalid source address {s:?}")))?,
        ),
    };
    if port.is_none() && peer.is_none() && proto == Proto::All {
        return Err(FwError::Invalid(
            "A rule needs a protocol, a port or a source".into(),
        ));
    }
    Ok(Rule {
        direction,
        proto,
        port,
        peer,
        action,
    })
}

#[cfg(test)]
mod tests {
    //! The engine's rules without the kernel (`kernel: false`): store and validation only.
    use super::*;

    fn engine(name: &str) -> Firewall {
        let dir = std::env::temp_dir().join(format!("wispd-fw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Firewall::start(Store::open(&dir).expect("store"), config()).expect("start")
    }

    fn config() -> FirewallConfig {
        FirewallConfig {
            table: "wispd".into(),
            kernel: false,
            protected_tcp_ports: vec![2083],
            api_port: Some(2083),
        }
    }

    fn entry(ip: &str, force: bool, caller: Option<&str>) -> EntryRequest {
        EntryRequest {
            ip: ip.into(),
            comment: String::new(),
            ttl: 0,
            force,
            caller: caller.map(|c| c.parse().expect("caller")),
        }
    }

    fn refusal(r: Result<impl std::fmt::Debug, FwError>) -> String {
        match r {
            Err(FwError::Invalid(m)) => m,
            other => panic!("expected a 400 refusal, got {other:?}"),
        }
    }

    const REMOTE: &str = "203.0.113.5";

    /// Whether `net` leaves every address of the machine running the test alone (a ban covering
    /// one is refused for that reason first).
    fn off_this_host(net: &str) -> bool {
        let net = parse_net(net).expect("net");
        !local_addresses().iter().any(|a| net.contains(a))
    }

    #[test]
    fn ipv4_mapped_entries_are_stored_checked_and_removed_as_ipv4() {
        let fw = engine("mapped");
        let e = fw
            .add(ListKind::Black, entry("::ffff:198.51.100.7", false, None))
            .expect("ban");
        assert_eq!(e.net, "198.51.100.7/32");
        let e = fw
            .add(
                ListKind::Black,
                entry("::ffff:203.0.113.0/120", false, None),
            )
            .expect("ban");
        assert_eq!(e.net, "203.0.113.0/24");
        for probe in ["198.51.100.7", "::ffff:198.51.100.7", "::FFFF:203.0.113.9"] {
            let hits = fw.check(probe).expect("check");
            assert_eq!(hits.len(), 1, "{probe}");
            assert_eq!(hits[0].list, "blacklist");
        }
        fw.remove(ListKind::Black, "::ffff:198.51.100.7")
            .expect("unban by the mapped form");
        assert!(fw.check("198.51.100.7").expect("check").is_empty());
    }

    #[test]
    fn mapped_loopback_and_mapped_caller_are_protected_like_ipv4() {
        let fw = engine("mappedlo");
        let why = refusal(fw.add(ListKind::Black, entry("::ffff:127.0.0.1", true, None)));
        assert!(why.contains("loopback"), "{why}");
        let why = refusal(fw.add(
            ListKind::Black,
            entry(REMOTE, false, Some(&format!("::ffff:{REMOTE}"))),
        ));
        assert!(why.contains("your own address"), "{why}");
    }

    #[test]
    fn entries_stored_under_a_mapped_key_are_rekeyed_at_start() {
        let dir = std::env::temp_dir().join(format!("wispd-fw-rekey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir).expect("store");
        let legacy = FwEntry {
            net: "::ffff:198.51.100.7/128".into(),
            comment: "old".into(),
            ttl: 0,
            created_at: 1,
            expires_at: None,
        };
        store
            .write(|w| w.put(&FW_BLACKLIST, legacy.net.as_str(), &legacy))
            .expect("seed");
        let fw = Firewall::start(store, config()).expect("start");
        let list = fw.list(ListKind::Black).expect("list");
        assert_eq!(
            list.iter().map(|e| e.net.as_str()).collect::<Vec<_>>(),
            ["198.51.100.7/32"]
        );
        assert_eq!(fw.check("198.51.100.7").expect("check").len(), 1);
        fw.remove(ListKind::Black, "198.51.100.7").expect("unban");
    }

    #[test]
    fn broad_blacklist_and_whitelist_entries_need_force() {
        let fw = engine("broad");
        let wide = [
            "32.0.0.0/3",
            "128.0.0.0/1",
            "4000::/2",
            "2001:d00::/24",
            "::ffff:32.0.0.0/99",
        ];
        let wide: Vec<&str> = wide.into_iter().filter(|n| off_this_host(n)).collect();
        assert!(!wide.is_empty());
        for ip in &wide {
            let why = refusal(fw.add(ListKind::Black, entry(ip, false, None)));
            assert!(
                why.contains("wider than /") && why.contains("\"force\": true"),
                "{why}"
            );
        }
        for ip in ["0.0.0.0/0", "::/0", "10.0.0.0/7"] {
            let why = refusal(fw.add(ListKind::White, entry(ip, false, None)));
            assert!(why.contains("Refusing to whitelist"), "{why}");
        }
        fw.add(ListKind::Black, entry(wide[0], true, None))
            .expect("forced ban");
        fw.add(ListKind::White, entry("0.0.0.0/0", true, None))
            .expect("forced whitelist");
        fw.add(ListKind::Black, entry("2001:db8::/32", false, None))
            .expect("a /32 is not broad");
    }

    #[test]
    fn settings_that_close_the_api_port_to_the_caller_need_force() {
        let fw = engine("settings");
        let remote = Origin {
            caller: Some(REMOTE.parse().expect("ip")),
            force: false,
        };
        let change = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let closing = change(&[("TCP_IN", "22"), ("TESTING", "0")]);
        let why = refusal(fw.update_settings(closing.clone(), remote));
        assert!(
            why.contains("TCP_IN") && why.contains("2083") && why.contains("\"force\": true"),
            "{why}"
        );
        // the mapped form of the same caller is the same caller
        let mapped = Origin {
            caller: Some(format!("::ffff:{REMOTE}").parse().expect("ip")),
            force: false,
        };
        refusal(fw.update_settings(closing.clone(), mapped));
        refusal(fw.remove_port("2083", None, None, remote));
        // loopback callers can't be locked out (lo is accepted first); nor whitelisted ones
        let lo = Origin {
            caller: Some("127.0.0.1".parse().expect("ip")),
            force: false,
        };
        fw.update_settings(change(&[("TCP_IN", "22,2083")]), lo)
            .expect("unchanged port");
        fw.add(ListKind::White, entry(REMOTE, false, None))
            .expect("whitelist");
        fw.update_settings(change(&[("TCP_IN", "22")]), remote)
            .expect("whitelisted caller");
        fw.remove(ListKind::White, REMOTE).expect("unlist");
        // TESTING 1 -> 0 with the port already closed makes the lockout permanent
        let why = refusal(fw.update_settings(change(&[("TESTING", "0")]), remote));
        assert!(why.contains("TESTING is 0"), "{why}");
        let forced = Origin {
            force: true,
            ..remote
        };
        fw.update_settings(change(&[("TESTING", "0")]), forced)
            .expect("forced");
        // nothing gets worse: unrelated changes pass
        fw.update_settings(change(&[("DENY_IP_LIMIT", "10")]), remote)
            .expect("unrelated change");
        fw.toggle(false, remote).expect("off");
        refusal(fw.toggle(true, remote));
        fw.toggle(true, forced).expect("forced on");
    }

    #[test]
    fn rules_that_shut_the_caller_out_need_force() {
        let fw = engine("rules");
        let req = |port: Option<&str>, source: Option<&str>, force: bool| RuleRequest {
            chain: "INPUT".into(),
            protocol: "tcp".into(),
            port: port.map(Into::into),
            source: source.map(Into::into),
            action: "DROP".into(),
            force,
            caller: Some(REMOTE.parse().expect("ip")),
        };
        for (port, source) in [
            (Some("2083"), None),
            (Some("2083"), Some(REMOTE)),
            (Some("2083"), Some("::ffff:203.0.113.0/120")),
            (None, Some("0.0.0.0/0")),
        ] {
            let why = refusal(fw.add_rule(req(port, source, false)));
            assert!(why.contains("\"force\": true"), "{why}");
        }
        let out = RuleRequest {
            chain: "OUTPUT".into(),
            protocol: "all".into(),
            source: Some("0.0.0.0/0".into()),
            ..req(None, None, false)
        };
        refusal(fw.add_rule(out));
        let r = fw
            .add_rule(req(Some("2083"), Some("::ffff:203.0.113.5"), true))
            .expect("forced");
        assert_eq!(r.source.as_deref(), Some("203.0.113.5"));
        fw.add_rule(req(Some("8088"), None, false))
            .expect("another port");
    }

    #[test]
    fn opening_a_range_over_an_open_port_merges_instead_of_eexist() {
        let fw = engine("ports");
        let open = |port: &str| {
            fw.add_port(PortRequest {
                port: port.into(),
                protocol: "tcp".into(),
                direction: "in".into(),
            })
        };
        open("20:25").expect("range over 22");
        open("40000:40010").expect("range");
        open("40005").expect("port inside the range");
        let tcp_in = fw.settings().expect("settings")["TCP_IN"].clone();
        assert_eq!(tcp_in, "20:25,2083,40000:40010");
        assert_eq!(fw.settings().expect("settings")["TCP6_IN"], tcp_in);
        assert_eq!(
            fw.remove_port("22", Some("tcp"), Some("in"), Origin::default())
                .expect("close"),
            2
        );
        assert_eq!(
            fw.settings().expect("settings")["TCP_IN"],
            "20:21,23:25,2083,40000:40010"
        );
    }
}

#[cfg(test)]
mod kernel_tests {
    //! Needs root: each test moves its thread into a fresh network namespace.
    use super::*;
    use crate::msg::{MsgType, NFPROTO_INET, NLM_F_CREATE};

    fn ruleset() -> String {
        let out = std::process::Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_rejected_batch_changes_nothing_and_names_the_error() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare needs root");
        let dir = std::env::temp_dir().join(format!("wispd-fwreject-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir).expect("store");
        let fw = Firewall::start(
            store,
            FirewallConfig {
                table: "wispd".into(),
                kernel: true,
                protected_tcp_ports: vec![],
                api_port: None,
            },
        )
        .expect("start");
        fw.add(
            ListKind::Black,
            EntryRequest {
                ip: "192.0.2.1".into(),
                comment: String::new(),
                ttl: 0,
                force: false,
                caller: None,
            },
        )
        .expect("ban");
        let before = ruleset();
        assert!(before.contains("192.0.2.1"), "{before}");

        // A whole-table rebuild that also adds a rule looking up a set that does not exist: the
        // kernel must refuse the batch as a unit.
        let mut inner = fw.lock();
        let nl = inner.nl.as_mut().expect("netlink");
        let mut batch = Batch::new(nl.next_seq());
        plan::remove(&mut batch, "wispd");
        batch.msg(MsgType::NewRule, NLM_F_CREATE, NFPROTO_INET);
        batch.w.str(1, "wispd");
        batch.w.str(2, "input");
        batch.end_msg();
        let err = nl
            .commit(batch)
            .expect_err("the kernel must refuse a rule in a deleted table");
        assert!(err.to_string().contains("ENOENT"), "{err}");
        drop(inner);
        assert_eq!(ruleset(), before, "nothing of the refused batch may apply");
        // the socket is still usable afterwards
        fw.reload().expect("reload");
        assert!(ruleset().contains("192.0.2.1"));
    }
}
