//! FETCH: message attributes, streamed message by message (a message body is loaded only
//! while its response is written, so a 10,000-message FETCH holds one message at a time).

use imap_codec::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use tokio::io::{AsyncRead, AsyncWrite};

use super::bodystructure;
use super::session::Session;
use super::wire;
use crate::mailbox::{self, FlagChange, FlagOp};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `"dd-Mon-yyyy hh:mm:ss +0000"` (RFC 3501 date-time, day space-padded).
pub(super) fn internal_date(ts: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(ts).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "\"{:>2}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn expand(items: MacroOrMessageDataItemNames<'_>) -> Vec<MessageDataItemName<'_>> {
    match items {
        MacroOrMessageDataItemNames::Macro(m) => {
            let mut v = vec![
                MessageDataItemName::Flags,
                MessageDataItemName::InternalDate,
                MessageDataItemName::Rfc822Size,
            ];
            match m {
                Macro::Fast => {}
                Macro::All => v.push(MessageDataItemName::Envelope),
                Macro::Full => {
                    v.push(MessageDataItemName::Envelope);
                    v.push(MessageDataItemName::Body);
                }
                _ => v.push(MessageDataItemName::Envelope),
            }
            v
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `* VANISHED (EARLIER)` for the UIDs of `set` expunged after `since` (RFC 7162 3.2.6).
    async fn vanished_earlier(&mut self, set: &SequenceSet, since: u64) -> std::io::Result<()> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|s| {
                let v = |x: SeqOrUid| match x {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => u32::MAX,
                };
                let (a, b) = match s {
                    Sequence::Single(x) => (v(*x), v(*x)),
                    Sequence::Range(x, y) => (v(*x), v(*y)),
                };
                (a.min(b), a.max(b))
            })
            .collect();
        let ranges = super::condstore::normalize(ranges);
        let (account, name) = (self.account_id(), sel.name.clone());
        let found = self
            .read(move |s, _| mailbox::vanished_since(s, account, &name, since, Some(&ranges)))?;
        match found {
            Ok(g) if !g.is_empty() => {
                self.line(&format!(
                    "* VANISHED (EARLIER) {}",
                    super::selected::ranges_text(&g)
                ));
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "QRESYNC history read failed"),
        }
        Ok(())
    }

    pub(super) async fn fetch(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) -> std::io::Result<()> {
        if self.modifiers.vanished
            && !(uid && self.qresync && self.modifiers.changed_since.is_some())
        {
            // RFC 7162 3.2.6: UID FETCH only, with CHANGEDSINCE, once QRESYNC is enabled
            self.tagged(
                tag,
                "BAD",
                "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC",
            );
            return Ok(());
        }
        let Some((idx, uids)) = self.targets(tag, set, uid, false) else {
            return Ok(());
        };
        if self.modifiers.vanished
            && let Some(since) = self.modifiers.changed_since
        {
            self.vanished_earlier(set, since).await?;
        }
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let mut items = expand(items);
        let changed_since = self.modifiers.changed_since;
        let want_modseq = self.modifiers.fetch_modseq || changed_since.is_some();
        if uid && !items.iter().any(|i| matches!(i, MessageDataItemName::Uid)) {
            items.insert(0, MessageDataItemName::Uid);
        }
        let binary = self.modifiers.binary.clone();
        let needs_body = !binary.is_empty()
            || items.iter().any(|i| {
                !matches!(
                    i,
                    MessageDataItemName::Uid
                        | MessageDataItemName::Flags
                        | MessageDataItemName::InternalDate
                        | MessageDataItemName::Rfc822Size
                )
            });
        let sets_seen = !sel.read_only
            && (binary.iter().any(|b| !b.peek && !b.size)
                || items.iter().any(|i| {
                    matches!(
                        i,
                        MessageDataItemName::BodyExt { peek: false, .. }
                            | MessageDataItemName::Rfc822
                            | MessageDataItemName::Rfc822Text
                    )
                }));
        let mut unknown_cte = false;
        let (account, name) = (self.account_id(), sel.name.clone());
        // Reading a body marks it \Seen first, so the FLAGS reported are the stored ones.
        if sets_seen {
            let unseen: Vec<u32> = idx
                .iter()
                .filter(|&&i| {
                    !sel.flags[i]
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case("\\Seen"))
                })
                .map(|&i| sel.uids[i])
                .collect();
            if !unseen.is_empty() {
                let n = name.clone();
                let seen = vec!["\\Seen".to_string()];
                if let Ok(Ok((changed, _))) = self
                    .blocking(move |s, ch| {
                        mailbox::set_flags(
                            s,
                            ch,
                            account,
                            &n,
                            &unseen,
                            FlagChange {
                                op: FlagOp::Add,
                                flags: &seen,
                                unchanged_since: None,
                            },
                        )
                    })
                    .await
                    && let Some(sel) = self.selected.as_mut()
                {
                    for e in changed {
                        if let Some(i) = sel.index_of(e.uid) {
                            sel.flags[i] = e.flags;
                        }
                    }
                }
            }
        }
        let n = name.clone();
        let entries = match self.read(move |s, _| mailbox::entries_for(s, account, &n, &uids))? {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "fetch failed");
                self.tagged(tag, "NO", "[SERVERBUG] Internal error");
                return Ok(());
            }
        };
        let mut by_uid = entries.into_iter().peekable();
        for &i in &idx {
            let Some(sel) = self.selected.as_ref() else {
                break;
            };
            let uid_i = sel.uids[i];
            // entries come in UID order, like idx
            while by_uid.peek().is_some_and(|e| e.uid < uid_i) {
                by_uid.next();
            }
            let Some(entry) = by_uid.next_if(|e| e.uid == uid_i) else {
                continue; // expunged by another session meanwhile
            };
            if changed_since.is_some_and(|c| entry.modseq <= c) {
                continue;
            }
            let flags = sel.shown_flags(i);
            let stored_flags = sel.flags[i].clone();
            let raw = if needs_body {
                let id = entry.message_id;
                match self.read(move |s, _| mailbox::message(s, id))? {
                    Ok(Some(r)) => Some(r),
                    _ => None,
                }
            } else {
                None
            };
            // a keyword this session hasn't been told about is announced first (RFC 3501 7.2.6)
            if let Some(sel) = self.selected.as_mut()
                && sel.learn_keywords(&stored_flags)
            {
                let lines = sel.flag_lines();
                for l in lines {
                    self.line(&l);
                }
            }
            let mut out = format!("* {} FETCH (", i + 1).into_bytes();
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(b' ');
                }
                match item {
                    MessageDataItemName::Uid => {
                        out.extend_from_slice(format!("UID {}", entry.uid).as_bytes())
                    }
                    MessageDataItemName::Flags => {
                        out.extend_from_slice(format!("FLAGS {flags}").as_bytes())
                    }
                    MessageDataItemName::InternalDate => {
                        out.extend_from_slice(
                            format!("INTERNALDATE {}", internal_date(entry.internal_date))
                                .as_bytes(),
                        );
                    }
                    MessageDataItemName::Rfc822Size => {
                        out.extend_from_slice(format!("RFC822.SIZE {}", entry.size).as_bytes())
                    }
                    MessageDataItemName::Envelope => {
                        out.extend_from_slice(b"ENVELOPE ");
                        match &raw {
                            Some(r) => bodystructure::envelope_of(&mut out, r),
                            None => {
                                out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")
                            }
                        }
                    }
                    MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                        let ext = matches!(item, MessageDataItemName::BodyStructure);
                        out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                        match &raw {
                            Some(r) => bodystructure::body_structure(&mut out, r, ext),
                            None => out.extend_from_slice(
                                b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)",
                            ),
                        }
                    }
                    MessageDataItemName::Rfc822 => {
                        out.extend_from_slice(b"RFC822 ");
                        wire::nliteral(&mut out, raw.as_deref());
                    }
                    MessageDataItemName::Rfc822Header => {
                        let h = raw.as_deref().and_then(|r| {
                            bodystructure::section(
                                r,
                                Some(&imap_codec::imap_types::fetch::Section::Header(None)),
                            )
                        });
                        out.extend_from_slice(b"RFC822.HEADER ");
                        wire::nliteral(&mut out, h.as_deref());
                    }
                    MessageDataItemName::Rfc822Text => {
                        let t = raw.as_deref().and_then(|r| {
                            bodystructure::section(
                                r,
                                Some(&imap_codec::imap_types::fetch::Section::Text(None)),
                            )
                        });
                        out.extend_from_slice(b"RFC822.TEXT ");
                        wire::nliteral(&mut out, t.as_deref());
                    }
                    MessageDataItemName::BodyExt {
                        section, partial, ..
                    } => {
                        let data = raw
                            .as_deref()
                            .and_then(|r| bodystructure::section(r, section.as_ref()));
                        let name = bodystructure::section_name(section.as_ref());
                        match partial {
                            Some((start, len)) => {
                                let data = data.map(|d| {
                                    let s = (*start as usize).min(d.len());
                                    let e = s.saturating_add(len.get() as usize).min(d.len());
                                    d[s..e].to_vec()
                                });
                                out.extend_from_slice(format!("BODY[{name}]<{start}> ").as_bytes());
                                wire::nliteral(&mut out, data.as_deref());
                            }
                            None => {
                                out.extend_from_slice(format!("BODY[{name}] ").as_bytes());
                                wire::nliteral(&mut out, data.as_deref());
                            }
                        }
                    }
                }
                // One item at a time: `BODY[] BODY[] …` never piles up whole copies.
                if out.len() >= super::session::FLUSH_AT {
                    self.out.extend_from_slice(&out);
                    out.clear();
                    self.flush().await?;
                }
            }
            for b in &binary {
                let data = match raw.as_deref().map(|r| bodystructure::binary(r, &b.part)) {
                    Some(bodystructure::Binary::Data(d)) => Some(d),
                    Some(bodystructure::Binary::UnknownCte) => {
                        unknown_cte = true;
                        continue;
                    }
                    _ => None,
                };
                out.extend_from_slice(format!(" {} ", b.name()).as_bytes());
                if b.size {
                    let n = data.as_ref().map_or(0, Vec::len);
                    out.extend_from_slice(n.to_string().as_bytes());
                    continue;
                }
                let data = data.map(|d| match b.partial {
                    Some((start, len)) => {
                        let s = (start as usize).min(d.len());
                        let e = s.saturating_add(len as usize).min(d.len());
                        d[s..e].to_vec()
                    }
                    None => d,
                });
                match data {
                    // literal8 (RFC 3516) when the data holds a NUL, a plain literal otherwise
                    Some(d) if d.contains(&0) => {
                        out.extend_from_slice(format!("~{{{}}}\r\n", d.len()).as_bytes());
                        out.extend_from_slice(&d);
                    }
                    Some(d) => wire::nliteral(&mut out, Some(&d)),
                    None => out.extend_from_slice(b"NIL"),
                }
                if out.len() >= super::session::FLUSH_AT {
                    self.out.extend_from_slice(&out);
                    out.clear();
                    self.flush().await?;
                }
            }
            let has_flags = items
                .iter()
                .any(|i| matches!(i, MessageDataItemName::Flags));
            if sets_seen && !has_flags {
                out.extend_from_slice(format!(" FLAGS {flags}").as_bytes());
            }
            if want_modseq || (self.condstore && (has_flags || sets_seen)) {
                out.extend_from_slice(format!(" MODSEQ ({})", entry.modseq).as_bytes());
            }
            out.extend_from_slice(b")\r\n");
            self.out.extend_from_slice(&out);
            self.maybe_flush().await?;
        }
        if unknown_cte {
            self.tagged(
                tag,
                "NO",
                "[UNKNOWN-CTE] Can't decode a part's Content-Transfer-Encoding",
            );
        } else {
            self.tagged(tag, "OK", "Fetch completed");
        }
        Ok(())
    }
}
