//! `/api/v1/csf/*`: the CSF surface (lists, ports, settings, status) over the firewall engine.
//! Admin only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wispd_firewall::blocklist::BlocklistRequest;
use wispd_firewall::{EntryRequest, Firewall, FwError, ListKind, Origin, PortRequest, Status};
use wispd_store::schema::{FwBlocklist, FwEntry};

use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
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

/// A port as the API shows it: a number, or the range string.
pub(crate) fn port_json(p: &str) -> Value {
    p.parse::<u16>().map_or_else(|_| json!(p), |n| json!(n))
}

pub(crate) fn entry_view(e: &FwEntry) -> Value {
    json!({
        "ip": display(&e.net),
        "comment": e.comment,
        "ttl": e.ttl,
        "created_at": rfc3339(e.created_at),
        "expires_at": e.expires_at.map(rfc3339),
    })
}

pub(crate) fn status_view(s: &Status) -> Value {
    let (available, reason) = match &s.backend {
        wispd_firewall::Backend::Available => (true, String::new()),
        wispd_firewall::Backend::Unavailable(why) => (false, why.clone()),
    };
    json!({
        "enabled": s.enabled,
        "available": available,
        "reason": reason,
        "backend": "nftables (netlink)",
        "table": format!("inet {}", s.table),
        "policy": if !s.enabled { "none" } else if s.policy_drop { "drop" } else { "accept" },
        "testing": s.testing,
        "testing_lifts_at": s.testing_lifts_at.map(rfc3339),
        "rules": s.rule_count,
        "kernel_rules": s.kernel_rules,
        "blacklist_count": s.blacklist_count,
        "whitelist_count": s.whitelist_count,
    })
}

pub async fn status(State(state): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let (s, lists) = on_fw(&state, |fw| Ok((fw.status()?, fw.user_blocklists()?))).await?;
    Ok(Json(json!({
        "success": true,
        "data": {
            // lfd alerting is not built yet: reported as such, not invented
            "alerts": {
                "email": "", "enabled": false, "running": false, "failures": 0, "unnotified": 0,
                "smtp_configured": false, "webhook": false, "emails_sent": 0, "webhooks_sent": 0,
            },
            "alerts_24h": 0,
            "blacklist_count": s.blacklist_count,
            "blocklist": { "blocklists": lists.iter().map(blocklist_status).collect::<Vec<_>>() },
            "firewall": status_view(&s),
        }
    })))
}

#[derive(Debug, Deserialize)]
pub struct EntryBody {
    ip: Option<String>,
    comment: Option<String>,
    ttl: Option<i64>,
    force: Option<bool>,
}

async fn list(state: AppState, kind: ListKind) -> Result<Json<Value>, ApiError> {
    let entries = on_fw(&state, move |fw| fw.list(kind)).await?;
    let data: Vec<Value> = entries.iter().map(entry_view).collect();
    Ok(Json(json!({ "data": data, "success": true })))
}

async fn add(
    state: AppState,
    kind: ListKind,
    caller: SocketAddr,
    body: EntryBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = EntryRequest {
        ip: body.ip.unwrap_or_default(),
        comment: body.comment.unwrap_or_default(),
        ttl: body.ttl.unwrap_or(0),
        force: body.force.unwrap_or(false),
        caller: Some(caller.ip().to_canonical()),
    };
    let entry = on_fw(&state, move |fw| fw.add(kind, req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": entry_view(&entry) })),
    ))
}

async fn remove(state: AppState, kind: ListKind, ip: String) -> Result<Json<Value>, ApiError> {
    let entry = on_fw(&state, move |fw| fw.remove(kind, &ip)).await?;
    Ok(Json(json!({ "success": true, "data": entry_view(&entry) })))
}

pub async fn blacklist(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    list(s, ListKind::Black).await
}

pub async fn whitelist(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    list(s, ListKind::White).await
}

pub async fn blacklist_add(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<EntryBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    add(s, ListKind::Black, peer, b).await
}

pub async fn whitelist_add(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<EntryBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    add(s, ListKind::White, peer, b).await
}

pub async fn blacklist_remove(
    State(s): State<AppState>,
    _a: Admin,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    remove(s, ListKind::Black, ip).await
}

