//! Mailing lists (`/email/mailinglist`): first-class addresses of a domain, as Mailman keeps
//! them. A list `name@domain` also answers at:
//!
//! - `name-subscribe@` / `name-unsubscribe@`: a request by mail, confirmed by replying to
//!   `name-confirm+TOKEN@` (the round trip Mailman users know);
//! - `name+bounces@` and `name+bounces-user=host@`: the return path of every copy sent out
//!   (VERP), so a bounce names the member it is about.
//!
//! A post is checked against the list's policy, then fanned out in one delivery: local members
//! through the durable path in the same commit as the queue entry holding the copy for every
//! remote member. The queue gives each remote member its own return path and unsubscribe link
//! when it sends (one transaction per member, as VERP needs).

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mail_auth::MessageAuthenticator;
use wispd_store::schema::{
    ArchivedPost, HeldPost, ListMember, MAIL_LIST_ARCHIVE, MAIL_LIST_ARCHIVE_DATA, MAIL_LIST_HELD,
    MAIL_LIST_HELD_DATA, MAIL_LIST_MEMBERS, MAIL_LIST_PENDING, MAIL_LISTS, MAIL_META, MailList,
    PendingRequest,
};
use wispd_store::{Store, StoreError, Write, unix_now as now};

use crate::address;
use crate::delivery::{Also, Deliverer, Delivery, Outbound, Outcome, Recipient};
use crate::directory::{DirError, Directory, Resolution};

/// Members of one list, at most.
pub const MAX_MEMBERS: usize = 100_000;
/// Posts held for the moderator per list; past it a post that would be held is refused.
pub const MAX_HELD: usize = 1_000;
/// Requests by mail waiting for confirmation per list.
pub const MAX_PENDING: usize = 10_000;
/// Archived posts kept per list (the oldest go first).
pub const MAX_ARCHIVE: u64 = 10_000;
/// Bounces after which a member is disabled, unless the list says otherwise.
pub const DEFAULT_BOUNCE_LIMIT: u32 = 3;
/// A member's bounce count starts over when its last bounce is older than this.
const BOUNCE_STALE: i64 = 7 * 86_400;
/// How long a confirmation token is good for.
const PENDING_TTL: i64 = 3 * 86_400;
/// Prefix lengths and such.
const MAX_PREFIX: usize = 64;

/// Who may post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Members only (by envelope sender or From:); others are refused.
    Members,
    /// Anyone.
    Anyone,
    /// Members post; everyone else's posts are held for the owner.
    Moderated,
    /// Only the owner, and only when the message proves it (authenticated submission, or an
    /// aligned DKIM/SPF pass for the owner's domain).
    Announce,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "members" => Policy::Members,
            "anyone" => Policy::Anyone,
            "moderated" => Policy::Moderated,
            "announce" => Policy::Announce,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::Members => "members",
            Policy::Anyone => "anyone",
            Policy::Moderated => "moderated",
            Policy::Announce => "announce",
        }
    }
}

/// What an address of a list is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Post,
    Subscribe,
    Unsubscribe,
    Confirm(String),
    /// A bounce, with the member the VERP address names and its tag (checked against the
    /// list's secret: a forged bounce must not disable anyone).
    Bounce(Option<(String, String)>),
}

/// A recipient address that belongs to a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTarget {
    pub list_id: u64,
    /// `name@domain`.
    pub list: String,
    pub role: Role,
}

/// The addresses a list named `name` occupies in its domain (none may be an account's or a
/// forwarder's, or another list's).
pub fn role_addresses(name: &str, domain: &str) -> [String; 5] {
    [
        format!("{name}@{domain}"),
        format!("{name}-subscribe@{domain}"),
        format!("{name}-unsubscribe@{domain}"),
        format!("{name}-confirm@{domain}"),
        format!("{name}+bounces@{domain}"),
    ]
}

