//! `GET /api/v1/health`: liveness, without a token.

use axum::Json;
use serde_json::{Value, json};

pub async fn get() -> Json<Value> {
    Json(json!({
        "success": true,
        "data": { "status": "ok", "version": env!("CARGO_PKG_VERSION") },
    }))
}
