//! The kernel side of the engine: the netlink socket, what the kernel table was last given, and
//! the mark that says it may differ. Only changes take this lock, for as long as their
//! transaction takes; readers see the [`View`] published after each change.

use std::collections::BTreeMap;
use std::sync::Arc;

use wispd_store::schema::{FW_BLOCKLIST_DATA, FW_BLOCKLISTS, FW_STATE, FwEntry, FwState};

use super::{Backend, Firewall, FwError, ListKind, STATE_KEY, now, unpoison};
use crate::blocklist::parse::Ranges;
use crate::model::{Interval, Settings};
use crate::msg::Batch;
use crate::netlink::Netlink;
use crate::plan::{self, Desired, ListSet, Rule};

pub(crate) struct Kernel {
    pub(crate) nl: Option<Netlink>,
    /// Intervals currently in each kernel list set.
    pub(super) applied: BTreeMap<ListSet, Vec<Interval>>,
    /// The entries of each list (black, white) the sets were built from, mirrored from the
    /// store; `None` until first used or after a store write failed.
    pub(super) entries: [Option<BTreeMap<String, FwEntry>>; 2],
    /// Rules the kernel table holds after our last full apply (0 = table absent).
    pub(super) rules: usize,
    /// The kernel may differ from the store (a change reached one and not the other, or netlink
    /// gave no answer): the next upkeep tick rebuilds the table.
    pub(super) stale: bool,
    pub(super) policy_drop: bool,
    pub(super) applied_at: i64,
    /// The [`plan::shape`] of the table last applied whole.
    pub(super) shape: Option<String>,
}

impl Kernel {
    pub(super) fn new() -> Kernel {
        Kernel {
            nl: None,
            applied: BTreeMap::new(),
            entries: [None, None],
            rules: 0,
            stale: false,
            policy_drop: false,
            applied_at: now(),
            shape: None,
        }
    }

    /// Whether list changes reach a live table (else they only go to the store).
    pub(super) fn live(&self) -> bool {
        self.nl.is_some() && self.rules > 0
    }
}

/// What readers see of the kernel side.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) backend: Backend,
    pub(crate) kernel_rules: usize,
    pub(crate) policy_drop: bool,
    pub(crate) applied_at: i64,
    /// Bumped by every change to the table's rules, so that a check made without the lock can
    /// tell whether the table changed under it.
    pub(crate) generation: u64,
}

impl View {
    pub(super) fn new() -> View {
        View {
            backend: Backend::Unavailable("not started".into()),
            kernel_rules: 0,
            policy_drop: false,
            applied_at: now(),
            generation: 0,
        }
    }
}

/// How the loaded lists map onto the table for a given set of settings.
pub struct ListPlan {
    /// Every list that gets a set pair, with its ranges.
    pub sets: Vec<(String, Arc<Ranges>)>,
    pub drop: Vec<String>,
    pub accept: Vec<String>,
    /// CC_ALLOW_FILTER's merged ranges, once every listed country has data.
    pub filter: Option<Ranges>,
}

