//! `/api/v1/email/*`: accounts, forwarders and catch-alls over the mail directory. A `user`
//! token reaches only the domains bound to it; anything else reads as absent (404) or, for a
//! domain it names itself, forbidden (403).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wispd_engine::address;
use wispd_engine::clamav::Probe as Clamd;
use wispd_engine::directory::{DirError, Directory, NewAccount};
use wispd_engine::dkim::{self, Published};
use wispd_engine::service::MailStatus;
use wispd_store::schema::{
    DkimKey, MailAccount, MailCatchall, MailForwarder, QueuedMessage, QueuedRecipient,
};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{Admin, Caller, ImportBody, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339};

async fn on_dir<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Directory) -> Result<R, DirError> + Send + 'static,
) -> Result<R, ApiError> {
    let dir = state.directory.clone();
    Ok(tokio::task::spawn_blocking(move || f(&dir)).await??)
}

/// A successful action that also says what it did: `{"success": true, "message": …, "data": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notice<T> {
    /// Always `true`.
    pub success: bool,
    /// What was done, for people.
    pub message: String,
    pub data: T,
}

impl<T> Notice<T> {
    fn new(message: impl Into<String>, data: T) -> Notice<T> {
        Notice {
            success: true,
            message: message.into(),
            data,
        }
    }
}

/// A mail account (mailbox owner), never with its password or hash.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 1, "domain": "example.com", "username": "info", "email": "info@example.com",
    "quota_mb": 1024, "used_bytes": 0, "enabled": true, "created_at": "2026-05-11T10:15:03+00:00"
}))]
pub struct AccountView {
    /// The account's id, as in `/email/accounts/{id}`.
    #[schema(example = 1)]
    pub id: u64,
    /// Lowercase.
    #[schema(example = "example.com")]
    pub domain: String,
    /// The local part, lowercase.
    #[schema(example = "info")]
    pub username: String,
    /// `username@domain`.
    #[schema(example = "info@example.com")]
    pub email: String,
    /// Quota in MiB; 0 = unlimited.
    #[schema(example = 1024)]
    pub quota_mb: u64,
    /// Bytes the account's mail takes up.
    #[schema(example = 0)]
    pub used_bytes: u64,
    /// A disabled account can't log in and receives no mail.
    #[schema(example = true)]
    pub enabled: bool,
    /// RFC 3339.
    #[schema(example = "2026-05-11T10:15:03+00:00")]
    pub created_at: String,
}

impl From<&MailAccount> for AccountView {
    fn from(a: &MailAccount) -> AccountView {
        AccountView {
            id: a.id,
            domain: a.domain.clone(),
            username: a.username.clone(),
            email: a.email(),
            quota_mb: a.quota_mb,
            used_bytes: a.used_bytes,
            enabled: a.enabled,
            created_at: rfc3339(a.created_at),
        }
    }
}

/// The seed's listing shape, without the success wrapper: `accounts` is `null` when there are
/// none.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"accounts": null, "total": 0}))]
pub struct AccountList {
    /// The accounts, by id; `null` (not `[]`) when there are none.
    #[schema(required = true)]
    pub accounts: Option<Vec<AccountView>>,
    /// How many accounts there are.
    #[schema(example = 0)]
    pub total: usize,
}

/// A forwarder: mail for `source` goes to `destination`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForwarderView {
    /// The forwarder's id, as in `/email/forwarders/{id}`.
    #[schema(example = 1)]
    pub id: u64,
    /// The address that forwards, on a local domain.
    #[schema(example = "sales@example.com")]
    pub source: String,
    /// Where its mail goes: a local account or forwarder, or any remote address.
    #[schema(example = "info@example.com")]
    pub destination: String,
    /// RFC 3339.
    #[schema(example = "2026-05-11T10:15:03+00:00")]
    pub created_at: String,
}

impl From<&MailForwarder> for ForwarderView {
    fn from(f: &MailForwarder) -> ForwarderView {
        ForwarderView {
            id: f.id,
            source: f.source.clone(),
            destination: f.destination.clone(),
            created_at: rfc3339(f.created_at),
        }
    }
}

/// A domain's catch-all: when enabled, mail for unknown local parts goes to `destination`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"domain": "example.com", "enabled": false, "destination": ""}))]
pub struct CatchallView {
    #[schema(example = "example.com")]
    pub domain: String,
    pub enabled: bool,
    /// An address on the same domain; empty when never set.
    #[schema(example = "info@example.com")]
    pub destination: String,
}

impl From<&MailCatchall> for CatchallView {
    fn from(c: &MailCatchall) -> CatchallView {
        CatchallView {
            domain: c.domain.clone(),
            enabled: c.enabled,
            destination: c.destination.clone(),
        }
    }
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

/// One engine of the stack in `/email/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EngineStatus {
    pub installed: bool,
    /// Listening now.
    pub running: bool,
}

/// The mail stack, in the seed's shape (without the success wrapper): `postfix` is wispd's SMTP
/// engine, `dovecot` its IMAP engine, `mta_path` this binary.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "installed": false, "mta_installed": false, "mta_path": "",
    "postfix": {"installed": false, "running": false},
    "dovecot": {"installed": false, "running": false},
    "dovecot_installed": false, "dovecot_running": false,
    "clamav_installed": false, "clamav_running": false
}))]
pub struct StatusView {
    /// `POST /email/install` has been done.
    pub installed: bool,
    /// The same as `installed`: wispd is its own MTA.
    pub mta_installed: bool,
    /// This binary's path once installed, else empty.
    #[schema(example = "/usr/local/bin/wispd")]
    pub mta_path: String,
    /// The SMTP engine.
    pub postfix: EngineStatus,
    /// The IMAP engine.
    pub dovecot: EngineStatus,
    /// `dovecot.installed`.
    pub dovecot_installed: bool,
    /// `dovecot.running`.
    pub dovecot_running: bool,
    /// clamd's socket (`/email/clamav` `socket`) exists, or its daemon is installed.
    pub clamav_installed: bool,
    /// clamd answers `PING` on that socket.
    pub clamav_running: bool,
}

