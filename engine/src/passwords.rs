//! Password hashes brought over from Dovecot (`{SCHEME}…`), verified as they are and replaced
//! by wispd's own Argon2id on the first login that matches them: `{SHA512-CRYPT}`,
//! `{SHA256-CRYPT}`, `{BLF-CRYPT}`, `{ARGON2I}`, `{ARGON2ID}`, `{MD5-CRYPT}`, `{SSHA512}`,
//! `{PLAIN}`. Every scheme's cost is bounded before any work (a stored hash can't make a failed
//! login expensive), and comparisons are constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq;

use crate::directory::DirError;

/// SHA-crypt rounds at most (Dovecot's default is 5,000).
pub const MAX_SHA_ROUNDS: usize = 100_000;
/// bcrypt cost at most (2^12 rounds, about 0.25 s; Dovecot's default is 5).
pub const MAX_BCRYPT_COST: u32 = 12;

/// A scheme wispd can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sha512Crypt,
    Sha256Crypt,
    BlfCrypt,
    Argon2,
    Md5Crypt,
    Ssha512,
    Plain,
}

/// The scheme of `{SCHEME}rest` and the rest; `None` for wispd's own PHC strings.
pub fn split(hash: &str) -> Option<(Result<Scheme, String>, &str)> {
    let rest = hash.strip_prefix('{')?;
    let (name, rest) = rest.split_once('}')?;
    let scheme = match name.to_ascii_uppercase().as_str() {
        "SHA512-CRYPT" => Ok(Scheme::Sha512Crypt),
        "SHA256-CRYPT" => Ok(Scheme::Sha256Crypt),
        "BLF-CRYPT" => Ok(Scheme::BlfCrypt),
        "ARGON2I" | "ARGON2ID" => Ok(Scheme::Argon2),
        "MD5-CRYPT" => Ok(Scheme::Md5Crypt),
        "SSHA512" => Ok(Scheme::Ssha512),
        "PLAIN" | "CLEAR" | "CLEARTEXT" => Ok(Scheme::Plain),
        other => Err(other.to_string()),
    };
    Some((scheme, rest))
}

/// `$6$[rounds=N$]salt$hash` (or `$5$`): (rounds, salt, hash).
fn sha_crypt_parts<'a>(rest: &'a str, id: &str) -> Result<(usize, &'a str, &'a str), String> {
    let body = rest
        .strip_prefix(id)
        .ok_or_else(|| format!("expected {id}…"))?;
    let mut parts: Vec<&str> = body.split('$').collect();
    let mut rounds = 5000;
    if let Some(r) = parts.first().and_then(|p| p.strip_prefix("rounds=")) {
        rounds = r.parse().map_err(|_| "bad rounds".to_string())?;
        parts.remove(0);
    }
    let [salt, hash] = parts[..] else {
        return Err("expected salt$hash".into());
    };
    if !(1000..=MAX_SHA_ROUNDS).contains(&rounds) {
        return Err(format!(
            "rounds={rounds}: wispd takes 1000 to {MAX_SHA_ROUNDS}"
        ));
    }
    Ok((rounds, &salt[..salt.len().min(16)], hash))
}

/// Whether a hash brought over can be verified here at a bounded cost; why not otherwise.
pub fn check(hash: &str) -> Result<(), String> {
    // every scheme's encoding is ASCII (and the slicing below relies on it)
    if !hash.is_ascii() || hash.len() > 1024 {
        return Err("not an ASCII hash of at most 1024 characters".into());
    }
    let Some((scheme, rest)) = split(hash) else {
        return Err("not a {SCHEME} hash".into());
    };
    let scheme = scheme.map_err(|s| format!("scheme {{{s}}} is not one wispd verifies"))?;
    match scheme {
        Scheme::Sha512Crypt => sha_crypt_parts(rest, "$6$").map(|_| ()),
        Scheme::Sha256Crypt => sha_crypt_parts(rest, "$5$").map(|_| ()),
        Scheme::BlfCrypt => {
            let cost: u32 = rest
                .get(4..6)
                .and_then(|c| c.parse().ok())
                .ok_or("not a bcrypt hash")?;
            if !rest.starts_with("$2") || cost > MAX_BCRYPT_COST {
                return Err(format!(
                    "bcrypt cost {cost}: wispd takes at most {MAX_BCRYPT_COST}"
                ));
            }
            Ok(())
        }
        Scheme::Argon2 => {
            let parsed =
                argon2::password_hash::PasswordHash::new(rest).map_err(|e| e.to_string())?;
            let params = argon2::Params::try_from(&parsed).map_err(|e| e.to_string())?;
            crate::login::argon2_cost_ok(&params)
        }
        Scheme::Md5Crypt => md5_parts(rest).map(|_| ()),
        Scheme::Ssha512 => match STANDARD.decode(rest) {
            Ok(b) if b.len() > 64 => Ok(()),
            _ => Err("not base64 of a SHA-512 digest and its salt".into()),
        },
        Scheme::Plain => Ok(()),
    }
}

