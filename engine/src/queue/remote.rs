//! Delivery to another server with mail-send's SMTP client: the relay, or the domain's MX hosts
//! in preference order (its A/AAAA records when it has no MX), each address in turn until one
//! takes the transaction. STARTTLS is used whenever offered (opportunistic, certificates not
//! verified, as Postfix's `may` level); a failed handshake is retried once in clear text.
//! A connection that ends a transaction cleanly is kept for the next message to the same
//! destination for [`CACHE_TIME`] (as Postfix's connection cache), checked with RSET before
//! reuse.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RData;
use mail_send::SmtpClient;
use smtp_proto::{EXT_8BIT_MIME, EXT_SIZE, EXT_START_TLS, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Queue, Verdict};

/// How long an idle connection is kept for reuse.
pub(super) const CACHE_TIME: Duration = Duration::from_secs(2);
/// A connection is retired after this long or this many messages even if mail keeps coming
/// (Postfix's `smtp_connection_reuse_time_limit`/`_count_limit`): a fresh one may get TLS
/// back, or a preferred MX that was down.
const REUSE_TIME: Duration = Duration::from_secs(300);
const REUSE_COUNT: u32 = 100;
/// How long a goodbye may take.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// An open session, clear or TLS.
enum Conn {
    Plain(SmtpClient<TcpStream>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

/// A connection waiting in the cache.
pub(super) struct Cached {
    conn: Conn,
    ehlo: EhloResponse<String>,
    remote: String,
    since: Instant,
    opened: Instant,
    uses: u32,
}

impl Conn {
    async fn transaction(
        &mut self,
        ehlo: &EhloResponse<String>,
        remote: &str,
        sender: &str,
        rcpts: &[String],
        body: &[&[u8]],
    ) -> Result<(Vec<Verdict>, bool), Skip> {
        match self {
            Conn::Plain(c) => transaction(c, ehlo, remote, sender, rcpts, body).await,
            Conn::Tls(c) => transaction(c, ehlo, remote, sender, rcpts, body).await,
        }
    }

    async fn cmd(&mut self, line: &str) -> Option<Response<String>> {
        match self {
            Conn::Plain(c) => c.cmd(line).await.ok(),
            Conn::Tls(c) => c.cmd(line).await.ok(),
        }
    }
}

impl Cached {
    pub(super) fn fresh(&self) -> bool {
        self.since.elapsed() < CACHE_TIME
    }
}

/// After a transaction: keep the connection for the next message to `key`, or say goodbye.
/// A connection's history: when it was opened and how many messages it carried.
#[derive(Clone, Copy)]
struct Age {
    opened: Instant,
    uses: u32,
}

impl Age {
    fn new() -> Age {
        Age {
            opened: Instant::now(),
            uses: 1,
        }
    }
}

async fn release(
    q: &Queue,
    key: &str,
    conn: Conn,
    ehlo: EhloResponse<String>,
    remote: String,
    reusable: bool,
    age: Age,
) {
    let mut conn = conn;
    if reusable && age.uses < REUSE_COUNT && age.opened.elapsed() < REUSE_TIME {
        let cached = Cached {
            conn,
            ehlo,
            remote,
            since: Instant::now(),
            opened: age.opened,
            uses: age.uses,
        };
        match q.cache_connection(key, cached) {
            None => return,
            Some(c) => conn = c.conn,
        }
    }
    let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.cmd("QUIT\r\n")).await;
}

/// Why an address did not take the transaction: try the next one.
enum Skip {
    Next(String),
    /// The TLS handshake failed after STARTTLS: the same address again without it.
    Tls(String),
}

fn deferred(remote: Option<&str>, reply: String) -> Verdict {
    Verdict::Deferred {
        remote: remote.map(str::to_string),
        reply,
    }
}

/// `code esc text` on one line.
fn text(r: &Response<String>) -> String {
    let esc = if r.esc[0] > 0 {
        format!("{}.{}.{} ", r.esc[0], r.esc[1], r.esc[2])
    } else {
        String::new()
    };
    format!(
        "{} {esc}{}",
        r.code,
        r.message.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

fn from_reply(remote: &str, r: &Response<String>) -> Verdict {
    let remote = Some(remote.to_string());
    match r.code {
        200..=299 => Verdict::Delivered {
            remote,
            reply: text(r),
        },
        500..=599 => Verdict::Failed {
            remote,
            reply: text(r),
            status: if r.esc[0] == 5 {
                format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
            } else {
                "5.0.0".into()
            },
        },
        _ => Verdict::Deferred {
            remote,
            reply: text(r),
        },
    }
}

/// Delivers `body` from `sender` to `rcpts` (all in `domain`); one verdict per recipient.
pub(super) async fn deliver(
    q: &Queue,
    domain: &str,
    sender: &str,
    rcpts: &[String],
    body: &[&[u8]],
) -> Vec<Verdict> {
    let key = q.destination_key(domain);
    // A connection kept from an earlier message to this destination, if it still answers.
    while let Some(mut cached) = q.cached_connection(&key) {
        if cached
            .conn
            .cmd("RSET\r\n")
            .await
            .is_none_or(|r| r.code != 250)
        {
            continue;
        }
        let Cached {
            mut conn,
            ehlo,
            remote,
            opened,
            uses,
            ..
        } = cached;
        if let Ok((v, reusable)) = conn.transaction(&ehlo, &remote, sender, rcpts, body).await {
            let age = Age {
                opened,
                uses: uses.saturating_add(1),
            };
            release(q, &key, conn, ehlo, remote, reusable, age).await;
            return v;
        }
    }
    let hosts = match &q.settings.relay {
        Some((h, p)) => vec![(h.clone(), *p)],
        None => match mx_hosts(q, domain).await {
            Ok(h) => h,
            Err(v) => return vec![v; rcpts.len()],
        },
    };
    let mut last = deferred(
        None,
        format!("451 4.4.1 no server for {domain} could be reached"),
    );
    for (host, port) in hosts {
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match lookup_ips(q, &host).await {
                Ok(ips) => ips,
                Err(e) => {
                    last = deferred(None, format!("451 4.4.3 {host}: {e}"));
                    continue;
                }
            },
        };
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            let remote = format!("{host}[{ip}]:{port}");
            match session(q, &key, &host, addr, &remote, sender, rcpts, body, true).await {
                Ok(v) => return v,
                Err(Skip::Next(why)) => last = deferred(Some(&remote), why),
                Err(Skip::Tls(why)) => {
                    tracing::warn!(%remote, %why, "TLS failed; retrying in clear text");
                    match session(q, &key, &host, addr, &remote, sender, rcpts, body, false).await {
                        Ok(v) => return v,
                        Err(Skip::Next(why) | Skip::Tls(why)) => {
                            last = deferred(Some(&remote), why)
                        }
                    }
                }
            }
        }
    }
    vec![last; rcpts.len()]
}

/// The domain's mail servers in preference order; its own name when it has no MX records.
async fn mx_hosts(q: &Queue, domain: &str) -> Result<Vec<(String, u16)>, Verdict> {
    let Some(resolver) = &q.resolver else {
        return Err(deferred(
            None,
            "451 4.4.3 no DNS resolver configured".into(),
        ));
    };
    let port = q.settings.mx_port;
    if let Ok(ip) = domain.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![(ip.to_string(), port)]);
    }
    match resolver.mx_lookup(format!("{domain}.")).await {
        Ok(lookup) => {
            let mut mx: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_ascii().trim_end_matches('.').to_string(),
                    )),
                    _ => None,
                })
                .collect();
            if mx.is_empty() {
                return Ok(vec![(domain.to_string(), port)]);
            }
            // RFC 7505 null MX: the domain accepts no mail.
            if mx.iter().any(|(_, h)| h.is_empty()) {
                return Err(Verdict::Failed {
                    remote: None,
                    reply: format!("556 5.1.10 {domain} does not accept mail (null MX)"),
                    status: "5.1.10".into(),
                });
            }
            mx.sort_by_key(|(p, _)| *p);
            Ok(mx.into_iter().map(|(_, h)| (h, port)).collect())
        }
        Err(e) if e.is_nx_domain() => Err(Verdict::Failed {
            remote: None,
            reply: format!("550 5.1.2 {domain}: domain not found"),
            status: "5.1.2".into(),
        }),
        Err(e) if e.is_no_records_found() => Ok(vec![(domain.to_string(), port)]),
        Err(e) => Err(deferred(
            None,
            format!("451 4.4.3 MX lookup for {domain} failed: {e}"),
        )),
    }
}

