//! Periodic upkeep: repairs the table when someone changed it from outside (tamper), rebuilds it
//! when the kernel may differ from the store, lifts TESTING's policy when its time is up, and
//! drops expired entries from the store.
//!
//! The tamper check dumps the table on a socket of its own without the kernel lock, so a slow
//! dump holds up no change; only a repair (itself a change) takes the lock.

use wispd_store::StoreError;

use super::{Backend, Firewall, FwError, ListKind, now, unpoison};
use crate::model::Settings;
use crate::netlink::Netlink;

/// What one upkeep tick found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// The table differed from what wispd last applied (or netlink gave no verdict) and was
    /// rebuilt: the reason.
    pub repaired: Option<String>,
    /// TESTING's restrictive policy was lifted.
    pub testing_lifted: bool,
    /// Expired entries dropped from the store.
    pub expired: usize,
}

impl Firewall {
    /// One upkeep pass (the binary calls it every few seconds).
    pub fn tick(&self) -> Result<Upkeep, FwError> {
        let t = now();
        let mut out = Upkeep::default();
        let state = self.state()?;
        let before = self.view();
        if state.enabled && before.backend == Backend::Available {
            let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
            let found = self.count_rules()?;
            let mut k = self.kernel();
            let unknown = k.nl.as_mut().is_some_and(Netlink::take_unknown);
            // a change between the dump and the lock explains any difference: look next tick
            let moved = self.view().generation != before.generation;
            if k.nl.is_none() {
                // started without a socket: nothing to check
            } else if k.stale || unknown {
                tracing::warn!(table = %self.cfg.table, "firewall table may differ from the store; rebuilding it");
                self.apply_full(&mut k)?;
                out.repaired = Some("the kernel may differ from the store (a change got no verdict or was not stored)".into());
            } else if !moved && found != Some(k.rules) {
                tracing::warn!(?found, expected = k.rules, table = %self.cfg.table, "firewall table was changed from outside; restoring it");
                self.apply_full(&mut k)?;
                out.repaired = Some(match found {
                    None => format!("table inet {} was deleted from outside", self.cfg.table),
                    Some(n) => format!(
                        "table inet {} was changed from outside ({n} rules where {} were applied)",
                        self.cfg.table, k.rules
                    ),
                });
            } else if let (false, Some(set)) = (moved, self.emptied_set(&k, &settings, t)) {
                tracing::warn!(%set, table = %self.cfg.table, "a firewall set was emptied or deleted from outside; restoring the table");
                self.apply_full(&mut k)?;
                out.repaired = Some(format!(
                    "set {set} of table inet {} was emptied or deleted from outside",
                    self.cfg.table
                ));
            } else if k.policy_drop && !Self::policy_for(&settings, k.applied_at, t) {
                tracing::warn!(
                    "TESTING: lifting the restrictive policy (set TESTING to 0 to keep it)"
                );
                self.lift_policy(&mut k)?;
                out.testing_lifted = true;
            }
        }
        if let Some(why) = &out.repaired
            && let Ok(s) = self.parsed_settings()
            && let Err(e) = self.alerts().raise(
                "tamper",
                None,
                None,
                format!("firewall table restored: {why}"),
                s.lfd.tamper_alert,
            )
        {
            tracing::error!(error = %e, "could not store a tamper alert");
        }
        if let Err(e) = self.portflood_alerts() {
            tracing::warn!(error = %e, "reading PORTFLOOD's blocks failed");
        }
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
                let mut k = self.kernel();
                out.expired += self.store.write(|w| {
                    let mut n = 0;
                    for key in &expired {
                        let still = w
                            .get(kind.table(), key.as_str())?
                            .is_some_and(|e| e.expires_at.is_some_and(|x| x <= t));
                        if still {
                            w.remove(kind.table(), key.as_str())?;
                            n += 1;
                        }
                    }
                    Ok::<_, StoreError>(n)
                })?;
                k.entries[kind as usize] = None;
            }
        }
        Ok(out)
    }

    /// The first set that should hold elements and holds none (or is gone): a `nft flush set`
    /// from outside leaves every rule in place, so the rule count can't see it. Each check
    /// reads only the start of a set's dump, on a socket of its own.
    fn emptied_set(&self, k: &super::Kernel, settings: &Settings, t: i64) -> Option<String> {
        let mut expected: Vec<String> = Vec::new();
        for (set, ivs) in &k.applied {
            // an element that times out soon may be gone already: only lasting ones count
            if ivs.iter().any(|iv| iv.expires.is_none_or(|x| x > t + 5)) {
                expected.push(set.name().to_string());
            }
        }
        for (key, name) in crate::plan::port_set_names() {
            if !settings.ports(key).is_empty() {
                expected.push(name.to_string());
            }
        }
        let defs = self.blocklists().ok()?;
        let plan = self.with_loaded(|loaded| super::ListPlan::new(settings, &defs, loaded));
        for (name, ranges) in &plan.sets {
            let (n4, n6) = crate::plan::blocklist_sets(name);
            if !ranges.v4.is_empty() {
                expected.push(n4);
            }
            if !ranges.v6.is_empty() {
                expected.push(n6);
            }
        }
        for set in expected {
            let Ok(mut nl) = Netlink::open() else {
                return None;
            };
            match nl.has_elements(&self.cfg.table, &set) {
                Ok(Some(true)) => {}
                Ok(Some(false) | None) => return Some(set),
                Err(_) => return None,
            }
        }
        None
    }

    /// The rules the kernel table holds now (`None`: no table), read on upkeep's own socket.
    fn count_rules(&self) -> Result<Option<usize>, FwError> {
        let mut slot = unpoison(self.upkeep_nl.lock());
        if slot.is_none() {
            *slot = Some(Netlink::open()?);
        }
        let Some(nl) = slot.as_mut() else {
            return Ok(None);
        };
        match nl.rule_count(&self.cfg.table) {
            Ok(n) => {
                nl.take_unknown();
                Ok(n)
            }
            Err(e) => {
                // a socket that lost its place in a dump is not reused
                *slot = None;
                Err(e.into())
            }
        }
    }
}