impl StatusView {
    fn new(mail: &MailStatus, clamd: &Clamd, mta_path: String) -> StatusView {
        let smtp_running = !mail.smtp.is_empty();
        let imap_running = !mail.imap.is_empty();
        let imap_installed = mail.installed;
        StatusView {
            installed: mail.installed,
            mta_installed: mail.installed,
            mta_path,
            postfix: EngineStatus {
                installed: mail.installed,
                running: smtp_running,
            },
            dovecot: EngineStatus {
                installed: imap_installed,
                running: imap_running,
            },
            dovecot_installed: imap_installed,
            dovecot_running: imap_running,
            clamav_installed: clamd.installed,
            clamav_running: clamd.running,
        }
    }
}

/// The state of the mail stack (SMTP, IMAP, ClamAV).
#[utoipa::path(
    get,
    path = "/api/v1/email/status",
    operation_id = "email_status",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    responses((status = 200, description = "The stack's state, in the seed's shape (no success wrapper)", body = StatusView))
)]
pub async fn status(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<StatusView>, ApiError> {
    Ok(Json(status_view(&state).await?))
}

/// Installs the mail stack: starts the listeners, and again after every restart.
///
/// Installing an installed stack changes nothing. A listen address in use answers 503 and installs
/// nothing.
#[utoipa::path(
    post,
    path = "/api/v1/email/install",
    operation_id = "email_install",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Installed; the stack's state", body = Notice<StatusView>))
)]
pub async fn install(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Notice<StatusView>>, ApiError> {
    state.mail.install().await?;
    let status = status_view(&state).await?;
    Ok(Json(Notice::new("Mail stack installed", status)))
}

async fn status_view(state: &AppState) -> Result<StatusView, ApiError> {
    let mail = state.mail.status().await?;
    let clamd = state.mail.clamav().probe().await;
    let mta_path = if mail.installed {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(StatusView::new(&mail, &clamd, mta_path))
}

/// The mail accounts of the caller's domains.
#[utoipa::path(
    get,
    path = "/api/v1/email/accounts",
    operation_id = "email_accounts_list",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    responses((status = 200, description = "The accounts, in the seed's shape (no success wrapper)", body = AccountList))
)]
pub async fn accounts(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<AccountList>, ApiError> {
    let domains = scope(&p);
    let list = on_dir(&s, move |d| d.accounts(domains.as_deref())).await?;
    let total = list.len();
    let accounts = (!list.is_empty()).then(|| list.iter().map(AccountView::from).collect());
    Ok(Json(AccountList { accounts, total }))
}

/// `POST /email/accounts`: a new mailbox. Missing fields are named in the 400 ("Domain is
/// required").
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"domain": "example.com", "username": "info", "password": "S3cure•pass", "quota_mb": 1024}))]
pub struct AccountBody {
    /// A domain the token manages.
    #[schema(value_type = String, required = true, example = "example.com")]
    domain: Option<String>,
    /// The local part; stored lowercase.
    #[schema(value_type = String, required = true, example = "info")]
    username: Option<String>,
    /// 8 to 256 characters, no control characters.
    #[schema(value_type = String, required = true, example = "S3cure•pass", min_length = 8, max_length = 256)]
    password: Option<String>,
    /// Quota in MiB, 0 (unlimited, the default) to 1073741824.
    #[schema(example = 1024, minimum = 0, maximum = 1_073_741_824)]
    quota_mb: Option<i64>,
}

/// Creates a mail account with its standard mailboxes.
#[utoipa::path(
    post,
    path = "/api/v1/email/accounts",
    operation_id = "email_accounts_create",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    request_body = AccountBody,
    responses((status = 201, description = "Created", body = Data<AccountView>))
)]
pub async fn account_create(
    State(s): State<AppState>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<AccountBody>,
) -> Result<(StatusCode, Json<Data<AccountView>>), ApiError> {
    if let Some(d) = b.domain.as_deref().and_then(address::domain) {
        require_domain(&p, &d)?;
    }
    let req = NewAccount {
        domain: b.domain,
        username: b.username,
        password: b.password,
        quota_mb: b.quota_mb,
        password_hash: None,
    };
    let a = on_dir(&s, move |d| d.create_account(req)).await?;
    Ok((StatusCode::CREATED, Json(Data::new(AccountView::from(&a)))))
}

/// `POST /email/accounts/import`: an account brought over from another server with the hash
/// its users' password has there.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"domain": "example.com", "username": "info",
    "password_hash": "{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
    "quota_mb": 1024}))]
pub struct AccountImport {
    #[schema(value_type = String, required = true, example = "example.com")]
    domain: Option<String>,
    #[schema(value_type = String, required = true, example = "info")]
    username: Option<String>,
    /// Dovecot's form: `{SHA512-CRYPT}`, `{SHA256-CRYPT}` (at most 100,000 rounds),
    /// `{BLF-CRYPT}` (cost at most 12), `{ARGON2I}`, `{ARGON2ID}`, `{MD5-CRYPT}`, `{SSHA512}`,
    /// `{PLAIN}`. Replaced by Argon2id at the first login that matches it.
    #[schema(value_type = String, required = true)]
    password_hash: Option<String>,
    #[schema(example = 1024, minimum = 0, maximum = 1_073_741_824)]
    quota_mb: Option<i64>,
}

