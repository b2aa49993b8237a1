//! The maildrop a POP3 session works on: the account's INBOX as it was at login (RFC 1939 §4:
//! messages are numbered from 1 in that snapshot and keep their numbers), the session's
//! deletion marks, and the per-account lock that keeps a second POP3 session out meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use wispd_store::schema::{MailAccount, MailEntry};

/// Accounts with a POP3 session in the TRANSACTION state.
#[derive(Debug, Default)]
pub struct Locks(Mutex<HashSet<u64>>);

/// One account's lock; dropping it (QUIT, a dropped connection) releases it.
#[derive(Debug)]
pub struct Lock {
    locks: Arc<Locks>,
    account: u64,
}

impl Locks {
    /// The account's lock, unless another session holds it.
    pub fn try_lock(self: &Arc<Self>, account: u64) -> Option<Lock> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(account).then(|| Lock {
            locks: self.clone(),
            account,
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.locks
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.account);
    }
}

/// One message of the maildrop.
#[derive(Debug, Clone)]
pub struct Message {
    pub uid: u32,
    pub message_id: u64,
    pub size: u64,
    pub deleted: bool,
    /// RETR'd in this session (it gets `\Seen` at QUIT).
    pub retrieved: bool,
    pub seen: bool,
}

/// Why a message number names no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    NoSuch,
    Deleted,
}

#[derive(Debug)]
pub struct Maildrop {
    pub account: MailAccount,
    uidvalidity: u32,
    messages: Vec<Message>,
    _lock: Lock,
}

impl Maildrop {
    pub fn new(
        account: MailAccount,
        uidvalidity: u32,
        entries: Vec<MailEntry>,
        lock: Lock,
    ) -> Maildrop {
        let messages = entries
            .into_iter()
            .map(|e| Message {
                uid: e.uid,
                message_id: e.message_id,
                size: e.size,
                deleted: false,
                retrieved: false,
                seen: e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")),
            })
            .collect();
        Maildrop {
            account,
            uidvalidity,
            messages,
            _lock: lock,
        }
    }

    /// Messages in the snapshot, deleted ones included (numbers run up to this).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Message `n` (1-based) unless it doesn't exist or is marked deleted.
    pub fn get(&self, n: u64) -> Result<&Message, Missing> {
        let m = self.slot(n).ok_or(Missing::NoSuch)?;
        if m.deleted {
            return Err(Missing::Deleted);
        }
        Ok(m)
    }

    pub fn get_mut(&mut self, n: u64) -> Result<&mut Message, Missing> {
        let i = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .ok_or(Missing::NoSuch)?;
        let m = self.messages.get_mut(i).ok_or(Missing::NoSuch)?;
        if m.deleted {
            return Err(Missing::Deleted);
        }
        Ok(m)
    }

    fn slot(&self, n: u64) -> Option<&Message> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.messages.get(i)
    }

    /// The messages not marked deleted, with their numbers.
    pub fn visible(&self) -> impl Iterator<Item = (usize, &Message)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.deleted)
            .map(|(i, m)| (i + 1, m))
    }

    /// Count and octets of the messages not marked deleted (STAT).
    pub fn stat(&self) -> (usize, u64) {
        self.visible()
            .fold((0, 0), |(n, octets), (_, m)| (n + 1, octets + m.size))
    }

    /// The unique-id listing of a message (RFC 1939 §7): UIDVALIDITY and UID together name one
    /// message of the mailbox for good, across sessions and restarts.
    pub fn uidl(&self, m: &Message) -> String {
        format!("{:08x}{:08x}", self.uidvalidity, m.uid)
    }

    /// RSET: every deletion mark removed.
    pub fn undelete(&mut self) {
        for m in &mut self.messages {
            m.deleted = false;
        }
    }

    /// UIDs marked deleted, ascending.
    pub fn deleted(&self) -> Vec<u32> {
        self.messages
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect()
    }

    /// UIDs retrieved, kept and not yet `\Seen`, ascending.
    pub fn newly_seen(&self) -> Vec<u32> {
        self.messages
            .iter()
            .filter(|m| m.retrieved && !m.deleted && !m.seen)
            .map(|m| m.uid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_held_once_and_freed_on_drop() {
        let locks = Arc::new(Locks::default());
        let a = locks.try_lock(7).expect("free");
        assert!(locks.try_lock(7).is_none());
        assert!(locks.try_lock(8).is_some());
        drop(a);
        assert!(locks.try_lock(7).is_some());
    }
}
