//! `/api/v1/csf/*`: the CSF surface (lists, ports, settings, status) over the firewall engine.
//! Admin only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use wispd_firewall::blocklist::BlocklistRequest;
use wispd_firewall::{EntryRequest, Firewall, FwError, ListKind, Origin, PortRequest, Status};
use wispd_store::schema::{FwBlocklist, FwEntry};

use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339, unix_now};

/// Runs a blocking firewall operation off the async runtime.
pub(crate) async fn on_fw<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Firewall) -> Result<R, FwError> + Send + 'static,
) -> Result<R, ApiError> {
    let fw: Arc<Firewall> = state.firewall.clone();
    Ok(tokio::task::spawn_blocking(move || f(&fw)).await??)
}

fn display(net: &str) -> String {
    match net.parse::<ipnet::IpNet>() {
        Ok(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
        _ => net.to_string(),
    }
}

/// A `port` field: a number or a `"lo:hi"` string.
pub(crate) fn port_field(v: Option<Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::Validation(
            "Invalid value for field `port`: expected a number or \"lo:hi\"".into(),
        )),
    }
}

/// A port: one port as a number, or a range as a `"lo:hi"` string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(example = 8080)]
pub enum PortValue {
    /// One port.
    Number(u16),
    /// A range, `lo:hi` (e.g. `"6000:6100"`).
    Range(String),
}

/// A port as the API shows it: a number, or the range string.
pub(crate) fn port_json(p: &str) -> PortValue {
    p.parse::<u16>()
        .map_or_else(|_| PortValue::Range(p.to_string()), PortValue::Number)
}

/// A blacklist or whitelist entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntry {
    /// The address, or a CIDR for a network.
    #[schema(example = "192.168.1.100")]
    pub ip: String,
    #[schema(example = "bruteforce")]
    pub comment: String,
    /// Seconds it was added for; 0 = permanent.
    #[schema(example = 86400)]
    pub ttl: u64,
    /// RFC 3339.
    #[schema(example = "2026-05-11T10:15:03+00:00")]
    pub created_at: String,
    /// RFC 3339; `null` for a permanent entry.
    #[schema(required = true, example = "2026-05-12T10:15:03+00:00")]
    pub expires_at: Option<String>,
}

pub(crate) fn entry_view(e: &FwEntry) -> ListEntry {
    ListEntry {
        ip: display(&e.net),
        comment: e.comment.clone(),
        ttl: e.ttl,
        created_at: rfc3339(e.created_at),
        expires_at: e.expires_at.map(rfc3339),
    }
}

/// What the firewall filters by default.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The firewall is off: nothing is filtered.
    None,
    /// Incoming traffic not allowed by a port, list or rule is dropped.
    Drop,
    /// Incoming traffic is accepted (TESTING has lifted the drop policy).
    Accept,
}

/// The firewall's state (`/firewall/status`, and the answer to changes of it).
#[derive(Debug, Serialize, ToSchema)]
pub struct FirewallStatus {
    /// Filtering is switched on (`POST /firewall/toggle`).
    pub enabled: bool,
    /// The kernel backend can be used (wispd has CAP_NET_ADMIN).
    pub available: bool,
    /// Why the backend is unavailable; empty when it is available.
    #[schema(example = "")]
    pub reason: String,
    #[schema(example = "nftables (netlink)")]
    pub backend: &'static str,
    /// The nftables table wispd manages (and no other).
    #[schema(example = "inet wispd")]
    pub table: String,
    pub policy: Policy,
    /// csf.conf `TESTING`: the drop policy is lifted `TESTING_INTERVAL` minutes after a change.
    pub testing: bool,
    /// RFC 3339: when TESTING lifts the drop policy; `null` when it doesn't count down.
    #[schema(required = true, example = "2026-05-11T10:20:03+00:00")]
    pub testing_lifts_at: Option<String>,
    /// Rules in the planned ruleset.
    pub rules: usize,
    /// Rules the kernel table holds.
    pub kernel_rules: usize,
    pub blacklist_count: usize,
    pub whitelist_count: usize,
}

pub(crate) fn status_view(s: &Status) -> FirewallStatus {
    let (available, reason) = match &s.backend {
        wispd_firewall::Backend::Available => (true, String::new()),
        wispd_firewall::Backend::Unavailable(why) => (false, why.clone()),
    };
    FirewallStatus {
        enabled: s.enabled,
        available,
        reason,
        backend: "nftables (netlink)",
        table: format!("inet {}", s.table),
        policy: if !s.enabled {
            Policy::None
        } else if s.policy_drop {
            Policy::Drop
        } else {
            Policy::Accept
        },
        testing: s.testing,
        testing_lifts_at: s.testing_lifts_at.map(rfc3339),
        rules: s.rule_count,
        kernel_rules: s.kernel_rules,
        blacklist_count: s.blacklist_count,
        whitelist_count: s.whitelist_count,
    }
}

/// lfd's alerting (the details: `/csf/alerts-service/status`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsStatus {
    /// Where alerts are mailed (`LF_ALERT_TO`).
    #[schema(example = "")]
    pub email: String,
    /// lfd is on (`LF_DAEMON`).
    pub enabled: bool,
    /// lfd and the alert sender run.
    pub running: bool,
    /// Failed sends since start.
    pub failures: u64,
    /// Alerts not sent yet.
    pub unnotified: u64,
    pub smtp_configured: bool,
    pub webhook: bool,
    pub emails_sent: u64,
    pub webhooks_sent: u64,
}

/// The blocklists' refresh state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlocklistSummary {
    pub blocklists: Vec<BlocklistStatus>,
}

/// `GET /csf/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CsfStatus {
    pub alerts: AlertsStatus,
    /// Alerts raised in the last 24 hours.
    pub alerts_24h: u64,
    pub blacklist_count: usize,
    pub blocklist: BlocklistSummary,
    pub firewall: FirewallStatus,
}

