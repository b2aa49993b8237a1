//! Syntax checks for values that arrive in requests.

use crate::error::ApiError;

/// A DNS domain name as mail uses it (see [`wispd_engine::address::domain`]).
pub fn domain(input: &str) -> Result<String, ApiError> {
    wispd_engine::address::domain(input)
        .ok_or_else(|| ApiError::Validation(format!("Invalid domain: {input:?}")))
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
