//! Command arguments for syntax imap-codec 1.0 doesn't parse: LIST-EXTENDED (RFC 5258) with
//! LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154) options. A small tokenizer over atoms,
//! quoted strings, literals (their data is inline: the framer has read it) and parenthesised
//! lists.

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An atom, quoted string or literal: its bytes.
    Str(Vec<u8>),
    List(Vec<Arg>),
}

impl Arg {
    fn word(&self) -> Option<String> {
        match self {
            Arg::Str(s) => Some(String::from_utf8_lossy(s).to_ascii_uppercase()),
            Arg::List(_) => None,
        }
    }
}

/// Patterns one LIST may carry (each is matched against every mailbox name).
const MAX_PATTERNS: usize = 64;

/// Deepest parenthesis nesting accepted.
const MAX_DEPTH: usize = 8;

/// Splits `text` (the command after its name, CRLF included or not) into arguments.
pub fn tokenize(text: &[u8]) -> Option<Vec<Arg>> {
    let text = text
        .strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))
        .unwrap_or(text);
    let mut i = 0;
    let out = list(text, &mut i, 0)?;
    (i == text.len()).then_some(out)
}

fn list(t: &[u8], i: &mut usize, depth: usize) -> Option<Vec<Arg>> {
    let mut out = Vec::new();
    loop {
        while t.get(*i) == Some(&b' ') {
            *i += 1;
        }
        match t.get(*i) {
            None => return (depth == 0).then_some(out),
            Some(b')') => {
                if depth == 0 {
                    return None;
                }
                *i += 1;
                return Some(out);
            }
            Some(b'(') => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                *i += 1;
                out.push(Arg::List(list(t, i, depth + 1)?));
            }
            Some(b'"') => {
                *i += 1;
                let mut v = Vec::new();
                loop {
                    match *t.get(*i)? {
                        b'"' => break,
                        b'\\' => {
                            *i += 1;
                            v.push(*t.get(*i)?);
                        }
                        b'\r' | b'\n' => return None,
                        c => v.push(c),
                    }
                    *i += 1;
                }
                *i += 1;
                out.push(Arg::Str(v));
            }
            Some(b'{') => {
                let close = *i + t[*i..].iter().position(|&c| c == b'}')?;
                let digits = std::str::from_utf8(&t[*i + 1..close]).ok()?;
                let n: usize = digits.trim_end_matches(['+', '-']).parse().ok()?;
                let start = close + 3; // `}\r\n`
                if t.get(close + 1..start)? != b"\r\n" {
                    return None;
                }
                let end = start.checked_add(n)?;
                out.push(Arg::Str(t.get(start..end)?.to_vec()));
                *i = end;
            }
            Some(_) => {
                let start = *i;
                while let Some(&c) = t.get(*i) {
                    if matches!(c, b' ' | b'(' | b')' | b'"' | b'{') || c < 0x20 {
                        break;
                    }
                    *i += 1;
                }
                if *i == start {
                    return None;
                }
                out.push(Arg::Str(t[start..*i].to_vec()));
            }
        }
    }
}

/// A STATUS data item (RFC 3501, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE, RFC 9208 DELETED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
}

impl StatusItem {
    pub fn parse(word: &str) -> Option<StatusItem> {
        Some(match word.to_ascii_uppercase().as_str() {
            "MESSAGES" => StatusItem::Messages,
            "RECENT" => StatusItem::Recent,
            "UIDNEXT" => StatusItem::UidNext,
            "UIDVALIDITY" => StatusItem::UidValidity,
            "UNSEEN" => StatusItem::Unseen,
            "DELETED" => StatusItem::Deleted,
            "SIZE" => StatusItem::Size,
            "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
            _ => return None,
        })
    }
}

/// `LIST [(selection)] reference pattern|(patterns) [RETURN (options)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCommand {
    pub reference: String,
    pub patterns: Vec<String>,
    /// Selection: only subscribed names (existing or not).
    pub subscribed: bool,
    /// Selection: parents whose children match are returned with CHILDINFO.
    pub recursive: bool,
    /// Selection: only mailboxes with a special use.
    pub special_use: bool,
    /// Return: `\Subscribed` attributes.
    pub return_subscribed: bool,
    /// Return: a STATUS response after each selectable mailbox.
    pub status: Option<Vec<StatusItem>>,
    /// Whether any extended syntax was used (LIST-EXTENDED responses then).
    pub extended: bool,
}

