//! Commands on mailboxes as a whole: LIST/LSUB, CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
//! STATUS, APPEND and the QUOTA commands. Hierarchy delimiter `/`, one personal namespace.

use imap_codec::imap_types::mailbox::ListMailbox;
use imap_codec::imap_types::status::StatusDataItemName;
use tokio::io::{AsyncRead, AsyncWrite};

use std::collections::BTreeSet;

use super::args::{ListCommand, StatusItem};
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
    /// LIST/LSUB as RFC 3501 has them.
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
        let cmd = ListCommand {
            reference: reference.to_string(),
            patterns: vec![pat.to_string()],
            subscribed: lsub,
            ..ListCommand::default()
        };
        self.list_extended(tag, &cmd, lsub).await
    }

    /// LIST with the RFC 5258 selection and return options (LSUB is `LIST (SUBSCRIBED)` with
    /// its own response name and `\Noselect` for subscribed names that don't exist).
    pub(super) async fn list_extended(
        &mut self,
        tag: &str,
        cmd: &ListCommand,
        lsub: bool,
    ) -> std::io::Result<()> {
        let verb = if lsub { "LSUB" } else { "LIST" };
        if !lsub && cmd.patterns.len() == 1 && cmd.patterns[0].is_empty() && !cmd.extended {
            self.line("* LIST (\\Noselect) \"/\" \"\"");
            self.tagged(tag, "OK", "LIST completed");
            return Ok(());
        }
        let account = self.account_id();
        let read = self.read(move |store, _| {
            Ok::<_, wispd_store::StoreError>((
                mailbox::mailboxes(store, account)?,
                mailbox::subscriptions(store, account)?,
            ))
        })?;
        let (all, subs) = match read {
            Ok(a) => a,
            Err(e) => {
                self.mailbox_error(tag, &MailboxError::Store(e));
                return Ok(());
            }
        };
        let names: BTreeSet<String> = all.iter().map(|m| m.name.clone()).collect();
        let subscribed: BTreeSet<String> = subs
            .into_iter()
            .chain(all.iter().filter(|m| m.subscribed).map(|m| m.name.clone()))
            .collect();
        // Parents that exist only as part of a child's name show as \Noselect.
        let mut candidates: BTreeSet<String> = names.clone();
        if cmd.subscribed {
            candidates.extend(subscribed.iter().cloned());
        }
        for n in candidates.clone() {
            let mut p = n.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                candidates.insert(parent.to_string());
                p = parent;
            }
        }
        let full: Vec<String> = cmd
            .patterns
            .iter()
            .map(|p| format!("{}{p}", cmd.reference))
            .collect();
        let matching = |n: &str| full.iter().any(|p| list_matches(p, n));
        let under = |parent: &str, set: &BTreeSet<String>| {
            set.iter().any(|c| {
                c.len() > parent.len() + 1
                    && c.starts_with(parent)
                    && c.as_bytes()[parent.len()] == b'/'
            })
        };
        let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
        for name in candidates.iter().filter(|n| matching(n)) {
            let mb = all.iter().find(|m| &m.name == name);
            let is_sub = subscribed.contains(name);
            let selected_by_opts = (!cmd.subscribed || is_sub)
                && (!cmd.special_use || mb.is_some_and(|m| m.special_use.is_some()));
            // RECURSIVEMATCH: a parent that isn't selected itself but has a selected child
            let childinfo =
                !selected_by_opts && cmd.recursive && cmd.subscribed && under(name, &subscribed);
            if !selected_by_opts && !childinfo {
                continue;
            }
            if lsub && !is_sub {
                continue;
            }
            let children = under(name, &names);
            let mut attrs: Vec<&str> = Vec::new();
            match mb {
                None if lsub || children => attrs.push("\\Noselect"),
                None if cmd.extended => attrs.push("\\NonExistent"),
                None => attrs.push("\\Noselect"),
                Some(_) => {}
            }
            attrs.push(if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
            if let Some(su) = mb.and_then(|m| m.special_use.as_deref()) {
                attrs.push(su);
            }
            if !lsub && (cmd.subscribed || cmd.return_subscribed) && is_sub {
                attrs.push("\\Subscribed");
            }
            let mut line = format!("* {verb} ({}) \"/\" ", attrs.join(" ")).into_bytes();
            wire::mailbox(&mut line, name);
            if childinfo {
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            let status = mb.is_some() && cmd.status.is_some();
            lines.push((if status { name.clone() } else { String::new() }, line));
        }
        for (status_of, l) in lines {
            self.out.extend_from_slice(&l);
            self.out.extend_from_slice(b"\r\n");
            if let Some(items) = &cmd.status
                && !status_of.is_empty()
            {
                // LIST-STATUS (RFC 5819): a failed STATUS is left out, not an error
                if let Ok(Some(line)) = self.status_line(&status_of, items) {
                    self.out.extend_from_slice(&line);
                }
            }
            self.maybe_flush().await?;
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
        let mut wanted: Vec<StatusItem> = Vec::new();
        if !self.modifiers.status_size_only {
            for item in items {
                wanted.push(match item {
                    StatusDataItemName::Messages => StatusItem::Messages,
                    StatusDataItemName::Recent => StatusItem::Recent,
                    StatusDataItemName::UidNext => StatusItem::UidNext,
                    StatusDataItemName::UidValidity => StatusItem::UidValidity,
                    StatusDataItemName::Unseen => StatusItem::Unseen,
                    StatusDataItemName::Deleted => StatusItem::Deleted,
                    StatusDataItemName::HighestModSeq => StatusItem::HighestModSeq,
                    _ => continue,
                });
            }
        }
        if self.modifiers.status_size {
            wanted.push(StatusItem::Size);
        }
        match self.status_line(name, &wanted) {
            Ok(Some(line)) => {
                self.out.extend_from_slice(&line);
                self.tagged(tag, "OK", "Status completed");
            }
            Ok(None) => self.tagged(tag, "NO", "[NONEXISTENT] Mailbox doesn't exist"),
            Err(_) => self.tagged(tag, "NO", "[SERVERBUG] Internal error"),
        }
    }

    /// `* STATUS name (…)\r\n`, or `None` if the mailbox doesn't exist.
    pub(super) fn status_line(
        &self,
        name: &str,
        items: &[StatusItem],
    ) -> Result<Option<Vec<u8>>, wispd_store::StoreError> {
        let (account, owned) = (self.account_id(), name.to_string());
        // (reads in place never fail as I/O)
        let Ok(snap) = self.read(move |s, _| mailbox::snapshot(s, account, &owned)) else {
            return Ok(None);
        };
        let snap = snap?;
        let Some((mb, entries)) = snap else {
            return Ok(None);
        };
        let count = |flag: &str| {
            entries
                .iter()
                .filter(|e| e.flags.iter().any(|f| f.eq_ignore_ascii_case(flag)))
                .count()
        };
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusItem::Messages => format!("MESSAGES {}", entries.len()),
                StatusItem::Recent => {
                    // not yet announced to any session, and those this session was given
                    let mark =
                        self.server
                            .recent
                            .peek(account, &mb.name, mb.uidvalidity, mb.recent_uid);
                    let mut n = entries.iter().filter(|e| e.uid > mark).count();
                    if let Some(sel) = self.selected.as_ref().filter(|s| s.name == mb.name) {
                        n += sel.recent.len();
                    }
                    format!("RECENT {n}")
                }
                StatusItem::UidNext => format!("UIDNEXT {}", mb.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", mb.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {}", entries.len() - count("\\Seen")),
                StatusItem::Deleted => format!("DELETED {}", count("\\Deleted")),
                StatusItem::Size => format!("SIZE {}", entries.iter().map(|e| e.size).sum::<u64>()),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", mb.highest_modseq),
            });
        }
        let mut line = b"* STATUS ".to_vec();
        wire::mailbox(&mut line, &mb.name);
        line.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(Some(line))
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
            Ok(Ok((validity, uid))) => {
                // appending to the selected mailbox: EXISTS (and RECENT) before the OK
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.name == mailbox::canonical(name))
                {
                    let _ = self.sync(true).await;
                }
                self.tagged(
                    tag,
                    "OK",
                    &format!("[APPENDUID {validity} {uid}] Append completed"),
                );
            }
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
