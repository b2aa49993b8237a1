//! EHLO and HELO: the client names itself; EHLO also learns the extensions.

use super::Port;
use super::reply::Reply;
use super::session::{Core, Flow, Helo};

/// Longest client name kept (it goes into the `Received:` header).
const MAX_HELO: usize = 255;

impl Core {
    pub(super) fn ehlo(&mut self, host: String, extended: bool) -> Flow {
        let name: String = host.trim().chars().take(MAX_HELO).collect();
        if name.is_empty() || name.chars().any(|c| c.is_control()) {
            return self.reply(Reply::new(501, "5.5.4", "Syntax: EHLO hostname"));
        }
        let name = sanitize(&name);
        // A new greeting resets any transaction (RFC 5321 §4.1.4).
        self.tx = None;
        self.helo = Some(Helo { name, extended });
        let hostname = self.server.settings.hostname.clone();
        if !extended {
            return self.reply(Reply::plain(250, vec![hostname.into()]));
        }
        let mut lines = vec![
            format!("{hostname} Hello [{}]", self.peer.ip()).into(),
            "PIPELINING".into(),
            format!("SIZE {}", self.server.settings.max_message_size).into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if self.tls.is_none() && self.server.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        // Submission offers AUTH once the connection is encrypted.
        if self.port != Port::Mx && self.tls.is_some() && self.account.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        self.reply(Reply::plain(250, lines))
    }
}

/// The client's name as it may stand in a `Received:` header: characters of host names and
/// address literals kept, anything else (comment or header syntax, 8-bit) as `?`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:[]".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn helo_names_cannot_forge_received_syntax() {
        assert_eq!(super::sanitize("mail.example.com"), "mail.example.com");
        assert_eq!(super::sanitize("[192.0.2.1]"), "[192.0.2.1]");
        assert_eq!(
            super::sanitize("x (by trusted.example); Fri"),
            "x??by?trusted.example???Fri"
        );
        assert_eq!(super::sanitize("bücher.de"), "b?cher.de");
    }
}