async fn lookup_ips(q: &Queue, host: &str) -> Result<Vec<IpAddr>, String> {
    let resolver = q.resolver.as_ref().ok_or("no DNS resolver configured")?;
    let ips: Vec<IpAddr> = resolver
        .lookup_ip(format!("{host}."))
        .await
        .map_err(|e| format!("address lookup failed: {e}"))?
        .iter()
        .collect();
    if ips.is_empty() {
        return Err("no address".into());
    }
    Ok(ips)
}

/// One connection: greeting, EHLO, STARTTLS when offered (and `tls`), the transaction.
#[expect(clippy::too_many_arguments, reason = "one connection's whole context")]
async fn session(
    q: &Queue,
    key: &str,
    host: &str,
    addr: SocketAddr,
    remote: &str,
    sender: &str,
    rcpts: &[String],
    body: &[&[u8]],
    tls: bool,
) -> Result<Vec<Verdict>, Skip> {
    let s = &q.settings;
    let mut c = SmtpClient::connect(addr, s.connect_timeout)
        .await
        .map_err(|e| Skip::Next(format!("451 4.4.1 connect to {remote}: {e}")))?;
    c.timeout = s.command_timeout;
    let greeting = tokio::time::timeout(s.command_timeout, c.read())
        .await
        .map_err(|_| Skip::Next(format!("451 4.4.2 {remote}: no greeting")))?
        .map_err(|e| Skip::Next(format!("451 4.4.2 {remote}: {e}")))?;
    if greeting.code != 220 {
        return Err(Skip::Next(format!(
            "451 4.4.2 {remote} greeted with {}",
            text(&greeting)
        )));
    }
    let ehlo = c
        .ehlo(&s.hostname)
        .await
        .map_err(|e| Skip::Next(format!("451 4.4.2 {remote} refused EHLO: {e}")))?;
    if tls && ehlo.has_capability(EXT_START_TLS) {
        let mut c = c
            .start_tls(&q.tls, host)
            .await
            .map_err(|e| Skip::Tls(format!("451 4.7.5 {remote}: STARTTLS failed: {e}")))?;
        let ehlo = c
            .ehlo(&s.hostname)
            .await
            .map_err(|e| Skip::Next(format!("451 4.4.2 {remote} refused EHLO after TLS: {e}")))?;
        let mut conn = Conn::Tls(Box::new(c));
        let (v, reusable) = conn.transaction(&ehlo, remote, sender, rcpts, body).await?;
        release(q, key, conn, ehlo, remote.to_string(), reusable, Age::new()).await;
        return Ok(v);
    }
    let mut conn = Conn::Plain(c);
    let (v, reusable) = conn.transaction(&ehlo, remote, sender, rcpts, body).await?;
    // A clear-text fallback after a failed handshake is not kept: the next message tries TLS.
    release(
        q,
        key,
        conn,
        ehlo,
        remote.to_string(),
        reusable && tls,
        Age::new(),
    )
    .await;
    Ok(v)
}

