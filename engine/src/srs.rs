//! Sender Rewriting Scheme for forwarded mail. A message forwarded to another domain leaves with
//! an envelope sender in the forwarding domain, so the destination's SPF check sees a domain whose
//! records name this server:
//!
//! `alice@origin.example` → `SRS0=HHHHHHHH=TT=origin.example=alice@forwarding.example`
//!
//! `HHHHHHHH` is an HMAC-SHA256 (keyed with a secret kept in the store) over the timestamp and
//! the original address, 40 bits in base32 (case does not matter, so a relay that folds case
//! does no harm, and guessing one takes ~2^39 tries), `TT` the day it was made. A bounce sent back to that address is accepted by the MX
//! only when the hash matches and it is at most [`MAX_AGE_DAYS`] old, and goes on to the original
//! sender; anything else is unknown, so the rewritten addresses are no open relay.
//!
//! Mail that arrives already rewritten by another forwarder is not wrapped again (SRS0 inside
//! SRS0 grows with every hop and loses the first forwarder): as in libsrs2 it becomes SRS1,
//! which names the first forwarder and carries its SRS0 part unchanged,
//!
//! `SRS0=HHHH=TT=origin.example=alice@first.example` → `SRS1=GGGG=first.example==HHHH=TT=origin.example=alice@fwd.example`
//!
//! and an SRS1 address forwarded again only gets a new hash and domain. A bounce to a genuine
//! SRS1 address goes back to the first forwarder's SRS0 address, which returns it to the sender.

use ring::hmac;
use wispd_store::schema::MAIL_SECRETS;
use wispd_store::{Store, StoreError};

/// How long a rewritten address is honoured for bounces.
pub const MAX_AGE_DAYS: u64 = 21;
const KEY_NAME: &str = "srs_key";
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

#[derive(Clone)]
pub struct Srs {
    key: hmac::Key,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Srs")
    }
}

fn today() -> u64 {
    u64::try_from(wispd_store::unix_now()).unwrap_or(0) / 86_400
}

impl Srs {
    /// The store's SRS key, made on first use.
    pub fn load(store: &Store) -> std::io::Result<Srs> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| std::io::Error::other(format!("OS randomness: {e}")))?;
        let secret = store
            .write(|w| {
                if let Some(k) = w.get_raw(&MAIL_SECRETS, KEY_NAME)? {
                    return Ok::<_, StoreError>(k);
                }
                w.put_raw(&MAIL_SECRETS, KEY_NAME, &fresh)?;
                Ok(fresh.to_vec())
            })
            .map_err(std::io::Error::other)?;
        Ok(Srs::with_secret(&secret))
    }

    pub fn with_secret(secret: &[u8]) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn hash(&self, stamp: &str, domain: &str, local: &str) -> String {
        let input = format!("{stamp}={}={local}", domain.to_ascii_lowercase()).to_ascii_lowercase();
        let tag = hmac::sign(&self.key, input.as_bytes());
        // The first 40 bits as 8 base32 characters.
        let bits = tag
            .as_ref()
            .iter()
            .take(5)
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        (0..8)
            .rev()
            .map(|i| BASE32[((bits >> (i * 5)) & 31) as usize] as char)
            .collect()
    }

    fn stamp(day: u64) -> String {
        let t = day % 1024;
        [BASE32[(t >> 5) as usize], BASE32[(t & 31) as usize]]
            .iter()
            .map(|&b| b as char)
            .collect()
    }

    /// The SRS1 hash, over the first forwarder and the SRS0 part it made.
    fn hash1(&self, first: &str, rest: &str) -> String {
        self.hash("1", first, rest)
    }

    /// `sender` rewritten into `domain`. A null sender stays null; an SRS0 or SRS1 address
    /// becomes SRS1 (see the module docs).
    pub fn forward(&self, sender: &str, domain: &str) -> String {
        let Some((local, origin)) = sender.rsplit_once('@') else {
            return sender.to_string();
        };
        let tagged = |tag: &str| local.get(..5).is_some_and(|p| p.eq_ignore_ascii_case(tag));
        // `=HHHH=TT=origin=alice` after SRS0, made at `origin` (the first forwarder)
        if tagged("SRS0=") && local.len() > 5 {
            let rest = &local[4..];
            let hash = self.hash1(origin, rest);
            return format!("SRS1={hash}={origin}={rest}@{domain}");
        }
        if tagged("SRS1=")
            && let Some((first, rest)) = srs1_parts(local).map(|(_, f, r)| (f, r))
        {
            let hash = self.hash1(first, rest);
            return format!("SRS1={hash}={first}={rest}@{domain}");
        }
        let stamp = Srs::stamp(today());
        let hash = self.hash(&stamp, origin, local);
        format!("SRS0={hash}={stamp}={origin}={local}@{domain}")
    }

    /// The original sender behind an `SRS0=` address made here, if the address is genuine and
    /// not too old; for a genuine `SRS1=` address made here, the first forwarder's SRS0 address.
    pub fn reverse(&self, address: &str) -> Option<String> {
        let (local, _domain) = address.rsplit_once('@')?;
        if local
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("SRS1="))
        {
            let (hash, first, rest) = srs1_parts(local)?;
            let expected = self.hash1(first, rest);
            let genuine = bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                hash.to_ascii_uppercase().as_bytes(),
            ));
            return genuine.then(|| format!("SRS0{rest}@{first}"));
        }
        let rest = local
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("SRS0="))
            .and_then(|_| local.get(5..))?;
        let mut parts = rest.splitn(4, '=');
        let (hash, stamp, origin, orig_local) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if origin.is_empty() || orig_local.is_empty() || stamp.len() != 2 {
            return None;
        }
        let expected = self.hash(&stamp.to_ascii_uppercase(), origin, orig_local);
        // Hashes may come back case-folded by a relay on the way.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            hash.to_ascii_uppercase().as_bytes(),
        )) {
            return None;
        }
        let mut t = 0u64;
        for c in stamp.to_ascii_uppercase().bytes() {
            t = t * 32 + BASE32.iter().position(|&b| b == c)? as u64;
        }
        let age = (today() % 1024 + 1024 - t) % 1024;
        (age <= MAX_AGE_DAYS).then(|| format!("{orig_local}@{origin}"))
    }
}

