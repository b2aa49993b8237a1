//! `/api/v1/email/filters`, `/email/autoresponders`, `/email/vacation`: the accounts' Sieve
//! scripts and autoresponders (the same scripts ManageSieve edits). A `user` token reaches the
//! accounts of its domains only.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wispd_engine::address;
use wispd_engine::directory::DirError;
use wispd_engine::sieve::{FilterError, Filters};
use wispd_store::schema::{Autoresponder, MailAccount, SieveScript};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339};

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> ApiError {
        match e {
            FilterError::NoSuchScript(_) => ApiError::NotFound(e.to_string()),
            FilterError::Exists(_) => ApiError::Conflict(e.to_string()),
            FilterError::Store(s) => ApiError::from(s),
            FilterError::Internal(s) => ApiError::Internal(s),
            FilterError::Invalid(_)
            | FilterError::Active(_)
            | FilterError::TooLarge { .. }
            | FilterError::TooMany(_)
            | FilterError::BadName(_) => ApiError::Validation(e.to_string()),
        }
    }
}

/// Runs `f` on a blocking thread with the filter engine and the directory.
async fn blocking<R: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Filters, &wispd_engine::directory::Directory) -> Result<R, ApiError>
    + Send
    + 'static,
) -> Result<R, ApiError> {
    let (filters, dir) = (s.mail.filters().clone(), s.directory.clone());
    tokio::task::spawn_blocking(move || f(&filters, &dir)).await?
}

/// The account `{account}` of `{domain}` names (local part or whole address), if the caller
/// manages the domain.
fn named_account(
    dir: &wispd_engine::directory::Directory,
    p: &Principal,
    domain: &str,
    account: &str,
) -> Result<MailAccount, ApiError> {
    let d = address::domain(domain)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
    if !p.owns_domain(&d) {
        return Err(ApiError::Forbidden(format!(
            "This token does not manage {d}"
        )));
    }
    let email = if account.contains('@') {
        account.to_string()
    } else {
        format!("{account}@{d}")
    };
    let found = match address::address(&email) {
        Some((_, ad)) if ad == d => dir.login_account(&email)?,
        Some(_) => {
            return Err(ApiError::Validation(format!(
                "{account} is not an address of {d}"
            )));
        }
        None => None,
    };
    found.ok_or_else(|| ApiError::NotFound(format!("No account {email}")))
}

/// Account `id`, if the caller may see it.
fn account_by_id(
    dir: &wispd_engine::directory::Directory,
    p: &Principal,
    id: &str,
) -> Result<MailAccount, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("No account with id {id:?}")))?;
    let a = dir.account(id)?;
    if p.owns_domain(&a.domain) {
        Ok(a)
    } else {
        Err(DirError::NotFound(format!("No account with id {id}")).into())
    }
}

/// One Sieve script of an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptView {
    #[schema(example = "main")]
    pub name: String,
    /// The source.
    #[schema(
        example = "require \"fileinto\";\nif header :contains \"Subject\" \"[list]\" { fileinto \"Lists\"; }\n"
    )]
    pub script: String,
    /// The one script that runs at delivery.
    pub active: bool,
    /// Bytes.
    pub size: usize,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