/// MAIL, RCPT for each recipient, DATA: a verdict per recipient, and whether the connection
/// can carry another message. A temporary refusal of MAIL or a connection lost before any
/// recipient has a verdict sends the caller to the next address (a backup MX may take it).
async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    ehlo: &EhloResponse<String>,
    remote: &str,
    sender: &str,
    rcpts: &[String],
    body: &[&[u8]],
) -> Result<(Vec<Verdict>, bool), Skip> {
    let lost = |e: mail_send::Error| deferred(Some(remote), format!("451 4.4.2 {remote}: {e}"));
    let mut params = String::new();
    if ehlo.has_capability(EXT_SIZE) {
        params.push_str(&format!(
            " SIZE={}",
            body.iter().map(|p| p.len()).sum::<usize>()
        ));
    }
    if ehlo.has_capability(EXT_8BIT_MIME) && !body.iter().all(|p| p.is_ascii()) {
        params.push_str(" BODY=8BITMIME");
    }
    match c.cmd(format!("MAIL FROM:<{sender}>{params}\r\n")).await {
        Ok(r) if (200..300).contains(&r.code) => {}
        Ok(r) if r.code >= 500 => {
            return Ok((vec![from_reply(remote, &r); rcpts.len()], false));
        }
        Ok(r) => {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, c.cmd("QUIT\r\n")).await;
            return Err(Skip::Next(text(&r)));
        }
        Err(e) => return Err(Skip::Next(format!("451 4.4.2 {remote}: {e}"))),
    }
    let mut verdicts: Vec<Option<Verdict>> = vec![None; rcpts.len()];
    for (i, rcpt) in rcpts.iter().enumerate() {
        match c.cmd(format!("RCPT TO:<{rcpt}>\r\n")).await {
            Ok(r) if (200..300).contains(&r.code) => {}
            Ok(r) => verdicts[i] = Some(from_reply(remote, &r)),
            Err(e) if verdicts.iter().all(Option::is_none) => {
                return Err(Skip::Next(format!("451 4.4.2 {remote}: {e}")));
            }
            Err(e) => {
                let v = lost(e);
                return Ok((
                    verdicts
                        .into_iter()
                        .map(|x| x.unwrap_or_else(|| v.clone()))
                        .collect(),
                    false,
                ));
            }
        }
    }
    let accepted = verdicts.iter().filter(|v| v.is_none()).count();
    // Reusable only after a clean end: the DATA reply read, or nothing sent (RSET on reuse).
    let mut reusable = true;
    let outcome = if accepted == 0 {
        None
    } else {
        Some(match c.cmd("DATA\r\n").await {
            Ok(r) if r.code == 354 => match send_body(c, body).await {
                Ok(r) => from_reply(remote, &r),
                Err(e) => {
                    reusable = false;
                    lost(e)
                }
            },
            // Anything but 354 sent no message: it can't count as delivered.
            Ok(r) if r.code < 400 => {
                reusable = false;
                deferred(Some(remote), text(&r))
            }
            Ok(r) => from_reply(remote, &r),
            Err(e) => {
                reusable = false;
                lost(e)
            }
        })
    };
    let verdicts = verdicts
        .into_iter()
        .map(|v| {
            v.or_else(|| outcome.clone())
                .unwrap_or_else(|| deferred(Some(remote), "451 4.4.2 not sent".into()))
        })
        .collect();
    Ok((verdicts, reusable))
}

