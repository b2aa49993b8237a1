//! `/email/rbl` (admin): the DNSBL configuration the MX checks clients against, and how often
//! each zone listed one since the start.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use wispd_engine::rbl::RblError;
use wispd_store::schema::{RblSettings, RblZone};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::view::Data;

/// One DNSBL zone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    #[schema(example = "zen.spamhaus.org")]
    pub zone: String,
    /// `reject`: recipients are refused with `554 5.7.1`; `score`: the listing only adds its
    /// score (for the spam score).
    #[schema(example = "reject")]
    pub action: String,
    /// -100 to 100; default 0.
    #[serde(default)]
    #[schema(example = 3.0)]
    pub score: f64,
}

/// `PUT /email/rbl`: the whole configuration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "zones": [{"zone": "zen.spamhaus.org", "action": "reject"}], "allowlist": ["192.0.2.0/24"]}))]
pub struct RblBody {
    #[schema(required = true)]
    pub enabled: Option<bool>,
    /// At most 20.
    #[serde(default)]
    pub zones: Vec<ZoneBody>,
    /// Addresses and networks never looked up; at most 1000.
    #[serde(default)]
    pub allowlist: Vec<String>,
}

/// The configuration and the listings counted per zone.
#[derive(Debug, Serialize, ToSchema)]
pub struct RblView {
    pub enabled: bool,
    pub zones: Vec<ZoneView>,
    pub allowlist: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ZoneView {
    pub zone: String,
    pub action: String,
    pub score: f64,
    /// Clients this zone listed since the server started.
    pub hits: u64,
}

fn view(s: &AppState) -> RblView {
    let rbl = s.mail.rbl();
    let (settings, hits) = (rbl.settings(), rbl.hits());
    RblView {
        enabled: settings.enabled,
        zones: settings
            .zones
            .into_iter()
            .map(|z| ZoneView {
                hits: hits.get(&z.zone).copied().unwrap_or(0),
                zone: z.zone,
                action: z.action,
                score: z.score,
            })
            .collect(),
        allowlist: settings.allowlist,
    }
}

/// The DNSBL configuration and recent hit counts.
#[utoipa::path(
    get,
    path = "/api/v1/email/rbl",
    operation_id = "email_rbl_get",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The DNSBL configuration", body = Data<RblView>))
)]
pub async fn get(State(s): State<AppState>, _a: Admin) -> Json<Data<RblView>> {
    Json(Data::new(view(&s)))
}

/// Replaces the DNSBL configuration (durable when this answers).
#[utoipa::path(
    put,
    path = "/api/v1/email/rbl",
    operation_id = "email_rbl_put",
    tag = "email",
    security(("bearer" = ["admin"])),
    request_body = RblBody,
    responses((status = 200, description = "The new configuration", body = Data<RblView>))
)]
pub async fn put(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<RblBody>,
) -> Result<Json<Data<RblView>>, ApiError> {
    let Some(enabled) = b.enabled else {
        return Err(ApiError::Validation("enabled: required".into()));
    };
    let settings = RblSettings {
        enabled,
        zones: b
            .zones
            .into_iter()
            .map(|z| RblZone {
                zone: z.zone,
                action: z.action,
                score: z.score,
            })
            .collect(),
        allowlist: b.allowlist,
    };
    let rbl = s.mail.rbl().clone();
    tokio::task::spawn_blocking(move || rbl.set(settings))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            RblError::Invalid(m) => ApiError::Validation(m),
            RblError::Store(e) => ApiError::from(e),
        })?;
    Ok(Json(Data::new(view(&s))))
}

#[derive(OpenApi)]
#[openapi(paths(get, put))]
pub struct RblApi;
