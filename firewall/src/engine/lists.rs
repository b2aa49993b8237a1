//! The black- and whitelist: entries in the store, mirrored in memory, and the kernel interval
//! and hash sets they become. A ban or unban changes only the elements that differ.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use wispd_store::schema::{FW_BLACKLIST, FW_WHITELIST, FwEntry};
use wispd_store::{StoreError, Table};

use super::kernel::forget_after_failed_write;
use super::{
    Firewall, FwError, Kernel, MAX_TTL, display_net, local_addresses, loopback4, now, overlaps,
};
use crate::model::{self, Interval, Settings, intervals, parse_net};
use crate::msg::Batch;
use crate::plan::{self, ListSet};

const MAX_COMMENT: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Black,
    White,
}

impl ListKind {
    pub(super) fn table(self) -> &'static Table<&'static str, FwEntry> {
        match self {
            ListKind::Black => &FW_BLACKLIST,
            ListKind::White => &FW_WHITELIST,
        }
    }

    /// The kernel sets of this list.
    fn sets(self) -> impl Iterator<Item = ListSet> {
        let black = self == ListKind::Black;
        ListSet::ALL.into_iter().filter(move |s| s.black == black)
    }

    pub fn name(self) -> &'static str {
        match self {
            ListKind::Black => "blacklist",
            ListKind::White => "whitelist",
        }
    }
}
/// A request to add a list entry.
#[derive(Debug, Clone)]
pub struct EntryRequest {
    pub ip: String,
    pub comment: String,
    pub ttl: i64,
    pub force: bool,
    /// The API caller's address, protected unless `force`.
    pub caller: Option<IpAddr>,
}
/// Where an address matches.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// `whitelist`, `blacklist`, `blocklist` or `portflood` (the kernel blocks new connections
    /// to that port only).
    pub list: &'static str,
    /// The blocklist's name.
    pub name: Option<String>,
    /// The matching entry (`1.2.3.4`, a CIDR, or a `first-last` range of a merged blocklist).
    pub entry: String,
    pub comment: String,
    pub expires_at: Option<i64>,
}