/// How long the server may take to answer the final `.` (RFC 5321 §4.5.3.2.6).
const FINAL_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The message with dot-stuffing and the final `.`, then the server's reply. Each 64 KiB
/// written has the command timeout, so a large message on a slow link is not cut off.
async fn send_body<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    body: &[&[u8]],
) -> Result<Response<String>, mail_send::Error> {
    let timeout = c.timeout;
    // dot-stuffed 64 KiB at a time: a large message is not copied whole per delivery
    const CHUNK: usize = 64 * 1024;
    let mut out = Vec::with_capacity(CHUNK + 16);
    let mut line_start = true;
    let mut last = [0u8; 2];
    for part in body {
        for &b in *part {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
            last = [last[1], b];
            if out.len() >= CHUNK {
                tokio::time::timeout(timeout, c.stream.write_all(&out))
                    .await
                    .map_err(|_| mail_send::Error::Timeout)??;
                out.clear();
            }
        }
    }
    if last != *b"\r\n" {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    tokio::time::timeout(timeout, c.stream.write_all(&out))
        .await
        .map_err(|_| mail_send::Error::Timeout)??;
    tokio::time::timeout(timeout, c.stream.flush())
        .await
        .map_err(|_| mail_send::Error::Timeout)??;
    tokio::time::timeout(FINAL_REPLY_TIMEOUT, c.read())
        .await
        .map_err(|_| mail_send::Error::Timeout)?
}
