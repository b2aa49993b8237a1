//! CONDSTORE (RFC 7162) modifiers that imap-codec 1.0 doesn't parse: `SELECT box (CONDSTORE)`,
//! `FETCH set items (CHANGEDSINCE n)`, the `MODSEQ` fetch item, `STORE set (UNCHANGEDSINCE n)`
//! and the `MODSEQ n` search key (at the top level). They are taken out of the command text
//! before it is parsed and handed to the command as [`Modifiers`].

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub select: bool,
    pub changed_since: Option<u64>,
    pub unchanged_since: Option<u64>,
    pub fetch_modseq: bool,
    pub search_modseq: Option<u64>,
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
    if !matches!(verb, "SELECT" | "EXAMINE" | "FETCH" | "STORE" | "SEARCH") {
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
            }
        }
        "FETCH" => {
            m.changed_since = take_paren(&mut text, "CHANGEDSINCE");
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
