//! One module per resource group.

pub mod health;
pub mod tokens;
