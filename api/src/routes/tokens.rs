//! `/api/v1/tokens`: admin-only management of API tokens. A token's secret is shown once, at
//! creation; listings never contain secrets or hashes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use wispd_store::schema::{TOKENS, TokenRecord, TokenRole};

use crate::auth::mint;
use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::validate::domain;
use crate::{AppState, rfc3339, unix_now};

const NAME_MAX: usize = 64;

#[derive(Debug, Deserialize)]
pub struct CreateToken {
    name: Option<String>,
    role: Option<String>,
    domains: Option<Vec<String>>,
}

fn view(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "domains": t.domains,
        "created_at": rfc3339(t.created_at),
    })
}

pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let mut tokens = state.store.read(|r| r.all(&TOKENS))?;
    tokens.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    let data: Vec<Value> = tokens.iter().map(view).collect();
    Ok(Json(json!({ "success": true, "data": data })))
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

pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(req): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    data["token"] = Value::String(minted.token);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": data })),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "success": true, "data": view(&removed) })))
}
