//! Open ports: TCP_IN/UDP_IN/TCP_OUT/UDP_OUT (and their IPv6 twins) as the ports endpoints see
//! them. A port change is a settings change.

use std::collections::BTreeMap;

use super::{Firewall, FwError};
use crate::lockout::Origin;
use crate::model::{self, PortRange, Settings};

#[derive(Debug, Clone)]
pub struct PortRequest {
    pub port: String,
    pub protocol: String,
    pub direction: String,
}

impl Firewall {
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
}
