//! Reading a Dovecot Maildir++ tree as `wispd import dovecot` brings it over: the folders
//! (`.Folder.Sub`, names in modified UTF-7 as Dovecot writes them), `dovecot-uidlist`
//! (UIDVALIDITY, next UID and each file's UID), `dovecot-keywords`, the flags in file names
//! (`:2,FRS` and keyword letters), internal dates from the files' mtimes, and `subscriptions`.
//!
//! Only file names and metadata are held; a message's bytes are read when it is sent.
//!
//! The tree belongs to the user and the import runs as root: nothing is read through a
//! symbolic link (a link in `cur/` to `/etc/shadow`, a `.Folder` linked to another user's
//! Maildir), and every file is read with a bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Most bytes of a `dovecot-uidlist` read (a million messages take about 100 MB).
/// Messages one folder may have: its file list is held while it is imported (about 200 bytes
/// each).
pub const FOLDER_MAX: usize = 2_000_000;
const UIDLIST_MAX: u64 = 128 << 20;
/// Most bytes of `dovecot-keywords`, `subscriptions` or a Sieve script read.
pub const SMALL_FILE_MAX: u64 = 4 << 20;

/// Whose files a tree holds: the owner of its top (a user's Maildir or home). Files of anyone
/// else there are not read: a directory of the path swapped for a link after it was checked,
/// or a hard link to another's file, cannot make the import (root) read what the user can't.
/// A tree root owns is trusted as it is.
#[derive(Debug, Clone, Copy)]
pub struct Owner(Option<u32>);

impl Owner {
    /// The owner of `top` (not followed if it is a link).
    pub fn of(top: &Path) -> std::io::Result<Owner> {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::symlink_metadata(top)?.uid();
        Ok(Owner((uid != 0).then_some(uid)))
    }

    fn check(self, meta: &std::fs::Metadata) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        match self.0 {
            Some(uid) if meta.uid() != uid => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("owned by uid {}, not the mail's owner {uid}", meta.uid()),
            )),
            _ => Ok(()),
        }
    }
}

/// Reads a regular file of `owner` that is not a symbolic link (`O_NOFOLLOW`, then the open
/// file itself checked), at most `limit` bytes (more is an error).
pub fn read_file(path: &Path, limit: u64, owner: Owner) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    owner.check(&meta)?;
    if meta.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(out)
}

/// A small text file, read as [`read_file`] does; `None` when it isn't there.
fn read_text(path: &Path, limit: u64, owner: Owner) -> std::io::Result<Option<String>> {
    match read_file(path, limit, owner) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `path` is a directory itself, not a link to one.
fn real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// One Maildir folder.
#[derive(Debug)]
pub struct Folder {
    /// The IMAP name on wispd: `INBOX`, or the Maildir++ name with `/` for `.` (modified UTF-7
    /// kept, as IMAP clients know it).
    pub name: String,
    /// 0 when the folder has no `dovecot-uidlist`.
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// In UID order.
    pub messages: Vec<Message>,
    /// Files that could not be read as messages: (file, why).
    pub skipped: Vec<(String, String)>,
}

/// One message file.
#[derive(Debug, Clone)]
pub struct Message {
    pub uid: u32,
    pub path: PathBuf,
    pub flags: Vec<String>,
    /// Unix seconds (the file's mtime, which is Dovecot's received date).
    pub internal_date: i64,
    pub size: u64,
}

/// The folders under a Maildir++ root: the root itself (`INBOX`) and every `.Name` directory
/// that is a maildir (has `cur` or `new`), sorted by name, parents first.
pub fn folders(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    if !real_dir(root) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a directory (or is a symbolic link)",
                root.display()
            ),
        ));
    }
    let mut out = vec![("INBOX".to_string(), root.to_path_buf())];
    let mut subs = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let file = entry.file_name();
        let Some(name) = file.to_str() else { continue };
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if rest.is_empty() || rest == "." {
            continue;
        }
        let path = entry.path();
        if !(real_dir(&path.join("cur")) || real_dir(&path.join("new"))) {
            continue;
        }
        let wispd = match rest.strip_prefix("INBOX.") {
            Some(under) => format!("INBOX/{}", under.replace('.', "/")),
            None => rest.replace('.', "/"),
        };
        subs.push((wispd, path));
    }
    subs.sort();
    out.extend(subs);
    Ok(out)
}

