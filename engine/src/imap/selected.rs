//! The selected mailbox as one session sees it (message sequence numbers, flags, the last
//! modification sequence seen), and the commands that change it: SELECT/EXAMINE, the updates
//! other sessions and deliveries cause (EXISTS, EXPUNGE, FETCH FLAGS), STORE, COPY/MOVE,
//! EXPUNGE and CLOSE.

use std::collections::HashSet;

use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;
use crate::mailbox::{self, FlagChange, FlagOp, MailboxError};

pub(super) struct Selected {
    pub name: String,
    pub read_only: bool,
    /// UIDs in sequence-number order (ascending).
    pub uids: Vec<u32>,
    pub flags: Vec<Vec<String>>,
    /// Highest modification sequence this session has reported.
    pub modseq: u64,
}

impl Selected {
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.uids.binary_search(&uid).ok()
    }

    /// Indexes (0-based) of the messages a set names, ascending, each once. A sequence number
    /// beyond the mailbox is an error; UIDs that don't exist are skipped.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, String> {
        // Marks instead of a list per range: `1:*,1:*,…` costs one pass, not one copy each.
        let n = self.uids.len();
        let mut hit = vec![false; n];
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(x) => (*x, *x),
                Sequence::Range(x, y) => (*x, *y),
            };
            let (start, end) = if uid {
                let max = self.uids.last().copied().unwrap_or(0);
                let v = |s: SeqOrUid| match s {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => max,
                };
                let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
                (
                    self.uids.partition_point(|&u| u < lo),
                    self.uids.partition_point(|&u| u <= hi),
                )
            } else {
                let v = |s: SeqOrUid| match s {
                    SeqOrUid::Value(v) => v.get() as usize,
                    SeqOrUid::Asterisk => n,
                };
                let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
                if lo == 0 || hi > n {
                    return Err("Invalid messageset".into());
                }
                (lo - 1, hi)
            };
            if let Some(marks) = hit.get_mut(start..end) {
                if marks.iter().all(|m| *m) {
                    continue;
                }
                marks.fill(true);
            }
        }
        Ok(hit
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| i)
            .collect())
    }
}

/// A UID set written compactly: `1:3,7,9:10`.
pub(super) fn uid_set(uids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Parses a sequence set written by the client (`1:4,7,*`) against the UIDs in view.
fn parse_uid_set(text: &str, uids: &[u32]) -> Option<Vec<u32>> {
    let max = uids.last().copied().unwrap_or(0);
    let num = |s: &str| -> Option<u32> {
        if s == "*" {
            Some(max)
        } else {
            s.parse::<u32>().ok().filter(|&v| v > 0)
        }
    };
    let mut hit = vec![false; uids.len()];
    for part in text.split(',') {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let v = num(part)?;
                (v, v)
            }
        };
        let (lo, hi) = (a.min(b), a.max(b));
        let start = uids.partition_point(|&u| u < lo);
        let end = uids.partition_point(|&u| u <= hi);
        if let Some(marks) = hit.get_mut(start..end) {
            marks.fill(true);
        }
    }
    (!text.is_empty()).then(|| {
        uids.iter()
            .zip(&hit)
            .filter(|(_, h)| **h)
            .map(|(u, _)| *u)
            .collect()
    })
}

pub(super) fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

