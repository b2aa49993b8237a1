//! Flood protection read back from the kernel: SYNFLOOD's limit and what it dropped.

use super::{Firewall, FwError};
use crate::netlink::Netlink;

/// `/csf/synflood/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynfloodStatus {
    /// `SYNFLOOD` is 1.
    pub enabled: bool,
    /// `SYNFLOOD_RATE` as CSF writes it (`100/s`) and `SYNFLOOD_BURST`.
    pub rate: String,
    pub burst: u32,
    /// The kernel's counter of SYNs dropped over the rate since the ruleset was last rebuilt
    /// (`None` when the firewall is off or the table is not there).
    pub dropped_packets: Option<u64>,
    pub dropped_bytes: Option<u64>,
}

impl Firewall {
    pub fn synflood_status(&self) -> Result<SynfloodStatus, FwError> {
        let s = self.parsed_settings()?;
        let (rate, burst) = match &s.synflood {
            Some(r) => (r.text(), r.burst),
            None => {
                // what it would be: the settings' values, parsed the same way when enabled
                let get = |k: &str| {
                    self.state()
                        .ok()
                        .and_then(|st| st.settings.get(k).cloned())
                        .unwrap_or_default()
                };
                (
                    get("SYNFLOOD_RATE"),
                    get("SYNFLOOD_BURST").parse().unwrap_or(0),
                )
            }
        };
        let counter = if self.config().kernel {
            Netlink::open()
                .ok()
                .and_then(|mut nl| {
                    nl.counter(&self.config().table, crate::plan::SYNFLOOD_COUNTER)
                        .ok()
                })
                .flatten()
        } else {
            None
        };
        Ok(SynfloodStatus {
            enabled: s.synflood.is_some(),
            rate,
            burst,
            dropped_packets: counter.map(|c| c.0),
            dropped_bytes: counter.map(|c| c.1),
        })
    }
}
