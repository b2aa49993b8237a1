//! The mail engine over the wispd store. So far: the directory (accounts with their mailboxes,
//! forwarders, catch-alls), address syntax, and durable group-committed local delivery; SMTP,
//! IMAP and the queue build on them.

pub mod address;
pub mod delivery;
pub mod directory;
pub mod dkim;
pub mod imap;
pub mod limits;
pub mod mailbox;
pub mod mailstore;
pub mod service;
pub mod smtp;
