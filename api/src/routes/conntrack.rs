//! `/csf/conntrack/*` (admin): the kernel's connection tracking table of wispd's network
//! namespace, counted and paged from a ctnetlink dump.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wispd_firewall::conntrack::{self, Conn, Filter};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Admin;
use crate::view::Data;

/// `GET /csf/conntrack/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConntrackStatus {
    /// The table could be read.
    pub available: bool,
    /// Connections in the table now.
    pub entries: u64,
    /// `nf_conntrack_max`: the table's size limit (null when /proc doesn't say).
    pub max: Option<u64>,
    /// Entries as a percentage of `max`.
    pub usage_percent: Option<f64>,
    pub ipv4: u64,
    pub ipv6: u64,
    /// By protocol (`tcp`, `udp`, `icmp`, `icmpv6`, ...).
    #[schema(example = json!({"tcp": 12, "udp": 3}))]
    pub by_protocol: BTreeMap<String, u64>,
    /// TCP connections by state (`ESTABLISHED`, `TIME_WAIT`, ...).
    #[schema(example = json!({"ESTABLISHED": 10, "TIME_WAIT": 2}))]
    pub tcp_states: BTreeMap<String, u64>,
    /// Connections that have seen traffic both ways long enough to be kept under pressure.
    pub assured: u64,
    /// `CT_LIMIT`: connections per remote address, counted every `CT_INTERVAL`.
    pub limit: CtLimitView,
}

/// The `CT_LIMIT` counter's settings and its last pass.
#[derive(Debug, Serialize, ToSchema)]
pub struct CtLimitView {
    /// `CT_LIMIT` > 0 (and lfd on).
    pub enabled: bool,
    pub limit: u32,
    pub interval: i64,
    /// Seconds a ban lasts; 0 = permanent (`CT_PERMANENT`).
    pub block_seconds: i64,
    pub states: Vec<String>,
    pub ports: Vec<u16>,
    pub skip_time_wait: bool,
    pub last_check_at: Option<String>,
    pub last_check_ms: Option<u64>,
    /// Connections the last pass counted.
    pub counted: u64,
    /// The remote address with the most connections in the last pass, and how many.
    pub top_ip: Option<String>,
    pub top_count: Option<u32>,
    /// Bans since start.
    pub bans_total: u64,
    pub last_error: Option<String>,
}

fn unavailable(e: wispd_firewall::NetlinkError) -> ApiError {
    ApiError::Unavailable(format!("The connection tracking table can't be read: {e}"))
}

/// The connection tracking table, counted.
#[utoipa::path(
    get,
    path = "/api/v1/csf/conntrack/status",
    operation_id = "csf_conntrack_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The table's counts", body = Data<ConntrackStatus>))
)]
pub async fn status(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<ConntrackStatus>>, ApiError> {
    let (settings, ct) =
        super::csf::on_fw(&state, |fw| Ok((fw.parsed_settings()?, fw.ct_state()))).await?;
    let s = tokio::task::spawn_blocking(conntrack::summary)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(unavailable)?;
    let c = settings.lfd.ct;
    let limit = CtLimitView {
        enabled: c.limit > 0 && settings.lfd.daemon,
        limit: c.limit,
        interval: c.interval,
        block_seconds: c.ttl,
        states: c.states,
        ports: c.ports,
        skip_time_wait: c.skip_time_wait,
        last_check_at: ct.last_check_at.map(crate::rfc3339),
        last_check_ms: ct.last_check_ms,
        counted: ct.counted,
        top_ip: ct.top.as_ref().map(|t| t.0.clone()),
        top_count: ct.top.map(|t| t.1),
        bans_total: ct.bans_total,
        last_error: ct.last_error,
    };
    let max = s.max.filter(|m| *m > 0);
    Ok(Json(Data::new(ConntrackStatus {
        available: true,
        entries: s.entries,
        max,
        usage_percent: max.map(|m| ((s.entries as f64) * 10_000.0 / m as f64).round() / 100.0),
        ipv4: s.ipv4,
        ipv6: s.ipv6,
        by_protocol: s
            .by_protocol
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        tcp_states: s
            .tcp_states
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        assured: s.assured,
        limit,
    })))
}

/// `GET /csf/conntrack/connections?ip=&port=&state=&protocol=&page=&per_page=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectionsQuery {
    /// Either end of the connection, either direction.
    #[param(example = "203.0.113.5")]
    ip: Option<String>,
    /// Either port of the original direction.
    #[param(example = 993)]
    port: Option<String>,
    /// A TCP state (`ESTABLISHED`, `TIME_WAIT`, ...), or `ASSURED` / `UNREPLIED`.
    #[param(example = "ESTABLISHED")]
    state: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, ...
    #[param(example = "tcp")]
    protocol: Option<String>,
    /// From 1 (default 1).
    #[param(example = 1)]
    page: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(example = 100)]
    per_page: Option<String>,
}

