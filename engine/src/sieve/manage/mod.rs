//! ManageSieve (RFC 5804): the accounts' Sieve scripts over their own protocol, for Sieve
//! clients (Thunderbird's add-on, Roundcube, sieve-connect). STARTTLS, then `AUTHENTICATE
//! "PLAIN"` through the login gate IMAP uses; the scripts are [`Filters`]' (what the API edits).

mod codec;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wispd_store::schema::MailAccount;

use self::codec::{Codec, Event, Token, string};
use super::{FilterError, Filters};
use crate::limits::ConnectionLimits;
use crate::login::{Logins, Verdict};
use crate::metrics::{LoginResult, MailMetrics, Protocol};

/// Longest command line, literals aside.
const MAX_LINE: usize = 8 * 1024;
/// Largest literal before login (credentials).
const PREAUTH_LITERAL: usize = 8 * 1024;
/// Bad commands before the server hangs up.
const MAX_ERRORS: u32 = 10;
const IDLE: Duration = Duration::from_secs(600);

/// What every ManageSieve session shares.
pub struct Server {
    filters: Filters,
    tls: Option<TlsAcceptor>,
    logins: Arc<Logins>,
    shutdown: CancellationToken,
    limits: Arc<ConnectionLimits>,
    metrics: MailMetrics,
}

impl Server {
    pub fn new(
        filters: Filters,
        tls: Option<Arc<rustls::ServerConfig>>,
        logins: Arc<Logins>,
        shutdown: CancellationToken,
        metrics: MailMetrics,
    ) -> Server {
        Server {
            filters,
            tls: tls.map(TlsAcceptor::from),
            logins,
            shutdown,
            limits: ConnectionLimits::new(1000, 20),
            metrics,
        }
    }
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, server: Arc<Server>, tracker: TaskTracker) {
    let shutdown = server.shutdown.clone();
    crate::limits::accept_loop(
        listener,
        shutdown,
        tracker,
        "managesieve",
        move |stream, peer| connection(server.clone(), stream, peer),
    )
    .await;
}

async fn connection(server: Arc<Server>, mut stream: TcpStream, peer: SocketAddr) {
    let Ok(_slot) = server.limits.admit(peer.ip()) else {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            stream.write_all(b"BYE \"Too many connections\"\r\n"),
        )
        .await;
        return;
    };
    let mut s = Session::new(server.clone(), peer, false);
    s.capabilities();
    s.ok(None, "wispd ManageSieve ready.");
    match s.run(&mut stream).await {
        Ok(Flow::StartTls) => {}
        _ => return,
    }
    let Some(acceptor) = server.tls.clone() else {
        return;
    };
    let mut tls = match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "managesieve TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let mut t = Session::new(server, peer, true);
    // RFC 5804 §2.2: the capabilities again, now over TLS.
    t.capabilities();
    t.ok(None, "TLS negotiation successful.");
    let _ = t.run(&mut tls).await;
}

enum Flow {
    Continue,
    Logout,
    StartTls,
}

struct Session {
    server: Arc<Server>,
    peer: SocketAddr,
    tls: bool,
    account: Option<MailAccount>,
    out: Vec<u8>,
    errors: u32,
    /// `AUTHENTICATE "PLAIN"` without an initial response: the next line is the response.
    sasl_pending: bool,
}

impl Session {
    fn new(server: Arc<Server>, peer: SocketAddr, tls: bool) -> Session {
        Session {
            server,
            peer,
            tls,
            account: None,
            out: Vec::with_capacity(512),
            errors: 0,
            sasl_pending: false,
        }
    }

    fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    fn respond(&mut self, kind: &str, code: Option<&str>, text: &str) {
        self.raw(kind.as_bytes());
        if let Some(c) = code {
            self.raw(format!(" ({c})").as_bytes());
        }
        self.raw(b" ");
        let quoted = string(text.as_bytes());
        self.raw(&quoted);
        self.raw(b"\r\n");
    }

    fn ok(&mut self, code: Option<&str>, text: &str) {
        self.respond("OK", code, text);
    }

    fn no(&mut self, code: Option<&str>, text: &str) {
        self.respond("NO", code, text);
    }