/// `SRS1=hash=first==rest…` → (hash, first forwarder, `=rest…` as the SRS0 part after `SRS0`).
fn srs1_parts(local: &str) -> Option<(&str, &str, &str)> {
    let body = local.get(5..)?;
    let (hash, after) = body.split_once('=')?;
    let (first, rest) = after.split_once('=')?;
    (!hash.is_empty() && !first.is_empty() && rest.starts_with('=') && rest.len() > 1)
        .then_some((hash, first, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwarding an address another forwarder had rewritten nested SRS0 inside SRS0.
    #[test]
    fn forwarded_srs0_becomes_srs1_and_bounces_return_through_the_first_forwarder() {
        let first = Srs::with_secret(b"first");
        let us = Srs::with_secret(b"us");
        let srs0 = first.forward("alice@origin.example", "first.example");
        let srs1 = us.forward(&srs0, "fwd.example");
        let srs0_part = srs0.split_once('@').expect("at").0;
        assert!(srs1.starts_with("SRS1="), "{srs1}");
        assert_eq!(srs1.matches("SRS0").count(), 0, "{srs1}");
        assert!(
            srs1.ends_with(&format!("=first.example={}@fwd.example", &srs0_part[4..])),
            "{srs1}"
        );
        // the bounce goes to the first forwarder, which returns it to the sender
        let back = us.reverse(&srs1).expect("genuine SRS1");
        assert_eq!(back.to_ascii_lowercase(), srs0.to_ascii_lowercase());
        assert_eq!(
            first.reverse(&back).as_deref(),
            Some("alice@origin.example")
        );
        // forwarded once more: still SRS1 naming the first forwarder, new hash and domain
        let again = us.forward(&srs1, "third.example");
        assert!(
            again.starts_with("SRS1=") && again.ends_with("@third.example"),
            "{again}"
        );
        assert!(again.contains("=first.example=="), "{again}");
        assert_eq!(us.reverse(&again).as_deref(), Some(back.as_str()));
        // forged or foreign SRS1 addresses are refused
        assert_eq!(Srs::with_secret(b"other").reverse(&srs1), None);
        assert_eq!(
            us.reverse(&srs1.replacen("first.example", "evil.example", 1)),
            None
        );
        assert_eq!(
            us.reverse("SRS1=AAAAAAAA=x.example==junk@fwd.example"),
            None
        );
        assert_eq!(us.reverse("SRS1=broken@fwd.example"), None);
    }

    #[test]
    fn forward_and_reverse() {
        let srs = Srs::with_secret(b"secret");
        let a = srs.forward("Alice@Origin.example", "fwd.example");
        assert!(
            a.starts_with("SRS0=") && a.ends_with("=Origin.example=Alice@fwd.example"),
            "{a}"
        );
        assert_eq!(srs.reverse(&a).as_deref(), Some("Alice@Origin.example"));
        assert_eq!(
            srs.reverse(&a.to_lowercase()).as_deref(),
            Some("alice@origin.example")
        );
        // another key, a changed hash or a changed address are refused
        assert_eq!(Srs::with_secret(b"other").reverse(&a), None);
        let forged = a.replacen("Alice", "mallory", 1);
        assert_eq!(srs.reverse(&forged), None);
        assert_eq!(
            srs.reverse("SRS0=abcdefgh=AA=x.example=bob@fwd.example"),
            None
        );
        let hash = a.split('=').nth(1).expect("hash");
        assert_eq!(hash.len(), 8);
        assert_eq!(srs.reverse("bob@fwd.example"), None);
        assert_eq!(srs.forward("", "fwd.example"), "");
        // too old
        let stamp = Srs::stamp(today() - MAX_AGE_DAYS - 1);
        let h = srs.hash(&stamp, "o.example", "bob");
        assert_eq!(
            srs.reverse(&format!("SRS0={h}={stamp}=o.example=bob@f.example")),
            None
        );
        let stamp = Srs::stamp(today() - 1);
        let h = srs.hash(&stamp, "o.example", "bob");
        assert!(
            srs.reverse(&format!("SRS0={h}={stamp}=o.example=bob@f.example"))
                .is_some()
        );
    }
}
