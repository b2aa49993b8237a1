//! MAIL FROM: opens a transaction.

use smtp_proto::{MAIL_SMTPUTF8, MailFrom};

use super::Port;
use super::reply::Reply;
use super::session::{Core, Flow, Transaction};
use crate::address;

impl Core {
    pub(super) fn mail(&mut self, from: MailFrom<String>) -> Flow {
        if self.helo.is_none() {
            return self.reply(Reply::new(503, "5.5.1", "Send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return self.reply(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        let limit = self.server.settings.max_message_size;
        if from.size > limit {
            return self.reply(Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds fixed limit of {limit} bytes"),
            ));
        }
        let sender = from.address.trim().to_string();
        if !sender.is_empty() && !valid_sender(&sender) {
            return self.reply(Reply::new(501, "5.1.7", "Bad sender address syntax"));
        }
        if self.port != Port::Mx {
            let Some(account) = self.account.as_ref() else {
                return self.reply(Reply::new(530, "5.7.0", "Authentication required"));
            };
            if !owns(&account.email(), &sender) {
                let msg = format!(
                    "<{sender}>: Sender address rejected: not owned by {}",
                    account.email()
                );
                return self.reply(Reply::new(553, "5.7.1", msg));
            }
        }
        self.tx = Some(Transaction {
            id: new_id(),
            from: sender,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            rcpts: Vec::new(),
            accounts: Vec::new(),
            emails: Vec::new(),
            remote: Vec::new(),
            chunking: false,
        });
        self.reply(Reply::new(250, "2.1.0", "Ok"))
    }
}

/// `local@domain` with a sane domain (or an address literal); the local part is the sender's
/// business, but it may not carry control characters or spaces.
fn valid_sender(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.chars().any(|c| c.is_control() || c == ' ');
    let domain_ok = address::domain(domain).is_some()
        || (domain.starts_with('[') && domain.ends_with(']') && domain.len() > 2)
        || (!domain.is_ascii() && !domain.chars().any(|c| c.is_control() || c == ' '));
    local_ok && domain_ok
}

/// Whether `address` is the account's own (also as `user+tag@domain`).
pub(super) fn owns(account_email: &str, address: &str) -> bool {
    let Some((l, d)) = address::address(address) else {
        return false;
    };
    let plain = l.split_once('+').map_or(l.as_str(), |(base, _)| base);
    format!("{plain}@{d}") == account_email
}

/// A random 12-hex-digit transaction id.
fn new_id() -> String {
    let mut b = [0u8; 6];
    // Only an id for logs and headers: a failed draw leaves zeros, which is still usable.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sender_syntax() {
        for ok in [
            "a@example.com",
            "A.B+c@Sub.Example.org",
            "x@[127.0.0.1]",
            "ü@bücher.de",
        ] {
            assert!(super::valid_sender(ok), "{ok}");
        }
        for bad in [
            "nobody",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@localhost",
        ] {
            assert!(!super::valid_sender(bad), "{bad}");
        }
    }
}
