//! API tokens: minting, verification (constant-time, against stored hashes), the authenticated
//! principal, and the middleware that authenticates and rate-limits every request but health.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use wispd_store::schema::{TOKENS, TokenRecord, TokenRole};
use wispd_store::{Store, StoreError};

use crate::AppState;
use crate::error::ApiError;
use crate::ratelimit::Decision;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "wsp_";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 40;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Who is calling, once their token checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: TokenRole,
    pub domains: Vec<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == TokenRole::Admin
    }

    /// Whether this caller may act on `domain`'s email.
    pub fn owns_domain(&self, domain: &str) -> bool {
        self.is_admin() || self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// A freshly minted token: the record to store and the secret to hand out once.
#[derive(Debug)]
pub struct Minted {
    pub record: TokenRecord,
    pub token: String,
}

/// Mints a token: `wsp_` + 8 id characters + 40 secret characters, all random base62 (~285 bits).
pub fn mint(
    name: &str,
    role: TokenRole,
    domains: Vec<String>,
    now: i64,
) -> Result<Minted, ApiError> {
    let id = random_base62(ID_LEN)?;
    let secret = random_base62(SECRET_LEN)?;
    let token = format!("{TOKEN_PREFIX}{id}{secret}");
    let record = TokenRecord {
        id,
        name: name.to_string(),
        role,
        domains,
        secret_sha256: sha256(secret.as_bytes()),
        created_at: now,
    };
    Ok(Minted { record, token })
}

fn random_base62(len: usize) -> Result<String, ApiError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| ApiError::Internal(format!("OS randomness: {e}")))?;
        // 248 = 4 * 62: rejecting bytes above keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Splits a presented token into (id, secret) if it has the right shape.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    if rest.len() != ID_LEN + SECRET_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(rest.split_at(ID_LEN))
}

/// Checks a presented token against the store.
pub fn verify(store: &Store, presented: &str) -> Result<Option<Principal>, StoreError> {
    let Some((id, secret)) = split(presented) else {
        return Ok(None);
    };
    let record = store.read(|r| r.get(&TOKENS, id))?;
    let presented_hash = sha256(secret.as_bytes());
    let Some(record) = record else {
        // Same work as a hit, so response time doesn't tell which ids exist.
        let _ = presented_hash.ct_eq(&[0u8; 32]);
        return Ok(None);
    };
    if bool::from(presented_hash.ct_eq(&record.secret_sha256)) {
        Ok(Some(Principal {
            token_id: record.id,
            name: record.name,
            role: record.role,
            domains: record.domains,
        }))
    } else {
        Ok(None)
    }
}

/// The bearer token, if the request carries one. More than one `Authorization` header is a
/// client error, not "use the first": a proxy or client that adds its own header in front of the
/// caller's would otherwise decide who the caller is.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    let extra = all.count();
    if extra > 0 {
        return Err(ApiError::Validation(format!(
            "Send one Authorization header, not {}",
            extra + 1
        )));
    }
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    Ok(token)
}

/// Authenticates the request (all but `/api/v1/health`), applies the token's rate limit and puts
/// the [`Principal`] in the request's extensions; stamps the `X-RateLimit-*` headers on the answer.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if crate::openapi::is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let token = match bearer(req.headers()) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return ApiError::Unauthorized(
                "Missing API token: send Authorization: Bearer wsp_…".into(),
            )
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = match verify(&state.store, token) {
        Ok(Some(p)) => p,
        Ok(None) => {
            // a wrong token is a failed login, counted by lfd (LF_API)
            if let Some(ip) = peer {
                state.firewall.lfd().report(
                    wispd_firewall::lfd::Service::Api,
                    ip,
                    // the id part only: the rest of a near-miss could be a secret
                    &split(token).map_or_else(
                        || "a malformed token".to_string(),
                        |(id, _)| format!("token id {id}"),
                    ),
                );
            }
            return ApiError::Unauthorized("Invalid API token".into()).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if principal.role == TokenRole::Admin
        && let Some(ip) = peer
    {
        state.firewall.lfd().trust(ip);
    }
    let decision = state.limiter.check(&principal.token_id);
    let mut resp = match decision.retry_after {
        Some(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
        None => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
    };
    stamp(resp.headers_mut(), &decision);
    resp
}

fn stamp(headers: &mut HeaderMap, d: &Decision) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(d.reset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_has_prefix_and_enough_randomness_and_splits_back() {
        let m = mint("t", TokenRole::Admin, vec![], 0).expect("mint");
        assert!(m.token.starts_with("wsp_"));
        assert_eq!(m.token.len(), 4 + 48);
        let (id, secret) = split(&m.token).expect("well-formed");
        assert_eq!(id, m.record.id);
        assert_eq!(sha256(secret.as_bytes()), m.record.secret_sha256);
        let other = mint("t", TokenRole::Admin, vec![], 0).expect("mint");
        assert_ne!(m.token, other.token);
    }

    #[test]
    fn two_authorization_headers_are_a_validation_error_not_the_first_one() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Ok(None)));
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wsp_a"),
        );
        assert!(matches!(bearer(&h), Ok(Some("wsp_a"))));
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wsp_b"),
        );
        match bearer(&h) {
            Err(ApiError::Validation(m)) => assert_eq!(m, "Send one Authorization header, not 2"),
            other => panic!("expected a validation error, got {other:?}"),
        }
        // the same token twice is still two headers
        let mut same = HeaderMap::new();
        same.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wsp_a"),
        );
        same.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wsp_a"),
        );
        assert!(bearer(&same).is_err());
    }

    #[test]
    fn malformed_tokens_do_not_split() {
        for bad in [
            "",
            "wsp_",
            "wsp_short",
            "xyz_0123456789012345678901234567890123456789012345678",
            "wsp_!!!!!!!!0123456789012345678901234567890123456789",
        ] {
            assert!(split(bad).is_none(), "{bad}");
        }
    }
}
