//! `/api/v1/csf/lfd/*`, `/csf/alerts` and `/csf/alerts-service/status`: lfd's triggers, the
//! failures it counts, the alerts it raised and their senders. Admin only.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wispd_firewall::lfd::Service;

use super::csf::on_fw;
use crate::error::ApiError;
use crate::extract::Admin;
use crate::view::Data;
use crate::{AppState, rfc3339};

/// One service's trigger.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView {
    /// `sshd`, `smtpauth`, `imapd`, `pop3d`, `managesieve`, `api`.
    #[schema(example = "imapd")]
    pub service: &'static str,
    /// The csf.conf key that sets it.
    #[schema(example = "LF_IMAPD")]
    pub key: &'static str,
    /// Failures within `interval` that ban (in cumulative mode: 1 = counted, 0 = not); 0 = off.
    #[schema(example = 10)]
    pub trigger: u32,
    /// Seconds the ban lasts; 0 = permanent.
    #[schema(example = 0)]
    pub block_seconds: i64,
}

/// The effective trigger settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct LfdSettingsView {
    /// `LF_TRIGGER`: 0 = each service has its own count; more = the cumulative count.
    pub trigger: u32,
    /// `LF_TRIGGER_PERM` as seconds (0 = permanent); used in cumulative mode.
    pub trigger_block_seconds: i64,
    /// `LF_INTERVAL`: the window failures are counted in, seconds.
    #[schema(example = 3600)]
    pub interval: i64,
    pub services: Vec<TriggerView>,
    /// `LF_PERMBLOCK`: temporary bans escalate to permanent.
    pub permblock: bool,
    pub permblock_interval: i64,
    pub permblock_count: u32,
    /// `LF_IGNORE`: never banned.
    pub ignore: Vec<String>,
    /// `SSHD_LOG`.
    pub sshd_log: String,
}

/// lfd's counts since start.
#[derive(Debug, Serialize, ToSchema)]
pub struct LfdCountsView {
    pub failures_total: u64,
    /// Addresses with failures on record now (bounded).
    pub tracked_ips: usize,
    pub bans_total: u64,
    pub bans_24h: usize,
    /// Temporary bans turned permanent (`LF_PERMBLOCK`).
    pub escalations: u64,
    /// Failures that found lfd's queue full and were not counted.
    pub dropped: u64,
}

/// Where failures come from.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// `sshd`, or a wispd service.
    pub source: &'static str,
    /// `log` (followed file) or `in-process` (reported by wispd's own service).
    pub kind: &'static str,
    pub path: Option<String>,
    /// The log is open and read.
    pub following: bool,
    pub inode: Option<u64>,
    pub offset: Option<u64>,
    pub lines_read: Option<u64>,
    pub failures_found: Option<u64>,
    pub rotations: Option<u64>,
    /// The last line that reported a failure.
    pub last_line: Option<String>,
    pub last_read_at: Option<String>,
    pub error: Option<String>,
}

/// `GET /csf/lfd/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LfdStatus {
    /// The lfd thread runs.
    pub running: bool,
    /// `LF_DAEMON`.
    pub enabled: bool,
    pub settings: LfdSettingsView,
    pub counts: LfdCountsView,
    pub sources: Vec<SourceView>,
}