/// Creates an account that keeps the password hash it has on another server.
#[utoipa::path(
    post,
    path = "/api/v1/email/accounts/import",
    operation_id = "email_accounts_import",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    request_body = AccountImport,
    responses((status = 201, description = "Created", body = Data<AccountView>))
)]
pub async fn account_import(
    State(s): State<AppState>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<AccountImport>,
) -> Result<(StatusCode, Json<Data<AccountView>>), ApiError> {
    if let Some(d) = b.domain.as_deref().and_then(address::domain) {
        require_domain(&p, &d)?;
    }
    let Some(hash) = b.password_hash.filter(|h| !h.is_empty()) else {
        return Err(ApiError::Validation("password_hash is required".into()));
    };
    let req = NewAccount {
        domain: b.domain,
        username: b.username,
        password: None,
        quota_mb: b.quota_mb,
        password_hash: Some(hash),
    };
    let a = on_dir(&s, move |d| d.create_account(req)).await?;
    Ok((StatusCode::CREATED, Json(Data::new(AccountView::from(&a)))))
}

/// Runs `f` on account `id` once it is known to be the caller's, and answers with the account.
async fn on_owned_account(
    s: &AppState,
    p: Principal,
    id: &str,
    f: impl FnOnce(&Directory, u64) -> Result<MailAccount, DirError> + Send + 'static,
) -> Result<Json<Data<AccountView>>, ApiError> {
    let id = parse_id(id, "account")?;
    let a = on_dir(s, move |d| {
        owned_account(d, &p, id)?;
        f(d, id)
    })
    .await?;
    Ok(Json(Data::new(AccountView::from(&a))))
}

/// One mail account.
#[utoipa::path(
    get,
    path = "/api/v1/email/accounts/{id}",
    operation_id = "email_accounts_get",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("id" = u64, Path, description = "The account's id")),
    responses((status = 200, description = "The account", body = Data<AccountView>))
)]
pub async fn account_get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Data<AccountView>>, ApiError> {
    on_owned_account(&s, p, &id, |d, id| d.account(id)).await
}

/// One stored message of an account, as `wispd messages` prints it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    #[schema(example = "INBOX")]
    pub mailbox: String,
    pub uid: u32,
    /// Bytes.
    pub size: u64,
    /// Unix seconds.
    pub internal_date: i64,
    #[schema(example = json!(["\\Seen"]))]
    pub flags: Vec<String>,
    /// The `Message-ID:` header, if it has one.
    #[schema(required = true)]
    pub message_id: Option<String>,
    /// The `Subject:` header, if it has one.
    #[schema(required = true)]
    pub subject: Option<String>,
    /// The whole message (as UTF-8, invalid bytes replaced), only with `?raw=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// `GET /email/accounts/{id}/messages?raw=true`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// `true` (or `1`) adds each whole message as `raw`; at most 64 MiB of them in all.
    #[param(example = "true")]
    raw: Option<String>,
}

/// Most message bytes one `?raw=true` listing carries.
const RAW_LISTING_LIMIT: u64 = 64 << 20;

/// The messages of an account, mailbox by mailbox in UID order (metadata, not the messages).
#[utoipa::path(
    get,
    path = "/api/v1/email/accounts/{id}/messages",
    operation_id = "email_accounts_messages",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("id" = u64, Path, description = "The account's id"), MessagesQuery),
    responses((status = 200, description = "Its messages", body = Data<Vec<MessageView>>))
)]
pub async fn account_messages(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Data<Vec<MessageView>>>, ApiError> {
    let id = parse_id(&id, "account")?;
    let raw = match q.raw.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(ApiError::Validation(format!(
                "raw: expected true or false, not {other:?}"
            )));
        }
    };
    let store = s.store.clone();
    let listed = on_dir(&s, move |d| {
        let a = owned_account(d, &p, id)?;
        let listed = wispd_engine::mailstore::list(&store, &a.email(), false)?.unwrap_or_default();
        if !raw {
            return Ok(listed);
        }
        // sizes first: a listing too large for one answer is refused before it is read
        let total: u64 = listed.iter().map(|m| m.entry.size).sum();
        if total > RAW_LISTING_LIMIT {
            return Err(DirError::Invalid(format!(
                "the account's messages are {total} bytes; raw listings carry at most {RAW_LISTING_LIMIT}"
            )));
        }
        Ok(wispd_engine::mailstore::list(&store, &a.email(), true)?.unwrap_or_default())
    })
    .await?;
    Ok(Json(Data::new(
        listed
            .into_iter()
            .map(|m| MessageView {
                mailbox: m.mailbox,
                uid: m.entry.uid,
                size: m.entry.size,
                internal_date: m.entry.internal_date,
                flags: m.entry.flags,
                message_id: m.message_id,
                subject: m.subject,
                raw: m.raw.map(|r| String::from_utf8_lossy(&r).into_owned()),
            })
            .collect(),
    )))
}

/// `PUT /email/accounts/{id}`: a new password and/or quota; at least one of them.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"password": "n3w-password", "quota_mb": 2048}))]
pub struct AccountUpdate {
    /// 8 to 256 characters, no control characters; empty or absent keeps the password.
    #[schema(example = "n3w-password", max_length = 256)]
    password: Option<String>,
    /// Quota in MiB, 0 (unlimited) to 1073741824; absent keeps the quota.
    #[schema(example = 2048, minimum = 0, maximum = 1_073_741_824)]
    quota_mb: Option<i64>,
}

/// Changes an account's password and/or quota.
#[utoipa::path(
    put,
    path = "/api/v1/email/accounts/{id}",
    operation_id = "email_accounts_update",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("id" = u64, Path, description = "The account's id")),
    request_body = AccountUpdate,
    responses((status = 200, description = "The account as changed", body = Data<AccountView>))
)]
pub async fn account_update(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<AccountUpdate>,
) -> Result<Json<Data<AccountView>>, ApiError> {
    on_owned_account(&s, p, &id, move |d, id| {
        d.update_account(id, b.password.filter(|p| !p.is_empty()), b.quota_mb)
    })
    .await
}