/// The CSF overview: alerts, lists, blocklists and the firewall's state.
#[utoipa::path(
    get,
    path = "/api/v1/csf/status",
    operation_id = "csf_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The CSF overview", body = Data<CsfStatus>))
)]
pub async fn status(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<CsfStatus>>, ApiError> {
    let (s, lists, lfd, stats, unnotified, day, can_mail, running) = on_fw(&state, |fw| {
        let lfd = fw.parsed_settings()?.lfd;
        let alerts = fw.alerts();
        let unnotified = alerts.unnotified(!lfd.webhook.is_empty())?;
        Ok((
            fw.status()?,
            fw.user_blocklists()?,
            lfd,
            alerts.stats(),
            unnotified,
            alerts.last_day(),
            alerts.can_mail(),
            fw.lfd().running(),
        ))
    })
    .await?;
    Ok(Json(Data::new(CsfStatus {
        alerts: AlertsStatus {
            email: lfd.alert_to.clone(),
            enabled: lfd.daemon,
            running: running && stats.running,
            failures: stats.failures,
            unnotified,
            smtp_configured: can_mail,
            webhook: !lfd.webhook.is_empty(),
            emails_sent: stats.emails_sent,
            webhooks_sent: stats.webhooks_sent,
        },
        alerts_24h: day as u64,
        blacklist_count: s.blacklist_count,
        blocklist: BlocklistSummary {
            blocklists: lists.iter().map(blocklist_status).collect(),
        },
        firewall: status_view(&s),
    })))
}

/// `POST /csf/blacklist` and `/csf/whitelist`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewListEntry {
    /// An address or a CIDR.
    #[schema(example = "192.168.1.100")]
    ip: Option<String>,
    #[schema(example = "bruteforce")]
    comment: Option<String>,
    /// Seconds until it expires; 0 (the default) = permanent.
    #[schema(example = 86400)]
    ttl: Option<i64>,
    /// Blacklist it even if that shuts the caller out of the API.
    #[schema(example = false)]
    force: Option<bool>,
}

/// A list as the panel shows it: `{"data": […], "success": true}`, `data` first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"data": [], "success": true}))]
pub struct ListEntries {
    pub data: Vec<ListEntry>,
    /// Always `true`.
    pub success: bool,
}

async fn list(state: AppState, kind: ListKind) -> Result<Json<ListEntries>, ApiError> {
    let entries = on_fw(&state, move |fw| fw.list(kind)).await?;
    Ok(Json(ListEntries {
        data: entries.iter().map(entry_view).collect(),
        success: true,
    }))
}

async fn add(
    state: AppState,
    kind: ListKind,
    caller: SocketAddr,
    body: NewListEntry,
) -> Result<(StatusCode, Json<Data<ListEntry>>), ApiError> {
    let req = EntryRequest {
        ip: body.ip.unwrap_or_default(),
        comment: body.comment.unwrap_or_default(),
        ttl: body.ttl.unwrap_or(0),
        force: body.force.unwrap_or(false),
        caller: Some(caller.ip().to_canonical()),
    };
    let entry = on_fw(&state, move |fw| fw.add(kind, req)).await?;
    Ok((StatusCode::CREATED, Json(Data::new(entry_view(&entry)))))
}

async fn remove(
    state: AppState,
    kind: ListKind,
    ip: String,
) -> Result<Json<Data<ListEntry>>, ApiError> {
    let entry = on_fw(&state, move |fw| fw.remove(kind, &ip)).await?;
    Ok(Json(Data::new(entry_view(&entry))))
}

/// The blacklist: addresses and networks always dropped.
#[utoipa::path(
    get,
    path = "/api/v1/csf/blacklist",
    operation_id = "csf_blacklist_list",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every blacklist entry", body = ListEntries))
)]
pub async fn blacklist(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<ListEntries>, ApiError> {
    list(s, ListKind::Black).await
}

/// The whitelist: addresses and networks never dropped by a list.
#[utoipa::path(
    get,
    path = "/api/v1/csf/whitelist",
    operation_id = "csf_whitelist_list",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every whitelist entry", body = ListEntries))
)]
pub async fn whitelist(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<ListEntries>, ApiError> {
    list(s, ListKind::White).await
}

/// Blacklists an address or network, permanently or for `ttl` seconds.
#[utoipa::path(
    post,
    path = "/api/v1/csf/blacklist",
    operation_id = "csf_blacklist_add",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = NewListEntry,
    responses((status = 201, description = "Blacklisted", body = Data<ListEntry>))
)]
pub async fn blacklist_add(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<NewListEntry>,
) -> Result<(StatusCode, Json<Data<ListEntry>>), ApiError> {
    add(s, ListKind::Black, peer, b).await
}

/// Whitelists an address or network, permanently or for `ttl` seconds.
#[utoipa::path(
    post,
    path = "/api/v1/csf/whitelist",
    operation_id = "csf_whitelist_add",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = NewListEntry,
    responses((status = 201, description = "Whitelisted", body = Data<ListEntry>))
)]
pub async fn whitelist_add(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<NewListEntry>,
) -> Result<(StatusCode, Json<Data<ListEntry>>), ApiError> {
    add(s, ListKind::White, peer, b).await
}

/// Removes a blacklist entry.
#[utoipa::path(
    delete,
    path = "/api/v1/csf/blacklist/{ip}",
    operation_id = "csf_blacklist_remove",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params((
        "ip" = String,
        Path,
        description = "The entry's address or CIDR (the `/` of a prefix length may stay unescaped)",
        example = "192.168.1.100"
    )),
    responses((status = 200, description = "The removed entry", body = Data<ListEntry>))
)]
pub async fn blacklist_remove(
    State(s): State<AppState>,
    _a: Admin,
    Path(ip): Path<String>,
) -> Result<Json<Data<ListEntry>>, ApiError> {
    remove(s, ListKind::Black, ip).await
}

