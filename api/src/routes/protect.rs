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

#[derive(OpenApi)]
#[openapi(paths(synflood))]
pub struct ProtectApi;
