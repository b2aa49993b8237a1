//! What FETCH reads out of a message: ENVELOPE, BODY/BODYSTRUCTURE and BODY[section]. The MIME
//! tree is cut out of the stored bytes here (RFC 2046 boundaries, RFC 3501 6.4.5 part numbers),
//! so every section is an exact byte range of the stored message and BODYSTRUCTURE numbers its
//! parts the way BODY[section] finds them; mail-parser only reads the parameters of each part's
//! header. ENVELOPE strings are the raw header values (encoded words left for the client to
//! decode, as Dovecot does), addresses parsed by RFC 5322 3.4 including group syntax.

use std::ops::Range;

use imap_codec::imap_types::fetch::{Part, Section};
use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders};

use super::wire;

/// Nesting deeper than any real mail is left opaque (and the recursion bounded).
const MAX_DEPTH: usize = 20;
/// At most this many MIME entities are cut out of one message; the rest stay opaque.
const MAX_ENTITIES: usize = 5000;

// ---------------------------------------------------------------------------------------------
// Header blocks

/// The end of the line starting at `pos` (after its LF), or `end`.
fn line_end(raw: &[u8], pos: usize, end: usize) -> usize {
    raw[pos..end]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(end, |i| pos + i + 1)
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

/// Where the header block of the entity in `raw[range]` ends: after its blank line, or at the
/// end of the range when there is none (a message of header fields only). An entity without
/// header fields starts with the blank line.
fn header_end(raw: &[u8], range: &Range<usize>) -> usize {
    let mut pos = range.start;
    while pos < range.end {
        let end = line_end(raw, pos, range.end);
        if is_blank(&raw[pos..end]) {
            return end;
        }
        pos = end;
    }
    range.end
}

fn trim(s: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// The fields of a header block as (name, raw value), values still folded. Lines that are
/// neither a field nor its continuation (an mbox `From ` line, junk) are skipped.
fn fields(head: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out: Vec<(&[u8], usize, usize)> = Vec::new();
    let mut in_field = false;
    let mut pos = 0;
    while pos < head.len() {
        let end = line_end(head, pos, head.len());
        let line = &head[pos..end];
        if is_blank(line) {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if in_field && let Some(last) = out.last_mut() {
                last.2 = end;
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            out.push((trim(&line[..colon]), pos + colon + 1, end));
            in_field = true;
        } else {
            in_field = false;
        }
        pos = end;
    }
    out.into_iter()
        .map(|(name, s, e)| (name, &head[s..e]))
        .collect()
}

/// RFC 5322 2.2.3 unfolding (line breaks removed, the whitespace after them kept), trimmed.
fn unfold(v: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = v
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    trim(&v).to_vec()
}

/// The first `name` field of a header block, unfolded.
fn field(head: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(head)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| unfold(v))
}

// ---------------------------------------------------------------------------------------------
// The MIME tree

/// One MIME entity (RFC 2045 2.4) as byte ranges of the stored message.
struct Entity<'a> {
    /// The header block, its blank line included when there is one.
    header: Range<usize>,
    /// Everything after the header block up to the entity's end: for a multipart, preamble,
    /// boundaries and epilogue included; for a message/rfc822, the whole encapsulated message.
    body: Range<usize>,
    /// The header block as mail-parser reads it (parameters, disposition, language).
    head: Option<Message<'a>>,
    /// The media type, lowercase; text/plain when Content-Type is absent or invalid (RFC 2045
    /// 5.2), message/rfc822 when absent inside a multipart/digest (RFC 2046 5.1.5).
    ctype: String,
    subtype: String,
    /// No usable Content-Type: the defaults above apply, parameters included.
    defaulted: bool,
    content: Content<'a>,
}

enum Content<'a> {
    Single,
    Multipart(Vec<Entity<'a>>),
    /// An encapsulated message (message/rfc822 in 7bit, 8bit or binary, RFC 2046 5.2.1).
    Message(Box<Entity<'a>>),
}

/// The byte range of every body part of a multipart body, per RFC 2046 5.1.1: a part starts
/// after its delimiter line and ends before the line break that precedes the next delimiter
/// (that line break belongs to the delimiter). Preamble and epilogue are no part. A missing
/// close delimiter ends the last part at the end of the body.
fn split(raw: &[u8], body: &Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = body.start;
    while pos < body.end {
        let end = line_end(raw, pos, body.end);
        if let Some(close) = delimiter(&raw[pos..end], boundary) {
            if let Some(s) = start {
                let mut e = pos;
                if e > s && raw[e - 1] == b'\n' {
                    e -= 1;
                    if e > s && raw[e - 1] == b'\r' {
                        e -= 1;
                    }
                }
                parts.push(s..e);
            }
            if close {
                return parts;
            }
            start = Some(end);
        }
        pos = end;
    }
    if let Some(s) = start {
        parts.push(s..body.end);
    }
    parts
}

/// `Some(false)` for a delimiter line of `boundary`, `Some(true)` for its close delimiter;
/// transport padding (trailing whitespace) allowed.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

impl<'a> Entity<'a> {
    /// The tree of a whole message.
    fn parse(raw: &'a [u8]) -> Entity<'a> {
        let mut budget = MAX_ENTITIES;
        Entity::cut(raw, 0..raw.len(), false, 0, &mut budget)
    }

    /// The entity in `raw[range]`; `in_digest` when its parent is a multipart/digest.
    fn cut(
        raw: &'a [u8],
        range: Range<usize>,
        in_digest: bool,
        depth: usize,
        budget: &mut usize,
    ) -> Entity<'a> {
        *budget = budget.saturating_sub(1);
        let body_start = header_end(raw, &range);
        let header = range.start..body_start;
        let body = body_start..range.end;
        let head = MessageParser::default().parse_headers(&raw[header.clone()]);
        let descend = depth < MAX_DEPTH && *budget > 0;
        let ct = head
            .as_ref()
            .and_then(|h| h.content_type())
            .and_then(|c| Some((c, c.subtype()?)));
        let (ctype, subtype, defaulted) = match ct {
            Some((c, sub)) => (
                c.ctype().to_ascii_lowercase(),
                sub.to_ascii_lowercase(),
                false,
            ),
            None if in_digest => ("message".into(), "rfc822".into(), true),
            None => ("text".into(), "plain".into(), true),
        };
        let boundary = ct
            .and_then(|(c, _)| c.attribute("boundary"))
            .filter(|b| !b.is_empty());
        let content = if ctype == "multipart" {
            match boundary {
                Some(b) if descend => {
                    let digest = subtype == "digest";
                    let mut children = Vec::new();
                    for r in split(raw, &body, b.as_bytes()) {
                        if *budget == 0 {
                            break;
                        }
                        children.push(Entity::cut(raw, r, digest, depth + 1, budget));
                    }
                    Content::Multipart(children)
                }
                _ => Content::Single,
            }
        } else if ctype == "message" && subtype == "rfc822" && descend {
            let identity =
                field(&raw[header.clone()], "Content-Transfer-Encoding").is_none_or(|e| {
                    [&b"7bit"[..], b"8bit", b"binary"]
                        .iter()
                        .any(|x| e.eq_ignore_ascii_case(x))
                });
            if identity {
                Content::Message(Box::new(Entity::cut(
                    raw,
                    body.clone(),
                    false,
                    depth + 1,
                    budget,
                )))
            } else {
                Content::Single
            }
        } else {
            Content::Single
        };
        // A multipart without a usable boundary has no parts to show: rendered as the text
        // it is to a reader.
        let (ctype, subtype, defaulted) =
            if ctype == "multipart" && !matches!(content, Content::Multipart(_)) {
                ("text".to_string(), "plain".to_string(), true)
            } else {
                (ctype, subtype, defaulted)
            };
        Entity {
            header,
            body,
            head,
            ctype,
            subtype,
            defaulted,
            content,
        }
    }

    /// Part `n` of this entity read as a message (RFC 3501 6.4.5): the n-th body part of a
    /// multipart body, else part 1 is the (single-part) message itself.
    fn part_of_message(&self, n: u32) -> Option<&Entity<'a>> {
        match &self.content {
            Content::Multipart(children) => children.get(n.checked_sub(1)? as usize),
            _ => (n == 1).then_some(self),
        }
    }

    /// The part at `path` (1-based numbers) below this message. A message/rfc822 part's
    /// numbers continue into the encapsulated message.
    fn find(&self, path: &[u32]) -> Option<&Entity<'a>> {
        let (&first, rest) = path.split_first()?;
        let mut e = self.part_of_message(first)?;
        for &n in rest {
            e = match &e.content {
                Content::Multipart(children) => children.get(n.checked_sub(1)? as usize)?,
                Content::Message(inner) => inner.part_of_message(n)?,
                Content::Single => return None,
            };
        }
        Some(e)
    }
}

