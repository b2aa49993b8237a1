//! Fetching a blocklist source: `http://` and `https://` (reqwest over rustls with *ring*, the
//! system's roots or `SSL_CERT_FILE`, `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY`), `file:///…` or an
//! absolute path. Conditional (ETag / Last-Modified), bounded in size and time, and streamed
//! straight into the [`Parser`].

use std::error::Error as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncReadExt;

use super::parse::{Parser, Ranges};

/// Largest source accepted.
pub const MAX_BYTES: u64 = 256 << 20;
const MAX_REDIRECTS: usize = 3;

/// How long and how much a fetch may take; only tests use other values than [`LIMITS`].
struct Limits {
    connect: Duration,
    read: Duration,
    total: Duration,
    max_bytes: u64,
}

const LIMITS: Limits = Limits {
    connect: Duration::from_secs(10),
    read: Duration::from_secs(30),
    total: Duration::from_secs(300),
    max_bytes: MAX_BYTES,
};

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

/// Why a fetch failed. The message is what a user reads as the list's `last_error`, so the
/// variants with a cause name it in the message too (and keep it as `source()`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid source URL {0:?}: use http://, https://, file:// or an absolute path")]
    Url(String),
    /// Reading a local source.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The exchange with the server (or the proxy) failed before or while reading the body.
    #[error("{}", Described(.0))]
    Http(#[source] reqwest::Error),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("source is larger than {0} bytes")]
    TooLarge(u64),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("too many redirects (more than {MAX_REDIRECTS})")]
    Redirects(#[source] reqwest::Error),
    #[error("no trusted root certificates found (install ca-certificates or set SSL_CERT_FILE)")]
    NoRoots(#[source] Option<rustls_native_certs::Error>),
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    #[error("the parser task failed: {0}")]
    Parser(#[from] tokio::task::JoinError),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> FetchError {
        // Our redirect policy's only error is "too many".
        if e.is_redirect() {
            FetchError::Redirects(e)
        } else {
            FetchError::Http(e)
        }
    }
}

/// Renders a reqwest error as the step that failed, the peer, and the causes below reqwest's own
/// generic "error sending request" (where the actual reason, e.g. "Connection refused", is).
struct Described<'a>(&'a reqwest::Error);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let body = e.is_body() || e.is_decode();
        let step = match (e.is_timeout(), e.is_connect()) {
            (true, true) => "timed out connecting to",
            (true, false) if body => "timed out reading from",
            (true, false) => "timed out waiting for",
            (false, true) => "connecting to",
            _ if body => "reading from",
            _ if e.is_builder() => "making a request to",
            _ => "HTTP with",
        };
        f.write_str(step)?;
        if let Some(url) = e.url() {
            write!(f, " {}", url.host_str().unwrap_or("?"))?;
            if let Some(port) = url.port_or_known_default() {
                write!(f, ":{port}")?;
            }
        }
        let mut last = String::new();
        let mut cause = e.source();
        while let Some(c) = cause {
            let text = c.to_string();
            // a body error wraps another reqwest error: its text is as generic as the outer one's
            if text != last && !c.is::<reqwest::Error>() {
                write!(f, ": {text}")?;
                last = text;
            }
            cause = c.source();
        }
        Ok(())
    }
}

/// Fetches and parses `url`, keeping at most `max` entries (0 = all).
pub async fn fetch(url: &str, previous: &Validators, max: usize) -> Result<Fetched, FetchError> {
    fetch_with(url, previous, max, &LIMITS).await
}

async fn fetch_with(
    url: &str,
    previous: &Validators,
    max: usize,
    limits: &Limits,
) -> Result<Fetched, FetchError> {
    let fetching = async {
        match source(url)? {
            Source::File(path) => fetch_file(&path, previous, max, limits).await,
            Source::Http(url) => fetch_http(url, previous, max, limits).await,
        }
    };
    match tokio::time::timeout(limits.total, fetching).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout("fetching the whole source")),
    }
}

enum Source {
    File(PathBuf),
    Http(Url),
}

/// Schemes are case-insensitive (`HTTP://` is `http://`); `file:` URLs are percent-decoded.
fn source(url: &str) -> Result<Source, FetchError> {
    let url = url.trim();
    if url.starts_with('/') {
        return Ok(Source::File(PathBuf::from(url)));
    }
    let invalid = || FetchError::Url(url.to_string());
    let parsed = Url::parse(url).map_err(|_| invalid())?;
    match parsed.scheme() {
        "http" | "https" => Ok(Source::Http(parsed)),
        "file" => parsed
            .to_file_path()
            .map(Source::File)
            .map_err(|()| invalid()),
        _ => Err(invalid()),
    }
}

