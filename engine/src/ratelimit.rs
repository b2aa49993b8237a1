//! Rate limits (`/email/ratelimit`): groups that cap what an account sends through submission
//! (messages and recipients per hour, messages per day), with accounts and whole domains
//! assigned to them and a `default` group for everyone else; and caps on the MX per client
//! network (connections and messages per minute).
//!
//! Windows are fixed: an account's hour starts with the first message it sends after the last
//! hour ran out, and it resets an hour later (the day likewise). What the current windows have
//! counted lives in memory, is checked and charged there under one lock (so parallel sessions
//! of one account cannot all slip past a limit), and is written in the commit of the delivery
//! that counted, so it survives a crash exactly as far as the mail does.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use wispd_store::schema::{
    InboundRate, MAIL_RATE_GROUPS, MAIL_RATE_INBOUND, MAIL_RATE_MEMBERS, MAIL_RATE_USAGE,
    MailAccount, RateGroup, RateMember, RateUsage,
};
use wispd_store::{Store, StoreError};

use crate::delivery::Also;

/// The group every account belongs to unless assigned to another.
pub const DEFAULT_GROUP: &str = "default";
/// Networks each inbound meter holds at most (then the expired ones go, or all).
const MAX_NETWORKS: usize = 100_000;
/// Groups and members at most.
const MAX_GROUPS: usize = 1000;
const MAX_MEMBERS: usize = 100_000;
/// Highest limit accepted (per hour or day).
pub const MAX_LIMIT: u64 = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RateError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refusal: `451 4.7.0` with this text (it says when the window resets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited(pub String);

/// A charge taken at the end of DATA, given back when the delivery fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    account: u64,
    recipients: u64,
    hour_start: i64,
    day_start: i64,
}

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<String, RateGroup>,
    members: BTreeMap<String, String>,
    usage: HashMap<u64, RateUsage>,
    inbound: InboundRate,
}

/// A group with what one account has used of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub group: RateGroup,
    pub members: Vec<String>,
    /// Messages and recipients counted in the current hour, messages in the current day,
    /// summed over the accounts in the group.
    pub messages_this_hour: u64,
    pub recipients_this_hour: u64,
    pub messages_today: u64,
    /// Accounts of the group at one of its limits now.
    pub limited_accounts: u64,
}

/// Counts per client network in fixed one-minute windows; bounded in memory.
#[derive(Debug, Default)]
struct Meter {
    windows: HashMap<u128, (i64, u64)>,
}

impl Meter {
    /// Counts one event for `net` at `now` and returns the count in its window.
    fn hit(&mut self, net: u128, now: i64) -> u64 {
        if self.windows.len() >= MAX_NETWORKS && !self.windows.contains_key(&net) {
            self.windows.retain(|_, (start, _)| now < *start + 60);
            if self.windows.len() >= MAX_NETWORKS {
                // a flood from this many networks in a minute: start over rather than grow
                self.windows.clear();
            }
        }
        let w = self.windows.entry(net).or_insert((now, 0));
        if now >= w.0.saturating_add(60) || now < w.0 {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1
    }
}

/// The rate limits and their counters.
#[derive(Debug)]
pub struct RateLimits {
    store: Store,
    state: Arc<Mutex<State>>,
    /// Seconds an "hour" lasts (a day is 24 of them): 3600 unless the config shortens it.
    hour: i64,
    connections: Mutex<Meter>,
    messages: Mutex<Meter>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of `ip`'s network: an IPv4 /24, an IPv6 /64.
fn network(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00) | (1 << 127),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

impl RateLimits {
    /// Loads groups, members and counters; `hour_seconds` is the length of the hour window.
    pub fn new(store: Store, hour_seconds: u64) -> Result<RateLimits, StoreError> {
        let state = store.read(|r| {
            Ok::<_, StoreError>(State {
                groups: r
                    .all(&MAIL_RATE_GROUPS)?
                    .into_iter()
                    .map(|g: RateGroup| (g.name.clone(), g))
                    .collect(),
                members: r
                    .all(&MAIL_RATE_MEMBERS)?
                    .into_iter()
                    .map(|m: RateMember| (m.member, m.group))
                    .collect(),
                usage: r
                    .all(&MAIL_RATE_USAGE)?
                    .into_iter()
                    .map(|u: RateUsage| (u.account, u))
                    .collect(),
                inbound: r.get(&MAIL_RATE_INBOUND, "inbound")?.unwrap_or_default(),
            })
        })?;
        Ok(RateLimits {
            store,
            state: Arc::new(Mutex::new(state)),
            hour: i64::try_from(hour_seconds.clamp(1, 86_400)).unwrap_or(3600),
            connections: Mutex::new(Meter::default()),
            messages: Mutex::new(Meter::default()),
        })
    }

