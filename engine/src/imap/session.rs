//! One IMAP connection: states (not authenticated, authenticated, selected), the driver loop
//! (framing, literals, IDLE, STARTTLS) and the dispatcher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wispd_store::schema::MailAccount;

use super::Server;
use super::condstore::{self, Modifiers};
use super::framing::{Frame, Framer};
use super::selected::Selected;
use crate::limits::Refusal;
use crate::login::Verdict;
use crate::metrics::{LoginResult, Protocol};

/// Largest literal accepted before login.
const PREAUTH_LITERAL: usize = 8 * 1024;
/// Invalid commands a client may send before login; then it is disconnected.
const MAX_PREAUTH_BAD: u32 = 10;
/// Bytes read at a time.
const READ_CHUNK: usize = 32 * 1024;
/// Output is written out once this much is pending (large FETCHes stream).
pub(super) const FLUSH_AT: usize = 256 * 1024;

/// What the driver does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Logout,
    StartTls,
}

pub(super) struct Session<S> {
    pub stream: S,
    pub server: Arc<Server>,
    pub peer: SocketAddr,
    pub tls: bool,
    pub out: Vec<u8>,
    pub account: Option<MailAccount>,
    pub selected: Option<Selected>,
    /// Tag of a running IDLE.
    pub idling: Option<String>,
    /// Tag of an AUTHENTICATE PLAIN waiting for its response line.
    pub authenticating: Option<String>,
    /// [`crate::mailbox::Changes`] version at the last complete sync of the selected mailbox.
    pub synced_version: u64,
    /// CONDSTORE is enabled: FETCH responses carry MODSEQ.
    pub condstore: bool,
    /// QRESYNC is enabled (RFC 7162): VANISHED instead of EXPUNGE, SELECT … (QRESYNC …).
    pub qresync: bool,
    /// IMAP4rev2 is enabled (RFC 9051): no `\Recent`/RECENT, ESEARCH answers SEARCH.
    pub rev2: bool,
    /// The CONDSTORE modifiers of the command being run.
    pub modifiers: Modifiers,
    /// `BAD` answers given before login.
    pub bad_commands: u32,
}

/// Text after the tag: `name` in upper case and the rest.
fn split_command(line: &[u8]) -> (String, String, Vec<u8>) {
    let text = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    let mut parts = text.splitn(3, |&b| b == b' ');
    let tag = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_ascii_uppercase();
    let rest = parts.next().unwrap_or_default().to_vec();
    (tag, name, rest)
}

/// Rewrites quoted strings and atoms that carry 8-bit bytes as LITERAL+ literals, leaving
/// existing literals alone.
fn literalize_8bit(cmd: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmd.len() + 16);
    let mut i = 0;
    let lit = |out: &mut Vec<u8>, v: &[u8]| {
        out.extend_from_slice(format!("{{{}+}}\r\n", v.len()).as_bytes());
        out.extend_from_slice(v);
    };
    while i < cmd.len() {
        let b = cmd[i];
        if b == b'{' {
            // an existing literal: copy its header and data through
            if let Some(close) = cmd[i..].iter().position(|&c| c == b'}') {
                let digits = String::from_utf8_lossy(&cmd[i + 1..i + close])
                    .trim_end_matches('+')
                    .to_string();
                if let Ok(n) = digits.parse::<usize>() {
                    let data_start = i + close + 3;
                    let end = data_start.saturating_add(n).min(cmd.len());
                    out.extend_from_slice(&cmd[i..end]);
                    i = end;
                    continue;
                }
            }
            out.push(b);
            i += 1;
        } else if b == b'"' {
            let mut j = i + 1;
            let mut value = Vec::new();
            while j < cmd.len() && cmd[j] != b'"' {
                if cmd[j] == b'\\' && j + 1 < cmd.len() {
                    j += 1;
                }
                value.push(cmd[j]);
                j += 1;
            }
            if value.is_ascii() {
                out.extend_from_slice(&cmd[i..(j + 1).min(cmd.len())]);
            } else {
                lit(&mut out, &value);
            }
            i = j + 1;
        } else if b >= 0x80 || (i > 0 && matches!(cmd[i - 1], b' ' | b'(') && b != b' ') {
            let mut j = i;
            while j < cmd.len() && !matches!(cmd[j], b' ' | b'(' | b')' | b'\r' | b'\n') {
                j += 1;
            }
            if j == i {
                // a delimiter right after a space or parenthesis: not an atom
                out.push(b);
                i += 1;
            } else if cmd[i..j].is_ascii() {
                out.extend_from_slice(&cmd[i..j]);
                i = j;
            } else {
                lit(&mut out, &cmd[i..j]);
                i = j;
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b))
}