/// Removes a whitelist entry.
#[utoipa::path(
    delete,
    path = "/api/v1/csf/whitelist/{ip}",
    operation_id = "csf_whitelist_remove",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params((
        "ip" = String,
        Path,
        description = "The entry's address or CIDR (the `/` of a prefix length may stay unescaped)",
        example = "192.168.1.100"
    )),
    responses((status = 200, description = "The removed entry", body = Data<ListEntry>))
)]
pub async fn whitelist_remove(
    State(s): State<AppState>,
    _a: Admin,
    Path(ip): Path<String>,
) -> Result<Json<Data<ListEntry>>, ApiError> {
    remove(s, ListKind::White, ip).await
}

/// `GET /csf/check-ip?ip=…`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IpCheckQuery {
    /// The address to look up (required).
    #[param(required = true, example = "1.2.3.4")]
    ip: Option<String>,
}

/// A list entry an address matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct IpCheckMatch {
    /// `whitelist`, `blacklist` or `blocklist`.
    #[schema(example = "blacklist")]
    pub list: &'static str,
    /// The blocklist's name; `null` for the blacklist and whitelist.
    #[schema(required = true, example = json!(null))]
    pub name: Option<String>,
    /// The matching entry: an address, a CIDR, or a `first-last` range of a blocklist.
    #[schema(example = "1.2.3.0/24")]
    pub entry: String,
    #[schema(example = "bruteforce")]
    pub comment: String,
    /// Seconds until the entry expires; `null` when it is permanent.
    #[schema(required = true, example = 3600)]
    pub ttl_remaining: Option<i64>,
    /// RFC 3339; `null` when it is permanent.
    #[schema(required = true, example = "2026-05-11T11:15:03+00:00")]
    pub expires_at: Option<String>,
}

/// `GET /csf/check-ip`: where an address is listed, and whether it is dropped.
#[derive(Debug, Serialize, ToSchema)]
pub struct IpCheck {
    /// The address as checked (`::ffff:1.2.3.4` is checked as `1.2.3.4`).
    #[schema(example = "1.2.3.4")]
    pub ip: String,
    pub whitelisted: bool,
    pub blacklisted: bool,
    pub blocklisted: bool,
    /// Black- or blocklisted and not whitelisted: the whitelist wins.
    pub blocked: bool,
    pub matches: Vec<IpCheckMatch>,
}

/// Where an address is listed (whitelist, blacklist, blocklists) and whether it is dropped.
#[utoipa::path(
    get,
    path = "/api/v1/csf/check-ip",
    operation_id = "csf_check_ip",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(IpCheckQuery),
    responses((status = 200, description = "The address's listings", body = Data<IpCheck>))
)]
pub async fn check_ip(
    State(s): State<AppState>,
    _a: Admin,
    Query(q): Query<IpCheckQuery>,
) -> Result<Json<Data<IpCheck>>, ApiError> {
    let ip = q.ip.unwrap_or_default();
    let probe = ip.clone();
    let found = on_fw(&s, move |fw| fw.check(&probe)).await?;
    // the address as it was checked: `::ffff:1.2.3.4` is 1.2.3.4
    let ip = ip
        .trim()
        .parse::<std::net::IpAddr>()
        .map_or_else(|_| ip.trim().to_string(), |a| a.to_canonical().to_string());
    let t = unix_now();
    let whitelisted = found.iter().any(|m| m.list == "whitelist");
    let blacklisted = found.iter().any(|m| m.list == "blacklist");
    let blocklisted = found.iter().any(|m| m.list == "blocklist");
    let matches = found
        .into_iter()
        .map(|m| IpCheckMatch {
            list: m.list,
            name: m.name,
            entry: m.entry,
            comment: m.comment,
            ttl_remaining: m.expires_at.map(|e| (e - t).max(0)),
            expires_at: m.expires_at.map(rfc3339),
        })
        .collect();
    Ok(Json(Data::new(IpCheck {
        ip,
        whitelisted,
        blacklisted,
        blocklisted,
        // the whitelist wins: a whitelisted address is never dropped by a list
        blocked: (blacklisted || blocklisted) && !whitelisted,
        matches,
    })))
}

/// An open port (csf.conf `TCP_IN`, `UDP_OUT`, …).
#[derive(Debug, Serialize, ToSchema)]
pub struct CsfPort {
    pub port: PortValue,
    /// `tcp` or `udp`.
    #[schema(example = "tcp")]
    pub protocol: String,
    /// `in` or `out`.
    #[schema(example = "in")]
    pub direction: String,
}

/// The open ports, from csf.conf's `TCP_IN`, `TCP_OUT`, `UDP_IN` and `UDP_OUT` (and the v6 keys).
#[utoipa::path(
    get,
    path = "/api/v1/csf/ports",
    operation_id = "csf_ports_list",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every open port", body = Data<Vec<CsfPort>>))
)]
pub async fn ports(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<Vec<CsfPort>>>, ApiError> {
    let ports = on_fw(&s, |fw| fw.ports()).await?;
    let data = ports
        .iter()
        .map(|(port, proto, dir)| CsfPort {
            port: port_json(port),
            protocol: (*proto).to_string(),
            direction: (*dir).to_string(),
        })
        .collect();
    Ok(Json(Data::new(data)))
}

/// The open ports (the panel's path, with the trailing slash).
#[utoipa::path(
    get,
    path = "/api/v1/csf/ports/",
    operation_id = "csf_ports_list_slash",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every open port", body = Data<Vec<CsfPort>>))
)]
pub async fn ports_slash(
    s: State<AppState>,
    a: Admin,
) -> Result<Json<Data<Vec<CsfPort>>>, ApiError> {
    ports(s, a).await
}