    pub fn hour_seconds(&self) -> i64 {
        self.hour
    }

    fn day(&self) -> i64 {
        self.hour * 24
    }

    /// The group `account` is in: its own assignment, its domain's, or `default` (no limits
    /// when the operator has not set any).
    fn group_of<'a>(&self, st: &'a State, email: &str) -> (String, Option<&'a RateGroup>) {
        let email = email.to_ascii_lowercase();
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        let name = st
            .members
            .get(&email)
            .or_else(|| st.members.get(domain))
            .cloned()
            .unwrap_or_else(|| DEFAULT_GROUP.to_string());
        let g = st.groups.get(&name);
        (name, g)
    }

    /// What the account's current windows hold at `now` (expired windows read as empty).
    fn current(&self, u: RateUsage, now: i64) -> RateUsage {
        let mut u = u;
        if now >= u.hour_start.saturating_add(self.hour) || now < u.hour_start {
            u.hour_start = now;
            u.hour_messages = 0;
            u.hour_recipients = 0;
        }
        if now >= u.day_start.saturating_add(self.day()) || now < u.day_start {
            u.day_start = now;
            u.day_messages = 0;
        }
        u
    }

    fn refusal(what: &str, limit: u64, per: &str, group: &str, resets: i64, now: i64) -> Limited {
        Limited(format!(
            "Rate limit reached: {limit} {what} per {per} (group {group}); it resets in {}s",
            resets.saturating_sub(now).max(1)
        ))
    }

    /// Whether the message may have one more recipient (RCPT; `local`: on this server), with
    /// `remote` and `local_so_far` accepted already; the first one that counts also needs
    /// room for one more message.
    pub fn check_recipient(
        &self,
        account: &MailAccount,
        local: bool,
        remote: u64,
        local_so_far: u64,
        now: i64,
    ) -> Result<(), Limited> {
        let st = lock(&self.state);
        let (name, Some(g)) = self.group_of(&st, &account.email()) else {
            return Ok(());
        };
        if local && !g.count_local {
            return Ok(());
        }
        let so_far = remote + if g.count_local { local_so_far } else { 0 };
        let u = self.current(st.usage.get(&account.id).copied().unwrap_or_default(), now);
        // the first counted recipient makes it a counted message
        let message = u64::from(so_far == 0);
        self.over(g, &name, &u, message, so_far + 1, now)
    }

    /// Whether a group's limits leave room for `messages` more messages with `recipients`.
    fn over(
        &self,
        g: &RateGroup,
        name: &str,
        u: &RateUsage,
        messages: u64,
        recipients: u64,
        now: i64,
    ) -> Result<(), Limited> {
        if messages > 0
            && g.messages_per_hour > 0
            && u.hour_messages + messages > g.messages_per_hour
        {
            return Err(Self::refusal(
                "messages",
                g.messages_per_hour,
                "hour",
                name,
                u.hour_start.saturating_add(self.hour),
                now,
            ));
        }
        if messages > 0 && g.messages_per_day > 0 && u.day_messages + messages > g.messages_per_day
        {
            return Err(Self::refusal(
                "messages",
                g.messages_per_day,
                "day",
                name,
                u.day_start.saturating_add(self.day()),
                now,
            ));
        }
        if recipients > 0
            && g.recipients_per_hour > 0
            && u.hour_recipients + recipients > g.recipients_per_hour
        {
            return Err(Self::refusal(
                "recipients",
                g.recipients_per_hour,
                "hour",
                name,
                u.hour_start.saturating_add(self.hour),
                now,
            ));
        }
        Ok(())
    }