pub(super) fn astring(a: &AString<'_>) -> String {
    String::from_utf8_lossy(a.as_ref()).into_owned()
}

/// A mailbox name from the wire, canonical (`INBOX` in any case).
pub(super) fn mailbox_name(m: &ImapMailbox<'_>) -> String {
    match m {
        ImapMailbox::Inbox => "INBOX".into(),
        ImapMailbox::Other(o) => crate::mailbox::canonical(&String::from_utf8_lossy(o.as_ref())),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn capabilities(&self) -> String {
        let mut c = String::from(
            "IMAP4rev1 IMAP4rev2 LITERAL+ LITERAL- SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE QUOTA CONDSTORE QRESYNC ESEARCH LIST-EXTENDED LIST-STATUS STATUS=SIZE BINARY SEARCHRES",
        );
        if self.account.is_none() {
            if !self.tls && self.server.tls.is_some() {
                c.push_str(" STARTTLS");
            }
            if self.server.plaintext_ok(self.peer.ip(), self.tls) {
                c.push_str(" AUTH=PLAIN");
            } else {
                c.push_str(" LOGINDISABLED");
            }
        }
        c
    }

    pub fn line(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn tagged(&mut self, tag: &str, status: &str, text: &str) {
        if status == "BAD" && self.account.is_none() {
            self.bad_commands += 1;
        }
        let t = if tag.is_empty() { "*" } else { tag };
        self.line(&format!("{t} {status} {text}"));
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let idle = self.server.settings.idle_timeout;
            tokio::time::timeout(idle, self.stream.write_all(&self.out))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes out pending output once there is a lot of it.
    pub async fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn frame(&mut self, frame: Frame) -> std::io::Result<Flow> {
        match frame {
            Frame::Continue => {
                self.line("+ Ready for literal data");
                self.flush().await?;
                Ok(Flow::Continue)
            }
            Frame::TooLong(tag) => {
                let tag = tag.filter(|t| valid_tag(t)).unwrap_or_else(|| "*".into());
                self.tagged(&tag, "BAD", "Command line too long");
                Ok(Flow::Continue)
            }
            Frame::LiteralTooBig { tag, .. } => {
                let tag = tag.filter(|t| valid_tag(t)).unwrap_or_else(|| "*".into());
                self.tagged(&tag, "NO", "[TOOBIG] Literal too large");
                Ok(Flow::Continue)
            }
            Frame::LiteralRefused { tag, .. } => {
                let tag = tag.filter(|t| valid_tag(t)).unwrap_or_else(|| "*".into());
                tracing::warn!("literal refused: memory budget for messages in flight is full");
                self.tagged(
                    &tag,
                    "NO",
                    "[UNAVAILABLE] Too many messages in transfer, try again later",
                );
                Ok(Flow::Continue)
            }
            Frame::Command(bytes) => {
                let (_, name, rest) = split_command(&bytes);
                let verb = if name == "UID" {
                    let rest = String::from_utf8_lossy(&rest[..rest.len().min(16)]).into_owned();
                    rest.split(' ').next().unwrap_or_default().to_string()
                } else {
                    name
                };
                let t = std::time::Instant::now();
                let flow = self.command(bytes).await;
                self.server
                    .metrics
                    .imap_command(&verb, t.elapsed().as_secs_f64());
                flow
            }
        }
    }

    async fn command(&mut self, bytes: Vec<u8>) -> std::io::Result<Flow> {
        if let Some(tag) = self.idling.take() {
            let (word, _, _) = split_command(&bytes);
            if word.eq_ignore_ascii_case("DONE") {
                self.tagged(&tag, "OK", "Idle completed");
            } else {
                self.tagged(&tag, "BAD", "Expected DONE");
            }
            return Ok(Flow::Continue);
        }
        if let Some(tag) = self.authenticating.take() {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text == "*" {
                self.tagged(&tag, "BAD", "Authentication aborted");
                return Ok(Flow::Continue);
            }
            return self.authenticate_plain(&tag, text.as_bytes()).await;
        }
        let (tag, name, rest) = split_command(&bytes);
        if !valid_tag(&tag) {
            self.tagged("*", "BAD", "Invalid tag");
            return Ok(Flow::Continue);
        }
        // `$`, the saved search result (SEARCHRES), becomes the set it stands for
        let bytes = match self.saved_result(&name, &rest, bytes) {
            Some(b) => b,
            None => {
                self.tagged(&tag, "OK", "Completed (the saved result is empty)");
                return Ok(Flow::Continue);
            }
        };
        let (tag, name, rest) = split_command(&bytes);
        // Commands imap-codec 1.0 doesn't know.
        match name.as_str() {
            "LIST" if self.account.is_some() => {
                if let Some(args) = super::args::tokenize(&rest) {
                    match super::args::list_command(&args) {
                        Ok(cmd) => {
                            if self.selected.is_some() {
                                self.sync(true).await?;
                            }
                            self.list_extended(&tag, &cmd, false).await?;
                        }
                        Err(why) => self.tagged(&tag, "BAD", why),
                    }
                    return Ok(Flow::Continue);
                }
            }
            "ID" => {
                self.line("* ID (\"name\" \"wispd\")");
                self.tagged(&tag, "OK", "ID completed");
                return Ok(Flow::Continue);
            }
            "NAMESPACE" => {
                if self.account.is_none() {
                    self.tagged(&tag, "BAD", "Log in first");
                } else {
                    self.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                    self.tagged(&tag, "OK", "Namespace completed");
                }
                return Ok(Flow::Continue);
            }
            "UID" => {
                let text = String::from_utf8_lossy(&rest).into_owned();
                let (sub, set) = text.split_once(' ').unwrap_or((text.as_str(), ""));
                if sub.eq_ignore_ascii_case("EXPUNGE") {
                    if self.account.is_none() {
                        self.tagged(&tag, "BAD", "Log in first");
                    } else if self.selected.is_none() {
                        self.tagged(&tag, "BAD", "No mailbox selected");
                    } else {
                        self.sync(true).await?;
                        self.uid_expunge(&tag, set.trim()).await?;
                    }
                    return Ok(Flow::Continue);
                }
            }
            _ => {}
        }
        let verb = if name == "UID" {
            let text = String::from_utf8_lossy(&rest).to_ascii_uppercase();
            text.split(' ').next().unwrap_or_default().to_string()
        } else {
            name.clone()
        };
        let (bytes, modifiers) = condstore::strip(&verb, bytes);
        if let Some(why) = modifiers.error {
            self.tagged(&tag, "BAD", why);
            return Ok(Flow::Continue);
        }
        if modifiers.enables() && self.account.is_some() {
            self.condstore = true;
        }
        self.modifiers = modifiers;
        // Clients send UTF-8 in quoted strings and atoms (SEARCH); IMAP4rev1 wants literals.
        let bytes = if !bytes.is_ascii() && CommandCodec::default().decode(&bytes).is_err() {
            literalize_8bit(&bytes)
        } else {
            bytes
        };
        let parsed = CommandCodec::default().decode(&bytes);
        let command = match parsed {
            Ok((_, c)) => c,
            Err(_) => {
                self.tagged(
                    &tag,
                    "BAD",
                    "Error in IMAP command: unknown command or invalid arguments",
                );
                return Ok(Flow::Continue);
            }
        };
        self.dispatch(command).await
    }

    /// Replaces each `$` token of a command with the saved search result (RFC 5182): UIDs in
    /// UID commands, sequence numbers otherwise, a `UID` search key in SEARCH. `None`: the
    /// command names only the empty saved result by sequence number (nothing to do).
    fn saved_result(&self, name: &str, rest: &[u8], bytes: Vec<u8>) -> Option<Vec<u8>> {
        let Some(sel) = self.selected.as_ref() else {
            return Some(bytes);
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Some(bytes);
        };
        let refs = super::condstore::saved_result_refs(text);
        if refs.is_empty() {
            return Some(bytes);
        }
        let uid = name == "UID";
        let verb = if uid {
            String::from_utf8_lossy(&rest[..rest.len().min(16)])
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase()
        } else {
            name.to_string()
        };
        let present: Vec<u32> = sel
            .saved
            .iter()
            .copied()
            .filter(|u| sel.index_of(*u).is_some())
            .collect();
        let uids = if present.is_empty() {
            // no such UID: an empty set that still parses
            u32::MAX.to_string()
        } else {
            super::selected::uid_set(&present)
        };
        let replacement = if verb == "SEARCH" {
            format!("UID {uids}")
        } else if uid {
            uids
        } else if present.is_empty() {
            return None;
        } else {
            let msns: Vec<u32> = present
                .iter()
                .filter_map(|u| sel.index_of(*u).map(|i| i as u32 + 1))
                .collect();
            super::selected::uid_set(&msns)
        };
        let mut out = String::with_capacity(text.len() + replacement.len() * refs.len());
        let mut last = 0;
        for at in refs {
            out.push_str(&text[last..at]);
            out.push_str(&replacement);
            last = at + 1;
        }
        out.push_str(&text[last..]);
        Some(out.into_bytes())
    }

    async fn dispatch(&mut self, command: Command<'_>) -> std::io::Result<Flow> {
        let tag = command.tag.as_ref().to_string();
        let authed = self.account.is_some();
        let selected = self.selected.is_some();
        // Updates from other sessions go out before the tagged reply — except around FETCH,
        // STORE and SEARCH by sequence number, where an EXPUNGE would shift the numbers the
        // client is using (RFC 3501 §7.4.1).
        let by_sequence = matches!(
            command.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
                | CommandBody::Copy { uid: false, .. }
                | CommandBody::Move { uid: false, .. }
        );
        if selected && authed {
            self.sync(!by_sequence).await?;
        }
        match command.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.line(&format!("* CAPABILITY {caps}"));
                self.tagged(&tag, "OK", "Capability completed");
            }
            CommandBody::Noop => self.tagged(&tag, "OK", "NOOP completed"),
            CommandBody::Logout => {
                self.line("* BYE Logging out");
                self.tagged(&tag, "OK", "Logout completed");
                return Ok(Flow::Logout);
            }
            CommandBody::StartTLS => {
                if self.tls {
                    self.tagged(&tag, "BAD", "TLS is already active");
                } else if authed || self.server.tls.is_none() {
                    self.tagged(&tag, "BAD", "STARTTLS not available");
                } else {
                    self.tagged(&tag, "OK", "Begin TLS negotiation now");
                    return Ok(Flow::StartTls);
                }
            }
            CommandBody::Login { username, password } => {
                let user = astring(&username);
                let pass = astring(password.declassify());
                self.login(&tag, &user, &pass).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if authed {
                    self.tagged(&tag, "BAD", "Already logged in");
                } else if !matches!(mechanism, AuthMechanism::Plain) {
                    self.tagged(&tag, "NO", "Unsupported authentication mechanism");
                } else if !self.server.plaintext_ok(self.peer.ip(), self.tls) {
                    self.tagged(&tag, "NO", "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections");
                } else {
                    match initial_response {
                        Some(r) => {
                            let decoded = r.declassify().to_vec();
                            self.check_plain(&tag, &decoded).await;
                        }
                        None => {
                            self.line("+ ");
                            self.authenticating = Some(tag);
                        }
                    }
                }
            }
            _ if !authed => self.tagged(&tag, "BAD", "Log in first"),
            CommandBody::Select { mailbox } => {
                self.select(&tag, &mailbox_name(&mailbox), false).await?
            }
            CommandBody::Examine { mailbox } => {
                self.select(&tag, &mailbox_name(&mailbox), true).await?
            }
            CommandBody::Create { mailbox } => self.create(&tag, &mailbox_name(&mailbox)).await,
            CommandBody::Delete { mailbox } => self.delete(&tag, &mailbox_name(&mailbox)).await,
            CommandBody::Rename { from, to } => {
                self.rename(&tag, &mailbox_name(&from), &mailbox_name(&to))
                    .await
            }
            CommandBody::Subscribe { mailbox } => {
                self.subscribe(&tag, &mailbox_name(&mailbox), true).await
            }
            CommandBody::Unsubscribe { mailbox } => {
                self.subscribe(&tag, &mailbox_name(&mailbox), false).await
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                self.list(
                    &tag,
                    &mailbox_name(&reference),
                    &super::mailboxes::pattern(&mailbox_wildcard),
                    false,
                )
                .await?
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                self.list(
                    &tag,
                    &mailbox_name(&reference),
                    &super::mailboxes::pattern(&mailbox_wildcard),
                    true,
                )
                .await?
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                self.status(&tag, &mailbox_name(&mailbox), &item_names)
                    .await
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let flags = flags.iter().map(ToString::to_string).collect();
                let date = date.map(|d| d.as_ref().timestamp());
                self.append(&tag, &mailbox_name(&mailbox), flags, date, message.data())
                    .await
            }
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    let name = c.to_string().to_ascii_uppercase();
                    // ENABLED lists what this command newly enabled (RFC 5161 3.2)
                    match name.as_str() {
                        "CONDSTORE" if !self.condstore => {
                            self.condstore = true;
                            enabled.push("CONDSTORE");
                        }
                        "QRESYNC" if !self.qresync => {
                            // QRESYNC implies CONDSTORE (RFC 7162 3.2.3)
                            self.condstore = true;
                            self.qresync = true;
                            enabled.push("QRESYNC");
                        }
                        "IMAP4REV2" if !self.rev2 => {
                            self.rev2 = true;
                            enabled.push("IMAP4rev2");
                        }
                        _ => {}
                    }
                }
                enabled.dedup();
                if enabled.is_empty() {
                    self.line("* ENABLED");
                } else {
                    self.line(&format!("* ENABLED {}", enabled.join(" ")));
                }
                self.tagged(&tag, "OK", "Enabled");
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                self.quota_root(&tag, &mailbox_name(&mailbox)).await
            }
            CommandBody::GetQuota { root } => self.quota(&tag, &astring(&root)).await,
            CommandBody::SetQuota { .. } => {
                self.tagged(&tag, "NO", "Quotas are set through the API")
            }
            CommandBody::Idle => {
                self.line("+ idling");
                self.idling = Some(tag);
                // the first updates go out at once
            }
            CommandBody::Compress { .. } => self.tagged(&tag, "NO", "COMPRESS is not supported"),
            _ if !selected => self.tagged(&tag, "BAD", "No mailbox selected"),
            CommandBody::Check => self.tagged(&tag, "OK", "Check completed"),
            CommandBody::Close => {
                self.close_mailbox().await;
                self.tagged(&tag, "OK", "Close completed");
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.tagged(&tag, "OK", "Unselect completed");
            }
            CommandBody::Expunge => self.expunge(&tag, None).await?,
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                self.search(
                    &tag,
                    charset.as_ref().map(|c| c.as_ref().to_string()),
                    &criteria,
                    uid,
                )
                .await?;
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
            } => {
                self.fetch(&tag, &sequence_set, macro_or_item_names, uid)
                    .await?;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
            } => {
                self.store(&tag, &sequence_set, kind, response, &flags, uid)
                    .await?;
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy(&tag, &sequence_set, &mailbox_name(&mailbox), uid, false)
                    .await?
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy(&tag, &sequence_set, &mailbox_name(&mailbox), uid, true)
                    .await?
            }
        }
        Ok(Flow::Continue)
    }

    async fn login(&mut self, tag: &str, user: &str, pass: &str) {
        if self.account.is_some() {
            self.tagged(tag, "BAD", "Already logged in");
            return;
        }
        if !self.server.plaintext_ok(self.peer.ip(), self.tls) {
            self.tagged(
                tag,
                "NO",
                "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections",
            );
            return;
        }
        self.verify(tag, user.to_string(), pass.to_string()).await;
    }

    async fn authenticate_plain(&mut self, tag: &str, b64: &[u8]) -> std::io::Result<Flow> {
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(d) => self.check_plain(tag, &d).await,
            Err(_) => self.tagged(tag, "BAD", "Invalid base64"),
        }
        Ok(Flow::Continue)
    }

    /// SASL PLAIN: `authzid NUL authcid NUL password`; authzid must be empty or the same user.
    async fn check_plain(&mut self, tag: &str, decoded: &[u8]) {
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authz, user, pass] = parts.as_slice() else {
            self.tagged(tag, "BAD", "Invalid PLAIN response");
            return;
        };
        let (user, pass) = (
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(pass).into_owned(),
        );
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user.as_bytes()) {
            self.tagged(tag, "NO", "[AUTHORIZATIONFAILED] Can't act as another user");
            return;
        }
        self.verify(tag, user, pass).await;
    }

    async fn verify(&mut self, tag: &str, user: String, pass: String) {
        let verdict = self
            .server
            .logins
            .check(crate::login::Protocol::Imap, self.peer.ip(), &user, &pass)
            .await;
        self.server
            .metrics
            .login(Protocol::Imap, LoginResult::from(&verdict));
        match verdict {
            Verdict::Accepted(account) => {
                tracing::info!(user = %account.email(), "imap login");
                self.account = Some(account);
                let caps = self.capabilities();
                self.tagged(tag, "OK", &format!("[CAPABILITY {caps}] Logged in"));
            }
            Verdict::Refused => {
                let n = self.server.logins.failures(self.peer.ip());
                tracing::debug!(failures = n, "imap login failed");
                self.tagged(tag, "NO", "[AUTHENTICATIONFAILED] Authentication failed.");
            }
            Verdict::Busy => {
                tracing::warn!("imap login refused: too many logins being checked");
                self.tagged(tag, "NO", "[UNAVAILABLE] Temporary authentication failure");
            }
            Verdict::Failed(e) => {
                tracing::error!(error = %e, "login check failed");
                self.tagged(tag, "NO", "[UNAVAILABLE] Temporary authentication failure");
            }
        }
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(session: &mut Session<S>) -> std::io::Result<bool> {
    let shutdown = session.server.shutdown.clone();
    let idle = session.server.settings.idle_timeout;
    let mut changes = session.server.changes.subscribe();
    let mut framer = Framer::new(
        session.server.settings.max_line,
        session.server.settings.max_literal,
    );
    let mut chunk = vec![0u8; READ_CHUNK];
    // the memory the command being read holds (its literals), from the server's budget
    let mut memory = session.server.memory.reservation(session.peer.ip());
    loop {
        session.flush().await?;
        let n = tokio::select! {
            () = shutdown.cancelled() => {
                session.line("* BYE Server shutting down");
                let _ = tokio::time::timeout(Duration::from_secs(1), session.flush()).await;
                return Ok(false);
            }
            changed = changes.changed(), if session.idling.is_some() => {
                if changed.is_ok() {
                    session.sync(true).await?;
                }
                continue;
            }
            read = tokio::time::timeout(idle, session.stream.read(&mut chunk)) => match read {
                Ok(r) => r?,
                Err(_) => {
                    session.line("* BYE Disconnected for inactivity");
                    let _ = tokio::time::timeout(Duration::from_secs(1), session.flush()).await;
                    return Ok(false);
                }
            },
        };
        if n == 0 {
            return Ok(false);
        }
        let mut input = &chunk[..n];
        loop {
            // Before login, literals are for names and passwords only.
            let limit = if session.account.is_some() {
                session.server.settings.max_literal
            } else {
                PREAUTH_LITERAL
            };
            let Some(frame) = framer.next(&mut input, limit, &mut |n| memory.grow_to(n)) else {
                break;
            };
            let whole = !matches!(frame, Frame::Continue);
            let flow = session.frame(frame).await?;
            if whole {
                memory.release();
            }
            if session.account.is_none() && session.bad_commands >= MAX_PREAUTH_BAD {
                session.line("* BYE Too many invalid commands");
                session.flush().await?;
                let _ = session.stream.shutdown().await;
                return Ok(false);
            }
            match flow {
                Flow::Continue => {
                    if session.idling.is_some() {
                        // IDLE starts with any pending updates
                        session.sync(true).await?;
                        changes.mark_unchanged();
                    }
                }
                Flow::Logout => {
                    session.flush().await?;
                    let _ = session.stream.shutdown().await;
                    return Ok(false);
                }
                Flow::StartTls => {
                    // Anything pipelined after STARTTLS came in clear: dropped.
                    session.flush().await?;
                    return Ok(true);
                }
            }
        }
    }
}

/// Serves one connection: greeting, optional TLS (implicit or STARTTLS), then the session.
pub(super) async fn connection(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
) {
    let _slot = match server.limits.admit(peer.ip()) {
        Ok(s) => s,
        Err(_) if implicit_tls => {
            // the client expects a TLS handshake, not a plaintext BYE: just close
            tracing::info!("imaps connection refused: over the limit");
            return;
        }
        Err(r) => {
            let mut stream = stream;
            let msg: &[u8] = match r {
                Refusal::Full => b"* BYE Too many connections, try again later\r\n",
                Refusal::PerAddress => b"* BYE Too many connections from your address\r\n",
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(msg)).await;
            return;
        }
    };
    server.metrics.imap_sessions.inc();
    if implicit_tls {
        let Some(tls) = handshake(&server, stream).await else {
            return;
        };
        let mut s = new_session(server, tls, peer, true);
        greet(&mut s);
        let _ = run(&mut s).await;
        return;
    }
    let mut s = new_session(server.clone(), stream, peer, false);
    greet(&mut s);
    match run(&mut s).await {
        Ok(true) => {}
        Ok(false) | Err(_) => return,
    }
    let Some(tls) = handshake(&server, s.stream).await else {
        return;
    };
    let mut t = new_session(server, tls, peer, true);
    let _ = run(&mut t).await;
}

fn new_session<S>(server: Arc<Server>, stream: S, peer: SocketAddr, tls: bool) -> Session<S> {
    Session {
        stream,
        server,
        peer,
        tls,
        out: Vec::with_capacity(1024),
        account: None,
        selected: None,
        idling: None,
        authenticating: None,
        synced_version: u64::MAX,
        condstore: false,
        qresync: false,
        rev2: false,
        modifiers: Modifiers::default(),
        bad_commands: 0,
    }
}

fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut Session<S>) {
    let caps = s.capabilities();
    s.line(&format!("* OK [CAPABILITY {caps}] wispd ready"));
}