/// Which list address `local@domain` is, given the lists by address.
pub fn target(
    lists: &std::collections::HashMap<String, u64>,
    local: &str,
    domain: &str,
) -> Option<ListTarget> {
    let hit = |name: &str, role: Role| {
        let list = format!("{name}@{domain}");
        lists.get(&list).map(|&list_id| ListTarget {
            list_id,
            list,
            role,
        })
    };
    if let Some(t) = hit(local, Role::Post) {
        return Some(t);
    }
    if let Some((base, tag)) = local.split_once('+') {
        if tag == "bounces" {
            return hit(base, Role::Bounce(None));
        }
        if let Some(rest) = tag.strip_prefix("bounces-") {
            let member = rest
                .split_once('-')
                .filter(|(tag, _)| {
                    tag.len() == VERP_TAG && tag.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .and_then(|(tag, m)| {
                    let (u, h) = m.rsplit_once('=')?;
                    let m = format!("{u}@{h}");
                    address::address(&m).map(|_| (m, tag.to_string()))
                });
            return hit(base, Role::Bounce(member));
        }
        if let Some(name) = base.strip_suffix("-confirm")
            && !tag.is_empty()
            && tag.len() <= 64
            && tag.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return hit(name, Role::Confirm(tag.to_string()));
        }
        return None;
    }
    if let Some(name) = local.strip_suffix("-unsubscribe") {
        return hit(name, Role::Unsubscribe);
    }
    if let Some(name) = local.strip_suffix("-subscribe") {
        return hit(name, Role::Subscribe);
    }
    None
}

/// Hex digits of the tag in a VERP address.
const VERP_TAG: usize = 8;

/// The tag that makes a VERP address the list's own: an HMAC of the member under the list's
/// secret, so that nobody can count bounces against a member by writing to its address.
fn verp_tag(list: &MailList, member: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, list.secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("verp:{member}").as_bytes());
    tag.as_ref()[..VERP_TAG / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The return path of the copy for `member`: `name+bounces-TAG-user=host@domain`.
pub fn verp(list: &MailList, member: &str) -> String {
    match member.rsplit_once('@') {
        Some((u, h)) => format!(
            "{}+bounces-{}-{u}={h}@{}",
            list.name,
            verp_tag(list, member),
            list.domain
        ),
        None => format!("{}+bounces@{}", list.name, list.domain),
    }
}

/// The list address behind its bounce address `name+bounces@domain`.
pub fn list_of_bounce_address(sender: &str) -> Option<String> {
    let (local, domain) = sender.rsplit_once('@')?;
    let name = local.strip_suffix("+bounces")?;
    Some(format!("{name}@{domain}"))
}

/// A request to create or change a list (absent fields keep their value on change).
#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    pub name: Option<String>,
    pub owner: Option<String>,
    pub members: Option<Vec<String>>,
    pub policy: Option<String>,
    pub reply_to: Option<String>,
    /// `Some("")` removes the prefix.
    pub subject_prefix: Option<String>,
    pub archive: Option<bool>,
    pub bounce_limit: Option<u32>,
}

fn invalid(s: impl Into<String>) -> DirError {
    DirError::Invalid(s.into())
}

fn member_address(a: &str) -> Result<String, DirError> {
    address::address(a.trim())
        .map(|(l, d)| format!("{l}@{d}"))
        .ok_or_else(|| invalid(format!("Not an email address: {a:?}")))
}

fn check_prefix(p: &str) -> Result<Option<String>, DirError> {
    let p = p.trim();
    if p.chars().count() > MAX_PREFIX || p.chars().any(char::is_control) {
        return Err(invalid(format!(
            "subject_prefix must be at most {MAX_PREFIX} characters, without control characters"
        )));
    }
    Ok((!p.is_empty()).then(|| p.to_string()))
}

fn apply_spec(list: &mut MailList, spec: &ListSpec) -> Result<(), DirError> {
    if let Some(o) = &spec.owner {
        list.owner = member_address(o).map_err(|_| invalid("owner must be an email address"))?;
    }
    if let Some(p) = &spec.policy {
        list.policy = Policy::parse(p)
            .ok_or_else(|| invalid("policy must be members, anyone, moderated or announce"))?
            .name()
            .into();
    }
    if let Some(r) = &spec.reply_to {
        if r != "list" && r != "author" {
            return Err(invalid("reply_to must be list or author"));
        }
        list.reply_to = r.clone();
    }
    if let Some(p) = &spec.subject_prefix {
        list.subject_prefix = check_prefix(p)?;
    }
    if let Some(a) = spec.archive {
        list.archive = a;
    }
    if let Some(b) = spec.bounce_limit {
        if !(1..=1000).contains(&b) {
            return Err(invalid("bounce_limit must be 1 to 1000"));
        }
        list.bounce_limit = b;
    }
    Ok(())
}

fn random_hex(n: usize) -> Result<String, DirError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

fn members_of(w: &Write<'_>, id: u64) -> Result<Vec<ListMember>, StoreError> {
    w.values_in(&MAIL_LIST_MEMBERS, (id, "")..(id + 1, ""))
}

/// Adds `addresses` (already checked) to list `id`; returns those that were not members.
fn add_members(
    w: &Write<'_>,
    id: u64,
    addresses: &[String],
    t: i64,
) -> Result<Vec<String>, DirError> {
    let mut added = Vec::new();
    let mut count = w
        .values_in(&MAIL_LIST_MEMBERS, (id, "")..(id + 1, ""))
        .map(|v: Vec<ListMember>| v.len())?;
    for a in addresses {
        if let Some(mut m) = w.get(&MAIL_LIST_MEMBERS, (id, a.as_str()))? {
            // adding a member disabled by bounces enables it again
            if !m.enabled {
                m.enabled = true;
                m.bounces = 0;
                w.put(&MAIL_LIST_MEMBERS, (id, a.as_str()), &m)?;
                added.push(a.clone());
            }
            continue;
        }
        if count >= MAX_MEMBERS {
            return Err(invalid(format!("A list has at most {MAX_MEMBERS} members")));
        }
        w.put(
            &MAIL_LIST_MEMBERS,
            (id, a.as_str()),
            &ListMember {
                address: a.clone(),
                enabled: true,
                bounces: 0,
                added_at: t,
                last_bounce: None,
            },
        )?;
        count += 1;
        added.push(a.clone());
    }
    Ok(added)
}

impl Directory {
    /// Creates a list with its first members. Its addresses must be free in the domain.
    pub fn create_list(&self, domain: &str, spec: ListSpec) -> Result<MailList, DirError> {
        let domain = address::domain(domain).ok_or_else(|| invalid("Domain is required"))?;
        let name = spec
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("name is required"))?;
        let name = address::local_part(name)
            .filter(|n| !n.contains('+') && n.len() <= 48)
            .ok_or_else(|| {
                invalid("name must be a plain local part (letters, digits, . - _), at most 48 characters, without +")
            })?;
        if spec.owner.is_none() {
            return Err(invalid("owner is required"));
        }
        let members: Vec<String> = spec
            .members
            .iter()
            .flatten()
            .map(|m| member_address(m))
            .collect::<Result<BTreeSet<_>, _>>()?
            .into_iter()
            .collect();
        if members.len() > MAX_MEMBERS {
            return Err(invalid(format!("A list has at most {MAX_MEMBERS} members")));
        }
        self.check_members(&members)?;
        let mut list = MailList {
            id: 0,
            domain: domain.clone(),
            name: name.clone(),
            owner: String::new(),
            policy: Policy::Members.name().into(),
            reply_to: "author".into(),
            subject_prefix: None,
            archive: false,
            bounce_limit: DEFAULT_BOUNCE_LIMIT,
            secret: random_hex(32)?,
            posts: 0,
            created_at: now(),
        };
        apply_spec(&mut list, &spec)?;
        self.write(|w| {
            self.check_free(w, &name, &domain)?;
            let id = w.get(&MAIL_META, "next_list_id")?.unwrap_or(1).max(1);
            w.put(&MAIL_META, "next_list_id", &(id + 1))?;
            list.id = id;
            w.put(&MAIL_LISTS, list.address().as_str(), &list)?;
            add_members(w, id, &members, list.created_at)?;
            Ok(list)
        })
    }

    /// Refuses members that are list addresses here (a list on this server is not followed
    /// into: its members would get the post through the list's own checks only by mail).
    fn check_members<'a>(
        &self,
        members: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), DirError> {
        for m in members {
            if self.is_list_address(m)? {
                return Err(invalid(format!(
                    "{m} is a mailing list here; a list can't be a member of a list on the same server"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a list name whose addresses an account, forwarder or list already has.
    fn check_free(&self, w: &Write<'_>, name: &str, domain: &str) -> Result<(), DirError> {
        let routes = self.routes()?;
        for a in role_addresses(name, domain) {
            let (local, _) = a.rsplit_once('@').unwrap_or((&a, ""));
            let taken = w
                .get(&wispd_store::schema::MAIL_ADDRESSES, a.as_str())?
                .is_some()
                || routes.forwards.contains_key(&a)
                || target(&routes.lists, local, domain).is_some()
                || w.get(&MAIL_LISTS, a.as_str())?.is_some();
            if taken {
                return Err(DirError::Conflict(format!(
                    "{a} is already an account, forwarder or list address"
                )));
            }
        }
        Ok(())
    }

    /// Whether `email` (lowercase) is an address some list occupies.
    pub(crate) fn is_list_address(&self, email: &str) -> Result<bool, DirError> {
        let routes = self.routes()?;
        Ok(email
            .rsplit_once('@')
            .is_some_and(|(l, d)| target(&routes.lists, l, d).is_some()))
    }

    /// The list role of a recipient address, if it is one.
    pub fn list_target(&self, rcpt: &str) -> Result<Option<ListTarget>, DirError> {
        let Some((l, d)) = rcpt.rsplit_once('@') else {
            return Ok(None);
        };
        let routes = self.routes()?;
        if routes.lists.is_empty() {
            return Ok(None);
        }
        Ok(target(
            &routes.lists,
            &l.to_ascii_lowercase(),
            &d.to_ascii_lowercase(),
        ))
    }

    /// The domain's lists (`None`: every domain the caller may see, given by `domains`).
    pub fn lists(&self, domain: &str) -> Result<Vec<(MailList, usize)>, DirError> {
        let domain = address::domain(domain).ok_or_else(|| invalid("Domain is required"))?;
        Ok(self.store.read(|r| {
            let mut out = Vec::new();
            for l in r.all(&MAIL_LISTS)? {
                if l.domain == domain {
                    let n = r
                        .values_in(&MAIL_LIST_MEMBERS, (l.id, "")..(l.id + 1, ""))
                        .map(|v: Vec<ListMember>| v.len())?;
                    out.push((l, n));
                }
            }
            Ok::<_, StoreError>(out)
        })?)
    }

    fn find_list(&self, domain: &str, name: &str) -> Result<MailList, DirError> {
        let missing = || DirError::NotFound(format!("No list {name}@{domain}"));
        let domain = address::domain(domain).ok_or_else(missing)?;
        let name = address::local_part(name).ok_or_else(missing)?;
        self.store
            .read(|r| r.get(&MAIL_LISTS, format!("{name}@{domain}").as_str()))?
            .ok_or_else(missing)
    }

    pub fn list(&self, domain: &str, name: &str) -> Result<(MailList, Vec<ListMember>), DirError> {
        let l = self.find_list(domain, name)?;
        let members = self
            .store
            .read(|r| r.values_in(&MAIL_LIST_MEMBERS, (l.id, "")..(l.id + 1, "")))?;
        Ok((l, members))
    }

    /// Changes a list's settings; `members`, when given, replaces the membership.
    pub fn update_list(
        &self,
        domain: &str,
        name: &str,
        spec: ListSpec,
    ) -> Result<MailList, DirError> {
        let mut l = self.find_list(domain, name)?;
        if spec
            .name
            .as_deref()
            .is_some_and(|n| !n.eq_ignore_ascii_case(&l.name))
        {
            return Err(invalid("A list can't be renamed; create a new one"));
        }
        apply_spec(&mut l, &spec)?;
        let members = spec
            .members
            .as_ref()
            .map(|m| {
                m.iter()
                    .map(|a| member_address(a))
                    .collect::<Result<BTreeSet<_>, _>>()
            })
            .transpose()?;
        if members.as_ref().is_some_and(|m| m.len() > MAX_MEMBERS) {
            return Err(invalid(format!("A list has at most {MAX_MEMBERS} members")));
        }
        if let Some(m) = &members {
            self.check_members(m)?;
        }
        let key = l.address();
        self.write(|w| {
            // the list as it is now: a post may have counted itself since it was read
            let Some(mut l) = w.get(&MAIL_LISTS, key.as_str())? else {
                return Err(DirError::NotFound(format!("No list {key}")));
            };
            apply_spec(&mut l, &spec)?;
            w.put(&MAIL_LISTS, key.as_str(), &l)?;
            if let Some(members) = &members {
                for m in members_of(w, l.id)? {
                    if !members.contains(&m.address) {
                        w.remove(&MAIL_LIST_MEMBERS, (l.id, m.address.as_str()))?;
                    }
                }
                let all: Vec<String> = members.iter().cloned().collect();
                add_members(w, l.id, &all, now())?;
            }
            Ok(l)
        })
    }

    /// Deletes a list with its members, held posts, pending requests and archive.
    pub fn delete_list(&self, domain: &str, name: &str) -> Result<MailList, DirError> {
        let l = self.find_list(domain, name)?;
        self.write(|w| {
            w.remove(&MAIL_LISTS, l.address().as_str())?;
            for m in members_of(w, l.id)? {
                w.remove(&MAIL_LIST_MEMBERS, (l.id, m.address.as_str()))?;
            }
            for h in w.all(&MAIL_LIST_HELD)? {
                if h.list_id == l.id {
                    w.remove(&MAIL_LIST_HELD, h.id)?;
                    w.remove_raw(&MAIL_LIST_HELD_DATA, h.id)?;
                }
            }
            let pending: Vec<PendingRequest> = w.all(&MAIL_LIST_PENDING)?;
            for p in pending {
                if p.list_id == l.id {
                    w.remove(&MAIL_LIST_PENDING, p.token.as_str())?;
                }
            }
            let archived: Vec<ArchivedPost> =
                w.values_in(&MAIL_LIST_ARCHIVE, (l.id, 0)..(l.id + 1, 0))?;
            for a in archived {
                w.remove(&MAIL_LIST_ARCHIVE, (l.id, a.number))?;
                w.remove_raw(&MAIL_LIST_ARCHIVE_DATA, (l.id, a.number))?;
            }
            Ok(l)
        })
    }

    /// Adds members (idempotent); returns those added.
    pub fn add_list_members(
        &self,
        domain: &str,
        name: &str,
        addresses: &[String],
    ) -> Result<Vec<String>, DirError> {
        let l = self.find_list(domain, name)?;
        let addresses: Vec<String> = addresses
            .iter()
            .map(|a| member_address(a))
            .collect::<Result<BTreeSet<_>, _>>()?
            .into_iter()
            .collect();
        self.check_members(&addresses)?;
        self.store
            .write(|w| add_members(w, l.id, &addresses, now()))
    }

    /// Removes members (idempotent); returns those removed.
    pub fn remove_list_members(
        &self,
        domain: &str,
        name: &str,
        addresses: &[String],
    ) -> Result<Vec<String>, DirError> {
        let l = self.find_list(domain, name)?;
        let addresses: BTreeSet<String> = addresses
            .iter()
            .map(|a| member_address(a))
            .collect::<Result<_, _>>()?;
        self.store.write(|w| {
            let mut removed = Vec::new();
            for a in &addresses {
                if w.get(&MAIL_LIST_MEMBERS, (l.id, a.as_str()))?.is_some() {
                    w.remove(&MAIL_LIST_MEMBERS, (l.id, a.as_str()))?;
                    removed.push(a.clone());
                }
            }
            Ok::<_, DirError>(removed)
        })
    }

    pub fn held_posts(&self, domain: &str, name: &str) -> Result<Vec<HeldPost>, DirError> {
        let l = self.find_list(domain, name)?;
        let all: Vec<HeldPost> = self.store.read(|r| r.all(&MAIL_LIST_HELD))?;
        Ok(all.into_iter().filter(|h| h.list_id == l.id).collect())
    }

    /// A held post and its message, taken out of the hold.
    pub fn take_held(
        &self,
        domain: &str,
        name: &str,
        id: u64,
    ) -> Result<(MailList, HeldPost, Vec<u8>), DirError> {
        let l = self.find_list(domain, name)?;
        let missing = || DirError::NotFound(format!("No held post {id} for {}", l.address()));
        self.store.write(|w| {
            let h = w
                .get(&MAIL_LIST_HELD, id)?
                .filter(|h: &HeldPost| h.list_id == l.id)
                .ok_or_else(missing)?;
            let data = w.get_raw(&MAIL_LIST_HELD_DATA, id)?.unwrap_or_default();
            w.remove(&MAIL_LIST_HELD, id)?;
            w.remove_raw(&MAIL_LIST_HELD_DATA, id)?;
            Ok::<_, DirError>((l.clone(), h, data))
        })
    }

    pub fn archive(&self, domain: &str, name: &str) -> Result<Vec<ArchivedPost>, DirError> {
        let l = self.find_list(domain, name)?;
        Ok(self
            .store
            .read(|r| r.values_in(&MAIL_LIST_ARCHIVE, (l.id, 0)..(l.id + 1, 0)))?)
    }

    pub fn archived(&self, domain: &str, name: &str, number: u64) -> Result<Vec<u8>, DirError> {
        let l = self.find_list(domain, name)?;
        self.store
            .read(|r| r.get_raw(&MAIL_LIST_ARCHIVE_DATA, (l.id, number)))?
            .ok_or_else(|| {
                DirError::NotFound(format!("No archived post {number} in {}", l.address()))
            })
    }

    /// The list and member a one-click unsubscribe token names, if it is genuine.
    pub fn unsubscribe_token(&self, token: &str) -> Result<(MailList, String), DirError> {
        let bad = || DirError::NotFound("No such unsubscribe link".into());
        let (payload, mac) = token.split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
        if payload.len() < 9 || payload.len() > 8 + 254 {
            return Err(bad());
        }
        let id = u64::from_be_bytes(payload[..8].try_into().map_err(|_| bad())?);
        let member = String::from_utf8(payload[8..].to_vec()).map_err(|_| bad())?;
        let list = self
            .store
            .read(|r| r.all(&MAIL_LISTS))?
            .into_iter()
            .find(|l: &MailList| l.id == id)
            .ok_or_else(bad)?;
        let want = sign_member(&list, &member);
        let (_, want_mac) = want.split_once('.').ok_or_else(bad)?;
        let same = want_mac.len() == mac.len()
            && want_mac
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(bad());
        }
        Ok((list, member))
    }

    /// Whether `member` is on list `id`.
    pub fn list_member(&self, id: u64, member: &str) -> Result<Option<ListMember>, DirError> {
        Ok(self
            .store
            .read(|r| r.get(&MAIL_LIST_MEMBERS, (id, member)))?)
    }

    /// Removes `member` from list `id` (one-click unsubscribe); whether it was a member.
    pub fn unsubscribe(&self, id: u64, member: &str) -> Result<bool, DirError> {
        Ok(self.store.write(|w| {
            let was = w.get(&MAIL_LIST_MEMBERS, (id, member))?.is_some();
            if was {
                w.remove(&MAIL_LIST_MEMBERS, (id, member))?;
            }
            Ok::<_, StoreError>(was)
        })?)
    }
}

/// The one-click unsubscribe token of `member`: the list id and the address, with an HMAC
/// under the list's secret.
pub fn sign_member(list: &MailList, member: &str) -> String {
    let mut payload = list.id.to_be_bytes().to_vec();
    payload.extend_from_slice(member.as_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, list.secret.as_bytes());
    let tag = ring::hmac::sign(&key, &payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    )
}

/// The header only one member's copy has: `List-Unsubscribe` with the mailto and the
/// member's one-click link (RFC 2369, RFC 8058).
pub fn member_header(list: &MailList, api_url: &str, member: &str) -> String {
    format!(
        "List-Unsubscribe: <mailto:{name}-unsubscribe@{domain}>,\r\n <{api_url}/api/v1/email/unsubscribe/{token}>\r\n",
        name = list.name,
        domain = list.domain,
        token = sign_member(list, member),
    )
}

/// Counts one bounce for each of `members` of list `list` (by address); a member reaching the
/// list's limit is disabled. Returns those disabled now.
pub fn record_bounces(
    w: &Write<'_>,
    list: &str,
    members: &[String],
    t: i64,
) -> Result<Vec<String>, StoreError> {
    let Some(l) = w.get(&MAIL_LISTS, list)? else {
        return Ok(Vec::new());
    };
    let mut disabled = Vec::new();
    for a in members {
        let Some(mut m) = w.get(&MAIL_LIST_MEMBERS, (l.id, a.as_str()))? else {
            continue;
        };
        if m.last_bounce.is_some_and(|b| t - b > BOUNCE_STALE) {
            m.bounces = 0;
        }
        m.bounces = m.bounces.saturating_add(1);
        m.last_bounce = Some(t);
        if m.enabled && m.bounces >= l.bounce_limit {
            m.enabled = false;
            disabled.push(a.clone());
        }
        w.put(&MAIL_LIST_MEMBERS, (l.id, a.as_str()), &m)?;
    }
    Ok(disabled)
}

/// How a message to a list address went, for the SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Accepted: distributed, held, a request taken, a bounce counted.
    Done(String),
    /// Refused (code, enhanced status, text).
    Refused(u16, &'static str, String),
    /// Try again (a store or delivery failure).
    Failed(String),
}

/// What the SMTP session knows about a post.
#[derive(Debug, Clone, Default)]
pub struct Post {
    /// Envelope sender (empty for the null sender).
    pub sender: String,
    /// The account that sent it through authenticated submission.
    pub authenticated: Option<String>,
    /// Domains with a DKIM pass, and whether SPF passed for the envelope sender's domain.
    pub dkim_pass: Vec<String>,
    pub spf_pass: bool,
    /// `Authentication-Results` (and other trace) for local copies.
    pub trace: String,
    /// The spam score or a DMARC quarantine says Junk: the post is held for the moderator.
    pub junk: bool,
}

/// The mailing-list engine: posts, requests by mail, bounces.
pub struct Lists {
    store: Store,
    directory: Directory,
    deliverer: Deliverer,
    hostname: String,
    api_url: String,
    auth: Option<MessageAuthenticator>,
}

impl std::fmt::Debug for Lists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lists")
            .field("api_url", &self.api_url)
            .finish()
    }
}

impl Lists {
    /// `api_url`: where the one-click unsubscribe links point (`https://host:2083`).
    pub fn new(
        store: Store,
        directory: Directory,
        deliverer: Deliverer,
        hostname: String,
        api_url: String,
        nameservers: &[std::net::SocketAddr],
    ) -> Lists {
        let auth = crate::inbound::authenticator(nameservers)
            .map_err(|e| tracing::error!(error = %e, "no resolver for list DMARC lookups"))
            .ok();
        Lists {
            store,
            directory,
            deliverer,
            hostname,
            api_url,
            auth,
        }
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    fn load(&self, list: &str) -> Result<Option<MailList>, StoreError> {
        self.store.read(|r| r.get(&MAIL_LISTS, list))
    }

    /// A message for one of a list's addresses.
    pub async fn receive(&self, target: &ListTarget, post: Post, message: Vec<u8>) -> Received {
        let list = match self.load(&target.list) {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Received::Refused(550, "5.1.1", format!("<{}>: no such list", target.list));
            }
            Err(e) => return Received::Failed(e.to_string()),
        };
        let r = match &target.role {
            Role::Post => self.post(&list, post, message).await,
            Role::Bounce(Some((member, tag))) => {
                if *tag == verp_tag(&list, member) {
                    self.bounce(&list, Some(member), &message).await
                } else {
                    tracing::warn!(list = %list.address(), %member, "bounce at a forged VERP address ignored");
                    Ok(Received::Done("Ok".into()))
                }
            }
            Role::Bounce(None) => self.bounce(&list, None, &message).await,
            Role::Subscribe => self.request(&list, &post, "subscribe").await,
            Role::Unsubscribe => self.request(&list, &post, "unsubscribe").await,
            Role::Confirm(token) => self.confirm(&list, token).await,
        };
        r.unwrap_or_else(|e| Received::Failed(e.to_string()))
    }

    async fn post(
        &self,
        list: &MailList,
        post: Post,
        message: Vec<u8>,
    ) -> Result<Received, DirError> {
        let header_end = crate::inbound::header_end(&message).unwrap_or(message.len());
        let headers = &message[..header_end];
        // a list never takes its own mail twice
        let id = list_id(list);
        if fields(headers)
            .iter()
            .any(|f| field_name(f).eq_ignore_ascii_case("list-id") && contains_ci(f, id.as_bytes()))
        {
            return Ok(Received::Refused(
                554,
                "5.4.6",
                format!(
                    "Mail loop: this message has been through {} already",
                    list.address()
                ),
            ));
        }
        let automatic = fields(headers).iter().any(|f| {
            field_name(f).eq_ignore_ascii_case("auto-submitted")
                && !String::from_utf8_lossy(
                    &f[f.iter().position(|&b| b == b':').map_or(0, |i| i + 1)..],
                )
                .trim()
                .eq_ignore_ascii_case("no")
        });
        if post.sender.is_empty() || automatic {
            tracing::info!(list = %list.address(), sender = %post.sender, "automatic mail (null sender or Auto-Submitted) not distributed");
            return Ok(Received::Done(
                "Ok: automatic mail is not distributed".into(),
            ));
        }
        if list_of_bounce_address(&post.sender).is_some_and(|l| l == list.address())
            || post
                .sender
                .to_ascii_lowercase()
                .strip_suffix(&format!("@{}", list.domain))
                .is_some_and(|l| l.starts_with(&format!("{}+bounces-", list.name)))
        {
            return Ok(Received::Done(
                "Ok: the list's own bounce address does not post".into(),
            ));
        }
        let parsed = mail_parser::MessageParser::default().parse_headers(headers);
        let (author, author_name, subject) = match &parsed {
            Some(m) => {
                let a = m.from().and_then(|f| f.first());
                (
                    // only a plain address: it goes into Reply-To/Cc when From: is rewritten
                    a.and_then(|a| a.address())
                        .and_then(address::address)
                        .map(|(l, d)| format!("{l}@{d}")),
                    a.and_then(|a| a.name()).map(str::to_string),
                    m.subject().unwrap_or_default().to_string(),
                )
            }
            None => (None, None, String::new()),
        };
        let sender = post.sender.to_ascii_lowercase();
        let is_member = |a: &str| self.directory.list_member(list.id, a).map(|m| m.is_some());
        let member = (!sender.is_empty() && is_member(&sender)?)
            || match &author {
                Some(a) => is_member(a)?,
                None => false,
            };
        let policy = Policy::parse(&list.policy).unwrap_or(Policy::Members);
        // spam over junk_score, or a DMARC quarantine: not sent to everyone in the list's name
        if post.junk && policy != Policy::Announce {
            return self
                .hold(
                    list,
                    &post,
                    author.as_deref().unwrap_or(&sender),
                    &subject,
                    message,
                )
                .await;
        }
        match policy {
            Policy::Anyone => {}
            Policy::Members if member => {}
            Policy::Members => {
                return Ok(Received::Refused(
                    550,
                    "5.7.1",
                    format!("<{}> accepts posts from its members only", list.address()),
                ));
            }
            Policy::Moderated if member => {}
            Policy::Moderated => {
                return self
                    .hold(
                        list,
                        &post,
                        author.as_deref().unwrap_or(&sender),
                        &subject,
                        message,
                    )
                    .await;
            }
            Policy::Announce => {
                let owner = &list.owner;
                let owner_domain = owner.rsplit_once('@').map_or("", |(_, d)| d);
                let proven = post.authenticated.as_deref() == Some(owner.as_str())
                    || (author.as_deref() == Some(owner.as_str())
                        && (post.dkim_pass.iter().any(|d| d == owner_domain)
                            || (post.spf_pass && sender == *owner)));
                if !proven {
                    return Ok(Received::Refused(
                        550,
                        "5.7.1",
                        format!("Only the owner of <{}> posts to it", list.address()),
                    ));
                }
            }
        }
        let strict = match author.as_deref().and_then(|a| a.rsplit_once('@')) {
            Some((_, d)) => self.dmarc_strict(d).await,
            None => false,
        };
        let author = author.unwrap_or_else(|| sender.clone());
        self.distribute(
            list,
            &post.trace,
            &author,
            author_name.as_deref(),
            strict,
            &message,
        )
        .await
    }

    /// Whether `domain` publishes DMARC `p=reject` or `p=quarantine` (its own record, else its
    /// parents' with `sp=` first).
    async fn dmarc_strict(&self, domain: &str) -> bool {
        let Some(auth) = &self.auth else {
            return false;
        };
        let mut d = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut own = true;
        // at most 8 lookups (DMARCbis' tree walk bound), the whole walk within 10 s
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        for _ in 0..8 {
            if tokio::time::Instant::now() >= deadline {
                return true;
            }
            let lookup = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                auth.txt_raw_lookup(format!("_dmarc.{d}.")),
            )
            .await;
            // no answer: rewrite (a rewritten From: is always deliverable)
            if matches!(
                lookup,
                Err(_) | Ok(Err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(_))))
            ) {
                return true;
            }
            if let Ok(Ok(raw)) = lookup {
                let text = String::from_utf8_lossy(&raw).to_string();
                if text.contains("v=DMARC1") {
                    let tag = |name: &str| {
                        text.split(';').find_map(|t| {
                            let (k, v) = t.split_once('=')?;
                            (k.trim().eq_ignore_ascii_case(name))
                                .then(|| v.trim().to_ascii_lowercase())
                        })
                    };
                    let p = if own {
                        tag("p")
                    } else {
                        tag("sp").or_else(|| tag("p"))
                    };
                    return matches!(p.as_deref(), Some("reject" | "quarantine"));
                }
            }
            let Some((_, parent)) = d.split_once('.') else {
                return false;
            };
            if !parent.contains('.') {
                return false;
            }
            // a long name goes on from its last 7 labels (DMARCbis 4.10.1)
            let labels: Vec<&str> = parent.split('.').collect();
            d = if labels.len() > 7 {
                labels[labels.len() - 7..].join(".")
            } else {
                parent.to_string()
            };
            own = false;
        }
        false
    }

    async fn hold(
        &self,
        list: &MailList,
        post: &Post,
        author: &str,
        subject: &str,
        message: Vec<u8>,
    ) -> Result<Received, DirError> {
        let (list_id, t) = (list.id, now());
        let sender = post.sender.clone();
        let (author, subject) = (author.to_string(), subject.to_string());
        let held = self
            .deliverer
            .write(move |w| {
                let all: Vec<HeldPost> = w.all(&MAIL_LIST_HELD)?;
                if all.iter().filter(|h| h.list_id == list_id).count() >= MAX_HELD {
                    return Ok(None);
                }
                let id = w.get(&MAIL_META, "next_held_id")?.unwrap_or(1).max(1);
                w.put(&MAIL_META, "next_held_id", &(id + 1))?;
                let h = HeldPost {
                    id,
                    list_id,
                    sender,
                    author,
                    subject,
                    size: message.len() as u64,
                    received_at: t,
                    dmarc_strict: false,
                };
                w.put(&MAIL_LIST_HELD, id, &h)?;
                w.put_raw(&MAIL_LIST_HELD_DATA, id, &message)?;
                Ok(Some(h))
            })
            .await
            .map_err(|e| DirError::Unavailable(e.to_string()))?;
        let Some(h) = held else {
            return Ok(Received::Refused(
                452,
                "4.3.1",
                format!(
                    "<{}> has too many posts waiting for the moderator",
                    list.address()
                ),
            ));
        };
        tracing::info!(list = %list.address(), held = h.id, author = %h.author, "post held for the moderator");
        let text = format!(
            "A post to {list} from {author} waits for your approval.\n\nSubject: {subject}\n\n\
             Approve or reject it with the API:\n  POST /api/v1/email/mailinglist/{domain}/{name}/held/{id}\n  \
             {{\"action\": \"approve\"}} or {{\"action\": \"reject\"}}\n",
            list = list.address(),
            author = h.author,
            subject = h.subject,
            domain = list.domain,
            name = list.name,
            id = h.id,
        );
        self.notify(
            list,
            &list.owner,
            &format!("Post to {} held for approval", list.address()),
            &text,
            None,
        )
        .await;
        Ok(Received::Done(format!(
            "Ok: held for the moderator of {}",
            list.address()
        )))
    }

    /// A moderator's approval: the held message goes out as a post.
    pub async fn approve(
        &self,
        list: &MailList,
        held: &HeldPost,
        message: &[u8],
    ) -> Result<Received, DirError> {
        let strict = match held.author.rsplit_once('@') {
            Some((_, d)) => self.dmarc_strict(d).await,
            None => false,
        };
        let name = mail_parser::MessageParser::default()
            .parse_headers(message)
            .and_then(|m| {
                m.from()
                    .and_then(|f| f.first())
                    .and_then(|a| a.name().map(str::to_string))
            });
        self.distribute(list, "", &held.author, name.as_deref(), strict, message)
            .await
    }

    /// The post, made the list's (headers, From: rewrite, DKIM), to every enabled member.
    async fn distribute(
        &self,
        list: &MailList,
        trace: &str,
        author: &str,
        author_name: Option<&str>,
        strict: bool,
        message: &[u8],
    ) -> Result<Received, DirError> {
        let mut common = list_message(list, message, author, author_name, strict);
        let signer = {
            let store = self.store.clone();
            let domain = list.domain.clone();
            tokio::task::spawn_blocking(move || crate::dkim::SigningKey::load(&store, &domain))
                .await
                .map_err(|e| DirError::Unavailable(e.to_string()))?
        };
        match signer {
            Ok(Some(key)) => match key.dkim_list(&common) {
                Ok(sig) => {
                    let mut signed = sig.into_bytes();
                    signed.extend_from_slice(&common);
                    common = signed;
                }
                Err(e) => {
                    tracing::error!(list = %list.address(), error = %e, "DKIM signing the post failed; sent unsigned")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::error!(list = %list.address(), error = %e, "loading the list domain's DKIM key failed")
            }
        }
        let members: Vec<ListMember> = self
            .store
            .read(|r| r.values_in(&MAIL_LIST_MEMBERS, (list.id, "")..(list.id + 1, "")))?;
        let mut local: Vec<(u64, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut remote: Vec<(String, Option<String>)> = Vec::new();
        for m in members.iter().filter(|m| m.enabled) {
            match self.directory.resolve(&m.address)? {
                Resolution::Foreign => remote.push((m.address.clone(), None)),
                Resolution::Local {
                    accounts,
                    remote: onward,
                } => {
                    for a in accounts.into_iter().filter(|a| a.enabled) {
                        if seen.insert(a.id) {
                            local.push((a.id, m.address.clone()));
                        }
                    }
                    for r in onward {
                        remote.push((r, Some(m.address.clone())));
                    }
                }
                Resolution::Unknown => {}
            }
        }
        let bounce_address = format!("{}+bounces@{}", list.name, list.domain);
        // Local members share one stored copy (single-instance: a 1,000-member post is stored
        // once, not 1,000 times), so theirs names the mailto: way out only; each remote
        // member's copy gets its own one-click link when the queue sends it.
        let mut shared = Vec::new();
        if !local.is_empty() {
            let head = format!(
                "Return-Path: <{bounce_address}>\r\n{trace}List-Unsubscribe: <mailto:{}-unsubscribe@{}>\r\n",
                list.name, list.domain
            );
            shared.reserve(head.len() + common.len());
            shared.extend_from_slice(head.as_bytes());
            shared.extend_from_slice(&common);
        }
        let recipients: Vec<Recipient> = local.iter().map(|(a, _)| Recipient::inbox(*a)).collect();
        let (list_key, archive, t) = (list.address(), list.archive, now());
        let archived = ArchivedPost {
            number: 0,
            author: author.to_string(),
            subject: subject_of(&common),
            size: common.len() as u64,
            posted_at: t,
        };
        let kept = if archive { common.clone() } else { Vec::new() };
        let outbound = (!remote.is_empty()).then(|| Outbound {
            message: std::mem::take(&mut common),
            sender: bounce_address,
            source: "list",
            recipients: remote.clone(),
        });
        let also = Also::new(move |w| {
            let Some(mut l) = w.get(&MAIL_LISTS, list_key.as_str())? else {
                return Ok(());
            };
            l.posts += 1;
            if archive {
                let n = l.posts;
                w.put(
                    &MAIL_LIST_ARCHIVE,
                    (l.id, n),
                    &ArchivedPost {
                        number: n,
                        ..archived.clone()
                    },
                )?;
                w.put_raw(&MAIL_LIST_ARCHIVE_DATA, (l.id, n), &kept)?;
                if n > MAX_ARCHIVE {
                    w.remove(&MAIL_LIST_ARCHIVE, (l.id, n - MAX_ARCHIVE))?;
                    w.remove_raw(&MAIL_LIST_ARCHIVE_DATA, (l.id, n - MAX_ARCHIVE))?;
                }
            }
            w.put(&MAIL_LISTS, list_key.as_str(), &l)
        });
        let delivered = self
            .deliverer
            .deliver_all(Delivery {
                message: shared,
                variants: Vec::new(),
                recipients,
                internal_date: t,
                outbound,
                bounce: None,
                effects: Vec::new(),
                also: Some(also),
            })
            .await
            .map_err(|e| DirError::Unavailable(format!("delivery failed: {e}")))?;
        // a local member whose mailbox is full or gone counts as a bounce
        let failed: Vec<String> = local
            .iter()
            .zip(&delivered.outcomes)
            .filter(|(_, o)| matches!(o, Outcome::OverQuota | Outcome::Missing | Outcome::Disabled))
            .map(|((_, m), _)| m.clone())
            .collect();
        if !failed.is_empty() {
            let list_key = list.address();
            let _ = self
                .deliverer
                .write(move |w| record_bounces(w, &list_key, &failed, now()))
                .await;
        }
        let stored = delivered.outcomes.iter().filter(|o| o.delivered()).count();
        tracing::info!(list = %list.address(), %author, local = stored, remote = remote.len(), queue_id = ?delivered.queued, dmarc_rewrite = strict, "list post distributed");
        Ok(Received::Done(format!(
            "Ok: distributed to {} members of {}",
            stored + remote.len(),
            list.address()
        )))
    }

    /// A bounce at the list's VERP address: one more for the member it names, when it is a
    /// delivery failure report (an out-of-office reply or a delay notice is not a bounce).
    /// Mail at the plain bounce address names nobody provably and counts for nobody.
    async fn bounce(
        &self,
        list: &MailList,
        member: Option<&str>,
        message: &[u8],
    ) -> Result<Received, DirError> {
        let Some(member) = member.map(str::to_string) else {
            tracing::info!(list = %list.address(), "mail at the plain bounce address dropped (it names no member provably)");
            return Ok(Received::Done("Ok: taken".into()));
        };
        if !is_failure_report(message) {
            tracing::info!(list = %list.address(), %member, "mail at a VERP address that is no failure report dropped");
            return Ok(Received::Done("Ok: taken".into()));
        }
        let list_key = list.address();
        let m = member.clone();
        let disabled = self
            .deliverer
            .write(move |w| record_bounces(w, &list_key, std::slice::from_ref(&m), now()))
            .await
            .map_err(|e| DirError::Unavailable(e.to_string()))?;
        tracing::info!(list = %list.address(), %member, disabled = !disabled.is_empty(), "bounce counted");
        Ok(Received::Done("Ok: bounce counted".into()))
    }

    /// `name-subscribe@` / `name-unsubscribe@`: a token mailed to the sender, to be confirmed.
    async fn request(
        &self,
        list: &MailList,
        post: &Post,
        action: &'static str,
    ) -> Result<Received, DirError> {
        let done = || Ok(Received::Done(format!("Ok: {action} request taken")));
        let Some(address) = address::address(&post.sender).map(|(l, d)| format!("{l}@{d}")) else {
            return done(); // the null sender can't confirm anything
        };
        let member = self.directory.list_member(list.id, &address)?.is_some();
        if (action == "subscribe") == member {
            return done(); // nothing to do, and nothing said (no backscatter)
        }
        let token = random_hex(16)?;
        let (list_id, t) = (list.id, now());
        let (tk, addr) = (token.clone(), address.clone());
        let taken = self
            .deliverer
            .write(move |w| {
                let pending: Vec<PendingRequest> = w.all(&MAIL_LIST_PENDING)?;
                // one confirmation an hour per address: forged requests can't mail-bomb it
                if pending.iter().any(|p| {
                    p.list_id == list_id
                        && p.address == addr
                        && p.expires_at > t
                        && p.expires_at - PENDING_TTL > t - 3600
                }) {
                    return Ok(None);
                }
                let mut count = 0;
                for p in &pending {
                    if p.expires_at < t || (p.list_id == list_id && p.address == addr) {
                        w.remove(&MAIL_LIST_PENDING, p.token.as_str())?;
                    } else if p.list_id == list_id {
                        count += 1;
                    }
                }
                if count >= MAX_PENDING {
                    return Ok(Some(false));
                }
                w.put(
                    &MAIL_LIST_PENDING,
                    tk.as_str(),
                    &PendingRequest {
                        token: tk.clone(),
                        list_id,
                        address: addr,
                        action: action.into(),
                        expires_at: t + PENDING_TTL,
                    },
                )?;
                Ok(Some(true))
            })
            .await
            .map_err(|e| DirError::Unavailable(e.to_string()))?;
        let Some(taken) = taken else {
            return done(); // a confirmation went out within the hour
        };
        if !taken {
            return Ok(Received::Refused(
                452,
                "4.3.1",
                "Too many requests waiting; try again later".into(),
            ));
        }
        let confirm = format!("{}-confirm+{token}@{}", list.name, list.domain);
        let text = format!(
            "Someone asked to {action} {address} {prep} the list {list}.\n\n\
             To confirm, reply to this message (to {confirm}); its text does not matter.\n\
             If it was not you, ignore this message: nothing changes. The request expires in 3 days.\n",
            prep = if action == "subscribe" { "to" } else { "from" },
            list = list.address(),
        );
        self.notify(
            list,
            &address,
            &format!("confirm {token}: {action} {}", list.address()),
            &text,
            Some(&confirm),
        )
        .await;
        tracing::info!(list = %list.address(), %address, action, "request waiting for confirmation");
        done()
    }

    async fn confirm(&self, list: &MailList, token: &str) -> Result<Received, DirError> {
        let (list_id, t, tk) = (list.id, now(), token.to_string());
        let done = self
            .deliverer
            .write(move |w| {
                let Some(p) = w.get(&MAIL_LIST_PENDING, tk.as_str())? else {
                    return Ok(None);
                };
                if p.list_id != list_id {
                    return Ok(None); // another list's token stays good for that list
                }
                w.remove(&MAIL_LIST_PENDING, tk.as_str())?;
                if p.expires_at < t {
                    return Ok(None);
                }
                if p.action == "subscribe" {
                    let members: Vec<ListMember> =
                        w.values_in(&MAIL_LIST_MEMBERS, (list_id, "")..(list_id + 1, ""))?;
                    if members.len() >= MAX_MEMBERS {
                        return Ok(None);
                    }
                    if w.get(&MAIL_LIST_MEMBERS, (list_id, p.address.as_str()))?
                        .is_none()
                    {
                        w.put(
                            &MAIL_LIST_MEMBERS,
                            (list_id, p.address.as_str()),
                            &ListMember {
                                address: p.address.clone(),
                                enabled: true,
                                bounces: 0,
                                added_at: t,
                                last_bounce: None,
                            },
                        )?;
                    }
                } else {
                    w.remove(&MAIL_LIST_MEMBERS, (list_id, p.address.as_str()))?;
                }
                Ok(Some(p))
            })
            .await
            .map_err(|e| DirError::Unavailable(e.to_string()))?;
        let Some(p) = done else {
            return Ok(Received::Refused(
                550,
                "5.7.1",
                "Unknown or expired confirmation token".into(),
            ));
        };
        tracing::info!(list = %list.address(), address = %p.address, action = %p.action, "request confirmed");
        let text = if p.action == "subscribe" {
            format!(
                "Welcome to {list}. Post by writing to {list}; leave by writing to {name}-unsubscribe@{domain}.\n",
                list = list.address(),
                name = list.name,
                domain = list.domain
            )
        } else {
            format!("You have left {}.\n", list.address())
        };
        let subject = if p.action == "subscribe" {
            format!("Welcome to {}", list.address())
        } else {
            format!("You have left {}", list.address())
        };
        self.notify(list, &p.address, &subject, &text, None).await;
        Ok(Received::Done(format!("Ok: {} confirmed", p.action)))
    }

    /// A message from the list to `to` (with the list's bounce address as return path).
    async fn notify(
        &self,
        list: &MailList,
        to: &str,
        subject: &str,
        text: &str,
        reply_to: Option<&str>,
    ) {
        let t = now();
        let message = notice(&self.hostname, list, to, subject, text, reply_to, t);
        let bounce_address = format!("{}+bounces@{}", list.name, list.domain);
        let local = self.directory.resolve(to);
        let (recipients, remote): (Vec<Recipient>, Vec<(String, Option<String>)>) = match local {
            Ok(Resolution::Local { accounts, remote }) => (
                accounts
                    .iter()
                    .filter(|a| a.enabled)
                    .map(|a| Recipient::inbox(a.id))
                    .collect(),
                remote
                    .into_iter()
                    .map(|r| (r, Some(to.to_string())))
                    .collect(),
            ),
            _ => (Vec::new(), vec![(to.to_string(), None)]),
        };
        let mut local_copy = format!("Return-Path: <{bounce_address}>\r\n").into_bytes();
        local_copy.extend_from_slice(&message);
        let outbound = (!remote.is_empty()).then(|| Outbound {
            message,
            // the null return path: a notice that bounces must not start a loop
            sender: String::new(),
            source: "notice",
            recipients: remote,
        });
        let r = self
            .deliverer
            .deliver_all(Delivery {
                message: local_copy,
                recipients,
                internal_date: t,
                outbound,
                ..Delivery::default()
            })
            .await;
        if let Err(e) = r {
            tracing::error!(list = %list.address(), %to, error = %e, "sending a list notice failed");
        }
    }
}

/// `<name.domain>` (RFC 2919).
pub fn list_id(list: &MailList) -> String {
    format!("<{}.{}>", list.name, list.domain)
}

fn notice(
    hostname: &str,
    list: &MailList,
    to: &str,
    subject: &str,
    text: &str,
    reply_to: Option<&str>,
    t: i64,
) -> Vec<u8> {
    use time::format_description::well_known::Rfc2822;
    let date = time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc2822).ok())
        .unwrap_or_default();
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let id: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let mut m = format!(
        "From: {list} <{list}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <list.{t}.{id}@{hostname}>\r\nAuto-Submitted: auto-replied\r\n\
         List-Id: {lid}\r\nPrecedence: list\r\n",
        list = list.address(),
        lid = list_id(list),
    );
    if let Some(r) = reply_to {
        m.push_str(&format!("Reply-To: <{r}>\r\n"));
    }
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    for l in text.lines() {
        m.push_str(l);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// The header fields of a header block (its empty last line left out).
fn fields(headers: &[u8]) -> Vec<&[u8]> {
    crate::inbound::header_fields(headers)
        .filter(|f| !f.iter().all(u8::is_ascii_whitespace))
        .collect()
}

fn field_name(f: &[u8]) -> &str {
    let n = memchr::memchr(b':', f).unwrap_or(0);
    std::str::from_utf8(&f[..n]).unwrap_or("").trim()
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn subject_of(message: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(message)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// A display name as a header phrase: quoted when plain ASCII, else an RFC 2047 word.
fn phrase(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).take(120).collect();
    if name.is_ascii() {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
        )
    }
}

/// Fields the list replaces on every post.
const REPLACED: &[&str] = &[
    "return-path",
    "list-id",
    "list-post",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-owner",
    "list-archive",
    "precedence",
];

/// The post as the list sends it, without the per-member `List-Unsubscribe`.
pub fn list_message(
    list: &MailList,
    message: &[u8],
    author: &str,
    author_name: Option<&str>,
    strict: bool,
) -> Vec<u8> {
    let split = crate::inbound::header_end(message).unwrap_or(message.len());
    let (headers, body) = message.split_at(split);
    let address = list.address();
    let mut out = Vec::with_capacity(message.len() + 600);
    let push = |out: &mut Vec<u8>, s: &str| out.extend_from_slice(s.as_bytes());
    push(&mut out, &format!("List-Id: {}\r\n", list_id(list)));
    if list.policy == "announce" {
        push(&mut out, "List-Post: NO\r\n");
    } else {
        push(&mut out, &format!("List-Post: <mailto:{address}>\r\n"));
    }
    push(
        &mut out,
        &format!("List-Help: <mailto:{}?subject=help>\r\n", list.owner),
    );
    push(
        &mut out,
        &format!(
            "List-Subscribe: <mailto:{}-subscribe@{}>\r\n",
            list.name, list.domain
        ),
    );
    push(
        &mut out,
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nPrecedence: list\r\n",
    );
    let replace_reply_to = strict || list.reply_to == "list";
    let mut had_subject = false;
    let mut had_cc = false;
    for f in fields(headers) {
        let name = field_name(f).to_ascii_lowercase();
        had_cc |= name == "cc";
        if REPLACED.contains(&name.as_str())
            || (strict && name == "from")
            || (replace_reply_to && name == "reply-to")
            || (strict && name == "sender")
        {
            continue;
        }
        if name == "subject" {
            had_subject = true;
            if let Some(p) = &list.subject_prefix
                && !contains_ci(f, p.as_bytes())
            {
                let colon = memchr::memchr(b':', f).unwrap_or(0);
                let value = &f[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                push(&mut out, &format!("Subject: {p} "));
                out.extend_from_slice(value);
                continue;
            }
        }
        out.extend_from_slice(f);
        if !f.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !had_subject && let Some(p) = &list.subject_prefix {
        push(&mut out, &format!("Subject: {p} (no subject)\r\n"));
    }
    if strict {
        let who = author_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(author);
        push(
            &mut out,
            &format!(
                "From: {} <{address}>\r\n",
                phrase(&format!("{who} via {}", list.name))
            ),
        );
    }
    if list.reply_to == "list" {
        push(&mut out, &format!("Reply-To: <{address}>\r\n"));
        if strict && !had_cc {
            push(&mut out, &format!("Cc: <{author}>\r\n"));
        }
    } else if strict {
        push(&mut out, &format!("Reply-To: <{author}>\r\n"));
    }
    // the empty line that ends the header (`fields` leaves it out)
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Whether `message` reports a failed delivery: an RFC 3464 report (`report-type=
/// delivery-status`) saying `Action: failed`, and no automatic reply (RFC 3834).
fn is_failure_report(message: &[u8]) -> bool {
    let head = &message[..message.len().min(256 * 1024)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let header_end = text
        .find("\r\n\r\n")
        .or_else(|| text.find("\n\n"))
        .unwrap_or(text.len());
    let headers = &text[..header_end];
    let auto_reply = headers
        .lines()
        .any(|l| l.starts_with("auto-submitted:") && l.contains("auto-replied"));
    !auto_reply
        && text.contains("delivery-status")
        && text.lines().any(|l| {
            let l = l.trim();
            l.starts_with("action:") && l.contains("failed")
        })
}

/// The failed recipient a DSN names (RFC 3464 `Final-Recipient`).
#[cfg(test)]
fn final_recipient(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&message[..message.len().min(256 * 1024)]);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("final-recipient") {
            return None;
        }
        let v = v.trim();
        let a = v.split_once(';').map_or(v, |(_, a)| a).trim();
        address::address(a).map(|(l, d)| format!("{l}@{d}"))
    })
}

/// For the queue: the per-member header and return path of list entries, by list address.
#[derive(Debug, Clone)]
pub struct ListSender {
    pub list: Arc<MailList>,
    pub api_url: Arc<str>,
}

impl ListSender {
    pub fn load(store: &Store, sender: &str, api_url: Arc<str>) -> Option<ListSender> {
        let list = list_of_bounce_address(sender)?;
        let l = store.read(|r| r.get(&MAIL_LISTS, list.as_str())).ok()??;
        Some(ListSender {
            list: Arc::new(l),
            api_url,
        })
    }

    /// The return path and the header of the copy for `member` (it goes before the message).
    pub fn copy_for(&self, member: &str) -> (String, String) {
        (
            verp(&self.list, member),
            member_header(&self.list, &self.api_url, member),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> MailList {
        MailList {
            id: 7,
            domain: "example.com".into(),
            name: "team".into(),
            owner: "boss@example.com".into(),
            policy: "members".into(),
            reply_to: "author".into(),
            subject_prefix: Some("[team]".into()),
            archive: false,
            bounce_limit: 3,
            secret: "00".repeat(32),
            posts: 0,
            created_at: 0,
        }
    }

    #[test]
    fn list_addresses_are_recognised() {
        let mut lists = std::collections::HashMap::new();
        lists.insert("team@example.com".to_string(), 7u64);
        let t = |l: &str| target(&lists, l, "example.com").map(|t| t.role);
        assert_eq!(t("team"), Some(Role::Post));
        assert_eq!(t("team-subscribe"), Some(Role::Subscribe));
        assert_eq!(t("team-unsubscribe"), Some(Role::Unsubscribe));
        assert_eq!(t("team-confirm+ab12"), Some(Role::Confirm("ab12".into())));
        assert_eq!(t("team-confirm+zz"), None);
        assert_eq!(t("team+bounces"), Some(Role::Bounce(None)));
        assert_eq!(
            t("team+bounces-0123abcd-a.b=x.org"),
            Some(Role::Bounce(Some(("a.b@x.org".into(), "0123abcd".into()))))
        );
        assert_eq!(t("team+bounces-a.b=x.org"), Some(Role::Bounce(None)));
        assert_eq!(t("team+other"), None);
        assert_eq!(t("other"), None);
        let l = list();
        let v = verp(&l, "a-b@x.org");
        assert!(
            v.starts_with("team+bounces-") && v.ends_with("-a-b=x.org@example.com"),
            "{v}"
        );
        let local = v.split('@').next().unwrap();
        let mut lists = std::collections::HashMap::new();
        lists.insert("team@example.com".to_string(), 7u64);
        let Some(ListTarget {
            role: Role::Bounce(Some((m, tag))),
            ..
        }) = target(&lists, local, "example.com")
        else {
            panic!("{v}");
        };
        assert_eq!((m.as_str(), tag), ("a-b@x.org", verp_tag(&l, "a-b@x.org")));
        assert_eq!(
            list_of_bounce_address("team+bounces@example.com").as_deref(),
            Some("team@example.com")
        );
    }

    #[test]
    fn unsubscribe_tokens_are_signed() {
        let l = list();
        let token = sign_member(&l, "a@x.org");
        let (payload, mac) = token.split_once('.').unwrap();
        assert_eq!(&URL_SAFE_NO_PAD.decode(payload).unwrap()[8..], b"a@x.org");
        let mut other = l.clone();
        other.secret = "11".repeat(32);
        assert_ne!(
            sign_member(&other, "a@x.org").split_once('.').unwrap().1,
            mac
        );
    }

    #[test]
    fn the_list_message_has_the_list_headers_and_rewrites_from_when_strict() {
        let l = list();
        let m = b"From: Ann <ann@strict.org>\r\nSubject: hello\r\nList-Id: <other.list>\r\nReply-To: x@y\r\n\r\nbody\r\n";
        let out =
            String::from_utf8(list_message(&l, m, "ann@strict.org", Some("Ann"), true)).unwrap();
        assert!(out.starts_with("List-Id: <team.example.com>\r\n"), "{out}");
        assert!(!out.contains("<other.list>"));
        assert!(out.contains("Subject: [team] hello\r\n"));
        assert!(out.contains("From: \"Ann via team\" <team@example.com>\r\n"));
        assert!(out.contains("Reply-To: <ann@strict.org>\r\n"));
        assert!(!out.contains("x@y"));
        assert!(out.ends_with("\r\n\r\nbody\r\n"), "{out:?}");
        assert_eq!(out.matches("\r\n\r\n").count(), 1);
        let plain = String::from_utf8(list_message(
            &l,
            b"From: ann@a.org\r\nSubject: [team] re\r\n\r\nb",
            "ann@a.org",
            None,
            false,
        ))
        .unwrap();
        assert!(
            plain.contains("From: ann@a.org\r\n") && plain.contains("Subject: [team] re\r\n"),
            "{plain}"
        );
    }

    #[test]
    fn only_failure_reports_are_bounces() {
        let dsn = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; x@y.org\r\nAction: failed\r\n";
        assert!(is_failure_report(dsn));
        let delayed = String::from_utf8_lossy(dsn).replace("failed", "delayed");
        assert!(!is_failure_report(delayed.as_bytes()));
        assert!(!is_failure_report(
            b"Auto-Submitted: auto-replied\r\nSubject: away\r\n\r\nI am on holiday\r\n"
        ));
    }

    #[test]
    fn dsn_final_recipient_is_read() {
        let m = b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; Bob@X.org\r\nAction: failed\r\n";
        assert_eq!(final_recipient(m).as_deref(), Some("bob@x.org"));
    }
}
