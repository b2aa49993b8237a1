//! `/api/v1/firewall/*`: the basic firewall (rules, status, on/off). Admin only.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wispd_firewall::RuleRequest;
use wispd_store::schema::FwRule;

use super::csf::{on_fw, origin, port_field, port_json, status_view};
use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::{AppState, rfc3339};

fn rule_view(r: &FwRule) -> Value {
    let port = r.port.as_ref().map(|p| port_json(p));
    json!({
        "id": r.id,
        "chain": r.chain,
        "protocol": r.protocol,
        "port": port,
        "source": r.source,
        "action": r.action,
        "created_at": rfc3339(r.created_at),
    })
}

pub async fn rules(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let rules = on_fw(&s, |fw| fw.list_rules()).await?;
    Ok(Json(
        json!({ "success": true, "data": rules.iter().map(rule_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct RuleBody {
    chain: Option<String>,
    protocol: Option<String>,
    port: Option<Value>,
    source: Option<String>,
    action: Option<String>,
    /// Add it even if it shuts API clients (or the server's own traffic) out.
    force: Option<bool>,
}

pub async fn rule_add(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<RuleBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let port = port_field(b.port)?;
    let origin = origin(peer, b.force);
    let req = RuleRequest {
        chain: b.chain.unwrap_or_default(),
        protocol: b.protocol.unwrap_or_default(),
        port,
        source: b.source,
        action: b.action.unwrap_or_default(),
        force: origin.force,
        caller: origin.caller,
    };
    let rule = on_fw(&s, move |fw| fw.add_rule(req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": rule_view(&rule) })),
    ))
}

pub async fn rule_delete(
    State(s): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("No firewall rule with id {id:?}")))?;
    let rule = on_fw(&s, move |fw| fw.delete_rule(id)).await?;
    Ok(Json(json!({ "success": true, "data": rule_view(&rule) })))
}

pub async fn status(State(s): State<AppState>, _a: Admin) -> Result<Json<Value>, ApiError> {
    let st = on_fw(&s, |fw| fw.status()).await?;
    Ok(Json(json!({ "success": true, "data": status_view(&st) })))
}

#[derive(Debug, Deserialize)]
pub struct ToggleBody {
    enabled: Option<bool>,
    /// Turn it on even if the settings shut the caller out of the API.
    force: Option<bool>,
}

pub async fn toggle(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<ToggleBody>,
) -> Result<Json<Value>, ApiError> {
    let origin = origin(peer, b.force);
    let Some(enabled) = b.enabled else {
        return Err(ApiError::Validation(
            "enabled is required (true or false)".into(),
        ));
    };
    let st = on_fw(&s, move |fw| fw.toggle(enabled, origin)).await?;
    Ok(Json(json!({ "success": true, "data": status_view(&st) })))
}

/// The OpenAPI part of this group (merged into the whole document in `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct FirewallApi;
