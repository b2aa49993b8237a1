//! `GET /api/v1/health`: liveness, without a token.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::view::Data;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` while the server runs.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The wispd version.
    pub version: &'static str,
}

/// Liveness; needs no token and carries no rate-limit headers.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    operation_id = "health",
    tag = "system",
    responses((status = 200, description = "The server runs", body = Data<Health>))
)]
pub async fn get() -> Json<Data<Health>> {
    Json(Data::new(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    }))
}
