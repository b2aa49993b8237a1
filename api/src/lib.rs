//! wispd's `/api/v1` REST surface on hyper: routing, authentication, rate limiting and the error
//! envelope, over the engines handed in by the binary.

pub mod auth;
pub mod error;
pub mod extract;
mod guard;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
mod routes;
pub mod server;
mod validate;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::http::Uri;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{delete, get, post, put};
use routes::{csf, email, firewall};
use wispd_store::Store;

use crate::error::ApiError;
use crate::ratelimit::RateLimit;

/// Largest request body accepted (1 MiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Liveness; needs no token (nor does [`openapi::OPENAPI_PATH`]).
pub const HEALTH_PATH: &str = "/api/v1/health";

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub limiter: Arc<RateLimit>,
    pub firewall: Arc<wispd_firewall::Firewall>,
    pub directory: wispd_engine::directory::Directory,
    pub mail: Arc<wispd_engine::service::Mail>,
    pub metrics: Arc<metrics::Metrics>,
}

/// The whole `/api/v1` router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(routes::health::get))
        .route(openapi::OPENAPI_PATH, get(routes::openapi::get))
        .route("/api/v1/metrics", get(metrics::get))
        .route(
            "/api/v1/tokens",
            get(routes::tokens::list).post(routes::tokens::create),
        )
        .route("/api/v1/tokens/{id}", delete(routes::tokens::delete))
        .route("/api/v1/email/status", get(email::status))
        .route(
            "/api/v1/email/mailinglist/{domain}",
            get(routes::lists::lists).post(routes::lists::create),
        )
        .route(
            "/api/v1/email/mailinglist/{domain}/{name}",
            get(routes::lists::get)
                .put(routes::lists::update)
                .delete(routes::lists::delete),
        )
        .route(
            "/api/v1/email/mailinglist/{domain}/{name}/members",
            get(routes::lists::members)
                .post(routes::lists::members_add)
                .delete(routes::lists::members_remove),
        )
        .route(
            "/api/v1/email/mailinglist/{domain}/{name}/held",
            get(routes::lists::held),
        )
        .route(
            "/api/v1/email/mailinglist/{domain}/{name}/held/{id}",
            post(routes::lists::moderate),
        )
        .route(
            "/api/v1/email/mailinglist/{domain}/{name}/archive",
            get(routes::lists::archive),
        )
        .route(
            "/api/v1/email/mailinglist/{domain}/{name}/archive/{number}",
            get(routes::lists::archived),
        )
        .route(
            openapi::UNSUBSCRIBE_PATH,
            get(routes::lists::unsubscribe_get).post(routes::lists::unsubscribe_post),
        )
        .route("/api/v1/email/install", post(email::install))
        .route("/api/v1/email/queue", get(email::queue_list))
        .route("/api/v1/email/queue/flush", post(email::queue_flush))
        .route("/api/v1/email/queue/{id}", delete(email::queue_delete))
        .route("/api/v1/email/dkim", get(email::dkim_list))
        .route(
            "/api/v1/email/dkim/{domain}",
            post(email::dkim_create).delete(email::dkim_delete),
        )
        .route(
            "/api/v1/email/dkim/{domain}/verify",
            get(email::dkim_verify),
        )
        .route(
            "/api/v1/email/accounts",
            get(email::accounts).post(email::account_create),
        )
        .route("/api/v1/email/accounts/import", post(email::account_import))
        .route(
            "/api/v1/email/accounts/{id}",
            get(email::account_get)
                .put(email::account_update)
                .delete(email::account_delete),
        )
        .route(
            "/api/v1/email/accounts/{id}/messages",
            get(email::account_messages),
        )
        .route(openapi::IMPORT_PATH, post(email::mailbox_import))
        .route(
            "/api/v1/email/accounts/{id}/toggle",
            post(email::account_toggle),
        )
        .route(
            "/api/v1/email/forwarders",
            get(email::forwarders).post(email::forwarder_create),
        )
        .route(
            "/api/v1/email/forwarders/{id}",
            delete(email::forwarder_delete),
        )
        .route(
            "/api/v1/email/catchall/{domain}",
            get(email::catchall).put(email::catchall_set),
        )
        .route(
            "/api/v1/email/filters/{domain}/{account}",
            get(routes::sieve::get)
                .post(routes::sieve::create)
                .put(routes::sieve::put)
                .delete(routes::sieve::delete),
        )
        .route(
            "/api/v1/email/autoresponders/{account_id}",
            get(routes::sieve::responder_get).put(routes::sieve::responder_put),
        )
        .route(
            "/api/v1/email/vacation/{domain}",
            get(routes::sieve::vacation),
        )
        .route(
            "/api/v1/email/rbl",
            get(routes::rbl::get).put(routes::rbl::put),
        )
        .route(
            "/api/v1/email/spam",
            get(routes::spam::get).put(routes::spam::put),
        )
        .route(
            "/api/v1/email/clamav",
            get(routes::clamav::get).put(routes::clamav::put),
        )
        .route(
            "/api/v1/email/clamav/quarantine",
            get(routes::clamav::quarantine_list),
        )
        .route(
            "/api/v1/email/clamav/quarantine/{id}",
            get(routes::clamav::quarantine_get).delete(routes::clamav::quarantine_delete),
        )
        .route(
            "/api/v1/email/clamav/quarantine/{id}/release",
            post(routes::clamav::quarantine_release),
        )
        .route(
            "/api/v1/email/ratelimit",
            get(routes::ratelimit::get).post(routes::ratelimit::post),
        )
        .route(
            "/api/v1/email/ratelimit/inbound",
            put(routes::ratelimit::inbound),
        )
        .route(
            "/api/v1/email/ratelimit/{name}",
            put(routes::ratelimit::put).delete(routes::ratelimit::delete),
        )
        .route(
            "/api/v1/email/ratelimit/{name}/members",
            put(routes::ratelimit::members),
        )
        .route("/api/v1/csf/status", get(csf::status))
        .route(
            "/api/v1/csf/conntrack/status",
            get(routes::conntrack::status),
        )
        .route(
            "/api/v1/csf/conntrack/connections",
            get(routes::conntrack::connections),
        )
        .route(
            "/api/v1/csf/synflood/status",
            get(routes::protect::synflood),
        )
        .route(
            "/api/v1/csf/portflood/status",
            get(routes::protect::portflood),
        )
        .route(
            "/api/v1/csf/portscan/status",
            get(routes::protect::portscan),
        )
        .route(
            "/api/v1/csf/blacklist",
            get(csf::blacklist).post(csf::blacklist_add),
        )
        .route("/api/v1/csf/blacklist/{*ip}", delete(csf::blacklist_remove))
        .route(
            "/api/v1/csf/whitelist",
            get(csf::whitelist).post(csf::whitelist_add),
        )
        .route("/api/v1/csf/whitelist/{*ip}", delete(csf::whitelist_remove))
        .route("/api/v1/csf/check-ip", get(csf::check_ip))
        .route("/api/v1/csf/lfd/status", get(routes::lfd::status))
        .route("/api/v1/csf/lfd/failures", get(routes::lfd::failures))
        .route("/api/v1/csf/alerts", get(routes::lfd::alerts))
        .route(
            "/api/v1/csf/alerts-service/status",
            get(routes::lfd::service_status),
        )
        .route("/api/v1/csf/geoip/status", get(csf::geoip_status))
        .route("/api/v1/csf/bogon/status", get(csf::bogon_status))
        .route(
            "/api/v1/csf/blocklists",
            get(csf::blocklists).post(csf::blocklist_add),
        )
        .route(
            "/api/v1/csf/blocklists/",
            get(csf::blocklists_slash).post(csf::blocklist_add_slash),
        )
        .route(
            "/api/v1/csf/blocklists/{name}",
            put(csf::blocklist_update).delete(csf::blocklist_delete),
        )
        .route(
            "/api/v1/csf/blocklists/{name}/refresh",
            post(csf::blocklist_refresh),
        )
        .route("/api/v1/csf/ports", get(csf::ports).post(csf::port_add))
        .route(
            "/api/v1/csf/ports/",
            get(csf::ports_slash).post(csf::port_add_slash),
        )
        .route("/api/v1/csf/ports/{port}", delete(csf::port_remove))
        .route(
            "/api/v1/csf/config",
            get(csf::config).put(csf::config_update),
        )
        .route("/api/v1/csf/reload", post(csf::reload))
        .route("/api/v1/csf/apply", post(csf::apply))
        .route(
            "/api/v1/firewall/rules",
            get(firewall::rules).post(firewall::rule_add),
        )
        .route("/api/v1/firewall/rules/{id}", delete(firewall::rule_delete))
        .route("/api/v1/firewall/status", get(firewall::status))
        .route("/api/v1/firewall/toggle", post(firewall::toggle))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
        .layer(from_fn(guard::envelope))
        .layer(from_fn_with_state(state.clone(), metrics::count))
        .layer(from_fn_with_state(state.clone(), extract::buffer_body))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("No such endpoint: {}", uri.path()))
}

