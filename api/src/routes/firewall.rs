//! `/api/v1/firewall/*`: the basic firewall (rules, status, on/off). Admin only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wispd_firewall::RuleRequest;
use wispd_store::schema::FwRule;

use super::csf::{on_fw, port_field, port_json, status_view};
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
}

pub async fn rule_add(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<RuleBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let port = port_field(b.port)?;
    let req = RuleRequest {
        chain: b.chain.unwrap_or_default(),
        protocol: b.protocol.unwrap_or_default(),
        port,
        source: b.source,
        action: b.action.unwrap_or_default(),
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
}

pub async fn toggle(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<ToggleBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(enabled) = b.enabled else {
        return Err(ApiError::Validation(
            "enabled is required (true or false)".into(),
        ));
    };
    let st = on_fw(&s, move |fw| fw.toggle(enabled)).await?;
    Ok(Json(json!({ "success": true, "data": status_view(&st) })))
}
