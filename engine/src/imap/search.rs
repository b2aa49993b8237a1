//! SEARCH: every RFC 3501 key over flags, sizes, dates, headers and text (decoded, case
//! insensitive). Message bodies are read only when a key needs them, one at a time.

use imap_codec::imap_types::search::SearchKey;
use mail_parser::{HeaderName, HeaderValue, Message, MessageParser};
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;
use crate::mailbox;

fn needs_body(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::And(v) => v.as_ref().iter().any(needs_body),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        _ => false,
    }
}

struct Candidate<'m> {
    msn: usize,
    uid: u32,
    flags: &'m [String],
    size: u64,
    internal_date: i64,
    message: Option<Message<'m>>,
    raw: &'m [u8],
}

fn contains(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.to_lowercase().contains(&needle.to_lowercase())
}

fn has_flag(c: &Candidate<'_>, f: &str) -> bool {
    c.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
}

fn header_text(m: &Message<'_>, name: &str) -> String {
    let mut out = String::new();
    for h in m.headers() {
        if !h.name.as_str().eq_ignore_ascii_case(name) {
            continue;
        }
        match &h.value {
            HeaderValue::Text(t) => out.push_str(t),
            HeaderValue::TextList(l) => out.push_str(&l.join(" ")),
            HeaderValue::Address(a) => {
                for x in a.iter() {
                    if let Some(n) = &x.name {
                        out.push_str(n);
                        out.push(' ');
                    }
                    if let Some(e) = &x.address {
                        out.push_str(e);
                        out.push(' ');
                    }
                }
            }
            _ => {}
        }
        let raw = m.raw_message();
        let (s, e) = (h.offset_start as usize, h.offset_end as usize);
        if s <= e && e <= raw.len() {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&raw[s..e]));
        }
        out.push('\n');
    }
    out
}

fn body_text(m: &Message<'_>) -> String {
    let mut out = String::new();
    for i in 0..m.text_body.len() {
        if let Some(t) = m.body_text(i) {
            out.push_str(&t);
        }
    }
    for i in 0..m.html_body.len() {
        if let Some(t) = m.body_html(i) {
            out.push_str(&t);
        }
    }
    out
}

fn day(ts: i64) -> i64 {
    ts.div_euclid(86_400)
}

fn date_day(d: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    d.as_ref()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
        .div_euclid(86_400)
}

fn sent_day(m: &Message<'_>) -> Option<i64> {
    let _ = HeaderName::Date;
    m.date().map(|d| day(d.to_timestamp()))
}

fn matches(k: &SearchKey<'_>, c: &Candidate<'_>, uids: &[u32], count: usize) -> bool {
    let text = |a: &imap_codec::imap_types::core::AString<'_>| {
        String::from_utf8_lossy(a.as_ref()).into_owned()
    };
    let hdr = |name: &str, needle: String| {
        c.message
            .as_ref()
            .is_some_and(|m| contains(&header_text(m, name), &needle))
    };
    match k {
        SearchKey::And(v) => v.as_ref().iter().all(|k| matches(k, c, uids, count)),
        SearchKey::Or(a, b) => matches(a, c, uids, count) || matches(b, c, uids, count),
        SearchKey::Not(k) => !matches(k, c, uids, count),
        SearchKey::All => true,
        SearchKey::SequenceSet(set) => in_set(set, c.msn as u32, count as u32),
        SearchKey::Uid(set) => in_set(set, c.uid, uids.last().copied().unwrap_or(0)),
        SearchKey::Answered => has_flag(c, "\\Answered"),
        SearchKey::Deleted => has_flag(c, "\\Deleted"),
        SearchKey::Draft => has_flag(c, "\\Draft"),
        SearchKey::Flagged => has_flag(c, "\\Flagged"),
        SearchKey::Seen => has_flag(c, "\\Seen"),
        SearchKey::Unanswered => !has_flag(c, "\\Answered"),
        SearchKey::Undeleted => !has_flag(c, "\\Deleted"),
        SearchKey::Undraft => !has_flag(c, "\\Draft"),
        SearchKey::Unflagged => !has_flag(c, "\\Flagged"),
        SearchKey::Unseen => !has_flag(c, "\\Seen"),
        SearchKey::Keyword(a) => has_flag(c, a.as_ref()),
        SearchKey::Unkeyword(a) => !has_flag(c, a.as_ref()),
        // No session-local \Recent: nothing is recent, everything is old.
        SearchKey::New | SearchKey::Recent => false,
        SearchKey::Old => true,
        SearchKey::Larger(n) => c.size > u64::from(*n),
        SearchKey::Smaller(n) => c.size < u64::from(*n),
        SearchKey::Before(d) => day(c.internal_date) < date_day(d),
        SearchKey::On(d) => day(c.internal_date) == date_day(d),
        SearchKey::Since(d) => day(c.internal_date) >= date_day(d),
        SearchKey::SentBefore(d) => c
            .message
            .as_ref()
            .and_then(sent_day)
            .is_some_and(|x| x < date_day(d)),
        SearchKey::SentOn(d) => c
            .message
            .as_ref()
            .and_then(sent_day)
            .is_some_and(|x| x == date_day(d)),
        SearchKey::SentSince(d) => c
            .message
            .as_ref()
            .and_then(sent_day)
            .is_some_and(|x| x >= date_day(d)),
        SearchKey::From(a) => hdr("From", text(a)),
        SearchKey::To(a) => hdr("To", text(a)),
        SearchKey::Cc(a) => hdr("Cc", text(a)),
        SearchKey::Bcc(a) => hdr("Bcc", text(a)),
        SearchKey::Subject(a) => hdr("Subject", text(a)),
        SearchKey::Header(name, value) => {
            let n = text(name);
            c.message.as_ref().is_some_and(|m| {
                let h = header_text(m, &n);
                !h.is_empty() && contains(&h, &text(value))
            })
        }
        SearchKey::Body(a) => c
            .message
            .as_ref()
            .is_some_and(|m| contains(&body_text(m), &text(a))),
        SearchKey::Text(a) => {
            let needle = text(a);
            c.message.as_ref().is_some_and(|m| {
                contains(&body_text(m), &needle)
                    || contains(
                        &String::from_utf8_lossy(
                            &c.raw[..(m.root_part().offset_body as usize).min(c.raw.len())],
                        ),
                        &needle,
                    )
            })
        }
    }
}

