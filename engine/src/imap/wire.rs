//! IMAP string forms for responses: atoms, quoted strings, literals, NIL.

/// Appends `s` as a quoted string when it can be one (short, 7-bit, no CR/LF), else as a
/// literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// A string, or NIL for none.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Message data: always a literal (as Dovecot sends it), or NIL.
pub fn nliteral(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => literal(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name as an astring: quoted unless it is a plain atom.
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    let atom = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){ %*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(name.as_bytes());
    } else {
        string(out, name.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_literals() {
        let mut o = Vec::new();
        string(&mut o, b"a \"b\" \\c");
        assert_eq!(o, b"\"a \\\"b\\\" \\\\c\"");
        o.clear();
        string(&mut o, "ü".as_bytes());
        assert_eq!(o, "{2}\r\nü".as_bytes());
        o.clear();
        mailbox(&mut o, "Sent Items");
        assert_eq!(o, b"\"Sent Items\"");
    }
}
