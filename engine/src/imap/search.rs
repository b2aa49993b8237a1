//! SEARCH: every RFC 3501 key over flags, sizes, dates, headers and text (decoded, case
//! insensitive). Message bodies are read only when a key needs them, one at a time.

use imap_codec::imap_types::search::SearchKey;
use mail_parser::{HeaderValue, Message, MessageParser, PartType};
use tokio::io::{AsyncRead, AsyncWrite};

use super::condstore::SearchReturn;
use super::session::Session;
use crate::mailbox;

fn needs_body(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::And(v) => v.as_ref().iter().any(needs_body),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Header(name, _)
            if modseq_key(&String::from_utf8_lossy(name.as_ref())).is_some() =>
        {
            false
        }
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
    modseq: u64,
    flags: &'m [String],
    size: u64,
    internal_date: i64,
    message: Option<Message<'m>>,
}

/// What a key is evaluated against besides the message itself.
struct Scope<'a> {
    /// UIDs of the selected mailbox in sequence order (`*` in a UID set is the last).
    uids: &'a [u32],
    /// Whether a UID is `\Recent` in this session (RFC 3501 2.3.2).
    is_recent: &'a dyn Fn(u32) -> bool,
    /// Values of the MODSEQ keys, which stand in the tree as placeholder HEADER keys
    /// (`condstore::MODSEQ_KEY`).
    modseqs: &'a [u64],
}

/// The index of a MODSEQ placeholder key's header name.
fn modseq_key(name: &str) -> Option<usize> {
    let prefix = super::condstore::MODSEQ_KEY;
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| name[prefix.len()..].parse().ok())
        .flatten()
}

fn contains(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.to_lowercase().contains(&needle.to_lowercase())
}

/// Flags and keywords compare case-insensitively (RFC 3501 2.3.2, RFC 9051 2.3.2); a keyword
/// no message has matches none with KEYWORD and all with UNKEYWORD.
fn has_flag(c: &Candidate<'_>, f: &str) -> bool {
    c.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
}

/// The text of header fields named `name` (all fields when `None`): decoded values and the
/// raw ones, so a search finds both `Jörg` and `=?utf-8?q?J=C3=B6rg?=`.
fn header_text(m: &Message<'_>, name: Option<&str>) -> String {
    let mut out = String::new();
    for h in m.headers() {
        if name.is_some_and(|n| !h.name.as_str().eq_ignore_ascii_case(n)) {
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

/// The decoded text of every text part, attachments and attached messages included (their
/// header fields too: they are body text of the message that carries them).
fn body_text(m: &Message<'_>, out: &mut String, depth: usize) {
    for part in &m.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                out.push_str(t);
                out.push('\n');
            }
            PartType::Message(nested) if depth < 10 => {
                out.push_str(&header_text(nested, None));
                body_text(nested, out, depth + 1);
            }
            _ => {}
        }
    }
}

