//! One SMTP connection: the state it carries, the driver that moves bytes between the stream
//! and the codec, and the dispatcher that hands each command to its verb's handler. The verbs
//! with a state of their own live in `ehlo.rs`, `mail.rs`, `rcpt.rs` and `data.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{Error, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::AuthStep;
use super::codec::{Codec, Event};
use super::reply::Reply;
use super::{Port, Server};
use crate::limits::Reservation;
use wispd_store::schema::MailAccount;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 32 * 1024;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a handler tells the driver to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
    StartTls,
}

/// The client's greeting.
pub(super) struct Helo {
    pub name: String,
    pub extended: bool,
}

/// A mail transaction, from MAIL to the end of its data.
pub(super) struct Transaction {
    /// Queue-style id for logs, the `Received:` header and the final reply.
    pub id: String,
    /// Reverse path; empty for the null sender (bounces).
    pub from: String,
    pub smtputf8: bool,
    /// Accepted recipient addresses, as given.
    pub rcpts: Vec<String>,
    /// The accounts that get a copy, each once.
    pub accounts: Vec<u64>,
    /// Their addresses, in the same order (for a bounce naming those who did not get it).
    pub emails: Vec<String>,
    /// The recipient address that reached each of them (Sieve's envelope `to`), same order.
    pub envelope_to: Vec<String>,
    /// Addresses in other domains, each once, with the address the client gave when it was
    /// a forwarder: they go out through the queue.
    pub remote: Vec<(String, Option<String>)>,
    /// BDAT chunks have started (DATA is then out of sequence).
    pub chunking: bool,
    /// When the message must be in (set at DATA or the first BDAT): trickling bytes can't
    /// stretch a transfer past it.
    pub deadline: Option<tokio::time::Instant>,
    /// A mailing-list address: it is the transaction's only recipient.
    pub list: Option<crate::lists::ListTarget>,
}

/// The protocol state of a session, independent of the stream it runs over.
pub(super) struct Core {
    pub server: Arc<Server>,
    pub peer: SocketAddr,
    pub port: Port,
    /// The account that authenticated (submission).
    pub account: Option<MailAccount>,
    /// An AUTH exchange waiting for the client's next line.
    pub auth: Option<AuthStep>,
    pub codec: Codec,
    pub out: Vec<u8>,
    pub helo: Option<Helo>,
    /// `TLSv1.3 with cipher …` once TLS is up.
    pub tls: Option<String>,
    pub tx: Option<Transaction>,
    /// A reply owed for a BDAT chunk that is being skipped.
    pub bdat_rejected: Option<Reply>,
    pub errors: u32,
    /// The memory the message being received holds, from the server's budget.
    pub memory: Reservation,
    /// The client's DNSBL listings: being looked up since the connection, or known.
    pub dnsbl: Dnsbl,
}

/// DNSBL state of a connection (MX only).
pub(super) enum Dnsbl {
    Off,
    Pending(tokio::task::JoinHandle<Vec<crate::rbl::Listing>>),
    Known(Vec<crate::rbl::Listing>),
}

impl Dnsbl {
    /// The listings, waiting for the lookup if it is still running (it is bounded by the
    /// per-zone timeouts).
    pub async fn listings(&mut self) -> &[crate::rbl::Listing] {
        if let Dnsbl::Pending(h) = self {
            let found = h.await.unwrap_or_default();
            *self = Dnsbl::Known(found);
        }
        match self {
            Dnsbl::Known(l) => l,
            _ => &[],
        }
    }
}

impl Core {
    fn new(server: Arc<Server>, peer: SocketAddr, port: Port, tls: Option<String>) -> Core {
        Core {
            peer,
            port,
            account: None,
            auth: None,
            codec: Codec::default(),
            out: Vec::with_capacity(512),
            helo: None,
            dnsbl: Dnsbl::Off,
            tls,
            tx: None,
            bdat_rejected: None,
            errors: 0,
            memory: server.memory.reservation(peer.ip()),
            server,
        }
    }

