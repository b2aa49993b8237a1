//! One module per resource group.

pub mod csf;
pub mod email;
pub mod firewall;
pub mod health;
pub mod tokens;