    /// Checks and charges one message with `remote` recipients in other domains and `local`
    /// ones here (end of DATA). `Ok(None)`: nothing counted (no limits, or only local
    /// recipients where they don't count). The [`Also`] writes the account's counters in the
    /// delivery's commit.
    pub fn charge(
        &self,
        account: &MailAccount,
        remote: u64,
        local: u64,
        now: i64,
    ) -> Result<Option<(Charge, Also)>, Limited> {
        let mut st = lock(&self.state);
        let (name, Some(g)) = self.group_of(&st, &account.email()) else {
            return Ok(None);
        };
        let counted = remote + if g.count_local { local } else { 0 };
        if counted == 0 {
            return Ok(None);
        }
        let g = g.clone();
        let u = self.current(st.usage.get(&account.id).copied().unwrap_or_default(), now);
        self.over(&g, &name, &u, 1, counted, now)?;
        let mut u = u;
        u.account = account.id;
        u.hour_messages += 1;
        u.hour_recipients += counted;
        u.day_messages += 1;
        st.usage.insert(account.id, u);
        let charge = Charge {
            account: account.id,
            recipients: counted,
            hour_start: u.hour_start,
            day_start: u.day_start,
        };
        // written from memory at commit time: deliveries committed out of the order they were
        // charged in still leave the latest count
        let state = self.state.clone();
        let id = account.id;
        let also = Also::new(move |w| {
            let u = lock(&state).usage.get(&id).copied();
            match u {
                Some(u) => w.put(&MAIL_RATE_USAGE, id, &u),
                None => Ok(()),
            }
        });
        Ok(Some((charge, also)))
    }

    /// Gives a charge back (its delivery was not committed).
    pub fn refund(&self, c: Charge) {
        let mut st = lock(&self.state);
        if let Some(u) = st.usage.get_mut(&c.account) {
            if u.hour_start == c.hour_start {
                u.hour_messages = u.hour_messages.saturating_sub(1);
                u.hour_recipients = u.hour_recipients.saturating_sub(c.recipients);
            }
            if u.day_start == c.day_start {
                u.day_messages = u.day_messages.saturating_sub(1);
            }
        }
    }

    /// A new connection to the MX from `ip`: refused past the per-network rate.
    pub fn inbound_connection(&self, ip: IpAddr, now: i64) -> Result<(), Limited> {
        let limit = lock(&self.state).inbound.connections_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let n = lock(&self.connections).hit(network(ip), now);
        if n > limit {
            return Err(Limited(format!(
                "Too many connections from your network ({limit} per minute), try again later"
            )));
        }
        Ok(())
    }

    /// A new message (MAIL FROM) on the MX from `ip`: refused past the per-network rate.
    pub fn inbound_message(&self, ip: IpAddr, now: i64) -> Result<(), Limited> {
        let limit = lock(&self.state).inbound.messages_per_minute;
        if limit == 0 {
            return Ok(());
        }
        let n = lock(&self.messages).hit(network(ip), now);
        if n > limit {
            return Err(Limited(format!(
                "Too many messages from your network ({limit} per minute), try again later"
            )));
        }
        Ok(())
    }

    pub fn inbound(&self) -> InboundRate {
        lock(&self.state).inbound
    }

