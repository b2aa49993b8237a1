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

/// `BINARY[part]<partial>`, `BINARY.PEEK[…]` or `BINARY.SIZE[part]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryItem {
    pub peek: bool,
    pub size: bool,
    /// Part numbers (`[]`: the whole message).
    pub part: Vec<u32>,
    pub partial: Option<(u32, u32)>,
}

impl BinaryItem {
    /// The item's name as the response repeats it: `BINARY[1.2]<0>`.
    pub fn name(&self) -> String {
        let part: Vec<String> = self.part.iter().map(ToString::to_string).collect();
        let kind = if self.size { "BINARY.SIZE" } else { "BINARY" };
        match self.partial {
            Some((start, _)) => format!("{kind}[{}]<{start}>", part.join(".")),
            None => format!("{kind}[{}]", part.join(".")),
        }
    }
}

/// Takes the BINARY items out of a FETCH's text (outside brackets); `Err` for a malformed one.
fn binary_items(text: &str) -> Result<(String, Vec<BinaryItem>), &'static str> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut items = Vec::new();
    let (mut i, mut copied, mut depth) = (0, 0, 0usize);
    while i < b.len() {
        match b[i] {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let at_word = i > 0 && matches!(b[i - 1], b' ' | b'(');
        let head = [
            ("BINARY.PEEK[", true, false),
            ("BINARY.SIZE[", false, true),
            ("BINARY[", false, false),
        ]
        .into_iter()
        .find(|(h, _, _)| {
            b.get(i..i + h.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(h.as_bytes()))
        });
        let Some((h, peek, size)) = head.filter(|_| at_word && depth == 0) else {
            i += 1;
            continue;
        };
        let start = i;
        let open = i + h.len();
        let close = open
            + b[open..]
                .iter()
                .position(|&c| c == b']')
                .ok_or("Invalid BINARY section")?;
        let spec = &text[open..close];
        let part: Vec<u32> = if spec.is_empty() {
            Vec::new()
        } else {
            spec.split('.')
                .map(|n| n.parse::<u32>().ok().filter(|&v| v > 0))
                .collect::<Option<_>>()
                .ok_or("BINARY takes part numbers only")?
        };
        let mut end = close + 1;
        let mut partial = None;
        if b.get(end) == Some(&b'<') {
            if size {
                return Err("BINARY.SIZE takes no partial");
            }
            let gt = end
                + b[end..]
                    .iter()
                    .position(|&c| c == b'>')
                    .ok_or("Invalid partial")?;
            let (a, l) = text[end + 1..gt].split_once('.').ok_or("Invalid partial")?;
            partial = Some((
                a.parse().map_err(|_| "Invalid partial")?,
                l.parse::<u32>()
                    .ok()
                    .filter(|&v| v > 0)
                    .ok_or("Invalid partial")?,
            ));
            end = gt + 1;
        }
        if b.get(end) == Some(&b' ') {
            end += 1;
        }
        out.push_str(&text[copied..start]);
        items.push(BinaryItem {
            peek,
            size,
            part,
            partial,
        });
        i = end;
        copied = end;
    }
    out.push_str(&text[copied..]);
    Ok((out, items))
}

/// What `SEARCH RETURN (…)` asks for (RFC 4731); all false with `RETURN ()` means ALL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// SEARCHRES (RFC 5182): keep the result as `$`.
    pub save: bool,
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
    /// The `MODSEQ` search keys, in order: each was replaced by the search key
    /// `HEADER X-Wispd-Modseq-<index> ""` (see [`MODSEQ_KEY`]) so imap-codec parses the
    /// rest, wherever in the search tree it stood.
    pub search_modseqs: Vec<u64>,
    pub search_return: Option<SearchReturn>,
    /// BINARY fetch items (RFC 3516), in order.
    pub binary: Vec<BinaryItem>,
    /// `SIZE` among STATUS items.
    pub status_size: bool,
    /// `SIZE` was the only STATUS item (MESSAGES stood in for the parser).
    pub status_size_only: bool,
    /// Something was malformed: the command gets `BAD` with this.
    pub error: Option<&'static str>,
}