pub use wispd_store::unix_now;

/// RFC 3339 with an explicit offset, e.g. `2026-05-11T10:15:03+00:00`.
pub fn rfc3339(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// For the fuzz target in `fuzz/` (not an API): every request body type the API reads, from
/// arbitrary bytes, through the same parser the handlers use. Errors are fine; panics are not.
#[doc(hidden)]
pub fn fuzz_json_bodies(data: &[u8]) {
    use extract::parse_json;
    use routes::{clamav, csf, email, firewall, lists, ratelimit, tokens};
    let _ = parse_json::<tokens::CreateToken>(data);
    let _ = parse_json::<email::AccountBody>(data);
    let _ = parse_json::<email::AccountUpdate>(data);
    let _ = parse_json::<email::AccountImport>(data);
    let _ = parse_json::<email::MailboxImport>(data);
    let _ = parse_json::<email::ForwarderBody>(data);
    let _ = parse_json::<email::CatchallBody>(data);
    let _ = parse_json::<email::DkimBody>(data);
    let _ = parse_json::<csf::NewListEntry>(data);
    let _ = parse_json::<csf::NewPort>(data);
    let _ = parse_json::<csf::BlocklistChange>(data);
    let _ = parse_json::<firewall::NewRule>(data);
    let _ = parse_json::<firewall::FirewallToggle>(data);
    let _ = parse_json::<clamav::ClamavBody>(data);
    let _ = parse_json::<ratelimit::GroupBody>(data);
    let _ = parse_json::<ratelimit::GroupUpdate>(data);
    let _ = parse_json::<ratelimit::MembersBody>(data);
    let _ = parse_json::<ratelimit::InboundBody>(data);
    let _ = parse_json::<lists::ListBody>(data);
    let _ = parse_json::<lists::MembersBody>(data);
    let _ = parse_json::<lists::ModerateBody>(data);
    if let Ok(c) = parse_json::<csf::ConfigUpdate>(data) {
        let _ = c.into_changes();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_has_explicit_offset() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(super::rfc3339(1_778_519_703), "2026-05-11T17:15:03+00:00");
    }
}
