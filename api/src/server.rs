//! The HTTP(S) listener: accepts connections, terminates TLS with rustls, serves the router over
//! HTTP/1.1 and drains in-flight requests on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` fires, then waits up to `drain` for requests in
/// flight. `tls` is the server's rustls configuration (`None` serves plain HTTP, for a local
/// reverse proxy).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let acceptor = tls.map(|cfg| {
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(cfg))
    });
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(
            connection(stream, peer, acceptor, app, watcher)
                .instrument(tracing::debug_span!("api_conn", %peer)),
        );
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("api connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("api drain deadline passed; closing remaining connections"),
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let svc = app.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let svc = TowerToHyperService::new(svc);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let result = match acceptor {
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "api TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "api TLS handshake timed out");
                        return;
                    }
                };
            watcher
                .watch(builder.serve_connection(TokioIo::new(tls), svc))
                .await
        }
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), svc))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "api connection ended with error");
    }
}