/// Enables a disabled account or disables an enabled one.
#[utoipa::path(
    post,
    path = "/api/v1/email/accounts/{id}/toggle",
    operation_id = "email_accounts_toggle",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("id" = u64, Path, description = "The account's id")),
    responses((status = 200, description = "The account with `enabled` flipped", body = Data<AccountView>))
)]
pub async fn account_toggle(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Data<AccountView>>, ApiError> {
    on_owned_account(&s, p, &id, |d, id| d.toggle_account(id)).await
}

/// Deletes a mail account and its mail.
#[utoipa::path(
    delete,
    path = "/api/v1/email/accounts/{id}",
    operation_id = "email_accounts_delete",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("id" = u64, Path, description = "The account's id")),
    responses((status = 200, description = "The deleted account", body = Data<AccountView>))
)]
pub async fn account_delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Data<AccountView>>, ApiError> {
    on_owned_account(&s, p, &id, |d, id| d.delete_account(id)).await
}

/// The forwarders of the caller's domains.
#[utoipa::path(
    get,
    path = "/api/v1/email/forwarders",
    operation_id = "email_forwarders_list",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    responses((status = 200, description = "Every forwarder the caller may see", body = Data<Vec<ForwarderView>>))
)]
pub async fn forwarders(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Data<Vec<ForwarderView>>>, ApiError> {
    let domains = scope(&p);
    let list = on_dir(&s, move |d| d.forwarders(domains.as_deref())).await?;
    Ok(Json(Data::new(
        list.iter().map(ForwarderView::from).collect(),
    )))
}

/// `POST /email/forwarders`: both addresses are required; a local destination must exist and
/// a forwarder may not close a loop.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"source": "sales@example.com", "destination": "info@example.com"}))]
pub struct ForwarderBody {
    /// An address on a domain the token manages.
    #[schema(value_type = String, required = true, example = "sales@example.com")]
    source: Option<String>,
    /// A local account or forwarder (of a domain the token manages), or a remote address.
    #[schema(value_type = String, required = true, example = "info@example.com")]
    destination: Option<String>,
}

/// Creates a forwarder.
#[utoipa::path(
    post,
    path = "/api/v1/email/forwarders",
    operation_id = "email_forwarders_create",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    request_body = ForwarderBody,
    responses((status = 201, description = "Created", body = Data<ForwarderView>))
)]
pub async fn forwarder_create(
    State(s): State<AppState>,
    Caller(p): Caller,
    JsonBody(b): JsonBody<ForwarderBody>,
) -> Result<(StatusCode, Json<Data<ForwarderView>>), ApiError> {
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
        Json(Data::new(ForwarderView::from(&f))),
    ))
}

/// Deletes a forwarder.
#[utoipa::path(
    delete,
    path = "/api/v1/email/forwarders/{id}",
    operation_id = "email_forwarders_delete",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("id" = u64, Path, description = "The forwarder's id")),
    responses((status = 200, description = "The deleted forwarder", body = Data<ForwarderView>))
)]
pub async fn forwarder_delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Data<ForwarderView>>, ApiError> {
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
    Ok(Json(Data::new(ForwarderView::from(&f))))
}

/// A domain's catch-all (disabled, with an empty destination, until set).
#[utoipa::path(
    get,
    path = "/api/v1/email/catchall/{domain}",
    operation_id = "email_catchall_get",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    responses((status = 200, description = "The domain's catch-all", body = Data<CatchallView>))
)]
pub async fn catchall(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Data<CatchallView>>, ApiError> {
    let d = address::domain(&domain)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
    require_domain(&p, &d)?;
    let c = on_dir(&s, move |dir| dir.catchall(&d)).await?;
    Ok(Json(Data::new(CatchallView::from(&c))))
}

/// `PUT /email/catchall/{domain}`: `enabled` is required, and so is `destination` to enable.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"enabled": true, "destination": "info@example.com"}))]
pub struct CatchallBody {
    #[schema(value_type = bool, required = true, example = true)]
    enabled: Option<bool>,
    /// An existing address on the same domain; required to enable.
    #[schema(example = "info@example.com")]
    destination: Option<String>,
}

/// Sets a domain's catch-all.
#[utoipa::path(
    put,
    path = "/api/v1/email/catchall/{domain}",
    operation_id = "email_catchall_set",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    request_body = CatchallBody,
    responses((status = 200, description = "The catch-all as set", body = Data<CatchallView>))
)]
pub async fn catchall_set(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
    JsonBody(b): JsonBody<CatchallBody>,
) -> Result<Json<Data<CatchallView>>, ApiError> {
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
    Ok(Json(Data::new(CatchallView::from(&c))))
}

/// A domain's DKIM key: its public half and the DNS record to publish. The private half never
/// leaves the store.
#[derive(Debug, Serialize, ToSchema)]
pub struct DkimKeyView {
    #[schema(example = "example.com")]
    pub domain: String,
    #[schema(example = "wispd")]
    pub selector: String,
    /// `rsa-sha256` (RSA 2048) or `ed25519-sha256`.
    #[schema(example = "rsa-sha256")]
    pub algorithm: String,
    /// The public key, base64 (what follows `p=` in the record).
    #[schema(example = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA…")]
    pub public_key: String,
    /// Where the TXT record goes: `selector._domainkey.domain`.
    #[schema(example = "wispd._domainkey.example.com")]
    pub dns_name: String,
    /// The TXT record's value.
    #[schema(example = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA…")]
    pub dns_record: String,
    /// RFC 3339.
    #[schema(example = "2026-05-11T10:15:03+00:00")]
    pub created_at: String,
}