/// lfd's state: triggers, counts, sources.
#[utoipa::path(
    get,
    path = "/api/v1/csf/lfd/status",
    operation_id = "csf_lfd_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "lfd's state", body = Data<LfdStatus>))
)]
pub async fn status(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<LfdStatus>>, ApiError> {
    let (settings, counts, running, sshd) = on_fw(&state, |fw| {
        let s = fw.parsed_settings()?;
        let lfd = fw.lfd();
        Ok((s.lfd, lfd.counts(), lfd.running(), lfd.sshd_state()))
    })
    .await?;
    let mut seen = Vec::new();
    let services = Service::ALL
        .into_iter()
        .filter(|s| {
            let new = !seen.contains(&s.key()) || *s == Service::ManageSieve;
            seen.push(s.key());
            new
        })
        .map(|s| {
            let t = settings.services[s as usize];
            TriggerView {
                service: s.name(),
                key: s.key(),
                trigger: t.count,
                block_seconds: t.ttl,
            }
        })
        .collect();
    let mut sources = vec![SourceView {
        source: "sshd",
        kind: "log",
        path: Some(sshd.path.clone()).filter(|p| !p.is_empty()),
        following: sshd.following,
        inode: sshd.inode,
        offset: Some(sshd.offset),
        lines_read: Some(sshd.lines_read),
        failures_found: Some(sshd.failures_found),
        rotations: Some(sshd.rotations),
        last_line: sshd.last_line.clone(),
        last_read_at: sshd.last_read_at.map(rfc3339),
        error: sshd.error.clone(),
    }];
    for s in [
        Service::SmtpAuth,
        Service::Imapd,
        Service::Pop3d,
        Service::ManageSieve,
        Service::Api,
    ] {
        sources.push(SourceView {
            source: s.name(),
            kind: "in-process",
            path: None,
            following: running,
            inode: None,
            offset: None,
            lines_read: None,
            failures_found: None,
            rotations: None,
            last_line: None,
            last_read_at: None,
            error: None,
        });
    }
    Ok(Json(Data::new(LfdStatus {
        running,
        enabled: settings.daemon,
        settings: LfdSettingsView {
            trigger: settings.trigger,
            trigger_block_seconds: settings.trigger_ttl,
            interval: settings.interval,
            services,
            permblock: settings.permblock,
            permblock_interval: settings.permblock_interval,
            permblock_count: settings.permblock_count,
            ignore: settings.ignore.iter().map(ToString::to_string).collect(),
            sshd_log: settings.sshd_log.clone(),
        },
        counts: LfdCountsView {
            failures_total: counts.failures_total,
            tracked_ips: counts.tracked_ips,
            bans_total: counts.bans_total,
            bans_24h: counts.bans_24h,
            escalations: counts.escalations,
            dropped: counts.dropped,
        },
        sources,
    })))
}

/// `GET /csf/lfd/failures?ip=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailuresQuery {
    /// Only this address.
    #[param(example = "203.0.113.5")]
    ip: Option<String>,
    /// At most this many addresses, latest failure first (default 500, at most 10000).
    #[param(example = 100)]
    limit: Option<String>,
}

/// An address's recent failures.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    #[schema(example = "203.0.113.5")]
    pub ip: String,
    /// The service of the latest failure.
    #[schema(example = "imapd")]
    pub service: String,
    /// Failures per service.
    pub services: BTreeMap<String, u64>,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The user name of the latest failure (cut at 64 bytes).
    pub last_user: String,
    /// An lfd ban is on now.
    pub banned: bool,
    pub banned_at: Option<String>,
    /// When the ban ends; null while permanent or not banned.
    pub ban_expires_at: Option<String>,
    /// Why the trigger did not ban (a local, ignored, whitelisted or trusted address).
    pub note: Option<String>,
}

/// The addresses lfd has failures on record for.
#[utoipa::path(
    get,
    path = "/api/v1/csf/lfd/failures",
    operation_id = "csf_lfd_failures",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(FailuresQuery),
    responses((status = 200, description = "Failures by address", body = Data<Vec<FailureView>>))
)]
pub async fn failures(
    State(state): State<AppState>,
    _a: Admin,
    Query(q): Query<FailuresQuery>,
) -> Result<Json<Data<Vec<FailureView>>>, ApiError> {
    let ip = match q.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<std::net::IpAddr>()
                .map_err(|_| ApiError::Validation(format!("Invalid IP address: {s:?}")))?,
        ),
    };
    let limit = match q.limit.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 500,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::Validation("limit must be 1 to 10000".into()))?,
    };
    let rows = on_fw(&state, move |fw| Ok(fw.lfd().failures(ip, limit))).await?;
    Ok(Json(Data::new(
        rows.into_iter()
            .map(|r| FailureView {
                ip: r.ip,
                service: r.service,
                services: r.services,
                count: r.count,
                first_seen: rfc3339(r.first_seen),
                last_seen: rfc3339(r.last_seen),
                last_user: r.last_user,
                banned: r.banned,
                banned_at: r.banned_at.map(rfc3339),
                ban_expires_at: r.ban_expires_at.map(rfc3339),
                note: r.note,
            })
            .collect(),
    )))
}

/// `GET /csf/alerts?page=&per_page=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// From 1 (default 1).
    #[param(example = 1)]
    page: Option<String>,
    /// 1 to 500 (default 50).
    #[param(example = 50)]
    per_page: Option<String>,
}