    /// Queues `reply`; a client that keeps making mistakes is disconnected.
    pub fn reply(&mut self, reply: Reply) -> Flow {
        reply.write_to(&mut self.out);
        if reply.code >= 500 {
            self.errors += 1;
            if self.errors >= self.server.settings.max_errors {
                Reply::new(421, "4.7.0", "Too many errors, closing connection")
                    .write_to(&mut self.out);
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Request(r) => self.dispatch(r).await,
            Event::Invalid(e) => self.reply(invalid(&e)),
            Event::LineTooLong => self.reply(Reply::new(500, "5.5.0", "Line too long")),
            Event::NumberTooLarge => self.reply(Reply::new(501, "5.5.4", "Number too large")),
            Event::DataEnd { too_big } => self.data_end(too_big).await,
            Event::ChunkEnd { last, too_big } => self.chunk_end(last, too_big).await,
            Event::Line(line) => self.auth_line(line).await,
        }
    }

    async fn dispatch(&mut self, request: Request<String>) -> Flow {
        match request {
            Request::Ehlo { host } => self.ehlo(host, true),
            Request::Helo { host } => self.ehlo(host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => {
                // a DNSBL reject listing refuses every recipient but postmaster (RFC 5321 4.5.1)
                let postmaster = to
                    .address
                    .split('@')
                    .next()
                    .is_some_and(|l| l.trim().eq_ignore_ascii_case("postmaster"));
                if !postmaster
                    && self.tx.is_some()
                    && let Some(l) = self.dnsbl.listings().await.iter().find(|l| l.reject)
                {
                    let why = match &l.reason {
                        Some(r) => format!(
                            "Service unavailable; client [{}] blocked using {}: {r}",
                            self.peer.ip(),
                            l.zone
                        ),
                        None => format!(
                            "Service unavailable; client [{}] blocked using {}",
                            self.peer.ip(),
                            l.zone
                        ),
                    };
                    tracing::info!(zone = %l.zone, "recipient refused: client listed in a DNSBL");
                    return self.refuse_rcpt(
                        crate::metrics::RcptRefusal::Dnsbl,
                        Reply::new(554, "5.7.1", why),
                    );
                }
                self.rcpt(to)
            }
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Rset => {
                self.tx = None;
                self.reply(Reply::new(250, "2.0.0", "Ok"))
            }
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "Ok")),
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                "2.0.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Expn { .. } => self.reply(Reply::new(502, "5.5.1", "EXPN is not available")),
            Request::Help { .. } => self.reply(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY STARTTLS QUIT",
            )),
            Request::Quit => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                Flow::Close
            }
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            other @ (Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }) => {
                let verb = other.name();
                self.reply(Reply::new(
                    502,
                    "5.5.1",
                    format!("{verb} is not offered on this server"),
                ))
            }
        }
    }

    /// Counts what became of a message at the end of its data.
    pub fn count_message(&self, outcome: crate::metrics::MessageOutcome) {
        self.server.metrics.message(self.port.listener(), outcome);
    }

    /// Refuses a recipient, counted by reason.
    pub fn refuse_rcpt(&mut self, reason: crate::metrics::RcptRefusal, reply: Reply) -> Flow {
        self.server.metrics.rcpt_refused(reason);
        self.reply(reply)
    }

    /// Grows the memory reservation with the message being read; when the budget can't hold
    /// it, the message is dropped (read on to its end, then answered `452 4.3.1`).
    fn hold_message_memory(&mut self) {
        let held = self.codec.message_capacity();
        if !self.memory.grow_to(held) {
            tracing::warn!(
                bytes = held,
                "message dropped: memory budget for messages in flight is full"
            );
            self.codec.starve();
            self.memory.release();
        }
    }

    /// Until when the next read may wait: the idle timeout, or the transaction's deadline
    /// when that comes first.
    fn read_deadline(&self, idle: Duration) -> tokio::time::Instant {
        let idle = tokio::time::Instant::now() + idle;
        match self.tx.as_ref().and_then(|t| t.deadline) {
            Some(d) => d.min(idle),
            None => idle,
        }
    }

    fn starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            return self.reply(Reply::new(503, "5.5.1", "TLS is already active"));
        }
        if self.server.tls.is_none() {
            return self.reply(Reply::new(454, "4.7.0", "TLS not available"));
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        Flow::StartTls
    }
}

fn invalid(e: &Error) -> Reply {
    match e {
        Error::UnknownCommand => Reply::new(500, "5.5.2", "Command unrecognized"),
        Error::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        Error::InvalidRecipientAddress => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        Error::SyntaxError { syntax } => Reply::new(501, "5.5.4", format!("Syntax: {syntax}")),
        Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
        }
        Error::UnsupportedParameter { param } => Reply::new(
            555,
            "5.5.4",
            format!(
                "Unsupported parameter {}",
                param.chars().take(64).collect::<String>()
            ),
        ),
        Error::ResponseTooLong => Reply::new(500, "5.5.0", "Line too long"),
        Error::NeedsMoreData { .. } | Error::InvalidResponse { .. } => {
            Reply::new(500, "5.5.2", "Syntax error")
        }
    }
}

/// How a session over one stream ended.
enum Ended<S> {
    Closed,
    /// The client asked for TLS: here is the stream to hand to the TLS acceptor.
    StartTls(S),
}

