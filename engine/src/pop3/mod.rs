//! POP3 (RFC 1939) with CAPA and response codes (RFC 2449), STLS (RFC 2595) and SASL PLAIN
//! (RFC 5034), on `[pop3] listen` (STLS) and `[pop3] pop3s` (implicit TLS). The maildrop is
//! the account's INBOX as it was at login; DELE marks are committed at QUIT in one
//! transaction, a dropped connection deletes nothing. `codec` reads commands, `wire` writes
//! replies and stuffed bodies, `session` is the state machine and its dispatcher, and each
//! command group has its file: `capa`, `auth` (USER, PASS, AUTH), `list` (STAT, LIST, UIDL),
//! `retr` (RETR, TOP), `dele` (DELE, RSET), `quit` (the UPDATE state).

mod auth;
mod capa;
mod codec;
mod dele;
mod list;
mod maildrop;
mod quit;
mod retr;
mod session;
#[cfg(test)]
mod tests;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wispd_store::Store;

use self::maildrop::Locks;
use self::session::{Flow, Session};
use crate::limits::{ConnectionLimits, Refusal};
use crate::login::Logins;
use crate::mailbox::Changes;
use crate::metrics::MailMetrics;

/// Limits of the POP3 service.
#[derive(Debug, Clone)]
pub struct Pop3Settings {
    /// A silent client is disconnected after this (RFC 1939 §3: at least 10 minutes).
    pub idle_timeout: Duration,
    pub max_connections_per_ip: u32,
    pub max_connections: u32,
}

impl Default for Pop3Settings {
    fn default() -> Pop3Settings {
        Pop3Settings {
            idle_timeout: Duration::from_secs(600),
            max_connections_per_ip: 50,
            max_connections: 1000,
        }
    }
}

/// What every POP3 session shares.
pub struct Server {
    settings: Pop3Settings,
    store: Store,
    changes: Changes,
    tls: Option<TlsAcceptor>,
    logins: Arc<Logins>,
    shutdown: CancellationToken,
    limits: Arc<ConnectionLimits>,
    locks: Arc<Locks>,
    metrics: MailMetrics,
}

impl Server {
    pub fn new(
        settings: Pop3Settings,
        store: Store,
        changes: Changes,
        tls: Option<Arc<rustls::ServerConfig>>,
        logins: Arc<Logins>,
        shutdown: CancellationToken,
        metrics: MailMetrics,
    ) -> Server {
        let limits =
            ConnectionLimits::new(settings.max_connections, settings.max_connections_per_ip);
        Server {
            settings,
            store,
            changes,
            tls: tls.map(TlsAcceptor::from),
            logins,
            shutdown,
            limits,
            locks: Arc::default(),
            metrics,
        }
    }
}

/// Accepts connections until shutdown. `implicit_tls` (POP3S) starts TLS before the greeting.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    tracker: TaskTracker,
    implicit_tls: bool,
) {
    let shutdown = server.shutdown.clone();
    crate::limits::accept_loop(listener, shutdown, tracker, "pop3", move |stream, peer| {
        connection(server.clone(), stream, peer, implicit_tls)
    })
    .await;
}

/// Serves one connection: optional implicit TLS, greeting, the session, and after STLS the
/// session again over TLS (RFC 2595 §4: no second greeting).
async fn connection(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, implicit_tls: bool) {
    let _slot = match server.limits.admit(peer.ip()) {
        Ok(s) => s,
        Err(_) if implicit_tls => {
            // the client expects a TLS handshake, not a plaintext refusal: just close
            tracing::info!("pop3s connection refused: over the limit");
            return;
        }
        Err(r) => {
            let mut stream = stream;
            let msg: &[u8] = match r {
                Refusal::Full => b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
                Refusal::PerAddress => {
                    b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(msg)).await;
            return;
        }
    };
    server.metrics.pop3_sessions.inc();
    if implicit_tls {
        let Some(tls) = handshake(&server, stream).await else {
            return;
        };
        let mut s = Session::new(server, tls, peer, true);
        s.greet();
        let _ = session::run(&mut s).await;
        return;
    }
    let mut s = Session::new(server.clone(), stream, peer, false);
    s.greet();
    match session::run(&mut s).await {
        Ok(Flow::StartTls) => {}
        Ok(_) | Err(_) => return,
    }
    let Some(tls) = handshake(&server, s.into_stream()).await else {
        return;
    };
    let mut t = Session::new(server, tls, peer, true);
    let _ = session::run(&mut t).await;
}

async fn handshake(
    server: &Server,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = server.tls.clone()?;
    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "pop3 TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// The command codec and parser over `data` as the session reads it (for `fuzz/`).
pub(crate) fn fuzz_codec(data: &[u8]) {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let mut codec = codec::Codec::new(codec::MAX_LINE);
    let mut stuffer = wire::Stuffer::default();
    let mut out = Vec::new();
    for chunk in data.chunks(usize::from(cut).max(1)) {
        codec.feed(chunk);
        while let Some(ev) = codec.next() {
            if let codec::Event::Line(line) = ev {
                assert!(line.len() <= codec::MAX_LINE);
                assert!(!line.contains(&b'\n'));
                let _ = codec::parse(&line);
            }
        }
        stuffer.push(chunk, &mut out);
    }
    stuffer.finish(&mut out);
    // the stuffed body is CRLF lines, and only its last line is the termination line
    let lines: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.iter().all(|l| l.ends_with(b"\r\n")));
    assert_eq!(
        lines.iter().position(|l| *l == b".\r\n"),
        Some(lines.len() - 1)
    );
}