    pub fn set_inbound(&self, r: InboundRate) -> Result<InboundRate, RateError> {
        for (k, v) in [
            ("connections_per_minute", r.connections_per_minute),
            ("messages_per_minute", r.messages_per_minute),
        ] {
            if v > MAX_LIMIT {
                return Err(RateError::Invalid(format!("{k}: at most {MAX_LIMIT}")));
            }
        }
        let mut st = lock(&self.state);
        self.store
            .write(|w| w.put(&MAIL_RATE_INBOUND, "inbound", &r))?;
        st.inbound = r;
        Ok(r)
    }

    /// Every group (`default` always, with no limits until set) with its members and usage.
    pub fn groups(&self, now: i64, accounts: &[MailAccount]) -> Vec<GroupView> {
        let st = lock(&self.state);
        let mut names: Vec<String> = st.groups.keys().cloned().collect();
        if !st.groups.contains_key(DEFAULT_GROUP) {
            names.insert(0, DEFAULT_GROUP.to_string());
        }
        let mut views: BTreeMap<String, GroupView> = names
            .into_iter()
            .map(|n| {
                let group = st.groups.get(&n).cloned().unwrap_or_else(|| RateGroup {
                    name: n.clone(),
                    messages_per_hour: 0,
                    recipients_per_hour: 0,
                    messages_per_day: 0,
                    count_local: false,
                    created_at: 0,
                });
                let members = st
                    .members
                    .iter()
                    .filter(|(_, g)| **g == n)
                    .map(|(m, _)| m.clone())
                    .collect();
                (
                    n,
                    GroupView {
                        group,
                        members,
                        messages_this_hour: 0,
                        recipients_this_hour: 0,
                        messages_today: 0,
                        limited_accounts: 0,
                    },
                )
            })
            .collect();
        for a in accounts {
            let (name, _) = self.group_of(&st, &a.email());
            let Some(u) = st.usage.get(&a.id) else {
                continue;
            };
            let u = self.current(*u, now);
            if let Some(v) = views.get_mut(&name) {
                v.messages_this_hour += u.hour_messages;
                v.recipients_this_hour += u.hour_recipients;
                v.messages_today += u.day_messages;
                if self.over(&v.group, &name, &u, 1, 0, now).is_err()
                    || self.over(&v.group, &name, &u, 0, 1, now).is_err()
                {
                    v.limited_accounts += 1;
                }
            }
        }
        let mut out: Vec<GroupView> = views.into_values().collect();
        // default first, then by name
        out.sort_by_key(|v| (v.group.name != DEFAULT_GROUP, v.group.name.clone()));
        out
    }

    /// Creates (`create`) or changes a group.
    pub fn put_group(
        &self,
        mut g: RateGroup,
        create: bool,
        now: i64,
    ) -> Result<RateGroup, RateError> {
        g.name = g.name.trim().to_ascii_lowercase();
        valid_name(&g.name)?;
        for (k, v) in [
            ("messages_per_hour", g.messages_per_hour),
            ("recipients_per_hour", g.recipients_per_hour),
            ("messages_per_day", g.messages_per_day),
        ] {
            if v > MAX_LIMIT {
                return Err(RateError::Invalid(format!(
                    "{k}: at most {MAX_LIMIT} (0 is no limit)"
                )));
            }
        }
        let mut st = lock(&self.state);
        let existing = st.groups.get(&g.name).cloned();
        match (&existing, create) {
            (Some(_), true) => {
                return Err(RateError::Conflict(format!(
                    "Rate-limit group {} already exists",
                    g.name
                )));
            }
            (None, false) if g.name != DEFAULT_GROUP => {
                return Err(RateError::NotFound(format!(
                    "No rate-limit group {}",
                    g.name
                )));
            }
            _ => {}
        }
        if existing.is_none() && st.groups.len() >= MAX_GROUPS {
            return Err(RateError::Invalid(format!("at most {MAX_GROUPS} groups")));
        }
        g.created_at = existing.map_or(now, |e| e.created_at);
        self.store
            .write(|w| w.put(&MAIL_RATE_GROUPS, g.name.as_str(), &g))?;
        st.groups.insert(g.name.clone(), g.clone());
        Ok(g)
    }