fn md5_parts(rest: &str) -> Result<(&str, &str), String> {
    let body = rest.strip_prefix("$1$").ok_or("expected $1$…")?;
    let (salt, hash) = body.split_once('$').ok_or("expected salt$hash")?;
    Ok((&salt[..salt.len().min(8)], hash))
}

/// Whether `password` matches the brought-over `hash` (`{SCHEME}…`); Argon2 runs through
/// `argon2` (on the caller's memory, bounded as wispd's own hashes are).
pub fn verify(
    hash: &str,
    password: &[u8],
    argon2: impl FnOnce(&str) -> Result<bool, DirError>,
) -> Result<bool, DirError> {
    let Some((Ok(scheme), rest)) = split(hash) else {
        return Err(DirError::StoredHash("scheme"));
    };
    check(hash).map_err(|_| DirError::StoredHash("cost or format"))?;
    let eq = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
    Ok(match scheme {
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let id = if scheme == Scheme::Sha512Crypt {
                "$6$"
            } else {
                "$5$"
            };
            let (rounds, salt, expected) =
                sha_crypt_parts(rest, id).map_err(|_| DirError::StoredHash("sha-crypt"))?;
            let got = if scheme == Scheme::Sha512Crypt {
                let p = sha_crypt::Sha512Params::new(rounds)
                    .map_err(|_| DirError::StoredHash("rounds"))?;
                sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p)
            } else {
                let p = sha_crypt::Sha256Params::new(rounds)
                    .map_err(|_| DirError::StoredHash("rounds"))?;
                sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p)
            }
            .map_err(|_| DirError::StoredHash("sha-crypt"))?;
            eq(got.as_bytes(), expected.as_bytes())
        }
        Scheme::BlfCrypt => bcrypt::verify(password, rest).unwrap_or(false),
        Scheme::Argon2 => argon2(rest)?,
        Scheme::Md5Crypt => {
            let (salt, expected) =
                md5_parts(rest).map_err(|_| DirError::StoredHash("md5-crypt"))?;
            eq(
                md5_crypt(password, salt.as_bytes()).as_bytes(),
                expected.as_bytes(),
            )
        }
        Scheme::Ssha512 => {
            let raw = STANDARD
                .decode(rest)
                .map_err(|_| DirError::StoredHash("ssha512"))?;
            let (digest, salt) = raw.split_at(64);
            let mut h = <sha2::Sha512 as sha2::Digest>::new();
            sha2::Digest::update(&mut h, password);
            sha2::Digest::update(&mut h, salt);
            eq(&sha2::Digest::finalize(h), digest)
        }
        Scheme::Plain => eq(password, rest.as_bytes()),
    })
}

/// The FreeBSD/glibc MD5-crypt digest (`$1$`), as its hash part.
fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(b"$1$");
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for i in 0..1000 {
        let mut c = Md5::new();
        if i & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if i % 3 != 0 {
            c.update(salt);
        }
        if i % 7 != 0 {
            c.update(password);
        }
        if i & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let mut out = String::with_capacity(22);
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    to64(u32::from(fin[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_argon2(_: &str) -> Result<bool, DirError> {
        panic!("not an Argon2 hash")
    }

    #[test]
    fn known_hashes_verify_and_costly_ones_are_refused() {
        // `openssl passwd -1 -salt saltsalt secret` and `-6 -salt saltsalt secret`
        let md5 = "{MD5-CRYPT}$1$saltsalt$9xy1btjgzLYfb7hivXtC//";
        assert!(verify(md5, b"secret", no_argon2).unwrap());
        assert!(!verify(md5, b"Secret", no_argon2).unwrap());
        let sha = "{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        assert!(verify(sha, b"secret", no_argon2).unwrap());
        assert!(!verify(sha, b"secreT", no_argon2).unwrap());
        let sha256 = "{SHA256-CRYPT}$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
        assert!(verify(sha256, b"secret", no_argon2).unwrap());
        assert!(verify("{PLAIN}secret", b"secret", no_argon2).unwrap());
        assert!(!verify("{PLAIN}secret", b"secre", no_argon2).unwrap());
        assert!(check("{SHA512-CRYPT}$6$rounds=999999999$salt$x").is_err());
        assert!(
            check("{BLF-CRYPT}$2y$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234")
                .is_err()
        );
        assert!(check("{CRAM-MD5}abc").is_err());
        assert!(check("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").is_err());
        // passes without bound, a multi-byte salt: refused, no panic
        assert!(
            check("{ARGON2ID}$argon2id$v=19$m=8,t=4294967295,p=1$c2FsdGFsdA$aGFzaGhhc2g").is_err()
        );
        // what `doveadm pw -s ARGON2ID` makes
        assert!(check("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$Sv0vrQxPM35VafTt/kLR3g$LrtHG/qeqLzX5gROZ4ThMdZEHga17JDR84feg1Zt7J4").is_ok());
        assert!(check("{MD5-CRYPT}$1$a\u{e9}\u{e9}\u{e9}\u{e9}$x").is_err());
        assert!(verify("{MD5-CRYPT}$1$a\u{e9}\u{e9}\u{e9}\u{e9}$x", b"x", no_argon2).is_err());
        assert!(check("{SSHA512}c2hvcnQ=").is_err());
    }
}