// ---------------------------------------------------------------------------------------------
// ENVELOPE

/// One entry of an ENVELOPE address list (RFC 3501 7.4.2).
#[derive(Debug, PartialEq)]
enum Address {
    Mailbox {
        name: Option<Vec<u8>>,
        route: Option<Vec<u8>>,
        /// Never NIL: NIL host and mailbox mean group syntax, so a missing local part or
        /// domain is the empty string.
        mailbox: Vec<u8>,
        host: Vec<u8>,
    },
    GroupStart(Vec<u8>),
    GroupEnd,
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// A lenient RFC 5322 3.4 tokenizer over an unfolded address header value.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    /// The last comment skipped: the display name of a bare `addr-spec (Name)`.
    comment: Vec<u8>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_cfws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                Some(b'(') => self.skip_comment(),
                _ => return,
            }
        }
    }

    fn skip_comment(&mut self) {
        let mut depth = 0usize;
        let mut text = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => {
                    if let Some(c) = self.peek() {
                        self.pos += 1;
                        text.push(c);
                    }
                }
                b'(' => {
                    if depth > 0 {
                        text.push(b);
                    }
                    depth += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                    text.push(b);
                }
                _ => text.push(b),
            }
        }
        self.comment = trim(&text).to_vec();
    }

    /// A quoted string's content, quoted-pairs resolved.
    fn quoted(&mut self) -> Vec<u8> {
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(c) = self.peek() {
                        self.pos += 1;
                        out.push(c);
                    }
                }
                _ => out.push(b),
            }
        }
        out
    }

    fn atom(&mut self, dots: bool) -> &[u8] {
        let start = self.pos;
        while let Some(b) = self.peek()
            && (is_atext(b) || (dots && b == b'.'))
        {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A display name: its words joined by single spaces, quoted strings unquoted, encoded
    /// words as they are; `.` allowed (obs-phrase).
    fn phrase(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.skip_cfws();
            let word = match self.peek() {
                Some(b'"') => self.quoted(),
                Some(b) if is_atext(b) || b == b'.' => self.atom(true).to_vec(),
                _ => break,
            };
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(&word);
        }
        out
    }

    /// `word *("." word)`, quoted strings unquoted (as Dovecot lists them).
    fn local_part(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.skip_cfws();
            match self.peek() {
                Some(b'"') => {
                    let q = self.quoted();
                    out.extend_from_slice(&q);
                }
                Some(b) if is_atext(b) => {
                    let a = self.atom(false).to_vec();
                    out.extend_from_slice(&a);
                }
                _ => {}
            }
            self.skip_cfws();
            if self.peek() != Some(b'.') {
                return out;
            }
            self.pos += 1;
            out.push(b'.');
        }
    }

    /// A dot-atom or a domain literal (kept with its brackets), after the `@`.
    fn domain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.skip_cfws();
            match self.peek() {
                Some(b'[') => {
                    while let Some(b) = self.peek() {
                        self.pos += 1;
                        out.push(b);
                        if b == b']' {
                            break;
                        }
                    }
                }
                Some(b) if is_atext(b) => {
                    let a = self.atom(false).to_vec();
                    out.extend_from_slice(&a);
                }
                _ => {}
            }
            self.skip_cfws();
            if self.peek() != Some(b'.') {
                return out;
            }
            self.pos += 1;
            out.push(b'.');
        }
    }

    /// The inside of `<[route:]local@domain>`, after the `<`: (route, mailbox, host).
    fn angle_addr(&mut self) -> (Option<Vec<u8>>, Vec<u8>, Vec<u8>) {
        let mut route = Vec::new();
        let mut last_domain = Vec::new();
        self.skip_cfws();
        while self.peek() == Some(b'@') {
            self.pos += 1;
            last_domain = self.domain();
            if !route.is_empty() {
                route.push(b',');
            }
            route.push(b'@');
            route.extend_from_slice(&last_domain);
            while self.peek() == Some(b',') {
                self.pos += 1;
                self.skip_cfws();
            }
        }
        let (route, mailbox, host) = if !route.is_empty() && self.peek() != Some(b':') {
            // `<@example.com>`: no route, no local part
            (None, Vec::new(), last_domain)
        } else {
            if !route.is_empty() {
                self.pos += 1;
            }
            let mailbox = self.local_part();
            let host = if self.peek() == Some(b'@') {
                self.pos += 1;
                self.domain()
            } else {
                Vec::new()
            };
            ((!route.is_empty()).then_some(route), mailbox, host)
        };
        while let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'>' {
                break;
            }
        }
        (route, mailbox, host)
    }
}