/// `POST /csf/ports/`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewPort {
    /// A port number or a `"lo:hi"` range (required).
    #[schema(value_type = Option<PortValue>, example = 8080)]
    port: Option<Value>,
    /// `tcp` (the default) or `udp`.
    #[schema(example = "tcp")]
    protocol: Option<String>,
    /// `in` (the default) or `out`.
    #[schema(example = "in")]
    direction: Option<String>,
}

/// Opens a port (or range) in csf.conf's port lists.
#[utoipa::path(
    post,
    path = "/api/v1/csf/ports",
    operation_id = "csf_ports_add",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = NewPort,
    responses((status = 201, description = "Opened", body = Data<CsfPort>))
)]
pub async fn port_add(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<NewPort>,
) -> Result<(StatusCode, Json<Data<CsfPort>>), ApiError> {
    let port = port_field(b.port)?.unwrap_or_default();
    let req = PortRequest {
        port,
        protocol: b
            .protocol
            .unwrap_or_else(|| "tcp".into())
            .trim()
            .to_ascii_lowercase(),
        direction: b
            .direction
            .unwrap_or_else(|| "in".into())
            .trim()
            .to_ascii_lowercase(),
    };
    let view = CsfPort {
        port: port_json(&req.port),
        protocol: req.protocol.clone(),
        direction: req.direction.clone(),
    };
    on_fw(&s, move |fw| fw.add_port(req)).await?;
    Ok((StatusCode::CREATED, Json(Data::new(view))))
}

/// Opens a port (the panel's path, with the trailing slash).
#[utoipa::path(
    post,
    path = "/api/v1/csf/ports/",
    operation_id = "csf_ports_add_slash",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = NewPort,
    responses((status = 201, description = "Opened", body = Data<CsfPort>))
)]
pub async fn port_add_slash(
    s: State<AppState>,
    a: Admin,
    b: JsonBody<NewPort>,
) -> Result<(StatusCode, Json<Data<CsfPort>>), ApiError> {
    port_add(s, a, b).await
}

/// `DELETE /csf/ports/{port}`: which of the port's lists to close it in.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortFilter {
    /// Only `tcp` or `udp`; both when absent.
    #[param(example = "tcp")]
    protocol: Option<String>,
    /// Only `in` or `out`; both when absent.
    #[param(example = "in")]
    direction: Option<String>,
    /// `?force=true`: close it even if that shuts the caller out of the API.
    force: Option<bool>,
}

/// The lockout guards' view of a request: the caller's address as the firewall sees it.
pub(crate) fn origin(peer: SocketAddr, force: Option<bool>) -> Origin {
    Origin {
        caller: Some(peer.ip().to_canonical()),
        force: force.unwrap_or(false),
    }
}

/// `DELETE /csf/ports/{port}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortRemoved {
    /// The port or range as given.
    #[schema(example = "8080")]
    pub port: String,
    /// How many port lists (`TCP_IN`, `TCP6_IN`, …) it was closed in.
    #[schema(example = 2)]
    pub removed_from: usize,
}

/// Closes a port (or range) everywhere it is open, or only for `protocol`/`direction`.
#[utoipa::path(
    delete,
    path = "/api/v1/csf/ports/{port}",
    operation_id = "csf_ports_remove",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(
        ("port" = String, Path, description = "A port or a `lo:hi` range", example = "8080"),
        PortFilter
    ),
    responses((status = 200, description = "Closed", body = Data<PortRemoved>))
)]
pub async fn port_remove(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(port): Path<String>,
    Query(f): Query<PortFilter>,
) -> Result<Json<Data<PortRemoved>>, ApiError> {
    let origin = origin(peer, f.force);
    let proto = f.protocol.map(|p| p.to_ascii_lowercase());
    let dir = f.direction.map(|d| d.to_ascii_lowercase());
    if proto.as_deref().is_some_and(|p| p != "tcp" && p != "udp") {
        return Err(ApiError::Validation("protocol must be tcp or udp".into()));
    }
    if dir.as_deref().is_some_and(|d| d != "in" && d != "out") {
        return Err(ApiError::Validation("direction must be in or out".into()));
    }
    let p = port.clone();
    let removed = on_fw(&s, move |fw| {
        fw.remove_port(&p, proto.as_deref(), dir.as_deref(), origin)
    })
    .await?;
    Ok(Json(Data::new(PortRemoved {
        port,
        removed_from: removed,
    })))
}

/// The csf.conf settings wispd implements, by CSF's names, as CSF's strings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(example = json!({
    "DENY_IP_LIMIT": "200", "LF_BOGON": "0", "TCP_IN": "22,2083", "TESTING": "1", "TESTING_INTERVAL": "5"
}))]
pub struct CsfConfig(BTreeMap<String, String>);

/// The csf.conf settings.
#[utoipa::path(
    get,
    path = "/api/v1/csf/config",
    operation_id = "csf_config_get",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every setting", body = Data<CsfConfig>))
)]
pub async fn config(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<CsfConfig>>, ApiError> {
    let settings = on_fw(&s, |fw| fw.settings()).await?;
    Ok(Json(Data::new(CsfConfig(settings))))
}

/// `PUT /csf/config`: the csf.conf keys to change, and `force`. Taken as it comes and checked
/// here (see [`ConfigUpdate::into_changes`]) so that every bad key is named in one answer; its
/// schema is written by hand below.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ConfigUpdate(Value);

impl ConfigUpdate {
    /// `force`, and the changes as csf.conf strings (`true` is `"1"`, numbers as written).
    pub(crate) fn into_changes(self) -> Result<(Option<bool>, BTreeMap<String, String>), ApiError> {
        let Value::Object(mut map) = self.0 else {
            return Err(ApiError::Validation(
                "Invalid JSON body: expected an object of csf.conf keys".into(),
            ));
        };
        // `force` rides along with the csf.conf keys (none of which is lowercase)
        let force = match map.remove("force") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                return Err(ApiError::Validation(
                    "Invalid value for field `force`: expected true or false".into(),
                ));
            }
        };
        let mut changes = BTreeMap::new();
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
                _ => {
                    return Err(ApiError::Validation(format!(
                        "{k}: must be a string, number or boolean"
                    )));
                }
            };
            changes.insert(k, v);
        }
        Ok((force, changes))
    }
}

