//! Command syntax imap-codec 1.0 doesn't parse: CONDSTORE/QRESYNC (RFC 7162) modifiers —
//! `SELECT box (CONDSTORE)`, `SELECT box (QRESYNC (…))`, `FETCH set items (CHANGEDSINCE n
//! [VANISHED])`, the `MODSEQ` fetch item, `STORE set (UNCHANGEDSINCE n)`, the `MODSEQ n` search
//! key (at the top level) — ESEARCH's `SEARCH RETURN (…)` (RFC 4731) and STATUS `SIZE`
//! (RFC 8438). They are taken out of the command text before it is parsed and handed to the
//! command as [`Modifiers`].

/// `SELECT box (QRESYNC (uidvalidity modseq [known-uids] [seq-match]))` (RFC 7162 3.2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qresync {
    pub uidvalidity: u32,
    pub modseq: u64,
    /// UID ranges the client knows (inclusive); `None`: all.
    pub known_uids: Option<Vec<(u32, u32)>>,
}

/// What `SEARCH RETURN (…)` asks for (RFC 4731); all false with `RETURN ()` means ALL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub select: bool,
    pub qresync: Option<Qresync>,
    pub changed_since: Option<u64>,
    /// `VANISHED` in a UID FETCH's modifiers.
    pub vanished: bool,
    pub unchanged_since: Option<u64>,
    pub fetch_modseq: bool,
    pub search_modseq: Option<u64>,
    pub search_return: Option<SearchReturn>,
    /// `SIZE` among STATUS items.
    pub status_size: bool,
    /// `SIZE` was the only STATUS item (MESSAGES stood in for the parser).
    pub status_size_only: bool,
    /// Something was malformed: the command gets `BAD` with this.
    pub error: Option<&'static str>,
}

/// A sequence set of UIDs (`1:5,9,12:*`) as inclusive ranges; `*` is `u32::MAX`.
pub fn uid_ranges(text: &str) -> Option<Vec<(u32, u32)>> {
    let num = |s: &str| -> Option<u32> {
        if s == "*" {
            Some(u32::MAX)
        } else {
            s.parse::<u32>().ok().filter(|&v| v > 0)
        }
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let v = num(part)?;
                (v, v)
            }
        };
        out.push((a.min(b), a.max(b)));
    }
    Some(out)
}

