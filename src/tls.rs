//! TLS material for every listener: the configured PEM files, or a self-signed certificate
//! generated once under `DATA_DIR/tls/`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the server TLS configuration. `files` are the configured (cert, key); without them the
/// self-signed pair in `data_dir/tls/` is used, and generated if it doesn't exist yet.
pub fn server_config(
    files: Option<(&Path, &Path)>,
    data_dir: &Path,
    hostname: &str,
    extra_names: &[String],
) -> Result<Arc<rustls::ServerConfig>> {
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {} is not valid PEM", cert_path.display()))?;
    if certs.is_empty() {
        bail!(
            "TLS certificate {} contains no CERTIFICATE block",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot load TLS private key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "TLS certificate {} and key {} do not form a usable pair",
                cert_path.display(),
                key_path.display()
            )
        })?;
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
