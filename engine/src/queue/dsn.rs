//! Delivery status notifications (RFC 3464): a `multipart/report` with a human-readable part,
//! the machine-readable `message/delivery-status`, and the returned message's headers.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// One recipient that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub recipient: String,
    /// The address the sender used, when the failed one is a forwarding destination.
    pub original: Option<String>,
    /// Enhanced status code, `5.1.1`.
    pub status: String,
    /// The server that refused it.
    pub remote: Option<String>,
    /// Its reply, or what went wrong.
    pub diagnostic: String,
}

fn date(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

/// One line, printable ASCII: remote replies may be multi-line or carry anything.
fn line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect();
    // Well inside the 998-character line limit with the field name and address before it.
    out.truncate(400);
    out
}

/// An address for a `*-Recipient:` field: `rfc822; a@b` when it is ASCII, else RFC 6533's
/// `utf-8; ` with the address as utf-8-addr-xtext (non-ASCII, `+`, `=`, `\` and controls as
/// `\x{HEX}`), which stays ASCII inside message/delivery-status.
fn recipient_field(address: &str) -> String {
    if address.is_ascii() && !address.chars().any(|c| c.is_ascii_control()) {
        return format!("rfc822; {}", line(address));
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars().take(400) {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", u32::from(c)));
        }
    }
    out
}

/// The header block of `message` (up to the blank line).
fn headers(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    message.get(..end.min(64 * 1024)).unwrap_or(message)
}

/// The report for `sender` about message `queue_id` (queued at `arrival`).
pub fn build(
    hostname: &str,
    queue_id: &str,
    arrival: i64,
    sender: &str,
    failures: &[Failure],
    original: &[u8],
) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let boundary = format!("{now:032x}/wispd-dsn");
    let today = date(i64::try_from(now / 1_000_000_000).unwrap_or(0));
    let mut human = String::new();
    for f in failures {
        let shown = if f.recipient.is_ascii() {
            line(&f.recipient)
        } else {
            recipient_field(&f.recipient)["utf-8; ".len()..].to_string()
        };
        human.push_str(&format!("<{shown}>: {}\r\n", line(&f.diagnostic)));
    }
    let mut report = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Wispd-Queue-ID: {queue_id}\r\nArrival-Date: {}\r\n",
        date(arrival)
    );
    for f in failures {
        report.push_str(&format!(
            "\r\nFinal-Recipient: {}\r\n",
            recipient_field(&f.recipient)
        ));
        if let Some(o) = &f.original {
            report.push_str(&format!("Original-Recipient: {}\r\n", recipient_field(o)));
        }
        report.push_str(&format!(
            "Action: failed\r\nStatus: {}\r\n",
            line(&f.status)
        ));
        if let Some(r) = &f.remote {
            report.push_str(&format!("Remote-MTA: dns; {}\r\n", line(r)));
        }
        report.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {today}\r\n",
            line(&f.diagnostic)
        ));
    }
    let mut m = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {today}\r\n\
         Message-ID: <{now:x}.{queue_id}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host {hostname}.\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients. Its headers are attached below.\r\n\
         \r\n\
         {human}\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         {report}\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Undelivered Message Headers\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n"
    )
    .into_bytes();
    m.extend_from_slice(headers(original));
    m.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parts() {
        let original = b"From: a@x.example\r\nSubject: hi\r\n\r\nbody text\r\n";
        let m = build(
            "mail.x.example",
            "7",
            0,
            "a@x.example",
            &[Failure {
                recipient: "b@y.example".into(),
                original: Some("fwd@x.example".into()),
                status: "5.1.1".into(),
                remote: Some("mx.y.example[192.0.2.1]".into()),
                diagnostic: "550 5.1.1 no such\r\nuser".into(),
            }],
            original,
        );
        let text = String::from_utf8(m).expect("ascii");
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .expect("parses");
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; b@y.example\r\nOriginal-Recipient: rfc822; fwd@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.y.example[192.0.2.1]\r\nDiagnostic-Code: smtp; 550 5.1.1 no such  user\r\n"), "{text}");
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.contains("body text"), "headers only");
        assert_eq!(parsed.parts.len(), 4, "report, text, status, headers");
    }

    /// Non-ASCII recipients were written with their letters turned into spaces.
    #[test]
    fn smtputf8_recipients_get_the_utf8_address_type() {
        let m = build(
            "mail.x.example",
            "8",
            0,
            "a@x.example",
            &[Failure {
                recipient: "jörg+x@bücher.example".into(),
                original: Some("fwd@x.example".into()),
                status: "5.1.1".into(),
                remote: None,
                diagnostic: "550 5.1.1 unknown".into(),
            }],
            b"Subject: hi\r\n\r\n",
        );
        let text = String::from_utf8(m).expect("ascii");
        assert!(text.is_ascii());
        assert!(
            text.contains("Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example\r\n"),
            "{text}"
        );
        assert!(text.contains("Original-Recipient: rfc822; fwd@x.example\r\n"));
        assert!(text.contains("<j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example>: 550 5.1.1 unknown"));
    }
}
