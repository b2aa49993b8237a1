//! `/csf/synflood/status` (admin): SYNFLOOD's kernel limit and what it dropped.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::csf::on_fw;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::Admin;
use crate::view::Data;

/// `GET /csf/synflood/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SynfloodView {
    /// `SYNFLOOD` is 1: new TCP connections over the rate are dropped, in all.
    pub enabled: bool,
    /// `SYNFLOOD_RATE` (`100/s`).
    #[schema(example = "100/s")]
    pub rate: String,
    /// `SYNFLOOD_BURST`.
    pub burst: u32,
    /// SYNs the kernel dropped over the rate since the ruleset was last rebuilt (null when the
    /// firewall is off).
    pub dropped_packets: Option<u64>,
    pub dropped_bytes: Option<u64>,
}

/// SYNFLOOD's settings and the kernel's drop counter.
#[utoipa::path(
    get,
    path = "/api/v1/csf/synflood/status",
    operation_id = "csf_synflood_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "SYNFLOOD", body = Data<SynfloodView>))
)]
pub async fn synflood(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<SynfloodView>>, ApiError> {
    let s = on_fw(&state, |fw| fw.synflood_status()).await?;
    Ok(Json(Data::new(SynfloodView {
        enabled: s.enabled,
        rate: s.rate,
        burst: s.burst,
        dropped_packets: s.dropped_packets,
        dropped_bytes: s.dropped_bytes,
    })))
}

/// A source PORTFLOOD blocks now.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedSource {
    pub ip: String,
    /// Seconds left; every new attempt starts the window again.
    pub expires_in: Option<u64>,
}

/// One PORTFLOOD entry (`port;proto;hits;seconds`) and whom it blocks now.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortfloodView {
    pub port: u16,
    #[schema(example = "tcp")]
    pub protocol: String,
    pub hits: u32,
    pub seconds: u32,
    /// At most 1000; `blocked_count` counts them all.
    pub blocked: Vec<BlockedSource>,
    pub blocked_count: usize,
}

/// One CONNLIMIT entry (`port;limit`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnlimitView {
    pub port: u16,
    pub limit: u32,
    /// Source addresses with connections to the port that the kernel is counting now.
    pub sources: usize,
}

/// `GET /csf/portflood/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortfloodStatusView {
    /// PORTFLOOD or CONNLIMIT has an entry.
    pub enabled: bool,
    pub portflood: Vec<PortfloodView>,
    pub connlimit: Vec<ConnlimitView>,
    /// The kernel's sets were read (false when the firewall is off).
    pub applied: bool,
}

/// PORTFLOOD and CONNLIMIT: their entries and the sources in the kernel's sets now.
#[utoipa::path(
    get,
    path = "/api/v1/csf/portflood/status",
    operation_id = "csf_portflood_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "PORTFLOOD and CONNLIMIT", body = Data<PortfloodStatusView>))
)]
pub async fn portflood(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<PortfloodStatusView>>, ApiError> {
    let s = on_fw(&state, |fw| fw.portflood_status()).await?;
    Ok(Json(Data::new(PortfloodStatusView {
        enabled: !s.portflood.is_empty() || !s.connlimit.is_empty(),
        portflood: s
            .portflood
            .into_iter()
            .map(|p| PortfloodView {
                port: p.port,
                protocol: p.protocol.to_string(),
                hits: p.hits,
                seconds: p.seconds,
                blocked: p
                    .blocked
                    .into_iter()
                    .map(|(ip, ms)| BlockedSource {
                        ip: ip.to_string(),
                        expires_in: ms.map(|m| m.div_ceil(1000)),
                    })
                    .collect(),
                blocked_count: p.blocked_count,
            })
            .collect(),
        connlimit: s
            .connlimit
            .into_iter()
            .map(|c| ConnlimitView {
                port: c.port,
                limit: c.limit,
                sources: c.sources,
            })
            .collect(),
        applied: s.applied,
    })))
}

/// `PS_*` as parsed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortscanSettings {
    /// `PS_INTERVAL` (0 = off).
    pub interval: i64,
    pub limit: u32,
    /// `PS_PORTS` ranges (`0:65535`) and whether ICMP echo requests count.
    pub ports: Vec<String>,
    pub icmp: bool,
    pub diversity: u32,
    /// Seconds a ban lasts; 0 = permanent (`PS_PERMANENT`).
    pub block_seconds: i64,
    pub email_alert: bool,
}

/// `GET /csf/portscan/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortscanView {
    pub enabled: bool,
    /// The NFLOG group is bound and read.
    pub running: bool,
    /// The NFLOG group the kernel logs candidates to.
    pub group: u16,
    pub settings: PortscanSettings,
    /// Logged packets lfd has counted since start.
    pub packets_seen: u64,
    /// Sources with hits in their window now.
    pub tracked: usize,
    pub bans_total: u64,
    pub last_ban_ip: Option<String>,
    pub last_ban_at: Option<String>,
    pub last_error: Option<String>,
}

/// Port-scan detection: its settings and what it has seen and banned.
#[utoipa::path(
    get,
    path = "/api/v1/csf/portscan/status",
    operation_id = "csf_portscan_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Port-scan detection", body = Data<PortscanView>))
)]
pub async fn portscan(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<PortscanView>>, ApiError> {
    let (s, st) = on_fw(&state, |fw| {
        Ok((fw.parsed_settings()?, fw.portscan_state()))
    })
    .await?;
    let ps = s.lfd.ps;
    Ok(Json(Data::new(PortscanView {
        enabled: ps.interval > 0 && s.lfd.daemon,
        running: st.running,
        group: wispd_firewall::plan::PORTSCAN_GROUP,
        settings: PortscanSettings {
            interval: ps.interval,
            limit: ps.limit,
            ports: ps.ports.iter().map(ToString::to_string).collect(),
            icmp: ps.icmp,
            diversity: ps.diversity,
            block_seconds: ps.ttl,
            email_alert: ps.email_alert,
        },
        packets_seen: st.packets_seen,
        tracked: st.tracked,
        bans_total: st.bans_total,
        last_ban_ip: st.last_ban.as_ref().map(|b| b.0.clone()),
        last_ban_at: st.last_ban.map(|b| crate::rfc3339(b.1)),
        last_error: st.last_error,
    })))
}

#[derive(OpenApi)]
#[openapi(paths(synflood, portflood, portscan))]
pub struct ProtectApi;
