//! The mail engine (SMTP, IMAP, queue) over the wispd store.
