//! The csf.conf-style settings: merged, validated as a whole, applied in one transaction.

use std::collections::BTreeMap;
use std::net::IpAddr;

use wispd_store::schema::FW_STATE;

use super::{Firewall, FirewallConfig, FwError, STATE_KEY};
use crate::lockout::{self, Origin};
use crate::model::{self, SettingError, Settings};

impl Firewall {
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
        let mut k = self.kernel();
        let mut state = self.state()?;
        let before = state.clone();
        let unknown: Vec<SettingError> = changes
            .keys()
            .filter(|k| !model::is_key(k))
            .map(|k| SettingError {
                key: k.clone(),
                message: "is not a setting wispd implements".into(),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(FwError::Settings(unknown));
        }
        let changed: Vec<String> = changes
            .iter()
            .filter(|(k, v)| state.settings.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        state.settings.extend(changes);
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        if !origin.force {
            // the stored settings were valid when stored; unparsable ones protect nothing
            if let (Ok(old), Some(caller)) = (
                Settings::parse(&before.settings),
                self.exposed_caller(&mut k, origin.caller)?,
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
        // Only ports changed (the usual change) and the table is as we left it: the port sets
        // get their new contents in one transaction, and no blocklist is sent again.
        let ports_only = !changed.is_empty()
            && changed
                .iter()
                .all(|k| model::PORT_KEYS.contains(&k.as_str()))
            && before.enabled == state.enabled;
        let fast = ports_only && k.rules > 0 && !k.stale;
        let table = self.cfg.table.clone();
        let applied = match k.nl.as_mut() {
            Some(nl) if fast => {
                let mut batch = crate::msg::Batch::new(nl.next_seq());
                crate::plan::replace_ports(&mut batch, &table, &settings);
                let sent = nl.commit(batch);
                if sent
                    .as_ref()
                    .is_err_and(crate::netlink::NetlinkError::is_unknown)
                {
                    k.stale = true;
                }
                if sent.is_ok() {
                    self.publish(&k, None);
                }
                sent.map_err(FwError::from)
            }
            _ => self.apply_change(&mut k),
        };
        if let Err(e) = applied {
            if let Err(restore) = self.store.write(|w| w.put(&FW_STATE, STATE_KEY, &before)) {
                tracing::error!(error = %restore, "could not restore the settings after a refused apply");
            }
            return Err(e);
        }
        // Country lists follow the applied settings: new ones become due, dropped ones go.
        for gone in self.sync_countries(&settings)? {
            self.forget_ranges(&gone);
        }
        Ok(state.settings)
    }
}

/// Refuses a settings change that newly shuts `caller` out of the API (see
/// [`lockout::settings_lockout`]).
pub(super) fn refuse_settings_lockout(
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
