//! The firewall engine: keeps the store and the kernel table in agreement. Every change is
//! planned against the store's state, committed to the kernel in one transaction, and only then
//! persisted; a rejected transaction leaves both as they were.
//!
//! By concern: [`kernel`] holds the netlink socket with what the kernel was last given (the only
//! lock held across kernel I/O, and only by changes), [`lists`] the black- and whitelist,
//! [`settings`], [`ports`] and [`rules`] their endpoints, [`upkeep`] the periodic tick that
//! repairs tampering, lifts TESTING and expires entries. Readers (status, lists, check, settings)
//! never wait behind kernel I/O: they read the store, the blocklist ranges and the [`View`]
//! the kernel side publishes after each change.

mod kernel;
mod lists;
mod ports;
mod protect;
mod rules;
mod settings;
mod upkeep;

pub use upkeep::Upkeep;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::blocklist::parse::Ranges;
use ipnet::IpNet;
use wispd_store::schema::{FW_STATE, FwState};
use wispd_store::{Store, StoreError};

use crate::model::{self, SettingError, Settings};
use crate::netlink::{Netlink, NetlinkError};

pub(crate) use kernel::{Kernel, ListPlan, View};
pub use lists::{CheckResult, EntryRequest, ListKind};
pub use ports::PortRequest;
pub use protect::{ConnlimitEntry, PortfloodEntry, PortfloodStatus, SynfloodStatus};
pub use rules::{RuleRequest, typed_rule};

/// Longest TTL accepted: ten years.
pub const MAX_TTL: i64 = 10 * 365 * 24 * 3600;
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

/// The firewall engine. All methods block (netlink and store I/O): call them off the async runtime.
pub struct Firewall {
    /// One blocklist refresh at a time: a refresh asked for while another runs waits for it
    /// (and then usually finds the source unchanged).
    pub(crate) refreshing: tokio::sync::Mutex<()>,
    cfg: FirewallConfig,
    store: Store,
    /// The kernel side; held by changes for as long as their transaction takes, never by readers.
    kernel: Mutex<Kernel>,
    /// What the kernel side last published, for readers.
    view: Mutex<View>,
    /// The last good ranges of every blocklist, by name.
    ranges: RwLock<BTreeMap<String, Arc<Ranges>>>,
    /// A second socket for upkeep's read-only dumps, so that a slow dump holds up no change.
    upkeep_nl: Mutex<Option<Netlink>>,
    /// Sources PORTFLOOD blocks that an alert was raised for, by block set.
    portflood_seen: Mutex<std::collections::HashSet<(String, IpAddr)>>,
    counters: Counters,
    lfd: crate::lfd::Lfd,
    alerts: crate::alerts::Alerts,
}

/// What the firewall counts for operators (read at scrape time by `/api/v1/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Blacklist entries added, by where they came from (`api`, `lfd`).
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

fn unpoison<T>(r: std::sync::LockResult<T>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Firewall {
    /// Loads (or creates) the firewall state and applies the full ruleset to the kernel. Without
    /// CAP_NET_ADMIN the engine still starts, keeping everything in the store.
    pub fn start(store: Store, cfg: FirewallConfig) -> Result<Firewall, FwError> {
        let fw = Firewall {
            counters: Counters::default(),
            kernel: Mutex::new(Kernel::new()),
            view: Mutex::new(View::new()),
            ranges: RwLock::new(BTreeMap::new()),
            upkeep_nl: Mutex::new(None),
            portflood_seen: Mutex::new(std::collections::HashSet::new()),
            lfd: crate::lfd::Lfd::default(),
            alerts: crate::alerts::Alerts::load(store.clone())?,
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
        let mut k = fw.kernel();
        let backend = if !fw.cfg.kernel {
            Backend::Unavailable("disabled in the config ([firewall] enabled = false)".into())
        } else {
            match Netlink::open() {
                Ok(nl) => {
                    k.nl = Some(nl);
                    match fw.apply_full(&mut k) {
                        Ok(()) => {
                            *unpoison(fw.upkeep_nl.lock()) = Netlink::open().ok();
                            Backend::Available
                        }
                        Err(e) if e_is_permission(&e) => {
                            k.nl = None;
                            Backend::Unavailable(format!(
                                "no permission to program nftables (CAP_NET_ADMIN is required): {e}"
                            ))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => Backend::Unavailable(format!("cannot open a netlink socket: {e}")),
            }
        };
        if let Backend::Unavailable(why) = &backend {
            tracing::warn!(reason = %why, "firewall kernel backend unavailable; settings and lists are kept in the store");
        }
        fw.publish(&k, Some(backend));
        drop(k);
        Ok(fw)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// What the engine was started with.
    pub fn config(&self) -> &FirewallConfig {
        &self.cfg
    }

    /// The settings, parsed.
    pub fn parsed_settings(&self) -> Result<Settings, FwError> {
        Settings::parse(&self.settings()?).map_err(FwError::Settings)
    }

    /// What the firewall has counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// lfd's counters and tracked failures.
    pub fn lfd(&self) -> &crate::lfd::Lfd {
        &self.lfd
    }

    /// The alert history and senders.
    pub fn alerts(&self) -> &crate::alerts::Alerts {
        &self.alerts
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

    /// `POST /csf/reload` and `/csf/apply`: the whole ruleset again from the store.
    pub fn reload(&self) -> Result<Status, FwError> {
        self.reapply()?;
        self.status()
    }

    /// Turns filtering on or off (off removes the table; everything stays in the store). Turning
    /// it on with settings that close the API port to `origin`'s caller needs `origin.force`.
    pub fn toggle(&self, enabled: bool, origin: crate::Origin) -> Result<Status, FwError> {
        let mut k = self.kernel();
        let before = self.state()?;
        let mut state = before.clone();
        state.enabled = enabled;
        if !origin.force
            && let Some(caller) = self.exposed_caller(&mut k, origin.caller)?
            && let Ok(settings) = Settings::parse(&state.settings)
        {
            settings::refuse_settings_lockout(
                &self.cfg,
                (&settings, before.enabled),
                (&settings, enabled),
                caller,
            )?;
        }
        self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &state))?;
        if let Err(e) = self.apply_full(&mut k) {
            self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &before))?;
            return Err(e);
        }
        drop(k);
        self.status()
    }

    /// The engine's state for `/csf/status`; never waits for kernel I/O in progress.
    pub fn status(&self) -> Result<Status, FwError> {
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let view = self.view();
        let lifts = settings
            .testing
            .then(|| view.applied_at + i64::from(settings.testing_interval) * 60);
        Ok(Status {
            backend: view.backend.clone(),
            enabled: state.enabled,
            table: self.cfg.table.clone(),
            testing: settings.testing,
            testing_lifts_at: lifts.filter(|_| view.policy_drop),
            policy_drop: view.policy_drop && state.enabled,
            blacklist_count: self.list(ListKind::Black)?.len(),
            whitelist_count: self.list(ListKind::White)?.len(),
            rule_count: self.rules()?.len(),
            kernel_rules: view.kernel_rules,
        })
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

/// The server's own addresses.
pub fn local_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
