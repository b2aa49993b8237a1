//! Basic rules (`/csf/rules`): stored with an id, validated into [`Rule`], applied with the table.

use std::net::IpAddr;

use wispd_store::StoreError;
use wispd_store::schema::{FW_RULES, FW_STATE, FwRule};

use super::{Firewall, FwError, STATE_KEY, display_net, now};
use crate::lockout;
use crate::model::{PortRange, parse_net};
use crate::plan::{Action, Direction, Proto, Rule};

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

impl Firewall {
    pub(super) fn rules(&self) -> Result<Vec<FwRule>, FwError> {
        Ok(self.store.read(|r| r.all(&FW_RULES))?)
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
        let mut k = self.kernel();
        if !req.force {
            let caller = self.exposed_caller(&mut k, req.caller)?;
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
        if let Err(e) = self.apply_change(&mut k) {
            self.store.write(|w| w.remove(&FW_RULES, stored.id))?;
            return Err(e);
        }
        Ok(stored)
    }

    pub fn delete_rule(&self, id: u64) -> Result<FwRule, FwError> {
        let mut k = self.kernel();
        let Some(rule) = self.store.read(|r| r.get(&FW_RULES, id))? else {
            return Err(FwError::NotFound(format!("No firewall rule with id {id}")));
        };
        self.store.write(|w| w.remove(&FW_RULES, id))?;
        if let Err(e) = self.apply_change(&mut k) {
            self.store.write(|w| w.put(&FW_RULES, id, &rule))?;
            return Err(e);
        }
        Ok(rule)
    }
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
