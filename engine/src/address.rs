//! Syntax of the names mail uses: domains and local parts, normalised to lowercase.

/// A DNS domain as mail uses it: 1–253 characters, at least two labels of letters, digits and
/// inner hyphens, a non-numeric top-level label. Returns it lowercased without a trailing dot.
pub fn domain(input: &str) -> Option<String> {
    let d = input.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return None;
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok)
        || labels
            .last()
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    // A-labels (`xn--…`) must be valid punycode of a valid IDN that converts back to
    // itself; other labels with `--` in third and fourth place are reserved (RFC 5891 §4.2.3.1).
    for l in &labels {
        if l.len() >= 4 && &l[2..4] == "--" {
            if !l.starts_with("xn--") {
                return None;
            }
            let (unicode, checked) = idna::domain_to_unicode(l);
            if checked.is_err()
                || unicode.is_ascii()
                || idna::domain_to_ascii_strict(&unicode).ok().as_deref() != Some(*l)
            {
                return None;
            }
        }
    }
    Some(d)
}

/// An RFC 5321 dot-atom local part (no quoted strings), at most 64 characters, lowercased.
pub fn local_part(input: &str) -> Option<String> {
    let l = input.trim().to_ascii_lowercase();
    let atom_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    let ok = !l.is_empty()
        && l.len() <= 64
        && !l.starts_with('.')
        && !l.ends_with('.')
        && !l.contains("..")
        && l.bytes().all(|b| b == b'.' || atom_char(b));
    ok.then_some(l)
}

/// `local@domain`, both parts checked and lowercased.
pub fn address(input: &str) -> Option<(String, String)> {
    let (l, d) = input.trim().rsplit_once('@')?;
    Some((local_part(l)?, domain(d)?))
}

/// Whether `address` is the account's own (also as `user+tag@domain`).
pub fn owns(account_email: &str, address: &str) -> bool {
    let Some((l, d)) = self::address(address) else {
        return false;
    };
    let plain = l.split_once('+').map_or(l.as_str(), |(base, _)| base);
    format!("{plain}@{d}") == account_email
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_local_parts_and_addresses() {
        assert_eq!(domain("Example.COM.").as_deref(), Some("example.com"));
        for bad in [
            "",
            "localhost",
            "-a.com",
            "a..com",
            "a_b.com",
            "1.2.3.4",
            "a b.com",
            "xn--zz.test",
            "xn--.test",
            "ab--cd.test",
            "xn--abc-.test",
        ] {
            assert!(domain(bad).is_none(), "{bad:?}");
        }
        // a real IDN in its A-label form
        assert_eq!(
            domain("xn--bcher-kva.de").as_deref(),
            Some("xn--bcher-kva.de")
        );
        assert_eq!(
            local_part("Info.Sales+tag").as_deref(),
            Some("info.sales+tag")
        );
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a@b",
            "\"q\"",
            &"x".repeat(65),
        ] {
            assert!(local_part(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            address("Bob@Example.org"),
            Some(("bob".into(), "example.org".into()))
        );
        assert!(address("bob").is_none());
    }
}