/// One direction of a connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct TupleView {
    pub src: String,
    pub dst: String,
    /// 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
}

/// One tracked connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionView {
    #[schema(example = "tcp")]
    pub protocol: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// As the first packet went.
    pub original: TupleView,
    /// As the answers come back (NAT shows here).
    pub reply: Option<TupleView>,
    /// TCP only.
    #[schema(example = "ESTABLISHED")]
    pub state: Option<String>,
    /// Seconds until the kernel forgets it.
    pub timeout: u32,
    pub assured: bool,
    /// Traffic has come back.
    pub replied: bool,
    pub mark: u32,
    /// Original direction, when `nf_conntrack_acct` counts.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

fn tuple(t: &conntrack::Tuple) -> TupleView {
    TupleView {
        src: t.src.to_string(),
        dst: t.dst.to_string(),
        sport: t.sport,
        dport: t.dport,
    }
}

fn view(c: Conn) -> ConnectionView {
    ConnectionView {
        protocol: c.protocol().to_string(),
        family: if c.orig.src.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
        original: tuple(&c.orig),
        reply: c.reply.as_ref().map(tuple),
        state: c.tcp_state.map(str::to_string),
        timeout: c.timeout,
        assured: c.assured,
        replied: c.seen_reply,
        mark: c.mark,
        packets: c.packets,
        bytes: c.bytes,
    }
}

/// A page of connections.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionView>,
    /// Connections matching the filters.
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
}

/// The table's connections, filtered and paged (in the kernel's order).
#[utoipa::path(
    get,
    path = "/api/v1/csf/conntrack/connections",
    operation_id = "csf_conntrack_connections",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(ConnectionsQuery),
    responses((status = 200, description = "A page of connections", body = Data<ConnectionList>))
)]
pub async fn connections(
    State(_s): State<AppState>,
    _a: Admin,
    Query(q): Query<ConnectionsQuery>,
) -> Result<Json<Data<ConnectionList>>, ApiError> {
    let ip = match q.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<std::net::IpAddr>()
                .map_err(|_| ApiError::Validation(format!("ip: {s:?} is not an IP address")))?,
        ),
    };
    let port = match q.port.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(_) => Some(super::query_number(
            q.port.as_deref(),
            "port",
            1u16,
            65535,
            1,
        )?),
    };
    let state = match q.state.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let s = s.to_ascii_uppercase();
            if !conntrack::TCP_STATES.contains(&s.as_str()) && s != "ASSURED" && s != "UNREPLIED" {
                return Err(ApiError::Validation(format!(
                    "state: {s:?} is none of {}, ASSURED, UNREPLIED",
                    conntrack::TCP_STATES.join(", ")
                )));
            }
            Some(s)
        }
    };
    let protocol = match q
        .protocol
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(p) => {
            let p = p.to_ascii_lowercase();
            Some(
                (0..=255u8)
                    .find(|n| conntrack::proto_name(*n) == p && p != "other")
                    .ok_or_else(|| {
                        ApiError::Validation(format!("protocol: {p:?} is not a protocol name"))
                    })?,
            )
        }
    };
    let page = super::query_number(q.page.as_deref(), "page", 1u64, 1_000_000, 1)?;
    let per_page = super::query_number(q.per_page.as_deref(), "per_page", 1u64, 1000, 100)?;
    let filter = Filter {
        ip,
        port,
        state,
        protocol,
    };
    let offset = (page - 1).saturating_mul(per_page);
    let limit = usize::try_from(per_page).unwrap_or(1000);
    let (list, total) =
        tokio::task::spawn_blocking(move || conntrack::list(&filter, offset, limit))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(unavailable)?;
    Ok(Json(Data::new(ConnectionList {
        connections: list.into_iter().map(view).collect(),
        total,
        page,
        per_page,
    })))
}

#[derive(OpenApi)]
#[openapi(paths(status, connections))]
pub struct ConntrackApi;