pub(super) fn flag_strings(flags: &[Flag<'_>]) -> Vec<String> {
    flags.iter().map(ToString::to_string).collect()
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn account_id(&self) -> u64 {
        self.account.as_ref().map_or(0, |a| a.id)
    }

    /// The messages a command names: their indexes and UIDs. Answers the command itself
    /// (and returns `None`) when nothing is selected, when `writes` meets a read-only mailbox,
    /// or when the set is invalid.
    pub(super) fn targets(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        uid: bool,
        writes: bool,
    ) -> Option<(Vec<usize>, Vec<u32>)> {
        let sel = self.selected.as_ref()?;
        if writes && sel.read_only {
            self.tagged(tag, "NO", "Mailbox is read-only");
            return None;
        }
        match sel.resolve(set, uid) {
            Ok(idx) => {
                let uids = idx.iter().map(|&i| sel.uids[i]).collect();
                Some((idx, uids))
            }
            Err(e) => {
                self.tagged(tag, "BAD", &e);
                None
            }
        }
    }

    /// A store read, done in place: reads don't wait for the disk the way commits do.
    pub(super) fn read<R>(
        &self,
        f: impl FnOnce(&wispd_store::Store, &crate::mailbox::Changes) -> R,
    ) -> std::io::Result<R> {
        Ok(f(&self.server.store, &self.server.changes))
    }

    /// Runs a store operation off the async workers (writes fsync).
    pub(super) async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&wispd_store::Store, &crate::mailbox::Changes) -> R + Send + 'static,
    ) -> std::io::Result<R> {
        let store = self.server.store.clone();
        let changes = self.server.changes.clone();
        tokio::task::spawn_blocking(move || f(&store, &changes))
            .await
            .map_err(std::io::Error::other)
    }

    pub(super) async fn select(
        &mut self,
        tag: &str,
        name: &str,
        read_only: bool,
    ) -> std::io::Result<()> {
        self.selected = None;
        self.synced_version = self.server.changes.version();
        let account = self.account_id();
        let owned = name.to_string();
        let snap = self.read(move |store, _| mailbox::snapshot(store, account, &owned))?;
        let (mb, entries) = match snap {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.tagged(tag, "NO", "[NONEXISTENT] Mailbox doesn't exist");
                return Ok(());
            }
            Err(e) => {
                tracing::error!(error = %e, "select failed");
                self.tagged(tag, "NO", "[SERVERBUG] Internal error");
                return Ok(());
            }
        };
        let first_unseen = entries
            .iter()
            .position(|e| !e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")));
        self.line("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
        if read_only {
            self.line("* OK [PERMANENTFLAGS ()] Read-only mailbox");
        } else {
            self.line("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted");
        }
        self.line(&format!("* {} EXISTS", entries.len()));
        self.line("* 0 RECENT");
        if let Some(i) = first_unseen {
            self.line(&format!("* OK [UNSEEN {}] First unseen", i + 1));
        }
        self.line(&format!("* OK [UIDVALIDITY {}] UIDs valid", mb.uidvalidity));
        self.line(&format!("* OK [UIDNEXT {}] Predicted next UID", mb.uidnext));
        if self.condstore {
            self.line(&format!(
                "* OK [HIGHESTMODSEQ {}] Highest",
                mb.highest_modseq
            ));
        }
        self.selected = Some(Selected {
            name: mb.name.clone(),
            read_only,
            uids: entries.iter().map(|e| e.uid).collect(),
            flags: entries.into_iter().map(|e| e.flags).collect(),
            modseq: mb.highest_modseq,
        });
        let mode = if read_only {
            "[READ-ONLY] EXAMINE"
        } else {
            "[READ-WRITE] SELECT"
        };
        self.tagged(tag, "OK", &format!("{mode} completed"));
        Ok(())
    }

    /// Reports what changed in the selected mailbox since this session last looked. With
    /// `expunges` false, removed messages stay in view (their sequence numbers must not shift).
    pub(super) async fn sync(&mut self, expunges: bool) -> std::io::Result<()> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let condstore = self.condstore;
        // Nothing committed anywhere since the last look: nothing to report.
        let version = self.server.changes.version();
        if version == self.synced_version {
            return Ok(());
        }
        let account = self.account_id();
        let name = sel.name.clone();
        let seen = sel.modseq;
        let current = self.read(move |store, _| mailbox::mailbox(store, account, &name))?;
        let Ok(Some(mb)) = current else { return Ok(()) };
        if mb.highest_modseq == seen {
            self.synced_version = version;
            return Ok(());
        }
        let name = mb.name.clone();
        let snap = self.read(move |store, _| mailbox::snapshot(store, account, &name))?;
        let Ok(Some((mb, entries))) = snap else {
            return Ok(());
        };
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        let present: HashSet<u32> = entries.iter().map(|e| e.uid).collect();
        let mut lines = Vec::new();
        let mut pending_expunge = false;
        if expunges {
            for i in (0..sel.uids.len()).rev() {
                if !present.contains(&sel.uids[i]) {
                    lines.push(format!("* {} EXPUNGE", i + 1));
                    sel.uids.remove(i);
                    sel.flags.remove(i);
                }
            }
        } else {
            pending_expunge = sel.uids.iter().any(|u| !present.contains(u));
        }
        let last = sel.uids.last().copied().unwrap_or(0);
        let before = sel.uids.len();
        for e in &entries {
            if e.uid > last {
                sel.uids.push(e.uid);
                sel.flags.push(e.flags.clone());
            }
        }
        if sel.uids.len() != before {
            lines.push(format!("* {} EXISTS", sel.uids.len()));
        }
        for e in entries.iter().filter(|e| e.modseq > seen && e.uid <= last) {
            if let Some(i) = sel.index_of(e.uid)
                && sel.flags[i] != e.flags
            {
                sel.flags[i] = e.flags.clone();
                let m = if condstore {
                    format!(" MODSEQ ({})", e.modseq)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "* {} FETCH (UID {} FLAGS {}{m})",
                    i + 1,
                    e.uid,
                    flag_list(&e.flags)
                ));
            }
        }
        if !pending_expunge {
            sel.modseq = mb.highest_modseq;
            self.synced_version = version;
        }
        for l in lines {
            self.line(&l);
        }
        Ok(())
    }

    pub(super) async fn store(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> std::io::Result<()> {
        let Some((idx, uids)) = self.targets(tag, set, uid, true) else {
            return Ok(());
        };
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let op = match kind {
            StoreType::Replace => FlagOp::Replace,
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
        };
        let flags = flag_strings(flags);
        let (account, name) = (self.account_id(), sel.name.clone());
        let unchanged_since = self.modifiers.unchanged_since;
        let all = uids.clone();
        let result = self
            .blocking(move |store, ch| {
                mailbox::set_flags(
                    store,
                    ch,
                    account,
                    &name,
                    &uids,
                    FlagChange {
                        op,
                        flags: &flags,
                        unchanged_since,
                    },
                )
            })
            .await?;
        let (changed, modified) = match result {
            Ok(c) => c,
            Err(e) => {
                self.mailbox_error(tag, &e);
                return Ok(());
            }
        };
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        for e in &changed {
            if let Some(i) = sel.index_of(e.uid) {
                sel.flags[i] = e.flags.clone();
            }
        }
        let name = sel.name.clone();
        // CONDSTORE: the responses carry each message's modification sequence.
        let modseqs: std::collections::HashMap<u32, u64> = if self.condstore {
            self.read(move |s, _| mailbox::entries_for(s, account, &name, &all))?
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.uid, e.modseq))
                .collect()
        } else {
            Default::default()
        };
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        // Answered for every message in the set (RFC 3501), or with .SILENT only for those
        // whose flags were changed meanwhile by someone else (RFC 7162 §3.2) — skipped here.
        let modified_set: HashSet<u32> = modified.iter().copied().collect();
        let lines: Vec<String> = idx
            .iter()
            .filter(|&&i| {
                matches!(response, StoreResponse::Answer) && !modified_set.contains(&sel.uids[i])
            })
            .map(|&i| {
                let u = if uid {
                    format!(" UID {}", sel.uids[i])
                } else {
                    String::new()
                };
                let m = modseqs
                    .get(&sel.uids[i])
                    .map(|m| format!(" MODSEQ ({m})"))
                    .unwrap_or_default();
                format!(
                    "* {} FETCH (FLAGS {}{u}{m})",
                    i + 1,
                    flag_list(&sel.flags[i])
                )
            })
            .collect();
        let failed: Vec<u32> = if uid {
            modified.clone()
        } else {
            modified
                .iter()
                .filter_map(|u| sel.index_of(*u).map(|i| i as u32 + 1))
                .collect()
        };
        for l in lines {
            self.line(&l);
        }
        if failed.is_empty() {
            self.tagged(tag, "OK", "Store completed");
        } else {
            self.tagged(
                tag,
                "OK",
                &format!("[MODIFIED {}] Conditional STORE failed", uid_set(&failed)),
            );
        }
        Ok(())
    }

    pub(super) async fn copy(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        to: &str,
        uid: bool,
        remove: bool,
    ) -> std::io::Result<()> {
        let Some((_, uids)) = self.targets(tag, set, uid, remove) else {
            return Ok(());
        };
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let (account, from, to_owned) = (self.account_id(), sel.name.clone(), to.to_string());
        let result = self
            .blocking(move |store, ch| {
                mailbox::copy(store, ch, account, &from, &uids, &to_owned, remove)
            })
            .await?;
        let copied = match result {
            Ok(c) => c,
            Err(MailboxError::NoSuchMailbox(_)) => {
                self.tagged(tag, "NO", "[TRYCREATE] Mailbox doesn't exist");
                return Ok(());
            }
            Err(e) => {
                self.mailbox_error(tag, &e);
                return Ok(());
            }
        };
        let verb = if remove { "Move" } else { "Copy" };
        if copied.pairs.is_empty() {
            self.tagged(tag, "OK", &format!("{verb} completed (no messages)"));
            return Ok(());
        }
        let src: Vec<u32> = copied.pairs.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = copied.pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "COPYUID {} {} {}",
            copied.uidvalidity,
            uid_set(&src),
            uid_set(&dst)
        );
        if remove {
            self.line(&format!("* OK [{code}] Moved"));
            self.sync(true).await?;
            self.tagged(tag, "OK", &format!("{verb} completed"));
        } else {
            self.tagged(tag, "OK", &format!("[{code}] {verb} completed"));
        }
        Ok(())
    }

    pub(super) async fn expunge(
        &mut self,
        tag: &str,
        only: Option<Vec<u32>>,
    ) -> std::io::Result<()> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        if sel.read_only {
            self.tagged(tag, "NO", "Mailbox is read-only");
            return Ok(());
        }
        let (account, name) = (self.account_id(), sel.name.clone());
        let result = self
            .blocking(move |store, ch| mailbox::expunge(store, ch, account, &name, only.as_deref()))
            .await?;
        if let Err(e) = result {
            self.mailbox_error(tag, &e);
            return Ok(());
        }
        self.sync(true).await?;
        self.tagged(tag, "OK", "Expunge completed");
        Ok(())
    }

    pub(super) async fn uid_expunge(&mut self, tag: &str, set: &str) -> std::io::Result<()> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        match parse_uid_set(set, &sel.uids) {
            Some(uids) => self.expunge(tag, Some(uids)).await,
            None => {
                self.tagged(tag, "BAD", "Invalid UID set");
                Ok(())
            }
        }
    }

    /// CLOSE: expunges silently (unless read-only) and leaves the selected state.
    pub(super) async fn close_mailbox(&mut self) {
        if let Some(sel) = self.selected.take()
            && !sel.read_only
        {
            let (account, name) = (self.account_id(), sel.name.clone());
            let _ = self
                .blocking(move |store, ch| mailbox::expunge(store, ch, account, &name, None))
                .await;
        }
    }

    pub(super) fn mailbox_error(&mut self, tag: &str, e: &MailboxError) {
        match e {
            MailboxError::NoSuchMailbox(_) => {
                self.tagged(tag, "NO", "[NONEXISTENT] Mailbox doesn't exist")
            }
            MailboxError::Exists(_) => {
                self.tagged(tag, "NO", "[ALREADYEXISTS] Mailbox already exists")
            }
            MailboxError::Invalid(m) => self.tagged(tag, "NO", &format!("[CANNOT] {m}")),
            MailboxError::OverQuota => self.tagged(tag, "NO", "[OVERQUOTA] Quota exceeded"),
            MailboxError::Store(err) => {
                tracing::error!(error = %err, "mailbox operation failed");
                self.tagged(tag, "NO", "[SERVERBUG] Internal error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_compress_and_parse() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(parse_uid_set("2:*,1", &[1, 3, 9]), Some(vec![1, 3, 9]));
        assert_eq!(parse_uid_set("4:2", &[1, 3, 9]), Some(vec![3]));
        assert_eq!(parse_uid_set("x", &[1]), None);
    }
}
