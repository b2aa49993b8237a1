//! Lockout guards: changes that would shut the API's callers (or the server itself) out, which
//! are refused unless the request carries `"force": true`. Pure: the engine hands in what it
//! knows (the API port, the caller when the firewall filters it) and turns a reason into a 400.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{self, Settings};
use crate::plan::{Action, Direction, Proto, Rule};

/// Where a change comes from, for the lockout guards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// The API caller's address; `None` when the change doesn't come over the network.
    pub caller: Option<IpAddr>,
    /// `"force": true`: the caller accepts the lockout.
    pub force: bool,
}

/// How far a ruleset keeps one caller from opening new connections to the API port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shutout {
    Open,
    /// Until TESTING lifts the policy: TESTING_INTERVAL minutes after every full apply, and a
    /// settings change is one, so even TESTING 1 locks the caller out for that long.
    UntilTestingLifts,
    /// TESTING 0: the drop policy stays.
    ForGood,
}

fn shutout(settings: &Settings, enabled: bool, api_port: u16, caller: IpAddr) -> Shutout {
    if !enabled || model::covers(settings.ports(port_key(caller)), api_port) {
        Shutout::Open
    } else if settings.testing {
        Shutout::UntilTestingLifts
    } else {
        Shutout::ForGood
    }
}

/// The port list that admits `caller`'s TCP connections: the chains match IPv6 packets against
/// the `6` keys only.
fn port_key(caller: IpAddr) -> &'static str {
    if caller.is_ipv6() {
        "TCP6_IN"
    } else {
        "TCP_IN"
    }
}

/// Why going from `before` to `after` (settings, firewall enabled) shuts `caller` out of the API
/// listening on `api_port`, if it does. Only a change for the worse counts: settings that already
/// kept the caller out (forced earlier) don't block unrelated changes.
pub fn settings_lockout(
    before: (&Settings, bool),
    after: (&Settings, bool),
    api_port: u16,
    caller: IpAddr,
) -> Option<String> {
    // PORTFLOOD and CONNLIMIT on the API port count the panel's own connections (each request
    // may be one): a low limit blocks or resets the caller itself
    let guards = |s: &Settings| {
        (
            s.portflood
                .iter()
                .find(|p| p.port == api_port && !p.udp)
                .copied(),
            s.connlimit.iter().find(|c| c.port == api_port).copied(),
        )
    };
    let (flood, conn) = guards(after.0);
    if after.1 && flood.is_some() && flood != guards(before.0).0 {
        return Some(format!(
            "PORTFLOOD would limit new connections to the API port {api_port} from your address              {caller} (each API request may be one): whitelist it first"
        ));
    }
    if after.1 && conn.is_some() && conn != guards(before.0).1 {
        return Some(format!(
            "CONNLIMIT would limit your address {caller}'s connections to the API port {api_port}:              whitelist it first"
        ));
    }
    let was = shutout(before.0, before.1, api_port, caller);
    let now = shutout(after.0, after.1, api_port, caller);
    if now <= was {
        return None;
    }
    let key = port_key(caller);
    Some(match now {
        Shutout::ForGood => format!(
            "{key} would not include the API port {api_port} while TESTING is 0, so your address \
             {caller} could no longer reach the API"
        ),
        _ => format!(
            "{key} would not include the API port {api_port}, so your address {caller} could not \
             reach the API until TESTING lifts the policy ({} minutes after every change)",
            after.0.testing_interval
        ),
    })
}

fn everyone(peer: Option<&IpNet>) -> Option<String> {
    match peer {
        None => Some("every address".into()),
        Some(n) if model::is_broad(n) => Some(format!(
            "{n}, wider than /{} (a large part of the internet)",
            model::min_prefix(n)
        )),
        Some(_) => None,
    }
}

