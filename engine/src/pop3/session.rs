//! One POP3 session: the AUTHORIZATION / TRANSACTION state machine (RFC 1939 §3), the read
//! loop (pipelined commands answered in order, RFC 2449 §6.6), timeouts and shutdown, and the
//! dispatcher that routes each command to its file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Server;
use super::codec::{self, Codec, Command, Event};
use super::maildrop::{Maildrop, Missing};
use super::wire::{Code, Reply};

/// Invalid commands a client may send before login; then it is disconnected.
const MAX_PREAUTH_BAD: u32 = 10;
/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Output is written out once this much is pending (RETR streams).
pub(super) const FLUSH_AT: usize = 256 * 1024;

/// What the driver does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Quit,
    StartTls,
}

pub(super) enum State {
    /// Before login: the name USER gave, and whether an `AUTH PLAIN` waits for its response.
    Authorization {
        user: Option<String>,
        sasl: bool,
    },
    Transaction(Maildrop),
}

impl State {
    pub fn authorization() -> State {
        State::Authorization {
            user: None,
            sasl: false,
        }
    }
}

pub(super) struct Session<S> {
    pub stream: S,
    pub server: Arc<Server>,
    pub peer: SocketAddr,
    pub tls: bool,
    pub out: Vec<u8>,
    pub state: State,
    /// Invalid commands so far (only those before login end the session).
    pub bad: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(server: Arc<Server>, stream: S, peer: SocketAddr, tls: bool) -> Session<S> {
        Session {
            stream,
            server,
            peer,
            tls,
            out: Vec::with_capacity(1024),
            state: State::authorization(),
            bad: 0,
        }
    }

    pub fn into_stream(self) -> S {
        self.stream
    }

    pub fn greet(&mut self) {
        self.reply(&Reply::ok("wispd POP3 ready"));
    }

    pub fn reply(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    pub fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.write_out().await?;
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Writes out pending output once there is a lot of it (bodies stream, pipelined
    /// replies go out together).
    pub async fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.write_out().await?;
        }
        Ok(())
    }

    /// A client that stops reading is idle too: a write that can't finish within the idle
    /// timeout ends the session (and frees the maildrop lock).
    async fn write_out(&mut self) -> std::io::Result<()> {
        let idle = self.server.settings.idle_timeout;
        match tokio::time::timeout(idle, self.stream.write_all(&self.out)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client stopped reading",
                ));
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Plaintext logins (USER/PASS, AUTH PLAIN) are allowed over TLS and from loopback, as
    /// for IMAP.
    pub fn plaintext_ok(&self) -> bool {
        self.tls || self.peer.ip().is_loopback()
    }

    /// STLS is offered: not yet TLS, a certificate configured, not logged in.
    pub fn stls_offered(&self) -> bool {
        !self.tls && self.server.tls.is_some() && matches!(self.state, State::Authorization { .. })
    }

    /// An invalid command: answered, counted.
    fn bad(&mut self, text: String) {
        self.bad += 1;
        self.reply(&Reply::err(text));
    }

    /// The answer for a message number that names no message.
    pub fn missing(&mut self, n: u64, why: Missing) {
        let text = match (why, &self.state) {
            (Missing::Deleted, _) => format!("message {n} already deleted"),
            (Missing::NoSuch, State::Transaction(m)) => {
                format!("no such message, only {} messages in maildrop", m.len())
            }
            (Missing::NoSuch, _) => "no such message".into(),
        };
        self.reply(&Reply::err(text));
    }

    async fn event(&mut self, ev: Event) -> std::io::Result<Flow> {
        let line = match ev {
            Event::TooLong => {
                if let State::Authorization { sasl, .. } = &mut self.state {
                    *sasl = false;
                }
                self.bad("line too long".into());
                return Ok(Flow::Continue);
            }
            Event::Line(line) => line,
        };
        if let State::Authorization {
            sasl: sasl @ true, ..
        } = &mut self.state
        {
            *sasl = false;
            self.sasl_response(&line).await;
            return Ok(Flow::Continue);
        }
        match codec::parse(&line) {
            Ok(cmd) => self.command(cmd).await,
            Err(why) => {
                self.bad(why.to_string());
                Ok(Flow::Continue)
            }
        }
    }

