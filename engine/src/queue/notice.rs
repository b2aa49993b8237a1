//! Notices wispd itself sends (firewall alerts): a plain-text message for the outbound queue,
//! marked `Auto-Submitted: auto-generated` so that autoresponders stay quiet.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Printable ASCII on one line (a field value), at most `max` characters.
fn field(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(max)
        .collect()
}

/// The message: `From: lfd <from>`, `To`, `Subject`, the body as UTF-8 text (lines ending CRLF).
pub fn build(hostname: &str, from: &str, to: &str, subject: &str, body: &str, t: i64) -> Vec<u8> {
    let date = OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into());
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let id: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = String::with_capacity(body.len() + 2);
    for l in body.lines() {
        // no line may run past 998 octets; "." alone is fine (the queue dot-stuffs)
        let mut cut = l.len().min(990);
        while !l.is_char_boundary(cut) {
            cut -= 1;
        }
        text.push_str(&l[..cut]);
        text.push_str("\r\n");
    }
    format!(
        "From: lfd <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <lfd.{t}.{id}@{host}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{text}",
        from = field(from, 254),
        to = field(to, 254),
        subject = field(subject, 300),
        host = field(hostname, 253),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_notice_is_one_plain_message_with_safe_fields() {
        let m = super::build(
            "mx.example.com",
            "lfd@mx.example.com",
            "ops@example.org",
            "lfd: x\r\nBcc: victim@example.net",
            "one\ntwo",
            0,
        );
        let m = String::from_utf8(m).expect("utf-8");
        assert!(
            m.contains("Subject: lfd: x  Bcc: victim@example.net\r\n"),
            "{m}"
        );
        assert!(!m.contains("\r\nBcc:"), "{m}");
        assert!(m.contains("Auto-Submitted: auto-generated\r\n"));
        assert!(m.ends_with("\r\n\r\none\r\ntwo\r\n"), "{m}");
        let parsed = mail_parser::MessageParser::default()
            .parse(m.as_bytes())
            .expect("parses");
        assert_eq!(
            parsed
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("ops@example.org")
        );
    }
}
