//! `/email/clamav` (admin): virus scanning by clamd, its counters, and the quarantine of
//! messages it found a virus in (list, read the header, release, delete).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wispd_engine::clamav::ClamavError;
use wispd_store::schema::{ClamavSettings, QuarantineEntry};

use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339};

/// The scanner's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "socket": "/run/clamav/clamd.ctl", "action": "reject",
    "on_error": "tempfail", "max_size_mb": 25}))]
pub struct ClamavBody {
    #[schema(required = true)]
    pub enabled: Option<bool>,
    /// clamd's unix socket path, or `host:port` of its TCP socket.
    #[serde(default = "default_socket")]
    #[schema(example = "/run/clamav/clamd.ctl")]
    pub socket: String,
    /// `reject` (`554 5.7.1` naming the virus) or `quarantine`.
    #[serde(default = "default_action")]
    #[schema(example = "reject")]
    pub action: String,
    /// clamd unreachable or failing: `tempfail` (`451 4.3.0`) or `accept` (delivered with
    /// `X-Virus-Status: Unscanned`).
    #[serde(default = "default_on_error")]
    #[schema(example = "tempfail")]
    pub on_error: String,
    /// Larger messages are not scanned (set it to clamd's `StreamMaxLength`), 1 to 4096.
    #[serde(default = "default_max_size")]
    pub max_size_mb: u64,
    /// A message over `max_size_mb`: `accept` (unscanned) or `reject` (`552 5.3.4`).
    #[serde(default = "default_oversize")]
    #[schema(example = "accept")]
    pub oversize: String,
    /// Seconds a scan may take before it counts as a failure, 1 to 600.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Days a quarantined message is kept, 1 to 3650.
    #[serde(default = "default_quarantine_days")]
    pub quarantine_days: u64,
}

fn default_socket() -> String {
    ClamavSettings::default().socket
}
fn default_action() -> String {
    ClamavSettings::default().action
}
fn default_on_error() -> String {
    ClamavSettings::default().on_error
}
fn default_oversize() -> String {
    ClamavSettings::default().oversize
}
fn default_max_size() -> u64 {
    ClamavSettings::default().max_size_mb
}
fn default_timeout() -> u64 {
    ClamavSettings::default().timeout_seconds
}
fn default_quarantine_days() -> u64 {
    ClamavSettings::default().quarantine_days
}

/// The settings, clamd's state and the counters since start.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClamavView {
    pub enabled: bool,
    /// The socket exists (or clamd's daemon is installed).
    pub installed: bool,
    /// clamd answers `PING` on the socket.
    pub running: bool,
    /// What `VERSION` answers (`ClamAV 1.4.6/27000/...`), when running.
    pub version: Option<String>,
    pub socket: String,
    pub action: String,
    pub on_error: String,
    pub max_size_mb: u64,
    pub oversize: String,
    pub timeout_seconds: u64,
    pub quarantine_days: u64,
    /// Messages clamd scanned since start.
    pub scanned: u64,
    /// Of those, with a virus.
    pub infected: u64,
    /// Scans that failed (clamd down, timed out, an error answer).
    pub errors: u64,
    /// Messages delivered unscanned (too large, or `on_error` `accept`).
    pub unscanned: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Messages in the quarantine.
    pub quarantined: u64,
}

async fn view(s: &AppState) -> Result<ClamavView, ApiError> {
    let c = s.mail.clamav();
    let probe = c.probe().await;
    let (set, st) = (c.settings(), c.stats());
    let clamav = c.clone();
    let quarantined = tokio::task::spawn_blocking(move || clamav.quarantined(0, 0))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
        .1;
    Ok(ClamavView {
        enabled: set.enabled,
        installed: probe.installed,
        running: probe.running,
        version: probe.version,
        socket: set.socket,
        action: set.action,
        on_error: set.on_error,
        max_size_mb: set.max_size_mb,
        oversize: set.oversize,
        timeout_seconds: set.timeout_seconds,
        quarantine_days: set.quarantine_days,
        scanned: st.scanned,
        infected: st.infected,
        errors: st.errors,
        unscanned: st.unscanned,
        last_error: st.last_error,
        last_error_at: st.last_error_at.map(rfc3339),
        quarantined,
    })
}