impl From<&DkimKey> for DkimKeyView {
    fn from(k: &DkimKey) -> DkimKeyView {
        DkimKeyView {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            algorithm: k.algorithm.clone(),
            public_key: k.public_key.clone(),
            dns_name: dkim::dns_name(k),
            dns_record: dkim::dns_record(k),
            created_at: rfc3339(k.created_at),
        }
    }
}

/// The domain of a DKIM path, checked against the caller's domains.
fn dkim_domain(p: &Principal, domain: &str) -> Result<String, ApiError> {
    let d = address::domain(domain)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {domain:?}")))?;
    require_domain(p, &d)?;
    Ok(d)
}

/// The DKIM keys of the caller's domains (public halves only).
#[utoipa::path(
    get,
    path = "/api/v1/email/dkim",
    operation_id = "email_dkim_list",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    responses((status = 200, description = "Every key the caller may see, by domain", body = Data<Vec<DkimKeyView>>))
)]
pub async fn dkim_list(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Data<Vec<DkimKeyView>>>, ApiError> {
    let domains = scope(&p);
    let store = s.store.clone();
    let keys =
        tokio::task::spawn_blocking(move || dkim::list(&store, domains.as_deref())).await??;
    Ok(Json(Data::new(
        keys.iter().map(DkimKeyView::from).collect(),
    )))
}

/// `POST /email/dkim/{domain}`: both fields optional (an empty body is fine).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selector": "s2026", "algorithm": "ed25519-sha256"}))]
pub struct DkimBody {
    /// Dot-separated labels of letters, digits and hyphens; `wispd` when absent.
    #[schema(example = "s2026", max_length = 63)]
    selector: Option<String>,
    /// `rsa-sha256` (the default, RSA 2048) or `ed25519-sha256`.
    #[schema(example = "ed25519-sha256")]
    algorithm: Option<String>,
}

/// Generates a domain's DKIM key; a new key replaces the old one (rotation).
#[utoipa::path(
    post,
    path = "/api/v1/email/dkim/{domain}",
    operation_id = "email_dkim_create",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    request_body = Option<DkimBody>,
    responses((status = 201, description = "The new key and the record to publish", body = Data<DkimKeyView>))
)]
pub async fn dkim_create(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
    JsonBody(b): JsonBody<DkimBody>,
) -> Result<(StatusCode, Json<Data<DkimKeyView>>), ApiError> {
    let d = dkim_domain(&p, &domain)?;
    let store = s.store.clone();
    let key = tokio::task::spawn_blocking(move || {
        dkim::create(&store, &d, b.selector.as_deref(), b.algorithm.as_deref())
    })
    .await??;
    Ok((
        StatusCode::CREATED,
        Json(Data::new(DkimKeyView::from(&key))),
    ))
}

/// Deletes a domain's DKIM key; its mail goes out unsigned.
#[utoipa::path(
    delete,
    path = "/api/v1/email/dkim/{domain}",
    operation_id = "email_dkim_delete",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    responses((status = 200, description = "The deleted key", body = Data<DkimKeyView>))
)]
pub async fn dkim_delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Data<DkimKeyView>>, ApiError> {
    let d = dkim_domain(&p, &domain)?;
    let store = s.store.clone();
    let key = tokio::task::spawn_blocking(move || dkim::delete(&store, &d)).await??;
    Ok(Json(Data::new(DkimKeyView::from(&key))))
}

/// Whether a domain's DKIM record is published, as looked up through `[dns].nameservers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DkimVerification {
    #[schema(example = "example.com")]
    pub domain: String,
    /// The name looked up.
    #[schema(example = "wispd._domainkey.example.com")]
    pub dns_name: String,
    /// The record that should be there.
    #[schema(example = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA…")]
    pub expected: String,
    /// A TXT record exists at `dns_name`.
    pub found: bool,
    /// One of them has the stored public key as its `p=`.
    pub matches: bool,
    /// The matching TXT record, else the first one found (its strings joined); `null` when none.
    #[schema(required = true)]
    pub record: Option<String>,
    /// Why nothing was found (NXDOMAIN, timeout, …); `null` otherwise.
    #[schema(required = true)]
    pub error: Option<String>,
}

impl DkimVerification {
    fn new(key: &DkimKey, published: Published) -> DkimVerification {
        DkimVerification {
            domain: key.domain.clone(),
            dns_name: dkim::dns_name(key),
            expected: dkim::dns_record(key),
            found: published.found,
            matches: published.matches,
            record: published.record,
            error: published.error,
        }
    }
}

/// Checks that a domain's DKIM record is published in DNS.
#[utoipa::path(
    get,
    path = "/api/v1/email/dkim/{domain}/verify",
    operation_id = "email_dkim_verify",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    responses((status = 200, description = "What DNS has, against what it should have", body = Data<DkimVerification>))
)]
pub async fn dkim_verify(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Data<DkimVerification>>, ApiError> {
    let d = dkim_domain(&p, &domain)?;
    let store = s.store.clone();
    let key = tokio::task::spawn_blocking(move || dkim::get(&store, &d)).await??;
    let resolver = dkim::resolver(s.mail.nameservers())?;
    let published = dkim::verify(&resolver, &key).await;
    Ok(Json(Data::new(DkimVerification::new(&key, published))))
}

/// One recipient of a queued message and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedRecipientView {
    #[schema(example = "friend@remote.example")]
    pub address: String,
    /// The address the sender used when it differs (a forwarder's source); else `null`.
    #[schema(required = true, example = json!(null))]
    pub original: Option<String>,
    /// `queued`, `delivered` or `failed`.
    #[schema(example = "queued")]
    pub status: String,
    /// Delivery attempts so far.
    #[schema(example = 0)]
    pub attempts: u32,
    /// Unix seconds of the next attempt while `queued`; else `null`.
    #[schema(required = true, example = 1_778_519_800)]
    pub next_attempt: Option<i64>,
    /// Unix seconds of the last attempt; `null` before the first.
    #[schema(required = true, example = json!(null))]
    pub last_attempt: Option<i64>,
    /// The last answer: the remote server's reply, or why it could not be reached.
    #[schema(required = true, example = json!(null))]
    pub last_error: Option<String>,
    /// The server that gave `last_error`.
    #[schema(required = true, example = json!(null))]
    pub remote: Option<String>,
}

