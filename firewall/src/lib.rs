//! The host firewall: nftables programmed directly over netlink.
//!
//! wispd owns one table, `inet <table>`, and never touches another. The desired ruleset is built
//! from the store (settings, lists, rules) by [`plan`] and sent by [`netlink`] as one atomic
//! transaction. Address lists are kernel interval sets whose elements carry their own timeouts,
//! so bans expire in the kernel with no userspace timer and no rule per address.

pub mod alerts;
pub mod blocklist;
pub mod conntrack;
mod engine;
pub mod lfd;
mod lockout;
pub mod model;
mod msg;
mod netlink;
pub mod plan;

pub use engine::{
    Backend, CheckResult, ConnlimitEntry, EntryRequest, Firewall, FirewallConfig, FwError,
    ListKind, PortRequest, PortfloodEntry, PortfloodStatus, RuleRequest, Status, SynfloodStatus,
    Upkeep,
};
pub use lockout::Origin;
pub use netlink::NetlinkError;