fn clamav_error(e: ClamavError) -> ApiError {
    match e {
        ClamavError::Invalid(m) => ApiError::Validation(m),
        ClamavError::NotFound(m) => ApiError::NotFound(m),
        ClamavError::Store(e) => ApiError::from(e),
        ClamavError::Deliver(e) => ApiError::Unavailable(format!("delivering: {e}")),
    }
}

/// The scanner's settings, clamd's state and the counters.
#[utoipa::path(
    get,
    path = "/api/v1/email/clamav",
    operation_id = "email_clamav_get",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The ClamAV configuration and state", body = Data<ClamavView>))
)]
pub async fn get(State(s): State<AppState>, _a: Admin) -> Result<Json<Data<ClamavView>>, ApiError> {
    Ok(Json(Data::new(view(&s).await?)))
}

/// Replaces the scanner's settings (durable when this answers; the next message uses them).
#[utoipa::path(
    put,
    path = "/api/v1/email/clamav",
    operation_id = "email_clamav_put",
    tag = "email",
    security(("bearer" = ["admin"])),
    request_body = ClamavBody,
    responses((status = 200, description = "The new configuration", body = Data<ClamavView>))
)]
pub async fn put(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<ClamavBody>,
) -> Result<Json<Data<ClamavView>>, ApiError> {
    let Some(enabled) = b.enabled else {
        return Err(ApiError::Validation("enabled: required".into()));
    };
    let settings = ClamavSettings {
        enabled,
        socket: b.socket,
        action: b.action,
        on_error: b.on_error,
        max_size_mb: b.max_size_mb,
        oversize: b.oversize,
        timeout_seconds: b.timeout_seconds,
        quarantine_days: b.quarantine_days,
    };
    let clamav = s.mail.clamav().clone();
    tokio::task::spawn_blocking(move || clamav.set(settings))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(clamav_error)?;
    Ok(Json(Data::new(view(&s).await?)))
}

/// One quarantined message.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantinedView {
    pub id: u64,
    pub received_at: String,
    /// `mx` or `submission`.
    pub source: String,
    /// The virus clamd named.
    #[schema(example = "Eicar-Test-Signature")]
    pub signature: String,
    /// The envelope sender.
    pub from: String,
    /// The account that submitted it (submission).
    pub account: Option<String>,
    pub subject: String,
    /// Bytes.
    pub size: u64,
    /// Every recipient: local accounts' addresses, then other domains'.
    pub recipients: Vec<String>,
    /// The client's address.
    pub client: String,
    /// The SMTP transaction's id (in the log and the `Received:` header).
    pub smtp_id: String,
    /// When it is deleted unless released first.
    pub expires_at: String,
}

fn quarantined(e: QuarantineEntry) -> QuarantinedView {
    QuarantinedView {
        id: e.id,
        received_at: rfc3339(e.received_at),
        source: e.source,
        signature: e.signature,
        from: e.from,
        account: e.account,
        subject: e.subject,
        size: e.size,
        recipients: e
            .local
            .into_iter()
            .chain(e.remote.into_iter().map(|(a, _)| a))
            .collect(),
        client: e.client,
        smtp_id: e.smtp_id,
        expires_at: rfc3339(e.expires),
    }
}

/// `GET /email/clamav/quarantine?page=&per_page=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// From 1 (default 1).
    #[param(example = 1)]
    page: Option<String>,
    /// 1 to 500 (default 50).
    #[param(example = 50)]
    per_page: Option<String>,
}

/// A page of the quarantine, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineList {
    pub messages: Vec<QuarantinedView>,
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
}

fn quarantine_id(id: &str) -> Result<u64, ApiError> {
    id.trim()
        .parse()
        .map_err(|_| ApiError::NotFound(format!("No quarantined message {id:?}")))
}