impl utoipa::PartialSchema for ConfigUpdate {
    fn schema() -> RefOr<Schema> {
        let value = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .description(Some(
                "The new value: a string as in csf.conf, a number, or a boolean (`true` is \"1\")",
            ));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "csf.conf keys to change (CSF's names, e.g. TCP_IN, TESTING, CC_DENY); every key \
                 is validated and nothing changes unless all are valid",
            ))
            .property(
                "force",
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                        Type::Boolean,
                        Type::Null,
                    ]))
                    .description(Some(
                        "Apply the change even if it shuts the caller out of the API (null: false)",
                    )),
            )
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
                value.build(),
            )))))
            .examples([serde_json::json!({"TCP_IN": "22,25,80,443,2083", "TESTING": "0"})])
            .into()
    }
}

impl ToSchema for ConfigUpdate {}

/// Changes csf.conf settings; every key is validated first and nothing changes on an error.
#[utoipa::path(
    put,
    path = "/api/v1/csf/config",
    operation_id = "csf_config_update",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = Option<ConfigUpdate>,
    responses((status = 200, description = "Every setting, as changed", body = Data<CsfConfig>))
)]
pub async fn config_update(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<ConfigUpdate>,
) -> Result<Json<Data<CsfConfig>>, ApiError> {
    let (force, changes) = body.into_changes()?;
    let origin = origin(peer, force);
    let settings = on_fw(&s, move |fw| fw.update_settings(changes, origin)).await?;
    Ok(Json(Data::new(CsfConfig(settings))))
}

/// Rebuilds the firewall table from the stored settings, lists and rules.
#[utoipa::path(
    post,
    path = "/api/v1/csf/reload",
    operation_id = "csf_reload",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The firewall's state after the reload", body = Data<FirewallStatus>))
)]
pub async fn reload(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<FirewallStatus>>, ApiError> {
    let st = on_fw(&s, |fw| fw.reload()).await?;
    Ok(Json(Data::new(status_view(&st))))
}

/// Applies the stored settings, lists and rules (the same as `POST /csf/reload`).
#[utoipa::path(
    post,
    path = "/api/v1/csf/apply",
    operation_id = "csf_apply",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The firewall's state after the reload", body = Data<FirewallStatus>))
)]
pub async fn apply(s: State<AppState>, a: Admin) -> Result<Json<Data<FirewallStatus>>, ApiError> {
    reload(s, a).await
}

/// A blocklist's refresh state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlocklistStatus {
    #[schema(example = "spamhaus_drop")]
    pub name: String,
    pub enabled: bool,
    /// Entries loaded at the last successful refresh.
    #[schema(example = 1611)]
    pub entry_count: u64,
    /// Why the last refresh failed; empty after a success.
    #[schema(example = "")]
    pub last_error: String,
    /// RFC 3339: the last successful refresh; `null` before the first.
    #[schema(required = true, example = "2026-05-11T10:15:03+00:00")]
    pub last_updated: Option<String>,
}

fn blocklist_status(d: &FwBlocklist) -> BlocklistStatus {
    BlocklistStatus {
        name: d.name.clone(),
        enabled: d.enabled,
        entry_count: d.entry_count,
        last_error: d.last_error.clone(),
        last_updated: d.last_updated.map(rfc3339),
    }
}

/// A blocklist: its source and refresh state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Blocklist {
    #[serde(flatten)]
    pub status: BlocklistStatus,
    /// Where it is fetched from: `http://`, `https://`, `file://` or an absolute path.
    #[schema(example = "https://www.spamhaus.org/drop/drop_v4.json")]
    pub url: String,
    /// Seconds between refreshes.
    #[schema(example = 86400)]
    pub interval: u64,
    /// At most this many entries are kept; 0 = all.
    #[schema(example = 0)]
    pub max: u64,
    /// Lines of the last fetch that were not an address or network.
    #[schema(example = 0)]
    pub invalid_lines: u64,
    /// RFC 3339: the last refresh attempt, successful or not; `null` before the first.
    #[schema(required = true, example = "2026-05-11T10:15:03+00:00")]
    pub last_attempt: Option<String>,
}

fn blocklist_view(d: &FwBlocklist) -> Blocklist {
    Blocklist {
        status: blocklist_status(d),
        url: d.url.clone(),
        interval: d.interval,
        max: d.max,
        invalid_lines: d.invalid_lines,
        last_attempt: d.last_attempt.map(rfc3339),
    }
}

/// The blocklists (country lists are managed by the CC_* settings and not among them).
#[utoipa::path(
    get,
    path = "/api/v1/csf/blocklists",
    operation_id = "csf_blocklists_list",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every blocklist", body = Data<Vec<Blocklist>>))
)]
pub async fn blocklists(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<Vec<Blocklist>>>, ApiError> {
    let lists = on_fw(&s, |fw| fw.user_blocklists()).await?;
    Ok(Json(Data::new(lists.iter().map(blocklist_view).collect())))
}

/// The blocklists (the panel's path, with the trailing slash).
#[utoipa::path(
    get,
    path = "/api/v1/csf/blocklists/",
    operation_id = "csf_blocklists_list_slash",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every blocklist", body = Data<Vec<Blocklist>>))
)]
pub async fn blocklists_slash(
    s: State<AppState>,
    a: Admin,
) -> Result<Json<Data<Vec<Blocklist>>>, ApiError> {
    blocklists(s, a).await
}

