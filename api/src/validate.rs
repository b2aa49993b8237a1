//! Syntax checks for values that arrive in requests.

use crate::error::ApiError;

/// A DNS domain name as mail uses it: lowercased, 1–253 characters, labels of letters, digits and
/// inner hyphens, at least two labels, a non-numeric top-level label.
pub fn domain(input: &str) -> Result<String, ApiError> {
    let d = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let invalid = || ApiError::Validation(format!("Invalid domain: {input:?}"));
    if d.is_empty() || d.len() > 253 {
        return Err(invalid());
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid());
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(invalid());
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::domain;

    #[test]
    fn domains_are_normalised_and_checked() {
        assert_eq!(domain("Example.COM.").expect("valid"), "example.com");
        assert_eq!(
            domain("mail-1.ex-ample.co.uk").expect("valid"),
            "mail-1.ex-ample.co.uk"
        );
        for bad in [
            "",
            "localhost",
            "-a.com",
            "a-.com",
            "a..com",
            "a_b.com",
            "1.2.3.4",
            "a b.com",
        ] {
            assert!(domain(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
