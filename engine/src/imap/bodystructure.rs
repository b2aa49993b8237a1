//! What FETCH reads out of a message: ENVELOPE, BODY/BODYSTRUCTURE and BODY[section], from
//! mail-parser's parse. Header values in ENVELOPE are the raw ones (encoded words left for the
//! client to decode, as Dovecot does); sizes and sections are byte ranges of the stored message.

use base64::Engine;
use imap_codec::imap_types::fetch::{Part, Section};
use mail_parser::{Address, HeaderName, Message, MessageParser, MimeHeaders, PartType};

use super::wire;

/// An unfolded, trimmed raw header value.
fn raw_header(msg: &Message<'_>, name: HeaderName<'_>) -> Option<Vec<u8>> {
    let v = msg.header_raw(name)?;
    let unfolded: String = v.replace("\r\n", "").replace('\n', "");
    Some(unfolded.trim().as_bytes().to_vec())
}

/// A display name for ENVELOPE: as is when 7-bit, else as an RFC 2047 encoded word.
fn display_name(name: &str) -> Vec<u8> {
    if name.is_ascii() {
        name.as_bytes().to_vec()
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name)
        )
        .into_bytes()
    }
}

fn addr(out: &mut Vec<u8>, name: Option<&str>, address: Option<&str>) {
    out.push(b'(');
    wire::nstring(out, name.map(display_name).as_deref());
    out.extend_from_slice(b" NIL ");
    let (mailbox, host) = match address.and_then(|a| a.rsplit_once('@')) {
        Some((m, h)) => (Some(m), Some(h)),
        None => (address, None),
    };
    wire::nstring(out, mailbox.map(str::as_bytes));
    out.push(b' ');
    wire::nstring(out, host.map(str::as_bytes));
    out.push(b')');
}

fn addresses(out: &mut Vec<u8>, a: Option<&Address<'_>>) {
    match a {
        None => out.extend_from_slice(b"NIL"),
        Some(Address::List(list)) if list.is_empty() => out.extend_from_slice(b"NIL"),
        Some(Address::List(list)) => {
            out.push(b'(');
            for x in list {
                addr(out, x.name.as_deref(), x.address.as_deref());
            }
            out.push(b')');
        }
        Some(Address::Group(groups)) => {
            out.push(b'(');
            for g in groups {
                match &g.name {
                    Some(n) => {
                        out.extend_from_slice(b"(NIL NIL ");
                        wire::string(out, &display_name(n));
                        out.extend_from_slice(b" NIL)");
                        for x in &g.addresses {
                            addr(out, x.name.as_deref(), x.address.as_deref());
                        }
                        out.extend_from_slice(b"(NIL NIL NIL NIL)");
                    }
                    None => {
                        for x in &g.addresses {
                            addr(out, x.name.as_deref(), x.address.as_deref());
                        }
                    }
                }
            }
            out.push(b')');
        }
    }
}

/// ENVELOPE: date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to, message-id.
pub fn envelope(out: &mut Vec<u8>, msg: &Message<'_>) {
    out.push(b'(');
    wire::nstring(out, raw_header(msg, HeaderName::Date).as_deref());
    out.push(b' ');
    wire::nstring(out, raw_header(msg, HeaderName::Subject).as_deref());
    out.push(b' ');
    let from = msg.from();
    addresses(out, from);
    out.push(b' ');
    addresses(out, msg.sender().or(from));
    out.push(b' ');
    addresses(out, msg.reply_to().or(from));
    out.push(b' ');
    addresses(out, msg.to());
    out.push(b' ');
    addresses(out, msg.cc());
    out.push(b' ');
    addresses(out, msg.bcc());
    out.push(b' ');
    wire::nstring(out, raw_header(msg, HeaderName::InReplyTo).as_deref());
    out.push(b' ');
    wire::nstring(out, raw_header(msg, HeaderName::MessageId).as_deref());
    out.push(b')');
}

fn upper(out: &mut Vec<u8>, s: &str) {
    wire::string(out, s.to_ascii_uppercase().as_bytes());
}

fn params(out: &mut Vec<u8>, attrs: Option<&[mail_parser::Attribute<'_>]>, default_charset: bool) {
    let mut list: Vec<(String, String)> = attrs
        .unwrap_or_default()
        .iter()
        .map(|a| (a.name.to_ascii_uppercase(), a.value.to_string()))
        .collect();
    if default_charset && !list.iter().any(|(n, _)| n == "CHARSET") {
        list.push(("CHARSET".into(), "us-ascii".into()));
    }
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (n, v)) in list.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        wire::string(out, n.as_bytes());
        out.push(b' ');
        wire::string(out, v.as_bytes());
    }
    out.push(b')');
}

