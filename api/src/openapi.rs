//! The OpenAPI 3.1 document of the whole `/api/v1` surface, generated from the typed views and
//! each handler's `#[utoipa::path]`, and served at `GET /api/v1/openapi.json`. The conventions
//! every authenticated operation shares (the bearer token, the error envelope for every error
//! status, the rate-limit headers) are added here once instead of on every handler.

use std::sync::LazyLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, ObjectBuilder, OpenApi as Document, RefOr, Type};
use utoipa::{Modify, OpenApi};

use crate::routes;
use crate::view::ErrorEnvelope;

/// Paths that need no token.
pub const OPEN_PATHS: [&str; 2] = [crate::HEALTH_PATH, OPENAPI_PATH];

/// Needs no token either: the one-click unsubscribe links in list mail, whose own signature is
/// the authority (any `{token}`).
pub const UNSUBSCRIBE_PATH: &str = "/api/v1/email/unsubscribe/{token}";

/// Whether `path` (as requested, or as documented) needs no token.
pub fn is_open(path: &str) -> bool {
    let unsubscribe = UNSUBSCRIBE_PATH.trim_end_matches("{token}");
    OPEN_PATHS.contains(&path)
        || path
            .strip_prefix(unsubscribe)
            .is_some_and(|t| !t.is_empty() && !t.contains('/'))
}

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The mailbox import (`routes::email::mailbox_import`), whose bodies may be larger.
pub const IMPORT_PATH: &str = "/api/v1/email/accounts/{id}/mailboxes/import";

/// Whether `path` is [`IMPORT_PATH`] for some account id.
pub fn is_import(path: &str) -> bool {
    let (head, tail) = IMPORT_PATH.split_once("{id}").unwrap_or((IMPORT_PATH, ""));
    path.strip_prefix(head)
        .and_then(|rest| rest.strip_suffix(tail))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wispd",
        description = "One binary that is a complete mail server and a host firewall, driven by this REST API. \
Every request but /api/v1/health and /api/v1/openapi.json needs `Authorization: Bearer wsp_…`; the \
security requirement of each operation names the roles that may call it (`admin`, or `user` for the \
domains bound to the token). Every error is the envelope (ErrorEnvelope) with the HTTP status repeated inside.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only")
    ),
    paths(
        routes::health::get,
        routes::openapi::get,
        crate::metrics::get,
        routes::tokens::list,
        routes::tokens::create,
        routes::tokens::delete,
    ),
    components(schemas(ErrorEnvelope)),
    tags(
        (name = "system", description = "Health and this document"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "email", description = "Mail: accounts, forwarders, catch-alls, DKIM, queue, status"),
        (name = "csf", description = "CSF-compatible firewall: lists, ports, settings, blocklists"),
        (name = "firewall", description = "Firewall rules and state"),
    )
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(|| {
        let mut doc = ApiDoc::openapi();
        for part in routes::documents() {
            doc.merge(part);
        }
        Conventions.modify(&mut doc);
        doc
    });
    &DOC
}

/// The document as served and committed (`api/openapi.json`): pretty JSON, a final newline.
pub fn document_json() -> String {
    let mut s = serde_json::to_string_pretty(document()).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// Error statuses an authenticated operation may answer, each with the envelope.
const ERRORS: [(u16, &str); 10] = [
    (400, "Invalid request (VALIDATION_ERROR)"),
    (401, "Missing or invalid token (UNAUTHORIZED)"),
    (
        403,
        "The token's role or domains don't reach this (FORBIDDEN)",
    ),
    (404, "No such resource (NOT_FOUND)"),
    (405, "Method not allowed (METHOD_NOT_ALLOWED)"),
    (409, "Conflicts with what exists (CONFLICT)"),
    (413, "Body over 1 MiB (PAYLOAD_TOO_LARGE)"),
    (
        429,
        "Over the token's rate limit (RATE_LIMITED), with Retry-After",
    ),
    (500, "Internal error (INTERNAL_ERROR)"),
    (503, "A part is unavailable (UNAVAILABLE)"),
];

/// The shared conventions: bearer security scheme; on every authenticated operation the error
/// responses and the `X-RateLimit-*` headers.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components
            .schemas
            .entry("ErrorEnvelope".into())
            .or_insert_with(<ErrorEnvelope as utoipa::PartialSchema>::schema);
        let int = || ObjectBuilder::new().schema_type(Type::Integer).build();
        let rate_headers = [
            (
                "X-RateLimit-Limit",
                "Requests allowed per minute for this token",
            ),
            (
                "X-RateLimit-Remaining",
                "Requests left in the current window",
            ),
            (
                "X-RateLimit-Reset",
                "Unix seconds when the window is full again",
            ),
        ];
        let envelope = || {
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ErrorEnvelope",
            ))))
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let open = is_open(path);
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if open {
                    continue;
                }
                for (code, description) in ERRORS {
                    let key = code.to_string();
                    if op.responses.responses.contains_key(&key) {
                        continue;
                    }
                    let mut r = ResponseBuilder::new()
                        .description(description)
                        .content("application/json", envelope());
                    if code == 429 {
                        r = r.header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(int())
                                .description(Some("Seconds until a request is allowed"))
                                .build(),
                        );
                    }
                    op.responses.responses.insert(key, RefOr::T(r.build()));
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = response {
                        for (name, description) in rate_headers {
                            r.headers.entry(name.into()).or_insert_with(|| {
                                HeaderBuilder::new()
                                    .schema(int())
                                    .description(Some(description))
                                    .build()
                            });
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The committed copy (`api/openapi.json`) is the document the server serves; regenerate it
    /// with `UPDATE_OPENAPI=1 cargo test -p wispd-api openapi`.
    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let generated = super::document_json();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write api/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "api/openapi.json differs from the generated document: run UPDATE_OPENAPI=1 cargo test -p wispd-api openapi"
        );
    }

    #[test]
    fn every_operation_is_documented_with_security_and_the_envelope() {
        let doc = super::document();
        assert!(matches!(
            doc.openapi,
            utoipa::openapi::OpenApiVersion::Version31
        ));
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.put, &item.post, &item.delete]
                .into_iter()
                .flatten()
            {
                let open = super::is_open(path);
                assert_eq!(op.security.is_none(), open, "{path}: security");
                if !open {
                    assert!(op.responses.responses.contains_key("401"), "{path}");
                }
            }
        }
    }

    #[test]
    fn the_import_path_is_the_documented_one_and_matches_one_id() {
        assert!(
            super::document()
                .paths
                .paths
                .contains_key(super::IMPORT_PATH)
        );
        assert!(super::is_import(
            "/api/v1/email/accounts/7/mailboxes/import"
        ));
        for other in [
            "/api/v1/email/accounts//mailboxes/import",
            "/api/v1/email/accounts/7/8/mailboxes/import",
            "/api/v1/email/accounts/7/mailboxes/import/x",
            "/api/v1/email/accounts/import",
        ] {
            assert!(!super::is_import(other), "{other}");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for item in super::document().paths.paths.values() {
            for op in [&item.get, &item.put, &item.post, &item.delete]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.clone().unwrap_or_default();
                assert!(seen.insert(id.clone()), "operationId {id} twice");
            }
        }
    }
}
