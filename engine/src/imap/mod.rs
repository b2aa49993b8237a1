//! IMAP: the Dovecot half. `framing` cuts the stream into commands (literals included),
//! imap-codec parses them, `session` runs the state machine, and the command groups live in
//! `mailboxes` (LIST, CREATE, …), `selected` (SELECT and the updates a session sees),
//! `fetch`, `search` and `bodystructure`.

mod args;
mod bodystructure;
mod condstore;
mod fetch;
pub(crate) mod framing;
mod mailboxes;
mod search;
mod selected;
mod session;
mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wispd_store::Store;

use crate::limits::{ConnectionLimits, MemoryBudget};
use crate::login::Logins;
use crate::mailbox::Changes;
use crate::metrics::MailMetrics;

/// Limits and identity of the IMAP service.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub hostname: String,
    /// Longest command line (literals excluded).
    pub max_line: usize,
    /// Largest literal (APPEND message).
    pub max_literal: usize,
    /// An idle client (IDLE included) is logged out with `* BYE` after this.
    pub idle_timeout: Duration,
    pub max_connections_per_ip: u32,
    pub max_connections: u32,
}

impl ImapSettings {
    pub fn new(hostname: String, max_literal: usize) -> ImapSettings {
        ImapSettings {
            hostname,
            max_line: 64 * 1024,
            max_literal,
            idle_timeout: Duration::from_secs(30 * 60),
            max_connections_per_ip: 50,
            max_connections: 2000,
        }
    }
}

/// What every IMAP session shares.
pub struct Server {
    settings: ImapSettings,
    store: Store,
    changes: Changes,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    limits: Arc<ConnectionLimits>,
    logins: Arc<Logins>,
    memory: Arc<MemoryBudget>,
    metrics: MailMetrics,
    recent: Recent,
}

/// Which messages have been announced as `\Recent`, per mailbox, across sessions: the
/// highest UID a read-write session was told about. Memory is authoritative while running;
/// the store's `recent_uid` seeds it after a restart.
#[derive(Default)]
pub(super) struct Recent(std::sync::Mutex<HashMap<(u64, String), (u32, u32)>>);

/// Mailboxes tracked at most; past that the map starts over from the stored marks.
const RECENT_TRACKED: usize = 100_000;

impl Recent {
    /// The mark for a mailbox: UIDs above it are recent to whoever sees them first.
    fn entry<'a>(
        map: &'a mut HashMap<(u64, String), (u32, u32)>,
        account: u64,
        name: &str,
        uidvalidity: u32,
        stored: u32,
    ) -> &'a mut (u32, u32) {
        if map.len() >= RECENT_TRACKED && !map.contains_key(&(account, name.to_string())) {
            map.clear();
        }
        let e = map
            .entry((account, name.to_string()))
            .or_insert((uidvalidity, stored));
        if e.0 != uidvalidity {
            *e = (uidvalidity, stored);
        }
        e
    }

    /// A read-write session sees UIDs up to `upto`: returns the previous mark (it gets the
    /// UIDs above it as recent) and raises the mark.
    pub fn claim(&self, account: u64, name: &str, uidvalidity: u32, stored: u32, upto: u32) -> u32 {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = Self::entry(&mut map, account, name, uidvalidity, stored);
        let prev = e.1;
        e.1 = e.1.max(upto);
        prev
    }

    /// The mark, for a read-only session (which claims nothing).
    pub fn peek(&self, account: u64, name: &str, uidvalidity: u32, stored: u32) -> u32 {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::entry(&mut map, account, name, uidvalidity, stored).1
    }
}

impl Server {
    #[expect(
        clippy::too_many_arguments,
        reason = "every part a session shares, once"
    )]
    pub fn new(
        settings: ImapSettings,
        store: Store,
        changes: Changes,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: CancellationToken,
        logins: Arc<Logins>,
        memory: Arc<MemoryBudget>,
        metrics: MailMetrics,
    ) -> Server {
        let limits =
            ConnectionLimits::new(settings.max_connections, settings.max_connections_per_ip);
        Server {
            settings,
            store,
            changes,
            tls: tls.map(TlsAcceptor::from),
            shutdown,
            limits,
            logins,
            memory,
            metrics,
            recent: Recent::default(),
        }
    }

    /// Plaintext logins are allowed over TLS, and from loopback (as Dovecot's
    /// `login_trusted_networks` default does for local clients).
    fn plaintext_ok(&self, ip: IpAddr, tls: bool) -> bool {
        tls || ip.is_loopback()
    }
}

/// Accepts connections until shutdown. `implicit_tls` (IMAPS) starts TLS before the greeting.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    tracker: TaskTracker,
    implicit_tls: bool,
) {
    let shutdown = server.shutdown.clone();
    crate::limits::accept_loop(listener, shutdown, tracker, "imap", move |stream, peer| {
        session::connection(server.clone(), stream, peer, implicit_tls)
    })
    .await;
}