/// mail-parser 0.11.9 trips a `debug_assert!` on some nestings (a message/rfc822 whose
/// message is itself a message/rfc822, inside a multipart): in a debug build that panic would
/// end the session, so it is caught and the message searched as one that doesn't parse.
fn parse(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

fn day(ts: i64) -> i64 {
    ts.div_euclid(86_400)
}

/// Days since 1970-01-01 of a search date.
fn date_day(d: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    d.as_ref()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
        .div_euclid(86_400)
}

/// The calendar day of the Date: field in the field's own timezone (RFC 3501 6.4.4 SENT*:
/// "disregarding time and timezone"), so `Mon, 1 Jan 2024 23:30:00 -0800` is 1 January.
/// RFC 3501 says nothing of a missing or unparseable Date:; like Dovecot, the internal date
/// stands in for it then.
fn sent_day(c: &Candidate<'_>) -> i64 {
    c.message
        .as_ref()
        .and_then(|m| m.date())
        .filter(|d| d.is_valid())
        .and_then(|d| {
            let month = time::Month::try_from(d.month).ok()?;
            let date = time::Date::from_calendar_date(i32::from(d.year), month, d.day).ok()?;
            Some(day(date.midnight().assume_utc().unix_timestamp()))
        })
        .unwrap_or_else(|| day(c.internal_date))
}

fn matches(k: &SearchKey<'_>, c: &Candidate<'_>, scope: &Scope<'_>) -> bool {
    let text = |a: &imap_codec::imap_types::core::AString<'_>| {
        String::from_utf8_lossy(a.as_ref()).into_owned()
    };
    let hdr = |name: &str, needle: String| {
        c.message
            .as_ref()
            .is_some_and(|m| contains(&header_text(m, Some(name)), &needle))
    };
    let body = |m: &Message<'_>| {
        let mut t = String::new();
        body_text(m, &mut t, 0);
        t
    };
    let recent = || (scope.is_recent)(c.uid);
    let count = scope.uids.len() as u32;
    match k {
        SearchKey::And(v) => v.as_ref().iter().all(|k| matches(k, c, scope)),
        SearchKey::Or(a, b) => matches(a, c, scope) || matches(b, c, scope),
        SearchKey::Not(k) => !matches(k, c, scope),
        SearchKey::All => true,
        SearchKey::SequenceSet(set) => in_set(set, c.msn as u32, count),
        SearchKey::Uid(set) => in_set(set, c.uid, scope.uids.last().copied().unwrap_or(0)),
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
        SearchKey::Recent => recent(),
        // "(RECENT UNSEEN)" and "NOT RECENT"
        SearchKey::New => recent() && !has_flag(c, "\\Seen"),
        SearchKey::Old => !recent(),
        SearchKey::Larger(n) => c.size > u64::from(*n),
        SearchKey::Smaller(n) => c.size < u64::from(*n),
        // the internal date is stored in UTC: its day there
        SearchKey::Before(d) => day(c.internal_date) < date_day(d),
        SearchKey::On(d) => day(c.internal_date) == date_day(d),
        SearchKey::Since(d) => day(c.internal_date) >= date_day(d),
        SearchKey::SentBefore(d) => sent_day(c) < date_day(d),
        SearchKey::SentOn(d) => sent_day(c) == date_day(d),
        SearchKey::SentSince(d) => sent_day(c) >= date_day(d),
        SearchKey::From(a) => hdr("From", text(a)),
        SearchKey::To(a) => hdr("To", text(a)),
        SearchKey::Cc(a) => hdr("Cc", text(a)),
        SearchKey::Bcc(a) => hdr("Bcc", text(a)),
        SearchKey::Subject(a) => hdr("Subject", text(a)),
        // every message with the field matches an empty string (RFC 3501 6.4.4)
        SearchKey::Header(name, _)
            if let Some(k) = modseq_key(&text(name))
                && let Some(&m) = scope.modseqs.get(k) =>
        {
            // RFC 7162 3.1.5: MODSEQ n matches messages with a modification sequence >= n
            c.modseq >= m
        }
        SearchKey::Header(name, value) => c.message.as_ref().is_some_and(|m| {
            let h = header_text(m, Some(&text(name)));
            !h.is_empty() && contains(&h, &text(value))
        }),
        SearchKey::Body(a) => c
            .message
            .as_ref()
            .is_some_and(|m| contains(&body(m), &text(a))),
        SearchKey::Text(a) => {
            let needle = text(a);
            c.message.as_ref().is_some_and(|m| {
                contains(&header_text(m, None), &needle) || contains(&body(m), &needle)
            })
        }
    }
}

