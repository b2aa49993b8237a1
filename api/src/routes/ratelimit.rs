//! `/email/ratelimit` (admin): rate-limit groups for mail that accounts send (submission),
//! who is in which, what they have used; and the MX's per-network caps.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use wispd_engine::ratelimit::{GroupView, RateError};
use wispd_store::schema::{InboundRate, RateGroup};

use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339};

/// A group's limits (0: no limit).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "small", "messages_per_hour": 100, "recipients_per_hour": 500,
    "messages_per_day": 1000}))]
pub struct GroupBody {
    /// 1 to 64 letters, digits, `-`, `_`, `.` (on `PUT` the path names the group; a name
    /// here must be the same).
    #[serde(default)]
    #[schema(example = "small")]
    pub name: Option<String>,
    #[serde(default)]
    pub messages_per_hour: u64,
    #[serde(default)]
    pub recipients_per_hour: u64,
    #[serde(default)]
    pub messages_per_day: u64,
    /// Whether recipients on this server (its accounts, any domain) count; by default only
    /// other domains' recipients do, and a message only to local ones is not counted.
    #[serde(default)]
    pub count_local: bool,
}

/// A group's new limits (`PUT`: all three are given; 0 is no limit).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"messages_per_hour": 100, "recipients_per_hour": 500,
    "messages_per_day": 1000, "count_local": false}))]
pub struct GroupUpdate {
    /// The group in the path, if given (a group can't be renamed).
    #[serde(default)]
    pub name: Option<String>,
    #[schema(required = true)]
    pub messages_per_hour: Option<u64>,
    #[schema(required = true)]
    pub recipients_per_hour: Option<u64>,
    #[schema(required = true)]
    pub messages_per_day: Option<u64>,
    #[serde(default)]
    pub count_local: bool,
}

/// `PUT /email/ratelimit/:name/members`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"members": ["alice@example.com", "example.org"]}))]
pub struct MembersBody {
    /// Accounts (`user@domain`) and whole domains (`domain`); they replace the group's
    /// members (an account's own assignment wins over its domain's). Members left out go back
    /// to `default`.
    #[schema(required = true)]
    pub members: Option<Vec<String>>,
}

/// The MX's caps per client network (an IPv4 /24, an IPv6 /64), `421 4.7.0` past them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"connections_per_minute": 60, "messages_per_minute": 30}))]
pub struct InboundBody {
    /// New connections to the MX per minute (0: no limit).
    pub connections_per_minute: u64,
    /// Messages (MAIL FROM) per minute (0: no limit).
    pub messages_per_minute: u64,
}

/// A group, its members and what they have used in their current windows.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupInfo {
    #[schema(example = "default")]
    pub name: String,
    pub messages_per_hour: u64,
    pub recipients_per_hour: u64,
    pub messages_per_day: u64,
    pub count_local: bool,
    /// Accounts and domains assigned to it (everyone else is in `default` too).
    pub members: Vec<String>,
    /// Summed over the group's accounts, in each account's current window.
    pub messages_this_hour: u64,
    pub recipients_this_hour: u64,
    pub messages_today: u64,
    /// Accounts at one of the limits now.
    pub limited_accounts: u64,
    pub created_at: Option<String>,
}

/// Every group and the MX's caps.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitView {
    /// `default` first.
    pub groups: Vec<GroupInfo>,
    pub inbound: InboundBody,
    /// Seconds in a window's "hour" (`[smtp] rate_window_seconds`; a day is 24 of them).
    pub hour_seconds: i64,
}

fn info(v: GroupView) -> GroupInfo {
    GroupInfo {
        name: v.group.name,
        messages_per_hour: v.group.messages_per_hour,
        recipients_per_hour: v.group.recipients_per_hour,
        messages_per_day: v.group.messages_per_day,
        count_local: v.group.count_local,
        members: v.members,
        messages_this_hour: v.messages_this_hour,
        recipients_this_hour: v.recipients_this_hour,
        messages_today: v.messages_today,
        limited_accounts: v.limited_accounts,
        created_at: (v.group.created_at > 0).then(|| rfc3339(v.group.created_at)),
    }
}

fn rate_error(e: RateError) -> ApiError {
    match e {
        RateError::Invalid(m) => ApiError::Validation(m),
        RateError::NotFound(m) => ApiError::NotFound(m),
        RateError::Conflict(m) => ApiError::Conflict(m),
        RateError::Store(e) => ApiError::from(e),
    }
}

