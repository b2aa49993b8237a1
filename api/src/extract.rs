//! Request extractors whose rejections are envelopes: JSON bodies (bounded, field-named errors)
//! and the authenticated caller.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::{AppState, BODY_LIMIT};

/// A JSON request body of at most [`BODY_LIMIT`] bytes. An empty body (no bytes at all) reads as
/// `{}` so that a missing field is reported by name ("Domain is required") rather than as
/// malformed JSON; a body of blanks is malformed JSON.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        json_object(req, BODY_LIMIT).await.map(JsonBody)
    }
}

/// Largest body of `POST /api/v1/email/accounts/{id}/mailboxes/import` (one 50 MiB message,
/// base64, and its fields), read only for a request carrying an admin token.
pub const IMPORT_BODY_LIMIT: usize = 72 << 20;

/// The JSON body of a mailbox import: as [`JsonBody`], up to [`IMPORT_BODY_LIMIT`].
#[derive(Debug)]
pub struct ImportBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ImportBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        json_object(req, IMPORT_BODY_LIMIT).await.map(ImportBody)
    }
}

async fn json_object<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(req.into_body(), 0).await;
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let bytes = read_limited(req.into_body(), limit).await?;
    if bytes.is_empty() {
        return parse_json(b"{}");
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        // blanks are not JSON, and not "no body" either
        None => Err(ApiError::Validation(
            "Invalid JSON body: expected a JSON object".into(),
        )),
        // serde would map an array onto a struct's fields by position; requests are objects.
        Some(b'[') => Err(ApiError::Validation(
            "Invalid JSON body: expected a JSON object".into(),
        )),
        Some(_) => parse_json(&bytes),
    }
}

/// Reads the whole request body (within [`BODY_LIMIT`]) before anything answers, so no answer
/// — a 401, a 404, a 405 — leaves unread bytes on the connection: a socket closed with unread
/// input makes the kernel send RST, which can destroy the answer on its way to the client (found
/// by schemathesis sending bodies with wrong methods). Oversized bodies get the 413 here.
pub async fn buffer_body(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    // a mailbox import may be larger, for an admin token only: nobody else gets to make the
    // server hold more than BODY_LIMIT of an unread request
    let limit =
        if crate::openapi::is_import(parts.uri.path()) && admin_token(&state, &parts.headers) {
            IMPORT_BODY_LIMIT
        } else {
            BODY_LIMIT
        };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body, 0).await;
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    match read_limited(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// Most of an oversized body read (and thrown away) so the client, still sending, gets to read
/// the 413 instead of a reset; past this the connection is simply closed.
const DRAIN_MAX: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_limited(mut body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    // a body already read (one frame) is passed on as it is; one arriving in pieces is
    // gathered once, into a buffer sized by its declared length when it has one
    let hint = usize::try_from(axum::body::HttpBody::size_hint(&body).lower()).unwrap_or(0);
    let mut first: Option<axum::body::Bytes> = None;
    let mut out: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::Validation(format!("Could not read request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let seen = first.as_ref().map_or(0, |f| f.len()) + out.len() + data.len();
        if seen > limit {
            drain(body, seen).await;
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if first.is_none() && out.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(f) = first.take() {
            out.reserve(hint.clamp(f.len() + data.len(), limit));
            out.extend_from_slice(&f);
        }
        out.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| out.into()))
}

/// Whether the request carries a valid admin token (checked again, with its rate limit, by
/// [`crate::auth::authenticate`]).
fn admin_token(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    crate::auth::bearer(headers)
        .ok()
        .flatten()
        .and_then(|t| crate::auth::verify(&state.store, t).ok().flatten())
        .is_some_and(|p| p.is_admin())
}

/// Reads and discards the rest of a body, up to [`DRAIN_MAX`] bytes and [`DRAIN_TIME`].
async fn drain(mut body: Body, mut seen: usize) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// Parses JSON, naming the offending field on a type error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::Validation(
                    format!("Malformed JSON body: {inner}"),
                )),
                Category::Data if path.is_empty() || path == "." => {
                    Err(ApiError::Validation(format!("Invalid JSON body: {inner}")))
                }
                Category::Data => Err(ApiError::Validation(format!(
                    "Invalid value for field `{path}`: {inner}"
                ))),
            }
        }
    }
}

/// The authenticated caller, whatever its role.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Unauthorized("Missing or invalid API token".into()))
    }
}

/// The authenticated caller, which must hold an admin token.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(p) = Caller::from_request_parts(parts, state).await?;
        if p.is_admin() {
            Ok(Admin(p))
        } else {
            Err(ApiError::Forbidden(
                "This endpoint requires an admin token".into(),
            ))
        }
    }
}