async fn handshake(
    server: &Server,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = server.tls.clone()?;
    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "imap TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_bit_strings_become_literals() {
        let cmd = "a SEARCH CHARSET UTF-8 SUBJECT \"Grüße\" FROM Jörg\r\n".as_bytes();
        let out = literalize_8bit(cmd);
        assert_eq!(
            out,
            "a SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nGrüße FROM {5+}\r\nJörg\r\n".as_bytes()
        );
        assert!(CommandCodec::default().decode(&out).is_ok());
        let with_literal = "a SEARCH TEXT {2}\r\nü BODY \"é\"\r\n".as_bytes();
        assert_eq!(
            literalize_8bit(with_literal),
            "a SEARCH TEXT {2}\r\nü BODY {2+}\r\né\r\n".as_bytes()
        );
        // delimiters after a space are not atoms (this once looped forever)
        let odd = "a LOGIN ü (\r\n".as_bytes();
        assert_eq!(literalize_8bit(odd), "a LOGIN {2+}\r\nü (\r\n".as_bytes());
        let nested = "a SEARCH CHARSET UTF-8 (SUBJECT \"ü\")\r\n".as_bytes();
        assert!(
            CommandCodec::default()
                .decode(&literalize_8bit(nested))
                .is_ok()
        );
    }
}
