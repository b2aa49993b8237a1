//! `/api/v1/tokens`: admin-only management of API tokens. A token's secret is shown once, at
//! creation; listings never contain secrets or hashes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wispd_store::schema::{TOKENS, TokenRecord, TokenRole};

use crate::auth::mint;
use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::validate::domain;
use crate::view::Data;
use crate::{AppState, rfc3339, unix_now};

const NAME_MAX: usize = 64;

/// `POST /tokens`: a name (unique, at most 64 printable characters), a role, and for a user
/// token the domains it reaches.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateToken {
    #[schema(example = "panel")]
    name: Option<String>,
    /// `admin` (everything) or `user` (the email endpoints of `domains`).
    #[schema(example = "user")]
    role: Option<String>,
    /// For a user token: the domains it manages. Empty for an admin token.
    #[schema(example = json!(["example.com"]))]
    domains: Option<Vec<String>>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl From<TokenRole> for Role {
    fn from(r: TokenRole) -> Role {
        match r {
            TokenRole::Admin => Role::Admin,
            TokenRole::User => Role::User,
        }
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub domains: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// The secret, `wsp_…`: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn view(t: &TokenRecord) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.into(),
        domains: t.domains.clone(),
        created_at: rfc3339(t.created_at),
        token: None,
    }
}

/// The API tokens, oldest first, without secrets.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "tokens_list",
    tag = "tokens",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every token", body = Data<Vec<TokenView>>))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Data<Vec<TokenView>>>, ApiError> {
    let mut tokens = state.store.read(|r| r.all(&TOKENS))?;
    tokens.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    Ok(Json(Data::new(tokens.iter().map(view).collect())))
}

fn validate(req: CreateToken) -> Result<(String, TokenRole, Vec<String>), ApiError> {
    let name = req.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::Validation("Name is required".into()));
    }
    if name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(ApiError::Validation(format!(
            "Name must be at most {NAME_MAX} printable characters"
        )));
    }
    let role = match req.role.as_deref().map(str::trim) {
        None | Some("") => {
            return Err(ApiError::Validation(
                "Role is required (admin or user)".into(),
            ));
        }
        Some("admin") => TokenRole::Admin,
        Some("user") => TokenRole::User,
        Some(other) => {
            return Err(ApiError::Validation(format!(
                "Role must be admin or user, not {other:?}"
            )));
        }
    };
    let mut domains = Vec::new();
    for d in req.domains.unwrap_or_default() {
        let d = domain(&d)?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    match role {
        TokenRole::Admin if !domains.is_empty() => Err(ApiError::Validation(
            "An admin token reaches every domain; leave domains empty".into(),
        )),
        TokenRole::User if domains.is_empty() => Err(ApiError::Validation(
            "Domains are required for a user token".into(),
        )),
        _ => Ok((name.to_string(), role, domains)),
    }
}

/// Creates a token; its secret is in this answer only (`data.token`).
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "tokens_create",
    tag = "tokens",
    security(("bearer" = ["admin"])),
    request_body = CreateToken,
    responses((status = 201, description = "Created, with its secret", body = Data<TokenView>))
)]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(req): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<Data<TokenView>>), ApiError> {
    let (name, role, domains) = validate(req)?;
    let minted = mint(&name, role, domains, unix_now())?;
    let store = state.store.clone();
    let record = minted.record;
    let stored = tokio::task::spawn_blocking(move || {
        store.write(|w| {
            if w.all(&TOKENS)?.iter().any(|t| t.name == record.name) {
                return Err(ApiError::Conflict(format!(
                    "A token named {:?} already exists",
                    record.name
                )));
            }
            w.put(&TOKENS, record.id.as_str(), &record)?;
            Ok(record)
        })
    })
    .await??;
    let mut data = view(&stored);
    data.token = Some(minted.token);
    Ok((StatusCode::CREATED, Json(Data::new(data))))
}

/// Deletes a token; the last admin token can't be deleted (409).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    operation_id = "tokens_delete",
    tag = "tokens",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 200, description = "The deleted token", body = Data<TokenView>))
)]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Data<TokenView>>, ApiError> {
    let store = state.store.clone();
    let removed = tokio::task::spawn_blocking(move || {
        store.write(|w| {
            let Some(target) = w.get(&TOKENS, id.as_str())? else {
                return Err(ApiError::NotFound(format!("No token with id {id:?}")));
            };
            if target.role == TokenRole::Admin {
                let admins = w
                    .all(&TOKENS)?
                    .iter()
                    .filter(|t| t.role == TokenRole::Admin)
                    .count();
                if admins <= 1 {
                    return Err(ApiError::Conflict(
                        "Cannot delete the last admin token; create another admin token first"
                            .into(),
                    ));
                }
            }
            w.remove(&TOKENS, id.as_str())?;
            Ok(target)
        })
    })
    .await??;
    Ok(Json(Data::new(view(&removed))))
}
