//! `/api/v1/email/*`: accounts, forwarders and catch-alls over the mail directory. A `user`
//! token reaches only the domains bound to it; anything else reads as absent (404) or, for a
//! domain it names itself, forbidden (403).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wispd_engine::address;
use wispd_engine::directory::{DirError, Directory, NewAccount};
use wispd_engine::dkim;
use wispd_store::schema::{DkimKey, MailAccount, MailCatchall, MailForwarder};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{Admin, Caller, JsonBody};
use crate::{AppState, rfc3339};

async fn on_dir<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Directory) -> Result<R, DirError> + Send + 'static,
) -> Result<R, ApiError> {
    let dir = state.directory.clone();
    Ok(tokio::task::spawn_blocking(move || f(&dir)).await??)
}

fn account_view(a: &MailAccount) -> Value {
    json!({
        "id": a.id,
        "domain": a.domain,
        "username": a.username,
        "email": a.email(),
        "quota_mb": a.quota_mb,
        "used_bytes": a.used_bytes,
        "enabled": a.enabled,
        "created_at": rfc3339(a.created_at),
    })
}

fn forwarder_view(f: &MailForwarder) -> Value {
    json!({ "id": f.id, "source": f.source, "destination": f.destination, "created_at": rfc3339(f.created_at) })
}

fn catchall_view(c: &MailCatchall) -> Value {
    json!({ "domain": c.domain, "enabled": c.enabled, "destination": c.destination })
}

/// The domains a caller is limited to (`None` for admin).
fn scope(p: &Principal) -> Option<Vec<String>> {
    (!p.is_admin()).then(|| p.domains.clone())
}

fn require_domain(p: &Principal, domain: &str) -> Result<(), ApiError> {
    if p.owns_domain(domain) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "This token does not manage {domain}"
        )))
    }
}

/// The account `id`, as long as the caller may see it.
fn owned_account(dir: &Directory, p: &Principal, id: u64) -> Result<MailAccount, DirError> {
    let a = dir.account(id)?;
    if p.owns_domain(&a.domain) {
        Ok(a)
    } else {
        Err(DirError::NotFound(format!("No account with id {id}")))
    }
}

fn parse_id(id: &str, what: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("No {what} with id {id:?}")))
}

/// `GET /email/status`, in the seed's shape: `postfix` is wispd's SMTP engine, `dovecot` its
/// IMAP engine, `mta_path` this binary.
pub async fn status(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(status_view(&state).await?))
}

/// `POST /email/install` (admin): starts the mail listeners and records the stack as installed,
/// so it listens again after a restart. Installing an installed stack changes nothing.
pub async fn install(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    state.mail.install().await?;
    let status = status_view(&state).await?;
    Ok(Json(
        json!({ "success": true, "message": "Mail stack installed", "data": status }),
    ))
}

