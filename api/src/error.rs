//! The error envelope: every failure the API returns, in one place.
//!
//! `{"success": false, "code": "VALIDATION_ERROR", "error": "…", "message": "…", "status": 400}`.
//! Library errors are mapped here with exhaustive matches, so a new variant cannot slip through
//! as an unnoticed 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wispd_store::StoreError;

use crate::view::{ErrorCode, ErrorEnvelope};

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The detail goes to the log only; the client sees a generic message.
    #[error("Internal server error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        code_for(self.status())
    }

    /// The envelope for an error status produced outside our handlers (the router's own 404/405,
    /// an extractor's rejection), keeping its text as the message when it has one.
    pub fn from_status(status: StatusCode, text: &str) -> ApiError {
        let text = text.trim();
        let msg = |default: &str| {
            if text.is_empty() {
                default.to_string()
            } else {
                text.chars().take(300).collect()
            }
        };
        match status {
            StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Validation(msg("Bad request")),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized(msg("Unauthorized")),
            StatusCode::FORBIDDEN => ApiError::Forbidden(msg("Forbidden")),
            StatusCode::NOT_FOUND => ApiError::NotFound(msg("Not found")),
            StatusCode::CONFLICT => ApiError::Conflict(msg("Conflict")),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                limit: crate::BODY_LIMIT,
            },
            StatusCode::TOO_MANY_REQUESTS => ApiError::RateLimited {
                retry_after_secs: 1,
            },
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(msg("Service unavailable")),
            _ => ApiError::Internal(msg("unexpected error status")),
        }
    }
}

/// The envelope's `code` for an HTTP status.
pub fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::BAD_REQUEST => ErrorCode::ValidationError,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        _ => ErrorCode::InternalError,
    }
}

/// The envelope for `status` with `message` as both `error` and `message`.
pub fn envelope(status: StatusCode, message: String) -> Json<ErrorEnvelope> {
    Json(ErrorEnvelope {
        success: false,
        code: code_for(status),
        error: message.clone(),
        message,
        status: status.as_u16(),
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error answered with 500");
        }
        let body = envelope(status, self.to_string());
        let mut resp = (status, body).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooNew { .. }
            | StoreError::InUse { .. }
            | StoreError::Open { .. }
            | StoreError::NoMigration { .. }
            | StoreError::Migration { .. }
            | StoreError::Decode { .. }
            | StoreError::Db(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<wispd_firewall::FwError> for ApiError {
    fn from(e: wispd_firewall::FwError) -> Self {
        use wispd_firewall::FwError;
        match e {
            FwError::Invalid(m) => ApiError::Validation(m),
            FwError::Settings(_) => ApiError::Validation(e.to_string()),
            FwError::NotFound(m) => ApiError::NotFound(m),
            FwError::Conflict(m) => ApiError::Conflict(m),
            FwError::Kernel(k) => {
                ApiError::Unavailable(format!("The firewall change was not applied: {k}"))
            }
            FwError::Store(s) => ApiError::from(s),
        }
    }
}

impl From<wispd_engine::directory::DirError> for ApiError {
    fn from(e: wispd_engine::directory::DirError) -> Self {
        use wispd_engine::directory::DirError;
        match e {
            DirError::Invalid(m) => ApiError::Validation(m),
            DirError::NotFound(m) => ApiError::NotFound(m),
            DirError::Conflict(m) => ApiError::Conflict(m),
            DirError::Hash(_)
            | DirError::Argon2(_)
            | DirError::Randomness(_)
            | DirError::HashTask(_)
            | DirError::StoredHash(_)
            | DirError::TooCostly(_) => ApiError::Internal(e.to_string()),
            DirError::Store(s) => ApiError::from(s),
            DirError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<wispd_engine::service::MailError> for ApiError {
    fn from(e: wispd_engine::service::MailError) -> Self {
        use wispd_engine::service::MailError;
        match e {
            MailError::Bind { .. } | MailError::Config(_) => ApiError::Unavailable(e.to_string()),
            MailError::Store(s) => ApiError::from(s),
        }
    }
}

impl From<wispd_engine::dkim::DkimError> for ApiError {
    fn from(e: wispd_engine::dkim::DkimError) -> Self {
        use wispd_engine::dkim::DkimError;
        match e {
            DkimError::Invalid(m) => ApiError::Validation(m),
            DkimError::NotFound(m) => ApiError::NotFound(m),
            DkimError::Dns(_) => ApiError::Unavailable(e.to_string()),
            DkimError::Rsa(_)
            | DkimError::Pkcs8(_)
            | DkimError::Spki(_)
            | DkimError::Ed25519(_)
            | DkimError::Ed25519Rejected(_)
            | DkimError::StoredKey { .. }
            | DkimError::UnknownAlgorithm { .. }
            | DkimError::Sign { .. } => ApiError::Internal(e.to_string()),
            DkimError::Store(s) => ApiError::from(s),
        }
    }
}

impl From<wispd_engine::queue::QueueError> for ApiError {
    fn from(e: wispd_engine::queue::QueueError) -> Self {
        use wispd_engine::queue::QueueError;
        match e {
            QueueError::NotFound(m) => ApiError::NotFound(m),
            QueueError::Store(s) => ApiError::from(s),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("store task failed: {e}"))
    }
}
