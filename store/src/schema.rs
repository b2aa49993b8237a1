//! The persisted records and the tables that hold them. Everything wispd keeps is declared here,
//! so that a schema version describes the whole file.

use serde::{Deserialize, Serialize};

use crate::Table;

/// Store metadata (`schema_version`, …).
pub const META: Table<&str, u32> = Table::new("meta");

/// API tokens by id; only a hash of each secret is kept.
pub const TOKENS: Table<&str, TokenRecord> = Table::new("api_tokens");

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Everything.
    Admin,
    /// The email endpoints of the token's domains only.
    User,
}

/// An API token as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: TokenRole,
    #[serde(default)]
    pub domains: Vec<String>,
    /// SHA-256 of the secret part of the token.
    pub secret_sha256: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
}
