//! Commands on mailboxes as a whole: LIST/LSUB, CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
//! STATUS, APPEND and the QUOTA commands. Hierarchy delimiter `/`, one personal namespace.

use imap_codec::imap_types::mailbox::ListMailbox;
use imap_codec::imap_types::status::StatusDataItemName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;
use super::wire;
use crate::mailbox::{self, MailboxError};

pub(super) fn pattern(m: &ListMailbox<'_>) -> String {
    match m {
        ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    }
}

/// IMAP LIST matching: `*` matches anything, `%` anything but the delimiter. Dynamic
/// programming over (pattern, name) positions: linear in each, whatever the wildcards.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // reach[j]: the pattern so far can match name[..j]
    let mut reach = vec![false; name.len() + 1];
    reach[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        match p {
            b'*' | b'%' => {
                let mut open = false;
                for j in 0..=name.len() {
                    if reach[j] {
                        open = true;
                    }
                    next[j] = open;
                    if p == b'%' && name.get(j) == Some(&b'/') {
                        open = false;
                    }
                }
            }
            c => {
                for j in 0..name.len() {
                    next[j + 1] = reach[j] && name[j] == c;
                }
            }
        }
        reach = next;
        if !reach.iter().any(|r| *r) {
            return false;
        }
    }
    reach[name.len()]
}