async fn status_view(state: &AppState) -> Result<Value, ApiError> {
    let mail = state.mail.status().await?;
    let clamd = wispd_engine::service::probe_clamd().await;
    let mta_path = if mail.installed {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let smtp_running = !mail.smtp.is_empty();
    let imap_running = !mail.imap.is_empty();
    let imap_installed = mail.installed;
    Ok(json!({
        "installed": mail.installed,
        "mta_installed": mail.installed,
        "mta_path": mta_path,
        "postfix": { "installed": mail.installed, "running": smtp_running },
        "dovecot": { "installed": imap_installed, "running": imap_running },
        "dovecot_installed": imap_installed,
        "dovecot_running": imap_running,
        "clamav_installed": clamd.installed,
        "clamav_running": clamd.running,
    }))
}

pub async fn accounts(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Value>, ApiError> {
    let domains = scope(&p);
    let list = on_dir(&s, move |d| d.accounts(domains.as_deref())).await?;
    let accounts = if list.is_empty() {
        Value::Null
    } else {
        list.iter().map(account_view).collect()
    };
    Ok(Json(json!({ "accounts": accounts, "total": list.len() })))
}

#[derive(Debug, Deserialize)]
pub struct AccountBody {
    domain: Option<String>,
    username: Option<String>,
    password: Option<String>,
    quota_mb: Option<i64>,
}

pub async fn account_create(
    State(s): State<AppState>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<AccountBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Some(d) = b.domain.as_deref().and_then(address::domain) {
        require_domain(&p, &d)?;
    }
    let req = NewAccount {
        domain: b.domain,
        username: b.username,
        password: b.password,
        quota_mb: b.quota_mb,
    };
    let a = on_dir(&s, move |d| d.create_account(req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": account_view(&a) })),
    ))
}

/// Runs `f` on account `id` once it is known to be the caller's, and answers with the account.
async fn on_owned_account(
    s: &AppState,
    p: Principal,
    id: &str,
    f: impl FnOnce(&Directory, u64) -> Result<MailAccount, DirError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(id, "account")?;
    let a = on_dir(s, move |d| {
        owned_account(d, &p, id)?;
        f(d, id)
    })
    .await?;
    Ok(Json(json!({ "success": true, "data": account_view(&a) })))
}

pub async fn account_get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_owned_account(&s, p, &id, |d, id| d.account(id)).await
}

#[derive(Debug, Deserialize)]
pub struct AccountUpdate {
    password: Option<String>,
    quota_mb: Option<i64>,
}

pub async fn account_update(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<AccountUpdate>,
) -> Result<Json<Value>, ApiError> {
    on_owned_account(&s, p, &id, move |d, id| {
        d.update_account(id, b.password.filter(|p| !p.is_empty()), b.quota_mb)
    })
    .await
}

pub async fn account_toggle(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_owned_account(&s, p, &id, |d, id| d.toggle_account(id)).await
}

pub async fn account_delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_owned_account(&s, p, &id, |d, id| d.delete_account(id)).await
}

