//! sshd, the one service wispd does not own: its failures come from its log (`SSHD_LOG`,
//! `/var/log/auth.log` on Debian), followed as `tail -F` does — from the end at start, across
//! rotation (the old file is read to its end before the new one is opened) and truncation.
//!
//! A line counts when it is sshd's and says `Failed <method> for [invalid user] U from IP`,
//! `Invalid user U from IP` or `maximum authentication attempts exceeded for … from IP`. The
//! address is the last ` from <ip> port ` of the line, so a user name that itself contains
//! `from 1.2.3.4 port 22` cannot aim a ban at someone else.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Reporter, Service};
use crate::engine::{Firewall, now};

const POLL: Duration = Duration::from_millis(250);
/// Bytes read per poll at most; the rest waits for the next.
const MAX_READ: usize = 1 << 20;
/// Longer lines are skipped.
const MAX_LINE: usize = 4096;

/// What `/csf/lfd/status` shows of the follower.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceState {
    pub path: String,
    /// The file is open and being read.
    pub following: bool,
    pub inode: Option<u64>,
    pub offset: u64,
    pub lines_read: u64,
    pub failures_found: u64,
    pub rotations: u64,
    pub last_line: Option<String>,
    pub last_read_at: Option<i64>,
    pub error: Option<String>,
}

/// The failure a log line reports: (user, address).
pub fn parse_line(line: &str) -> Option<(String, IpAddr)> {
    let msg = &line[line.find("sshd[").or_else(|| line.find("sshd:"))?..];
    let msg = &msg[msg.find(": ")? + 2..];
    let rest = if let Some(r) = msg.strip_prefix("Failed ") {
        // "<method> for [invalid user ]<user> from <ip> port <n> ssh2"
        r.split_once(" for ")?.1
    } else if let Some(r) = msg.strip_prefix("Invalid user ") {
        r
    } else {
        msg.strip_prefix("error: maximum authentication attempts exceeded for ")?
    };
    let rest = rest.strip_prefix("invalid user ").unwrap_or(rest);
    // the last " from <ip>" that is followed by " port " or the end of the line
    let mut search = rest;
    while let Some(i) = search.rfind(" from ") {
        let (user, tail) = (&search[..i], &search[i + 6..]);
        let (addr, after) = tail.split_once(' ').unwrap_or((tail, ""));
        if (after.starts_with("port ") || after.is_empty())
            && let Ok(ip) = addr.parse::<IpAddr>()
        {
            return Some((user.to_string(), ip));
        }
        search = user;
    }
    None
}