pub async fn whitelist_remove(
    State(s): State<AppState>,
    _a: Admin,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    remove(s, ListKind::White, ip).await
}

#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    ip: Option<String>,
}

pub async fn check_ip(
    State(s): State<AppState>,
    _a: Admin,
    Query(q): Query<CheckQuery>,
) -> Result<Json<Value>, ApiError> {
    let ip = q.ip.unwrap_or_default();
    let probe = ip.clone();
    let found = on_fw(&s, move |fw| fw.check(&probe)).await?;
    // the address as it was checked: `::ffff:1.2.3.4` is 1.2.3.4
    let ip = ip
        .trim()
        .parse::<std::net::IpAddr>()
        .map_or_else(|_| ip.trim().to_string(), |a| a.to_canonical().to_string());
    let t = unix_now();
    let matches: Vec<Value> = found
        .iter()
        .map(|m| {
            json!({
                "list": m.list,
                "name": m.name,
                "entry": m.entry,
                "comment": m.comment,
                "ttl_remaining": m.expires_at.map(|e| (e - t).max(0)),
                "expires_at": m.expires_at.map(rfc3339),
            })
        })
        .collect();
    let whitelisted = found.iter().any(|m| m.list == "whitelist");
    let blacklisted = found.iter().any(|m| m.list == "blacklist");
    let blocklisted = found.iter().any(|m| m.list == "blocklist");
    Ok(Json(json!({
        "success": true,
        "data": {
            "ip": ip,
            "whitelisted": whitelisted,
            "blacklisted": blacklisted,
            // the whitelist wins: a whitelisted address is never dropped by a list
            "blocklisted": blocklisted,
            "blocked": (blacklisted || blocklisted) && !whitelisted,
            "matches": matches,
        }
    })))
}

pub async fn ports(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let ports = on_fw(&s, |fw| fw.ports()).await?;
    let data: Vec<Value> = ports
        .iter()
        .map(|(port, proto, dir)| {
            let port = port_json(port);
            json!({ "port": port, "protocol": proto, "direction": dir })
        })
        .collect();
    Ok(Json(json!({ "success": true, "data": data })))
}

#[derive(Debug, Deserialize)]
pub struct PortBody {
    port: Option<Value>,
    protocol: Option<String>,
    direction: Option<String>,
}

pub async fn port_add(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<PortBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let view = json!({ "port": port_json(&req.port), "protocol": req.protocol, "direction": req.direction });
    on_fw(&s, move |fw| fw.add_port(req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": view })),
    ))
}

#[derive(Debug, Deserialize)]
pub struct PortFilter {
    protocol: Option<String>,
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

pub async fn port_remove(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(port): Path<String>,
    Query(f): Query<PortFilter>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(
        json!({ "success": true, "data": { "port": port, "removed_from": removed } }),
    ))
}

pub async fn config(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let settings = on_fw(&s, |fw| fw.settings()).await?;
    Ok(Json(json!({ "success": true, "data": settings })))
}

