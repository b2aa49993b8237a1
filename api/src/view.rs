//! The shapes every response shares: `{"success": true, "data": …}` and the error envelope, as
//! typed values the OpenAPI document is generated from.

use serde::Serialize;
use utoipa::ToSchema;

/// A successful response: `{"success": true, "data": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
}

impl<T> Data<T> {
    pub fn new(data: T) -> Data<T> {
        Data {
            success: true,
            data,
        }
    }
}

/// The envelope's `code`, one per HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    InternalError,
}

/// Every error: the HTTP status repeated inside, `error` and `message` the same text.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"success": false, "code": "VALIDATION_ERROR", "error": "Domain is required", "message": "Domain is required", "status": 400}))]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub code: ErrorCode,
    pub error: String,
    pub message: String,
    pub status: u16,
}