/// Runs a session over `stream` until it closes or asks for TLS.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    core: &mut Core,
) -> std::io::Result<Ended<S>> {
    let idle = core.server.settings.idle_timeout;
    let shutdown = core.server.shutdown.clone();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if !core.out.is_empty() {
            tokio::time::timeout(idle, stream.write_all(&core.out))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            core.out.clear();
        }
        let n = tokio::select! {
            () = shutdown.cancelled() => {
                Reply::new(421, "4.3.2", "Server shutting down").write_to(&mut core.out);
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&core.out)).await;
                return Ok(Ended::Closed);
            }
            read = tokio::time::timeout_at(core.read_deadline(idle), stream.read(&mut chunk)) => match read {
                Ok(r) => r?,
                Err(_) => {
                    Reply::new(421, "4.4.2", "Timeout exceeded, closing connection")
                        .write_to(&mut core.out);
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&core.out)).await;
                    return Ok(Ended::Closed);
                }
            },
        };
        if n == 0 {
            return Ok(Ended::Closed);
        }
        let mut input = chunk[..n].iter();
        loop {
            let event = core.codec.decode(&mut input);
            core.hold_message_memory();
            let Some(event) = event else {
                break;
            };
            match core.handle(event).await {
                Flow::Continue => {}
                Flow::Close => {
                    stream.write_all(&core.out).await?;
                    let _ = stream.shutdown().await;
                    return Ok(Ended::Closed);
                }
                Flow::StartTls => {
                    // Anything pipelined after STARTTLS was sent in clear: drop it (RFC 3207 §4.2).
                    stream.write_all(&core.out).await?;
                    core.out.clear();
                    return Ok(Ended::StartTls(stream));
                }
            }
        }
    }
}

/// Serves one accepted connection: TLS first on the implicit-TLS port, else through STARTTLS
/// if the client asks.
pub(super) async fn connection(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    port: Port,
) {
    let _slot = match server.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(reply) => {
            tracing::info!(%reply.code, "connection refused: over the limit");
            // On the implicit-TLS port the client expects a handshake, not plaintext: close.
            if port != Port::Submissions {
                let mut out = Vec::new();
                reply.write_to(&mut out);
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
            }
            return;
        }
    };
    if port == Port::Mx
        && let Some(r) = &server.ratelimit
        && let Err(limited) = r.inbound_connection(peer.ip(), wispd_store::unix_now())
    {
        tracing::info!(reason = %limited.0, "connection refused: over the network's rate");
        let mut out = Vec::new();
        Reply::new(421, "4.7.0", limited.0).write_to(&mut out);
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
        return;
    }
    server.metrics.session(port.listener());
    // the DNSBL lookup runs while the client greets and says who it is; RCPT waits for it
    let dnsbl = match (&server.rbl, port) {
        (Some(rbl), Port::Mx) => {
            let (rbl, ip) = (rbl.clone(), peer.ip());
            Dnsbl::Pending(tokio::spawn(async move { rbl.lookup(ip).await }))
        }
        _ => Dnsbl::Off,
    };
    let greeting = Reply::plain(
        220,
        vec![format!("{} ESMTP wispd", server.settings.hostname).into()],
    );
    if port == Port::Submissions {
        let Some((tls, info)) = handshake(&server, stream).await else {
            return;
        };
        let mut core = Core::new(server, peer, port, Some(info));
        greeting.write_to(&mut core.out);
        if let Err(e) = run(tls, &mut core).await {
            tracing::debug!(error = %e, "smtp session ended");
        }
        return;
    }
    let mut core = Core::new(server.clone(), peer, port, None);
    core.dnsbl = dnsbl;
    greeting.write_to(&mut core.out);
    let stream = match run(stream, &mut core).await {
        Ok(Ended::Closed) => return,
        Ok(Ended::StartTls(s)) => s,
        Err(e) => {
            tracing::debug!(error = %e, "smtp session ended");
            return;
        }
    };
    let Some((tls, info)) = handshake(&server, stream).await else {
        return;
    };
    // RFC 3207: after TLS the session starts over, the client must EHLO again.
    let dnsbl = std::mem::replace(&mut core.dnsbl, Dnsbl::Off);
    let mut core = Core::new(server, peer, port, Some(info));
    core.dnsbl = dnsbl;
    match run(tls, &mut core).await {
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "smtp session ended"),
    }
}

/// The TLS handshake, and how it went for the `Received:` header.
async fn handshake(
    server: &Server,
    stream: TcpStream,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, String)> {
    let acceptor = server.tls.clone()?;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            return None;
        }
    };
    let (_, conn) = tls.get_ref();
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .unwrap_or("TLS")
        .replace("TLSv1_", "TLSv1.");
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .unwrap_or("unknown");
    Some((tls, format!("{version} with cipher {cipher}")))
}
