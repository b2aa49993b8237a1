//! MAIL FROM: opens a transaction.

use smtp_proto::{MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, MailFrom};

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
        if let Some(param) = unadvertised(&from) {
            return self.reply(Reply::new(
                555,
                "5.5.4",
                format!("MAIL parameter {param} is not supported"),
            ));
        }
        let sender = from.address.trim().to_string();
        if !sender.is_empty() && !valid_sender(&sender) {
            return self.reply(Reply::new(501, "5.1.7", "Bad sender address syntax"));
        }
        if !sender.is_ascii() && from.flags & MAIL_SMTPUTF8 == 0 {
            return self.reply(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII sender address needs the SMTPUTF8 parameter",
            ));
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
        let now = wispd_store::unix_now();
        // the MX's per-network message rate (a submitting account's group is checked per
        // recipient: a message only for local accounts may not count)
        if let Some(r) = self.server.ratelimit.clone()
            && self.account.is_none()
            && self.port == Port::Mx
            && let Err(limited) = r.inbound_message(self.peer.ip(), now)
        {
            tracing::info!(reason = %limited.0, "message refused: over the network's rate");
            Reply::new(421, "4.7.0", limited.0).write_to(&mut self.out);
            return Flow::Close;
        }
        self.tx = Some(Transaction {
            id: new_id(),
            from: sender,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            rcpts: Vec::new(),
            accounts: Vec::new(),
            emails: Vec::new(),
            envelope_to: Vec::new(),
            remote: Vec::new(),
            chunking: false,
            deadline: None,
            list: None,
        });
        self.reply(Reply::new(250, "2.1.0", "Ok"))
    }
}

/// The first MAIL parameter that EHLO did not advertise (only SIZE, BODY=7BIT/8BITMIME,
/// SMTPUTF8 and AUTH= are offered), by name.
fn unadvertised(from: &MailFrom<String>) -> Option<&'static str> {
    let offered = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
    let extra = from.flags & !offered;
    if extra != 0 {
        return Some(match extra.trailing_zeros() {
            2 => "BODY=BINARYMIME",
            3 | 4 => "RET",
            6 => "REQUIRETLS",
            7 => "CONPERM",
            _ => "BY",
        });
    }
    if from.env_id.is_some() {
        return Some("ENVID");
    }
    if from.trans_id.is_some() || from.mtrk.is_some() {
        return Some("MTRK");
    }
    if from.solicit.is_some() {
        return Some("SOLICIT");
    }
    if from.by != 0 {
        return Some("BY");
    }
    if from.hold_for != 0 || from.hold_until != 0 {
        return Some("HOLDFOR");
    }
    if from.mt_priority != 0 {
        return Some("MT-PRIORITY");
    }
    None
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

pub(super) use crate::address::owns;

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