/// `dovecot-uidlist`: (UIDVALIDITY, next UID, base file name → UID).
pub fn parse_uidlist(text: &str) -> Result<(u32, u32, HashMap<String, u32>), String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty")?;
    let mut fields = header.split_whitespace();
    let version = fields.next().ok_or("no version")?;
    let (mut validity, mut next) = (0u32, 0u32);
    match version {
        "1" => {
            validity = fields
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or("no UIDVALIDITY")?;
            next = fields
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or("no next UID")?;
        }
        "2" | "3" => {
            for f in fields {
                if let Some(v) = f.strip_prefix('V') {
                    validity = v.parse().map_err(|_| format!("bad UIDVALIDITY {v:?}"))?;
                } else if let Some(n) = f.strip_prefix('N') {
                    next = n.parse().map_err(|_| format!("bad next UID {n:?}"))?;
                }
            }
        }
        other => return Err(format!("unknown version {other:?}")),
    }
    let mut uids = HashMap::new();
    for line in lines {
        let line = line.trim_end();
        let Some((uid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        // v3: extension fields, then `:` and the file name; v1: the file name
        let file = match rest.find(" :").map(|i| &rest[i + 2..]) {
            Some(f) => f,
            None => rest.strip_prefix(':').unwrap_or(rest),
        };
        let base = file.split(':').next().unwrap_or(file);
        if uid > 0 && !base.is_empty() {
            uids.insert(base.to_string(), uid);
            next = next.max(uid.saturating_add(1));
        }
    }
    Ok((validity, next, uids))
}

/// `dovecot-keywords`: keyword index → name (index 0 is the letter `a`).
pub fn parse_keywords(text: &str) -> HashMap<u8, String> {
    text.lines()
        .filter_map(|l| {
            let (i, name) = l.split_once(' ')?;
            let i: u8 = i.parse().ok()?;
            (i < 26 && !name.trim().is_empty()).then(|| (i, name.trim().to_string()))
        })
        .collect()
}

/// The IMAP flags of a file name's `:2,` part.
pub fn flags_of(file: &str, keywords: &HashMap<u8, String>) -> Vec<String> {
    let Some((_, info)) = file.split_once(":2,") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in info.chars().take_while(|&c| c != ',') {
        let f = match c {
            'D' => "\\Draft",
            'F' => "\\Flagged",
            'R' => "\\Answered",
            'S' => "\\Seen",
            'T' => "\\Deleted",
            'P' => "$Forwarded",
            'a'..='z' => match keywords.get(&(c as u8 - b'a')) {
                Some(k) => k.as_str(),
                None => continue,
            },
            _ => continue,
        };
        if !out.iter().any(|x: &String| x == f) {
            out.push(f.to_string());
        }
    }
    out
}

/// Reads one folder's file list, UIDs and flags. Files the uidlist doesn't know (delivered
/// since Dovecot last looked) get the next UIDs in the order of their mtimes and names; a
/// folder without a uidlist is numbered from 1 that way and has no UIDVALIDITY.
pub fn scan(name: &str, path: &Path, owner: Owner) -> std::io::Result<Folder> {
    let uidlist = path.join("dovecot-uidlist");
    let (uidvalidity, mut uidnext, known) = match read_text(&uidlist, UIDLIST_MAX, owner)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", uidlist.display())))?
    {
        Some(text) => parse_uidlist(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", uidlist.display()),
            )
        })?,
        None => (0, 1, HashMap::new()),
    };
    let keywords = read_text(&path.join("dovecot-keywords"), SMALL_FILE_MAX, owner)
        .ok()
        .flatten()
        .map(|t| parse_keywords(&t))
        .unwrap_or_default();
    let mut folder = Folder {
        name: name.to_string(),
        uidvalidity,
        uidnext,
        messages: Vec::new(),
        skipped: Vec::new(),
    };
    let mut unknown = Vec::new();
    let mut taken = std::collections::HashSet::new();
    // new/ first: a file Dovecot moves to cur/ between the two listings is still seen
    for sub in ["new", "cur"] {
        let dir = path.join(sub);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            folder.skipped.push((
                dir.display().to_string(),
                "not a directory (or a symbolic link)".into(),
            ));
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else {
                folder.skipped.push((
                    entry.path().display().to_string(),
                    "the file name is not UTF-8".into(),
                ));
                continue;
            };
            if file.starts_with('.') {
                continue;
            }
            // DirEntry::metadata does not follow a link: links and devices are left out
            let meta = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    folder.skipped.push((
                        entry.path().display().to_string(),
                        "not a regular file (a symbolic link, a device…)".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    folder
                        .skipped
                        .push((entry.path().display().to_string(), e.to_string()));
                    continue;
                }
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if folder.messages.len() + unknown.len() >= FOLDER_MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("more than {FOLDER_MAX} messages in one folder"),
                ));
            }
            let base = file.split(':').next().unwrap_or(file);
            let m = Message {
                uid: 0,
                path: entry.path(),
                flags: flags_of(file, &keywords),
                internal_date: mtime,
                size: meta.len(),
            };
            match known.get(base) {
                Some(&uid) if taken.insert(uid) => folder.messages.push(Message { uid, ..m }),
                _ => unknown.push(m),
            }
        }
    }
    if uidvalidity == 0 {
        // no uidlist: nothing was promised to clients; number from 1
        uidnext = 1;
    }
    // a uidlist without its next UID (or a broken one) still numbers from 1
    uidnext = uidnext.max(1);
    unknown.sort_by(|a, b| (a.internal_date, &a.path).cmp(&(b.internal_date, &b.path)));
    for m in unknown {
        folder.messages.push(Message { uid: uidnext, ..m });
        uidnext = uidnext.saturating_add(1);
    }
    folder.messages.sort_by_key(|m| m.uid);
    folder.uidvalidity = uidvalidity;
    folder.uidnext = uidnext.max(
        folder
            .messages
            .last()
            .map_or(1, |m| m.uid.saturating_add(1)),
    );
    Ok(folder)
}

