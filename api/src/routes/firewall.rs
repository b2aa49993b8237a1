//! `/api/v1/firewall/*`: the basic firewall (rules, status, on/off). Admin only.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use wispd_firewall::RuleRequest;
use wispd_store::schema::FwRule;

use super::csf::{FirewallStatus, PortValue, on_fw, origin, port_field, port_json, status_view};
use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339};

/// A basic firewall rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct FirewallRule {
    /// Its id, for `DELETE /firewall/rules/{id}`.
    #[schema(example = 1)]
    pub id: u64,
    /// `INPUT` or `OUTPUT`.
    #[schema(example = "INPUT")]
    pub chain: String,
    /// `tcp`, `udp`, `icmp` or `all`.
    #[schema(example = "tcp")]
    pub protocol: String,
    /// The port or range; `null` for every port (and for icmp/all).
    #[schema(required = true)]
    pub port: Option<PortValue>,
    /// The source address or CIDR it applies to; `null` for every source.
    #[schema(required = true, example = json!(null))]
    pub source: Option<String>,
    /// `ACCEPT`, `DROP` or `REJECT`.
    #[schema(example = "ACCEPT")]
    pub action: String,
    /// RFC 3339.
    #[schema(example = "2026-05-11T10:15:03+00:00")]
    pub created_at: String,
}

fn rule_view(r: &FwRule) -> FirewallRule {
    FirewallRule {
        id: r.id,
        chain: r.chain.clone(),
        protocol: r.protocol.clone(),
        port: r.port.as_deref().map(port_json),
        source: r.source.clone(),
        action: r.action.clone(),
        created_at: rfc3339(r.created_at),
    }
}

/// The basic firewall rules, in id order.
#[utoipa::path(
    get,
    path = "/api/v1/firewall/rules",
    operation_id = "firewall_rules_list",
    tag = "firewall",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every rule", body = Data<Vec<FirewallRule>>))
)]
pub async fn rules(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<Vec<FirewallRule>>>, ApiError> {
    let rules = on_fw(&s, |fw| fw.list_rules()).await?;
    Ok(Json(Data::new(rules.iter().map(rule_view).collect())))
}

/// `POST /firewall/rules`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewRule {
    /// `INPUT` or `OUTPUT` (required).
    #[schema(example = "INPUT")]
    chain: Option<String>,
    /// `tcp`, `udp`, `icmp` or `all` (required).
    #[schema(example = "tcp")]
    protocol: Option<String>,
    /// A port number or a `"lo:hi"` range; only with tcp/udp, absent for every port.
    #[schema(value_type = Option<PortValue>, example = 80)]
    port: Option<Value>,
    /// A source address or CIDR; absent for every source.
    #[schema(example = "203.0.113.0/24")]
    source: Option<String>,
    /// `ACCEPT`, `DROP` or `REJECT` (required).
    #[schema(example = "ACCEPT")]
    action: Option<String>,
    /// Add it even if it shuts API clients (or the server's own traffic) out.
    #[schema(example = false)]
    force: Option<bool>,
}

/// Adds a basic firewall rule.
#[utoipa::path(
    post,
    path = "/api/v1/firewall/rules",
    operation_id = "firewall_rules_add",
    tag = "firewall",
    security(("bearer" = ["admin"])),
    request_body = NewRule,
    responses((status = 201, description = "Added", body = Data<FirewallRule>))
)]
pub async fn rule_add(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<NewRule>,
) -> Result<(StatusCode, Json<Data<FirewallRule>>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(Data::new(rule_view(&rule)))))
}

/// Deletes a basic firewall rule.
#[utoipa::path(
    delete,
    path = "/api/v1/firewall/rules/{id}",
    operation_id = "firewall_rules_delete",
    tag = "firewall",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "The rule's id (a number)", example = "1")),
    responses((status = 200, description = "The deleted rule", body = Data<FirewallRule>))
)]
pub async fn rule_delete(
    State(s): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<Data<FirewallRule>>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("No firewall rule with id {id:?}")))?;
    let rule = on_fw(&s, move |fw| fw.delete_rule(id)).await?;
    Ok(Json(Data::new(rule_view(&rule))))
}

/// The firewall's state: on/off, backend, policy, TESTING, rule and list counts.
#[utoipa::path(
    get,
    path = "/api/v1/firewall/status",
    operation_id = "firewall_status",
    tag = "firewall",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The firewall's state", body = Data<FirewallStatus>))
)]
pub async fn status(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<FirewallStatus>>, ApiError> {
    let st = on_fw(&s, |fw| fw.status()).await?;
    Ok(Json(Data::new(status_view(&st))))
}

/// `POST /firewall/toggle`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FirewallToggle {
    /// `true` to filter, `false` for no filtering at all (required).
    #[schema(example = true)]
    enabled: Option<bool>,
    /// Turn it on even if the settings shut the caller out of the API.
    #[schema(example = false)]
    force: Option<bool>,
}

/// Switches the firewall on or off.
#[utoipa::path(
    post,
    path = "/api/v1/firewall/toggle",
    operation_id = "firewall_toggle",
    tag = "firewall",
    security(("bearer" = ["admin"])),
    request_body = FirewallToggle,
    responses((status = 200, description = "The firewall's state after the switch", body = Data<FirewallStatus>))
)]
pub async fn toggle(
    State(s): State<AppState>,
    _a: Admin,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(b): JsonBody<FirewallToggle>,
) -> Result<Json<Data<FirewallStatus>>, ApiError> {
    let origin = origin(peer, b.force);
    let Some(enabled) = b.enabled else {
        return Err(ApiError::Validation(
            "enabled is required (true or false)".into(),
        ));
    };
    let st = on_fw(&s, move |fw| fw.toggle(enabled, origin)).await?;
    Ok(Json(Data::new(status_view(&st))))
}

/// The OpenAPI part of this group (merged into the whole document in `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(rules, rule_add, rule_delete, status, toggle))]
pub struct FirewallApi;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rule_shows_its_port_as_a_number_and_absent_fields_as_null() {
        let rule = FwRule {
            id: 7,
            chain: "INPUT".into(),
            protocol: "tcp".into(),
            port: Some("80".into()),
            source: None,
            action: "ACCEPT".into(),
            created_at: 0,
        };
        let expected = json!({"id": 7, "chain": "INPUT", "protocol": "tcp", "port": 80,
            "source": null, "action": "ACCEPT", "created_at": "1970-01-01T00:00:00+00:00"});
        assert_eq!(
            serde_json::to_string(&rule_view(&rule)).expect("serialize"),
            expected.to_string()
        );
        let all = FwRule {
            protocol: "all".into(),
            port: None,
            ..rule
        };
        assert_eq!(
            serde_json::to_value(rule_view(&all)).expect("serialize")["port"],
            Value::Null
        );
    }
}
