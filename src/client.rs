//! The admin commands (`wispd status`, `queue`, `ban`, `messages`) as clients of the running
//! server's API: the address `serve` wrote to `DATA_DIR/api.url`, the token in
//! `DATA_DIR/admin.token`, and TLS pinned to the server's own certificate (self-signed or
//! configured), so the commands work on `127.0.0.1` whatever name the certificate carries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

/// The file `serve` writes once it listens: the API's base URL (`https://127.0.0.1:2083`).
pub const API_URL_FILE: &str = "api.url";

/// A client of one running server.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Accepts exactly the certificate the server was configured with (or generated), checking the
/// handshake's signatures as usual: a local admin tool needs no CA for its own server.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one in its TLS files".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Api {
    /// The running server of `data_dir`; `cert` is the API's certificate file.
    pub fn connect(data_dir: &Path, cert: &Path) -> Result<Api> {
        let url_file = data_dir.join(API_URL_FILE);
        let base = std::fs::read_to_string(&url_file)
            .with_context(|| {
                format!(
                    "no running wispd found: {} is missing (start `wispd serve` with this data dir)",
                    url_file.display()
                )
            })?
            .trim()
            .to_string();
        let token_file = data_dir.join("admin.token");
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read {}", token_file.display()))?
            .trim()
            .to_string();
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .no_proxy();
        if base.starts_with("https://") {
            let cert = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cannot read {}", cert.display()))?
                .next()
                .ok_or_else(|| anyhow!("no certificate in {}", cert.display()))?
                .with_context(|| format!("cannot parse {}", cert.display()))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
                .with_no_client_auth();
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Api { base, token, http })
    }

    /// A server in this process (`wispd import` on a stopped server's data dir): plain HTTP on
    /// loopback, with the data dir's admin token.
    pub fn local(base: String, data_dir: &Path) -> Result<Api> {
        let token_file = data_dir.join("admin.token");
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read {}", token_file.display()))?
            .trim()
            .to_string();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base, token, http })
    }

    /// `POST`s a JSON body already serialised (a mailbox import batch).
    pub async fn post_json_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        self.send(
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// `GET`s `path` (under `/api/v1`) and returns the JSON body, or says what the API said.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base.trim_end_matches('/'))
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Value> {
        // over the token's rate limit: wait as long as the server says (a long import into a
        // running server meets `[api] rate_limit_per_minute`), a few times
        let mut tries = 0;
        let resp = loop {
            let again = req.try_clone();
            let resp = req
                .bearer_auth(&self.token)
                .send()
                .await
                .with_context(|| format!("cannot reach wispd at {}", self.base))?;
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match (resp.status().as_u16(), again, wait) {
                (429, Some(next), Some(secs)) if tries < 30 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(secs.clamp(1, 60))).await;
                    req = next;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("wispd answered {status} without JSON"))?;
        if !status.is_success() {
            let msg = body["message"].as_str().unwrap_or("(no message)");
            bail!("wispd answered {}: {msg}", status.as_u16());
        }
        Ok(body)
    }
}

/// Where the certificate the API serves lives: the configured file, or the generated one.
pub fn cert_file(data_dir: &Path, configured: Option<&PathBuf>) -> PathBuf {
    configured
        .cloned()
        .unwrap_or_else(|| data_dir.join("tls").join("cert.pem"))
}