/// The messages held because clamd found a virus in them, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/email/clamav/quarantine",
    operation_id = "email_clamav_quarantine_list",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(QuarantineQuery),
    responses((status = 200, description = "A page of the quarantine", body = Data<QuarantineList>))
)]
pub async fn quarantine_list(
    State(s): State<AppState>,
    _a: Admin,
    Query(q): Query<QuarantineQuery>,
) -> Result<Json<Data<QuarantineList>>, ApiError> {
    let page = super::query_number(q.page.as_deref(), "page", 1u64, 1_000_000, 1)?;
    let per_page = super::query_number(q.per_page.as_deref(), "per_page", 1u64, 500, 50)?;
    let clamav = s.mail.clamav().clone();
    let offset = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let limit = usize::try_from(per_page).unwrap_or(500);
    let (list, total) = tokio::task::spawn_blocking(move || clamav.quarantined(offset, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(Data::new(QuarantineList {
        messages: list.into_iter().map(quarantined).collect(),
        total,
        page,
        per_page,
    })))
}

/// One quarantined message with its header block.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantinedMessage {
    #[serde(flatten)]
    pub message: QuarantinedView,
    /// The header fields as received (text, at most 16 KiB).
    pub headers: String,
}

/// One quarantined message and its header.
#[utoipa::path(
    get,
    path = "/api/v1/email/clamav/quarantine/{id}",
    operation_id = "email_clamav_quarantine_get",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "The quarantined message's id")),
    responses((status = 200, description = "The message", body = Data<QuarantinedMessage>))
)]
pub async fn quarantine_get(
    State(s): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<Data<QuarantinedMessage>>, ApiError> {
    let id = quarantine_id(&id)?;
    let clamav = s.mail.clamav().clone();
    let (entry, headers) = tokio::task::spawn_blocking(move || clamav.held(id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(clamav_error)?;
    Ok(Json(Data::new(QuarantinedMessage {
        message: quarantined(entry),
        headers,
    })))
}

/// What became of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineOutcome {
    pub id: u64,
    /// `released` or `deleted`.
    pub status: String,
    /// The outbound queue's id for the copy to other domains, when it had some.
    pub queue_id: Option<u64>,
}

/// Delivers a quarantined message as it would have been (local recipients' INBOX without
/// their Sieve scripts, other domains through the queue), marked `X-Virus-Status: Infected
/// (...); released`, and removes it from the quarantine in the same commit.
#[utoipa::path(
    post,
    path = "/api/v1/email/clamav/quarantine/{id}/release",
    operation_id = "email_clamav_quarantine_release",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "The quarantined message's id")),
    responses((status = 200, description = "Released", body = Data<QuarantineOutcome>))
)]
pub async fn quarantine_release(
    State(s): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<Data<QuarantineOutcome>>, ApiError> {
    let id = quarantine_id(&id)?;
    let mail = s.mail.clone();
    let queue_id = mail
        .clamav()
        .release(mail.deliverer(), mail.hostname(), id)
        .await
        .map_err(clamav_error)?;
    Ok(Json(Data::new(QuarantineOutcome {
        id,
        status: "released".into(),
        queue_id,
    })))
}

/// Deletes a quarantined message.
#[utoipa::path(
    delete,
    path = "/api/v1/email/clamav/quarantine/{id}",
    operation_id = "email_clamav_quarantine_delete",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "The quarantined message's id")),
    responses((status = 200, description = "Deleted", body = Data<QuarantineOutcome>))
)]
pub async fn quarantine_delete(
    State(s): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<Data<QuarantineOutcome>>, ApiError> {
    let id = quarantine_id(&id)?;
    let clamav = s.mail.clamav().clone();
    tokio::task::spawn_blocking(move || clamav.delete(id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(clamav_error)?;
    Ok(Json(Data::new(QuarantineOutcome {
        id,
        status: "deleted".into(),
        queue_id: None,
    })))
}

#[derive(OpenApi)]
#[openapi(paths(
    get,
    put,
    quarantine_list,
    quarantine_get,
    quarantine_release,
    quarantine_delete
))]
pub struct ClamavApi;