async fn groups(s: &AppState) -> Result<Vec<GroupInfo>, ApiError> {
    let (r, dir) = (s.mail.ratelimit().clone(), s.directory.clone());
    tokio::task::spawn_blocking(move || {
        let accounts = dir.accounts(None)?;
        Ok::<_, ApiError>(
            r.groups(wispd_store::unix_now(), &accounts)
                .into_iter()
                .map(info)
                .collect(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn group(s: &AppState, name: &str) -> Result<GroupInfo, ApiError> {
    groups(s)
        .await?
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("No rate-limit group {name}")))
}

/// The groups with their members and usage, and the MX's caps.
#[utoipa::path(
    get,
    path = "/api/v1/email/ratelimit",
    operation_id = "email_ratelimit_get",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The rate limits", body = Data<RateLimitView>))
)]
pub async fn get(
    State(s): State<AppState>,
    _a: Admin,
) -> Result<Json<Data<RateLimitView>>, ApiError> {
    let r = s.mail.ratelimit();
    let inbound = r.inbound();
    Ok(Json(Data::new(RateLimitView {
        groups: groups(&s).await?,
        inbound: InboundBody {
            connections_per_minute: inbound.connections_per_minute,
            messages_per_minute: inbound.messages_per_minute,
        },
        hour_seconds: r.hour_seconds(),
    })))
}

fn to_group(name: String, b: &GroupBody) -> RateGroup {
    RateGroup {
        name,
        messages_per_hour: b.messages_per_hour,
        recipients_per_hour: b.recipients_per_hour,
        messages_per_day: b.messages_per_day,
        count_local: b.count_local,
        created_at: 0,
    }
}

async fn put_group(s: &AppState, g: RateGroup, create: bool) -> Result<GroupInfo, ApiError> {
    let r = s.mail.ratelimit().clone();
    let g = tokio::task::spawn_blocking(move || r.put_group(g, create, wispd_store::unix_now()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(rate_error)?;
    group(s, &g.name).await
}

/// Creates a group.
#[utoipa::path(
    post,
    path = "/api/v1/email/ratelimit",
    operation_id = "email_ratelimit_post",
    tag = "email",
    security(("bearer" = ["admin"])),
    request_body = GroupBody,
    responses((status = 201, description = "The new group", body = Data<GroupInfo>))
)]
pub async fn post(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<GroupBody>,
) -> Result<(axum::http::StatusCode, Json<Data<GroupInfo>>), ApiError> {
    let Some(name) = b.name.clone().filter(|n| !n.trim().is_empty()) else {
        return Err(ApiError::Validation("name: required".into()));
    };
    let g = put_group(&s, to_group(name, &b), true).await?;
    Ok((axum::http::StatusCode::CREATED, Json(Data::new(g))))
}

/// Changes a group's limits (`default` included: it exists without being created).
#[utoipa::path(
    put,
    path = "/api/v1/email/ratelimit/{name}",
    operation_id = "email_ratelimit_put",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The group")),
    request_body = GroupUpdate,
    responses((status = 200, description = "The group", body = Data<GroupInfo>))
)]
pub async fn put(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<GroupUpdate>,
) -> Result<Json<Data<GroupInfo>>, ApiError> {
    let name = name.trim().to_ascii_lowercase();
    if let Some(n) = &b.name
        && n.trim().to_ascii_lowercase() != name
    {
        return Err(ApiError::Validation(format!(
            "name: {n:?} is not the group in the path ({name}); a group can't be renamed"
        )));
    }
    let required = |v: Option<u64>, field: &str| {
        v.ok_or_else(|| ApiError::Validation(format!("{field}: required (0 is no limit)")))
    };
    let g = RateGroup {
        name,
        messages_per_hour: required(b.messages_per_hour, "messages_per_hour")?,
        recipients_per_hour: required(b.recipients_per_hour, "recipients_per_hour")?,
        messages_per_day: required(b.messages_per_day, "messages_per_day")?,
        count_local: b.count_local,
        created_at: 0,
    };
    Ok(Json(Data::new(put_group(&s, g, false).await?)))
}

/// Deletes a group; its members fall back to `default` (which can't be deleted).
#[utoipa::path(
    delete,
    path = "/api/v1/email/ratelimit/{name}",
    operation_id = "email_ratelimit_delete",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The group")),
    responses((status = 200, description = "Deleted", body = Data<Deleted>))
)]
pub async fn delete(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
) -> Result<Json<Data<Deleted>>, ApiError> {
    let r = s.mail.ratelimit().clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || r.delete_group(&n))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(rate_error)?;
    Ok(Json(Data::new(Deleted {
        name: name.trim().to_ascii_lowercase(),
        deleted: true,
    })))
}

/// A deleted group.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub name: String,
    pub deleted: bool,
}

/// Replaces a group's members: accounts and whole domains of this server.
#[utoipa::path(
    put,
    path = "/api/v1/email/ratelimit/{name}/members",
    operation_id = "email_ratelimit_members",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The group")),
    request_body = MembersBody,
    responses((status = 200, description = "The group", body = Data<GroupInfo>))
)]
pub async fn members(
    State(s): State<AppState>,
    _a: Admin,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<MembersBody>,
) -> Result<Json<Data<GroupInfo>>, ApiError> {
    let Some(list) = b.members else {
        return Err(ApiError::Validation("members: required".into()));
    };
    if list.len() > 10_000 {
        return Err(ApiError::Validation(
            "members: at most 10000 in one request".into(),
        ));
    }
    let (r, dir) = (s.mail.ratelimit().clone(), s.directory.clone());
    let n = name.clone();
    tokio::task::spawn_blocking(move || {
        let known = |m: &str| match m.split_once('@') {
            Some(_) => dir.login_account(m).ok().flatten().is_some(),
            None => dir.is_local_domain(m).unwrap_or(false),
        };
        r.set_members(&n, &list, &known)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(rate_error)?;
    Ok(Json(Data::new(
        group(&s, &name.trim().to_ascii_lowercase()).await?,
    )))
}

/// The MX's per-network caps.
#[utoipa::path(
    put,
    path = "/api/v1/email/ratelimit/inbound",
    operation_id = "email_ratelimit_inbound",
    tag = "email",
    security(("bearer" = ["admin"])),
    request_body = InboundBody,
    responses((status = 200, description = "The caps", body = Data<InboundBody>))
)]
pub async fn inbound(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<InboundBody>,
) -> Result<Json<Data<InboundBody>>, ApiError> {
    let r = s.mail.ratelimit().clone();
    let set = InboundRate {
        connections_per_minute: b.connections_per_minute,
        messages_per_minute: b.messages_per_minute,
    };
    let got = tokio::task::spawn_blocking(move || r.set_inbound(set))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(rate_error)?;
    Ok(Json(Data::new(InboundBody {
        connections_per_minute: got.connections_per_minute,
        messages_per_minute: got.messages_per_minute,
    })))
}

#[derive(OpenApi)]
#[openapi(paths(get, post, put, delete, members, inbound))]
pub struct RatelimitApi;
