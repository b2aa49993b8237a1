//! The mail engine over the wispd store: the directory (accounts with their mailboxes,
//! forwarders, catch-alls), durable group-committed local delivery, SMTP (MX and submission),
//! IMAP, POP3, DKIM keys and signing, and the outbound queue with SRS for forwarded mail.

pub mod address;
pub mod clamav;
pub mod delivery;
pub mod directory;
pub mod dkim;
#[doc(hidden)]
pub mod fuzzing;
pub mod imap;
pub mod inbound;
pub mod limits;
pub mod lists;
pub mod login;
pub mod mailbox;
pub mod mailstore;
pub mod metrics;
pub mod passwords;
pub mod pop3;
pub mod queue;
pub mod ratelimit;
pub mod rbl;
pub mod service;
pub mod sieve;
pub mod smtp;
pub mod spam;
pub mod srs;