/// UID ranges, sorted and merged, for membership tests in O(log n) (a client's set can hold
/// thousands of ranges, tested against every UID of a mailbox).
pub fn normalize(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    crate::mailbox::merge(ranges)
}

/// Whether `uid` is in normalized `ranges`.
pub fn in_ranges(ranges: &[(u32, u32)], uid: u32) -> bool {
    let i = ranges.partition_point(|&(_, b)| b < uid);
    ranges.get(i).is_some_and(|&(a, _)| a <= uid)
}

/// A sequence set of UIDs (`1:5,9,12:*`) as inclusive ranges, normalized; `*` is `u32::MAX`.
pub fn uid_ranges(text: &str) -> Option<Vec<(u32, u32)>> {
    uid_ranges_raw(text).map(normalize)
}

fn uid_ranges_raw(text: &str) -> Option<Vec<(u32, u32)>> {
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
            || !self.search_modseqs.is_empty()
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

/// The header name that stands for the MODSEQ search key number `k`: `X-Wispd-Modseq-k`.
pub const MODSEQ_KEY: &str = "X-Wispd-Modseq-";

/// The index after the quoted string or literal (`{n}`, `{n+}`, `{n-}` CRLF and n bytes) that
/// starts at `i`; `i + 1` when what starts there is neither after all.
fn past_string(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'"' {
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        return i + 1;
    }
    let close = b[i..].iter().position(|&c| c == b'}').map(|c| i + c);
    let n = close.and_then(|c| {
        std::str::from_utf8(&b[i + 1..c])
            .ok()?
            .trim_end_matches(['+', '-'])
            .parse::<usize>()
            .ok()
    });
    match (close, n) {
        (Some(c), Some(n)) => c.saturating_add(3).saturating_add(n),
        _ => i + 1,
    }
}

/// Replaces every `MODSEQ [entry-name entry-type] n` search key (outside quoted strings and
/// literals) with a placeholder key; returns the new text and the values, or `None` if there
/// were none.
fn modseq_keys(text: &str) -> Result<Option<(String, Vec<u64>)>, &'static str> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut values = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'{' => i = past_string(b, i),
            _ if (i == 0 || matches!(b[i - 1], b' ' | b'('))
                && b.get(i..i + 7)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"MODSEQ ")) =>
            {
                let start = i;
                let mut j = i + 7;
                // optional entry name (a quoted string) and entry type
                if b.get(j) == Some(&b'"') {
                    j = past_string(b, j);
                    let typ_end = j
                        + 1
                        + b.get(j + 1..)
                            .map_or(0, |r| r.iter().position(|&c| c == b' ').unwrap_or(r.len()));
                    let typ = text.get(j + 1..typ_end).unwrap_or_default();
                    if !["priv", "shared", "all"]
                        .iter()
                        .any(|t| typ.eq_ignore_ascii_case(t))
                    {
                        return Err("Invalid MODSEQ entry type");
                    }
                    j = typ_end + 1;
                }
                let num_end = j + b.get(j..).map_or(0, |r| {
                    r.iter()
                        .position(|c| !c.is_ascii_digit())
                        .unwrap_or(r.len())
                });
                let n: u64 = text
                    .get(j..num_end)
                    .and_then(|d| d.parse().ok())
                    .ok_or("Invalid MODSEQ value")?;
                out.push_str(&text[copied..start]);
                out.push_str(&format!("HEADER {MODSEQ_KEY}{} \"\"", values.len()));
                values.push(n);
                i = num_end;
                copied = num_end;
            }
            _ => i += 1,
        }
    }
    if values.is_empty() {
        return Ok(None);
    }
    if text
        .to_ascii_uppercase()
        .contains(&MODSEQ_KEY.to_ascii_uppercase())
    {
        return Err("Reserved header name in SEARCH");
    }
    out.push_str(&text[copied.min(text.len())..]);
    Ok(Some((out, values)))
}