/// An address header value (RFC 5322 3.4 address-list), read leniently: what can't be read
/// is skipped up to the next comma.
fn address_list(value: &[u8]) -> Vec<Address> {
    let mut lx = Lexer {
        s: value,
        pos: 0,
        comment: Vec::new(),
    };
    let mut out = Vec::new();
    let mut in_group = false;
    loop {
        lx.comment.clear();
        lx.skip_cfws();
        let Some(b) = lx.peek() else { break };
        match b {
            b',' => {
                lx.pos += 1;
                continue;
            }
            b';' => {
                lx.pos += 1;
                if in_group {
                    out.push(Address::GroupEnd);
                    in_group = false;
                }
                continue;
            }
            _ => {}
        }
        let start = lx.pos;
        let name = lx.phrase();
        lx.skip_cfws();
        match lx.peek() {
            Some(b':') if !in_group => {
                lx.pos += 1;
                out.push(Address::GroupStart(name));
                in_group = true;
                continue;
            }
            Some(b'<') => {
                lx.pos += 1;
                let (route, mailbox, host) = lx.angle_addr();
                out.push(Address::Mailbox {
                    name: (!name.is_empty()).then_some(name),
                    route,
                    mailbox,
                    host,
                });
            }
            _ => {
                lx.pos = start;
                let mailbox = lx.local_part();
                let host = if lx.peek() == Some(b'@') {
                    lx.pos += 1;
                    lx.domain()
                } else {
                    Vec::new()
                };
                if lx.pos == start {
                    lx.pos += 1; // a byte nothing can start with
                    continue;
                }
                out.push(Address::Mailbox {
                    name: (!lx.comment.is_empty()).then(|| lx.comment.clone()),
                    route: None,
                    mailbox,
                    host,
                });
            }
        }
        // junk after an address, up to the next separator
        while let Some(b) = lx.peek()
            && b != b','
            && b != b';'
        {
            if b == b'"' {
                lx.quoted();
            } else if b == b'(' {
                lx.skip_comment();
            } else {
                lx.pos += 1;
            }
        }
    }
    if in_group {
        out.push(Address::GroupEnd);
    }
    out
}

/// An ENVELOPE address list, NIL when the field is absent or lists nobody.
fn addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        match a {
            Address::Mailbox {
                name,
                route,
                mailbox,
                host,
            } => {
                out.push(b'(');
                wire::nstring(out, name.as_deref());
                out.push(b' ');
                wire::nstring(out, route.as_deref());
                out.push(b' ');
                wire::string(out, mailbox);
                out.push(b' ');
                wire::string(out, host);
                out.push(b')');
            }
            Address::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                wire::string(out, name);
                out.extend_from_slice(b" NIL)");
            }
            Address::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

/// ENVELOPE of the message whose header block is `head`: date, subject, from, sender,
/// reply-to, to, cc, bcc, in-reply-to, message-id; absent fields NIL, Sender and Reply-To
/// the From list when absent or empty (RFC 3501 7.4.2). `head` may be the whole message:
/// reading stops at the blank line.
pub fn envelope_of(out: &mut Vec<u8>, head: &[u8]) {
    let fields = fields(head);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| unfold(v))
    };
    let list = |name: &str| get(name).map(|v| address_list(&v)).unwrap_or_default();
    let from = list("From");
    let or_from = |l: Vec<Address>| if l.is_empty() { list("From") } else { l };
    out.push(b'(');
    wire::nstring(out, get("Date").as_deref());
    out.push(b' ');
    wire::nstring(out, get("Subject").as_deref());
    out.push(b' ');
    addresses(out, &from);
    for (i, name) in ["Sender", "Reply-To", "To", "Cc", "Bcc"]
        .into_iter()
        .enumerate()
    {
        out.push(b' ');
        let l = list(name);
        addresses(out, &if i < 2 { or_from(l) } else { l });
    }
    out.push(b' ');
    wire::nstring(out, get("In-Reply-To").as_deref());
    out.push(b' ');
    wire::nstring(out, get("Message-ID").as_deref());
    out.push(b')');
}

// ---------------------------------------------------------------------------------------------
// BODY and BODYSTRUCTURE

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

/// Text lines of a body: its line breaks, plus an unterminated last line (the line break
/// before a boundary belongs to the boundary).
fn lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
        + usize::from(!body.is_empty() && !body.ends_with(b"\n"))
}

