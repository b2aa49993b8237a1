//! Mailbox operations over the store, as IMAP needs them: create, delete, rename, flags,
//! expunge, copy/move, append. Every change is one durable transaction that also bumps the
//! mailbox's modification sequence, and is announced on [`Changes`] so other sessions notice.

use std::sync::Arc;

use wispd_store::schema::{
    ImportMark, MAIL_ACCOUNTS, MAIL_ENTRIES, MAIL_MAILBOXES, MAIL_MESSAGE_META, MAIL_MESSAGES,
    MAIL_META, MAIL_SUBSCRIPTIONS, MAIL_VANISHED, MailAccount, MailEntry, Mailbox, MessageMeta,
};
use wispd_store::{Store, StoreError, Write};

use crate::mailstore::release;

/// Announces that mail changed somewhere; sessions waiting (IDLE) re-check their mailbox.
#[derive(Debug, Clone)]
pub struct Changes(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for Changes {
    fn default() -> Changes {
        Changes(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl Changes {
    pub fn bump(&self) {
        self.0.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Changes so far (wrapping); equal values mean nothing changed in between.
    pub fn version(&self) -> u64 {
        *self.0.borrow()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("Mailbox doesn't exist: {0}")]
    NoSuchMailbox(String),
    #[error("Mailbox already exists: {0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("Quota exceeded")]
    OverQuota,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// A STORE: how, which flags, and (CONDSTORE) only if unchanged since.
#[derive(Debug, Clone, Copy)]
pub struct FlagChange<'a> {
    pub op: FlagOp,
    pub flags: &'a [String],
    pub unchanged_since: Option<u64>,
}

/// Longest mailbox name accepted.
const MAX_NAME: usize = 512;

/// The canonical stored name: `INBOX` in any case is `INBOX`, a trailing delimiter is dropped.
pub fn canonical(name: &str) -> String {
    let n = name.trim_end_matches('/');
    if n.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else if n.len() > 6
        && n.as_bytes()
            .get(..6)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"INBOX/"))
    {
        format!("INBOX/{}", &n[6..])
    } else {
        n.to_string()
    }
}

/// Whether a canonical name (see [`canonical`]) can be a mailbox.
pub fn check_name(name: &str) -> Result<(), MailboxError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.starts_with('/')
        || name.contains("//")
        || name.chars().any(|c| c.is_control() || c == '*' || c == '%')
    {
        return Err(MailboxError::Invalid(format!(
            "Invalid mailbox name: {name:?}"
        )));
    }
    Ok(())
}

pub fn mailboxes(store: &Store, account: u64) -> Result<Vec<Mailbox>, StoreError> {
    store.read(|r| r.values_in(&MAIL_MAILBOXES, (account, "")..(account + 1, "")))
}

pub fn mailbox(store: &Store, account: u64, name: &str) -> Result<Option<Mailbox>, StoreError> {
    store.read(|r| r.get(&MAIL_MAILBOXES, (account, name)))
}

/// The mailbox and its entries in UID order, from one snapshot.
pub fn snapshot(
    store: &Store,
    account: u64,
    name: &str,
) -> Result<Option<(Mailbox, Vec<MailEntry>)>, StoreError> {
    store.read(|r| {
        let Some(mb) = r.get(&MAIL_MAILBOXES, (account, name))? else {
            return Ok(None);
        };
        let entries = r.values_in(
            &MAIL_ENTRIES,
            (account, name, 0u32)..=(account, name, u32::MAX),
        )?;
        Ok(Some((mb, entries)))
    })
}

/// Entries with a UID in `uids` (sorted), in UID order.
pub fn entries_for(
    store: &Store,
    account: u64,
    name: &str,
    uids: &[u32],
) -> Result<Vec<MailEntry>, StoreError> {
    store.read(|r| {
        let mut out = Vec::with_capacity(uids.len());
        for &uid in uids {
            if let Some(e) = r.get(&MAIL_ENTRIES, (account, name, uid))? {
                out.push(e);
            }
        }
        Ok(out)
    })
}

pub fn message(store: &Store, message_id: u64) -> Result<Option<Vec<u8>>, StoreError> {
    store.read(|r| r.get_raw(&MAIL_MESSAGES, message_id))
}

pub fn account(store: &Store, account: u64) -> Result<Option<MailAccount>, StoreError> {
    store.read(|r| r.get(&MAIL_ACCOUNTS, account))
}

pub(crate) fn new_uidvalidity(w: &Write<'_>) -> Result<u32, StoreError> {
    // Seconds since the epoch, as Dovecot does, but never repeating within this store.
    let now = u32::try_from(wispd_store::unix_now() & 0x7fff_ffff).unwrap_or(1);
    let last = u32::try_from(w.get(&MAIL_META, "last_uidvalidity")?.unwrap_or(0)).unwrap_or(0);
    let v = now.max(last.saturating_add(1)).max(1);
    w.put(&MAIL_META, "last_uidvalidity", &u64::from(v))?;
    Ok(v)
}

impl From<MailboxError> for StoreErrorOr {
    fn from(e: MailboxError) -> Self {
        StoreErrorOr(e)
    }
}

/// Lets a transaction body fail with a [`MailboxError`].
#[derive(Debug)]
pub struct StoreErrorOr(pub MailboxError);

impl From<StoreError> for StoreErrorOr {
    fn from(e: StoreError) -> Self {
        StoreErrorOr(MailboxError::Store(e))
    }
}

fn write<R>(
    store: &Store,
    changes: &Changes,
    f: impl FnOnce(&Write<'_>) -> Result<R, StoreErrorOr>,
) -> Result<R, MailboxError> {
    let r = store.write(f).map_err(|e| e.0)?;
    changes.bump();
    Ok(r)
}

/// A new, empty, unsubscribed mailbox.
fn empty(name: &str, uidvalidity: u32) -> Mailbox {
    Mailbox {
        name: name.to_string(),
        special_use: None,
        uidvalidity,
        uidnext: 1,
        highest_modseq: 1,
        subscribed: false,
        recent_uid: 0,
        vanished_count: 0,
        vanished_floor: 0,
        imported: None,
    }
}

pub fn create(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
) -> Result<(), MailboxError> {
    let name = canonical(name);
    check_name(&name)?;
    write(store, changes, |w| {
        if w.get(&MAIL_MAILBOXES, (account, name.as_str()))?.is_some() {
            return Err(MailboxError::Exists(name.clone()).into());
        }
        let mb = empty(&name, new_uidvalidity(w)?);
        w.put(&MAIL_MAILBOXES, (account, name.as_str()), &mb)?;
        Ok(())
    })
}

/// Removes the entries of a mailbox (all, or those in `only`), releasing their messages and
/// quota. Returns the removed UIDs.
fn remove_entries(
    w: &Write<'_>,
    account: u64,
    name: &str,
    entries: &[MailEntry],
) -> Result<Vec<u32>, StoreError> {
    let mut freed = 0u64;
    let mut uids = Vec::with_capacity(entries.len());
    for e in entries {
        w.remove(&MAIL_ENTRIES, (account, name, e.uid))?;
        release(w, e.message_id)?;
        freed += e.size;
        uids.push(e.uid);
    }
    if freed > 0
        && let Some(mut a) = w.get(&MAIL_ACCOUNTS, account)?
    {
        a.used_bytes = a.used_bytes.saturating_sub(freed);
        w.put(&MAIL_ACCOUNTS, account, &a)?;
    }
    Ok(uids)
}

/// Expunged UIDs remembered per mailbox for QRESYNC; past this the oldest are forgotten.
pub const VANISHED_KEPT: u32 = 20_000;

/// Remembers that `uids` of `mb` were expunged at modification sequence `modseq`. Past
/// [`VANISHED_KEPT`] the oldest quarter is forgotten and `vanished_floor` raised to the
/// newest forgotten modification sequence.
fn record_vanished(
    w: &Write<'_>,
    account: u64,
    mb: &mut Mailbox,
    uids: &[u32],
    modseq: u64,
) -> Result<(), StoreError> {
    let name = mb.name.clone();
    for &uid in uids {
        w.put(
            &MAIL_VANISHED,
            (account, name.as_str(), uid),
            &(uid, modseq),
        )?;
    }
    mb.vanished_count = mb
        .vanished_count
        .saturating_add(u32::try_from(uids.len()).unwrap_or(u32::MAX));
    if mb.vanished_count > VANISHED_KEPT {
        let n = name.as_str();
        let mut all: Vec<(u32, u64)> =
            w.values_in(&MAIL_VANISHED, (account, n, 0u32)..=(account, n, u32::MAX))?;
        all.sort_by_key(|&(uid, m)| (m, uid));
        let keep = (VANISHED_KEPT as usize) * 3 / 4;
        let drop = all.len().saturating_sub(keep);
        for &(uid, m) in &all[..drop] {
            w.remove(&MAIL_VANISHED, (account, n, uid))?;
            mb.vanished_floor = mb.vanished_floor.max(m);
        }
        mb.vanished_count = u32::try_from(all.len() - drop).unwrap_or(u32::MAX);
    }
    Ok(())
}

/// Forgets the expunge history of a mailbox (deleted: a new one gets a new UIDVALIDITY).
fn forget_vanished(w: &Write<'_>, account: u64, name: &str) -> Result<(), StoreError> {
    w.retain_in(
        &MAIL_VANISHED,
        (account, name, 0u32)..=(account, name, u32::MAX),
        |_| false,
    )?;
    Ok(())
}

/// UIDs of `name` expunged after modification sequence `since`, within `wanted` (sorted,
/// merged ranges; `None`: all), as sorted inclusive ranges. When the history doesn't reach back
/// that far, every UID below UIDNEXT within `wanted` that no longer exists (RFC 7162 3.2.5.2
/// lets the server report UIDs the client never saw, never ones that still exist) — computed
/// as the gaps between the UIDs present, so its size follows the mailbox, not UIDNEXT.
pub fn vanished_since(
    store: &Store,
    account: u64,
    name: &str,
    since: u64,
    wanted: Option<&[(u32, u32)]>,
) -> Result<Vec<(u32, u32)>, StoreError> {
    let keep = |a: u32, b: u32, out: &mut Vec<(u32, u32)>| match wanted {
        None => out.push((a, b)),
        Some(w) => {
            let first = w.partition_point(|&(_, hi)| hi < a);
            for &(lo, hi) in &w[first..] {
                if lo > b {
                    break;
                }
                out.push((lo.max(a), hi.min(b)));
            }
        }
    };
    store.read(|r| {
        let Some(mb) = r.get(&MAIL_MAILBOXES, (account, name))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if since >= mb.vanished_floor {
            let all: Vec<(u32, u64)> = r.values_in(
                &MAIL_VANISHED,
                (account, name, 0u32)..=(account, name, u32::MAX),
            )?;
            for (uid, m) in all {
                if m > since {
                    keep(uid, uid, &mut out);
                }
            }
            return Ok(merge(out));
        }
        let entries: Vec<MailEntry> = r.values_in(
            &MAIL_ENTRIES,
            (account, name, 0u32)..=(account, name, u32::MAX),
        )?;
        let mut next = 1u32;
        for e in &entries {
            if e.uid > next {
                keep(next, e.uid - 1, &mut out);
            }
            next = e.uid.saturating_add(1);
        }
        if mb.uidnext > next {
            keep(next, mb.uidnext - 1, &mut out);
        }
        Ok(merge(out))
    })
}

/// Sorted ranges with overlapping and adjacent ones joined.
pub(crate) fn merge(ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Persists that UIDs up to `uid` of `name` have been announced as `\Recent` (best effort:
/// sessions keep the authoritative claim in memory; after a crash the unpersisted ones are
/// recent once more, as RFC 3501 2.3.2 prefers to missing them). Announces nothing.
pub fn persist_recent(store: &Store, account: u64, name: &str, uid: u32) -> Result<(), StoreError> {
    store.write(|w| {
        if let Some(mut mb) = w.get(&MAIL_MAILBOXES, (account, name))?
            && mb.recent_uid < uid
        {
            mb.recent_uid = uid;
            w.put(&MAIL_MAILBOXES, (account, name), &mb)?;
        }
        Ok(())
    })
}

/// Subscribed names kept apart from the mailboxes (they outlive them).
pub fn subscriptions(store: &Store, account: u64) -> Result<Vec<String>, StoreError> {
    store.read(|r| r.values_in(&MAIL_SUBSCRIPTIONS, (account, "")..(account + 1, "")))
}

pub fn delete(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
) -> Result<(), MailboxError> {
    let name = canonical(name);
    if name == "INBOX" {
        return Err(MailboxError::Invalid("INBOX can't be deleted".into()));
    }
    write(store, changes, |w| {
        let Some(mb) = w.get(&MAIL_MAILBOXES, (account, name.as_str()))? else {
            return Err(MailboxError::NoSuchMailbox(name.clone()).into());
        };
        let n = name.as_str();
        let entries = w.values_in(&MAIL_ENTRIES, (account, n, 0u32)..=(account, n, u32::MAX))?;
        remove_entries(w, account, n, &entries)?;
        forget_vanished(w, account, n)?;
        // a subscription stays after the mailbox is gone (RFC 3501 6.3.9)
        if mb.subscribed {
            w.put(&MAIL_SUBSCRIPTIONS, (account, n), &name)?;
        }
        w.remove(&MAIL_MAILBOXES, (account, n))?;
        Ok(())
    })
}

/// Renames a mailbox and its children. Renaming INBOX moves its messages into the new mailbox
/// and leaves INBOX empty (RFC 3501 §6.3.5).
pub fn rename(
    store: &Store,
    changes: &Changes,
    account: u64,
    from: &str,
    to: &str,
) -> Result<(), MailboxError> {
    let (from, to) = (canonical(from), canonical(to));
    check_name(&to)?;
    write(store, changes, |w| {
        let all: Vec<Mailbox> = w.values_in(&MAIL_MAILBOXES, (account, "")..(account + 1, ""))?;
        let prefix = format!("{from}/");
        let src = w.get(&MAIL_MAILBOXES, (account, from.as_str()))?;
        // A name that exists only as the parent of others (\Noselect) renames its children.
        if src.is_none() && !all.iter().any(|m| m.name.starts_with(&prefix)) {
            return Err(MailboxError::NoSuchMailbox(from.clone()).into());
        }
        if w.get(&MAIL_MAILBOXES, (account, to.as_str()))?.is_some() {
            return Err(MailboxError::Exists(to.clone()).into());
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(MailboxError::Invalid("Can't rename a mailbox into itself".into()).into());
        }
        let mut moves: Vec<(String, String)> = Vec::new();
        if src.is_some() {
            moves.push((from.clone(), to.clone()));
        }
        if from != "INBOX" {
            for mb in &all {
                if let Some(rest) = mb.name.strip_prefix(&prefix) {
                    moves.push((mb.name.clone(), format!("{to}/{rest}")));
                }
            }
        }
        // Every new name must be free and valid before anything moves.
        for (_, new) in &moves {
            check_name(new)?;
            if w.get(&MAIL_MAILBOXES, (account, new.as_str()))?.is_some() {
                return Err(MailboxError::Exists(new.clone()).into());
            }
        }
        for (old, new) in moves {
            let Some(mut mb) = w.get(&MAIL_MAILBOXES, (account, old.as_str()))? else {
                continue;
            };
            let entries = w.values_in(
                &MAIL_ENTRIES,
                (account, old.as_str(), 0u32)..=(account, old.as_str(), u32::MAX),
            )?;
            let mut target = mb.clone();
            target.name = new.clone();
            if old == "INBOX" {
                // INBOX stays, emptied; the new mailbox gets fresh UIDs.
                target.uidvalidity = new_uidvalidity(w)?;
                target.uidnext = 1;
                target.special_use = None;
                target.recent_uid = 0;
                target.vanished_count = 0;
                target.vanished_floor = 0;
                let mut gone = Vec::with_capacity(entries.len());
                for e in entries {
                    w.remove(&MAIL_ENTRIES, (account, "INBOX", e.uid))?;
                    gone.push(e.uid);
                    let mut moved = e.clone();
                    moved.uid = target.uidnext;
                    target.uidnext += 1;
                    w.put(&MAIL_ENTRIES, (account, new.as_str(), moved.uid), &moved)?;
                }
                mb.highest_modseq += 1;
                let modseq = mb.highest_modseq;
                record_vanished(w, account, &mut mb, &gone, modseq)?;
                w.put(&MAIL_MAILBOXES, (account, "INBOX"), &mb)?;
            } else {
                for e in entries {
                    w.remove(&MAIL_ENTRIES, (account, old.as_str(), e.uid))?;
                    w.put(&MAIL_ENTRIES, (account, new.as_str(), e.uid), &e)?;
                }
                // the expunge history and the subscription follow the mailbox
                let o = old.as_str();
                let history: Vec<(u32, u64)> =
                    w.values_in(&MAIL_VANISHED, (account, o, 0u32)..=(account, o, u32::MAX))?;
                forget_vanished(w, account, o)?;
                for (uid, m) in history {
                    w.put(&MAIL_VANISHED, (account, new.as_str(), uid), &(uid, m))?;
                }
                if w.get(&MAIL_SUBSCRIPTIONS, (account, o))?.is_some() {
                    w.remove(&MAIL_SUBSCRIPTIONS, (account, o))?;
                    w.put(&MAIL_SUBSCRIPTIONS, (account, new.as_str()), &new)?;
                }
                w.remove(&MAIL_MAILBOXES, (account, old.as_str()))?;
            }
            w.put(&MAIL_MAILBOXES, (account, new.as_str()), &target)?;
        }
        Ok(())
    })
}

pub fn subscribe(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
    on: bool,
) -> Result<(), MailboxError> {
    let name = canonical(name);
    write(store, changes, |w| {
        let n = name.as_str();
        let existing = w.get(&MAIL_MAILBOXES, (account, n))?;
        match existing {
            Some(mut mb) => {
                mb.subscribed = on;
                w.put(&MAIL_MAILBOXES, (account, n), &mb)?;
            }
            // subscribing to a name that doesn't exist is refused; unsubscribing from a
            // deleted mailbox's name is how that subscription goes away
            None if on => return Err(MailboxError::NoSuchMailbox(name.clone()).into()),
            None if w.get(&MAIL_SUBSCRIPTIONS, (account, n))?.is_none() => {
                return Err(MailboxError::NoSuchMailbox(name.clone()).into());
            }
            None => {}
        }
        if on {
            w.put(&MAIL_SUBSCRIPTIONS, (account, n), &name)?;
        } else {
            w.remove(&MAIL_SUBSCRIPTIONS, (account, n))?;
        }
        Ok(())
    })
}

/// Changes the flags of the messages with `uids`; returns the entries whose flags changed and
/// the UIDs left alone because they changed after `unchanged_since` (CONDSTORE).
pub fn set_flags(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
    uids: &[u32],
    change: FlagChange<'_>,
) -> Result<(Vec<MailEntry>, Vec<u32>), MailboxError> {
    let FlagChange {
        op,
        flags,
        unchanged_since,
    } = change;
    write(store, changes, |w| {
        let Some(mut mb) = w.get(&MAIL_MAILBOXES, (account, name))? else {
            return Err(MailboxError::NoSuchMailbox(name.to_string()).into());
        };
        let mut changed = Vec::new();
        let mut modified = Vec::new();
        for &uid in uids {
            let Some(mut e) = w.get(&MAIL_ENTRIES, (account, name, uid))? else {
                continue;
            };
            if unchanged_since.is_some_and(|u| e.modseq > u) {
                modified.push(uid);
                continue;
            }
            let mut next: Vec<String> = match op {
                FlagOp::Replace => flags.to_vec(),
                FlagOp::Add => {
                    let mut f = e.flags.clone();
                    for x in flags {
                        if !f.iter().any(|y| y.eq_ignore_ascii_case(x)) {
                            f.push(x.clone());
                        }
                    }
                    f
                }
                FlagOp::Remove => e
                    .flags
                    .iter()
                    .filter(|y| !flags.iter().any(|x| x.eq_ignore_ascii_case(y)))
                    .cloned()
                    .collect(),
            };
            next.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
            if next != e.flags {
                mb.highest_modseq += 1;
                e.flags = next;
                e.modseq = mb.highest_modseq;
                w.put(&MAIL_ENTRIES, (account, name, uid), &e)?;
                changed.push(e);
            }
        }
        if !changed.is_empty() {
            w.put(&MAIL_MAILBOXES, (account, name), &mb)?;
        }
        Ok((changed, modified))
    })
}

/// Removes the messages flagged `\Deleted` (only those in `only`, when given); returns their UIDs.
pub fn expunge(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
    only: Option<&[u32]>,
) -> Result<Vec<u32>, MailboxError> {
    write(store, changes, |w| {
        let Some(mut mb) = w.get(&MAIL_MAILBOXES, (account, name))? else {
            return Err(MailboxError::NoSuchMailbox(name.to_string()).into());
        };
        let entries: Vec<MailEntry> = w
            .values_in(
                &MAIL_ENTRIES,
                (account, name, 0u32)..=(account, name, u32::MAX),
            )?
            .into_iter()
            .filter(|e| e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
            .filter(|e| only.is_none_or(|o| o.binary_search(&e.uid).is_ok()))
            .collect();
        let uids = remove_entries(w, account, name, &entries)?;
        if !uids.is_empty() {
            mb.highest_modseq += 1;
            let modseq = mb.highest_modseq;
            record_vanished(w, account, &mut mb, &uids, modseq)?;
            w.put(&MAIL_MAILBOXES, (account, name), &mb)?;
        }
        Ok(uids)
    })
}

/// Removes the messages with `uids` whatever their flags (POP3's DELE committed at QUIT), as
/// one transaction; returns the UIDs removed (those that still existed).
pub fn remove(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
    uids: &[u32],
) -> Result<Vec<u32>, MailboxError> {
    write(store, changes, |w| {
        let Some(mut mb) = w.get(&MAIL_MAILBOXES, (account, name))? else {
            return Err(MailboxError::NoSuchMailbox(name.to_string()).into());
        };
        let mut entries = Vec::with_capacity(uids.len());
        for &uid in uids {
            if let Some(e) = w.get(&MAIL_ENTRIES, (account, name, uid))? {
                entries.push(e);
            }
        }
        let removed = remove_entries(w, account, name, &entries)?;
        if !removed.is_empty() {
            mb.highest_modseq += 1;
            let modseq = mb.highest_modseq;
            record_vanished(w, account, &mut mb, &removed, modseq)?;
            w.put(&MAIL_MAILBOXES, (account, name), &mb)?;
        }
        Ok(removed)
    })
}

/// What COPY/MOVE did: the destination's UIDVALIDITY and (source UID, new UID) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub uidvalidity: u32,
    pub pairs: Vec<(u32, u32)>,
}

/// Copies (or moves, `remove_source`) the messages with `uids` into `to`, as one transaction.
/// Copies share the stored message; they count against the quota.
pub fn copy(
    store: &Store,
    changes: &Changes,
    account: u64,
    from: &str,
    uids: &[u32],
    to: &str,
    remove_source: bool,
) -> Result<Copied, MailboxError> {
    let to = canonical(to);
    write(store, changes, |w| {
        let Some(mut dst) = w.get(&MAIL_MAILBOXES, (account, to.as_str()))? else {
            return Err(MailboxError::NoSuchMailbox(to.clone()).into());
        };
        let Some(mut src) = w.get(&MAIL_MAILBOXES, (account, from))? else {
            return Err(MailboxError::NoSuchMailbox(from.to_string()).into());
        };
        let Some(mut acct) = w.get(&MAIL_ACCOUNTS, account)? else {
            return Err(MailboxError::NoSuchMailbox(to.clone()).into());
        };
        let mut entries = Vec::with_capacity(uids.len());
        for &uid in uids {
            if let Some(e) = w.get(&MAIL_ENTRIES, (account, from, uid))? {
                entries.push(e);
            }
        }
        let added: u64 = entries.iter().map(|e| e.size).sum();
        if !remove_source
            && acct.quota_mb > 0
            && acct.used_bytes.saturating_add(added) > acct.quota_mb.saturating_mul(1 << 20)
        {
            return Err(MailboxError::OverQuota.into());
        }
        let same = from == to;
        let mut pairs = Vec::with_capacity(entries.len());
        for e in &entries {
            let mut copy = e.clone();
            copy.uid = dst.uidnext;
            dst.uidnext = dst.uidnext.saturating_add(1);
            dst.highest_modseq += 1;
            copy.modseq = dst.highest_modseq;
            copy.flags.retain(|f| !f.eq_ignore_ascii_case("\\Recent"));
            w.put(&MAIL_ENTRIES, (account, to.as_str(), copy.uid), &copy)?;
            pairs.push((e.uid, copy.uid));
            if remove_source {
                w.remove(&MAIL_ENTRIES, (account, from, e.uid))?;
            } else {
                let mut meta = w
                    .get(&MAIL_MESSAGE_META, e.message_id)?
                    .unwrap_or(MessageMeta {
                        size: e.size,
                        refs: 1,
                    });
                meta.refs = meta.refs.saturating_add(1);
                w.put(&MAIL_MESSAGE_META, e.message_id, &meta)?;
            }
        }
        if remove_source && !entries.is_empty() {
            let moved: Vec<u32> = entries.iter().map(|e| e.uid).collect();
            if same {
                dst.highest_modseq += 1;
                let modseq = dst.highest_modseq;
                record_vanished(w, account, &mut dst, &moved, modseq)?;
            } else {
                src.highest_modseq += 1;
                let modseq = src.highest_modseq;
                record_vanished(w, account, &mut src, &moved, modseq)?;
                w.put(&MAIL_MAILBOXES, (account, from), &src)?;
            }
        }
        w.put(&MAIL_MAILBOXES, (account, to.as_str()), &dst)?;
        if !remove_source && added > 0 {
            acct.used_bytes = acct.used_bytes.saturating_add(added);
            w.put(&MAIL_ACCOUNTS, account, &acct)?;
        }
        Ok(Copied {
            uidvalidity: dst.uidvalidity,
            pairs,
        })
    })
}

/// Stores a message in a mailbox (IMAP APPEND); durable when this returns. Returns
/// (UIDVALIDITY, UID).
pub fn append(
    store: &Store,
    changes: &Changes,
    account: u64,
    name: &str,
    flags: Vec<String>,
    internal_date: i64,
    message: &[u8],
) -> Result<(u32, u32), MailboxError> {
    let name = canonical(name);
    let size = message.len() as u64;
    write(store, changes, |w| {
        let Some(mut mb) = w.get(&MAIL_MAILBOXES, (account, name.as_str()))? else {
            return Err(MailboxError::NoSuchMailbox(name.clone()).into());
        };
        let Some(mut acct) = w.get(&MAIL_ACCOUNTS, account)? else {
            return Err(MailboxError::NoSuchMailbox(name.clone()).into());
        };
        if acct.quota_mb > 0
            && acct.used_bytes.saturating_add(size) > acct.quota_mb.saturating_mul(1 << 20)
        {
            return Err(MailboxError::OverQuota.into());
        }
        let id = w.get(&MAIL_META, "next_message_id")?.unwrap_or(1).max(1);
        w.put(&MAIL_META, "next_message_id", &(id + 1))?;
        w.put_raw(&MAIL_MESSAGES, id, message)?;
        w.put(&MAIL_MESSAGE_META, id, &MessageMeta { size, refs: 1 })?;
        let uid = mb.uidnext;
        mb.uidnext = mb.uidnext.saturating_add(1);
        mb.highest_modseq += 1;
        let entry = MailEntry {
            message_id: id,
            uid,
            flags,
            internal_date,
            size,
            modseq: mb.highest_modseq,
        };
        w.put(&MAIL_ENTRIES, (account, name.as_str(), uid), &entry)?;
        w.put(&MAIL_MAILBOXES, (account, name.as_str()), &mb)?;
        acct.used_bytes = acct.used_bytes.saturating_add(size);
        w.put(&MAIL_ACCOUNTS, account, &acct)?;
        Ok((mb.uidvalidity, uid))
    })
}

/// A mailbox as another server kept it, for [`import`].
#[derive(Debug, Clone)]
pub struct SourceMailbox {
    pub name: String,
    /// The source's UIDVALIDITY (0: it had none; the mailbox gets its own).
    pub uidvalidity: u32,
    /// The source's next UID, kept as UIDNEXT when the UIDs are kept; given with a mailbox's
    /// last batch only (0 before it: a UIDNEXT set early would renumber the batches after).
    pub uidnext: u32,
    pub subscribed: bool,
    pub special_use: Option<String>,
}

/// One message as another server kept it.
#[derive(Debug, Clone)]
pub struct SourceMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub internal_date: i64,
    pub data: Vec<u8>,
}

/// Where an imported mailbox's modification sequences start: above any Dovecot gives.
pub const IMPORT_MODSEQ: u64 = 1 << 40;

/// An IMAP system flag (`\\Seen`) or keyword (an atom, RFC 3501 9) at most 128 bytes: what
/// an imported message's flags may be.
pub fn is_flag(f: &str) -> bool {
    let atom = f.strip_prefix('\\').unwrap_or(f);
    !atom.is_empty()
        && f.len() <= 128
        && atom
            .bytes()
            .all(|c| c > b' ' && c < 0x7f && !b"(){%*\"\\]".contains(&c))
}

/// Imported UIDs stay below this, leaving 16 million for the mail that comes after.
pub const MAX_IMPORTED_UID: u32 = 0xff00_0000;

/// What [`import`] did with one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The mailbox did not exist before.
    pub created: bool,
    /// The mailbox has the source's UIDVALIDITY, and messages keep their UIDs.
    pub uids_kept: bool,
    pub uidvalidity: u32,
    pub imported: u32,
    /// Messages at or below the import mark: brought over by an earlier run.
    pub already: u32,
    /// Messages that got a UID other than the one their source's UIDVALIDITY promised (the
    /// mailbox already had mail of its own).
    pub renumbered: u32,
}

/// Brings a batch of another server's messages into `source.name` in one durable
/// transaction, creating the mailbox with the source's UIDVALIDITY when it doesn't exist (or
/// has never held a message), and keeping each message's UID when the UIDVALIDITY is the
/// source's and the UID is above every UID the mailbox has handed out. The mailbox remembers
/// the highest source UID brought over ([`ImportMark`]): a rerun, or a resumed interrupted
/// import, skips those, even the ones since deleted here. The quota is not enforced: the mail
/// was the user's already (the account's usage grows by it). A `dry_run` says what the batch
/// would do and keeps nothing.
pub fn import(
    store: &Store,
    changes: &Changes,
    account: u64,
    source: &SourceMailbox,
    messages: &[SourceMessage],
    dry_run: bool,
) -> Result<ImportOutcome, MailboxError> {
    let name = canonical(&source.name);
    check_name(&name)?;
    // headroom: mail delivered after the import still gets UIDs of its own
    if source.uidnext > MAX_IMPORTED_UID || messages.iter().any(|m| m.uid >= MAX_IMPORTED_UID) {
        return Err(MailboxError::Invalid(format!(
            "UIDs and UIDNEXT must be below {MAX_IMPORTED_UID}"
        )));
    }
    if !dry_run {
        return write(store, changes, |w| {
            import_in(w, account, &name, source, messages)
        });
    }
    // a dry run does all of it and keeps none: the transaction is dropped
    enum Abort {
        Dry(ImportOutcome),
        Failed(StoreErrorOr),
    }
    impl From<StoreError> for Abort {
        fn from(e: StoreError) -> Self {
            Abort::Failed(StoreErrorOr(MailboxError::Store(e)))
        }
    }
    let r: Result<(), Abort> =
        store.write(|w| match import_in(w, account, &name, source, messages) {
            Ok(out) => Err(Abort::Dry(out)),
            Err(e) => Err(Abort::Failed(e)),
        });
    match r {
        Err(Abort::Dry(out)) => Ok(out),
        Err(Abort::Failed(e)) => Err(e.0),
        // the closure above never returns Ok: nothing was committed
        Ok(()) => Err(MailboxError::Invalid("the dry run did not run".into())),
    }
}

fn import_in(
    w: &Write<'_>,
    account: u64,
    name: &str,
    source: &SourceMailbox,
    messages: &[SourceMessage],
) -> Result<ImportOutcome, StoreErrorOr> {
    let n = name;
    let Some(mut acct) = w.get(&MAIL_ACCOUNTS, account)? else {
        return Err(MailboxError::NoSuchMailbox(name.to_string()).into());
    };
    let mut out = ImportOutcome::default();
    let mut mb = match w.get(&MAIL_MAILBOXES, (account, n))? {
        Some(mb) => mb,
        None => {
            out.created = true;
            empty(name, 0)
        }
    };
    // a mailbox that never held a message takes the source's UIDVALIDITY
    if mb.uidnext == 1 && mb.imported.is_none() {
        mb.uidvalidity = if source.uidvalidity > 0 {
            // the store's own UIDVALIDITYs (seconds since the epoch) stay above one taken
            // over; one out of that range is not fed in (new ones would run out of numbers)
            if source.uidvalidity <= 0x7fff_ffff {
                let last = w.get(&MAIL_META, "last_uidvalidity")?.unwrap_or(0);
                w.put(
                    &MAIL_META,
                    "last_uidvalidity",
                    &last.max(u64::from(source.uidvalidity)),
                )?;
            }
            source.uidvalidity
        } else if mb.uidvalidity == 0 {
            new_uidvalidity(w)?
        } else {
            mb.uidvalidity
        };
    }
    out.uids_kept = source.uidvalidity > 0 && mb.uidvalidity == source.uidvalidity;
    out.uidvalidity = mb.uidvalidity;
    if mb.imported.is_none() {
        // Dovecot's modification sequences are not brought over: a client's HIGHESTMODSEQ from
        // there must not read as "nothing changed since", so this mailbox's count jumps past
        // any the source could have given, and the expunge history starts here (QRESYNC falls
        // back to reporting every UID that is gone)
        mb.highest_modseq = mb.highest_modseq.max(IMPORT_MODSEQ);
        mb.vanished_floor = mb.highest_modseq;
    }
    let mut mark = match mb.imported {
        Some(m) if m.uidvalidity == source.uidvalidity => m,
        _ => ImportMark {
            uidvalidity: source.uidvalidity,
            uid: 0,
        },
    };
    let mut next_id = w.get(&MAIL_META, "next_message_id")?.unwrap_or(1).max(1);
    let mut sorted: Vec<&SourceMessage> = messages.iter().collect();
    sorted.sort_by_key(|m| m.uid);
    for m in sorted {
        if m.uid <= mark.uid {
            out.already += 1;
            continue;
        }
        if out.uids_kept && m.uid < mb.uidnext {
            // the mailbox has had mail of its own since the UIDs were taken over: under the
            // source's UIDVALIDITY this UID would name another message than the source's, so
            // the mailbox gets a UIDVALIDITY of its own (clients resynchronise it once)
            mb.uidvalidity = new_uidvalidity(w)?;
            out.uids_kept = false;
            out.uidvalidity = mb.uidvalidity;
        }
        let uid = if out.uids_kept {
            m.uid
        } else {
            // without a source UIDVALIDITY no client knew these UIDs: nothing is renumbered
            if source.uidvalidity > 0 {
                out.renumbered += 1;
            }
            mb.uidnext
        };
        if uid >= MAX_IMPORTED_UID {
            return Err(MailboxError::Invalid("the mailbox has run out of UIDs".into()).into());
        }
        let size = m.data.len() as u64;
        let id = next_id;
        next_id += 1;
        w.put_raw(&MAIL_MESSAGES, id, &m.data)?;
        w.put(&MAIL_MESSAGE_META, id, &MessageMeta { size, refs: 1 })?;
        mb.highest_modseq += 1;
        let mut flags: Vec<String> = Vec::with_capacity(m.flags.len());
        for f in &m.flags {
            if !flags.iter().any(|x| x.eq_ignore_ascii_case(f)) {
                flags.push(f.clone());
            }
        }
        let entry = MailEntry {
            message_id: id,
            uid,
            flags,
            internal_date: m.internal_date,
            size,
            modseq: mb.highest_modseq,
        };
        w.put(&MAIL_ENTRIES, (account, n, uid), &entry)?;
        mb.uidnext = uid + 1;
        mark.uid = m.uid;
        acct.used_bytes = acct.used_bytes.saturating_add(size);
        out.imported += 1;
    }
    if out.uids_kept {
        mb.uidnext = mb.uidnext.max(source.uidnext);
    }
    if mb.special_use.is_none() {
        mb.special_use.clone_from(&source.special_use);
    }
    if source.subscribed {
        mb.subscribed = true;
        w.put(&MAIL_SUBSCRIPTIONS, (account, n), &name.to_string())?;
    }
    mb.imported = Some(mark);
    w.put(&MAIL_META, "next_message_id", &next_id)?;
    w.put(&MAIL_MAILBOXES, (account, n), &mb)?;
    if out.imported > 0 {
        w.put(&MAIL_ACCOUNTS, account, &acct)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> Store {
        let d = std::env::temp_dir().join(format!("wispd-mailbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let s = Store::open(&d).expect("store");
        s.write(|w| {
            w.put(
                &MAIL_ACCOUNTS,
                1u64,
                &MailAccount {
                    id: 1,
                    domain: "example.com".into(),
                    username: "a".into(),
                    password_hash: String::new(),
                    quota_mb: 0,
                    used_bytes: 0,
                    enabled: true,
                    created_at: 0,
                },
            )
        })
        .expect("account");
        s
    }

    fn delete(s: &Store, ch: &Changes, uids: &[u32]) {
        let deleted = vec!["\\Deleted".to_string()];
        let change = FlagChange {
            op: FlagOp::Add,
            flags: &deleted,
            unchanged_since: None,
        };
        set_flags(s, ch, 1, "Box", uids, change).expect("flags");
        expunge(s, ch, 1, "Box", None).expect("expunge");
    }

    #[test]
    fn vanished_history_and_its_fallback_when_forgotten() {
        let (s, ch) = (store("vanished"), Changes::default());
        create(&s, &ch, 1, "Box").expect("create");
        for _ in 0..20 {
            append(&s, &ch, 1, "Box", vec![], 0, b"Subject: x\r\n\r\nx\r\n").expect("append");
        }
        let before = mailbox(&s, 1, "Box")
            .expect("read")
            .expect("box")
            .highest_modseq;
        delete(&s, &ch, &[3, 4, 5, 10]);
        let mid = mailbox(&s, 1, "Box")
            .expect("read")
            .expect("box")
            .highest_modseq;
        delete(&s, &ch, &[15]);
        let since = |m, w: Option<&[(u32, u32)]>| vanished_since(&s, 1, "Box", m, w).expect("read");
        assert_eq!(since(before, None), vec![(3, 5), (10, 10), (15, 15)]);
        assert_eq!(since(mid, None), vec![(15, 15)]);
        assert_eq!(since(before, Some(&[(4, 12)])), vec![(4, 5), (10, 10)]);
        // MOVE records the source's expunges too
        create(&s, &ch, 1, "Other").expect("create");
        copy(&s, &ch, 1, "Box", &[20], "Other", true).expect("move");
        assert_eq!(since(mid, None), vec![(15, 15), (20, 20)]);
        // the history forgotten below a floor: every missing UID below UIDNEXT, as ranges
        s.write(|w| {
            let mut mb = w.get(&MAIL_MAILBOXES, (1u64, "Box"))?.expect("box");
            mb.vanished_floor = mid;
            w.put(&MAIL_MAILBOXES, (1u64, "Box"), &mb)
        })
        .expect("floor");
        assert_eq!(
            since(before, None),
            vec![(3, 5), (10, 10), (15, 15), (20, 20)]
        );
        assert_eq!(
            since(before, Some(&[(1, 4), (14, 16)])),
            vec![(3, 4), (15, 15)]
        );
        // and a deleted mailbox forgets its history with it
        delete_mailbox_and_recreate(&s, &ch);
        assert_eq!(since(0, None), vec![]);
    }

    fn delete_mailbox_and_recreate(s: &Store, ch: &Changes) {
        super::delete(s, ch, 1, "Box").expect("delete");
        create(s, ch, 1, "Box").expect("create");
    }

    #[test]
    fn the_expunge_history_is_bounded_per_mailbox() {
        let (s, ch) = (store("bounded"), Changes::default());
        create(&s, &ch, 1, "Box").expect("create");
        let mut mb = mailbox(&s, 1, "Box").expect("read").expect("box");
        let uids: Vec<u32> = (1..=VANISHED_KEPT + 10).collect();
        s.write(|w| {
            record_vanished(w, 1, &mut mb, &uids[..100], 5)?;
            record_vanished(w, 1, &mut mb, &uids[100..], 9)?;
            w.put(&MAIL_MAILBOXES, (1u64, "Box"), &mb)
        })
        .expect("record");
        let mb = mailbox(&s, 1, "Box").expect("read").expect("box");
        assert_eq!(mb.vanished_count, VANISHED_KEPT * 3 / 4);
        assert_eq!(
            mb.vanished_floor, 9,
            "the oldest forgotten first, the floor at the newest forgotten"
        );
    }

    fn src(name: &str, uidvalidity: u32, uidnext: u32) -> SourceMailbox {
        SourceMailbox {
            name: name.into(),
            uidvalidity,
            uidnext,
            subscribed: true,
            special_use: None,
        }
    }

    fn msgs(uids: &[u32]) -> Vec<SourceMessage> {
        uids.iter()
            .map(|&uid| SourceMessage {
                uid,
                flags: vec!["\\Seen".into(), "$Label1".into()],
                internal_date: 1_600_000_000 + i64::from(uid),
                data: format!("Subject: {uid}\r\n\r\nbody {uid}\r\n").into_bytes(),
            })
            .collect()
    }

    #[test]
    fn imports_keep_uids_resume_at_the_mark_and_renumber_into_used_mailboxes() {
        let (s, ch) = (store("import"), Changes::default());
        // a dry run says what would happen and keeps nothing
        let dry = import(&s, &ch, 1, &src("Box", 777, 0), &msgs(&[3, 9, 4]), true).expect("dry");
        assert!(dry.created && dry.imported == 3);
        assert!(mailbox(&s, 1, "Box").expect("read").is_none());
        // a new mailbox takes the source's UIDVALIDITY and UIDs; a batch before the last one
        // sends no UIDNEXT
        let out =
            import(&s, &ch, 1, &src("Box", 777, 0), &msgs(&[3, 9, 4]), false).expect("import");
        assert!(out.created && out.uids_kept);
        assert_eq!((out.uidvalidity, out.imported), (777, 3));
        let mb = mailbox(&s, 1, "Box").expect("read").expect("box");
        assert_eq!((mb.uidvalidity, mb.uidnext, mb.subscribed), (777, 10, true));
        let e = all(&s, "Box");
        assert_eq!(e.iter().map(|e| e.uid).collect::<Vec<_>>(), [3, 4, 9]);
        assert_eq!(e[0].flags, ["\\Seen", "$Label1"]);
        assert_eq!(e[0].internal_date, 1_600_000_003);
        // a rerun, and a resumed batch overlapping the last one, import nothing twice, even a
        // message deleted here since
        delete_uids(&s, &ch, "Box", &[4]);
        let again = import(
            &s,
            &ch,
            1,
            &src("Box", 777, 30),
            &msgs(&[3, 4, 9, 12]),
            false,
        )
        .expect("again");
        assert_eq!((again.imported, again.already), (1, 3));
        let uids: Vec<u32> = all(&s, "Box").iter().map(|e| e.uid).collect();
        assert_eq!(uids, [3, 9, 12]);
        let mb = mailbox(&s, 1, "Box").expect("read").expect("box");
        assert_eq!(mb.uidnext, 30, "the last batch's UIDNEXT");
        // a mailbox that has had mail of its own keeps its UIDVALIDITY: new UIDs above its own
        create(&s, &ch, 1, "Used").expect("create");
        append(&s, &ch, 1, "Used", vec![], 0, b"Subject: mine\r\n\r\nx\r\n").expect("append");
        let used = import(&s, &ch, 1, &src("Used", 5, 100), &msgs(&[1, 2]), false).expect("used");
        assert!(!used.uids_kept && !used.created);
        assert_eq!((used.imported, used.renumbered), (2, 2));
        let uids: Vec<u32> = all(&s, "Used").iter().map(|e| e.uid).collect();
        assert_eq!(uids, [1, 2, 3]);
        // mail of its own after UIDs were taken over: the next source UID can't be kept under
        // the source's UIDVALIDITY, so the mailbox gets its own (no UID names two messages)
        append(&s, &ch, 1, "Box", vec![], 0, b"Subject: own\r\n\r\nx\r\n").expect("append");
        let after = import(&s, &ch, 1, &src("Box", 777, 40), &msgs(&[30]), false).expect("after");
        assert!(!after.uids_kept && after.uidvalidity != 777 && after.imported == 1);
        let mb = mailbox(&s, 1, "Box").expect("read").expect("box");
        assert_eq!(mb.uidvalidity, after.uidvalidity);
        assert!(mb.highest_modseq > IMPORT_MODSEQ && mb.vanished_floor >= IMPORT_MODSEQ);
        // an empty mailbox the account was made with takes the source's UIDVALIDITY
        create(&s, &ch, 1, "Fresh").expect("create");
        let fresh = import(&s, &ch, 1, &src("Fresh", 4242, 8), &msgs(&[7]), false).expect("fresh");
        assert!(fresh.uids_kept && !fresh.created && fresh.uidvalidity == 4242);
        // UIDs near the top of the range are refused: delivery needs room after them
        assert!(import(&s, &ch, 1, &src("Top", 1, u32::MAX), &[], false).is_err());
        assert!(
            import(
                &s,
                &ch,
                1,
                &src("Top", 1, 2),
                &msgs(&[MAX_IMPORTED_UID]),
                false
            )
            .is_err()
        );
        // the account's usage counts the imported mail
        let acct = account(&s, 1).expect("read").expect("account");
        let total: u64 = ["Box", "Used", "Fresh"]
            .iter()
            .flat_map(|b| all(&s, b))
            .map(|e| e.size)
            .sum();
        assert_eq!(acct.used_bytes, total);
    }

    fn all(s: &Store, name: &str) -> Vec<MailEntry> {
        snapshot(s, 1, name).expect("read").expect("mailbox").1
    }

    fn delete_uids(s: &Store, ch: &Changes, name: &str, uids: &[u32]) {
        let deleted = vec!["\\Deleted".to_string()];
        let change = FlagChange {
            op: FlagOp::Add,
            flags: &deleted,
            unchanged_since: None,
        };
        set_flags(s, ch, 1, name, uids, change).expect("flags");
        expunge(s, ch, 1, name, None).expect("expunge");
    }
}
