//! SMTP: the inbound (MX) listener. `codec` turns bytes into events, `session` runs one
//! connection's state machine (one file per verb), and this module accepts connections within
//! the per-address and total limits.

mod auth;
pub(crate) mod codec;
mod data;
mod ehlo;
mod mail;
mod rcpt;
pub mod reply;
mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wispd_store::Store;

use crate::delivery::Deliverer;
use crate::directory::Directory;
use crate::limits::{ConnectionLimits, MemoryBudget, Refusal, Slot};
use crate::login::Logins;
use crate::metrics::MailMetrics;
use crate::queue::Queue;
use reply::Reply;

/// Limits and identity of the SMTP service.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Greeting and `Received:` name.
    pub hostname: String,
    /// Largest message accepted, in bytes (advertised as SIZE).
    pub max_message_size: usize,
    /// Recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Simultaneous connections from one address; more get `421 4.7.0`.
    pub max_connections_per_ip: u32,
    /// Simultaneous connections in all.
    pub max_connections: u32,
    /// A client silent this long gets `421 4.4.2` and is disconnected.
    pub idle_timeout: Duration,
    /// Rejected commands before the session is ended with `421 4.7.0`.
    pub max_errors: u32,
    /// A message must be transferred within this from DATA (or the first BDAT) on.
    pub data_timeout: Duration,
    /// Where mail to `postmaster@` a local domain without such an account goes, and mail to
    /// a bare `<postmaster>`; empty: the domain's first account (the server's, for the bare one).
    pub postmaster: String,
}

impl SmtpSettings {
    pub fn new(hostname: String, max_message_size: usize) -> SmtpSettings {
        SmtpSettings {
            hostname,
            max_message_size,
            max_recipients: 100,
            max_connections_per_ip: 20,
            max_connections: 1000,
            idle_timeout: Duration::from_secs(300),
            max_errors: 20,
            data_timeout: Duration::from_secs(600),
            postmaster: String::new(),
        }
    }
}

impl Port {
    fn listener(self) -> crate::metrics::Listener {
        match self {
            Port::Mx => crate::metrics::Listener::Mx,
            Port::Submission => crate::metrics::Listener::Submission,
            Port::Submissions => crate::metrics::Listener::Submissions,
        }
    }
}

/// Which service a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Inbound mail for local domains (25); no AUTH, never relays.
    Mx,
    /// Submission (587): STARTTLS, then AUTH, then mail from the account's own addresses.
    Submission,
    /// Submission over implicit TLS (465).
    Submissions,
}

/// What every session shares.
pub struct Server {
    settings: SmtpSettings,
    store: Store,
    directory: Directory,
    deliverer: Deliverer,
    queue: Arc<Queue>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    limits: Arc<ConnectionLimits>,
    logins: Arc<Logins>,
    memory: Arc<MemoryBudget>,
    metrics: MailMetrics,
    /// The recipients' Sieve filters, run before the delivery is committed.
    filters: Option<crate::sieve::Filters>,
    /// SPF/DKIM/DMARC/iprev of mail arriving at the MX.
    inbound: Option<Arc<crate::inbound::Inbound>>,
    /// DNSBL lookups of MX clients.
    rbl: Option<Arc<crate::rbl::Rbl>>,
    /// Spam scoring and greylisting of mail arriving at the MX.
    spam: Option<Arc<crate::spam::Spam>>,
    /// Virus scanning of every message accepted.
    clamav: Option<Arc<crate::clamav::Clamav>>,
    /// Rate limits: groups for submission, per-network caps on the MX.
    ratelimit: Option<Arc<crate::ratelimit::RateLimits>>,
    /// Mailing lists: posts, requests and bounces at their addresses.
    lists: Option<Arc<crate::lists::Lists>>,
}

impl Server {
    /// Checks the senders of mail arriving at the MX (SPF, DKIM, DMARC, iprev).
    pub fn with_inbound(mut self, inbound: Arc<crate::inbound::Inbound>) -> Server {
        self.inbound = Some(inbound);
        self
    }

    /// Looks MX clients up in the configured DNSBLs.
    pub fn with_rbl(mut self, rbl: Arc<crate::rbl::Rbl>) -> Server {
        self.rbl = Some(rbl);
        self
    }

    /// Scans every message with clamd (`/email/clamav`).
    pub fn with_clamav(mut self, clamav: Arc<crate::clamav::Clamav>) -> Server {
        self.clamav = Some(clamav);
        self
    }

    /// Applies the rate limits (`/email/ratelimit`).
    pub fn with_ratelimit(mut self, r: Arc<crate::ratelimit::RateLimits>) -> Server {
        self.ratelimit = Some(r);
        self
    }

    /// Scores and greylists mail arriving at the MX (`/email/spam`).
    pub fn with_spam(mut self, spam: Arc<crate::spam::Spam>) -> Server {
        self.spam = Some(spam);
        self
    }

    /// Takes mail for mailing-list addresses (`/email/mailinglist`).
    pub fn with_lists(mut self, lists: Arc<crate::lists::Lists>) -> Server {
        self.lists = Some(lists);
        self
    }

    /// Runs the recipients' Sieve filters at delivery.
    pub fn with_filters(mut self, filters: crate::sieve::Filters) -> Server {
        self.filters = Some(filters);
        self
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "every part a session shares, once"
    )]
    pub fn new(
        settings: SmtpSettings,
        store: Store,
        directory: Directory,
        deliverer: Deliverer,
        queue: Arc<Queue>,
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
            directory,
            deliverer,
            queue,
            tls: tls.map(TlsAcceptor::from),
            shutdown,
            limits,
            logins,
            memory,
            metrics,
            filters: None,
            inbound: None,
            rbl: None,
            spam: None,
            clamav: None,
            ratelimit: None,
            lists: None,
        }
    }

    /// Takes a connection slot for `ip`, or says why not.
    fn admit(&self, ip: IpAddr) -> Result<Slot, Reply> {
        self.limits.admit(ip).map_err(|r| match r {
            Refusal::Full => Reply::new(421, "4.3.2", "Too many connections, try again later"),
            Refusal::PerAddress => Reply::new(
                421,
                "4.7.0",
                "Too many connections from your address, try again later",
            ),
        })
    }
}

/// Accepts connections until shutdown; each runs in `tracker`.
pub async fn serve(listener: TcpListener, server: Arc<Server>, tracker: TaskTracker, port: Port) {
    let shutdown = server.shutdown.clone();
    crate::limits::accept_loop(listener, shutdown, tracker, "smtp", move |stream, peer| {
        session::connection(server.clone(), stream, peer, port)
    })
    .await;
}
