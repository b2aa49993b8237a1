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
        ] {
            assert!(domain(bad).is_none(), "{bad:?}");
        }
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
