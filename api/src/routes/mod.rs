//! One module per resource group; each documents its operations in an OpenAPI part of its own.

pub mod clamav;
pub mod conntrack;
pub mod csf;
pub mod email;
pub mod firewall;
pub mod health;
pub mod lfd;
pub mod openapi;
pub mod protect;
pub mod ratelimit;
pub mod rbl;
pub mod sieve;
pub mod spam;
pub mod tokens;

/// The OpenAPI parts of the resource groups, merged into the whole document.
pub fn documents() -> Vec<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi;
    vec![
        email::EmailApi::openapi(),
        sieve::SieveApi::openapi(),
        rbl::RblApi::openapi(),
        spam::SpamApi::openapi(),
        clamav::ClamavApi::openapi(),
        ratelimit::RatelimitApi::openapi(),
        csf::CsfApi::openapi(),
        lfd::LfdApi::openapi(),
        conntrack::ConntrackApi::openapi(),
        protect::ProtectApi::openapi(),
        firewall::FirewallApi::openapi(),
    ]
}