/// BODY (`extended` false) or BODYSTRUCTURE of part `id` of `msg`.
pub fn structure(out: &mut Vec<u8>, msg: &Message<'_>, id: u32, extended: bool, depth: usize) {
    let Some(part) = msg.parts.get(id as usize) else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let raw = msg.raw_message();
    let ct = part.content_type();
    let (ctype, subtype) = match ct {
        Some(c) => (
            c.ctype().to_string(),
            c.subtype().unwrap_or("plain").to_string(),
        ),
        None => ("text".to_string(), "plain".to_string()),
    };
    if let PartType::Multipart(children) = &part.body {
        out.push(b'(');
        if children.is_empty() || depth > 20 {
            // empty, or nested deeper than any real mail: not descended into
            out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
        } else {
            for &c in children.iter().take(1000) {
                structure(out, msg, c, extended, depth + 1);
            }
        }
        out.push(b' ');
        upper(out, &subtype);
        if extended {
            out.push(b' ');
            params(out, ct.and_then(|c| c.attributes()), false);
            out.extend_from_slice(b" NIL NIL NIL");
        }
        out.push(b')');
        return;
    }
    let start = (part.offset_body as usize).min(raw.len());
    let end = (part.offset_end as usize).clamp(start, raw.len());
    let body = &raw[start..end];
    // A last line without its newline (the CRLF before a boundary belongs to the boundary)
    // still counts.
    let lines = body.iter().filter(|&&b| b == b'\n').count()
        + usize::from(!body.is_empty() && !body.ends_with(b"\n"));
    out.push(b'(');
    upper(out, &ctype);
    out.push(b' ');
    upper(out, &subtype);
    out.push(b' ');
    let is_text = ctype.eq_ignore_ascii_case("text");
    params(out, ct.and_then(|c| c.attributes()), is_text);
    out.push(b' ');
    wire::nstring(out, part.content_id().map(str::as_bytes));
    out.push(b' ');
    wire::nstring(out, part.content_description().map(str::as_bytes));
    out.push(b' ');
    upper(out, part.content_transfer_encoding().unwrap_or("7bit"));
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &part.body {
        PartType::Message(nested) if depth < 20 => {
            out.push(b' ');
            envelope(out, nested);
            out.push(b' ');
            structure(out, nested, 0, extended, depth + 1);
            out.extend_from_slice(format!(" {lines}").as_bytes());
        }
        _ if is_text => out.extend_from_slice(format!(" {lines}").as_bytes()),
        _ => {}
    }
    if extended {
        out.extend_from_slice(b" NIL ");
        match part.content_disposition() {
            Some(d) => {
                out.push(b'(');
                wire::string(out, d.ctype().as_bytes());
                out.push(b' ');
                params(out, d.attributes(), false);
                out.push(b')');
            }
            None => out.extend_from_slice(b"NIL"),
        }
        out.extend_from_slice(b" NIL NIL");
    }
    out.push(b')');
}

/// The end of the header block (after its blank line).
fn header_end(raw: &[u8]) -> usize {
    if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return p + 4;
    }
    if let Some(p) = raw.windows(2).position(|w| w == b"\n\n") {
        return p + 2;
    }
    raw.len()
}

