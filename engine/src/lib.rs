//! The mail engine over the wispd store. So far: the directory (accounts with their mailboxes,
//! forwarders, catch-alls) and address syntax; SMTP, IMAP and the queue build on it.

pub mod address;
pub mod directory;