    /// The dispatcher: which command may run in which state, and where it runs.
    async fn command(&mut self, cmd: Command) -> std::io::Result<Flow> {
        let logged_in = matches!(self.state, State::Transaction(_));
        match cmd {
            Command::Capa => self.capa(),
            Command::Quit => return Ok(self.quit().await),
            Command::Noop if logged_in => self.reply(&Reply::ok("")),
            Command::Stls if self.stls_offered() => {
                self.reply(&Reply::ok("Begin TLS negotiation now"));
                return Ok(Flow::StartTls);
            }
            Command::Stls if self.tls => self.reply(&Reply::err("Already using TLS")),
            Command::Stls if logged_in => self.reply(&Reply::err("STLS is only before login")),
            Command::Stls => self.reply(&Reply::err("TLS is not available")),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if logged_in => {
                self.reply(&Reply::err("Already logged in"));
            }
            Command::User(name) => self.user(name),
            Command::Pass(password) => self.pass(password).await,
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
            Command::Stat if logged_in => self.stat(),
            Command::List(n) if logged_in => self.list(n),
            Command::Uidl(n) if logged_in => self.uidl(n),
            Command::Retr(n) if logged_in => self.retr(n, None).await?,
            Command::Top(n, lines) if logged_in => self.retr(n, Some(lines)).await?,
            Command::Dele(n) if logged_in => self.dele(n),
            Command::Rset if logged_in => self.rset(),
            Command::Noop
            | Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top(..)
            | Command::Dele(_)
            | Command::Rset => self.bad("Not logged in: USER/PASS or AUTH first".into()),
        }
        Ok(Flow::Continue)
    }

    /// Tells a session being ended by the server why, as `-ERR` (RFC 2449 resp codes).
    async fn farewell(&mut self, r: Reply) {
        self.reply(&r.with(Code::SysTemp));
        let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
    }
}

/// Runs the session until QUIT, STLS, a dropped connection, the idle timeout or shutdown.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session<S>,
) -> std::io::Result<Flow> {
    let shutdown = s.server.shutdown.clone();
    let idle = s.server.settings.idle_timeout;
    let mut codec = Codec::new(codec::MAX_LINE);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(ev) = codec.next() {
            let flow = s.event(ev).await?;
            if matches!(s.state, State::Authorization { .. }) && s.bad >= MAX_PREAUTH_BAD {
                s.reply(&Reply::err("Too many invalid commands"));
                s.flush().await?;
                let _ = s.stream.shutdown().await;
                return Ok(Flow::Quit);
            }
            match flow {
                Flow::Continue => s.flush_if_full().await?,
                Flow::Quit => {
                    s.flush().await?;
                    let _ = s.stream.shutdown().await;
                    return Ok(Flow::Quit);
                }
                Flow::StartTls => {
                    // anything pipelined after STLS came in clear: dropped
                    s.flush().await?;
                    return Ok(Flow::StartTls);
                }
            }
        }
        s.flush().await?;
        let n = tokio::select! {
            () = shutdown.cancelled() => {
                s.farewell(Reply::err("Server shutting down")).await;
                return Ok(Flow::Quit);
            }
            read = tokio::time::timeout(idle, s.stream.read(&mut chunk)) => match read {
                Ok(r) => r?,
                Err(_) => {
                    s.farewell(Reply::err("Disconnected for inactivity")).await;
                    return Ok(Flow::Quit);
                }
            },
        };
        if n == 0 {
            // a dropped connection never enters UPDATE: nothing is deleted
            return Ok(Flow::Quit);
        }
        codec.feed(&chunk[..n]);
    }
}