fn list_matches(pattern: &str, name: &str) -> bool {
    // INBOX is case-insensitive, also as the start of a pattern.
    let p = mailbox::canonical(pattern);
    let p = if p
        .as_bytes()
        .get(..5)
        .is_some_and(|h| h.eq_ignore_ascii_case(b"INBOX"))
    {
        format!("INBOX{}", &p[5..])
    } else {
        p
    };
    matches(p.as_bytes(), name.as_bytes())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn list(
        &mut self,
        tag: &str,
        reference: &str,
        pat: &str,
        lsub: bool,
    ) -> std::io::Result<()> {
        let verb = if lsub { "LSUB" } else { "LIST" };
        if pat.is_empty() {
            self.line(&format!("* {verb} (\\Noselect) \"/\" \"\""));
            self.tagged(tag, "OK", &format!("{verb} completed"));
            return Ok(());
        }
        let full = if reference.is_empty() {
            pat.to_string()
        } else {
            format!("{reference}{pat}")
        };
        let account = self.account_id();
        let all = match self.read(move |store, _| mailbox::mailboxes(store, account))? {
            Ok(a) => a,
            Err(e) => {
                self.mailbox_error(tag, &MailboxError::Store(e));
                return Ok(());
            }
        };
        let names: std::collections::BTreeSet<String> =
            all.iter().map(|m| m.name.clone()).collect();
        // Parents that exist only as part of a child's name show as \Noselect.
        let mut candidates: std::collections::BTreeSet<String> = names.clone();
        for n in &names {
            let mut p = n.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                candidates.insert(parent.to_string());
                p = parent;
            }
        }
        let mut out = Vec::new();
        for name in candidates.iter().filter(|n| list_matches(&full, n)) {
            let mb = all.iter().find(|m| &m.name == name);
            if lsub && !mb.is_some_and(|m| m.subscribed) {
                continue;
            }
            let children = names.iter().any(|c| {
                c.len() > name.len() + 1
                    && c.starts_with(name.as_str())
                    && c.as_bytes()[name.len()] == b'/'
            });
            let mut attrs = vec![
                if children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                }
                .to_string(),
            ];
            match mb {
                None => attrs.insert(0, "\\Noselect".into()),
                Some(m) => {
                    if let Some(su) = &m.special_use {
                        attrs.push(su.clone());
                    }
                }
            }
            let mut line = format!("* {verb} ({}) \"/\" ", attrs.join(" ")).into_bytes();
            wire::mailbox(&mut line, name);
            out.push(line);
        }
        for l in out {
            self.out.extend_from_slice(&l);
            self.out.extend_from_slice(b"\r\n");
        }
        self.tagged(tag, "OK", &format!("{verb} completed"));
        Ok(())
    }

    pub(super) async fn create(&mut self, tag: &str, name: &str) {
        let (account, owned) = (self.account_id(), name.to_string());
        let result = self
            .blocking(move |s, ch| mailbox::create(s, ch, account, &owned))
            .await;
        self.finish(tag, result, "Create completed");
    }

    pub(super) async fn delete(&mut self, tag: &str, name: &str) {
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.selected = None;
        }
        let (account, owned) = (self.account_id(), name.to_string());
        let result = self
            .blocking(move |s, ch| mailbox::delete(s, ch, account, &owned))
            .await;
        self.finish(tag, result, "Delete completed");
    }

    pub(super) async fn rename(&mut self, tag: &str, from: &str, to: &str) {
        let (account, f, t) = (self.account_id(), from.to_string(), to.to_string());
        let result = self
            .blocking(move |s, ch| mailbox::rename(s, ch, account, &f, &t))
            .await;
        self.finish(tag, result, "Rename completed");
    }

    pub(super) async fn subscribe(&mut self, tag: &str, name: &str, on: bool) {
        let (account, owned) = (self.account_id(), name.to_string());
        let verb = if on { "Subscribe" } else { "Unsubscribe" };
        let result = self
            .blocking(move |s, ch| mailbox::subscribe(s, ch, account, &owned, on))
            .await;
        self.finish(tag, result, &format!("{verb} completed"));
    }

    /// The tagged reply for a mailbox operation with no other output.
    fn finish(&mut self, tag: &str, result: std::io::Result<Result<(), MailboxError>>, ok: &str) {
        match result {
            Ok(Ok(())) => self.tagged(tag, "OK", ok),
            Ok(Err(e)) => self.mailbox_error(tag, &e),
            Err(_) => self.tagged(tag, "NO", "[SERVERBUG] Internal error"),
        }
    }

    pub(super) async fn status(&mut self, tag: &str, name: &str, items: &[StatusDataItemName]) {
        let (account, owned) = (self.account_id(), name.to_string());
        let snap = match self.read(move |s, _| mailbox::snapshot(s, account, &owned)) {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                self.tagged(tag, "NO", "[NONEXISTENT] Mailbox doesn't exist");
                return;
            }
            _ => {
                self.tagged(tag, "NO", "[SERVERBUG] Internal error");
                return;
            }
        };
        let (mb, entries) = snap;
        let mut parts = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", entries.len())),
                StatusDataItemName::Recent => parts.push("RECENT 0".into()),
                StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", mb.uidnext)),
                StatusDataItemName::UidValidity => {
                    parts.push(format!("UIDVALIDITY {}", mb.uidvalidity))
                }
                StatusDataItemName::Unseen => parts.push(format!(
                    "UNSEEN {}",
                    entries
                        .iter()
                        .filter(|e| !e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                        .count()
                )),
                StatusDataItemName::Deleted => parts.push(format!(
                    "DELETED {}",
                    entries
                        .iter()
                        .filter(|e| e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
                        .count()
                )),
                StatusDataItemName::HighestModSeq => {
                    parts.push(format!("HIGHESTMODSEQ {}", mb.highest_modseq))
                }
                _ => {}
            }
        }
        let mut line = b"* STATUS ".to_vec();
        wire::mailbox(&mut line, &mb.name);
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        self.out.extend_from_slice(&line);
        self.tagged(tag, "OK", "Status completed");
    }

    pub(super) async fn append(
        &mut self,
        tag: &str,
        name: &str,
        flags: Vec<String>,
        date: Option<i64>,
        message: &[u8],
    ) {
        let date = date.unwrap_or_else(wispd_store::unix_now);
        let flags: Vec<String> = flags
            .into_iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
        let (account, owned, bytes) = (self.account_id(), name.to_string(), message.to_vec());
        match self
            .blocking(move |s, ch| mailbox::append(s, ch, account, &owned, flags, date, &bytes))
            .await
        {
            Ok(Ok((validity, uid))) => self.tagged(
                tag,
                "OK",
                &format!("[APPENDUID {validity} {uid}] Append completed"),
            ),
            Ok(Err(MailboxError::NoSuchMailbox(_))) => {
                self.tagged(tag, "NO", "[TRYCREATE] Mailbox doesn't exist")
            }
            Ok(Err(e)) => self.mailbox_error(tag, &e),
            Err(_) => self.tagged(tag, "NO", "[SERVERBUG] Internal error"),
        }
    }

    async fn quota_resources(&mut self) -> Option<String> {
        let account = self.account_id();
        let fresh = self
            .read(move |s, _| mailbox::account(s, account))
            .ok()?
            .ok()??;
        Some(if fresh.quota_mb > 0 {
            format!(
                "* QUOTA \"\" (STORAGE {} {})",
                fresh.used_bytes.div_ceil(1024),
                fresh.quota_mb * 1024
            )
        } else {
            "* QUOTA \"\" ()".to_string()
        })
    }

    pub(super) async fn quota_root(&mut self, tag: &str, name: &str) {
        let mut line = b"* QUOTAROOT ".to_vec();
        wire::mailbox(&mut line, name);
        line.extend_from_slice(b" \"\"\r\n");
        match self.quota_resources().await {
            Some(q) => {
                self.out.extend_from_slice(&line);
                self.line(&q);
                self.tagged(tag, "OK", "Getquotaroot completed");
            }
            None => self.tagged(tag, "NO", "[SERVERBUG] Internal error"),
        }
    }

    pub(super) async fn quota(&mut self, tag: &str, root: &str) {
        if !root.is_empty() {
            self.tagged(tag, "NO", "[NONEXISTENT] No such quota root");
            return;
        }
        match self.quota_resources().await {
            Some(q) => {
                self.line(&q);
                self.tagged(tag, "OK", "Getquota completed");
            }
            None => self.tagged(tag, "NO", "[SERVERBUG] Internal error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(list_matches("*", "a/b/c"));
        assert!(list_matches("%", "Sent"));
        assert!(!list_matches("%", "a/b"));
        assert!(list_matches("a/%", "a/b"));
        assert!(list_matches("inbox", "INBOX"));
        assert!(list_matches("inbox/%", "INBOX/x"));
        assert!(
            list_matches("abcdé*", "abcdé/x"),
            "non-ASCII right after the INBOX check"
        );
        let many = format!("{}x", "*%".repeat(40));
        assert!(
            !list_matches(&many, &"a/".repeat(200)),
            "fast however many wildcards"
        );
        assert!(!list_matches("Sent", "Sent/x"));
    }
}