/// `POST /csf/blocklists` (`name` and `url` required) and `PUT /csf/blocklists/{name}` (absent
/// fields keep their value).
#[derive(Debug, Deserialize, ToSchema)]
pub struct BlocklistChange {
    /// 1-32 lowercase letters, digits or `_`; not starting with `cc_`. Can't be changed.
    #[schema(example = "spamhaus_drop")]
    name: Option<String>,
    /// `http://`, `https://`, `file://` or an absolute path.
    #[schema(example = "https://www.spamhaus.org/drop/drop_v4.json")]
    url: Option<String>,
    /// Seconds between refreshes, 300 to 31536000 (default 86400).
    #[schema(example = 86400)]
    interval: Option<i64>,
    /// Keep at most this many entries, 0 (the default) = all.
    #[schema(example = 0)]
    max: Option<i64>,
    /// Default `true`.
    #[schema(example = true)]
    enabled: Option<bool>,
}

impl From<BlocklistChange> for BlocklistRequest {
    fn from(b: BlocklistChange) -> Self {
        BlocklistRequest {
            name: b.name,
            url: b.url,
            interval: b.interval,
            max: b.max,
            enabled: b.enabled,
        }
    }
}

/// Creates a blocklist; it is fetched in the background.
#[utoipa::path(
    post,
    path = "/api/v1/csf/blocklists",
    operation_id = "csf_blocklists_create",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = BlocklistChange,
    responses((status = 201, description = "Created", body = Data<Blocklist>))
)]
pub async fn blocklist_add(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<BlocklistChange>,
) -> Result<(StatusCode, Json<Data<Blocklist>>), ApiError> {
    let req = BlocklistRequest::from(b);
    let d = on_fw(&s, move |fw| fw.create_blocklist(req)).await?;
    Ok((StatusCode::CREATED, Json(Data::new(blocklist_view(&d)))))
}

/// Creates a blocklist (the panel's path, with the trailing slash).
#[utoipa::path(
    post,
    path = "/api/v1/csf/blocklists/",
    operation_id = "csf_blocklists_create_slash",
    tag = "csf",
    security(("bearer" = ["admin"])),
    request_body = BlocklistChange,
    responses((status = 201, description = "Created", body = Data<Blocklist>))
)]
pub async fn blocklist_add_slash(
    s: State<AppState>,
    a: Admin,
    b: JsonBody<BlocklistChange>,
) -> Result<(StatusCode, Json<Data<Blocklist>>), ApiError> {
    blocklist_add(s, a, b).await
}

/// Changes a blocklist's source, interval, max or enabled flag.
#[utoipa::path(
    put,
    path = "/api/v1/csf/blocklists/{name}",
    operation_id = "csf_blocklists_update",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The blocklist's name", example = "spamhaus_drop")),
    request_body = Option<BlocklistChange>,
    responses((status = 200, description = "As changed", body = Data<Blocklist>))
)]
pub async fn blocklist_update(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<BlocklistChange>,
) -> Result<Json<Data<Blocklist>>, ApiError> {
    if b.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::Validation(
            "A blocklist cannot be renamed; delete it and create another".into(),
        ));
    }
    let req = BlocklistRequest::from(b);
    let d = on_fw(&s, move |fw| fw.update_blocklist(&name, req)).await?;
    Ok(Json(Data::new(blocklist_view(&d))))
}

/// Deletes a blocklist and drops its entries from the firewall.
#[utoipa::path(
    delete,
    path = "/api/v1/csf/blocklists/{name}",
    operation_id = "csf_blocklists_delete",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The blocklist's name", example = "spamhaus_drop")),
    responses((status = 200, description = "The deleted blocklist", body = Data<Blocklist>))
)]
pub async fn blocklist_delete(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
) -> Result<Json<Data<Blocklist>>, ApiError> {
    let d = on_fw(&s, move |fw| fw.delete_blocklist(&name)).await?;
    Ok(Json(Data::new(blocklist_view(&d))))
}

/// Fetches a blocklist now and answers when the refresh is done (or has failed: `last_error`).
#[utoipa::path(
    post,
    path = "/api/v1/csf/blocklists/{name}/refresh",
    operation_id = "csf_blocklists_refresh",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The blocklist's name", example = "spamhaus_drop")),
    responses((status = 200, description = "After the refresh", body = Data<Blocklist>))
)]
pub async fn blocklist_refresh(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
) -> Result<Json<Data<Blocklist>>, ApiError> {
    let n = name.clone();
    on_fw(&s, move |fw| fw.user_blocklist(&n)).await?;
    let d = wispd_firewall::blocklist::refresh(s.firewall.clone(), name).await?;
    Ok(Json(Data::new(blocklist_view(&d))))
}

/// What a CC_* setting does with a country.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountryRole {
    /// `CC_DENY`: dropped.
    Deny,
    /// `CC_ALLOW`: accepted like the whitelist.
    Allow,
    /// `CC_ALLOW_FILTER`: allowed while everywhere else is dropped.
    AllowFilter,
}

/// A country named by a CC_* setting, and its lists' state.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeoipCountry {
    /// ISO 3166 code, uppercase.
    #[schema(example = "ZZ")]
    pub country: String,
    pub roles: Vec<CountryRole>,
    /// Networks loaded (IPv4 and IPv6).
    #[schema(example = 1200)]
    pub entry_count: u64,
    /// Why its lists' last refresh failed, `; `-separated; empty when they didn't.
    #[schema(example = "")]
    pub last_error: String,
    /// RFC 3339: the older of its lists' last successful refreshes; `null` before both.
    #[schema(required = true, example = "2026-05-11T10:15:03+00:00")]
    pub last_updated: Option<String>,
}