impl From<&SieveScript> for ScriptView {
    fn from(s: &SieveScript) -> ScriptView {
        ScriptView {
            name: s.name.clone(),
            script: s.source.clone(),
            active: s.active,
            size: s.source.len(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// An account's filters.
#[derive(Debug, Serialize, ToSchema)]
pub struct FiltersView {
    #[schema(example = "example.com")]
    pub domain: String,
    /// The local part.
    #[schema(example = "info")]
    pub account: String,
    pub account_id: u64,
    /// The active script's name; `null` when none runs.
    #[schema(required = true, example = "main")]
    pub active: Option<String>,
    pub scripts: Vec<ScriptView>,
}

fn filters_view(a: &MailAccount, scripts: &[SieveScript]) -> FiltersView {
    FiltersView {
        domain: a.domain.clone(),
        account: a.username.clone(),
        account_id: a.id,
        active: scripts.iter().find(|s| s.active).map(|s| s.name.clone()),
        scripts: scripts.iter().map(ScriptView::from).collect(),
    }
}

/// A script to store.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"script": "require \"fileinto\";\nif header :contains \"Subject\" \"[list]\" { fileinto \"Lists\"; }\n", "name": "main", "active": true}))]
#[serde(deny_unknown_fields)]
pub struct ScriptBody {
    /// Sieve source (RFC 5228).
    #[schema(value_type = String, required = true)]
    script: Option<String>,
    /// Default `main`.
    name: Option<String>,
    /// Make it the account's active script (`false`: store it inactive). Default: true for a
    /// new script; an existing one keeps its state on PUT.
    active: Option<bool>,
}

/// `?name=` of a DELETE.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct NameQuery {
    /// Delete only this script (else all the account's scripts).
    name: Option<String>,
}

async fn store_script(
    s: &AppState,
    p: Principal,
    domain: String,
    account: String,
    b: ScriptBody,
    create_only: bool,
) -> Result<(SieveScript, FiltersView), ApiError> {
    let script = b
        .script
        .ok_or_else(|| ApiError::Validation("script is required".into()))?;
    let name = b.name.unwrap_or_else(|| "main".into());
    blocking(s, move |f, dir| {
        let a = named_account(dir, &p, &domain, &account)?;
        let exists = f.script(a.id, &name)?.is_some();
        let activate = match b.active {
            Some(v) => Some(v),
            None if exists => None,
            None => Some(true),
        };
        let stored = f.put(a.id, &name, &script, activate, create_only)?;
        let all = f.scripts(a.id)?;
        Ok((stored, filters_view(&a, &all)))
    })
    .await
}

/// Stores a new Sieve script for the account.
#[utoipa::path(
    post,
    path = "/api/v1/email/filters/{domain}/{account}",
    operation_id = "email_filters_create",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("account" = String, Path, description = "The account's local part (or address)", example = "info"),
    ),
    request_body = ScriptBody,
    responses((status = 201, description = "The account's filters with the new script", body = Data<FiltersView>))
)]
pub async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, account)): Path<(String, String)>,
    JsonBody(b): JsonBody<ScriptBody>,
) -> Result<(StatusCode, Json<Data<FiltersView>>), ApiError> {
    let (_, view) = store_script(&s, p, domain, account, b, true).await?;
    Ok((StatusCode::CREATED, Json(Data::new(view))))
}

/// Creates or replaces a Sieve script of the account.
#[utoipa::path(
    put,
    path = "/api/v1/email/filters/{domain}/{account}",
    operation_id = "email_filters_put",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("account" = String, Path, description = "The account's local part (or address)", example = "info"),
    ),
    request_body = ScriptBody,
    responses((status = 200, description = "The account's filters", body = Data<FiltersView>))
)]
pub async fn put(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, account)): Path<(String, String)>,
    JsonBody(b): JsonBody<ScriptBody>,
) -> Result<Json<Data<FiltersView>>, ApiError> {
    let (_, view) = store_script(&s, p, domain, account, b, false).await?;
    Ok(Json(Data::new(view)))
}

/// The account's Sieve scripts.
#[utoipa::path(
    get,
    path = "/api/v1/email/filters/{domain}/{account}",
    operation_id = "email_filters_get",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("account" = String, Path, description = "The account's local part (or address)", example = "info"),
    ),
    responses((status = 200, description = "The account's filters", body = Data<FiltersView>))
)]
pub async fn get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, account)): Path<(String, String)>,
) -> Result<Json<Data<FiltersView>>, ApiError> {
    let view = blocking(&s, move |f, dir| {
        let a = named_account(dir, &p, &domain, &account)?;
        Ok(filters_view(&a, &f.scripts(a.id)?))
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// What a DELETE removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedScripts {
    pub account_id: u64,
    /// The names of the scripts deleted.
    pub deleted: Vec<String>,
}

/// Deletes one script (`?name=`) or all the account's scripts.
#[utoipa::path(
    delete,
    path = "/api/v1/email/filters/{domain}/{account}",
    operation_id = "email_filters_delete",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("account" = String, Path, description = "The account's local part (or address)", example = "info"),
        NameQuery,
    ),
    responses((status = 200, description = "What was deleted", body = Data<DeletedScripts>))
)]
pub async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, account)): Path<(String, String)>,
    Query(q): Query<NameQuery>,
) -> Result<Json<Data<DeletedScripts>>, ApiError> {
    let view = blocking(&s, move |f, dir| {
        let a = named_account(dir, &p, &domain, &account)?;
        let deleted = match q.name {
            Some(n) => {
                f.delete(a.id, &n, true)?;
                vec![n]
            }
            None => {
                let names = f.scripts(a.id)?.into_iter().map(|s| s.name).collect();
                f.delete_all(a.id)?;
                names
            }
        };
        Ok(DeletedScripts {
            account_id: a.id,
            deleted,
        })
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// An account's autoresponder.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"account_id": 1, "email": "info@example.com", "enabled": true,
    "subject": "Out of office", "body": "I am away until Monday.", "from": "",
    "start": "2026-12-20T00:00:00+00:00", "end": "2027-01-04T00:00:00+00:00", "interval_days": 1}))]