    /// Deletes a group; its members fall back to `default`. `default` itself stays (set its
    /// limits to 0 to lift them).
    pub fn delete_group(&self, name: &str) -> Result<(), RateError> {
        let name = name.trim().to_ascii_lowercase();
        if name == DEFAULT_GROUP {
            return Err(RateError::Invalid(
                "The default group can't be deleted; set its limits to 0 to lift them".into(),
            ));
        }
        let mut st = lock(&self.state);
        if !st.groups.contains_key(&name) {
            return Err(RateError::NotFound(format!("No rate-limit group {name}")));
        }
        let members: Vec<String> = st
            .members
            .iter()
            .filter(|(_, g)| **g == name)
            .map(|(m, _)| m.clone())
            .collect();
        self.store.write(|w| {
            w.remove(&MAIL_RATE_GROUPS, name.as_str())?;
            for m in &members {
                w.remove(&MAIL_RATE_MEMBERS, m.as_str())?;
            }
            Ok::<_, StoreError>(())
        })?;
        st.groups.remove(&name);
        for m in members {
            st.members.remove(&m);
        }
        Ok(())
    }

    /// Makes `members` (accounts `user@domain`, whole domains `domain`) the group's members,
    /// moving them from any other group; members it had before and `members` lacks go back to
    /// `default` (an account then follows its domain's group again). `known` says whether an
    /// account or domain exists here.
    pub fn set_members(
        &self,
        name: &str,
        members: &[String],
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, RateError> {
        let name = name.trim().to_ascii_lowercase();
        let mut list: Vec<String> = Vec::with_capacity(members.len());
        for m in members {
            let m = m.trim().to_ascii_lowercase();
            if m.is_empty()
                || m.len() > 320
                || m.chars().any(|c| c.is_control() || c.is_whitespace())
                || m.matches('@').count() > 1
                || m.starts_with('@')
                || m.ends_with('@')
            {
                return Err(RateError::Invalid(format!(
                    "members: {m:?} is neither an account (user@domain) nor a domain"
                )));
            }
            if !known(&m) {
                return Err(RateError::Invalid(format!(
                    "members: no account or domain {m} on this server"
                )));
            }
            if !list.contains(&m) {
                list.push(m);
            }
        }
        let mut st = lock(&self.state);
        if name != DEFAULT_GROUP && !st.groups.contains_key(&name) {
            return Err(RateError::NotFound(format!("No rate-limit group {name}")));
        }
        let before: Vec<String> = st
            .members
            .iter()
            .filter(|(_, g)| **g == name)
            .map(|(m, _)| m.clone())
            .collect();
        let added = list.iter().filter(|m| !st.members.contains_key(*m)).count();
        if st.members.len() + added > MAX_MEMBERS {
            return Err(RateError::Invalid(format!(
                "at most {MAX_MEMBERS} members in all"
            )));
        }
        // members of `default` are kept too: an account put there leaves its domain's group
        self.store.write(|w| {
            for m in &before {
                if !list.contains(m) {
                    w.remove(&MAIL_RATE_MEMBERS, m.as_str())?;
                }
            }
            for m in &list {
                let record = RateMember {
                    member: m.clone(),
                    group: name.clone(),
                };
                w.put(&MAIL_RATE_MEMBERS, m.as_str(), &record)?;
            }
            Ok::<_, StoreError>(())
        })?;
        for m in &before {
            if !list.contains(m) {
                st.members.remove(m);
            }
        }
        for m in &list {
            st.members.insert(m.clone(), name.clone());
        }
        Ok(list)
    }
}

fn valid_name(n: &str) -> Result<(), RateError> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(RateError::Invalid(
            "name: 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    if n == "inbound" {
        return Err(RateError::Invalid(
            "name: \"inbound\" is taken (the MX limits are at /email/ratelimit/inbound)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: u64) -> MailAccount {
        MailAccount {
            id,
            domain: "example.com".into(),
            username: format!("u{id}"),
            password_hash: String::new(),
            quota_mb: 0,
            used_bytes: 0,
            enabled: true,
            created_at: 0,
        }
    }

    fn limits(name: &str) -> RateLimits {
        let d = std::env::temp_dir().join(format!("wispd-rate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        RateLimits::new(Store::open(&d).expect("store"), 3600).expect("limits")
    }

    #[test]
    fn a_group_caps_messages_and_resets_with_its_window() {
        let r = limits("caps");
        let g = RateGroup {
            name: "small".into(),
            messages_per_hour: 3,
            recipients_per_hour: 0,
            messages_per_day: 0,
            count_local: false,
            created_at: 0,
        };
        r.put_group(g, true, 0).unwrap();
        r.set_members("small", &["u1@example.com".into()], &|_| true)
            .unwrap();
        let (a, b) = (account(1), account(2));
        let t = 1_000_000;
        for i in 0..3 {
            assert!(r.charge(&a, 1, 0, t + i).unwrap().is_some());
        }
        let refused = r.charge(&a, 1, 0, t + 10).unwrap_err();
        assert!(refused.0.contains("3 messages per hour"), "{refused:?}");
        assert!(refused.0.contains("resets in 3590s"), "{refused:?}");
        assert!(r.check_recipient(&a, false, 0, 0, t + 10).is_err());
        // a local recipient doesn't count in this group: still fine
        assert!(r.check_recipient(&a, true, 0, 0, t + 10).is_ok());
        // another account (in default, no limits) is not affected
        assert!(r.charge(&b, 1, 0, t + 10).unwrap().is_none());
        // only local recipients: not counted in a group that doesn't count them
        assert!(r.charge(&a, 0, 2, t + 11).unwrap().is_none());
        // the window ends an hour after its first message
        assert!(r.charge(&a, 1, 0, t + 3600).unwrap().is_some());
    }

    #[test]
    fn a_refund_gives_the_charge_back() {
        let r = limits("refund");
        r.put_group(
            RateGroup {
                name: DEFAULT_GROUP.into(),
                messages_per_hour: 1,
                recipients_per_hour: 5,
                messages_per_day: 0,
                count_local: true,
                created_at: 0,
            },
            false,
            0,
        )
        .unwrap();
        let a = account(1);
        let (c, _) = r.charge(&a, 2, 1, 100).unwrap().unwrap();
        assert!(r.charge(&a, 1, 0, 101).is_err());
        r.refund(c);
        assert!(r.charge(&a, 1, 0, 102).unwrap().is_some());
        // recipients per hour: 1 counted, 4 more fit, the 5th does not
        assert!(r.check_recipient(&a, false, 3, 1, 103).is_err());
        assert!(r.check_recipient(&a, false, 3, 0, 103).is_ok());
        assert!(r.check_recipient(&a, true, 2, 1, 103).is_ok());
    }

    #[test]
    fn the_inbound_meter_stays_bounded() {
        let mut m = Meter::default();
        for i in 0..(MAX_NETWORKS as u128 + 10) {
            m.hit(i, 0);
        }
        assert!(m.windows.len() <= MAX_NETWORKS);
        assert_eq!(m.hit(7, 1), 1);
        assert_eq!(m.hit(7, 2), 2);
        assert_eq!(m.hit(7, 61), 1);
    }

    #[test]
    fn networks_group_v4_by_24_and_v6_by_64() {
        let n = |s: &str| network(s.parse().unwrap());
        assert_eq!(n("192.0.2.1"), n("192.0.2.200"));
        assert_ne!(n("192.0.2.1"), n("192.0.3.1"));
        assert_eq!(n("::ffff:192.0.2.1"), n("192.0.2.9"));
        assert_eq!(n("2001:db8::1"), n("2001:db8::ffff:1"));
        assert_ne!(n("2001:db8::1"), n("2001:db8:0:1::1"));
    }
}
