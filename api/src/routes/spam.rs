//! `/email/spam` (admin): spam scoring (wispd's rules or rspamd), the `X-Spam-*` headers,
//! the Junk and refusal thresholds, greylisting, allow- and denylists.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use wispd_engine::spam::{RULES, SpamError};
use wispd_store::schema::{GreylistSettings, SpamRule, SpamSettings};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, JsonBody};
use crate::view::Data;

/// Greylisting of (client network, sender, recipient) triplets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GreylistBody {
    #[serde(default)]
    pub enabled: bool,
    /// Seconds a new triplet is answered `451 4.7.1`; default 300, at most 86400.
    #[serde(default = "default_delay")]
    #[schema(example = 300)]
    pub delay: u64,
    /// Seconds a triplet that passed stays allowed; default 36 days.
    #[serde(default = "default_window")]
    #[schema(example = 3110400)]
    pub window: u64,
    /// Senders that authenticate (SPF or DKIM) for a domain that passed before are not delayed;
    /// default true.
    #[serde(default = "default_true")]
    pub pass_authenticated: bool,
}

fn default_delay() -> u64 {
    GreylistSettings::default().delay
}
fn default_window() -> u64 {
    GreylistSettings::default().window
}
fn default_true() -> bool {
    true
}
fn default_engine() -> String {
    "builtin".into()
}
fn default_junk() -> f64 {
    SpamSettings::default().junk_score
}
fn default_reject() -> f64 {
    SpamSettings::default().reject_score
}
fn default_failure() -> String {
    "accept".into()
}

impl Default for GreylistBody {
    fn default() -> Self {
        let g = GreylistSettings::default();
        GreylistBody {
            enabled: g.enabled,
            delay: g.delay,
            window: g.window,
            pass_authenticated: g.pass_authenticated,
        }
    }
}

/// An operator's rule: `score` when the header (or `body`: the first 64 KiB of the raw body)
/// contains `contains`, ignoring case.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// `A-Z`, `0-9`, `_`; shown in `tests=`.
    #[schema(example = "SUBJ_PILLS")]
    pub name: String,
    /// A header name, or `body`.
    #[schema(example = "Subject")]
    pub header: String,
    #[schema(example = "cheap pills")]
    pub contains: String,
    #[schema(example = 3.0)]
    pub score: f64,
}

/// `PUT /email/spam`: the whole configuration; what is left out takes its default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "junk_score": 5.0, "reject_score": 15.0,
    "greylisting": {"enabled": true, "delay": 300}, "allowlist": ["@partner.example"], "denylist": ["203.0.113.0/24"]}))]
pub struct SpamBody {
    #[schema(required = true)]
    pub enabled: Option<bool>,
    /// `builtin` (default) or `rspamd`.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// rspamd's normal worker, `http://address:port`.
    #[serde(default)]
    #[schema(example = "http://127.0.0.1:11333")]
    pub url: String,
    /// From this score on, `X-Spam-Status` and `X-Spam-Score` are added; 0 or below (the
    /// default): to every scored message.
    #[serde(default)]
    pub add_header_score: f64,
    /// From this score on the message goes to the recipients' Junk; default 5.
    #[serde(default = "default_junk")]
    pub junk_score: f64,
    /// From this score on it is refused with `550 5.7.1`; default 15.
    #[serde(default = "default_reject")]
    pub reject_score: f64,
    #[serde(default)]
    pub greylisting: GreylistBody,
    /// Senders (`user@domain`, `@domain`, `domain` with its subdomains) and client
    /// addresses or networks never greylisted and scored `ALLOWLISTED` (-100); at most 1000.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// The same forms, scored `DENYLISTED` (100); at most 1000.
    #[serde(default)]
    pub denylist: Vec<String>,
    /// A built-in rule's score instead of its default (0 turns it off).
    #[serde(default)]
    #[schema(example = json!({"HELO_NOT_FQDN": 0.0}))]
    pub scores: BTreeMap<String, f64>,
    /// Your own rules; at most 200.
    #[serde(default)]
    pub rules: Vec<RuleBody>,
    /// rspamd unreachable: `accept` (delivered unscored, default) or `defer` (`451 4.7.1`).
    #[serde(default = "default_failure")]
    pub on_failure: String,
}

/// A built-in rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuiltinRule {
    pub name: String,
    /// The score it adds now (its default or `scores`' override).
    pub score: f64,
    pub default_score: f64,
    pub description: String,
}

/// Counts since the server started.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpamStats {
    pub scored: u64,
    pub junked: u64,
    pub rejected: u64,
    /// Answered `451 4.7.1` (greylisting, or rspamd asked for it).
    pub greylisted: u64,
    /// Messages rspamd couldn't score.
    pub failures: u64,
    /// Greylisting records in the store (triplets and authenticated domains).
    pub greylist_entries: u64,
}