async fn fetch_file(
    path: &Path,
    previous: &Validators,
    max: usize,
    limits: &Limits,
) -> Result<Fetched, FetchError> {
    let io = |source| FetchError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let meta = file.metadata().await.map_err(io)?;
    if meta.len() > limits.max_bytes {
        return Err(FetchError::TooLarge(limits.max_bytes));
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
    let (ranges, entries, invalid) = tokio::task::spawn_blocking(move || parser.finish()).await?;
    Ok(Fetched::Parsed {
        ranges,
        entries,
        invalid,
        validators,
    })
}

/// The system's trusted roots as `rustls-native-certs` finds them (`SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set), read per fetch so an updated CA bundle needs no restart.
fn trusted_roots() -> Result<rustls::RootCertStore, FetchError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(FetchError::NoRoots(found.errors.into_iter().next()));
    }
    Ok(roots)
}

fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client per fetch: reqwest reads the proxy variables when a client is built, and a fetch is
/// rare enough (one per list and interval) that a pool would not be reused anyway.
fn client(tls: rustls::ClientConfig, limits: &Limits) -> Result<reqwest::Client, FetchError> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("wispd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(limits.connect)
        .read_timeout(limits.read)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()?)
}

async fn fetch_http(
    url: Url,
    previous: &Validators,
    max: usize,
    limits: &Limits,
) -> Result<Fetched, FetchError> {
    // Without roots a plain http:// source still works (until it redirects to https://).
    let roots = match trusted_roots() {
        Err(e) if url.scheme() == "https" => return Err(e),
        Err(_) => rustls::RootCertStore::empty(),
        Ok(roots) => roots,
    };
    let client = client(tls_config(roots)?, limits)?;
    let mut request = client.get(url.clone());
    if let Some(etag) = &previous.etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &previous.last_modified {
        request = request.header(IF_MODIFIED_SINCE, lm);
    }
    let mut response = request.send().await?;
    match response.status() {
        StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
        StatusCode::OK => {}
        // Also a 3xx without a usable Location: reqwest hands those back as they are.
        other => return Err(FetchError::Status(other.as_u16())),
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let validators = Validators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
    };
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes)
    {
        return Err(FetchError::TooLarge(limits.max_bytes));
    }
    let mut parser = Parser::new(max);
    let mut total = 0u64;
    let started = Instant::now();
    // Body errors come without the URL; the message should still name the peer.
    let from = response.url().clone();
    // Counted as it streams: a chunked or close-delimited body declares no length.
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.with_url(from.clone()))?
    {
        total += chunk.len() as u64;
        if total > limits.max_bytes {
            return Err(FetchError::TooLarge(limits.max_bytes));
        }
        parser.feed(&chunk);
    }
    tracing::debug!(%url, %from, bytes = total, took = ?started.elapsed(), "blocklist downloaded");
    finish(parser, validators).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const LIST: &str = "192.0.2.0/24 ; SBL1\n198.51.100.7\n";

    /// An HTTP/1.1 server on 127.0.0.1:0 answering each request with the raw bytes of
    /// `answer(port, request head)` (so a test controls every header, or their absence) and closing
    /// the connection; it records the request heads it saw.
    struct Server {
        port: u16,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        async fn start(answer: impl Fn(u16, &str) -> Vec<u8> + Send + Sync + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let answer = Arc::new(answer);
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let (log, answer) = (log.clone(), answer.clone());
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.ends_with(b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        log.lock().expect("log").push(head.clone());
                        let _ = conn.write_all(&answer(port, &head)).await;
                        let _ = conn.shutdown().await;
                    });
                }
            });
            Server { port, seen }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        /// The request lines seen so far (`GET /x HTTP/1.1`).
        fn requests(&self) -> Vec<String> {
            let seen = self.seen.lock().expect("log");
            seen.iter()
                .map(|h| h.lines().next().unwrap_or_default().to_string())
                .collect()
        }

        fn heads(&self) -> Vec<String> {
            self.seen.lock().expect("log").clone()
        }
    }

    fn path(head: &str) -> &str {
        head.split(' ').nth(1).unwrap_or_default()
    }

    fn ok(body: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn redirect(status: u16, location: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    }

    fn entries(f: &Fetched) -> u64 {
        match f {
            Fetched::Parsed { entries, .. } => *entries,
            Fetched::NotModified => panic!("expected a download, got NotModified"),
        }
    }

    async fn get(url: &str) -> Result<Fetched, FetchError> {
        fetch(url, &Validators::default(), 0).await
    }

    #[tokio::test]
    async fn scheme_relative_location_keeps_the_scheme_and_goes_to_its_host() {
        let target = Server::start(|_, _| ok(LIST, "")).await;
        let location = format!("//127.0.0.1:{}/list", target.port);
        let origin = Server::start(move |_, _| redirect(302, &location)).await;
        let f = get(&origin.url("/start")).await.expect("fetched");
        assert_eq!(entries(&f), 2);
        assert_eq!(target.requests(), ["GET /list HTTP/1.1"]);
    }

    #[tokio::test]
    async fn relative_location_resolves_against_the_request_path() {
        let s = Server::start(|_, head| match path(head) {
            "/lists/list.txt" => redirect(301, "list2.txt"),
            "/lists/list2.txt" => ok(LIST, ""),
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        })
        .await;
        let f = get(&s.url("/lists/list.txt")).await.expect("fetched");
        assert_eq!(entries(&f), 2);
        assert_eq!(
            s.requests(),
            [
                "GET /lists/list.txt HTTP/1.1",
                "GET /lists/list2.txt HTTP/1.1"
            ]
        );
    }

    #[tokio::test]
    async fn upper_case_scheme_in_source_and_location_is_http() {
        let s = Server::start(|port, head| match path(head) {
            "/x" => redirect(307, &format!("HTTP://127.0.0.1:{port}/y")),
            _ => ok(LIST, ""),
        })
        .await;
        let f = get(&format!("HTTP://127.0.0.1:{}/x", s.port))
            .await
            .expect("fetched");
        assert_eq!(entries(&f), 2);
        assert_eq!(s.requests(), ["GET /x HTTP/1.1", "GET /y HTTP/1.1"]);
    }

    #[tokio::test]
    async fn redirect_loop_stops_after_three_redirects() {
        let s = Server::start(|_, _| redirect(302, "/loop")).await;
        let e = get(&s.url("/loop"))
            .await
            .expect_err("a loop never ends in a list");
        assert!(matches!(e, FetchError::Redirects(_)), "{e:?}");
        assert_eq!(e.to_string(), "too many redirects (more than 3)");
        assert!(e.source().is_some(), "reqwest's error is kept as the cause");
        assert_eq!(s.requests().len(), 1 + MAX_REDIRECTS, "{:?}", s.requests());
    }

    #[tokio::test]
    async fn three_redirects_are_followed() {
        let s = Server::start(|_, head| match path(head) {
            "/3" => ok(LIST, ""),
            p => {
                let n: u8 = p[1..].parse().unwrap_or(0);
                redirect(302, &format!("/{}", n + 1))
            }
        })
        .await;
        let f = get(&s.url("/0")).await.expect("fetched");
        assert_eq!(entries(&f), 2);
        assert_eq!(s.requests().len(), 4);
    }

    const SMALL: Limits = Limits {
        max_bytes: 64 << 10,
        ..LIMITS
    };

    #[tokio::test]
    async fn size_cap_applies_to_a_body_without_content_length() {
        let s = Server::start(|_, _| {
            let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            // one valid line after another, twice the cap, ended only by the close
            r.extend(b"192.0.2.1\n".repeat(2 * (SMALL.max_bytes as usize) / 10));
            r
        })
        .await;
        let e = fetch_with(&s.url("/big"), &Validators::default(), 0, &SMALL)
            .await
            .expect_err("over the cap");
        assert!(
            matches!(e, FetchError::TooLarge(n) if n == SMALL.max_bytes),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "source is larger than 65536 bytes");
    }

    #[tokio::test]
    async fn size_cap_refuses_a_declared_length_before_reading() {
        let s = Server::start(|_, _| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n".to_vec()
        })
        .await;
        let e = fetch_with(&s.url("/big"), &Validators::default(), 0, &SMALL)
            .await
            .expect_err("over the cap");
        assert!(matches!(e, FetchError::TooLarge(_)), "{e:?}");
    }

    /// A server that sends a 200 head and then the body one byte per `every`, never finishing.
    async fn trickling(every: Duration) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n# ").await;
                    for _ in 0..200 {
                        tokio::time::sleep(every).await;
                        if conn.write_all(b"#").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn read_timeout_ends_a_stalled_body() {
        let port = trickling(Duration::from_secs(5)).await;
        let limits = Limits {
            read: Duration::from_millis(300),
            ..LIMITS
        };
        let url = format!("http://127.0.0.1:{port}/x");
        let e = fetch_with(&url, &Validators::default(), 0, &limits)
            .await
            .expect_err("stalled");
        assert!(matches!(e, FetchError::Http(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("timed out reading from 127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn total_timeout_ends_a_body_that_trickles_in() {
        let port = trickling(Duration::from_millis(50)).await;
        let limits = Limits {
            total: Duration::from_millis(500),
            ..LIMITS
        };
        let url = format!("http://127.0.0.1:{port}/x");
        let e = fetch_with(&url, &Validators::default(), 0, &limits)
            .await
            .expect_err("too slow");
        assert_eq!(e.to_string(), "timed out fetching the whole source");
    }

    #[tokio::test]
    async fn conditional_get_sends_the_validators_and_304_is_not_modified() {
        let s = Server::start(|_, head| {
            let h = head.to_ascii_lowercase();
            if h.contains("if-none-match: \"v1\"\r\n")
                && h.contains("if-modified-since: wed, 21 oct 2015 07:28:00 gmt\r\n")
            {
                b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_vec()
            } else {
                ok(
                    LIST,
                    "ETag: \"v1\"\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
                )
            }
        })
        .await;
        let first = get(&s.url("/drop.txt")).await.expect("fetched");
        let Fetched::Parsed { validators, .. } = first else {
            panic!("first fetch is a download: {first:?}");
        };
        assert_eq!(
            validators,
            Validators {
                etag: Some("\"v1\"".into()),
                last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            }
        );
        let second = fetch(&s.url("/drop.txt"), &validators, 0)
            .await
            .expect("fetched");
        assert!(matches!(second, Fetched::NotModified), "{second:?}");
        assert!(
            !s.heads()[0].to_ascii_lowercase().contains("if-none-match"),
            "no validators on a first fetch"
        );
    }

    #[tokio::test]
    async fn error_status_is_reported_as_http_code() {
        let s = Server::start(|_, _| {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        })
        .await;
        let e = get(&s.url("/missing.txt")).await.expect_err("404");
        assert_eq!(e.to_string(), "HTTP 404");
    }

    #[tokio::test]
    async fn connect_failure_names_the_peer_and_keeps_the_cause() {
        // a port that was just free: nothing listens there
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let e = get(&format!("http://127.0.0.1:{port}/x"))
            .await
            .expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("connecting to 127.0.0.1:{port}: ")),
            "{msg}"
        );
        assert!(msg.contains("Connection refused"), "{msg}");
        let cause = e.source().expect("cause kept");
        assert!(
            cause
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_connect)
        );
    }

    #[tokio::test]
    async fn missing_file_names_the_path_and_keeps_the_io_error() {
        let e = get("file:///nonexistent/wispd/list.txt")
            .await
            .expect_err("no such file");
        assert!(
            e.to_string().starts_with("/nonexistent/wispd/list.txt: "),
            "{e}"
        );
        let io = e.source().and_then(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
    }

    #[tokio::test]
    async fn file_url_and_absolute_path_are_read_and_unchanged_files_not_modified() {
        let dir = std::env::temp_dir().join(format!("wispd-fetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("my list.txt");
        std::fs::write(&file, LIST).expect("write");
        let plain = file.to_str().expect("utf-8 path");
        let url = Url::from_file_path(&file).expect("file URL");
        let by_url = get(url.as_str()).await.expect("file URL read");
        let Fetched::Parsed {
            validators,
            entries,
            ..
        } = by_url
        else {
            panic!("{by_url:?}");
        };
        assert_eq!(entries, 2);
        let again = fetch(plain, &validators, 0).await.expect("path read");
        assert!(matches!(again, Fetched::NotModified), "{again:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn other_schemes_are_invalid_urls() {
        for url in ["ftp://example.com/x", "example.com/x", "http://"] {
            let e = get(url).await.expect_err(url);
            assert!(matches!(e, FetchError::Url(_)), "{url}: {e:?}");
        }
    }
}
