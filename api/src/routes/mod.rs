//! One module per resource group; each documents its operations in an OpenAPI part of its own.

pub mod clamav;
pub mod conntrack;
pub mod csf;
pub mod email;
pub mod firewall;
pub mod health;
pub mod lfd;
pub mod lists;
pub mod openapi;
pub mod protect;
pub mod ratelimit;
pub mod rbl;
pub mod sieve;
pub mod spam;
pub mod tokens;

/// A number from a query parameter: `default` when absent or empty, else `lo..=hi` or a 400
/// naming the parameter.
pub(crate) fn query_number<T>(
    v: Option<&str>,
    name: &str,
    lo: T,
    hi: T,
    default: T,
) -> Result<T, crate::error::ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .parse::<T>()
            .ok()
            .filter(|n| *n >= lo && *n <= hi)
            .ok_or_else(|| {
                crate::error::ApiError::Validation(format!("{name} must be {lo} to {hi}"))
            }),
    }
}

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
        lists::ListsApi::openapi(),
        csf::CsfApi::openapi(),
        lfd::LfdApi::openapi(),
        conntrack::ConntrackApi::openapi(),
        protect::ProtectApi::openapi(),
        firewall::FirewallApi::openapi(),
    ]
}