/// Where a message file is now, when Dovecot renamed it since the scan (a flag change
/// rewrites the `:2,` part, a first look moves it from new/ to cur/): the file of the same base
/// name in cur/ or new/.
pub fn moved(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let base = name.split(':').next()?;
    let folder = path.parent()?.parent()?;
    ["cur", "new"].iter().find_map(|sub| {
        std::fs::read_dir(folder.join(sub)).ok()?.find_map(|e| {
            let e = e.ok()?;
            let n = e.file_name();
            let n = n.to_str()?;
            (n.split(':').next() == Some(base) && e.file_type().ok()?.is_file()).then(|| e.path())
        })
    })
}

/// The folder names in the root's `subscriptions` file, as wispd names them (`/` for the
/// hierarchy, modified UTF-7). Dovecot writes version 2 (a `V\t2` header, hierarchy levels
/// separated by tabs, names in UTF-8) or the older one name a line.
pub fn subscriptions(root: &Path, owner: Owner) -> Vec<String> {
    let Ok(Some(text)) = read_text(&root.join("subscriptions"), SMALL_FILE_MAX, owner) else {
        return Vec::new();
    };
    let mut lines = text.lines().peekable();
    let v2 = lines.peek().is_some_and(|l| l.starts_with("V\t"));
    if v2 {
        lines.next();
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let name = if v2 {
                l.split('\t').collect::<Vec<_>>().join("/")
            } else {
                l.replace('.', "/")
            };
            let name = if name.is_ascii() {
                name
            } else {
                encode_mutf7(&name)
            };
            if name.eq_ignore_ascii_case("INBOX") {
                "INBOX".to_string()
            } else {
                name
            }
        })
        .collect()
}

/// RFC 3501 5.1.3 modified UTF-7 of a mailbox name.
pub fn encode_mutf7(name: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::IMAP_MUTF7,
        base64::engine::general_purpose::NO_PAD,
    );
    let mut out = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&b64.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// A message as IMAP clients saw it from Dovecot, which serves Maildir files with every bare
/// LF as CRLF.
pub fn crlf(data: Vec<u8>) -> Vec<u8> {
    let bare = data
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + bare);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidlists_of_both_versions_read() {
        let (v, n, uids) = parse_uidlist(
            "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n1 :1276528487.M364837P9451.kurkku,S=1355,W=1394\n7 W2 S1 :1276.M1.host:2,S\n",
        )
        .expect("v3");
        assert_eq!((v, n), (1_275_660_208, 25022));
        assert_eq!(uids["1276528487.M364837P9451.kurkku,S=1355,W=1394"], 1);
        assert_eq!(uids["1276.M1.host"], 7);
        let (v, n, uids) = parse_uidlist("1 1000 5\n4 abc.host\n9 def.host\n").expect("v1");
        assert_eq!((v, n, uids["abc.host"]), (1000, 10, 4));
        assert!(parse_uidlist("9 x").is_err());
    }

    #[test]
    fn flags_and_keyword_letters() {
        let kw = parse_keywords("0 $Label1\n1 Important\n30 Bad\n");
        assert_eq!(
            flags_of("1.M1.h,S=5:2,FRSab", &kw),
            ["\\Flagged", "\\Answered", "\\Seen", "$Label1", "Important"]
        );
        assert_eq!(flags_of("1.M1.h:2,TDz", &kw), ["\\Deleted", "\\Draft"]);
        assert!(flags_of("1.M1.h", &kw).is_empty());
    }

    #[test]
    fn names_bodies_and_subscriptions() {
        assert_eq!(encode_mutf7("Été & co"), "&AMk-t&AOk- &- co");
        assert_eq!(encode_mutf7("日本語"), "&ZeVnLIqe-");
        assert_eq!(encode_mutf7("😀"), "&2D3eAA-");
        assert_eq!(crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"\n".to_vec()), b"\r\n");
        let d = std::env::temp_dir().join(format!("wispd-maildir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(
            d.join("subscriptions"),
            "V\t2\n\nArchive\t2024\nÉté\nINBOX\n",
        )
        .expect("write");
        let owner = Owner::of(&d).expect("owner");
        assert_eq!(
            subscriptions(&d, owner),
            ["Archive/2024", "&AMk-t&AOk-", "INBOX"]
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