/// One alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: u64,
    pub at: String,
    /// `ban`, `permblock`, `blocklist` or `tamper`.
    #[schema(example = "ban")]
    pub kind: String,
    pub ip: Option<String>,
    pub service: Option<String>,
    #[schema(example = "203.0.113.5 blocked for 3600s: 10 failed IMAP logins in 3600s")]
    pub message: String,
    /// Whether it is (or was) to be emailed.
    pub email: bool,
}

/// A page of alerts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
    /// Alerts kept in all (the oldest are pruned past 10000).
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
}

/// The alerts lfd and the firewall raised, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/csf/alerts",
    operation_id = "csf_alerts",
    tag = "csf",
    security(("bearer" = ["admin"])),
    params(AlertsQuery),
    responses((status = 200, description = "A page of alerts", body = Data<AlertList>))
)]
pub async fn alerts(
    State(state): State<AppState>,
    _a: Admin,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Data<AlertList>>, ApiError> {
    let page = super::query_number(q.page.as_deref(), "page", 1u64, 1_000_000, 1)?;
    let per_page = super::query_number(q.per_page.as_deref(), "per_page", 1u64, 500, 50)?;
    let (list, total) = on_fw(&state, move |fw| Ok(fw.alerts().list(page, per_page)?)).await?;
    Ok(Json(Data::new(AlertList {
        alerts: list
            .into_iter()
            .map(|a| AlertView {
                id: a.id,
                at: rfc3339(a.at),
                kind: a.kind,
                ip: a.ip,
                service: a.service,
                message: a.message,
                email: a.email,
            })
            .collect(),
        total,
        page,
        per_page,
    })))
}

/// `GET /csf/alerts-service/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsServiceStatus {
    /// The sender runs.
    pub running: bool,
    /// `LF_ALERT_TO`.
    pub email: String,
    /// `LF_ALERT_FROM` (or `lfd@<hostname>`).
    pub from: String,
    /// Alert email goes through wispd's own outbound queue.
    pub smtp_configured: bool,
    /// `ALERT_WEBHOOK_URL` is set.
    pub webhook: bool,
    /// The webhook's scheme and host (the rest may carry a secret).
    pub webhook_host: Option<String>,
    /// `LF_ALERT_DIGEST`: seconds alerts wait after an alert email to go together in the next.
    pub digest_seconds: i64,
    /// Alerts waiting to be sent.
    pub unnotified: u64,
    pub emails_sent: u64,
    pub webhooks_sent: u64,
    /// Failed sends since start (each retry counts).
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_email_at: Option<String>,
    pub last_webhook_at: Option<String>,
}

/// The alert senders' state.
#[utoipa::path(
    get,
    path = "/api/v1/csf/alerts-service/status",
    operation_id = "csf_alerts_service_status",
    tag = "csf",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The senders' state", body = Data<AlertsServiceStatus>))
)]
pub async fn service_status(
    State(state): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<AlertsServiceStatus>>, ApiError> {
    let (s, stats, unnotified, can_mail) = on_fw(&state, |fw| {
        let s = fw.parsed_settings()?.lfd;
        let alerts = fw.alerts();
        let unnotified = alerts.unnotified(!s.webhook.is_empty())?;
        Ok((s, alerts.stats(), unnotified, alerts.can_mail()))
    })
    .await?;
    let webhook_host = reqwest_host(&s.webhook);
    Ok(Json(Data::new(AlertsServiceStatus {
        running: stats.running,
        from: if s.alert_from.is_empty() {
            "lfd@<hostname>".to_string()
        } else {
            s.alert_from.clone()
        },
        email: s.alert_to.clone(),
        smtp_configured: can_mail,
        webhook: !s.webhook.is_empty(),
        webhook_host,
        digest_seconds: s.alert_digest,
        unnotified,
        emails_sent: stats.emails_sent,
        webhooks_sent: stats.webhooks_sent,
        failures: stats.failures,
        last_error: stats.last_error,
        last_error_at: stats.last_error_at.map(rfc3339),
        last_email_at: stats.last_email_at.map(rfc3339),
        last_webhook_at: stats.last_webhook_at.map(rfc3339),
    })))
}

fn reqwest_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    Some(format!("{scheme}://{host}"))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(status, failures, alerts, service_status))]
pub struct LfdApi;