impl Firewall {
    /// Re-keys list entries stored under a name that is no longer canonical: IPv4-mapped entries
    /// (`::ffff:1.2.3.4/128`) stored before they were normalised would otherwise stay in the IPv6
    /// sets, where they match nothing, and could not be deleted by the address they now show.
    /// Where both spellings exist, the longer-lived entry is kept.
    pub(super) fn canonicalise_entries(&self) -> Result<(), FwError> {
        for kind in [ListKind::Black, ListKind::White] {
            let moved: Vec<(String, FwEntry)> = self
                .entries(kind)?
                .into_iter()
                .filter_map(|e| {
                    let canonical = parse_net(&e.net)?.to_string();
                    (canonical != e.net).then_some((canonical, e))
                })
                .collect();
            if moved.is_empty() {
                continue;
            }
            tracing::info!(
                list = kind.name(),
                count = moved.len(),
                "re-keying list entries under their canonical address"
            );
            self.store.write(|w| {
                for (canonical, old) in &moved {
                    w.remove(kind.table(), old.net.as_str())?;
                    let mut entry = old.clone();
                    entry.net = canonical.clone();
                    let keep = match w.get(kind.table(), canonical.as_str())? {
                        Some(there)
                            if there
                                .expires_at
                                .is_none_or(|x| entry.expires_at.is_some_and(|y| y <= x)) =>
                        {
                            there
                        }
                        _ => entry,
                    };
                    w.put(kind.table(), canonical.as_str(), &keep)?;
                }
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(())
    }

    pub(super) fn entries(&self, kind: ListKind) -> Result<Vec<FwEntry>, FwError> {
        Ok(self.store.read(|r| r.all(kind.table()))?)
    }

    /// The entries of a list from the in-memory mirror (loaded from the store on first use).
    pub(super) fn cached<'a>(
        &self,
        k: &'a mut Kernel,
        kind: ListKind,
    ) -> Result<&'a mut BTreeMap<String, FwEntry>, FwError> {
        let slot = &mut k.entries[kind as usize];
        if slot.is_none() {
            *slot = Some(
                self.entries(kind)?
                    .into_iter()
                    .map(|e| (e.net.clone(), e))
                    .collect(),
            );
        }
        Ok(slot.get_or_insert_with(BTreeMap::new))
    }

    /// What the kernel set `set` must hold for these entries: networks merged into disjoint
    /// intervals, hosts as one-address elements.
    pub(super) fn set_contents(entries: &[FwEntry], set: ListSet, t: i64) -> Vec<Interval> {
        let nets: Vec<(IpNet, Option<i64>)> = entries
            .iter()
            .filter_map(|e| parse_net(&e.net).map(|n| (n, e.expires_at)))
            .filter(|(n, _)| ListSet::of(set.black, n) == set)
            .collect();
        if set.cidr {
            return intervals(nets.iter().map(|(n, e)| (n, *e)), set.v6, t);
        }
        let mut hosts: Vec<Interval> = nets
            .iter()
            .filter(|(_, e)| e.is_none_or(|x| x > t))
            .map(|(n, e)| {
                let (a, _) = model::bounds(n);
                Interval {
                    start: a,
                    end: a,
                    expires: *e,
                }
            })
            .collect();
        hosts.sort_unstable();
        hosts
    }

    pub(super) fn all_contents(
        black: &[FwEntry],
        white: &[FwEntry],
        t: i64,
    ) -> BTreeMap<ListSet, Vec<Interval>> {
        ListSet::ALL
            .into_iter()
            .map(|set| {
                (
                    set,
                    Self::set_contents(if set.black { black } else { white }, set, t),
                )
            })
            .collect()
    }

    /// The caller, if the firewall filters its packets at all: loopback and the server's own
    /// addresses arrive over `lo`, and whitelisted ones are accepted before anything can drop
    /// them, so no change can lock those out.
    pub(super) fn exposed_caller(
        &self,
        k: &mut Kernel,
        caller: Option<IpAddr>,
    ) -> Result<Option<IpAddr>, FwError> {
        let Some(c) = caller.map(|c| c.to_canonical()) else {
            return Ok(None);
        };
        if c.is_loopback() || local_addresses().contains(&c) {
            return Ok(None);
        }
        let t = now();
        let white = self.cached(k, ListKind::White)?;
        let whitelisted = white.values().any(|e| {
            e.expires_at.is_none_or(|x| x > t) && parse_net(&e.net).is_some_and(|n| n.contains(&c))
        });
        Ok((!whitelisted).then_some(c))
    }

    /// Adds (or updates) a list entry; effective in the kernel when this returns.
    pub fn add(&self, kind: ListKind, req: EntryRequest) -> Result<FwEntry, FwError> {
        self.add_from(kind, req, "api")
    }

    /// The live entry stored for exactly `ip` (its host network), if any.
    pub fn entry(&self, kind: ListKind, ip: IpAddr) -> Result<Option<FwEntry>, FwError> {
        let key = IpNet::from(ip.to_canonical()).to_string();
        let t = now();
        Ok(self
            .store
            .read(|r| r.get(kind.table(), key.as_str()))?
            .filter(|e: &FwEntry| e.expires_at.is_none_or(|x| x > t)))
    }

    /// [`Firewall::add`] on behalf of `source` (`api`, `lfd`), as the ban counters name it.
    pub fn add_from(
        &self,
        kind: ListKind,
        req: EntryRequest,
        source: &'static str,
    ) -> Result<FwEntry, FwError> {
        let ip = req.ip.trim();
        if ip.is_empty() {
            return Err(FwError::Invalid("IP address is required".into()));
        }
        let net = parse_net(ip)
            .ok_or_else(|| FwError::Invalid(format!("Invalid IP address or CIDR: {ip:?}")))?;
        if !(0..=MAX_TTL).contains(&req.ttl) {
            return Err(FwError::Invalid(format!(
                "TTL must be between 0 (permanent) and {MAX_TTL} seconds"
            )));
        }
        if req.comment.chars().count() > MAX_COMMENT || req.comment.chars().any(char::is_control) {
            return Err(FwError::Invalid(format!(
                "Comment must be at most {MAX_COMMENT} printable characters"
            )));
        }
        let t = now();
        let ttl = u64::try_from(req.ttl).unwrap_or(0);
        let entry = FwEntry {
            net: net.to_string(),
            comment: req.comment.trim().to_string(),
            ttl,
            created_at: t,
            expires_at: (ttl > 0).then(|| t + req.ttl),
        };
        let caller = req.caller.map(|c| c.to_canonical());
        let mut k = self.kernel();
        match kind {
            ListKind::Black => {
                let white = self.cached(&mut k, ListKind::White)?;
                refuse_unsafe_ban(white, &net, req.force, caller, t)?;
            }
            ListKind::White if model::is_broad(&net) && !req.force => {
                return Err(FwError::Invalid(format!(
                    "Refusing to whitelist {}: it is wider than /{} and would let a large part of \
                     the internet past the firewall; send \"force\": true to whitelist it anyway",
                    display_net(&net),
                    model::min_prefix(&net)
                )));
            }
            ListKind::White => {}
        }
        let state = self.state()?;
        let settings = Settings::parse(&state.settings).map_err(FwError::Settings)?;
        let live = |e: &FwEntry| e.expires_at.is_none_or(|x| x > t);
        let map = self.cached(&mut k, kind)?;
        let replacing = map.get(&entry.net).is_some_and(live);
        // DENY_IP_LIMIT / DENY_TEMP_IP_LIMIT: the oldest entries of the same kind rotate out.
        let mut rotated: Vec<String> = Vec::new();
        let limit = match (kind, ttl) {
            (ListKind::Black, 0) => settings.deny_ip_limit,
            (ListKind::Black, _) => settings.deny_temp_ip_limit,
            (ListKind::White, _) => 0,
        };
        if limit > 0 {
            let mut same: Vec<&FwEntry> = map
                .values()
                .filter(|e| live(e) && e.net != entry.net && (e.ttl == 0) == (ttl == 0))
                .collect();
            if same.len() + 1 > limit {
                same.sort_by_key(|e| (e.created_at, e.net.clone()));
                let excess = (same.len() + 1).saturating_sub(limit);
                rotated = same.iter().take(excess).map(|e| e.net.clone()).collect();
            }
        }
        let fast = !replacing
            && rotated.is_empty()
            && self.add_disjoint(&mut k, kind, &net, entry.expires_at, t)?;
        if !fast {
            let mut entries: Vec<FwEntry> = self
                .cached(&mut k, kind)?
                .values()
                .filter(|e| live(e) && e.net != entry.net && !rotated.contains(&e.net))
                .cloned()
                .collect();
            entries.push(entry.clone());
            self.sync_list(&mut k, kind, &entries, t)?;
        }
        let stored = self.store.write(|w| {
            for gone in &rotated {
                w.remove(kind.table(), gone.as_str())?;
            }
            w.put(kind.table(), entry.net.as_str(), &entry)
        });
        if let Err(e) = stored {
            // the kernel already has the ban: let the next tick rebuild it from the store
            forget_after_failed_write(&mut k, kind);
            return Err(e.into());
        }
        let map = self.cached(&mut k, kind)?;
        for gone in &rotated {
            map.remove(gone);
        }
        map.insert(entry.net.clone(), entry.clone());
        if kind == ListKind::Black {
            self.counters.ban(source);
        }
        Ok(entry)
    }

    /// The common case of a ban: the new network neither overlaps nor touches anything in its
    /// set, so one element is added and nothing is recomputed. False when that doesn't hold.
    fn add_disjoint(
        &self,
        k: &mut Kernel,
        kind: ListKind,
        net: &IpNet,
        expires: Option<i64>,
        t: i64,
    ) -> Result<bool, FwError> {
        if !k.live() {
            return Ok(false);
        }
        let set = ListSet::of(kind == ListKind::Black, net);
        let (start, end) = model::bounds(net);
        let ivs = k.applied.entry(set).or_default();
        // An interval set must stay disjoint and unmerged-adjacent; a hash set only needs the
        // key to be new. Either way `applied` stays sorted by start.
        let idx = if set.cidr {
            let idx = ivs.partition_point(|iv| iv.start <= end.saturating_add(1));
            if idx > 0 && ivs[idx - 1].end.saturating_add(1) >= start.saturating_sub(1) {
                return Ok(false);
            }
            idx
        } else {
            match ivs.binary_search_by_key(&start, |iv| iv.start) {
                Ok(_) => return Ok(false),
                Err(idx) => idx,
            }
        };
        let iv = Interval {
            start,
            end,
            expires,
        };
        let table = self.cfg.table.clone();
        let Some(nl) = k.nl.as_mut() else {
            return Ok(false);
        };
        let mut batch = Batch::new(nl.next_seq());
        plan::list_elements(&mut batch, &table, set, std::slice::from_ref(&iv), true, t);
        nl.commit(batch)?;
        k.applied.entry(set).or_default().insert(idx, iv);
        Ok(true)
    }

    /// Removes a list entry; 404 when it isn't there.
    pub fn remove(&self, kind: ListKind, ip: &str) -> Result<FwEntry, FwError> {
        let net = parse_net(ip)
            .ok_or_else(|| FwError::Invalid(format!("Invalid IP address or CIDR: {ip:?}")))?;
        let key = net.to_string();
        let t = now();
        let mut k = self.kernel();
        let map = self.cached(&mut k, kind)?;
        let Some(found) = map
            .get(&key)
            .filter(|e| e.expires_at.is_none_or(|x| x > t))
            .cloned()
        else {
            return Err(FwError::NotFound(format!(
                "{} is not in the {}",
                display_net(&net),
                kind.name()
            )));
        };
        let rest: Vec<FwEntry> = map
            .values()
            .filter(|e| e.net != key && e.expires_at.is_none_or(|x| x > t))
            .cloned()
            .collect();
        self.sync_list(&mut k, kind, &rest, t)?;
        if let Err(e) = self.store.write(|w| w.remove(kind.table(), key.as_str())) {
            forget_after_failed_write(&mut k, kind);
            return Err(e.into());
        }
        self.cached(&mut k, kind)?.remove(&key);
        Ok(found)
    }

    /// Brings the kernel sets of one list to `entries`: only the changed intervals are sent;
    /// if the kernel disagrees with what we think it holds, the sets are rewritten whole.
    fn sync_list(
        &self,
        k: &mut Kernel,
        kind: ListKind,
        entries: &[FwEntry],
        t: i64,
    ) -> Result<(), FwError> {
        if !k.live() {
            return Ok(());
        }
        let sets: Vec<ListSet> = kind.sets().collect();
        let new: Vec<Vec<Interval>> = sets
            .iter()
            .map(|set| Self::set_contents(entries, *set, t))
            .collect();
        let table = self.cfg.table.clone();
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for (set, new) in sets.iter().zip(&new) {
            let old = k.applied.get(set).map(Vec::as_slice).unwrap_or_default();
            let old_set: HashSet<&Interval> = old.iter().collect();
            let new_set: HashSet<&Interval> = new.iter().collect();
            // Elements that expire within 2 s may be gone by the time the kernel sees the batch.
            // Elements about to expire are left to the kernel (they may be gone by the time it sees
            // the batch), except when the same key comes back: adding an existing element changes
            // nothing, so the old one must go first (a race with expiry lands in the rewrite below).
            let readded: HashSet<u128> = new
                .iter()
                .filter(|iv| !old_set.contains(iv))
                .map(|iv| iv.start)
                .collect();
            removed.push(
                old.iter()
                    .filter(|iv| {
                        !new_set.contains(iv)
                            && (iv.expires.is_none_or(|e| e > t + 2) || readded.contains(&iv.start))
                    })
                    .copied()
                    .collect::<Vec<_>>(),
            );
            added.push(
                new.iter()
                    .filter(|iv| !old_set.contains(iv))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        let Some(nl) = k.nl.as_mut() else {
            return Ok(());
        };
        let mut batch = Batch::new(nl.next_seq());
        for (set, ivs) in sets.iter().zip(&removed) {
            plan::list_elements(&mut batch, &table, *set, ivs, false, t);
        }
        for (set, ivs) in sets.iter().zip(&added) {
            plan::list_elements(&mut batch, &table, *set, ivs, true, t);
        }
        if let Err(e) = nl.commit(batch) {
            // ENOENT/EEXIST: the kernel's sets differ from our picture (an element expired, or
            // someone edited them). Rewrite the list's sets whole, still in one transaction.
            if !matches!(e.errno(), Some(2) | Some(17)) {
                return Err(e.into());
            }
            tracing::debug!(error = %e, "incremental list update refused; rewriting the sets");
            let mut batch = Batch::new(nl.next_seq());
            for set in &sets {
                plan::flush_set(&mut batch, &table, *set);
            }
            for (set, ivs) in sets.iter().zip(&new) {
                plan::list_elements(&mut batch, &table, *set, ivs, true, t);
            }
            nl.commit(batch)?;
        }
        for (set, ivs) in sets.into_iter().zip(new) {
            k.applied.insert(set, ivs);
        }
        Ok(())
    }

    /// Live entries of a list, oldest first.
    pub fn list(&self, kind: ListKind) -> Result<Vec<FwEntry>, FwError> {
        let t = now();
        let mut v: Vec<FwEntry> = self
            .entries(kind)?
            .into_iter()
            .filter(|e| e.expires_at.is_none_or(|x| x > t))
            .collect();
        v.sort_by_key(|e| (e.created_at, e.net.clone()));
        Ok(v)
    }

    /// Every list entry that matches `ip`.
    pub fn check(&self, ip: &str) -> Result<Vec<CheckResult>, FwError> {
        let ip = ip.trim();
        if ip.is_empty() {
            return Err(FwError::Invalid("IP address is required".into()));
        }
        // `::ffff:1.2.3.4` is checked as the IPv4 address it stands for, as lists store it
        let addr: IpAddr = ip
            .parse::<IpAddr>()
            .map_err(|_| FwError::Invalid(format!("Invalid IP address: {ip:?}")))?
            .to_canonical();
        let mut out = Vec::new();
        for kind in [ListKind::White, ListKind::Black] {
            for e in self.list(kind)? {
                if parse_net(&e.net).is_some_and(|n| n.contains(&addr)) {
                    out.push(CheckResult {
                        list: kind.name(),
                        name: None,
                        entry: parse_net(&e.net).map(|n| display_net(&n)).unwrap_or(e.net),
                        comment: e.comment,
                        expires_at: e.expires_at,
                    });
                }
            }
        }
        let enabled: Vec<String> = self
            .blocklists()?
            .into_iter()
            .filter(|d| d.enabled)
            .map(|d| d.name)
            .collect();
        out.extend(self.portflood_matches(addr));
        let ranges = super::unpoison(self.ranges.read());
        for name in enabled {
            if let Some((a, b)) = ranges.get(&name).and_then(|r| r.find(addr)) {
                out.push(CheckResult {
                    list: "blocklist",
                    name: Some(name.clone()),
                    entry: crate::blocklist::range_text(a, b),
                    comment: String::new(),
                    expires_at: None,
                });
            }
        }
        Ok(out)
    }
}

pub(super) fn refuse_unsafe_ban(
    white: &BTreeMap<String, FwEntry>,
    net: &IpNet,
    force: bool,
    caller: Option<IpAddr>,
    t: i64,
) -> Result<(), FwError> {
    let loopback: [IpNet; 2] = [
        loopback4(),
        IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    ];
    if loopback.iter().any(|l| overlaps(l, net)) {
        return Err(FwError::Invalid(format!(
            "Refusing to blacklist {}: it covers loopback",
            display_net(net)
        )));
    }
    for addr in local_addresses() {
        if net.contains(&addr) {
            return Err(FwError::Invalid(format!(
                "Refusing to blacklist {}: it covers this server's own address {addr}",
                display_net(net)
            )));
        }
    }
    for w in white.values() {
        if w.expires_at.is_some_and(|x| x <= t) {
            continue;
        }
        if let Some(wn) = parse_net(&w.net)
            && overlaps(&wn, net)
        {
            return Err(FwError::Invalid(format!(
                "Refusing to blacklist {}: it overlaps whitelisted {}; remove that from the whitelist first",
                display_net(net),
                display_net(&wn)
            )));
        }
    }
    if let Some(c) = caller
        && net.contains(&c)
        && !force
    {
        return Err(FwError::Invalid(format!(
            "Refusing to blacklist {}: it covers your own address {c}; send \"force\": true to ban it anyway",
            display_net(net)
        )));
    }
    if model::is_broad(net) && !force {
        return Err(FwError::Invalid(format!(
            "Refusing to blacklist {}: it is wider than /{} and would drop a large part of the \
             internet; send \"force\": true to ban it anyway",
            display_net(net),
            model::min_prefix(net)
        )));
    }
    Ok(())
}