impl From<&QueuedRecipient> for QueuedRecipientView {
    fn from(r: &QueuedRecipient) -> QueuedRecipientView {
        QueuedRecipientView {
            address: r.address.clone(),
            original: r.original.clone(),
            status: r.status.clone(),
            attempts: r.attempts,
            next_attempt: (r.status == "queued").then_some(r.next_attempt),
            last_attempt: r.last_attempt,
            last_error: r.last_error.clone(),
            remote: r.remote.clone(),
        }
    }
}

/// A message waiting for delivery to other servers.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedMessageView {
    /// The queue id, as in `/email/queue/{id}`.
    #[schema(example = 1)]
    pub id: u64,
    /// The envelope sender (`MAIL FROM`); empty for a bounce.
    #[schema(example = "info@example.com")]
    pub sender: String,
    /// Unix seconds the message entered the queue.
    #[schema(example = 1_778_519_703)]
    pub created_at: i64,
    /// Bytes.
    #[schema(example = 1024)]
    pub size: u64,
    /// What queued it: `submission`, `forward`, `bounce`, `redirect` or `vacation` (Sieve).
    #[schema(example = "submission")]
    pub source: String,
    pub recipients: Vec<QueuedRecipientView>,
}

impl From<&QueuedMessage> for QueuedMessageView {
    fn from(m: &QueuedMessage) -> QueuedMessageView {
        QueuedMessageView {
            id: m.id,
            sender: m.sender.clone(),
            created_at: m.created_at,
            size: m.size,
            source: m.source.clone(),
            recipients: m.recipients.iter().map(QueuedRecipientView::from).collect(),
        }
    }
}

/// The outbound queue, with each recipient's state (like `mailq`).
#[utoipa::path(
    get,
    path = "/api/v1/email/queue",
    operation_id = "email_queue_list",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every queued message", body = Data<Vec<QueuedMessageView>>))
)]
pub async fn queue_list(
    State(s): State<AppState>,
    _admin: Admin,
) -> Result<Json<Data<Vec<QueuedMessageView>>>, ApiError> {
    let queue = s.mail.queue().clone();
    let all = tokio::task::spawn_blocking(move || queue.list()).await??;
    Ok(Json(Data::new(
        all.iter().map(QueuedMessageView::from).collect(),
    )))
}

/// What a queue flush did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Flushed {
    /// Recipients scheduled for delivery now.
    #[schema(example = 1)]
    pub scheduled: usize,
}

/// Retries every waiting recipient now (like `postqueue -f`).
#[utoipa::path(
    post,
    path = "/api/v1/email/queue/flush",
    operation_id = "email_queue_flush",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "How many recipients were scheduled", body = Notice<Flushed>))
)]
pub async fn queue_flush(
    State(s): State<AppState>,
    _admin: Admin,
) -> Result<Json<Notice<Flushed>>, ApiError> {
    let queue = s.mail.queue().clone();
    let n = tokio::task::spawn_blocking(move || queue.flush()).await??;
    Ok(Json(Notice::new(
        format!("{n} recipient(s) scheduled for delivery now"),
        Flushed { scheduled: n },
    )))
}

/// Drops a queued message without a bounce (like `postsuper -d`).
#[utoipa::path(
    delete,
    path = "/api/v1/email/queue/{id}",
    operation_id = "email_queue_delete",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "The queue id")),
    responses((status = 200, description = "The removed message", body = Notice<QueuedMessageView>))
)]
pub async fn queue_delete(
    State(s): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Notice<QueuedMessageView>>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::Validation(format!("Invalid queue id: {id:?}")))?;
    let queue = s.mail.queue().clone();
    let m = tokio::task::spawn_blocking(move || queue.delete(id)).await??;
    Ok(Json(Notice::new(
        format!("Message {id} removed from the queue"),
        QueuedMessageView::from(&m),
    )))
}

/// One message of a [`MailboxImport`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportMessage {
    /// Its UID on the source server (kept when the mailbox has the source's UIDVALIDITY).
    #[schema(value_type = i64, minimum = 1, maximum = 4_278_190_079_i64, example = 7)]
    pub uid: u32,
    /// IMAP flags and keywords (`\Seen`, `$Forwarded`, `Important`).
    #[serde(default)]
    #[schema(example = json!(["\\Seen"]))]
    pub flags: Vec<String>,
    /// Unix seconds.
    #[schema(example = 1_767_000_000)]
    pub internal_date: i64,
    /// The whole message, base64 (standard alphabet, padded).
    #[serde(deserialize_with = "base64_bytes")]
    #[schema(value_type = String, format = Byte, example = "U3ViamVjdDogaGkNCg0KaGkNCg==")]
    pub data: Vec<u8>,
}

fn base64_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::Engine as _;
    let s: std::borrow::Cow<'de, str> = serde::Deserialize::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
}