/// Parses LIST's arguments; `Err` carries the reason for a `BAD`.
pub fn list_command(args: &[Arg]) -> Result<ListCommand, &'static str> {
    let mut c = ListCommand::default();
    let mut rest = args;
    if let Some(Arg::List(sel)) = rest.first() {
        c.extended = true;
        for o in sel {
            match o.word().as_deref() {
                Some("SUBSCRIBED") => c.subscribed = true,
                Some("RECURSIVEMATCH") => c.recursive = true,
                Some("SPECIAL-USE") => c.special_use = true,
                Some("REMOTE") => {}
                _ => return Err("Unknown LIST selection option"),
            }
        }
        // RECURSIVEMATCH alone is an error (RFC 5258 3.1)
        if c.recursive && !c.subscribed && !c.special_use {
            return Err("RECURSIVEMATCH needs another selection option");
        }
        rest = &rest[1..];
    }
    let (Some(Arg::Str(reference)), Some(pattern)) = (rest.first(), rest.get(1)) else {
        return Err("LIST needs a reference and a mailbox pattern");
    };
    c.reference = String::from_utf8_lossy(reference).into_owned();
    match pattern {
        Arg::Str(p) => c.patterns.push(String::from_utf8_lossy(p).into_owned()),
        Arg::List(ps) => {
            c.extended = true;
            for p in ps {
                let Arg::Str(p) = p else {
                    return Err("Invalid mailbox pattern");
                };
                c.patterns.push(String::from_utf8_lossy(p).into_owned());
            }
            if c.patterns.is_empty() {
                return Err("Empty pattern list");
            }
            if c.patterns.len() > MAX_PATTERNS {
                return Err("Too many mailbox patterns");
            }
        }
    }
    rest = &rest[2..];
    match rest {
        [] => {}
        [kw, Arg::List(opts)] if kw.word().as_deref() == Some("RETURN") => {
            c.extended = true;
            let mut k = 0;
            while k < opts.len() {
                match opts[k].word().as_deref() {
                    Some("SUBSCRIBED") => c.return_subscribed = true,
                    // always returned, whatever is asked
                    Some("CHILDREN" | "SPECIAL-USE") => {}
                    Some("STATUS") => {
                        let Some(Arg::List(items)) = opts.get(k + 1) else {
                            return Err("STATUS needs a list of items");
                        };
                        let mut parsed = Vec::new();
                        for it in items {
                            let item = it
                                .word()
                                .and_then(|w| StatusItem::parse(&w))
                                .ok_or("Unknown STATUS item")?;
                            parsed.push(item);
                        }
                        c.status = Some(parsed);
                        k += 1;
                    }
                    _ => return Err("Unknown LIST return option"),
                }
                k += 1;
            }
        }
        _ => return Err("Invalid LIST arguments"),
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ListCommand, &'static str> {
        list_command(&tokenize(s.as_bytes()).ok_or("tokenize")?)
    }

    #[test]
    fn tokens() {
        assert_eq!(
            tokenize(b"(a \"b c\" {2}\r\nxy) d\r\n"),
            Some(vec![
                Arg::List(vec![
                    Arg::Str(b"a".to_vec()),
                    Arg::Str(b"b c".to_vec()),
                    Arg::Str(b"xy".to_vec())
                ]),
                Arg::Str(b"d".to_vec())
            ])
        );
        assert_eq!(tokenize(b"(a"), None);
        assert_eq!(tokenize(b"a)"), None);
        assert_eq!(tokenize(b"{5}\r\nab"), None, "literal past the end");
        assert_eq!(tokenize(b"{99999999999999999999}\r\n"), None);
        assert_eq!(tokenize(&b"(".repeat(100)), None, "nesting bounded");
    }

    #[test]
    fn list_extended_rfc5258_examples() {
        let c = parse("(SUBSCRIBED) \"\" \"*\"").expect("ok");
        assert!(c.subscribed && c.extended);
        let c = parse("\"\" (\"INBOX\" \"Drafts\" \"Sent/%\")").expect("ok");
        assert_eq!(c.patterns, ["INBOX", "Drafts", "Sent/%"]);
        let c = parse("\"\" % RETURN (CHILDREN STATUS (MESSAGES UNSEEN SIZE))").expect("ok");
        assert_eq!(
            c.status,
            Some(vec![
                StatusItem::Messages,
                StatusItem::Unseen,
                StatusItem::Size
            ])
        );
        assert!(parse("(RECURSIVEMATCH) \"\" %").is_err());
        assert!(parse("(SUBSCRIBED RECURSIVEMATCH) \"\" %").is_ok());
        assert!(parse("(BOGUS) \"\" %").is_err());
        assert!(parse("\"\" % RETURN (STATUS (NOPE))").is_err());
        let plain = parse("\"\" *").expect("ok");
        assert!(!plain.extended);
    }
}