pub async fn forwarders(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Value>, ApiError> {
    let domains = scope(&p);
    let list = on_dir(&s, move |d| d.forwarders(domains.as_deref())).await?;
    Ok(Json(
        json!({ "success": true, "data": list.iter().map(forwarder_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ForwarderBody {
    source: Option<String>,
    destination: Option<String>,
}

pub async fn forwarder_create(
    State(s): State<AppState>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<ForwarderBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let source = b.source.unwrap_or_default();
    let destination = b.destination.unwrap_or_default();
    for addr in [&source, &destination] {
        if let Some((_, d)) = address::address(addr) {
            require_domain(&p, &d)?;
        }
    }
    let f = on_dir(&s, move |d| d.create_forwarder(&source, &destination)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": forwarder_view(&f) })),
    ))
}

pub async fn forwarder_delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id, "forwarder")?;
    let f = on_dir(&s, move |d| {
        let visible = d
            .forwarders(scope(&p).as_deref())?
            .into_iter()
            .any(|f| f.id == id);
        if !visible {
            return Err(DirError::NotFound(format!("No forwarder with id {id}")));
        }
        d.delete_forwarder(id)
    })
    .await?;
    Ok(Json(json!({ "success": true, "data": forwarder_view(&f) })))
}

pub async fn catchall(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = address::domain(&domain)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
    require_domain(&p, &d)?;
    let c = on_dir(&s, move |dir| dir.catchall(&d)).await?;
    Ok(Json(json!({ "success": true, "data": catchall_view(&c) })))
}

#[derive(Debug, Deserialize)]
pub struct CatchallBody {
    enabled: Option<bool>,
    destination: Option<String>,
}

pub async fn catchall_set(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
    JsonBody(b): JsonBody<CatchallBody>,
) -> Result<Json<Value>, ApiError> {
    let d = address::domain(&domain)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
    require_domain(&p, &d)?;
    if let Some(dest) = b.destination.as_deref().and_then(address::address) {
        require_domain(&p, &dest.1)?;
    }
    let enabled = b
        .enabled
        .ok_or_else(|| ApiError::Validation("enabled is required (true or false)".into()))?;
    let c = on_dir(&s, move |dir| {
        dir.set_catchall(&d, enabled, b.destination.as_deref())
    })
    .await?;
    Ok(Json(json!({ "success": true, "data": catchall_view(&c) })))
}

fn dkim_view(k: &DkimKey) -> Value {
    json!({
        "domain": k.domain,
        "selector": k.selector,
        "algorithm": k.algorithm,
        "public_key": k.public_key,
        "dns_name": dkim::dns_name(k),
        "dns_record": dkim::dns_record(k),
        "created_at": rfc3339(k.created_at),
    })
}

/// The domain of a DKIM path, checked against the caller's domains.
fn dkim_domain(p: &Principal, domain: &str) -> Result<String, ApiError> {
    let d = address::domain(domain)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
    require_domain(p, &d)?;
    Ok(d)
}

/// `GET /email/dkim`: every domain's key the caller may see (public halves only).
pub async fn dkim_list(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Value>, ApiError> {
    let domains = scope(&p);
    let store = s.store.clone();
    let keys =
        tokio::task::spawn_blocking(move || dkim::list(&store, domains.as_deref())).await??;
    let data: Vec<Value> = keys.iter().map(dkim_view).collect();
    Ok(Json(json!({ "success": true, "data": data })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimBody {
    selector: Option<String>,
    algorithm: Option<String>,
}

/// `POST /email/dkim/:domain {selector, algorithm}`: generates the domain's key (a new one
/// replaces the old: key rotation) and returns the record to publish.
pub async fn dkim_create(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
    JsonBody(b): JsonBody<DkimBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let d = dkim_domain(&p, &domain)?;
    let store = s.store.clone();
    let key = tokio::task::spawn_blocking(move || {
        dkim::create(&store, &d, b.selector.as_deref(), b.algorithm.as_deref())
    })
    .await??;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": dkim_view(&key) })),
    ))
}

pub async fn dkim_delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = dkim_domain(&p, &domain)?;
    let store = s.store.clone();
    let key = tokio::task::spawn_blocking(move || dkim::delete(&store, &d)).await??;
    Ok(Json(json!({ "success": true, "data": dkim_view(&key) })))
}

/// `GET /email/dkim/:domain/verify`: is the record published (through `[dns].nameservers`)?
pub async fn dkim_verify(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = dkim_domain(&p, &domain)?;
    let store = s.store.clone();
    let key = tokio::task::spawn_blocking(move || dkim::get(&store, &d)).await??;
    let resolver = dkim::resolver(s.mail.nameservers())?;
    let published = dkim::verify(&resolver, &key).await;
    Ok(Json(json!({ "success": true, "data": {
        "domain": key.domain,
        "dns_name": dkim::dns_name(&key),
        "expected": dkim::dns_record(&key),
        "found": published.found,
        "matches": published.matches,
        "record": published.record,
        "error": published.error,
    }})))
}

fn queue_view(m: &wispd_store::schema::QueuedMessage) -> Value {
    json!({
        "id": m.id,
        "sender": m.sender,
        "created_at": m.created_at,
        "size": m.size,
        "source": m.source,
        "recipients": m.recipients.iter().map(|r| json!({
            "address": r.address,
            "original": r.original,
            "status": r.status,
            "attempts": r.attempts,
            "next_attempt": if r.status == "queued" { Some(r.next_attempt) } else { None },
            "last_attempt": r.last_attempt,
            "last_error": r.last_error,
            "remote": r.remote,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /email/queue` (admin): every message waiting for delivery to other servers, with each
/// recipient's state (like `mailq`).
pub async fn queue_list(State(s): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let queue = s.mail.queue().clone();
    let all = tokio::task::spawn_blocking(move || queue.list()).await??;
    Ok(Json(json!({
        "success": true,
        "data": all.iter().map(queue_view).collect::<Vec<_>>(),
    })))
}

/// `POST /email/queue/flush` (admin): retry every waiting recipient now (like `postqueue -f`).
pub async fn queue_flush(
    State(s): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let queue = s.mail.queue().clone();
    let n = tokio::task::spawn_blocking(move || queue.flush()).await??;
    Ok(Json(json!({
        "success": true,
        "message": format!("{n} recipient(s) scheduled for delivery now"),
        "data": { "scheduled": n },
    })))
}

/// `DELETE /email/queue/:id` (admin): drop a queued message without a bounce (like
/// `postsuper -d`).
pub async fn queue_delete(
    State(s): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::Validation(format!("Invalid queue id: {id:?}")))?;
    let queue = s.mail.queue().clone();
    let m = tokio::task::spawn_blocking(move || queue.delete(id)).await??;
    Ok(Json(json!({
        "success": true,
        "message": format!("Message {id} removed from the queue"),
        "data": queue_view(&m),
    })))
}

/// The OpenAPI part of this group (merged into the whole document in `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths())]
pub struct EmailApi;
