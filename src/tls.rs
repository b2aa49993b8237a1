//! TLS material for every listener: the configured PEM files, or a self-signed certificate
//! generated once under `DATA_DIR/tls/`.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The configured certificate, or the self-signed one (generated on first use).
pub fn default_key(
    files: Option<(&Path, &Path)>,
    data_dir: &Path,
    hostname: &str,
    extra_names: &[String],
) -> Result<Arc<CertifiedKey>> {
    let (cert_path, key_path) = match files {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !(c.exists() && k.exists()) {
                generate(&dir, &c, &k, hostname, extra_names)?;
                tracing::info!(cert = %c.display(), "generated a self-signed TLS certificate");
            }
            (c, k)
        }
    };
    load(&cert_path, &key_path)
}

/// A certificate chain and its private key from PEM files, checked to belong together.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {} is not valid PEM", cert_path.display()))?;
    if certs.is_empty() {
        bail!(
            "TLS certificate {} contains no CERTIFICATE block",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot load TLS private key {}", key_path.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "TLS certificate {} and key {} do not form a usable pair",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Certificates by the name a client asks for (SNI): exact names, then `*.parent` for a name
/// one label below. Names are lower case.
#[derive(Debug, Default)]
pub struct Sni {
    names: HashMap<String, Arc<CertifiedKey>>,
}

impl Sni {
    /// Loads every (names, cert, key); the first problem is the error.
    pub fn load(entries: &[(Vec<String>, std::path::PathBuf, std::path::PathBuf)]) -> Result<Sni> {
        let mut names = HashMap::new();
        for (served, cert, key) in entries {
            let k = load(cert, key)?;
            for n in served {
                names.insert(n.to_ascii_lowercase(), k.clone());
            }
        }
        Ok(Sni { names })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.names.get(&format!("*.{parent}"))
        })
    }
}

/// The certificate for a handshake: the SNI match, else the listener's own.
#[derive(Debug)]
struct Resolver {
    sni: Arc<Sni>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|n| self.sni.find(n))
            .unwrap_or(&self.default);
        Some(chosen.clone())
    }
}

/// A server configuration that answers with the SNI match or `default`.
pub fn with_sni(default: Arc<CertifiedKey>, sni: Arc<Sni>) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { sni, default }));
    Ok(Arc::new(config))
}

fn generate(
    dir: &Path,
    cert: &Path,
    key: &Path,
    hostname: &str,
    extra_names: &[String],
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !hostname.is_empty() && hostname != "localhost" {
        names.insert(0, hostname.to_string());
    }
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    // Key first, private from the start; the pair only counts once the certificate exists.
    write_file(key, certified.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert, certified.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory so
/// the rename itself survives a crash) with the given mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}
