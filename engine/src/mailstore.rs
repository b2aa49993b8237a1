//! The read side of the mail store: what an account's mailboxes hold.

use wispd_store::schema::MAIL_MESSAGE_META;
use wispd_store::schema::{
    MAIL_ACCOUNTS, MAIL_ADDRESSES, MAIL_ENTRIES, MAIL_MAILBOXES, MAIL_MESSAGES, MailEntry,
};
use wispd_store::{Store, StoreError, Write};

use crate::address;

/// One message in a mailbox, with the header fields people recognise it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub mailbox: String,
    pub entry: MailEntry,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// The whole message, when asked for.
    pub raw: Option<Vec<u8>>,
}

/// Every message of the account `email`, mailbox by mailbox in UID order; `None` when there is
/// no such account. `with_raw` includes each message's bytes.
pub fn list(store: &Store, email: &str, with_raw: bool) -> Result<Option<Vec<Listed>>, StoreError> {
    let Some((l, d)) = address::address(email) else {
        return Ok(None);
    };
    let key = format!("{l}@{d}");
    store.read(|r| {
        let Some(id) = r.get(&MAIL_ADDRESSES, key.as_str())? else {
            return Ok(None);
        };
        if r.get(&MAIL_ACCOUNTS, id)?.is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for mb in r.values_in(&MAIL_MAILBOXES, (id, "")..(id + 1, ""))? {
            let name = mb.name.as_str();
            for entry in r.values_in(&MAIL_ENTRIES, (id, name, 0u32)..=(id, name, u32::MAX))? {
                let raw = r
                    .get_raw(&MAIL_MESSAGES, entry.message_id)?
                    .unwrap_or_default();
                let head = header_block(&raw);
                out.push(Listed {
                    mailbox: mb.name.clone(),
                    message_id: header(head, "message-id"),
                    subject: header(head, "subject"),
                    raw: with_raw.then(|| raw.clone()),
                    entry,
                });
            }
        }
        Ok(Some(out))
    })
}

/// Drops one mailbox entry's reference to a message; the message goes with its last one.
pub(crate) fn release(w: &Write<'_>, message_id: u64) -> Result<(), StoreError> {
    match w.get(&MAIL_MESSAGE_META, message_id)? {
        Some(mut meta) if meta.refs > 1 => {
            meta.refs -= 1;
            w.put(&MAIL_MESSAGE_META, message_id, &meta)?;
        }
        _ => {
            w.remove(&MAIL_MESSAGE_META, message_id)?;
            w.remove_raw(&MAIL_MESSAGES, message_id)?;
        }
    }
    Ok(())
}

fn header_block(raw: &[u8]) -> &[u8] {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw, |p| &raw[..p + 2])
}

/// The first `name:` field of a header block, unfolded.
fn header(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let mut value: Option<String> = None;
    for line in text.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_string());
        }
    }
    value
}

#[cfg(test)]
mod tests {
    #[test]
    fn folded_headers_are_unfolded_and_the_body_is_not_searched() {
        let raw = b"Subject: one\r\n two\r\nMessage-ID: <a@b>\r\n\r\nSubject: body\r\n";
        let head = super::header_block(raw);
        assert_eq!(super::header(head, "subject").as_deref(), Some("one two"));
        assert_eq!(super::header(head, "MESSAGE-ID").as_deref(), Some("<a@b>"));
        assert_eq!(super::header(head, "from"), None);
    }
}