impl ListPlan {
    pub fn new(
        settings: &Settings,
        defs: &[wispd_store::schema::FwBlocklist],
        loaded: &BTreeMap<String, Arc<Ranges>>,
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
            let parts: Vec<Arc<Ranges>> = settings
                .cc_allow_filter
                .iter()
                .map(|cc| {
                    let [v4, v6] = crate::blocklist::country_lists(cc);
                    let (a, b) = (ranges(&v4), ranges(&v6));
                    Arc::new(Ranges::union([a.as_ref(), b.as_ref()]))
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

impl Firewall {
    pub(super) fn kernel(&self) -> std::sync::MutexGuard<'_, Kernel> {
        unpoison(self.kernel.lock())
    }

    pub(crate) fn view(&self) -> View {
        unpoison(self.view.lock()).clone()
    }

    /// Makes what the kernel side now holds visible to readers.
    pub(super) fn publish(&self, k: &Kernel, backend: Option<Backend>) {
        let mut v = unpoison(self.view.lock());
        if let Some(b) = backend {
            v.backend = b;
        }
        v.kernel_rules = k.rules;
        v.policy_drop = k.policy_drop;
        v.applied_at = k.applied_at;
        v.generation += 1;
    }

    /// Seeds the preconfigured blocklists once, and loads every list's last good copy.
    pub(super) fn load_blocklists(&self, state: FwState) -> Result<(), FwError> {
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
            loaded.insert(def.name, Arc::new(ranges));
        }
        *unpoison(self.ranges.write()) = loaded;
        Ok(())
    }

    /// Installs a blocklist's new ranges: swaps its sets in the kernel (a country list instead
    /// rebuilds the table, since it feeds several kinds of rules), runs `persist`, and keeps the
    /// ranges in memory — all under the kernel lock. If `persist` fails after the kernel took the
    /// new ranges, the table is rebuilt from what is kept.
    pub(crate) fn install_ranges<R>(
        &self,
        name: &str,
        ranges: Arc<Ranges>,
        persist: impl FnOnce() -> Result<R, FwError>,
    ) -> Result<R, FwError> {
        let enabled = self.blocklist(name)?.enabled;
        let country = crate::blocklist::is_country(name);
        let mut k = self.kernel();
        let live = k.rules > 0 && enabled && !country;
        if live && let Some(nl) = k.nl.as_mut() {
            let mut batch = Batch::new(nl.next_seq());
            plan::swap_blocklist(&mut batch, &self.cfg.table, name, &ranges);
            nl.commit(batch)?;
        }
        let out = match persist() {
            Ok(out) => out,
            Err(e) => {
                if live && let Err(again) = self.apply_full(&mut k) {
                    tracing::error!(error = %again, "could not put the previous blocklist back");
                }
                return Err(e);
            }
        };
        unpoison(self.ranges.write()).insert(name.to_string(), ranges);
        if country {
            self.apply_full(&mut k)?;
        }
        Ok(out)
    }

    pub(crate) fn with_loaded<R>(&self, f: impl FnOnce(&BTreeMap<String, Arc<Ranges>>) -> R) -> R {
        let ranges = unpoison(self.ranges.read());
        f(&ranges)
    }

    pub(crate) fn forget_ranges(&self, name: &str) {
        unpoison(self.ranges.write()).remove(name);
    }

    /// Rebuilds the table from the store.
    pub(crate) fn reapply(&self) -> Result<(), FwError> {
        let mut k = self.kernel();
        self.apply_full(&mut k)
    }

    /// Marks the kernel as unknown when netlink gave no verdict, so upkeep rebuilds it.
    pub(crate) fn mark_stale(&self) {
        self.kernel().stale = true;
    }

    pub(super) fn policy_for(settings: &Settings, applied_at: i64, t: i64) -> bool {
        !(settings.testing && t >= applied_at + i64::from(settings.testing_interval) * 60)
    }

    /// Rebuilds the whole table from the store in one transaction (or removes it when the
    /// firewall is toggled off).
    pub(super) fn apply_full(&self, k: &mut Kernel) -> Result<(), FwError> {
        self.apply(k, false)
    }

    /// Applies a change of settings or rules: the chains alone when the table's sets stay as
    /// they are (no blocklist is sent again), else the whole table.
    pub(super) fn apply_change(&self, k: &mut Kernel) -> Result<(), FwError> {
        self.apply(k, true)
    }

    fn apply(&self, k: &mut Kernel, chains_only: bool) -> Result<(), FwError> {
        let Some(nl) = k.nl.as_mut() else {
            return Ok(());
        };
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let t = now();
        let mut batch = Batch::new(nl.next_seq());
        if !state.enabled {
            plan::remove(&mut batch, &self.cfg.table);
            nl.commit(batch)?;
            k.applied.clear();
            k.rules = 0;
            self.publish(k, None);
            return Ok(());
        }
        let black = self.entries(ListKind::Black)?;
        let white = self.entries(ListKind::White)?;
        let index = |v: &[FwEntry]| v.iter().map(|e| (e.net.clone(), e.clone())).collect();
        k.entries = [Some(index(&black)), Some(index(&white))];
        let lists = Self::all_contents(&black, &white, t);
        let defs = self.blocklists()?;
        let plan_lists = self.with_loaded(|loaded| ListPlan::new(&settings, &defs, loaded));
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
            .filter_map(|r| super::typed_rule(r).ok())
            .collect();
        let mut d = Desired {
            table: &self.cfg.table,
            policy_drop: true,
            settings: &settings,
            lists: &lists,
            rules: &rules,
            blocklists: &blocklists,
            drop_lists: &drop_lists,
            accept_lists: &accept_lists,
            allow_filter: plan_lists.filter.as_ref(),
            bogon_interface: settings.bogon.then_some(settings.bogon_interface.as_str()),
        };
        let shape = plan::shape(&d);
        let keep_sets = chains_only
            && k.rules > 0
            && !k.stale
            && k.shape.as_deref() == Some(shape.as_str())
            && k.applied == lists;
        // TESTING's clock keeps running from the last whole apply; a whole apply starts it again
        let applied_at = if keep_sets { k.applied_at } else { t };
        d.policy_drop = Self::policy_for(&settings, applied_at, t);
        let policy_drop = d.policy_drop;
        let count = if keep_sets {
            plan::chains(&mut batch, &d)
        } else {
            plan::full(&mut batch, &d, t)
        };
        let Some(nl) = k.nl.as_mut() else {
            return Ok(());
        };
        nl.commit(batch)?;
        k.shape = Some(shape);
        k.applied = lists;
        k.rules = count;
        k.stale = false;
        k.policy_drop = policy_drop;
        k.applied_at = applied_at;
        self.publish(k, None);
        Ok(())
    }

    /// Lifts TESTING's restrictive policy in the kernel.
    pub(super) fn lift_policy(&self, k: &mut Kernel) -> Result<(), FwError> {
        if let Some(nl) = k.nl.as_mut() {
            let mut batch = Batch::new(nl.next_seq());
            plan::policy(&mut batch, &self.cfg.table, false);
            nl.commit(batch)?;
        }
        k.policy_drop = false;
        self.publish(k, None);
        Ok(())
    }
}

/// Drops entries whose store write failed from the mirror and marks the kernel for a rebuild.
pub(super) fn forget_after_failed_write(k: &mut Kernel, kind: ListKind) {
    k.stale = true;
    k.entries[kind as usize] = None;
}