    fn capabilities(&mut self) {
        let mut lines = vec![
            ("IMPLEMENTATION".to_string(), "wispd".to_string()),
            ("SIEVE".into(), self.server.filters.extensions()),
        ];
        let auth_ok = self.tls || self.server.tls.is_none();
        lines.push((
            "SASL".into(),
            if auth_ok {
                "PLAIN".into()
            } else {
                String::new()
            },
        ));
        if !self.tls && self.server.tls.is_some() {
            lines.push(("STARTTLS".into(), String::new()));
        }
        lines.push((
            "MAXREDIRECTS".into(),
            self.server.filters.settings().max_redirects.to_string(),
        ));
        if let Some(a) = &self.account {
            lines.push(("OWNER".into(), a.email()));
        }
        lines.push(("VERSION".into(), "1.0".into()));
        for (k, v) in lines {
            let mut line = string(k.as_bytes());
            if k != "STARTTLS" {
                line.push(b' ');
                line.extend_from_slice(&string(v.as_bytes()));
            }
            line.extend_from_slice(b"\r\n");
            self.raw(&line);
        }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<Flow> {
        let max_literal = self.server.filters.settings().max_script_size + 1024;
        let mut codec = Codec::new(MAX_LINE, PREAUTH_LITERAL);
        let mut chunk = vec![0u8; 16 * 1024];
        let shutdown = self.server.shutdown.clone();
        loop {
            if !self.out.is_empty() {
                stream.write_all(&self.out).await?;
                stream.flush().await?;
                self.out.clear();
            }
            while let Some(ev) = codec.next() {
                let flow = self.event(ev).await;
                codec.set_max_literal(if self.account.is_some() {
                    max_literal
                } else {
                    PREAUTH_LITERAL
                });
                if self.errors >= MAX_ERRORS {
                    self.respond("BYE", None, "Too many errors");
                    stream.write_all(&self.out).await?;
                    return Ok(Flow::Logout);
                }
                match flow {
                    Flow::Continue => {}
                    other => {
                        stream.write_all(&self.out).await?;
                        stream.flush().await?;
                        self.out.clear();
                        if matches!(other, Flow::Logout) {
                            let _ = stream.shutdown().await;
                        }
                        return Ok(other);
                    }
                }
            }
            if !self.out.is_empty() {
                continue;
            }
            let n = tokio::select! {
                () = shutdown.cancelled() => {
                    self.respond("BYE", Some("TRYLATER"), "Server shutting down");
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&self.out)).await;
                    return Ok(Flow::Logout);
                }
                r = tokio::time::timeout(IDLE, stream.read(&mut chunk)) => match r {
                    Ok(r) => r?,
                    Err(_) => {
                        self.respond("BYE", None, "Disconnected for inactivity");
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&self.out)).await;
                        return Ok(Flow::Logout);
                    }
                },
            };
            if n == 0 {
                return Ok(Flow::Logout);
            }
            codec.feed(&chunk[..n]);
        }
    }

    async fn event(&mut self, ev: Event) -> Flow {
        match ev {
            Event::Bad(why) => {
                self.errors += 1;
                self.sasl_pending = false;
                self.no(None, &why);
                Flow::Continue
            }
            Event::TooBig { size } => {
                self.errors += 1;
                let limit = self.server.filters.settings().max_script_size;
                self.no(
                    Some("QUOTA/MAXSIZE"),
                    &format!("{size} bytes is over the limit of {limit}"),
                );
                Flow::Continue
            }
            Event::Command(tokens) => {
                if std::mem::take(&mut self.sasl_pending) {
                    let response = tokens
                        .first()
                        .map(|t| t.bytes().to_vec())
                        .unwrap_or_default();
                    if response == b"*" {
                        self.no(None, "Authentication aborted");
                    } else {
                        self.plain(&response).await;
                    }
                    return Flow::Continue;
                }
                self.command(tokens).await
            }
        }
    }

    async fn command(&mut self, tokens: Vec<Token>) -> Flow {
        let Some(Token::Atom(name)) = tokens.first() else {
            self.errors += 1;
            self.no(None, "Expected a command");
            return Flow::Continue;
        };
        let name = name.to_ascii_uppercase();
        let args: Vec<&[u8]> = tokens[1..].iter().map(Token::bytes).collect();
        let text = |i: usize| -> Option<String> {
            args.get(i)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
        };
        match (name.as_str(), self.account.is_some()) {
            ("CAPABILITY", _) => {
                self.capabilities();
                self.ok(None, "Capability completed.");
            }
            ("NOOP", _) => match text(0) {
                Some(tag) => {
                    let code = format!("TAG {}", String::from_utf8_lossy(&string(tag.as_bytes())));
                    self.ok(Some(&code), "Done");
                }
                None => self.ok(None, "NOOP completed."),
            },
            ("LOGOUT", _) => {
                self.ok(None, "Logout completed.");
                return Flow::Logout;
            }
            ("STARTTLS", false) if !self.tls && self.server.tls.is_some() => {
                self.ok(None, "Begin TLS negotiation now.");
                return Flow::StartTls;
            }
            ("STARTTLS", _) => self.no(None, "TLS is not available now"),
            ("AUTHENTICATE", false) => self.authenticate(&args).await,
            ("AUTHENTICATE", true) => self.no(None, "Already authenticated"),
            ("UNAUTHENTICATE", true) => {
                self.account = None;
                self.ok(None, "Unauthenticate completed.");
            }
            (_, false) => {
                self.errors += 1;
                self.no(None, "Authenticate first");
            }
            (cmd, true) => self.authenticated(cmd, &args).await,
        }
        Flow::Continue
    }

    async fn authenticate(&mut self, args: &[&[u8]]) {
        if !self.tls && self.server.tls.is_some() {
            self.no(
                Some("ENCRYPT-NEEDED"),
                "Authentication requires TLS: STARTTLS first",
            );
            return;
        }
        match args.first() {
            Some(m) if m.eq_ignore_ascii_case(b"PLAIN") => {}
            _ => {
                self.no(None, "Unsupported mechanism: PLAIN only");
                return;
            }
        }
        match args.get(1) {
            Some(initial) => {
                let initial = initial.to_vec();
                self.plain(&initial).await;
            }
            None => {
                self.sasl_pending = true;
                self.raw(b"\"\"\r\n");
            }
        }
    }

    async fn plain(&mut self, response: &[u8]) {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(response) else {
            self.no(None, "Invalid base64");
            return;
        };
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.no(None, "Invalid PLAIN response");
            return;
        };
        let (user, pass) = (
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(pass).into_owned(),
        );
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user.as_bytes()) {
            self.no(None, "Can't act as another user");
            return;
        }
        let verdict = self
            .server
            .logins
            .check(
                crate::login::Protocol::ManageSieve,
                self.peer.ip(),
                &user,
                &pass,
            )
            .await;
        self.server
            .metrics
            .login(Protocol::ManageSieve, LoginResult::from(&verdict));
        match verdict {
            Verdict::Accepted(a) => {
                tracing::info!(user = %a.email(), "managesieve login");
                self.account = Some(a);
                self.ok(None, "Logged in.");
            }
            Verdict::Refused => {
                let n = self.server.logins.failures(self.peer.ip());
                tracing::debug!(failures = n, "managesieve login failed");
                self.errors += 1;
                self.no(None, "Authentication failed.");
            }
            Verdict::Busy => self.no(Some("TRYLATER"), "Temporary authentication failure"),
            Verdict::Failed(e) => {
                tracing::error!(error = %e, "login check failed");
                self.no(Some("TRYLATER"), "Temporary authentication failure");
            }
        }
    }

    /// Runs a store operation of the filters on a blocking thread.
    async fn filters<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Filters, u64) -> Result<R, FilterError> + Send + 'static,
    ) -> Result<R, FilterError> {
        let filters = self.server.filters.clone();
        let id = self.account.as_ref().map_or(0, |a| a.id);
        match tokio::task::spawn_blocking(move || f(&filters, id)).await {
            Ok(r) => r,
            Err(e) => Err(FilterError::Internal(format!("filter task failed: {e}"))),
        }
    }

    fn failed(&mut self, e: &FilterError) {
        let code = match e {
            FilterError::NoSuchScript(_) => Some("NONEXISTENT"),
            FilterError::Exists(_) => Some("ALREADYEXISTS"),
            FilterError::Active(_) => Some("ACTIVE"),
            FilterError::TooLarge { .. } => Some("QUOTA/MAXSIZE"),
            FilterError::TooMany(_) => Some("QUOTA/MAXSCRIPTS"),
            FilterError::Store(_) | FilterError::Internal(_) => Some("TRYLATER"),
            FilterError::Invalid(_) | FilterError::BadName(_) => None,
        };
        let text = match e {
            FilterError::Invalid(s) => s.to_string(),
            FilterError::Internal(err) => {
                tracing::error!(error = %err, "managesieve operation failed");
                "Temporary failure, try again later".into()
            }
            FilterError::Store(err) => {
                tracing::error!(error = %err, "managesieve store operation failed");
                "Temporary failure, try again later".into()
            }
            other => other.to_string(),
        };
        self.no(code, &text);
    }

    async fn authenticated(&mut self, cmd: &str, args: &[&[u8]]) {
        let name = |i: usize| -> Option<String> {
            args.get(i)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
        };
        let arity = match cmd {
            "LISTSCRIPTS" => 0,
            "GETSCRIPT" | "DELETESCRIPT" | "SETACTIVE" | "CHECKSCRIPT" => 1,
            "HAVESPACE" | "PUTSCRIPT" | "RENAMESCRIPT" => 2,
            _ => {
                self.errors += 1;
                self.no(None, &format!("Unknown command {cmd}"));
                return;
            }
        };
        if args.len() != arity || (0..arity).any(|i| name(i).is_none()) {
            self.errors += 1;
            self.no(
                None,
                &format!("{cmd} takes {arity} UTF-8 string argument(s)"),
            );
            return;
        }
        let (a0, a1) = (name(0).unwrap_or_default(), name(1).unwrap_or_default());
        match cmd {
            "LISTSCRIPTS" => match self.filters(|f, id| f.scripts(id)).await {
                Ok(list) => {
                    for s in list {
                        let mut line = string(s.name.as_bytes());
                        if s.active {
                            line.extend_from_slice(b" ACTIVE");
                        }
                        line.extend_from_slice(b"\r\n");
                        self.raw(&line);
                    }
                    self.ok(None, "Listscripts completed.");
                }
                Err(e) => self.failed(&e),
            },
            "GETSCRIPT" => match self.filters(move |f, id| f.script(id, &a0)).await {
                Ok(Some(s)) => {
                    self.raw(format!("{{{}}}\r\n", s.source.len()).as_bytes());
                    self.raw(s.source.as_bytes());
                    self.raw(b"\r\n");
                    self.ok(None, "Getscript completed.");
                }
                Ok(None) => self.no(Some("NONEXISTENT"), "Script does not exist."),
                Err(e) => self.failed(&e),
            },
            "DELETESCRIPT" => match self.filters(move |f, id| f.delete(id, &a0, false)).await {
                Ok(()) => self.ok(None, "Deletescript completed."),
                Err(e) => self.failed(&e),
            },
            "SETACTIVE" => {
                match self
                    .filters(move |f, id| f.set_active(id, Some(a0.as_str())))
                    .await
                {
                    Ok(()) => self.ok(None, "Setactive completed."),
                    Err(e) => self.failed(&e),
                }
            }
            "CHECKSCRIPT" => match self.server.filters.compile(&a0) {
                Ok(_) => self.ok(None, "Script is valid."),
                Err(e) => self.no(None, &e.to_string()),
            },
            "HAVESPACE" => {
                let Ok(size) = a1.parse::<u64>() else {
                    self.errors += 1;
                    self.no(None, "HAVESPACE size must be a number");
                    return;
                };
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                match self.filters(move |f, id| f.have_space(id, &a0, size)).await {
                    Ok(()) => self.ok(None, "Putscript would succeed."),
                    Err(e) => self.failed(&e),
                }
            }
            "PUTSCRIPT" => match self
                .filters(move |f, id| f.put(id, &a0, &a1, None, false))
                .await
            {
                Ok(_) => self.ok(None, "Putscript completed."),
                Err(e) => self.failed(&e),
            },
            "RENAMESCRIPT" => match self.filters(move |f, id| f.rename(id, &a0, &a1)).await {
                Ok(()) => self.ok(None, "Renamescript completed."),
                Err(e) => self.failed(&e),
            },
            _ => {}
        }
    }
}

/// The codec over `data` as the session reads it (for `fuzz/`).
pub(crate) fn fuzz_codec(data: &[u8]) {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let mut codec = Codec::new(1024, 4096);
    for chunk in data.chunks(usize::from(cut).max(1)) {
        codec.feed(chunk);
        while let Some(ev) = codec.next() {
            if let Event::Command(tokens) = ev {
                let len: usize = tokens.iter().map(|t| t.bytes().len()).sum();
                assert!(len <= 1024 + 4096 * tokens.len());
            }
        }
    }
}