/// Why adding `rule` shuts API clients (or the server's own outgoing traffic) out, if it does.
/// `caller` is the API caller's address when the firewall filters it (not loopback, not
/// whitelisted: those are accepted before any basic rule).
pub fn rule_lockout(rule: &Rule, api_port: Option<u16>, caller: Option<IpAddr>) -> Option<String> {
    let action = match rule.action {
        Action::Accept => return None,
        Action::Drop => "DROP",
        Action::Reject => "REJECT",
    };
    match rule.direction {
        Direction::In => {
            if !matches!(rule.proto, Proto::Tcp | Proto::All) {
                return None;
            }
            let ports = match (rule.port, api_port) {
                (None, _) => "every TCP port".to_string(),
                (Some(p), Some(api)) if model::covers(&[p], api) => {
                    format!("the API port {api}")
                }
                _ => return None,
            };
            if let Some(who) = everyone(rule.peer.as_ref()) {
                return Some(format!(
                    "this {action} rule matches {ports} from {who}, which shuts every API client out"
                ));
            }
            match (caller, rule.peer) {
                (Some(c), Some(n)) if n.contains(&c) => Some(format!(
                    "this {action} rule matches {ports} from your own address {c}, which shuts you \
                     out of the API"
                )),
                _ => None,
            }
        }
        // Replies to an API caller ride on its established connection, accepted before any basic
        // rule; what an OUTPUT rule can break is the server's own traffic to everyone.
        Direction::Out => {
            if rule.port.is_some() || rule.proto == Proto::Icmp {
                return None;
            }
            let what = match rule.proto {
                Proto::Tcp => "TCP traffic",
                Proto::Udp => "UDP traffic",
                _ => "traffic",
            };
            let who = everyone(rule.peer.as_ref())?;
            Some(format!(
                "this {action} rule matches all outgoing {what} to {who}, which cuts the server \
                 off (no DNS, no mail delivery, no blocklist downloads)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{PortRange, default_settings, parse_net};

    fn settings(changes: &[(&str, &str)]) -> Settings {
        let mut m: BTreeMap<String, String> = default_settings(&[2083]);
        for (k, v) in changes {
            m.insert((*k).into(), (*v).into());
        }
        Settings::parse(&m).expect("valid settings")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn closing_the_api_port_to_the_caller_is_a_lockout() {
        let open = settings(&[("TESTING", "0")]);
        let closed = settings(&[("TESTING", "0"), ("TCP_IN", "22")]);
        let v4 = ip("203.0.113.5");
        let why = settings_lockout((&open, true), (&closed, true), 2083, v4).expect("lockout");
        assert!(why.contains("TCP_IN") && why.contains("2083") && why.contains("203.0.113.5"));
        // an IPv6 caller comes in through TCP6_IN, which still has the port
        assert_eq!(
            settings_lockout((&open, true), (&closed, true), 2083, ip("2001:db8::5")),
            None
        );
        let closed6 = settings(&[("TESTING", "0"), ("TCP6_IN", "22")]);
        let why = settings_lockout((&open, true), (&closed6, true), 2083, ip("2001:db8::5"));
        assert!(why.expect("lockout").contains("TCP6_IN"));
        // a range that covers the port keeps it open
        let ranged = settings(&[("TESTING", "0"), ("TCP_IN", "22,2000:3000")]);
        assert_eq!(
            settings_lockout((&open, true), (&ranged, true), 2083, v4),
            None
        );
    }

    #[test]
    fn testing_1_still_locks_out_and_turning_it_off_makes_it_permanent() {
        let open = settings(&[]);
        let closed_testing = settings(&[("TCP_IN", "22")]);
        let closed_for_good = settings(&[("TCP_IN", "22"), ("TESTING", "0")]);
        let v4 = ip("203.0.113.5");
        let why = settings_lockout((&open, true), (&closed_testing, true), 2083, v4);
        assert!(why.expect("lockout").contains("until TESTING lifts"));
        let why = settings_lockout((&closed_testing, true), (&closed_for_good, true), 2083, v4);
        assert!(why.expect("lockout").contains("TESTING is 0"));
        // nothing gets worse: an unrelated change to settings that already shut the caller out
        assert_eq!(
            settings_lockout((&closed_for_good, true), (&closed_for_good, true), 2083, v4),
            None
        );
        // a disabled firewall shuts nobody out; enabling it with the port closed does
        assert_eq!(
            settings_lockout((&open, true), (&closed_for_good, false), 2083, v4),
            None
        );
        assert!(
            settings_lockout(
                (&closed_for_good, false),
                (&closed_for_good, true),
                2083,
                v4
            )
            .is_some()
        );
    }

    fn rule(direction: Direction, proto: Proto, port: Option<&str>, peer: Option<&str>) -> Rule {
        Rule {
            direction,
            proto,
            port: port.and_then(PortRange::parse),
            peer: peer.and_then(parse_net),
            action: Action::Drop,
        }
    }

    #[test]
    fn drop_rules_on_the_api_port_for_the_caller_or_everyone_are_lockouts() {
        let caller = Some(ip("203.0.113.5"));
        let api = Some(2083);
        let locks = |r: &Rule| rule_lockout(r, api, caller);
        let tcp = Proto::Tcp;
        let inp = Direction::In;
        // every address, on the API port or on every port
        assert!(locks(&rule(inp, tcp, Some("2083"), None)).is_some());
        assert!(locks(&rule(inp, tcp, Some("2000:3000"), None)).is_some());
        assert!(locks(&rule(inp, tcp, None, Some("0.0.0.0/0"))).is_some());
        assert!(locks(&rule(inp, Proto::All, None, Some("::/0"))).is_some());
        assert!(locks(&rule(inp, tcp, Some("2083"), Some("128.0.0.0/1"))).is_some());
        // the caller's own address, or a network around it
        let why = locks(&rule(inp, tcp, Some("2083"), Some("203.0.113.5"))).expect("lockout");
        assert!(why.contains("your own address 203.0.113.5"), "{why}");
        assert!(locks(&rule(inp, Proto::All, None, Some("203.0.113.0/24"))).is_some());
        assert!(locks(&rule(inp, tcp, None, Some("::ffff:203.0.113.5"))).is_some());
        // not the API port, another address, UDP, or ACCEPT: fine
        assert_eq!(locks(&rule(inp, tcp, Some("8088"), None)), None);
        assert_eq!(
            locks(&rule(inp, tcp, Some("2083"), Some("198.51.100.1"))),
            None
        );
        assert_eq!(locks(&rule(inp, Proto::Udp, None, Some("0.0.0.0/0"))), None);
        let mut accept = rule(inp, tcp, Some("2083"), None);
        accept.action = Action::Accept;
        assert_eq!(locks(&accept), None);
        // a caller the firewall doesn't filter (loopback, whitelisted) is passed in as None
        let own = rule(inp, tcp, Some("2083"), Some("203.0.113.5"));
        assert_eq!(rule_lockout(&own, api, None), None);
    }

    #[test]
    fn output_drops_to_everyone_cut_the_server_off() {
        let out = Direction::Out;
        let locks = |r: &Rule| rule_lockout(r, Some(2083), Some(ip("203.0.113.5")));
        let why = locks(&rule(out, Proto::All, None, Some("0.0.0.0/0"))).expect("lockout");
        assert!(why.contains("all outgoing traffic to 0.0.0.0/0"), "{why}");
        assert!(locks(&rule(out, Proto::All, None, Some("::/0"))).is_some());
        assert!(locks(&rule(out, Proto::Udp, None, None)).is_some());
        // one port, one destination, or ICMP: a deliberate, narrow block
        assert_eq!(locks(&rule(out, Proto::Tcp, Some("25"), None)), None);
        assert_eq!(
            locks(&rule(out, Proto::All, None, Some("203.0.113.5"))),
            None
        );
        assert_eq!(locks(&rule(out, Proto::Icmp, None, None)), None);
    }
}