/// body-fld-dsp SP body-fld-lang SP body-fld-loc.
fn extension_tail(out: &mut Vec<u8>, e: &Entity<'_>) {
    match e.head.as_ref().and_then(|h| h.content_disposition()) {
        Some(d) => {
            out.push(b'(');
            wire::string(out, d.ctype().as_bytes());
            out.push(b' ');
            params(out, d.attributes(), false);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match e.head.as_ref().map(|h| h.content_language()) {
        Some(HeaderValue::Text(t)) => wire::string(out, t.as_bytes()),
        Some(HeaderValue::TextList(l)) if !l.is_empty() => {
            out.push(b'(');
            for (i, t) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                wire::string(out, t.as_bytes());
            }
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    wire::nstring(
        out,
        e.head
            .as_ref()
            .and_then(|h| h.content_location())
            .map(str::as_bytes),
    );
}

/// BODY (`extended` false) or BODYSTRUCTURE (RFC 3501 7.4.2) of an entity.
fn render(out: &mut Vec<u8>, raw: &[u8], e: &Entity<'_>, extended: bool) {
    let attrs = if e.defaulted {
        None
    } else {
        e.head
            .as_ref()
            .and_then(|h| h.content_type())
            .and_then(|c| c.attributes())
    };
    out.push(b'(');
    if let Content::Multipart(children) = &e.content {
        if children.is_empty() {
            // A multipart needs a part: an empty one stands in (as Dovecot does).
            out.extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
        }
        for c in children {
            render(out, raw, c, extended);
        }
        out.push(b' ');
        upper(out, &e.subtype);
        if extended {
            out.push(b' ');
            params(out, attrs, false);
            out.push(b' ');
            extension_tail(out, e);
        }
        out.push(b')');
        return;
    }
    let head = &raw[e.header.clone()];
    let body = &raw[e.body.clone()];
    let is_text = e.ctype == "text";
    upper(out, &e.ctype);
    out.push(b' ');
    upper(out, &e.subtype);
    out.push(b' ');
    params(out, attrs, is_text);
    out.push(b' ');
    wire::nstring(out, field(head, "Content-ID").as_deref());
    out.push(b' ');
    wire::nstring(out, field(head, "Content-Description").as_deref());
    out.push(b' ');
    match field(head, "Content-Transfer-Encoding").filter(|v| !v.is_empty()) {
        Some(enc) => wire::string(out, &enc.to_ascii_uppercase()),
        None => out.extend_from_slice(b"\"7BIT\""),
    }
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &e.content {
        Content::Message(inner) => {
            out.push(b' ');
            envelope_of(out, &raw[inner.header.clone()]);
            out.push(b' ');
            render(out, raw, inner, extended);
            out.extend_from_slice(format!(" {}", lines(body)).as_bytes());
        }
        _ if is_text => out.extend_from_slice(format!(" {}", lines(body)).as_bytes()),
        _ => {}
    }
    if extended {
        out.push(b' ');
        wire::nstring(out, field(head, "Content-MD5").as_deref());
        out.push(b' ');
        extension_tail(out, e);
    }
    out.push(b')');
}

/// BODY (`extended` false) or BODYSTRUCTURE of a whole stored message.
pub fn body_structure(out: &mut Vec<u8>, raw: &[u8], extended: bool) {
    render(out, raw, &Entity::parse(raw), extended);
}

// ---------------------------------------------------------------------------------------------
// BODY[section]

/// Header fields of `head` whose names are (`keep`) or are not in `names`, then the blank
/// line when the header block has one (RFC 3501 6.4.5: "the blank line is always included in
/// header data except in the case of a message which has no body and no blank line").
fn header_fields(head: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut include = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        if is_blank(line) {
            out.extend_from_slice(line);
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(trim(name)).to_ascii_uppercase();
            include = names.contains(&name) == keep;
        }
        if include {
            out.extend_from_slice(line);
        }
    }
    out
}

fn names(list: &[imap_codec::imap_types::core::AString<'_>]) -> Vec<String> {
    list.iter()
        .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase())
        .collect()
}

fn numbers(p: &Part) -> Vec<u32> {
    p.0.as_ref().iter().map(|n| n.get()).collect()
}

/// BODY[section] of a stored message (RFC 3501 6.4.5); `None` when the section doesn't exist
/// (answered as NIL): a part number past the last part, or HEADER/TEXT/HEADER.FIELDS of a
/// part that is no message/rfc822.
pub fn section(raw: &[u8], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let Some(section) = section else {
        return Some(raw.to_vec());
    };
    let root = Entity::parse(raw);
    let bytes = |r: &Range<usize>| raw[r.clone()].to_vec();
    // The message a HEADER/TEXT section applies to: the top-level one, or the message
    // encapsulated in part N.
    let message = |p: &Option<Part>| -> Option<&Entity<'_>> {
        match p {
            None => Some(&root),
            Some(p) => match &root.find(&numbers(p))?.content {
                Content::Message(inner) => Some(inner),
                _ => None,
            },
        }
    };
    match section {
        Section::Part(p) => root.find(&numbers(p)).map(|e| bytes(&e.body)),
        Section::Mime(p) => root.find(&numbers(p)).map(|e| bytes(&e.header)),
        Section::Header(p) => message(p).map(|m| bytes(&m.header)),
        Section::Text(p) => message(p).map(|m| bytes(&m.body)),
        Section::HeaderFields(p, list) => {
            message(p).map(|m| header_fields(&raw[m.header.clone()], &names(list.as_ref()), true))
        }
        Section::HeaderFieldsNot(p, list) => {
            message(p).map(|m| header_fields(&raw[m.header.clone()], &names(list.as_ref()), false))
        }
    }
}

/// BINARY[section] (RFC 3516): a part's content with its Content-Transfer-Encoding undone.
#[derive(Debug, PartialEq, Eq)]
pub enum Binary {
    Data(Vec<u8>),
    /// No such part (answered as NIL).
    Missing,
    /// An encoding wispd can't undo: the FETCH gets `NO [UNKNOWN-CTE]`.
    UnknownCte,
}

/// BINARY of part `path` of a stored message (`[]`: the whole message, as it is). A multipart
/// or message/rfc822 part is returned as it is (its encoding is 7bit, 8bit or binary).
pub fn binary(raw: &[u8], path: &[u32]) -> Binary {
    if path.is_empty() {
        return Binary::Data(raw.to_vec());
    }
    let root = Entity::parse(raw);
    let Some(e) = root.find(path) else {
        return Binary::Missing;
    };
    let body = &raw[e.body.clone()];
    if !matches!(e.content, Content::Single) {
        return Binary::Data(body.to_vec());
    }
    let cte = field(&raw[e.header.clone()], "Content-Transfer-Encoding")
        .map(|v| String::from_utf8_lossy(&v).trim().to_ascii_lowercase());
    match cte.as_deref() {
        None | Some("" | "7bit" | "8bit" | "binary") => Binary::Data(body.to_vec()),
        Some("base64") => match mail_parser::decoders::base64::base64_decode(body) {
            Some(d) => Binary::Data(d),
            None => Binary::UnknownCte,
        },
        Some("quoted-printable") => Binary::Data(
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                .unwrap_or_else(|| body.to_vec()),
        ),
        Some(_) => Binary::UnknownCte,
    }
}

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
    use imap_codec::imap_types::body::{BodyStructure, SpecificFields};
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::core::NString;
    use imap_codec::imap_types::envelope::Envelope;
    use imap_codec::imap_types::fetch::{
        MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
    };
    use imap_codec::imap_types::response::{Data, Response};
    use imap_codec::{CommandCodec, ResponseCodec, decode::Decoder};

    use super::*;

    /// The RFC 3501 6.4.5 example, part for part (CRLF line ends).
    const RFC3501: &[u8] = include_bytes!("../../tests/corpus/imap/rfc3501-sections.eml");
    /// Single-part attached messages, a message/rfc822 whose message is a message/rfc822, a
    /// part without header fields.
    const NESTED: &[u8] = include_bytes!("../../tests/corpus/imap/nested-single.eml");

    /// BODY[`spec`] as a client asks for it: the section parsed by imap-codec from a FETCH.
    fn fetch(raw: &[u8], spec: &str) -> Option<Vec<u8>> {
        let cmd = format!("a FETCH 1 (BODY[{spec}])\r\n");
        let (_, c) = CommandCodec::default()
            .decode(cmd.as_bytes())
            .unwrap_or_else(|e| panic!("{spec}: {e:?}"));
        let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            ..
        } = c.body
        else {
            panic!("{spec}: not a FETCH");
        };
        let Some(MessageDataItemName::BodyExt { section, .. }) = items.first() else {
            panic!("{spec}: no BODY[]");
        };
        assert_eq!(
            section_name(section.as_ref()),
            spec.to_ascii_uppercase(),
            "echoed name"
        );
        super::section(raw, section.as_ref())
    }

    fn show(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// Offsets found by hand (searching the corpus file for each part's first and last
    /// bytes, the CRLF before a boundary left to the boundary).
    #[test]
    fn rfc3501_example_sections_are_exact_byte_ranges() {
        assert_eq!(RFC3501.len(), 1520);
        assert!(
            !RFC3501.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "corpus is CRLF"
        );
        let table: &[(&str, usize, usize)] = &[
            ("HEADER", 0, 284),
            ("TEXT", 284, 1520),
            ("1", 362, 374),
            ("1.MIME", 316, 362),
            ("2", 462, 470),
            ("3", 513, 807),
            ("3.HEADER", 513, 681),
            ("3.TEXT", 681, 807),
            ("3.MIME", 481, 513),
            ("3.1", 718, 732),
            ("3.2", 785, 794),
            ("4", 868, 1484),
            ("4.MIME", 818, 868),
            ("4.1", 969, 989),
            ("4.1.MIME", 876, 969),
            ("4.2", 1063, 1474),
            ("4.2.HEADER", 1063, 1204),
            ("4.2.TEXT", 1204, 1474),
            ("4.2.1", 1243, 1259),
            ("4.2.2", 1327, 1461),
            ("4.2.2.1", 1362, 1381),
            ("4.2.2.2", 1421, 1452),
            ("4.2.2.2.MIME", 1390, 1421),
        ];
        for &(spec, a, b) in table {
            let got = fetch(RFC3501, spec).unwrap_or_else(|| panic!("{spec} missing"));
            assert_eq!(show(&got), show(&RFC3501[a..b]), "BODY[{spec}]");
        }
        assert_eq!(fetch(RFC3501, "").as_deref(), Some(RFC3501));
    }

    #[test]
    fn rfc3501_example_sections_spelled_out() {
        let f = |s| show(&fetch(RFC3501, s).unwrap_or_default());
        assert_eq!(f("1"), "Part 1 text.");
        assert_eq!(f("3.1"), "Part 3.1 text.");
        assert_eq!(f("3.2"), "3.2 bytes");
        assert_eq!(f("4.2.2.2"), "Part 4.2.2.2 <bold>rich</bold>.");
        assert_eq!(
            f("4.1.MIME"),
            "Content-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\
             Content-ID: <gif@example.com>\r\n\r\n"
        );
        assert_eq!(f("3.MIME"), "Content-Type: message/rfc822\r\n\r\n");
        assert_eq!(
            f("3.HEADER.FIELDS (SUBJECT FROM)"),
            "From: Inner Three <three@example.net>\r\nSubject: part three\r\n\r\n"
        );
        assert_eq!(
            f("3.HEADER.FIELDS.NOT (FROM SUBJECT DATE MIME-VERSION)"),
            "Content-Type: multipart/mixed; boundary=\"three\"\r\n\r\n"
        );
        assert_eq!(
            f("4.2.HEADER.FIELDS (subject)"),
            "Subject: =?utf-8?q?f=C3=BCnf?=\r\n\r\n"
        );
        assert_eq!(
            f("HEADER.FIELDS (MESSAGE-ID X-ABSENT)"),
            "Message-ID: <outer@example.com>\r\n\r\n"
        );
        assert!(f("4.2.TEXT").starts_with("--fourtwo\r\n"));
        assert!(f("4.2.TEXT").ends_with("--alt--\r\n--fourtwo--"));
        assert!(f("TEXT").starts_with("This is the preamble.\r\n--outer\r\n"));
    }

    #[test]
    fn sections_that_do_not_exist_are_nil() {
        for spec in [
            "5",
            "4.3",
            "3.3",
            "4.2.3",
            "4.2.2.3",
            "1.1",
            "2.1",
            "4.1.1",
            "2.HEADER",
            "2.TEXT",
            "4.HEADER",
            "1.HEADER.FIELDS (FROM)",
            "4.2.1.TEXT",
            "6.MIME",
        ] {
            assert_eq!(fetch(RFC3501, spec), None, "BODY[{spec}]");
        }
    }

    #[test]
    fn single_part_attached_messages_and_rfc822_in_rfc822() {
        assert_eq!(NESTED.len(), 539);
        let table: &[(&str, usize, usize)] = &[
            ("1", 140, 167),
            ("1.MIME", 138, 140),
            ("2", 206, 329),
            // "BODY[2.1] of a single-part attached message is its body, not empty"
            ("2.1", 274, 329),
            ("2.HEADER", 206, 274),
            ("2.TEXT", 274, 329),
            ("3", 368, 530),
            ("3.HEADER", 368, 463),
            ("3.TEXT", 463, 530),
            ("3.1", 463, 530),
            ("3.1.HEADER", 463, 517),
            ("3.1.TEXT", 517, 530),
            ("3.1.1", 517, 530),
        ];
        for &(spec, a, b) in table {
            let got = fetch(NESTED, spec).unwrap_or_else(|| panic!("{spec} missing"));
            assert_eq!(show(&got), show(&NESTED[a..b]), "BODY[{spec}]");
        }
        assert_eq!(
            show(&fetch(NESTED, "2.1").unwrap_or_default()),
            "Body of the single-part attached message.\r\nSecond line."
        );
        assert_eq!(fetch(NESTED, "1.MIME").as_deref(), Some(&b"\r\n"[..]));
        assert_eq!(fetch(NESTED, "2.2"), None);
        assert_eq!(fetch(NESTED, "2.1.1"), None);
        assert_eq!(fetch(NESTED, "3.1.2"), None);
        assert_eq!(fetch(NESTED, "3.1.1.1"), None);
        assert_eq!(
            show(&fetch(NESTED, "3.1.HEADER.FIELDS (SUBJECT)").unwrap_or_default()),
            "Subject: deepest\r\n\r\n"
        );
    }

    #[test]
    fn single_part_message_part_one_is_its_body() {
        let raw = b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nline one\r\nline two\r\n";
        assert_eq!(
            show(&fetch(raw, "1").unwrap_or_default()),
            "line one\r\nline two\r\n"
        );
        assert_eq!(
            show(&fetch(raw, "TEXT").unwrap_or_default()),
            "line one\r\nline two\r\n"
        );
        assert_eq!(
            show(&fetch(raw, "HEADER").unwrap_or_default()),
            "Subject: hi\r\nContent-Type: text/plain\r\n\r\n"
        );
        assert_eq!(fetch(raw, "2"), None);
        assert_eq!(fetch(raw, "1.1"), None);
        // bare LF line ends are cut the same way
        let lf = b"Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\nContent-Type: text/html\n\n<p>two</p>\n--b--\n";
        assert_eq!(fetch(lf, "1").as_deref(), Some(&b"one"[..]));
        assert_eq!(fetch(lf, "2").as_deref(), Some(&b"<p>two</p>"[..]));
        assert_eq!(
            fetch(lf, "2.MIME").as_deref(),
            Some(&b"Content-Type: text/html\n\n"[..])
        );
    }

    #[test]
    fn header_without_blank_line_gets_none_added() {
        // RFC 3501 6.4.5: the blank line is included "except in the case of a message which
        // has no body and no blank line"
        let raw = b"Subject: only a header\r\nFrom: a@b\r\n";
        assert_eq!(fetch(raw, "HEADER").as_deref(), Some(&raw[..]));
        assert_eq!(fetch(raw, "TEXT").as_deref(), Some(&b""[..]));
        assert_eq!(
            fetch(raw, "HEADER.FIELDS (FROM)").as_deref(),
            Some(&b"From: a@b\r\n"[..])
        );
        let folded = b"Subject: a\r\n folded\r\nX-A: 1\r\n\r\nbody";
        assert_eq!(
            fetch(folded, "HEADER.FIELDS (SUBJECT)").as_deref(),
            Some(&b"Subject: a\r\n folded\r\n\r\n"[..])
        );
        assert_eq!(
            fetch(folded, "HEADER.FIELDS.NOT (SUBJECT)").as_deref(),
            Some(&b"X-A: 1\r\n\r\n"[..])
        );
    }

    #[test]
    fn boundaries_per_rfc2046() {
        // transport padding after a delimiter, a boundary that is a prefix of a line that is
        // no delimiter, preamble and epilogue outside every part, no close delimiter
        let raw = b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npre\r\n--XX  \r\n\r\na\r\n--XXY\r\nstill a\r\n--XX\r\n\r\nb\r\n";
        assert_eq!(
            show(&fetch(raw, "1").unwrap_or_default()),
            "a\r\n--XXY\r\nstill a"
        );
        assert_eq!(show(&fetch(raw, "2").unwrap_or_default()), "b\r\n");
        assert_eq!(fetch(raw, "3"), None);
        // an empty part, and a delimiter right at the start of the body
        let raw = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n--q\r\n\r\nx\r\n--q--\r\nepilogue\r\n";
        assert_eq!(fetch(raw, "1").as_deref(), Some(&b""[..]));
        assert_eq!(fetch(raw, "2").as_deref(), Some(&b"x"[..]));
    }

    /// A FETCH response holding `data` (BODYSTRUCTURE … or ENVELOPE …), decoded by imap-codec.
    fn decode(data: &[u8]) -> MessageDataItem<'static> {
        let line = [&b"* 1 FETCH ("[..], data, b")\r\n"].concat();
        let line: &'static [u8] = Box::leak(line.into_boxed_slice());
        let (rest, r) = ResponseCodec::default()
            .decode(line)
            .unwrap_or_else(|e| panic!("{e:?}: {}", show(line)));
        assert!(rest.is_empty());
        let Response::Data(Data::Fetch { items, .. }) = r else {
            panic!("not FETCH");
        };
        items.into_iter().next().expect("one item")
    }

    fn nstr(n: &NString<'_>) -> Option<String> {
        n.0.as_ref().map(|s| show(s.as_ref()))
    }

    /// (number, TYPE/SUBTYPE, size, lines) of every part in a decoded BODYSTRUCTURE, numbered
    /// as RFC 3501 6.4.5 numbers them.
    fn walk(
        b: &BodyStructure<'_>,
        prefix: &str,
        top: bool,
        out: &mut Vec<(String, String, u32, u32)>,
    ) {
        let join = |i: usize| {
            if prefix.is_empty() {
                (i + 1).to_string()
            } else {
                format!("{prefix}.{}", i + 1)
            }
        };
        match b {
            BodyStructure::Multi {
                bodies, subtype, ..
            } => {
                if !top {
                    out.push((
                        prefix.to_string(),
                        format!("MULTIPART/{}", show(subtype.as_ref())),
                        0,
                        0,
                    ));
                }
                for (i, c) in bodies.as_ref().iter().enumerate() {
                    walk(c, &join(i), false, out);
                }
            }
            BodyStructure::Single { body, .. } => {
                let me = if top {
                    "1".to_string()
                } else {
                    prefix.to_string()
                };
                let (t, lines, inner) = match &body.specific {
                    SpecificFields::Basic { r#type, subtype } => (
                        format!("{}/{}", show(r#type.as_ref()), show(subtype.as_ref())),
                        0,
                        None,
                    ),
                    SpecificFields::Text {
                        subtype,
                        number_of_lines,
                    } => (
                        format!("TEXT/{}", show(subtype.as_ref())),
                        *number_of_lines,
                        None,
                    ),
                    SpecificFields::Message {
                        body_structure,
                        number_of_lines,
                        ..
                    } => (
                        "MESSAGE/RFC822".to_string(),
                        *number_of_lines,
                        Some(body_structure),
                    ),
                };
                out.push((me.clone(), t, body.basic.size, lines));
                if let Some(inner) = inner {
                    match inner.as_ref() {
                        BodyStructure::Multi { .. } => walk(inner, &me, true, out),
                        // the encapsulated single part is `me.1`
                        BodyStructure::Single { .. } => walk(inner, &format!("{me}.1"), false, out),
                    }
                }
            }
        }
    }

    #[test]
    fn bodystructure_numbers_parts_as_sections_do() {
        for ext in [false, true] {
            let mut out = Vec::new();
            body_structure(&mut out, RFC3501, ext);
            let item = decode(
                &[
                    if ext {
                        &b"BODYSTRUCTURE "[..]
                    } else {
                        b"BODY "
                    },
                    &out,
                ]
                .concat(),
            );
            let (MessageDataItem::BodyStructure(b) | MessageDataItem::Body(b)) = item else {
                panic!("not a body structure");
            };
            let mut parts = Vec::new();
            walk(&b, "", true, &mut parts);
            let names: Vec<(&str, &str)> = parts
                .iter()
                .map(|(n, t, _, _)| (n.as_str(), t.as_str()))
                .collect();
            // the RFC 3501 6.4.5 table
            assert_eq!(
                names,
                [
                    ("1", "TEXT/PLAIN"),
                    ("2", "APPLICATION/OCTET-STREAM"),
                    ("3", "MESSAGE/RFC822"),
                    ("3.1", "TEXT/PLAIN"),
                    ("3.2", "APPLICATION/OCTET-STREAM"),
                    ("4", "MULTIPART/MIXED"),
                    ("4.1", "IMAGE/GIF"),
                    ("4.2", "MESSAGE/RFC822"),
                    ("4.2.1", "TEXT/PLAIN"),
                    ("4.2.2", "MULTIPART/ALTERNATIVE"),
                    ("4.2.2.1", "TEXT/PLAIN"),
                    ("4.2.2.2", "TEXT/RICHTEXT"),
                ]
            );
            for (n, t, size, lines) in &parts {
                let data = fetch(RFC3501, n).unwrap_or_else(|| panic!("{n} missing"));
                if !t.starts_with("MULTIPART") {
                    assert_eq!(*size as usize, data.len(), "size of {n}");
                }
                if t.starts_with("TEXT") || t.starts_with("MESSAGE") {
                    assert_eq!(*lines as usize, super::lines(&data), "lines of {n}");
                }
            }
            let p3 = parts.iter().find(|p| p.0 == "3").expect("3");
            assert_eq!((p3.2, p3.3), (294, 15));
        }
        // the single-part attached messages: 2.1 and 3.1.1 are their bodies
        let mut out = Vec::new();
        body_structure(&mut out, NESTED, false);
        decode(&[&b"BODY "[..], &out].concat());
        let s = show(&out);
        for want in [
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 123 (NIL \"single-part attached\" ",
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 55 2) 5)",
            "\"7BIT\" 162 (NIL \"carries a message\" ",
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 67 (NIL \"deepest\" ",
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 13 1) 4) 8)",
        ] {
            assert!(s.contains(want), "{want} in {s}");
        }
        let mut out = Vec::new();
        body_structure(&mut out, NESTED, true);
        let MessageDataItem::BodyStructure(b) = decode(&[&b"BODYSTRUCTURE "[..], &out].concat())
        else {
            panic!("not a body structure");
        };
        let mut parts = Vec::new();
        walk(&b, "", true, &mut parts);
        let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["1", "2", "2.1", "3", "3.1", "3.1.1"]);
        for (n, _, size, _) in &parts {
            assert_eq!(
                *size as usize,
                fetch(NESTED, n).map_or(0, |d| d.len()),
                "size of {n}"
            );
        }
    }

    #[test]
    fn message_rfc822_part_carries_envelope_and_structure() {
        let mut out = Vec::new();
        body_structure(&mut out, RFC3501, true);
        let s = show(&out);
        assert!(
            s.contains(
                "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 294 (\"Tue, 2 Jan 2024 08:00:00 +0100\" \
                 \"part three\" ((\"Inner Three\" NIL \"three\" \"example.net\")) \
                 ((\"Inner Three\" NIL \"three\" \"example.net\")) \
                 ((\"Inner Three\" NIL \"three\" \"example.net\")) NIL NIL NIL NIL NIL) \
                 ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 14 1 NIL NIL NIL NIL)"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "(\"IMAGE\" \"GIF\" NIL \"<gif@example.com>\" NIL \"BASE64\" 20 NIL NIL NIL NIL)"
            ),
            "{s}"
        );
        assert!(s.contains("NIL \"forwarded\" \"7BIT\" 411 ("), "{s}");
        assert!(
            s.ends_with(" \"MIXED\" (\"BOUNDARY\" \"outer\") NIL NIL NIL)"),
            "{s}"
        );
    }

    #[test]
    fn odd_multiparts_keep_the_grammar() {
        for raw in [
            // no delimiter at all: a multipart with no part
            &b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nnothing here\r\n"[..],
            // no boundary parameter: read as the text it is
            b"Content-Type: multipart/mixed\r\n\r\n--zz\r\nx\r\n",
            // digest parts default to message/rfc822
            b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nhi\r\n--d--\r\n",
            // invalid Content-Type: text/plain
            b"Content-Type: ???\r\n\r\nx",
        ] {
            for ext in [false, true] {
                let mut out = Vec::new();
                body_structure(&mut out, raw, ext);
                decode(&[&b"BODYSTRUCTURE "[..], &out].concat());
            }
        }
        let mut out = Vec::new();
        body_structure(
            &mut out,
            b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nhi\r\n--d--\r\n",
            false,
        );
        assert!(
            show(&out)
                .starts_with("((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 24 (NIL \"in digest\""),
            "{}",
            show(&out)
        );
        let deep = {
            let mut m = Vec::new();
            for i in 0..100 {
                m.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                        .as_bytes(),
                );
            }
            m
        };
        // cut off at MAX_DEPTH (imap-codec itself reads no deeper than 8 levels, so only
        // the shape is checked here)
        let mut out = Vec::new();
        body_structure(&mut out, &deep, true);
        let s = show(&out);
        assert_eq!(s.matches("\"MIXED\"").count(), MAX_DEPTH, "{s}");
        assert_eq!(s.matches('(').count(), s.matches(')').count(), "{s}");
    }

    fn env(head: &[u8]) -> Envelope<'static> {
        let mut out = b"ENVELOPE ".to_vec();
        envelope_of(&mut out, head);
        let out: &'static [u8] = Box::leak(out.into_boxed_slice());
        match decode(out) {
            MessageDataItem::Envelope(e) => e,
            _ => panic!("not an envelope"),
        }
    }

    fn env_text(head: &[u8]) -> String {
        let mut out = Vec::new();
        envelope_of(&mut out, head);
        show(&out)
    }

    #[test]
    fn envelope_groups_per_rfc3501_and_rfc5322() {
        // RFC 5322 A.1.3
        let e = env_text(
            b"From: Pete <pete@silly.example>\r\nTo: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;\r\n\
              Cc: Undisclosed recipients:;\r\n\r\n",
        );
        assert!(
            e.contains(
                " ((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" \"a.test\")(NIL NIL \"joe\" \"where.test\")\
                 (\"John\" NIL \"jdoe\" \"one.test\")(NIL NIL NIL NIL)) \
                 ((NIL NIL \"Undisclosed recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)"
            ),
            "{e}"
        );
        let e = env_text(b"To: undisclosed-recipients:;\r\n\r\n");
        assert_eq!(
            e,
            "(NIL NIL NIL NIL NIL ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)"
        );
        // a group among plain addresses, and one never closed
        let e = env_text(
            b"To: x@y.example, G: a@b.example, c@d.example; z@w.example, Open: q@r.example\r\n\r\n",
        );
        assert!(
            e.contains(
                "((NIL NIL \"x\" \"y.example\")(NIL NIL \"G\" NIL)(NIL NIL \"a\" \"b.example\")\
                 (NIL NIL \"c\" \"d.example\")(NIL NIL NIL NIL)(NIL NIL \"z\" \"w.example\")\
                 (NIL NIL \"Open\" NIL)(NIL NIL \"q\" \"r.example\")(NIL NIL NIL NIL))"
            ),
            "{e}"
        );
        let decoded = env(b"To: A Group: a@b, c@d;\r\n\r\n");
        assert_eq!(decoded.to.len(), 4);
        assert_eq!(nstr(&decoded.to[0].mailbox).as_deref(), Some("A Group"));
        assert_eq!(nstr(&decoded.to[0].host), None);
        assert_eq!(nstr(&decoded.to[3].mailbox), None);
    }

    #[test]
    fn envelope_missing_fields_and_defaults() {
        assert_eq!(
            env_text(b"X-Nothing: here\r\n\r\n"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
        // RFC 3501 7.4.2: Sender and Reply-To default to From when absent or empty
        let e = env(b"From: Ann <ann@example.com>\r\nSender:\r\nSubject: s\r\n\r\n");
        assert_eq!(e.sender, e.from);
        assert_eq!(e.reply_to, e.from);
        assert_eq!(e.from.len(), 1);
        assert_eq!(nstr(&e.date), None);
        assert_eq!(nstr(&e.in_reply_to), None);
        assert_eq!(nstr(&e.message_id), None);
        assert_eq!(nstr(&e.subject).as_deref(), Some("s"));
        let e = env(b"From: a@example.com\r\nSender: s@example.com\r\nReply-To: r@example.com\r\nIn-Reply-To: <p@x>\r\n\r\n");
        assert_eq!(nstr(&e.sender[0].mailbox).as_deref(), Some("s"));
        assert_eq!(nstr(&e.reply_to[0].mailbox).as_deref(), Some("r"));
        assert_eq!(nstr(&e.in_reply_to).as_deref(), Some("<p@x>"));
        assert!(e.to.is_empty() && e.cc.is_empty() && e.bcc.is_empty());
    }

    #[test]
    fn envelope_strings_are_raw_and_quoted_right() {
        let e = env_text(
            b"Subject: =?utf-8?q?J=C3=B6rg?= says \"hi\" \\o/\r\nFrom: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n\
              To: \"Doe, \\\"JD\\\" John\" <jd@example.com>\r\nDate: Mon, 1 Jan 2024\r\n 23:30:00 -0800\r\n\r\n",
        );
        assert!(
            e.starts_with(
                "(\"Mon, 1 Jan 2024 23:30:00 -0800\" \"=?utf-8?q?J=C3=B6rg?= says \\\"hi\\\" \\\\o/\" \
                 ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\"))"
            ),
            "{e}"
        );
        assert!(
            e.contains("((\"Doe, \\\"JD\\\" John\" NIL \"jd\" \"example.com\"))"),
            "{e}"
        );
        // 8-bit header bytes go out as a literal, untouched
        let e = env_text("Subject: Grüße\r\nFrom: Jörg <j@example.com>\r\n\r\n".as_bytes());
        assert!(e.contains("{7}\r\nGrüße"), "{e}");
        assert!(
            e.contains("(({5}\r\nJörg NIL \"j\" \"example.com\"))"),
            "{e}"
        );
        let decoded = env("Subject: Grüße\r\nFrom: Jörg <j@example.com>\r\n\r\n".as_bytes());
        assert_eq!(nstr(&decoded.subject).as_deref(), Some("Grüße"));
    }

    #[test]
    fn envelope_odd_addresses() {
        let e = env(b"From: localonly\r\nTo: <@example.com>, (Comment Name) c@example.com, d@example.com (Dee)\r\n\
                      Cc: <@relay.example,@hop.example:e@example.com>, \"quoted local\"@example.com, <>\r\n\r\n");
        let a = |l: &[imap_codec::imap_types::envelope::Address<'_>], i: usize| {
            (
                nstr(&l[i].name),
                nstr(&l[i].adl),
                nstr(&l[i].mailbox),
                nstr(&l[i].host),
            )
        };
        let s = |x: &str| Some(x.to_string());
        // no domain: host "" (NIL would read as group syntax)
        assert_eq!(a(&e.from, 0), (None, None, s("localonly"), s("")));
        assert_eq!(a(&e.to, 0), (None, None, s(""), s("example.com")));
        assert_eq!(
            a(&e.to, 1),
            (s("Comment Name"), None, s("c"), s("example.com"))
        );
        assert_eq!(a(&e.to, 2), (s("Dee"), None, s("d"), s("example.com")));
        assert_eq!(
            a(&e.cc, 0),
            (
                None,
                s("@relay.example,@hop.example"),
                s("e"),
                s("example.com")
            )
        );
        assert_eq!(
            a(&e.cc, 1),
            (None, None, s("quoted local"), s("example.com"))
        );
        assert_eq!(a(&e.cc, 2), (None, None, s(""), s("")));
        assert_eq!(e.cc.len(), 3);
        // RFC 5322 A.5: comments everywhere
        let e =
            env(b"From: Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>\r\n\r\n");
        assert_eq!(a(&e.from, 0), (s("Pete"), None, s("pete"), s("silly.test")));
        // junk doesn't stop the list
        let e = env(b"To: @@@, ok@example.com\r\n\r\n");
        assert!(
            e.to.iter()
                .any(|x| nstr(&x.mailbox).as_deref() == Some("ok"))
        );
    }

    #[test]
    fn binary_undoes_the_transfer_encoding_of_a_part() {
        let raw: &[u8] = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
caf=C3=A9 =\r\nsoft\r\n--b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--b\r\n\
Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b--\r\n";
        assert_eq!(
            binary(raw, &[1]),
            Binary::Data("café soft".as_bytes().to_vec())
        );
        assert_eq!(binary(raw, &[2]), Binary::Data(vec![0, 1, 2, 3]));
        assert_eq!(binary(raw, &[3]), Binary::UnknownCte);
        assert_eq!(binary(raw, &[4]), Binary::Missing);
        assert_eq!(binary(raw, &[]), Binary::Data(raw.to_vec()));
        let single: &[u8] = b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n";
        assert_eq!(binary(single, &[1]), Binary::Data(b"hi".to_vec()));
    }
}