fn in_set(set: &imap_codec::imap_types::sequence::SequenceSet, v: u32, max: u32) -> bool {
    use imap_codec::imap_types::sequence::{SeqOrUid, Sequence};
    let val = |s: &SeqOrUid| match s {
        SeqOrUid::Value(x) => x.get(),
        SeqOrUid::Asterisk => max,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(x) => val(x) == v,
        Sequence::Range(a, b) => {
            let (a, b) = (val(a), val(b));
            (a.min(b)..=a.max(b)).contains(&v)
        }
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn search(
        &mut self,
        tag: &str,
        charset: Option<String>,
        criteria: &SearchKey<'_>,
        uid: bool,
    ) -> std::io::Result<()> {
        if let Some(cs) = &charset
            && !cs.eq_ignore_ascii_case("UTF-8")
            && !cs.eq_ignore_ascii_case("US-ASCII")
        {
            self.tagged(
                tag,
                "NO",
                "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset",
            );
            return Ok(());
        }
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let (account, name) = (self.account_id(), sel.name.clone());
        let uids_in_view = sel.uids.clone();
        let flags_in_view = sel.flags.clone();
        let body = needs_body(criteria);
        let n = name.clone();
        let all = uids_in_view.clone();
        let entries = match self.read(move |s, _| mailbox::entries_for(s, account, &n, &all))? {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "search failed");
                self.tagged(tag, "NO", "[SERVERBUG] Internal error");
                return Ok(());
            }
        };
        let count = uids_in_view.len();
        let min_modseq = self.modifiers.search_modseq;
        let store = self.server.store.clone();
        let scan = || {
            let mut hits = Vec::new();
            let mut top_modseq = 0u64;
            for e in entries {
                let Ok(i) = uids_in_view.binary_search(&e.uid) else {
                    continue;
                };
                if min_modseq.is_some_and(|m| e.modseq < m) {
                    continue;
                }
                let raw = if body {
                    mailbox::message(&store, e.message_id)
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let c = Candidate {
                    msn: i + 1,
                    uid: e.uid,
                    flags: &flags_in_view[i],
                    size: e.size,
                    internal_date: e.internal_date,
                    message: if body {
                        MessageParser::default().parse(raw.as_slice())
                    } else {
                        None
                    },
                    raw: &raw,
                };
                if matches(criteria, &c, &uids_in_view, count) {
                    hits.push(if uid { e.uid } else { (i + 1) as u32 });
                    top_modseq = top_modseq.max(e.modseq);
                }
            }
            (hits, top_modseq)
        };
        // Reading and parsing every message is CPU work: let the runtime move other
        // sessions off this worker meanwhile.
        let (hits, top_modseq) = if body {
            tokio::task::block_in_place(scan)
        } else {
            scan()
        };
        let list: Vec<String> = hits.iter().map(ToString::to_string).collect();
        if list.is_empty() {
            self.line("* SEARCH");
        } else if min_modseq.is_some() {
            self.line(&format!(
                "* SEARCH {} (MODSEQ {top_modseq})",
                list.join(" ")
            ));
        } else {
            self.line(&format!("* SEARCH {}", list.join(" ")));
        }
        self.tagged(tag, "OK", "Search completed");
        Ok(())
    }
}