/// Where a command uses the saved search result `$` (RFC 5182) as a token of its own (not
/// inside strings, literals or atoms like `$Forwarded`): the byte ranges of each.
pub fn saved_result_refs(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut at = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'{' => i = past_string(b, i),
            b'$' if i > 0
                && matches!(b[i - 1], b' ' | b'(' | b',')
                && matches!(
                    b.get(i + 1),
                    None | Some(b' ' | b')' | b'\r' | b'\n' | b',')
                ) =>
            {
                at.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    at
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
            match binary_items(&text) {
                Ok((rest, items)) => {
                    text = rest;
                    m.binary = items;
                }
                Err(why) => m.error = Some(why),
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
                                "SAVE" => r.save = true,
                                _ => m.error = Some("Unknown SEARCH return option"),
                            }
                        }
                        // `RETURN ()` is ALL; SAVE alone returns nothing (RFC 5182 2.4)
                        if !(r.min || r.max || r.count || r.all || r.save) {
                            r.all = true;
                        }
                        m.search_return = Some(r);
                        text.replace_range(p + "SEARCH".len()..end, "");
                    }
                    None => m.error = Some("Invalid SEARCH return options"),
                }
            }
            match modseq_keys(&text) {
                Ok(Some((rewritten, values))) => {
                    text = rewritten;
                    m.search_modseqs = values;
                }
                Ok(None) => {}
                Err(why) => m.error = Some(why),
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
            (t.as_str(), m.search_modseqs.as_slice()),
            (
                "a SEARCH HEADER X-Wispd-Modseq-0 \"\" UNSEEN\r\n",
                &[7u64][..]
            )
        );
        // anywhere in the tree, with an entry name, never inside strings
        let (t, m) = s(
            "SEARCH",
            "a SEARCH OR NOT MODSEQ 3 (MODSEQ \"/flags/\\\\draft\" all 620162338) SUBJECT \"MODSEQ 5\"\r\n",
        );
        assert_eq!(
            t,
            "a SEARCH OR NOT HEADER X-Wispd-Modseq-0 \"\" (HEADER X-Wispd-Modseq-1 \"\") SUBJECT \"MODSEQ 5\"\r\n"
        );
        assert_eq!(m.search_modseqs, [3, 620162338]);
        assert!(
            s("SEARCH", "a SEARCH MODSEQ 99999999999999999999999\r\n")
                .1
                .error
                .is_some()
        );
        assert!(
            s("SEARCH", "a SEARCH MODSEQ \"/x\" bogus 4\r\n")
                .1
                .error
                .is_some()
        );
        let (t, m) = s("SEARCH", "a SEARCH RETURN (MIN COUNT) UNSEEN\r\n");
        assert_eq!(t, "a SEARCH UNSEEN\r\n");
        let r = m.search_return.expect("return");
        assert!(r.min && r.count && !r.max && !r.all);
        let r = s("SEARCH", "a SEARCH RETURN (SAVE) UNSEEN\r\n")
            .1
            .search_return
            .expect("r");
        assert!(r.save && !r.all);
        assert_eq!(
            saved_result_refs("a FETCH $ (FLAGS $Forwarded BODY[HEADER.FIELDS (\"$\")])\r\n"),
            vec![8]
        );
        assert_eq!(
            saved_result_refs("a SEARCH OR $ 1:3 NOT $\r\n"),
            vec![12, 22]
        );
        assert!(saved_result_refs("a SEARCH KEYWORD $Label SUBJECT {1}\r\n$\r\n").is_empty());
        let (t, m) = s("STATUS", "a STATUS INBOX (SIZE)\r\n");
        assert_eq!(t, "a STATUS INBOX (MESSAGES)\r\n");
        assert!(m.status_size && m.status_size_only);
        let (_, m) = s(
            "SELECT",
            "a SELECT INBOX (QRESYNC (67890007 90060115194045000 41,43:211,214:541))\r\n",
        );
        let q = m.qresync.expect("qresync");
        assert_eq!((q.uidvalidity, q.modseq), (67890007, 90060115194045000));
        assert_eq!(q.known_uids, Some(vec![(41, 41), (43, 211), (214, 541)]));
        let (t, m) = s(
            "FETCH",
            "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
        );
        assert_eq!(t, "a UID FETCH 1:* (FLAGS)\r\n");
        assert!(m.vanished && m.changed_since == Some(12345));
        assert!(
            s("SELECT", "a SELECT INBOX (QRESYNC (0 1))\r\n")
                .1
                .error
                .is_some()
        );
    }
}