/// `GET /csf/geoip/status`: the country filter (csf.conf `CC_*`).
#[derive(Debug, Serialize, ToSchema)]
pub struct GeoipStatus {
    /// Some CC_* setting names a country.
    pub enabled: bool,
    /// `CC_SOURCE`: the IPv4 zone-file URL template, `{cc}` for the country.
    #[schema(example = "https://www.ipdeny.com/ipblocks/data/aggregated/{cc}-aggregated.zone")]
    pub source: String,
    /// `CC6_SOURCE`: the IPv6 template.
    #[schema(example = "https://www.ipdeny.com/ipv6/ipaddresses/aggregated/{cc}-aggregated.zone")]
    pub source6: String,
    /// `CC_INTERVAL`: days between refreshes.
    #[schema(example = 7)]
    pub interval_days: u32,
    /// `CC_DENY`, uppercase.
    #[schema(example = json!(["ZZ"]))]
    pub deny: Vec<String>,
    /// `CC_ALLOW`.
    pub allow: Vec<String>,
    /// `CC_ALLOW_FILTER`.
    pub allow_filter: Vec<String>,
    /// CC_ALLOW_FILTER drops everything else now (its lists are loaded).
    pub allow_filter_active: bool,
    pub countries: Vec<GeoipCountry>,
}

/// The country filter: CC_* settings and the state of each country's lists.
#[utoipa::path(
    get,
    path = "/api/v1/csf/geoip/status",
    operation_id = "csf_geoip_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The country filter", body = Data<GeoipStatus>))
)]
pub async fn geoip_status(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<GeoipStatus>>, ApiError> {
    let (settings, lists, filter_active) = on_fw(&s, |fw| fw.geoip()).await?;
    let countries: Vec<GeoipCountry> = settings
        .countries()
        .iter()
        .map(|cc| {
            let mine: Vec<&FwBlocklist> = lists
                .iter()
                .filter(|d| d.name == format!("cc_{cc}") || d.name == format!("cc_{cc}_v6"))
                .collect();
            let mut roles = Vec::new();
            if settings.cc_deny.contains(cc) {
                roles.push(CountryRole::Deny);
            }
            if settings.cc_allow.contains(cc) {
                roles.push(CountryRole::Allow);
            }
            if settings.cc_allow_filter.contains(cc) {
                roles.push(CountryRole::AllowFilter);
            }
            let errors: Vec<&str> = mine
                .iter()
                .map(|d| d.last_error.as_str())
                .filter(|e| !e.is_empty())
                .collect();
            GeoipCountry {
                country: cc.to_ascii_uppercase(),
                roles,
                entry_count: mine.iter().map(|d| d.entry_count).sum::<u64>(),
                last_error: errors.join("; "),
                last_updated: mine
                    .iter()
                    .filter_map(|d| d.last_updated)
                    .min()
                    .map(rfc3339),
            }
        })
        .collect();
    let upper = |v: &[String]| v.iter().map(|c| c.to_ascii_uppercase()).collect::<Vec<_>>();
    Ok(Json(Data::new(GeoipStatus {
        enabled: !countries.is_empty(),
        source: settings.cc_source.clone(),
        source6: settings.cc6_source.clone(),
        interval_days: settings.cc_interval,
        deny: upper(&settings.cc_deny),
        allow: upper(&settings.cc_allow),
        allow_filter: upper(&settings.cc_allow_filter),
        allow_filter_active: filter_active,
        countries,
    })))
}

/// `GET /csf/bogon/status`: the bogon filter (csf.conf `LF_BOGON`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BogonStatus {
    /// `LF_BOGON`.
    pub enabled: bool,
    /// `BOGON_INTERFACE`: the interface whose incoming bogon sources are dropped.
    #[schema(example = "eth0")]
    pub interface: String,
    /// Enabled, and the firewall is on and available.
    pub active: bool,
    #[schema(example = "built-in (IANA special-purpose registries)")]
    pub source: &'static str,
    /// Ranges filtered (IPv4 and IPv6, merged).
    #[schema(example = 20)]
    pub entry_count: usize,
    /// The IPv4 bogon networks.
    #[schema(example = json!(["0.0.0.0/8", "10.0.0.0/8"]))]
    pub ipv4: Vec<&'static str>,
    /// The IPv6 bogon networks.
    #[schema(example = json!(["::/8", "fc00::/7"]))]
    pub ipv6: Vec<&'static str>,
}

/// The bogon filter: reserved and private sources dropped on one interface.
#[utoipa::path(
    get,
    path = "/api/v1/csf/bogon/status",
    operation_id = "csf_bogon_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The bogon filter", body = Data<BogonStatus>))
)]
pub async fn bogon_status(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<BogonStatus>>, ApiError> {
    let (settings, st) = on_fw(&s, |fw| Ok((fw.parsed_settings()?, fw.status()?))).await?;
    let ranges = wispd_firewall::plan::bogon_ranges();
    let available = matches!(st.backend, wispd_firewall::Backend::Available);
    Ok(Json(Data::new(BogonStatus {
        enabled: settings.bogon,
        interface: settings.bogon_interface.clone(),
        active: settings.bogon && available && st.enabled,
        source: "built-in (IANA special-purpose registries)",
        entry_count: ranges.len(),
        ipv4: wispd_firewall::model::BOGONS_V4.to_vec(),
        ipv6: wispd_firewall::model::BOGONS_V6.to_vec(),
    })))
}

/// The OpenAPI part of this group (merged into the whole document in `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    status,
    blacklist,
    blacklist_add,
    blacklist_remove,
    whitelist,
    whitelist_add,
    whitelist_remove,
    check_ip,
    ports,
    port_add,
    ports_slash,
    port_add_slash,
    port_remove,
    config,
    config_update,
    reload,
    apply,
    blocklists,
    blocklist_add,
    blocklists_slash,
    blocklist_add_slash,
    blocklist_update,
    blocklist_delete,
    blocklist_refresh,
    geoip_status,
    bogon_status,
))]
pub struct CsfApi;

