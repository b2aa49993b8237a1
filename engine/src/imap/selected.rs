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
    pub uidvalidity: u32,
    /// UIDs in sequence-number order (ascending).
    pub uids: Vec<u32>,
    pub flags: Vec<Vec<String>>,
    /// Highest modification sequence this session has reported.
    pub modseq: u64,
    /// UIDs that are `\Recent` in this session (RFC 3501 2.3.2).
    pub recent: HashSet<u32>,
    /// Whether `\Recent` shows at all (not after `ENABLE IMAP4rev2`, RFC 9051 removed it).
    pub show_recent: bool,
    /// Keywords announced to the client in FLAGS, in order of first use.
    pub keywords: Vec<String>,
    /// The saved search result `$` (SEARCHRES, RFC 5182), as UIDs, ascending.
    pub saved: Vec<u32>,
}

/// The system flags every mailbox has.
const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

impl Selected {
    /// The flags of message `i` as this session shows them (`\Recent` included).
    pub fn shown_flags(&self, i: usize) -> String {
        let mut flags = self.flags[i].clone();
        if self.show_recent && self.recent.contains(&self.uids[i]) {
            flags.push("\\Recent".into());
        }
        flag_list(&flags)
    }

    /// Adds keywords of `flags` not yet announced; true if there were any.
    pub fn learn_keywords(&mut self, flags: &[String]) -> bool {
        let mut new = false;
        for f in flags {
            if !f.starts_with('\\') && !self.keywords.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                self.keywords.push(f.clone());
                new = true;
            }
        }
        new
    }

    /// The untagged FLAGS and PERMANENTFLAGS lines for the flags known now.
    pub fn flag_lines(&self) -> [String; 2] {
        let mut all = SYSTEM_FLAGS.to_string();
        for k in &self.keywords {
            all.push(' ');
            all.push_str(k);
        }
        let permanent = if self.read_only {
            "* OK [PERMANENTFLAGS ()] Read-only mailbox".to_string()
        } else {
            format!("* OK [PERMANENTFLAGS ({all} \\*)] Flags permitted")
        };
        [format!("* FLAGS ({all})"), permanent]
    }

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