/// `POST /email/accounts/{id}/mailboxes/import`: a batch of one mailbox's messages from another
/// server, as `wispd import dovecot` sends them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxImport {
    /// The mailbox (`INBOX`, `Archive/2024`; hierarchy separator `/`); created if missing.
    #[schema(example = "Archive/2024")]
    pub mailbox: String,
    /// The source's UIDVALIDITY (0: none, the mailbox gets its own).
    #[serde(default)]
    #[schema(value_type = i64, minimum = 0, maximum = 4_294_967_295_i64, example = 1_700_000_000)]
    pub uidvalidity: u32,
    /// The source's next UID (UIDNEXT), kept when the UIDs are: send it with a mailbox's last
    /// batch, 0 with the ones before (a UIDNEXT set early would renumber the batches after).
    #[serde(default)]
    #[schema(value_type = i64, minimum = 0, maximum = 4_278_190_080_i64, example = 42)]
    pub uidnext: u32,
    /// Subscribe to the mailbox (never unsubscribes).
    #[serde(default)]
    pub subscribed: bool,
    /// RFC 6154 attribute for a mailbox that has none yet: `\All`, `\Archive`, `\Drafts`,
    /// `\Flagged`, `\Junk`, `\Sent` or `\Trash`.
    #[serde(default)]
    #[schema(example = "\\Sent")]
    pub special_use: Option<String>,
    /// At most 10,000 messages.
    #[serde(default)]
    pub messages: Vec<ImportMessage>,
    /// Say what this batch would do; keep nothing (the messages' `data` may be empty).
    #[serde(default)]
    pub dry_run: bool,
}

/// What one import batch did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxImported {
    #[schema(example = "Archive/2024")]
    pub mailbox: String,
    /// The mailbox did not exist before.
    pub created: bool,
    /// The mailbox has the source's UIDVALIDITY and the messages kept their UIDs.
    pub uids_kept: bool,
    #[schema(value_type = i64, minimum = 1, maximum = 4_294_967_295_i64)]
    pub uidvalidity: u32,
    pub imported: u32,
    /// Skipped: brought over by an earlier import.
    pub already: u32,
    /// Given a new UID (the mailbox already had other mail).
    pub renumbered: u32,
}

/// The RFC 6154 attributes a mailbox can have.
const SPECIAL_USES: [&str; 7] = [
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

/// Most messages one import batch carries.
const IMPORT_BATCH_MAX: usize = 10_000;

/// Brings a batch of a mailbox's messages over from another server, keeping UIDVALIDITY, UIDs,
/// flags and internal dates (one durable commit). Rerunning a batch imports nothing twice. Admin
/// only; the body may be up to 72 MiB (one 50 MiB message, base64).
#[utoipa::path(
    post,
    path = "/api/v1/email/accounts/{id}/mailboxes/import",
    operation_id = "email_accounts_mailboxes_import",
    tag = "email",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "The account's id")),
    request_body = MailboxImport,
    responses((status = 200, description = "Imported", body = Data<MailboxImported>))
)]
pub async fn mailbox_import(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
    ImportBody(b): ImportBody<MailboxImport>,
) -> Result<Json<Data<MailboxImported>>, ApiError> {
    use wispd_engine::mailbox::{self, MailboxError, SourceMailbox, SourceMessage};
    let id = parse_id(&id, "account")?;
    if b.messages.len() > IMPORT_BATCH_MAX {
        return Err(ApiError::Validation(format!(
            "messages: at most {IMPORT_BATCH_MAX} in one batch, not {}",
            b.messages.len()
        )));
    }
    if let Some(m) = b.messages.iter().find(|m| m.uid == 0) {
        return Err(ApiError::Validation(format!(
            "messages: UIDs start at 1 (a message dated {} has 0)",
            m.internal_date
        )));
    }
    let mut uids: Vec<u32> = b.messages.iter().map(|m| m.uid).collect();
    uids.sort_unstable();
    if let Some(w) = uids.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::Validation(format!(
            "messages: UID {} is given twice",
            w[0]
        )));
    }
    if let Some(u) = b
        .special_use
        .as_deref()
        .filter(|u| !SPECIAL_USES.contains(u))
    {
        return Err(ApiError::Validation(format!(
            "special_use: {u:?} is not one of {}",
            SPECIAL_USES.join(", ")
        )));
    }
    if let Some(f) = b
        .messages
        .iter()
        .flat_map(|m| &m.flags)
        .find(|f| !wispd_engine::mailbox::is_flag(f))
    {
        return Err(ApiError::Validation(format!(
            "messages: {f:?} is not an IMAP flag or keyword"
        )));
    }
    let store = s.store.clone();
    let changes = s.mail.deliverer().changes().clone();
    let name = b.mailbox.clone();
    let dry_run = b.dry_run;
    let source = SourceMailbox {
        name: b.mailbox,
        uidvalidity: b.uidvalidity,
        uidnext: b.uidnext,
        subscribed: b.subscribed,
        special_use: b.special_use,
    };
    let messages: Vec<SourceMessage> = b
        .messages
        .into_iter()
        .map(|m| SourceMessage {
            uid: m.uid,
            flags: m.flags,
            internal_date: m.internal_date,
            data: m.data,
        })
        .collect();
    let dir = s.directory.clone();
    let out = tokio::task::spawn_blocking(move || {
        dir.account(id)?;
        mailbox::import(&store, &changes, id, &source, &messages, dry_run).map_err(|e| match e {
            MailboxError::Store(e) => DirError::from(e),
            other => DirError::Invalid(other.to_string()),
        })
    })
    .await??;
    Ok(Json(Data::new(MailboxImported {
        mailbox: wispd_engine::mailbox::canonical(&name),
        created: out.created,
        uids_kept: out.uids_kept,
        uidvalidity: out.uidvalidity,
        imported: out.imported,
        already: out.already,
        renumbered: out.renumbered,
    })))
}

/// The OpenAPI part of this group (merged into the whole document in `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    status,
    install,
    accounts,
    account_create,
    account_import,
    account_get,
    account_update,
    account_toggle,
    account_delete,
    account_messages,
    mailbox_import,
    forwarders,
    forwarder_create,
    forwarder_delete,
    catchall,
    catchall_set,
    dkim_list,
    dkim_create,
    dkim_delete,
    dkim_verify,
    queue_list,
    queue_flush,
    queue_delete,
))]
pub struct EmailApi;