#[cfg(test)]
mod tests {
    //! The typed views serialize exactly as the panel's shapes: field names, order, `null`s.

    use serde_json::json;
    use wispd_firewall::{Backend, Status};
    use wispd_store::schema::{FwBlocklist, FwEntry};

    use super::*;

    /// Same keys, same order, same values.
    fn same(view: impl Serialize, expected: Value) {
        let got = serde_json::to_string(&view).expect("serialize");
        assert_eq!(got, expected.to_string());
    }

    fn blocklist() -> FwBlocklist {
        FwBlocklist {
            name: "spamhaus_drop".into(),
            url: "https://www.spamhaus.org/drop/drop_v4.json".into(),
            interval: 86_400,
            max: 0,
            enabled: true,
            entry_count: 1611,
            invalid_lines: 2,
            last_error: String::new(),
            last_updated: Some(1_778_519_703),
            last_attempt: None,
            etag: Some("x".into()),
            last_modified: None,
        }
    }

    #[test]
    fn a_list_answer_has_data_before_success() {
        let entry = FwEntry {
            net: "192.168.1.100/32".into(),
            comment: "bruteforce".into(),
            ttl: 0,
            created_at: 0,
            expires_at: None,
        };
        let list = ListEntries {
            data: vec![entry_view(&entry)],
            success: true,
        };
        same(
            list,
            json!({"data": [{"ip": "192.168.1.100", "comment": "bruteforce", "ttl": 0,
                "created_at": "1970-01-01T00:00:00+00:00", "expires_at": null}], "success": true}),
        );
        let net = FwEntry {
            net: "10.0.0.0/8".into(),
            ttl: 60,
            expires_at: Some(60),
            ..entry
        };
        same(
            Data::new(entry_view(&net)),
            json!({"success": true, "data": {"ip": "10.0.0.0/8", "comment": "bruteforce",
                "ttl": 60, "created_at": "1970-01-01T00:00:00+00:00",
                "expires_at": "1970-01-01T00:01:00+00:00"}}),
        );
    }

    #[test]
    fn status_and_blocklist_views_keep_the_panel_order() {
        let st = Status {
            backend: Backend::Unavailable("no CAP_NET_ADMIN".into()),
            enabled: true,
            table: "wispd".into(),
            testing: true,
            testing_lifts_at: None,
            policy_drop: true,
            blacklist_count: 1,
            whitelist_count: 2,
            rule_count: 3,
            kernel_rules: 0,
        };
        same(
            status_view(&st),
            json!({"enabled": true, "available": false, "reason": "no CAP_NET_ADMIN",
                "backend": "nftables (netlink)", "table": "inet wispd", "policy": "drop",
                "testing": true, "testing_lifts_at": null, "rules": 3, "kernel_rules": 0,
                "blacklist_count": 1, "whitelist_count": 2}),
        );
        same(
            blocklist_view(&blocklist()),
            json!({"name": "spamhaus_drop", "enabled": true, "entry_count": 1611,
                "last_error": "", "last_updated": "2026-05-11T17:15:03+00:00",
                "url": "https://www.spamhaus.org/drop/drop_v4.json", "interval": 86400,
                "max": 0, "invalid_lines": 2, "last_attempt": null}),
        );
        same(
            BlocklistSummary {
                blocklists: vec![blocklist_status(&blocklist())],
            },
            json!({"blocklists": [{"name": "spamhaus_drop", "enabled": true,
                "entry_count": 1611, "last_error": "",
                "last_updated": "2026-05-11T17:15:03+00:00"}]}),
        );
    }

    #[test]
    fn ports_are_numbers_and_ranges_strings() {
        same(port_json("8080"), json!(8080));
        same(port_json("6000:6100"), json!("6000:6100"));
        same(
            CsfPort {
                port: port_json("25"),
                protocol: "tcp".into(),
                direction: "in".into(),
            },
            json!({"port": 25, "protocol": "tcp", "direction": "in"}),
        );
        same(
            PortRemoved {
                port: "25".into(),
                removed_from: 2,
            },
            json!({"port": "25", "removed_from": 2}),
        );
    }

    #[test]
    fn geoip_roles_are_snake_case() {
        same(
            vec![
                CountryRole::Deny,
                CountryRole::Allow,
                CountryRole::AllowFilter,
            ],
            json!(["deny", "allow", "allow_filter"]),
        );
    }

    #[test]
    fn config_update_keeps_its_messages() {
        let bad = |v: Value| match ConfigUpdate(v).into_changes() {
            Err(ApiError::Validation(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(json!(5)),
            "Invalid JSON body: expected an object of csf.conf keys"
        );
        assert_eq!(
            bad(json!({"force": "yes"})),
            "Invalid value for field `force`: expected true or false"
        );
        assert_eq!(
            bad(json!({"TCP_IN": [22]})),
            "TCP_IN: must be a string, number or boolean"
        );
        let (force, changes) =
            ConfigUpdate(json!({"force": true, "TESTING": false, "DENY_IP_LIMIT": 2}))
                .into_changes()
                .expect("valid");
        assert_eq!(force, Some(true));
        assert_eq!(
            changes,
            BTreeMap::from([
                ("DENY_IP_LIMIT".to_string(), "2".to_string()),
                ("TESTING".to_string(), "0".to_string()),
            ])
        );
    }
}