/// Inclusive ranges written as a sequence set: `1:3,7`.
pub(super) fn ranges_text(ranges: &[(u32, u32)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
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
        let qresync = self.modifiers.qresync.take();
        if qresync.is_some() && !self.qresync {
            self.tagged(tag, "BAD", "QRESYNC is not enabled");
            return Ok(());
        }
        // Selecting closes the mailbox selected before (RFC 7162 3.2.11, RFC 9051 7.1).
        if self.selected.take().is_some() {
            self.line("* OK [CLOSED] Previous mailbox is now closed");
        }
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
        let top = entries.last().map_or(0, |e| e.uid);
        let mark = self.recent_mark(&mb, read_only, top);
        let mut sel = Selected {
            name: mb.name.clone(),
            read_only,
            uidvalidity: mb.uidvalidity,
            uids: entries.iter().map(|e| e.uid).collect(),
            flags: Vec::with_capacity(entries.len()),
            modseq: mb.highest_modseq,
            recent: entries
                .iter()
                .map(|e| e.uid)
                .filter(|&u| u > mark)
                .collect(),
            show_recent: !self.rev2,
            keywords: Vec::new(),
            saved: Vec::new(),
        };
        for e in &entries {
            sel.learn_keywords(&e.flags);
        }
        sel.flags = entries.iter().map(|e| e.flags.clone()).collect();
        // RFC 3501 6.3.1 order: FLAGS, EXISTS, RECENT, then UNSEEN, PERMANENTFLAGS, UIDNEXT,
        // UIDVALIDITY (IMAP4rev2: no RECENT or UNSEEN, and a LIST of the mailbox).
        let [flags, permanent] = sel.flag_lines();
        self.line(&flags);
        self.line(&format!("* {} EXISTS", entries.len()));
        if !self.rev2 {
            self.line(&format!("* {} RECENT", sel.recent.len()));
            if let Some(i) = first_unseen {
                self.line(&format!("* OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        self.line(&permanent);
        self.line(&format!("* OK [UIDNEXT {}] Predicted next UID", mb.uidnext));
        self.line(&format!("* OK [UIDVALIDITY {}] UIDs valid", mb.uidvalidity));
        self.line(&format!(
            "* OK [HIGHESTMODSEQ {}] Highest",
            mb.highest_modseq
        ));
        if self.rev2 {
            let mut line = b"* LIST () \"/\" ".to_vec();
            super::wire::mailbox(&mut line, &mb.name);
            self.out.extend_from_slice(&line);
            self.out.extend_from_slice(b"\r\n");
        }
        self.selected = Some(sel);
        if let Some(q) = qresync
            && q.uidvalidity == mb.uidvalidity
        {
            self.resync(&q, &entries).await?;
        }
        let mode = if read_only {
            "[READ-ONLY] EXAMINE"
        } else {
            "[READ-WRITE] SELECT"
        };
        self.tagged(tag, "OK", &format!("{mode} completed"));
        Ok(())
    }

    /// The `\Recent` mark for a mailbox this session now sees up to UID `top`: a read-write
    /// session claims what is above the mark (and the claim is persisted in the background).
    fn recent_mark(&self, mb: &wispd_store::schema::Mailbox, read_only: bool, top: u32) -> u32 {
        let account = self.account_id();
        let recent = &self.server.recent;
        if read_only {
            return recent.peek(account, &mb.name, mb.uidvalidity, mb.recent_uid);
        }
        let prev = recent.claim(account, &mb.name, mb.uidvalidity, mb.recent_uid, top);
        if top > prev {
            let (store, name) = (self.server.store.clone(), mb.name.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = mailbox::persist_recent(&store, account, &name, top) {
                    tracing::warn!(error = %e, "could not persist the \\Recent mark");
                }
            });
        }
        prev
    }

    /// QRESYNC (RFC 7162 3.2.5): what the client missed since its modification sequence —
    /// `VANISHED (EARLIER)` for expunged UIDs it may know, then FETCH for changed messages.
    async fn resync(
        &mut self,
        q: &super::condstore::Qresync,
        entries: &[wispd_store::schema::MailEntry],
    ) -> std::io::Result<()> {
        let account = self.account_id();
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let name = sel.name.clone();
        let (since, known) = (q.modseq, q.known_uids.clone());
        let gone = self.read(move |s, _| {
            mailbox::vanished_since(s, account, &name, since, known.as_deref())
        })?;
        match gone {
            Ok(g) if !g.is_empty() => {
                self.line(&format!("* VANISHED (EARLIER) {}", ranges_text(&g)));
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "QRESYNC history read failed"),
        }
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let known = &q.known_uids;
        let mut lines = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let in_known = known
                .as_ref()
                .is_none_or(|k| super::condstore::in_ranges(k, e.uid));
            if e.modseq > since && in_known {
                lines.push(format!(
                    "* {} FETCH (UID {} FLAGS {} MODSEQ ({}))",
                    i + 1,
                    e.uid,
                    sel.shown_flags(i),
                    e.modseq
                ));
            }
        }
        for l in lines {
            self.line(&l);
            self.maybe_flush().await?;
        }
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
        if sel.uidvalidity != mb.uidvalidity {
            // replaced under the session (deleted and made again, or an import gave a mailbox
            // that never held mail the source's UIDVALIDITY): nothing of it maps onto the
            // UIDs this session knows; the next SELECT sees the new mailbox
            return Ok(());
        }
        let present: HashSet<u32> = entries.iter().map(|e| e.uid).collect();
        let mut lines = Vec::new();
        let mut pending_expunge = false;
        let qresync = self.qresync;
        if expunges {
            let mut vanished = Vec::new();
            for i in (0..sel.uids.len()).rev() {
                if !present.contains(&sel.uids[i]) {
                    if qresync {
                        vanished.push(sel.uids[i]);
                    } else {
                        lines.push(format!("* {} EXPUNGE", i + 1));
                    }
                    sel.recent.remove(&sel.uids[i]);
                    sel.uids.remove(i);
                    sel.flags.remove(i);
                }
            }
            if !vanished.is_empty() {
                vanished.reverse();
                lines.push(format!("* VANISHED {}", uid_set(&vanished)));
            }
        } else {
            pending_expunge = sel.uids.iter().any(|u| !present.contains(u));
        }
        let last = sel.uids.last().copied().unwrap_or(0);
        let before = sel.uids.len();
        let mut keywords_changed = false;
        for e in &entries {
            if e.uid > last {
                sel.uids.push(e.uid);
                keywords_changed |= sel.learn_keywords(&e.flags);
                sel.flags.push(e.flags.clone());
            }
        }
        let arrived = sel.uids.len() != before;
        let mut changed_flags = Vec::new();
        for e in entries.iter().filter(|e| e.modseq > seen && e.uid <= last) {
            if let Some(i) = sel.index_of(e.uid)
                && sel.flags[i] != e.flags
            {
                keywords_changed |= sel.learn_keywords(&e.flags);
                sel.flags[i] = e.flags.clone();
                changed_flags.push((i, e.modseq));
            }
        }
        if keywords_changed {
            lines.extend(sel.flag_lines());
        }
        if arrived {
            let top = sel.uids.last().copied().unwrap_or(0);
            let read_only = sel.read_only;
            let mark = self.recent_mark(&mb, read_only, top);
            let Some(sel) = self.selected.as_mut() else {
                return Ok(());
            };
            for &u in &sel.uids[before..] {
                if u > mark {
                    sel.recent.insert(u);
                }
            }
            lines.push(format!("* {} EXISTS", sel.uids.len()));
            if sel.show_recent {
                lines.push(format!("* {} RECENT", sel.recent.len()));
            }
        }
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        for (i, modseq) in changed_flags {
            let m = if condstore {
                format!(" MODSEQ ({modseq})")
            } else {
                String::new()
            };
            lines.push(format!(
                "* {} FETCH (UID {} FLAGS {}{m})",
                i + 1,
                sel.uids[i],
                sel.shown_flags(i)
            ));
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
        // \Recent is the server's to set (RFC 3501 2.3.2)
        let flags: Vec<String> = flag_strings(flags)
            .into_iter()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .collect();
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
        let mut keywords_changed = false;
        for e in &changed {
            keywords_changed |= sel.learn_keywords(&e.flags);
            if let Some(i) = sel.index_of(e.uid) {
                sel.flags[i] = e.flags.clone();
            }
        }
        if keywords_changed {
            let lines = sel.flag_lines();
            for l in lines {
                self.line(&l);
            }
        }
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
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
                format!("* {} FETCH (FLAGS {}{u}{m})", i + 1, sel.shown_flags(i))
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