#[cfg(test)]
mod tests {
    //! The views serialize to exactly what the `json!` literals they replaced produced (field
    //! order, `null` vs absent): panel clients compare these bytes.

    use wispd_engine::clamav::Probe as Clamd;
    use wispd_engine::dkim::Published;
    use wispd_engine::service::MailStatus;
    use wispd_store::schema::{
        DkimKey, MailAccount, MailCatchall, MailForwarder, QueuedMessage, QueuedRecipient,
    };

    use super::*;

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("serializes")
    }

    const NOW: i64 = 1_778_519_703;

    fn dkim_key() -> DkimKey {
        DkimKey {
            domain: "example.com".into(),
            selector: "wispd".into(),
            algorithm: "ed25519-sha256".into(),
            private_key: "PRIV".into(),
            public_key: "PUB".into(),
            created_at: NOW,
        }
    }

    #[test]
    fn an_account_shows_no_password_hash() {
        let a = MailAccount {
            id: 7,
            domain: "example.com".into(),
            username: "info".into(),
            password_hash: "$argon2id$x".into(),
            quota_mb: 1024,
            used_bytes: 12,
            enabled: true,
            created_at: NOW,
        };
        assert_eq!(
            json(&Data::new(AccountView::from(&a))),
            r#"{"success":true,"data":{"id":7,"domain":"example.com","username":"info","email":"info@example.com","quota_mb":1024,"used_bytes":12,"enabled":true,"created_at":"2026-05-11T17:15:03+00:00"}}"#
        );
    }

    #[test]
    fn an_empty_account_listing_has_the_seed_shape() {
        let empty = AccountList {
            accounts: None,
            total: 0,
        };
        assert_eq!(json(&empty), r#"{"accounts":null,"total":0}"#);
    }

    #[test]
    fn forwarder_and_catchall_views() {
        let f = MailForwarder {
            id: 3,
            source: "sales@example.com".into(),
            destination: "a@example.com".into(),
            created_at: NOW,
        };
        assert_eq!(
            json(&ForwarderView::from(&f)),
            r#"{"id":3,"source":"sales@example.com","destination":"a@example.com","created_at":"2026-05-11T17:15:03+00:00"}"#
        );
        let c = MailCatchall {
            domain: "example.com".into(),
            enabled: false,
            destination: String::new(),
        };
        assert_eq!(
            json(&CatchallView::from(&c)),
            r#"{"domain":"example.com","enabled":false,"destination":""}"#
        );
    }

    #[test]
    fn status_has_the_seed_shape() {
        let mail = MailStatus {
            installed: true,
            smtp: vec!["127.0.0.1:2525".parse().expect("addr")],
            imap: vec![],
        };
        let clamd = Clamd {
            installed: true,
            running: false,
            version: None,
        };
        assert_eq!(
            json(&StatusView::new(&mail, &clamd, "/usr/bin/wispd".into())),
            r#"{"installed":true,"mta_installed":true,"mta_path":"/usr/bin/wispd","postfix":{"installed":true,"running":true},"dovecot":{"installed":true,"running":false},"dovecot_installed":true,"dovecot_running":false,"clamav_installed":true,"clamav_running":false}"#
        );
        let flushed = Notice::new(
            "1 recipient(s) scheduled for delivery now",
            Flushed { scheduled: 1 },
        );
        assert_eq!(
            json(&flushed),
            r#"{"success":true,"message":"1 recipient(s) scheduled for delivery now","data":{"scheduled":1}}"#
        );
    }

    #[test]
    fn dkim_views_show_the_record_and_not_the_private_key() {
        let k = dkim_key();
        assert_eq!(
            json(&DkimKeyView::from(&k)),
            r#"{"domain":"example.com","selector":"wispd","algorithm":"ed25519-sha256","public_key":"PUB","dns_name":"wispd._domainkey.example.com","dns_record":"v=DKIM1; k=ed25519; p=PUB","created_at":"2026-05-11T17:15:03+00:00"}"#
        );
        let missing = Published {
            found: false,
            matches: false,
            record: None,
            error: Some("NXDOMAIN".into()),
        };
        assert_eq!(
            json(&DkimVerification::new(&k, missing)),
            r#"{"domain":"example.com","dns_name":"wispd._domainkey.example.com","expected":"v=DKIM1; k=ed25519; p=PUB","found":false,"matches":false,"record":null,"error":"NXDOMAIN"}"#
        );
    }

    #[test]
    fn next_attempt_is_null_unless_queued() {
        let m = QueuedMessage {
            id: 9,
            sender: "info@example.com".into(),
            created_at: NOW,
            size: 321,
            source: "submission".into(),
            recipients: vec![
                QueuedRecipient {
                    address: "friend@remote.example".into(),
                    original: None,
                    status: "queued".into(),
                    attempts: 0,
                    next_attempt: NOW + 97,
                    last_attempt: None,
                    last_error: None,
                    remote: None,
                },
                QueuedRecipient {
                    address: "b@remote.example".into(),
                    original: Some("sales@example.com".into()),
                    status: "failed".into(),
                    attempts: 3,
                    next_attempt: NOW + 197,
                    last_attempt: Some(NOW + 147),
                    last_error: Some("550 5.1.1 no".into()),
                    remote: Some("mx.remote.example".into()),
                },
            ],
        };
        assert_eq!(
            json(&QueuedMessageView::from(&m)),
            r#"{"id":9,"sender":"info@example.com","created_at":1778519703,"size":321,"source":"submission","recipients":[{"address":"friend@remote.example","original":null,"status":"queued","attempts":0,"next_attempt":1778519800,"last_attempt":null,"last_error":null,"remote":null},{"address":"b@remote.example","original":"sales@example.com","status":"failed","attempts":3,"next_attempt":null,"last_attempt":1778519850,"last_error":"550 5.1.1 no","remote":"mx.remote.example"}]}"#
        );
    }
}
