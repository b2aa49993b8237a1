//! Fetching a blocklist source: `http://`, `https://` (hyper over rustls, the system's roots and
//! `SSL_CERT_FILE`), `file:///…` or an absolute path. Conditional (ETag / Last-Modified), bounded
//! in size and time, and streamed straight into the [`Parser`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::parse::{Parser, Ranges};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest source accepted.
pub const MAX_BYTES: u64 = 256 << 20;
const MAX_REDIRECTS: usize = 3;

/// Validators of the last good download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What a fetch produced.
#[derive(Debug)]
pub enum Fetched {
    /// The source says nothing changed (HTTP 304, or the file's mtime and size are the same).
    NotModified,
    Parsed {
        ranges: Ranges,
        entries: u64,
        invalid: u64,
        validators: Validators,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid source URL {0:?}: use http://, https://, file:// or an absolute path")]
    Url(String),
    #[error("{0}")]
    Io(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("source is larger than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("too many redirects")]
    Redirects,
}

/// Fetches and parses `url`, keeping at most `max` entries (0 = all).
pub async fn fetch(url: &str, previous: &Validators, max: usize) -> Result<Fetched, FetchError> {
    match tokio::time::timeout(TOTAL_TIMEOUT, fetch_inner(url, previous, max)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout("fetching the whole source")),
    }
}

async fn fetch_inner(url: &str, previous: &Validators, max: usize) -> Result<Fetched, FetchError> {
    let url = url.trim();
    if let Some(path) = url
        .strip_prefix("file://")
        .or_else(|| url.starts_with('/').then_some(url))
    {
        return fetch_file(path, previous, max).await;
    }
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        match fetch_http(&current, previous, max).await? {
            Step::Done(f) => return Ok(f),
            Step::Redirect(to) => current = to,
        }
    }
    Err(FetchError::Redirects)
}

async fn fetch_file(path: &str, previous: &Validators, max: usize) -> Result<Fetched, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(format!("{path}: {e}"));
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let meta = file.metadata().await.map_err(io)?;
    if meta.len() > MAX_BYTES {
        return Err(FetchError::TooLarge);
    }
    let stamp = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| format!("{}.{}:{}", d.as_secs(), d.subsec_nanos(), meta.len()));
    if stamp.is_some() && stamp == previous.last_modified {
        return Ok(Fetched::NotModified);
    }
    let mut parser = Parser::new(max);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        parser.feed(&buf[..n]);
    }
    finish(
        parser,
        Validators {
            etag: None,
            last_modified: stamp,
        },
    )
    .await
}

async fn finish(parser: Parser, validators: Validators) -> Result<Fetched, FetchError> {
    let (ranges, entries, invalid) = tokio::task::spawn_blocking(move || parser.finish())
        .await
        .map_err(|e| FetchError::Io(format!("parser task: {e}")))?;
    Ok(Fetched::Parsed {
        ranges,
        entries,
        invalid,
        validators,
    })
}

enum Step {
    Done(Fetched),
    Redirect(String),
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, FetchError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no trusted root certificates found (install ca-certificates or set SSL_CERT_FILE)".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(FetchError::Io)
}

async fn fetch_http(url: &str, previous: &Validators, max: usize) -> Result<Step, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::Url(url.to_string()))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(FetchError::Url(url.to_string())),
    };
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(url.to_string()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((bare_host.as_str(), port)),
    )
    .await
    .map_err(|_| FetchError::Timeout("connecting"))?
    .map_err(|e| FetchError::Io(format!("connecting to {host}:{port}: {e}")))?;
    let io: Box<dyn Io> = if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
            .map_err(|_| FetchError::Url(url.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| FetchError::Timeout("in the TLS handshake"))?
            .map_err(|e| FetchError::Io(format!("TLS with {host}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| FetchError::Io(format!("HTTP with {host}: {e}")))?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let mut req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("wispd/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(etag) = &previous.etag {
        req = req.header(http::header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &previous.last_modified {
        req = req.header(http::header::IF_MODIFIED_SINCE, lm);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Io(e.to_string()))?;
    let resp = tokio::time::timeout(READ_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| FetchError::Timeout("waiting for the response"))?
        .map_err(|e| FetchError::Io(format!("HTTP with {host}: {e}")))?;
    let status = resp.status().as_u16();
    let header = |name: http::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let outcome = match status {
        304 => Ok(Step::Done(Fetched::NotModified)),
        301 | 302 | 303 | 307 | 308 => match header(http::header::LOCATION) {
            Some(loc) if loc.starts_with("http://") || loc.starts_with("https://") => {
                Ok(Step::Redirect(loc))
            }
            Some(loc) if loc.starts_with('/') => Ok(Step::Redirect(format!(
                "{}://{}{loc}",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map_or("", |a| a.as_str())
            ))),
            _ => Err(FetchError::Status(status)),
        },
        200 => {
            let validators = Validators {
                etag: header(http::header::ETAG),
                last_modified: header(http::header::LAST_MODIFIED),
            };
            if resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > MAX_BYTES)
            {
                return Err(FetchError::TooLarge);
            }
            let mut body = resp.into_body();
            let mut parser = Parser::new(max);
            let mut total = 0u64;
            let started = Instant::now();
            loop {
                let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
                    .await
                    .map_err(|_| FetchError::Timeout("reading the body"))?;
                let Some(frame) = frame else { break };
                let frame =
                    frame.map_err(|e| FetchError::Io(format!("reading from {host}: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                    if total > MAX_BYTES {
                        return Err(FetchError::TooLarge);
                    }
                    parser.feed(data);
                }
            }
            tracing::debug!(%url, bytes = total, took = ?started.elapsed(), "blocklist downloaded");
            finish(parser, validators).await.map(Step::Done)
        }
        other => Err(FetchError::Status(other)),
    };
    driver.abort();
    outcome
}