pub struct AutoresponderView {
    pub account_id: u64,
    #[schema(example = "info@example.com")]
    pub email: String,
    pub enabled: bool,
    pub subject: String,
    pub body: String,
    /// The reply's From: address; empty = the account's own.
    pub from: String,
    /// RFC 3339; `null` = from now on.
    #[schema(required = true)]
    pub start: Option<String>,
    /// RFC 3339; `null` = until turned off.
    #[schema(required = true)]
    pub end: Option<String>,
    /// One reply per sender per this many days (0 = every message).
    pub interval_days: u32,
}

fn responder_view(a: &MailAccount, r: Option<Autoresponder>) -> AutoresponderView {
    let r = r.unwrap_or(Autoresponder {
        enabled: false,
        subject: String::new(),
        body: String::new(),
        from: String::new(),
        start: None,
        end: None,
        interval_days: 1,
        updated_at: 0,
    });
    AutoresponderView {
        account_id: a.id,
        email: a.email(),
        enabled: r.enabled,
        subject: r.subject,
        body: r.body,
        from: r.from,
        start: r.start.map(rfc3339),
        end: r.end.map(rfc3339),
        interval_days: r.interval_days,
    }
}

/// The account's autoresponder (off, with empty texts, until set).
#[utoipa::path(
    get,
    path = "/api/v1/email/autoresponders/{account_id}",
    operation_id = "email_autoresponders_get",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("account_id" = u64, Path, description = "The account's id")),
    responses((status = 200, description = "The autoresponder", body = Data<AutoresponderView>))
)]
pub async fn responder_get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Data<AutoresponderView>>, ApiError> {
    let view = blocking(&s, move |f, dir| {
        let a = account_by_id(dir, &p, &id)?;
        Ok(responder_view(&a, f.autoresponder(a.id)?))
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// `PUT /email/autoresponders/{account_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"enabled": true, "subject": "Out of office", "body": "I am away until Monday.",
    "start": "2026-12-20", "end": "2027-01-04", "interval_days": 1}))]