/// Whether `v` is in `set`, `*` being `max` (the highest number in use, RFC 3501 9
/// seq-number); `n:m` and `m:n` are the same range.
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
        // the session's own \Recent set (RFC 3501 2.3.2), as SELECT reported it
        let recent = sel.recent.clone();
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
        let modseqs = self.modifiers.search_modseqs.clone();
        let store = self.server.store.clone();
        let is_recent = |u: u32| recent.contains(&u);
        let scope = Scope {
            uids: &uids_in_view,
            is_recent: &is_recent,
            modseqs: &modseqs,
        };
        let scan = || {
            let mut hits = Vec::new();
            let mut top_modseq = 0u64;
            for e in entries {
                let Ok(i) = uids_in_view.binary_search(&e.uid) else {
                    continue;
                };
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
                    modseq: e.modseq,
                    flags: &flags_in_view[i],
                    size: e.size,
                    internal_date: e.internal_date,
                    message: if body { parse(raw.as_slice()) } else { None },
                };
                if matches(criteria, &c, &scope) {
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
        // RFC 7162 3.1.5: a search with MODSEQ reports the highest modseq of what it found
        let with_modseq = !modseqs.is_empty() && !hits.is_empty();
        // ESEARCH (RFC 4731) when asked for, and always under IMAP4rev2 (RFC 9051 6.4.4)
        let esearch = self
            .modifiers
            .search_return
            .or(self.rev2.then(|| SearchReturn {
                all: true,
                ..SearchReturn::default()
            }));
        if let Some(r) = esearch
            && r.save
        {
            // SAVE with MIN and/or MAX alone keeps just those (RFC 5182 2.4)
            let Some(sel) = self.selected.as_mut() else {
                return Ok(());
            };
            let mut as_uids: Vec<u32> = if uid {
                hits.clone()
            } else {
                hits.iter()
                    .filter_map(|&n| sel.uids.get((n as usize).wrapping_sub(1)).copied())
                    .collect()
            };
            as_uids.sort_unstable();
            if (r.min || r.max) && !(r.all || r.count) {
                let (lo, hi) = (as_uids.first().copied(), as_uids.last().copied());
                as_uids = [r.min.then_some(lo).flatten(), r.max.then_some(hi).flatten()]
                    .into_iter()
                    .flatten()
                    .collect();
                as_uids.dedup();
            }
            sel.saved = as_uids;
        }
        if let Some(r) = esearch.filter(|r| r.min || r.max || r.all || r.count) {
            let mut line = format!("* ESEARCH (TAG \"{tag}\")");
            if uid {
                line.push_str(" UID");
            }
            if r.min
                && let Some(v) = hits.iter().min()
            {
                line.push_str(&format!(" MIN {v}"));
            }
            if r.max
                && let Some(v) = hits.iter().max()
            {
                line.push_str(&format!(" MAX {v}"));
            }
            if r.count {
                line.push_str(&format!(" COUNT {}", hits.len()));
            }
            if r.all && !hits.is_empty() {
                let mut sorted = hits.clone();
                sorted.sort_unstable();
                line.push_str(&format!(" ALL {}", super::selected::uid_set(&sorted)));
            }
            if with_modseq {
                line.push_str(&format!(" MODSEQ {top_modseq}"));
            }
            self.line(&line);
        } else if esearch.is_none() {
            let list: Vec<String> = hits.iter().map(ToString::to_string).collect();
            if list.is_empty() {
                self.line("* SEARCH");
            } else if with_modseq {
                self.line(&format!(
                    "* SEARCH {} (MODSEQ {top_modseq})",
                    list.join(" ")
                ));
            } else {
                self.line(&format!("* SEARCH {}", list.join(" ")));
            }
        }
        self.tagged(tag, "OK", "Search completed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::{CommandCodec, decode::Decoder};

    use super::*;

    struct Msg {
        uid: u32,
        flags: Vec<String>,
        internal_date: i64,
        raw: Vec<u8>,
    }

    fn msg(uid: u32, flags: &[&str], internal_date: i64, raw: &str) -> Msg {
        Msg {
            uid,
            flags: flags.iter().map(ToString::to_string).collect(),
            internal_date,
            raw: raw.as_bytes().to_vec(),
        }
    }

    /// UIDs of `msgs` (in sequence order) matching `criteria` as a client sends them.
    fn search(msgs: &[Msg], criteria: &str, recent: &[u32]) -> Vec<u32> {
        let line = format!("a SEARCH {criteria}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .unwrap_or_else(|e| panic!("{criteria}: {e:?}"));
        let CommandBody::Search { criteria: key, .. } = cmd.body else {
            panic!("not SEARCH");
        };
        let uids: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
        let is_recent = |u: u32| recent.contains(&u);
        let scope = Scope {
            uids: &uids,
            is_recent: &is_recent,
            modseqs: &[],
        };
        msgs.iter()
            .enumerate()
            .filter(|(i, m)| {
                let c = Candidate {
                    msn: i + 1,
                    uid: m.uid,
                    modseq: 1,
                    flags: &m.flags,
                    size: m.raw.len() as u64,
                    internal_date: m.internal_date,
                    message: needs_body(&key).then(|| parse(&m.raw[..])).flatten(),
                };
                matches(&key, &c, &scope)
            })
            .map(|(_, m)| m.uid)
            .collect()
    }

    /// 2024-01-01 00:00:00 UTC
    const JAN1: i64 = 1_704_067_200;
    const DAY: i64 = 86_400;

    #[test]
    fn internal_date_keys_use_the_utc_day() {
        let m = [
            msg(1, &[], JAN1 - 1, "Subject: a\r\n\r\nx"), // 31 Dec 23:59:59
            msg(2, &[], JAN1, "Subject: b\r\n\r\nx"),     // 1 Jan 00:00:00
            msg(3, &[], JAN1 + DAY - 1, "Subject: c\r\n\r\nx"), // 1 Jan 23:59:59
            msg(4, &[], JAN1 + DAY, "Subject: d\r\n\r\nx"), // 2 Jan 00:00:00
        ];
        assert_eq!(search(&m, "ON 1-Jan-2024", &[]), [2, 3]);
        assert_eq!(search(&m, "BEFORE 1-Jan-2024", &[]), [1]);
        assert_eq!(search(&m, "SINCE 1-Jan-2024", &[]), [2, 3, 4]);
        assert_eq!(search(&m, "SINCE 2-Jan-2024", &[]), [4]);
        assert_eq!(
            search(&m, "BEFORE 2-Jan-2024 SINCE 1-Jan-2024", &[]),
            [2, 3]
        );
        assert_eq!(search(&m, "ON 31-Dec-2023", &[]), [1]);
    }

    #[test]
    fn sent_date_keys_use_the_header_day_in_its_own_timezone() {
        let m = [
            // 2 Jan 07:30 UTC, but 1 Jan where it was written
            msg(
                1,
                &[],
                JAN1 + 5 * DAY,
                "Date: Mon, 1 Jan 2024 23:30:00 -0800\r\n\r\nx",
            ),
            // 1 Jan 15:30 UTC, but 2 Jan where it was written
            msg(
                2,
                &[],
                JAN1 + 5 * DAY,
                "Date: Tue, 2 Jan 2024 00:30:00 +0900\r\n\r\nx",
            ),
            // no Date: the internal date (31 Dec) stands in, as in Dovecot
            msg(3, &[], JAN1 - 10, "Subject: undated\r\n\r\nx"),
            msg(4, &[], JAN1 - 10, "Date: someday soon\r\n\r\nx"),
        ];
        assert_eq!(search(&m, "SENTON 1-Jan-2024", &[]), [1]);
        assert_eq!(search(&m, "SENTON 2-Jan-2024", &[]), [2]);
        assert_eq!(search(&m, "SENTBEFORE 2-Jan-2024", &[]), [1, 3, 4]);
        assert_eq!(search(&m, "SENTSINCE 2-Jan-2024", &[]), [2]);
        assert_eq!(search(&m, "SENTSINCE 1-Jan-2024", &[]), [1, 2]);
        assert_eq!(search(&m, "SENTON 31-Dec-2023", &[]), [3, 4]);
        // the internal date keys don't look at Date:
        assert_eq!(search(&m, "ON 6-Jan-2024", &[]), [1, 2]);
    }

    fn flagged() -> Vec<Msg> {
        vec![
            msg(10, &["\\Seen", "$Label1"], JAN1, "Subject: 1\r\n\r\nx"),
            msg(
                20,
                &["\\Answered", "\\Flagged"],
                JAN1,
                "Subject: 2\r\n\r\nx",
            ),
            msg(
                30,
                &["\\Deleted", "\\Draft", "\\Seen"],
                JAN1,
                "Subject: 3\r\n\r\nx",
            ),
            msg(
                40,
                &["work"],
                JAN1,
                "Subject: 4\r\n\r\nxxxxxxxxxxxxxxxxxxxx",
            ),
        ]
    }

    #[test]
    fn flag_and_keyword_keys() {
        let m = flagged();
        assert_eq!(search(&m, "KEYWORD $label1", &[]), [10]);
        assert_eq!(search(&m, "KEYWORD $LABEL1", &[]), [10]);
        assert_eq!(search(&m, "KEYWORD WORK", &[]), [40]);
        assert_eq!(search(&m, "UNKEYWORD work", &[]), [10, 20, 30]);
        // a keyword no message has
        assert_eq!(search(&m, "KEYWORD nosuch", &[]), Vec::<u32>::new());
        assert_eq!(search(&m, "UNKEYWORD nosuch", &[]), [10, 20, 30, 40]);
        assert_eq!(search(&m, "SEEN", &[]), [10, 30]);
        assert_eq!(search(&m, "UNSEEN", &[]), [20, 40]);
        assert_eq!(search(&m, "ANSWERED", &[]), [20]);
        assert_eq!(search(&m, "UNANSWERED", &[]), [10, 30, 40]);
        assert_eq!(search(&m, "FLAGGED", &[]), [20]);
        assert_eq!(search(&m, "UNFLAGGED", &[]), [10, 30, 40]);
        assert_eq!(search(&m, "DELETED", &[]), [30]);
        assert_eq!(search(&m, "UNDELETED", &[]), [10, 20, 40]);
        assert_eq!(search(&m, "DRAFT", &[]), [30]);
        assert_eq!(search(&m, "UNDRAFT", &[]), [10, 20, 40]);
    }

    #[test]
    fn recent_new_old() {
        let m = flagged();
        assert_eq!(search(&m, "RECENT", &[]), Vec::<u32>::new());
        assert_eq!(search(&m, "OLD", &[]), [10, 20, 30, 40]);
        assert_eq!(search(&m, "RECENT", &[30, 40]), [30, 40]);
        // NEW is (RECENT UNSEEN), OLD is NOT RECENT
        assert_eq!(search(&m, "NEW", &[30, 40]), [40]);
        assert_eq!(search(&m, "OLD", &[30, 40]), [10, 20]);
        assert_eq!(search(&m, "NOT NEW", &[30, 40]), [10, 20, 30]);
    }

    #[test]
    fn not_or_and_sets() {
        let m = flagged();
        assert_eq!(search(&m, "OR SEEN FLAGGED", &[]), [10, 20, 30]);
        assert_eq!(search(&m, "NOT OR SEEN FLAGGED", &[]), [40]);
        assert_eq!(search(&m, "OR (SEEN DELETED) NOT 1:3", &[]), [30, 40]);
        assert_eq!(
            search(&m, "OR OR ANSWERED DRAFT KEYWORD work", &[]),
            [20, 30, 40]
        );
        assert_eq!(search(&m, "NOT NOT SEEN", &[]), [10, 30]);
        assert_eq!(search(&m, "(SEEN (UNDELETED))", &[]), [10]);
        // sequence numbers and UIDs differ: 2:* by number, UID 20:* by UID
        assert_eq!(search(&m, "2:*", &[]), [20, 30, 40]);
        assert_eq!(search(&m, "*", &[]), [40]);
        assert_eq!(search(&m, "*:3", &[]), [30, 40]);
        assert_eq!(search(&m, "1,3", &[]), [10, 30]);
        assert_eq!(search(&m, "UID 20:*", &[]), [20, 30, 40]);
        assert_eq!(search(&m, "UID 15:25,40", &[]), [20, 40]);
        assert_eq!(search(&m, "UID 2:3", &[]), Vec::<u32>::new());
        assert_eq!(search(&m, "UID *", &[]), [40]);
        assert_eq!(search(&m, "NOT UID 1:20", &[]), [30, 40]);
        assert_eq!(search(&m, "OR 1 UID 40", &[]), [10, 40]);
    }

    #[test]
    fn sizes_and_their_overflow() {
        let m = flagged();
        let small = m[0].raw.len();
        assert_eq!(search(&m, &format!("LARGER {small}"), &[]), [40]);
        assert_eq!(
            search(&m, &format!("SMALLER {}", small + 1), &[]),
            [10, 20, 30]
        );
        assert_eq!(search(&m, "LARGER 4294967295", &[]), Vec::<u32>::new());
        assert_eq!(search(&m, "SMALLER 4294967295", &[]), [10, 20, 30, 40]);
        assert_eq!(search(&m, "SMALLER 0", &[]), Vec::<u32>::new());
        // beyond u32 the command doesn't parse: the session answers BAD
        for k in ["LARGER 4294967296", "SMALLER 99999999999999999999"] {
            let line = format!("a SEARCH {k}\r\n");
            assert!(
                CommandCodec::default().decode(line.as_bytes()).is_err(),
                "{k}"
            );
        }
    }

    #[test]
    fn header_text_and_body_keys() {
        let m = [
            msg(
                1,
                &[],
                JAN1,
                "From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
                 X-Empty:\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\nSch=F6ne W=FCnsche\r\n",
            ),
            msg(
                2,
                &[],
                JAN1,
                "From: bob@example.org\r\nSubject: attachment\r\nX-Other: 1\r\n\
                 Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nsee attached\r\n\
                 --b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nbmVlZGxlIGluIGJhc2U2NA==\r\n--b--\r\n",
            ),
        ];
        // HEADER name "" matches every message having the field, empty or not
        assert_eq!(search(&m, "HEADER X-Empty \"\"", &[]), [1]);
        assert_eq!(search(&m, "HEADER x-other \"\"", &[]), [2]);
        assert_eq!(search(&m, "HEADER X-Absent \"\"", &[]), Vec::<u32>::new());
        assert_eq!(search(&m, "HEADER From EXAMPLE.ORG", &[]), [2]);
        // decoded text, case-insensitively
        assert_eq!(search(&m, "CHARSET UTF-8 FROM {5}\r\njörg", &[]), [1]);
        assert_eq!(search(&m, "FROM =?utf-8?q?J=C3=B6rg?=", &[]), [1]);
        assert_eq!(search(&m, "CHARSET UTF-8 SUBJECT {7}\r\nGRÜßE", &[]), [1]);
        assert_eq!(search(&m, "CHARSET UTF-8 BODY {7}\r\nschöne", &[]), [1]);
        assert_eq!(search(&m, "BODY \"NEEDLE IN BASE64\"", &[]), [2]);
        assert_eq!(search(&m, "BODY attachment", &[]), Vec::<u32>::new());
        assert_eq!(search(&m, "TEXT attachment", &[]), [2]);
        assert_eq!(search(&m, "CHARSET UTF-8 TEXT {7}\r\nwünsch", &[]), [1]);
        assert_eq!(search(&m, "TEXT jorg@EXAMPLE.com", &[]), [1]);
        assert_eq!(search(&m, "TEXT \"\"", &[]), [1, 2]);
    }

    #[test]
    fn rfc822_in_rfc822_does_not_end_the_search() {
        let raw =
            String::from_utf8_lossy(include_bytes!("../../tests/corpus/imap/nested-single.eml"))
                .into_owned();
        let m = [
            msg(1, &[], JAN1, &raw),
            msg(2, &[], JAN1, "Subject: other\r\n\r\nx"),
        ];
        assert_eq!(search(&m, "SUBJECT other", &[]), [2]);
        if !cfg!(debug_assertions) {
            assert_eq!(search(&m, "BODY \"deepest body\"", &[]), [1]);
        }
    }
}