/// The text between the parenthesis at `open` and its match, and the index after the match.
fn balanced(text: &str, open: usize) -> Option<(&str, usize)> {
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[open + 1..open + i], open + i + 1));
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses the inside of `(QRESYNC (…))`.
fn qresync_params(inner: &str) -> Option<Qresync> {
    // seq-match data, `(seqs uids)`, only narrows what the server may send: not needed here
    let head = inner.split('(').next().unwrap_or_default();
    let mut words = head.split_ascii_whitespace();
    let uidvalidity = words.next()?.parse::<u32>().ok().filter(|&v| v > 0)?;
    let modseq = words.next()?.parse::<u64>().ok().filter(|&v| v > 0)?;
    let known_uids = match words.next() {
        Some(w) => Some(uid_ranges(w)?),
        None => None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(Qresync {
        uidvalidity,
        modseq,
        known_uids,
    })
}

impl Modifiers {
    /// Whether the command is a CONDSTORE enabling command.
    pub fn enables(&self) -> bool {
        self.select
            || self.changed_since.is_some()
            || self.unchanged_since.is_some()
            || self.fetch_modseq
            || self.search_modseq.is_some()
    }
}

/// Removes `( NAME n )` (case-insensitive) from `text`, returning n.
fn take_paren(text: &mut String, name: &str) -> Option<u64> {
    let upper = text.to_ascii_uppercase();
    let start = upper.find(&format!("({name} "))?;
    let end = start + upper[start..].find(')')?;
    let n = text[start + name.len() + 2..end].trim().parse().ok()?;
    let before = text[..start].trim_end_matches(' ').to_string();
    let after = text[end + 1..].trim_start_matches(' ').to_string();
    *text = if after.is_empty() || after.starts_with("\r\n") {
        format!("{before}{after}")
    } else {
        format!("{before} {after}")
    };
    Some(n)
}

/// Splits off the command's modifiers. `verb` is the upper-case command name (after `UID`).
pub fn strip(verb: &str, cmd: Vec<u8>) -> (Vec<u8>, Modifiers) {
    let mut m = Modifiers::default();
    if !matches!(
        verb,
        "SELECT" | "EXAMINE" | "FETCH" | "STORE" | "SEARCH" | "STATUS"
    ) {
        return (cmd, m);
    }
    let mut text = match String::from_utf8(cmd) {
        Ok(t) => t,
        Err(e) => return (e.into_bytes(), m),
    };
    match verb {
        "SELECT" | "EXAMINE" => {
            let upper = text.to_ascii_uppercase();
            if let Some(p) = upper.rfind(" (CONDSTORE)") {
                text.replace_range(p..p + " (CONDSTORE)".len(), "");
                m.select = true;
            } else if let Some(p) = upper.rfind(" (QRESYNC (") {
                match balanced(&text, p + 1) {
                    Some((inner, end)) => {
                        // inner: `QRESYNC (…)`
                        let params = inner
                            .find('(')
                            .and_then(|o| balanced(inner, o))
                            .and_then(|(q, _)| qresync_params(q));
                        match params {
                            Some(q) => m.qresync = Some(q),
                            None => m.error = Some("Invalid QRESYNC parameters"),
                        }
                        text.replace_range(p..end, "");
                    }
                    None => m.error = Some("Invalid QRESYNC parameters"),
                }
            }
        }
        "STATUS" => {
            // `SIZE` among the items: taken out, answered by the server itself
            if let Some(open) = text.rfind('(') {
                let close = text[open..].find(')').map(|c| open + c);
                if let Some(close) = close {
                    let items: Vec<&str> = text[open + 1..close].split_ascii_whitespace().collect();
                    if items.iter().any(|i| i.eq_ignore_ascii_case("SIZE")) {
                        m.status_size = true;
                        let mut rest: Vec<&str> = items
                            .into_iter()
                            .filter(|i| !i.eq_ignore_ascii_case("SIZE"))
                            .collect();
                        if rest.is_empty() {
                            rest.push("MESSAGES");
                            m.status_size_only = true;
                        }
                        let joined = rest.join(" ");
                        text.replace_range(open + 1..close, &joined);
                    }
                }
            }
        }
        "FETCH" => {
            let upper = text.to_ascii_uppercase();
            if let Some(p) = upper.rfind(" (CHANGEDSINCE ") {
                match balanced(&text, p + 1) {
                    Some((inner, end)) => {
                        let mut words = inner.split_ascii_whitespace().skip(1);
                        match words.next().and_then(|n| n.parse::<u64>().ok()) {
                            Some(n) => m.changed_since = Some(n),
                            None => m.error = Some("Invalid CHANGEDSINCE"),
                        }
                        for w in words {
                            if w.eq_ignore_ascii_case("VANISHED") {
                                m.vanished = true;
                            } else {
                                m.error = Some("Unknown FETCH modifier");
                            }
                        }
                        text.replace_range(p..end, "");
                    }
                    None => m.error = Some("Invalid FETCH modifiers"),
                }
            }
            // the MODSEQ item, alone or in a list (never inside a section's brackets)
            let mut out: Vec<u8> = Vec::with_capacity(text.len());
            let mut depth_brackets = 0usize;
            let bytes = text.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let c = bytes[i];
                match c {
                    b'[' => depth_brackets += 1,
                    b']' => depth_brackets = depth_brackets.saturating_sub(1),
                    _ => {}
                }
                let word_start = i == 0 || matches!(bytes[i - 1], b' ' | b'(');
                if depth_brackets == 0
                    && word_start
                    && bytes
                        .get(i..i + 6)
                        .is_some_and(|w| w.eq_ignore_ascii_case(b"MODSEQ"))
                    && matches!(bytes.get(i + 6), Some(b' ' | b')' | b'\r' | b'\n'))
                {
                    m.fetch_modseq = true;
                    i += 6;
                    if bytes.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    continue;
                }
                out.push(c);
                i += 1;
            }
            // only ASCII words were taken out: still UTF-8
            let out = String::from_utf8(out).unwrap_or_default();
            text = out.replace(" )", ")").replace("()", "(UID)");
            if let Some(head) = text.strip_suffix(" \r\n") {
                // `FETCH 1 MODSEQ`: the only item is gone
                text = format!("{head} UID\r\n");
            }
        }
        "STORE" => m.unchanged_since = take_paren(&mut text, "UNCHANGEDSINCE"),
        "SEARCH" => {
            // `SEARCH RETURN (…)` right after the command name (RFC 4731)
            let upper = text.to_ascii_uppercase();
            if let Some(p) = upper.find("SEARCH RETURN (") {
                let open = p + "SEARCH RETURN ".len();
                match balanced(&text, open) {
                    Some((inner, end)) => {
                        let mut r = SearchReturn::default();
                        for w in inner.split_ascii_whitespace() {
                            match w.to_ascii_uppercase().as_str() {
                                "MIN" => r.min = true,
                                "MAX" => r.max = true,
                                "ALL" => r.all = true,
                                "COUNT" => r.count = true,
                                _ => m.error = Some("Unknown SEARCH return option"),
                            }
                        }
                        if !(r.min || r.max || r.count) {
                            r.all = true;
                        }
                        m.search_return = Some(r);
                        text.replace_range(p + "SEARCH".len()..end, "");
                    }
                    None => m.error = Some("Invalid SEARCH return options"),
                }
            }
            let upper = text.to_ascii_uppercase();
            if let Some(p) = upper.find(" MODSEQ ") {
                let rest = &text[p + 8..];
                let end = rest.find([' ', '\r', ')']).unwrap_or(rest.len());
                if let Ok(n) = rest[..end].parse::<u64>() {
                    m.search_modseq = Some(n);
                    text.replace_range(p..p + 8 + end, " ALL");
                }
            }
        }
        _ => {}
    }
    (text.into_bytes(), m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(verb: &str, cmd: &str) -> (String, Modifiers) {
        let (b, m) = strip(verb, cmd.as_bytes().to_vec());
        (String::from_utf8(b).expect("utf8"), m)
    }

    #[test]
    fn modifiers_come_out_and_the_rest_parses() {
        assert_eq!(
            s("SELECT", "a SELECT INBOX (CONDSTORE)\r\n").0,
            "a SELECT INBOX\r\n"
        );
        let (t, m) = s(
            "FETCH",
            "a UID FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12)\r\n",
        );
        assert_eq!(t, "a UID FETCH 1:* (FLAGS)\r\n");
        assert_eq!((m.changed_since, m.fetch_modseq), (Some(12), true));
        assert_eq!(s("FETCH", "a FETCH 1 MODSEQ\r\n").0, "a FETCH 1 UID\r\n");
        let (t, m) = s("FETCH", "a FETCH 1 (MODSEQ)\r\n");
        assert_eq!((t.as_str(), m.fetch_modseq), ("a FETCH 1 (UID)\r\n", true));
        assert_eq!(s("FETCH", "a FETCH 1 xééé\r\n").0, "a FETCH 1 xééé\r\n");
        assert!(
            !s("FETCH", "a FETCH 1 BODY[HEADER.FIELDS (MODSEQ)]\r\n")
                .1
                .fetch_modseq
        );
        let (t, m) = s(
            "STORE",
            "a STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)\r\n",
        );
        assert_eq!(
            (t.as_str(), m.unchanged_since),
            ("a STORE 1:3 +FLAGS (\\Seen)\r\n", Some(5))
        );
        let (t, m) = s("SEARCH", "a SEARCH MODSEQ 7 UNSEEN\r\n");
        assert_eq!(
            (t.as_str(), m.search_modseq),
            ("a SEARCH ALL UNSEEN\r\n", Some(7))
        );
    }
}