#[serde(deny_unknown_fields)]
pub struct AutoresponderBody {
    #[schema(value_type = bool, required = true)]
    enabled: Option<bool>,
    /// At most 256 characters, one line; empty = `Auto: ` and the message's subject.
    #[serde(default)]
    subject: String,
    /// The reply's text, at most 64 KiB.
    #[serde(default)]
    body: String,
    /// An address the account owns; empty or absent = the account's own.
    #[serde(default)]
    from: String,
    /// RFC 3339 or `YYYY-MM-DD` (UTC midnight); `null` = from now on.
    start: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`; after `start`; `null` = until turned off.
    end: Option<String>,
    /// 0..=365; default 1.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 365)]
    interval_days: Option<i64>,
}

/// Unix seconds of an RFC 3339 timestamp or a `YYYY-MM-DD` date (UTC midnight).
fn parse_when(what: &str, s: &str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let date = s.split('-').collect::<Vec<_>>();
    if let [y, m, d] = date.as_slice()
        && y.len() == 4
        && m.len() == 2
        && d.len() == 2
        && let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>())
        && let Ok(month) = time::Month::try_from(m)
        && let Ok(date) = time::Date::from_calendar_date(y, month, d)
    {
        return Ok(date.midnight().assume_utc().unix_timestamp());
    }
    Err(ApiError::Validation(format!(
        "{what} must be an RFC 3339 timestamp or a YYYY-MM-DD date, not {s:?}"
    )))
}

/// Sets the account's autoresponder.
#[utoipa::path(
    put,
    path = "/api/v1/email/autoresponders/{account_id}",
    operation_id = "email_autoresponders_put",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("account_id" = u64, Path, description = "The account's id")),
    request_body = AutoresponderBody,
    responses((status = 200, description = "The autoresponder as set", body = Data<AutoresponderView>))
)]
pub async fn responder_put(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<AutoresponderBody>,
) -> Result<Json<Data<AutoresponderView>>, ApiError> {
    let enabled = b
        .enabled
        .ok_or_else(|| ApiError::Validation("enabled is required (true or false)".into()))?;
    if b.subject.chars().count() > 256 || b.subject.contains(['\r', '\n']) {
        return Err(ApiError::Validation(
            "subject must be one line of at most 256 characters".into(),
        ));
    }
    if b.body.len() > 64 << 10 {
        return Err(ApiError::Validation("body must be at most 64 KiB".into()));
    }
    let interval = b.interval_days.unwrap_or(1);
    let interval_days = u32::try_from(interval)
        .ok()
        .filter(|d| *d <= 365)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "interval_days must be between 0 and 365, not {interval}"
            ))
        })?;
    let start = b
        .start
        .as_deref()
        .map(|v| parse_when("start", v))
        .transpose()?;
    let end = b.end.as_deref().map(|v| parse_when("end", v)).transpose()?;
    if let (Some(st), Some(en)) = (start, end)
        && en <= st
    {
        return Err(ApiError::Validation("end must be after start".into()));
    }
    let view = blocking(&s, move |f, dir| {
        let a = account_by_id(dir, &p, &id)?;
        let from = b.from.trim().to_string();
        if !from.is_empty() && !address::owns(&a.email(), &from) {
            return Err(ApiError::Validation(format!(
                "from must be an address of {}, not {from:?}",
                a.email()
            )));
        }
        let r = Autoresponder {
            enabled,
            subject: b.subject,
            body: b.body,
            from,
            start,
            end,
            interval_days,
            updated_at: wispd_store::unix_now(),
        };
        f.set_autoresponder(a.id, &r)?;
        Ok(responder_view(&a, Some(r)))
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// An account of the domain that answers mail automatically now.
#[derive(Debug, Serialize, ToSchema)]
pub struct VacationView {
    pub account_id: u64,
    #[schema(example = "info@example.com")]
    pub email: String,
    /// `autoresponder` (set through `/email/autoresponders`) or `sieve` (the active script uses
    /// `vacation`).
    #[schema(example = "autoresponder")]
    pub source: String,
    /// The autoresponder's subject; `null` for a script.
    #[schema(required = true)]
    pub subject: Option<String>,
    /// RFC 3339; `null` when open.
    #[schema(required = true)]
    pub start: Option<String>,
    #[schema(required = true)]
    pub end: Option<String>,
}

/// The domain's accounts with an autoresponder on now or an active script that uses vacation.
#[utoipa::path(
    get,
    path = "/api/v1/email/vacation/{domain}",
    operation_id = "email_vacation_list",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    responses((status = 200, description = "Who is away", body = Data<Vec<VacationView>>))
)]
pub async fn vacation(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Data<Vec<VacationView>>>, ApiError> {
    let list = blocking(&s, move |f, dir| {
        let d = address::domain(&domain)
            .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
        if !p.owns_domain(&d) {
            return Err(ApiError::Forbidden(format!(
                "This token does not manage {d}"
            )));
        }
        let now = wispd_store::unix_now();
        let mut out = Vec::new();
        for a in dir.accounts(Some(std::slice::from_ref(&d)))? {
            if let Some(r) = f.autoresponder(a.id)?
                && r.enabled
                && r.start.is_none_or(|st| now >= st)
                && r.end.is_none_or(|en| now < en)
            {
                out.push(VacationView {
                    account_id: a.id,
                    email: a.email(),
                    source: "autoresponder".into(),
                    subject: Some(r.subject.clone()),
                    start: r.start.map(rfc3339),
                    end: r.end.map(rfc3339),
                });
            }
            if f.scripts(a.id)?
                .iter()
                .any(|s| s.active && uses_vacation(&s.source))
            {
                out.push(VacationView {
                    account_id: a.id,
                    email: a.email(),
                    source: "sieve".into(),
                    subject: None,
                    start: None,
                    end: None,
                });
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(Data::new(list)))
}

/// Whether a script requires the vacation extension (every vacation action needs it).
fn uses_vacation(source: &str) -> bool {
    source.split("require").skip(1).any(|rest| {
        let head = rest.split(';').next().unwrap_or_default();
        head.contains("\"vacation\"") || head.contains("\"vacation-seconds\"")
    })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(create, put, get, delete, responder_get, responder_put, vacation))]
pub struct SieveApi;

#[cfg(test)]
mod tests {
    #[test]
    fn dates_parse_as_rfc3339_or_plain_days() {
        assert_eq!(
            super::parse_when("start", "2026-12-20").ok(),
            Some(1_797_724_800)
        );
        assert_eq!(
            super::parse_when("start", "2026-12-20T01:00:00+01:00").ok(),
            Some(1_797_724_800)
        );
        for bad in ["2026-13-01", "20-12-2026", "tomorrow", "2026-02-30"] {
            assert!(super::parse_when("start", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vacation_is_seen_in_the_require() {
        assert!(super::uses_vacation(
            "require [\"fileinto\", \"vacation\"];\nvacation \"x\";"
        ));
        assert!(!super::uses_vacation(
            "require \"fileinto\";\n# vacation\nkeep;"
        ));
    }
}