pub async fn config_update(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let Value::Object(mut map) = body else {
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
    let origin = origin(peer, force);
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
    let settings = on_fw(&s, move |fw| fw.update_settings(changes, origin)).await?;
    Ok(Json(json!({ "success": true, "data": settings })))
}

pub async fn reload(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let st = on_fw(&s, |fw| fw.reload()).await?;
    Ok(Json(json!({ "success": true, "data": status_view(&st) })))
}

fn blocklist_status(d: &FwBlocklist) -> Value {
    json!({
        "name": d.name,
        "enabled": d.enabled,
        "entry_count": d.entry_count,
        "last_error": d.last_error,
        "last_updated": d.last_updated.map(rfc3339),
    })
}

fn blocklist_view(d: &FwBlocklist) -> Value {
    let mut v = blocklist_status(d);
    v["url"] = json!(d.url);
    v["interval"] = json!(d.interval);
    v["max"] = json!(d.max);
    v["invalid_lines"] = json!(d.invalid_lines);
    v["last_attempt"] = json!(d.last_attempt.map(rfc3339));
    v
}

pub async fn blocklists(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let lists = on_fw(&s, |fw| fw.user_blocklists()).await?;
    Ok(Json(
        json!({ "success": true, "data": lists.iter().map(blocklist_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct BlocklistBody {
    name: Option<String>,
    url: Option<String>,
    interval: Option<i64>,
    max: Option<i64>,
    enabled: Option<bool>,
}

impl From<BlocklistBody> for BlocklistRequest {
    fn from(b: BlocklistBody) -> Self {
        BlocklistRequest {
            name: b.name,
            url: b.url,
            interval: b.interval,
            max: b.max,
            enabled: b.enabled,
        }
    }
}

pub async fn blocklist_add(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<BlocklistBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = BlocklistRequest::from(b);
    let d = on_fw(&s, move |fw| fw.create_blocklist(req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": blocklist_view(&d) })),
    ))
}

pub async fn blocklist_update(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<BlocklistBody>,
) -> Result<Json<Value>, ApiError> {
    if b.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::Validation(
            "A blocklist cannot be renamed; delete it and create another".into(),
        ));
    }
    let req = BlocklistRequest::from(b);
    let d = on_fw(&s, move |fw| fw.update_blocklist(&name, req)).await?;
    Ok(Json(json!({ "success": true, "data": blocklist_view(&d) })))
}

pub async fn blocklist_delete(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = on_fw(&s, move |fw| fw.delete_blocklist(&name)).await?;
    Ok(Json(json!({ "success": true, "data": blocklist_view(&d) })))
}

pub async fn blocklist_refresh(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    on_fw(&s, move |fw| fw.user_blocklist(&n)).await?;
    let d = wispd_firewall::blocklist::refresh(s.firewall.clone(), name).await?;
    Ok(Json(json!({ "success": true, "data": blocklist_view(&d) })))
}

pub async fn geoip_status(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let (settings, lists, filter_active) = on_fw(&s, |fw| fw.geoip()).await?;
    let countries: Vec<Value> = settings
        .countries()
        .iter()
        .map(|cc| {
            let mine: Vec<&FwBlocklist> = lists
                .iter()
                .filter(|d| d.name == format!("cc_{cc}") || d.name == format!("cc_{cc}_v6"))
                .collect();
            let mut roles = Vec::new();
            if settings.cc_deny.contains(cc) {
                roles.push("deny");
            }
            if settings.cc_allow.contains(cc) {
                roles.push("allow");
            }
            if settings.cc_allow_filter.contains(cc) {
                roles.push("allow_filter");
            }
            let errors: Vec<&str> = mine
                .iter()
                .map(|d| d.last_error.as_str())
                .filter(|e| !e.is_empty())
                .collect();
            json!({
                "country": cc.to_ascii_uppercase(),
                "roles": roles,
                "entry_count": mine.iter().map(|d| d.entry_count).sum::<u64>(),
                "last_error": errors.join("; "),
                "last_updated": mine.iter().filter_map(|d| d.last_updated).min().map(rfc3339),
            })
        })
        .collect();
    let upper = |v: &[String]| v.iter().map(|c| c.to_ascii_uppercase()).collect::<Vec<_>>();
    Ok(Json(json!({
        "success": true,
        "data": {
            "enabled": !countries.is_empty(),
            "source": settings.cc_source,
            "source6": settings.cc6_source,
            "interval_days": settings.cc_interval,
            "deny": upper(&settings.cc_deny),
            "allow": upper(&settings.cc_allow),
            "allow_filter": upper(&settings.cc_allow_filter),
            "allow_filter_active": filter_active,
            "countries": countries,
        }
    })))
}

pub async fn bogon_status(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let (settings, st) = on_fw(&s, |fw| Ok((fw.parsed_settings()?, fw.status()?))).await?;
    let ranges = wispd_firewall::plan::bogon_ranges();
    let available = matches!(st.backend, wispd_firewall::Backend::Available);
    Ok(Json(json!({
        "success": true,
        "data": {
            "enabled": settings.bogon,
            "interface": settings.bogon_interface,
            "active": settings.bogon && available && st.enabled,
            "source": "built-in (IANA special-purpose registries)",
            "entry_count": ranges.len(),
            "ipv4": wispd_firewall::model::BOGONS_V4,
            "ipv6": wispd_firewall::model::BOGONS_V6,
        }
    })))
}

/// The OpenAPI part of this group (merged into the whole document in `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct CsfApi;