struct Open {
    file: File,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

/// Follows `SSHD_LOG` until the firewall is dropped.
pub fn follow(fw: Arc<Firewall>, reporter: Reporter) {
    let mut open: Option<Open> = None;
    let mut path = String::new();
    let mut started = false;
    loop {
        std::thread::sleep(POLL);
        if Arc::strong_count(&fw) == 1 {
            return;
        }
        let want = fw
            .parsed_settings()
            .map(|s| {
                if s.lfd.daemon {
                    s.lfd.sshd_log
                } else {
                    String::new()
                }
            })
            .unwrap_or_default();
        if want != path {
            path = want;
            open = None;
            // a log named anew is read from its end, as at start
            started = false;
            let mut st = super::unpoison(fw.lfd().sshd.lock());
            *st = SourceState {
                path: path.clone(),
                ..SourceState::default()
            };
        }
        if path.is_empty() {
            continue;
        }
        let meta = std::fs::metadata(&path);
        let current_inode = meta.as_ref().ok().map(MetadataExt::ino);
        // rotated: finish the old file, then take the new one from its start
        let rotated = open
            .as_ref()
            .is_some_and(|o| current_inode.is_some_and(|i| i != o.inode));
        if let Some(o) = open.as_mut() {
            read_new(o, &fw, &reporter);
        }
        if rotated {
            open = None;
            super::unpoison(fw.lfd().sshd.lock()).rotations += 1;
        }
        if open.is_none() {
            match File::open(&path) {
                Ok(mut file) => {
                    let inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                    let offset = if started {
                        0
                    } else {
                        file.seek(SeekFrom::End(0)).unwrap_or(0)
                    };
                    started = true;
                    open = Some(Open {
                        file,
                        inode,
                        offset,
                        partial: Vec::new(),
                    });
                    let mut st = super::unpoison(fw.lfd().sshd.lock());
                    st.following = true;
                    st.inode = Some(inode);
                    st.offset = offset;
                    st.error = None;
                }
                Err(e) => {
                    // a missing log is waited for; its lines count from the start once it exists
                    started = true;
                    let mut st = super::unpoison(fw.lfd().sshd.lock());
                    st.following = false;
                    st.error = Some(format!("{path}: {e}"));
                    continue;
                }
            }
        }
        if let Some(o) = open.as_mut() {
            // truncated in place (copytruncate): start over
            if let Ok(m) = o.file.metadata()
                && m.len() < o.offset
            {
                o.offset = 0;
                o.partial.clear();
                let _ = o.file.seek(SeekFrom::Start(0));
            }
            read_new(o, &fw, &reporter);
        }
    }
}

fn read_new(o: &mut Open, fw: &Firewall, reporter: &Reporter) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let (mut lines, mut found, mut last) = (0u64, 0u64, None);
    while total < MAX_READ {
        let n = match o.file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                super::unpoison(fw.lfd().sshd.lock()).error = Some(e.to_string());
                break;
            }
        };
        total += n;
        o.offset += n as u64;
        for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
            if chunk.last() != Some(&b'\n') {
                if o.partial.len() + chunk.len() <= MAX_LINE {
                    o.partial.extend_from_slice(chunk);
                } else {
                    o.partial.clear();
                    o.partial.push(0); // marks a line too long to keep
                }
                continue;
            }
            let too_long =
                o.partial.first() == Some(&0) || o.partial.len() + chunk.len() > MAX_LINE;
            o.partial.extend_from_slice(chunk);
            let line = std::mem::take(&mut o.partial);
            if too_long {
                continue;
            }
            lines += 1;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if let Some((user, ip)) = parse_line(text) {
                found += 1;
                reporter.report(Service::Sshd, ip, &user);
                last = Some(text.to_string());
            }
        }
    }
    if total > 0 {
        let mut st = super::unpoison(fw.lfd().sshd.lock());
        st.offset = o.offset;
        st.lines_read += lines;
        st.failures_found += found;
        st.last_read_at = Some(now());
        if last.is_some() {
            st.last_line = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn openssh_failure_lines_give_user_and_address() {
        let cases = [
            (
                "Dec  3 14:00:00 web sshd[812]: Failed password for root from 203.0.113.5 port 52144 ssh2",
                Some(("root", "203.0.113.5")),
            ),
            (
                "2026-12-03T14:00:00.123456+00:00 web sshd[812]: Failed password for invalid user bob from 2001:db8::7 port 4242 ssh2",
                Some(("bob", "2001:db8::7")),
            ),
            (
                "Dec  3 14:00:00 web sshd[812]: Invalid user admin from 198.51.100.9 port 40022",
                Some(("admin", "198.51.100.9")),
            ),
            (
                "Dec  3 14:00:00 web sshd[812]: error: maximum authentication attempts exceeded for root from 192.0.2.44 port 22 ssh2 [preauth]",
                Some(("root", "192.0.2.44")),
            ),
            (
                "Dec  3 14:00:00 web sshd[812]: Accepted password for root from 203.0.113.5 port 52144 ssh2",
                None,
            ),
            (
                "Dec  3 14:00:00 web cron[812]: Failed password for root from 203.0.113.5 port 1 ssh2",
                None,
            ),
            // a user name carrying a forged address: the real one is the last
            (
                "Dec  3 14:00:00 web sshd[812]: Invalid user x from 10.9.9.9 port 22 from 203.0.113.77 port 5",
                Some(("x from 10.9.9.9 port 22", "203.0.113.77")),
            ),
        ];
        for (line, want) in cases {
            let got = parse_line(line);
            let got = got.as_ref().map(|(u, ip)| (u.as_str(), ip.to_string()));
            assert_eq!(got, want.map(|(u, ip)| (u, ip.to_string())), "{line}");
        }
    }
}