/// Header fields of `head` whose names are (`keep`) or are not in `names`, plus the blank line.
fn header_fields(head: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut include = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_uppercase();
            include = names.contains(&name) == keep;
        }
        if include {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Finds part `path` (1-based numbers) below `msg`: the byte range of its MIME header and body
/// in `msg`'s raw message, and whether it is an encapsulated message.
fn locate(msg: &Message<'_>, path: &[u32]) -> Option<(usize, usize, usize, bool)> {
    locate_in(msg, path, 0, 0)
}

/// Offsets are relative to `msg`'s raw message, which starts at `base` in the stored one; an
/// encapsulated message (message/rfc822) is descended into with its own parts.
fn locate_in(
    msg: &Message<'_>,
    path: &[u32],
    base: usize,
    depth: usize,
) -> Option<(usize, usize, usize, bool)> {
    if depth > 20 {
        return None;
    }
    let mut id = 0u32;
    for (i, &n) in path.iter().enumerate() {
        let part = msg.parts.get(id as usize)?;
        match &part.body {
            PartType::Multipart(children) => id = *children.get(n.checked_sub(1)? as usize)?,
            PartType::Message(nested) if i > 0 => {
                return locate_in(
                    nested,
                    &path[i..],
                    base + part.offset_body as usize,
                    depth + 1,
                );
            }
            _ if i == 0 && n == 1 => {}
            _ => return None,
        }
    }
    let p = msg.parts.get(id as usize)?;
    Some((
        base + p.offset_header as usize,
        base + p.offset_body as usize,
        base + p.offset_end as usize,
        matches!(p.body, PartType::Message(_)),
    ))
}

fn slice(raw: &[u8], a: usize, b: usize) -> Vec<u8> {
    let a = a.min(raw.len());
    raw[a..b.clamp(a, raw.len())].to_vec()
}

fn names(list: &[imap_codec::imap_types::core::AString<'_>]) -> Vec<String> {
    list.iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase())
        .collect()
}

/// BODY[section] of a message; `None` when the section doesn't exist (answered as NIL).
pub fn section(raw: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let Some(section) = section else {
        return Some(raw.to_vec());
    };
    // The raw bytes a part-relative section (HEADER/TEXT of part N) applies to.
    let within = |part: &Option<Part>| -> Option<Vec<u8>> {
        match part {
            None => Some(raw.to_vec()),
            Some(p) => {
                let msg = MessageParser::default().parse(raw)?;
                let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
                let (_, b, e, is_message) = locate(&msg, &path)?;
                is_message.then(|| slice(raw, b, e))
            }
        }
    };
    match section {
        Section::Header(p) => within(p).map(|m| m[..header_end(&m)].to_vec()),
        Section::Text(p) => within(p).map(|m| m[header_end(&m)..].to_vec()),
        Section::HeaderFields(p, list) => {
            within(p).map(|m| header_fields(&m[..header_end(&m)], &names(list.as_ref()), true))
        }
        Section::HeaderFieldsNot(p, list) => {
            within(p).map(|m| header_fields(&m[..header_end(&m)], &names(list.as_ref()), false))
        }
        Section::Part(p) => {
            let msg = MessageParser::default().parse(raw)?;
            let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
            let (_, b, e, _) = locate(&msg, &path)?;
            Some(slice(raw, b, e))
        }
        Section::Mime(p) => {
            let msg = MessageParser::default().parse(raw)?;
            let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
            let (h, b, _, _) = locate(&msg, &path)?;
            Some(slice(raw, h, b))
        }
    }
}

/// The section as echoed in the FETCH response: `HEADER.FIELDS (SUBJECT)`, `1.2.MIME`, ….
pub fn section_name(section: Option<&Section<'_>>) -> String {
    let part = |p: &Option<Part>| match p {
        Some(p) => format!(
            "{}.",
            p.0.as_ref()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(".")
        ),
        None => String::new(),
    };
    match section {
        None => String::new(),
        Some(Section::Part(p)) => {
            p.0.as_ref()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(".")
        }
        Some(Section::Header(p)) => format!("{}HEADER", part(p)),
        Some(Section::Text(p)) => format!("{}TEXT", part(p)),
        Some(Section::Mime(p)) => format!("{}MIME", part(&Some(p.clone()))),
        Some(Section::HeaderFields(p, l)) => {
            format!("{}HEADER.FIELDS ({})", part(p), names(l.as_ref()).join(" "))
        }
        Some(Section::HeaderFieldsNot(p, l)) => {
            format!(
                "{}HEADER.FIELDS.NOT ({})",
                part(p),
                names(l.as_ref()).join(" ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &[u8] = b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\nTo: a@example.com, B <b@example.org>\r\nSubject: =?utf-8?b?w6TDtsO8?=\r\nMessage-ID: <x@y>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSch=F6n\r\n--XX\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n";

    #[test]
    fn multipart_structure_envelope_and_sections() {
        let msg = MessageParser::default().parse(MULTI).expect("parse");
        let mut out = Vec::new();
        structure(&mut out, &msg, 0, true, 0);
        let s = String::from_utf8(out).expect("utf8");
        assert!(
            s.starts_with(
                "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"iso-8859-1\") NIL NIL \"QUOTED-PRINTABLE\" "
            ),
            "{s}"
        );
        assert!(
            s.contains("(\"APPLICATION\" \"PDF\" (\"NAME\" \"a.pdf\") NIL NIL \"BASE64\" "),
            "{s}"
        );
        assert!(
            s.contains("(\"attachment\" (\"FILENAME\" \"a.pdf\"))"),
            "{s}"
        );
        assert!(
            s.ends_with(" \"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL)"),
            "{s}"
        );
        let mut env = Vec::new();
        envelope(&mut env, &msg);
        let e = String::from_utf8(env).expect("utf8");
        assert!(e.contains("\"=?utf-8?b?w6TDtsO8?=\""), "{e}");
        assert!(
            e.contains("((\"=?utf-8?b?SsO2cmc=?=\" NIL \"jorg\" \"example.com\"))"),
            "{e}"
        );
        assert!(
            e.contains("((NIL NIL \"a\" \"example.com\")(\"B\" NIL \"b\" \"example.org\"))"),
            "{e}"
        );
        assert!(e.ends_with(" NIL \"<x@y>\")"), "{e}");
        let p = |n: u32| {
            Section::Part(Part(
                vec![std::num::NonZeroU32::new(n).expect("n")]
                    .try_into()
                    .expect("ne"),
            ))
        };
        assert_eq!(
            section(MULTI, Some(&p(1))).as_deref(),
            Some(&b"Sch=F6n"[..])
        );
        assert_eq!(
            section(MULTI, Some(&p(2))).as_deref(),
            Some(&b"JVBERi0="[..])
        );
        assert_eq!(section(MULTI, Some(&p(3))), None);
    }
}