/// The configuration, the built-in rules and the counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpamView {
    pub enabled: bool,
    pub engine: String,
    pub url: String,
    pub add_header_score: f64,
    pub junk_score: f64,
    pub reject_score: f64,
    pub greylisting: GreylistBody,
    pub allowlist: Vec<String>,
    pub denylist: Vec<String>,
    pub scores: BTreeMap<String, f64>,
    pub rules: Vec<RuleBody>,
    pub on_failure: String,
    pub builtin_rules: Vec<BuiltinRule>,
    pub stats: SpamStats,
}

fn view(s: &AppState) -> Result<SpamView, ApiError> {
    let spam = s.mail.spam();
    let (c, st) = (spam.settings(), spam.stats());
    let entries = spam.greylist_entries()?;
    let mut builtin: Vec<BuiltinRule> = RULES
        .iter()
        .map(|r| (r.name, r.score, r.description))
        .chain([
            (
                wispd_engine::spam::ALLOWLISTED.0,
                wispd_engine::spam::ALLOWLISTED.1,
                "the sender or client is on the allowlist",
            ),
            (
                wispd_engine::spam::DENYLISTED.0,
                wispd_engine::spam::DENYLISTED.1,
                "the sender or client is on the denylist",
            ),
        ])
        .map(|(name, score, description)| BuiltinRule {
            name: name.into(),
            score: c.scores.get(name).copied().unwrap_or(score),
            default_score: score,
            description: description.into(),
        })
        .collect();
    builtin.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(SpamView {
        enabled: c.enabled,
        engine: c.engine,
        url: c.url,
        add_header_score: c.add_header_score,
        junk_score: c.junk_score,
        reject_score: c.reject_score,
        greylisting: GreylistBody {
            enabled: c.greylisting.enabled,
            delay: c.greylisting.delay,
            window: c.greylisting.window,
            pass_authenticated: c.greylisting.pass_authenticated,
        },
        allowlist: c.allowlist,
        denylist: c.denylist,
        scores: c.scores,
        rules: c
            .rules
            .into_iter()
            .map(|r| RuleBody {
                name: r.name,
                header: r.header,
                contains: r.contains,
                score: r.score,
            })
            .collect(),
        on_failure: c.on_failure,
        builtin_rules: builtin,
        stats: SpamStats {
            scored: st.scored,
            junked: st.junked,
            rejected: st.rejected,
            greylisted: st.greylisted,
            failures: st.failures,
            greylist_entries: entries,
        },
    })
}

/// The spam configuration, the built-in rules and counts since the start.
#[utoipa::path(
    get,
    path = "/api/v1/email/spam",
    operation_id = "email_spam_get",
    tag = "email",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The spam configuration", body = Data<SpamView>))
)]
pub async fn get(State(s): State<AppState>, _a: Admin) -> Result<Json<Data<SpamView>>, ApiError> {
    Ok(Json(Data::new(view(&s)?)))
}

/// Replaces the spam configuration (durable when this answers).
#[utoipa::path(
    put,
    path = "/api/v1/email/spam",
    operation_id = "email_spam_put",
    tag = "email",
    security(("bearer" = ["admin"])),
    request_body = SpamBody,
    responses((status = 200, description = "The new configuration", body = Data<SpamView>))
)]
pub async fn put(
    State(s): State<AppState>,
    _a: Admin,
    JsonBody(b): JsonBody<SpamBody>,
) -> Result<Json<Data<SpamView>>, ApiError> {
    let Some(enabled) = b.enabled else {
        return Err(ApiError::Validation("enabled: required".into()));
    };
    let settings = SpamSettings {
        enabled,
        engine: b.engine,
        url: b.url,
        add_header_score: b.add_header_score,
        junk_score: b.junk_score,
        reject_score: b.reject_score,
        greylisting: GreylistSettings {
            enabled: b.greylisting.enabled,
            delay: b.greylisting.delay,
            window: b.greylisting.window,
            pass_authenticated: b.greylisting.pass_authenticated,
        },
        allowlist: b.allowlist,
        denylist: b.denylist,
        scores: b.scores,
        rules: b
            .rules
            .into_iter()
            .map(|r| SpamRule {
                name: r.name,
                header: r.header,
                contains: r.contains,
                score: r.score,
            })
            .collect(),
        on_failure: b.on_failure,
    };
    let spam = s.mail.spam().clone();
    tokio::task::spawn_blocking(move || spam.set(settings))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            SpamError::Invalid(m) => ApiError::Validation(m),
            SpamError::Store(e) => ApiError::from(e),
        })?;
    Ok(Json(Data::new(view(&s)?)))
}

#[derive(OpenApi)]
#[openapi(paths(get, put))]
pub struct SpamApi;
