//! DKIM keys: generation (RSA 2048 or Ed25519), the DNS record to publish, and checking that it
//! is published. Keys live in the store; the private half never leaves it through the API.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use wispd_store::schema::{DKIM_KEYS, DkimKey};
use wispd_store::{Store, StoreError};

use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};

use crate::address;

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("RSA key generation failed: {0}")]
    Rsa(#[from] rsa::Error),
    #[error("key encoding failed: {0}")]
    Pkcs8(#[from] rsa::pkcs8::Error),
    #[error("public key encoding failed: {0}")]
    Spki(#[from] rsa::pkcs8::spki::Error),
    #[error("Ed25519 key generation failed: {0}")]
    Ed25519(#[from] ring::error::Unspecified),
    #[error("Ed25519 key rejected: {0}")]
    Ed25519Rejected(#[from] ring::error::KeyRejected),
    #[error("stored key for {domain} is not base64: {source}")]
    StoredKey {
        domain: String,
        source: base64::DecodeError,
    },
    #[error("stored key for {domain} has unknown algorithm {algorithm:?}")]
    UnknownAlgorithm { domain: String, algorithm: String },
    #[error("signing for {domain}: {source}")]
    Sign {
        domain: String,
        source: mail_auth::Error,
    },
    #[error("DNS resolver: {0}")]
    Dns(#[from] hickory_resolver::net::NetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The signing algorithms offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "rsa-sha256" => Some(Algorithm::RsaSha256),
            "ed25519-sha256" => Some(Algorithm::Ed25519Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// `selector._domainkey.domain`.
pub fn dns_name(key: &DkimKey) -> String {
    format!("{}._domainkey.{}", key.selector, key.domain)
}

/// The TXT value to publish: `v=DKIM1; k=rsa; p=…`.
pub fn dns_record(key: &DkimKey) -> String {
    let k = Algorithm::parse(&key.algorithm).map_or("rsa", Algorithm::key_type);
    format!("v=DKIM1; k={k}; p={}", key.public_key)
}

/// A selector: dot-separated labels of letters, digits and hyphens.
fn valid_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Generates a key pair: (PKCS#8 DER private key, the DNS `p=` value).
fn generate(algorithm: Algorithm) -> Result<(Vec<u8>, String), DkimError> {
    match algorithm {
        Algorithm::RsaSha256 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let mut rng = rsa::rand_core::OsRng;
            let private = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
            let der = private.to_pkcs8_der()?;
            let public = private.to_public_key().to_public_key_der()?;
            Ok((der.as_bytes().to_vec(), STANDARD.encode(public.as_bytes())))
        }
        Algorithm::Ed25519Sha256 => {
            use ring::signature::KeyPair;
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())?;
            // RFC 8463: the raw 32-byte public key
            Ok((
                pkcs8.as_ref().to_vec(),
                STANDARD.encode(pair.public_key().as_ref()),
            ))
        }
    }
}

/// Creates (or replaces, rotating it) the key of `domain`. RSA generation takes a moment: call
/// off the async workers.
pub fn create(
    store: &Store,
    domain: &str,
    selector: Option<&str>,
    algorithm: Option<&str>,
) -> Result<DkimKey, DkimError> {
    let d = address::domain(domain)
        .ok_or_else(|| DkimError::Invalid(format!("Invalid domain: {domain:?}")))?;
    let selector = selector
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("wispd");
    let selector = selector.to_ascii_lowercase();
    if !valid_selector(&selector) {
        return Err(DkimError::Invalid(format!(
            "Invalid selector: {selector:?} (letters, digits and hyphens, dot-separated)"
        )));
    }
    let algorithm = match algorithm.map(str::trim).filter(|s| !s.is_empty()) {
        None => Algorithm::RsaSha256,
        Some(a) => Algorithm::parse(a).ok_or_else(|| {
            DkimError::Invalid(format!(
                "Invalid algorithm: {a:?} (rsa-sha256 or ed25519-sha256)"
            ))
        })?,
    };
    let (private, public) = generate(algorithm)?;
    let key = DkimKey {
        domain: d.clone(),
        selector,
        algorithm: algorithm.name().into(),
        private_key: STANDARD.encode(private),
        public_key: public,
        created_at: wispd_store::unix_now(),
    };
    store.write(|w| w.put(&DKIM_KEYS, d.as_str(), &key))?;
    Ok(key)
}

pub fn list(store: &Store, domains: Option<&[String]>) -> Result<Vec<DkimKey>, DkimError> {
    Ok(store
        .read(|r| r.all(&DKIM_KEYS))?
        .into_iter()
        .filter(|k| domains.is_none_or(|d| d.contains(&k.domain)))
        .collect())
}

pub fn get(store: &Store, domain: &str) -> Result<DkimKey, DkimError> {
    let d = address::domain(domain)
        .ok_or_else(|| DkimError::Invalid(format!("Invalid domain: {domain:?}")))?;
    store
        .read(|r| r.get(&DKIM_KEYS, d.as_str()))?
        .ok_or_else(|| DkimError::NotFound(format!("No DKIM key for {d}")))
}

pub fn delete(store: &Store, domain: &str) -> Result<DkimKey, DkimError> {
    let key = get(store, domain)?;
    store.write(|w| w.remove(&DKIM_KEYS, key.domain.as_str()))?;
    Ok(key)
}

/// Headers signed on outbound mail; `From` twice so that a second From added on the way breaks
/// the signature (oversigning). Headers missing from a message are signed as absent.
const SIGNED_HEADERS: [&str; 14] = [
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
];

/// A domain's private key from the store, ready to sign with (once: signing consumes it).
pub struct SigningKey {
    pub domain: String,
    pub selector: String,
    key: mail_auth::common::crypto::DkimKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// `domain`'s key; `None` when the domain has none.
    pub fn load(store: &Store, domain: &str) -> Result<Option<SigningKey>, DkimError> {
        use mail_auth::common::crypto::{DkimKey as Key, Ed25519Key, RsaKey};
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let Some(stored) = store.read(|r| r.get(&DKIM_KEYS, domain))? else {
            return Ok(None);
        };
        let der = STANDARD
            .decode(&stored.private_key)
            .map_err(|source| DkimError::StoredKey {
                domain: domain.to_string(),
                source,
            })?;
        let crypto = |source: mail_auth::Error| DkimError::Sign {
            domain: domain.to_string(),
            source,
        };
        let key = match Algorithm::parse(&stored.algorithm) {
            Some(Algorithm::RsaSha256) => Key::Rsa(
                RsaKey::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)))
                    .map_err(crypto)?,
            ),
            Some(Algorithm::Ed25519Sha256) => {
                Key::Ed25519(Ed25519Key::from_pkcs8_der(&der).map_err(crypto)?)
            }
            None => {
                return Err(DkimError::UnknownAlgorithm {
                    domain: domain.to_string(),
                    algorithm: stored.algorithm.clone(),
                });
            }
        };
        let DkimKey {
            domain, selector, ..
        } = stored;
        Ok(Some(SigningKey {
            domain,
            selector,
            key,
        }))
    }

    /// A `DKIM-Signature:` header (with its CRLF) for `message` (relaxed/relaxed).
    pub fn dkim(self, message: &[u8]) -> Result<String, DkimError> {
        self.sign_headers(message, &SIGNED_HEADERS)
    }

    /// A `DKIM-Signature:` for a list's post: what the list sets and the author wrote, not
    /// the per-member `List-Unsubscribe` that is added after.
    pub fn dkim_list(self, message: &[u8]) -> Result<String, DkimError> {
        const LIST_HEADERS: &[&str] = &[
            "From",
            "Reply-To",
            "Cc",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
            "List-Id",
            "List-Post",
            "List-Help",
            "List-Subscribe",
            "List-Unsubscribe-Post",
            "Precedence",
        ];
        self.sign_headers(message, LIST_HEADERS)
    }

    fn sign_headers(self, message: &[u8], headers: &[&str]) -> Result<String, DkimError> {
        use mail_auth::common::headers::HeaderWriter;
        use mail_auth::dkim::{Canonicalization, DkimSigner};
        let SigningKey {
            domain,
            selector,
            key,
        } = self;
        DkimSigner::from_key(key)
            .domain(domain.as_str())
            .selector(selector.as_str())
            .headers(headers.iter().copied())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .map(|s| s.to_header())
            .map_err(|source| DkimError::Sign { domain, source })
    }

    /// An ARC set (RFC 8617: `ARC-Seal`, `ARC-Message-Signature`, `ARC-Authentication-Results`,
    /// CRLF-terminated) for `message` as it leaves, recording `results` and continuing the
    /// chain it arrived with (`arc`). `None` when that chain failed (it is not sealed again).
    pub fn arc(
        self,
        message: &AuthenticatedMessage<'_>,
        results: &AuthenticationResults<'_>,
        arc: &ArcOutput<'_>,
    ) -> Result<Option<String>, DkimError> {
        use mail_auth::arc::ArcSealer;
        use mail_auth::common::headers::HeaderWriter;
        if !arc.can_be_sealed() {
            return Ok(None);
        }
        let SigningKey {
            domain,
            selector,
            key,
        } = self;
        ArcSealer::from_key(key)
            .domain(domain.as_str())
            .selector(selector.as_str())
            .headers(SIGNED_HEADERS.iter().copied().chain(["DKIM-Signature"]))
            .seal(message, results, arc)
            .map(|s| Some(s.to_header()))
            .map_err(|source| DkimError::Sign { domain, source })
    }
}

/// A `DKIM-Signature:` header (with its CRLF) for `message`, made with `domain`'s key
/// (relaxed/relaxed); `None` when the domain has no key.
pub fn sign(store: &Store, domain: &str, message: &[u8]) -> Result<Option<String>, DkimError> {
    SigningKey::load(store, domain)?
        .map(|k| k.dkim(message))
        .transpose()
}

/// A resolver configuration asking exactly `nameservers` (UDP, then TCP).
pub fn nameserver_config(nameservers: &[SocketAddr]) -> ResolverConfig {
    let servers = nameservers
        .iter()
        .map(|a| {
            let mut ns = NameServerConfig::udp_and_tcp(a.ip());
            for c in &mut ns.connections {
                c.port = a.port();
            }
            ns
        })
        .collect();
    ResolverConfig::from_parts(None, vec![], servers)
}

/// A DNS resolver: the configured nameservers (`[dns].nameservers`), or the system's.
pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, DkimError> {
    if nameservers.is_empty() {
        return TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(DkimError::from);
    }
    Resolver::builder_with_config(
        nameserver_config(nameservers),
        TokioRuntimeProvider::default(),
    )
    .build()
    .map_err(DkimError::from)
}

/// What DNS says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub found: bool,
    pub matches: bool,
    /// The TXT record found, joined.
    pub record: Option<String>,
    /// Why nothing was found (NXDOMAIN, timeout, …).
    pub error: Option<String>,
}

/// Looks the key's TXT record up and compares its `p=` with the stored public key.
pub async fn verify(resolver: &TokioResolver, key: &DkimKey) -> Published {
    let name = format!("{}.", dns_name(key));
    let lookup = match resolver.txt_lookup(name.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            return Published {
                found: false,
                matches: false,
                record: None,
                error: Some(e.to_string()),
            };
        }
    };
    let mut first = None;
    for record in lookup.answers() {
        if let RData::TXT(txt) = &record.data {
            let joined: String = txt
                .txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            let p = joined
                .split(';')
                .filter_map(|tag| tag.split_once('='))
                .find(|(k, _)| k.trim() == "p")
                .map(|(_, v)| v.chars().filter(|c| !c.is_whitespace()).collect::<String>());
            if p.as_deref() == Some(key.public_key.as_str()) {
                return Published {
                    found: true,
                    matches: true,
                    record: Some(joined),
                    error: None,
                };
            }
            first.get_or_insert(joined);
        }
    }
    Published {
        found: first.is_some(),
        matches: false,
        record: first,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_records_and_selectors() {
        let (der, public) = generate(Algorithm::Ed25519Sha256).expect("ed25519");
        assert!(!der.is_empty());
        assert_eq!(STANDARD.decode(&public).expect("b64").len(), 32);
        let (_, rsa_public) = generate(Algorithm::RsaSha256).expect("rsa");
        // SubjectPublicKeyInfo of a 2048-bit key
        assert_eq!(STANDARD.decode(&rsa_public).expect("b64").len(), 294);
        let key = DkimKey {
            domain: "example.com".into(),
            selector: "s1".into(),
            algorithm: "ed25519-sha256".into(),
            private_key: String::new(),
            public_key: "AAAA".into(),
            created_at: 0,
        };
        assert_eq!(dns_name(&key), "s1._domainkey.example.com");
        assert_eq!(dns_record(&key), "v=DKIM1; k=ed25519; p=AAAA");
        assert!(valid_selector("wispd") && valid_selector("2026-11.mail"));
        assert!(!valid_selector("a_b") && !valid_selector("") && !valid_selector("-a"));
    }
}
