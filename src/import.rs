//! `wispd import csf`: a CSF server's settings and lists onto the running wispd, through its
//! API (so every change is validated, lockout-guarded and applied in the kernel as any other).
//!
//! Read from the `--from` directories (default `/etc/csf` and `/var/lib/csf`): `csf.conf` (every
//! key wispd has goes to `/csf/config`; the others are listed), `csf.allow` and `csf.deny` (with
//! their comments, `#do not delete` included), `csf.tempban` (with what is left of each TTL),
//! `csf.ignore` (into `LF_IGNORE`) and `csf.blocklists`. Idempotent: what is already so is
//! counted, not sent again; `--dry-run` says what would change and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::Api;

/// What an import did (or would do, in a dry run).
#[derive(Debug, Default)]
pub struct Report {
    /// One line per change.
    pub changed: Vec<String>,
    pub unchanged: usize,
    /// (item, why).
    pub skipped: Vec<(String, String)>,
    /// Skipped items past [`SKIPS_LISTED`], counted only.
    pub skipped_more: usize,
}

/// Skipped items listed at most; the rest are counted.
const SKIPS_LISTED: usize = 10_000;

impl Report {
    fn skip(&mut self, item: impl Into<String>, why: impl Into<String>) {
        if self.skipped.len() < SKIPS_LISTED {
            self.skipped.push((item.into(), why.into()));
        } else {
            self.skipped_more += 1;
        }
    }

    pub fn json(&self, dry_run: bool) -> Value {
        json!({
            "dry_run": dry_run,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": self.skipped.iter().map(|(i, w)| json!({"item": i, "reason": w})).collect::<Vec<_>>(),
            "skipped_more": self.skipped_more,
        })
    }

    pub fn print(&self, dry_run: bool) {
        let verb = if dry_run { "would change" } else { "changed" };
        for c in &self.changed {
            println!("{verb}: {c}");
        }
        for (item, why) in &self.skipped {
            println!("skipped: {item}: {why}");
        }
        if self.skipped_more > 0 {
            println!("skipped: {} more, not listed", self.skipped_more);
        }
        if self.changed.is_empty() {
            println!(
                "nothing to do: {} item(s) already so, {} skipped",
                self.unchanged,
                self.skipped.len() + self.skipped_more
            );
        } else {
            println!(
                "{} {verb}, {} already so, {} skipped",
                self.changed.len(),
                self.unchanged,
                self.skipped.len() + self.skipped_more
            );
        }
    }
}

/// The first of `dirs` that has `name`.
fn find(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn read(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `KEY = "value"` lines of csf.conf, in order, with their line numbers.
pub fn parse_conf(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((n + 1, k.trim().to_string(), v.to_string()));
    }
    out
}

/// A value as compared: comma lists as sets, blanks trimmed.
fn normal(v: &str) -> BTreeSet<String> {
    v.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// One entry of csf.allow / csf.deny / csf.ignore: (line, address or CIDR, comment).
type ListLine = (usize, String, String);

/// The plain entries of a CSF list file; advanced filters and `Include` lines are skipped.
pub fn parse_list(file: &str, text: &str, report: &mut Report) -> Vec<ListLine> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (spec, comment) = match line.split_once('#') {
            Some((s, c)) => (s.trim(), c.trim()),
            None => (line, ""),
        };
        let item = format!("{file}:{}: {spec}", n + 1);
        if spec.to_ascii_lowercase().starts_with("include") {
            report.skip(
                item,
                "Include lines are not followed: import the included file with its own --from",
            );
            continue;
        }
        if spec.contains('|') {
            report.skip(
                item,
                "advanced filters (proto|dir|port|address) are not built in wispd",
            );
            continue;
        }
        if spec.contains(char::is_whitespace) {
            report.skip(item, "not an address or CIDR");
            continue;
        }
        let comment: String = comment
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        out.push((n + 1, spec.to_string(), comment));
    }
    out
}

/// Whether `a` (from a CSF file) and `b` (as wispd lists it) are the same entry.
fn same_net(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        s.strip_suffix("/32")
            .or_else(|| s.strip_suffix("/128"))
            .unwrap_or(s)
            .to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

/// A progress bar on a terminal; nothing otherwise (the lines printed at the end say it all).
fn bar(len: usize, what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || len < 2 {
        return None;
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>14} [{bar:30}] {pos}/{len} ({per_sec}, {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    Some(pb)
}

async fn entries(api: &Api, which: &str) -> Result<Vec<(String, String)>> {
    let v = api.get(&format!("/csf/{which}")).await?;
    Ok(v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["ip"].as_str().unwrap_or_default().to_string(),
                        e["comment"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Adds the entries of one list file that wispd doesn't have.
async fn import_list(
    api: &Api,
    which: &str,
    file: &str,
    lines: Vec<ListLine>,
    ttl_of: impl Fn(&str) -> i64,
    dry_run: bool,
    report: &mut Report,
) -> Result<()> {
    let have = entries(api, which).await?;
    let pb = bar(lines.len(), file);
    for (n, ip, comment) in lines {
        if let Some(pb) = &pb {
            pb.inc(1);
        }
        if have.iter().any(|(h, _)| same_net(&ip, h)) {
            report.unchanged += 1;
            continue;
        }
        let what = format!(
            "{which} {ip}{}",
            if comment.is_empty() {
                String::new()
            } else {
                format!(" ({comment})")
            }
        );
        if dry_run {
            report.changed.push(what);
            continue;
        }
        let mut body = json!({"ip": ip, "comment": comment});
        let ttl = ttl_of(&ip);
        if ttl > 0 {
            body["ttl"] = json!(ttl);
        }
        match api.post(&format!("/csf/{which}"), &body).await {
            Ok(_) => report.changed.push(what),
            Err(e) => report.skip(format!("{file}:{n}: {ip}"), format!("{e:#}")),
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(())
}

/// `csf.tempban` lines (`time|ip|port|dir|seconds|message`): (ip, seconds left, message), the
/// expired ones left out.
fn parse_tempban(text: &str, now: i64) -> Vec<(String, i64, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            if f.len() < 5 {
                return None;
            }
            let start: i64 = f[0].trim().parse().ok()?;
            let secs: i64 = f[4].trim().parse().ok()?;
            let left = start.saturating_add(secs).saturating_sub(now);
            (left > 0).then(|| {
                (
                    f[1].trim().to_string(),
                    left,
                    f.get(5).map_or("", |m| m.trim()).to_string(),
                )
            })
        })
        .collect()
}

pub async fn csf(api: &Api, dirs: &[PathBuf], dry_run: bool) -> Result<Report> {
    let mut report = Report::default();
    let now = wispd_store::unix_now();
    // settings, with csf.ignore merged into LF_IGNORE
    let current = api.get("/csf/config").await?;
    let current: BTreeMap<String, String> = current["data"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    match find(dirs, "csf.conf") {
        Some(path) => {
            for (n, k, v) in parse_conf(&read(&path)?) {
                if !current.contains_key(&k) {
                    report.skip(format!("csf.conf:{n}: {k}"), "not a setting wispd has");
                    continue;
                }
                wanted.insert(k, v);
            }
        }
        None => report.skip("csf.conf", "not found in the --from directories"),
    }
    if let Some(path) = find(dirs, "csf.ignore") {
        let ignore = parse_list("csf.ignore", &read(&path)?, &mut report);
        if !ignore.is_empty() {
            let base = wanted
                .get("LF_IGNORE")
                .or_else(|| current.get("LF_IGNORE"))
                .cloned()
                .unwrap_or_default();
            let mut all: Vec<String> = base
                .split([',', ' '])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            for (_, ip, _) in ignore {
                if !all.iter().any(|a| same_net(a, &ip)) {
                    all.push(ip);
                }
            }
            wanted.insert("LF_IGNORE".into(), all.join(","));
        }
    }
    let changes: BTreeMap<String, String> = wanted
        .into_iter()
        .filter(|(k, v)| {
            let same = current.get(k).is_some_and(|c| normal(c) == normal(v));
            if same {
                report.unchanged += 1;
            }
            !same
        })
        .collect();
    if !changes.is_empty() {
        let lines: Vec<String> = changes
            .iter()
            .map(|(k, v)| {
                format!(
                    "csf.conf {k} = \"{v}\" (was \"{}\")",
                    current.get(k).map_or("", |c| c.as_str())
                )
            })
            .collect();
        if dry_run {
            report.changed.extend(lines);
        } else {
            let body = Value::Object(changes.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
            match api.put("/csf/config", &body).await {
                Ok(_) => report.changed.extend(lines),
                // one at a time, so that one refused key doesn't keep the others out
                Err(_) => {
                    for ((k, v), line) in changes.iter().zip(lines) {
                        match api.put("/csf/config", &json!({ k: v })).await {
                            Ok(_) => report.changed.push(line),
                            Err(e) => report.skip(format!("csf.conf {k}"), format!("{e:#}")),
                        }
                    }
                }
            }
        }
    }
    // the lists: allow before deny, so that nothing allowed is locked out in between
    match find(dirs, "csf.allow") {
        Some(path) => {
            let lines = parse_list("csf.allow", &read(&path)?, &mut report);
            import_list(
                api,
                "whitelist",
                "csf.allow",
                lines,
                |_| 0,
                dry_run,
                &mut report,
            )
            .await?;
        }
        None => report.skip("csf.allow", "not found in the --from directories"),
    }
    match find(dirs, "csf.deny") {
        Some(path) => {
            let lines = parse_list("csf.deny", &read(&path)?, &mut report);
            import_list(
                api,
                "blacklist",
                "csf.deny",
                lines,
                |_| 0,
                dry_run,
                &mut report,
            )
            .await?;
        }
        None => report.skip("csf.deny", "not found in the --from directories"),
    }
    if let Some(path) = find(dirs, "csf.tempban") {
        let bans = parse_tempban(&read(&path)?, now);
        let ttls: BTreeMap<String, i64> = bans
            .iter()
            .map(|(ip, left, _)| (ip.clone(), *left))
            .collect();
        let lines: Vec<ListLine> = bans
            .into_iter()
            .enumerate()
            .map(|(i, (ip, _, m))| {
                (
                    i + 1,
                    ip,
                    if m.is_empty() {
                        "csf tempban".into()
                    } else {
                        m
                    },
                )
            })
            .collect();
        import_list(
            api,
            "blacklist",
            "csf.tempban",
            lines,
            |ip| ttls.get(ip).copied().unwrap_or(0),
            dry_run,
            &mut report,
        )
        .await?;
    }
    if let Some(path) = find(dirs, "csf.blocklists") {
        blocklists(api, &read(&path)?, dry_run, &mut report).await?;
    }
    Ok(report)
}

/// `NAME|INTERVAL|MAX|URL` lines (CSF ships them commented out: only the enabled ones count).
async fn blocklists(api: &Api, text: &str, dry_run: bool, report: &mut Report) -> Result<()> {
    let have = api.get("/csf/blocklists").await?;
    let have = have["data"].as_array().cloned().unwrap_or_default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.splitn(4, '|').map(str::trim).collect();
        let item = format!("csf.blocklists:{}: {line}", n + 1);
        let (Some(name), Some(interval), Some(max), Some(url)) =
            (f.first(), f.get(1), f.get(2), f.get(3))
        else {
            report.skip(item, "not NAME|INTERVAL|MAX|URL");
            continue;
        };
        let (Ok(interval), Ok(max)) = (interval.parse::<i64>(), max.parse::<i64>()) else {
            report.skip(item, "INTERVAL and MAX must be numbers");
            continue;
        };
        let name = name.to_ascii_lowercase();
        // CSF's shortest refresh is an hour; wispd's is 300 s
        let interval = interval.max(300);
        let body = json!({"name": name, "url": url, "interval": interval, "max": max});
        let existing = have
            .iter()
            .find(|b| b["name"].as_str() == Some(name.as_str()));
        let same = existing.is_some_and(|b| {
            b["url"].as_str() == Some(*url)
                && b["interval"].as_i64() == Some(interval)
                && b["max"].as_i64() == Some(max)
        });
        if same {
            report.unchanged += 1;
            continue;
        }
        let what = format!("blocklist {name} ({url}, every {interval} s, max {max})");
        if dry_run {
            report.changed.push(what);
            continue;
        }
        let r = if existing.is_some() {
            api.put(&format!("/csf/blocklists/{name}"), &body).await
        } else {
            api.post("/csf/blocklists", &body).await
        };
        match r {
            Ok(_) => report.changed.push(what),
            Err(e) => report.skip(item, format!("{e:#}")),
        }
    }
    Ok(())
}

/// Postfix's `main.cf`: `key = value` with continuation lines (a line starting with blanks).
pub fn parse_main_cf(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &last
                && let Some(v) = out.get_mut(k)
            {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim().to_string();
            out.insert(k.clone(), v.trim().to_string());
            last = Some(k);
        }
    }
    out
}

/// `$name` and `${name}` in a main.cf value, from the other keys (one level, as used in maps).
fn expand(v: &str, conf: &BTreeMap<String, String>) -> String {
    let mut out = v.to_string();
    for (k, val) in conf {
        out = out
            .replace(&format!("${{{k}}}"), val)
            .replace(&format!("${k}"), val);
    }
    out
}

/// The entries of a Postfix lookup table source file (`key value, value…`, continuation
/// lines starting with blanks), with their line numbers.
pub fn parse_map(text: &str) -> Vec<(usize, String, Vec<String>)> {
    let mut out: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let values = |s: &str| -> Vec<String> {
            s.split([',', ' ', '\t'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.2.extend(values(line));
            }
            continue;
        }
        let line = line.trim();
        let (k, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        out.push((n + 1, k.to_ascii_lowercase(), values(rest)));
    }
    out
}

/// Postfix: `virtual_alias_maps` (forwarders and `@domain` catch-alls) through the API; what
/// main.cf says that belongs in wispd's config file (`relayhost`, `message_size_limit`) is
/// listed to be set there.
pub async fn postfix(api: &Api, dirs: &[PathBuf], dry_run: bool) -> Result<Report> {
    let mut report = Report::default();
    let Some(main) = find(dirs, "main.cf") else {
        bail!("no main.cf in the --from directories");
    };
    let conf = parse_main_cf(&read(&main)?);
    for (key, wispd_key) in [
        ("relayhost", "[smtp] relay"),
        ("message_size_limit", "[smtp] max_message_size"),
    ] {
        if let Some(v) = conf.get(key).filter(|v| !v.is_empty()) {
            let v = v
                .trim_start_matches('[')
                .replace("]:", ":")
                .trim_end_matches(']')
                .to_string();
            report.skip(
                format!("main.cf {key} = {}", conf[key]),
                format!("a config file setting: put {wispd_key} = {v:?} in wispd's config"),
            );
        }
    }
    if let Some(d) = conf
        .get("virtual_mailbox_domains")
        .filter(|v| !v.is_empty())
    {
        report.skip(
            format!("main.cf virtual_mailbox_domains = {d}"),
            "wispd receives mail for a domain once it has an account, forwarder or list there",
        );
    }
    let maps = conf
        .get("virtual_alias_maps")
        .map(|v| expand(v, &conf))
        .unwrap_or_default();
    let mut entries = Vec::new();
    for m in maps
        .split([',', ' '])
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let (kind, path) = m.split_once(':').unwrap_or(("", m));
        if !matches!(kind, "hash" | "btree" | "texthash" | "lmdb" | "cdb") {
            report.skip(
                format!("virtual_alias_maps {m}"),
                "only file tables (hash, btree, lmdb, cdb, texthash) are read",
            );
            continue;
        }
        // the source file next to the compiled table, or in a --from directory
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let source = [PathBuf::from(path)]
            .into_iter()
            .chain(dirs.iter().map(|d| d.join(&name)))
            .find(|p| p.is_file());
        let Some(source) = source else {
            report.skip(
                format!("virtual_alias_maps {m}"),
                "its source file is not found",
            );
            continue;
        };
        let file = name.clone();
        for (n, key, values) in parse_map(&read(&source)?) {
            entries.push((format!("{file}:{n}"), key, values));
        }
    }
    let have = api.get("/email/forwarders").await?;
    let have: BTreeSet<(String, String)> = have["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["source"].as_str().unwrap_or_default().to_string(),
                        f["destination"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut forwarders = Vec::new();
    for (at, key, values) in entries {
        if let Some(domain) = key.strip_prefix('@') {
            match values.as_slice() {
                [dest] if dest.contains('@') => {
                    let now = api.get(&format!("/email/catchall/{domain}")).await;
                    let same = now.as_ref().is_ok_and(|c| {
                        c["data"]["enabled"].as_bool() == Some(true)
                            && c["data"]["destination"].as_str() == Some(dest.as_str())
                    });
                    if same {
                        report.unchanged += 1;
                        continue;
                    }
                    let what = format!("catch-all @{domain} -> {dest}");
                    if dry_run {
                        report.changed.push(what);
                        continue;
                    }
                    let body = json!({"enabled": true, "destination": dest});
                    match api.put(&format!("/email/catchall/{domain}"), &body).await {
                        Ok(_) => report.changed.push(what),
                        Err(e) => report.skip(format!("{at}: {key}"), format!("{e:#}")),
                    }
                }
                _ => report.skip(
                    format!("{at}: {key}"),
                    "a catch-all has one destination address in wispd",
                ),
            }
            continue;
        }
        if !key.contains('@') {
            report.skip(
                format!("{at}: {key}"),
                "not an address (a local alias or a regular expression)",
            );
            continue;
        }
        for v in values {
            if !v.contains('@') {
                report.skip(
                    format!("{at}: {key} {v}"),
                    "a destination without a domain (a local user)",
                );
                continue;
            }
            let pair = (key.clone(), v.to_ascii_lowercase());
            if have.contains(&pair) {
                report.unchanged += 1;
            } else {
                forwarders.push((at.clone(), pair));
            }
        }
    }
    // a forwarder to another forwarder needs that one first: refused ones get a second pass
    let pb = bar(forwarders.len(), "forwarders");
    let mut refused = Vec::new();
    for pass in 0..2 {
        let todo = if pass == 0 {
            std::mem::take(&mut forwarders)
        } else {
            std::mem::take(&mut refused)
        };
        for (at, (src, dst)) in todo {
            let what = format!("forwarder {src} -> {dst}");
            if dry_run {
                report.changed.push(what);
                continue;
            }
            match api
                .post(
                    "/email/forwarders",
                    &json!({"source": src, "destination": dst}),
                )
                .await
            {
                Ok(_) => {
                    if let Some(pb) = &pb {
                        pb.inc(1);
                    }
                    report.changed.push(what);
                }
                Err(e) if pass == 0 => {
                    let _ = e;
                    refused.push((at, (src, dst)));
                }
                Err(e) => report.skip(format!("{at}: {src} {dst}"), format!("{e:#}")),
            }
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok(report)
}

/// A quota rule's storage (`*:storage=1G`, `storage=512M`) in MiB; 0 for none.
fn quota_mib(extra: &str) -> i64 {
    for field in extra.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        if !k.ends_with("quota_rule") {
            continue;
        }
        let Some(size) = v.split("storage=").nth(1) else {
            continue;
        };
        let size = size.split(':').next().unwrap_or("").trim();
        let (num, unit) = size.split_at(
            size.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(size.len()),
        );
        let Ok(n) = num.parse::<i64>() else {
            continue;
        };
        let bytes = match unit.to_ascii_uppercase().trim_end_matches('B') {
            "" => n,
            "K" => n.saturating_mul(1 << 10),
            "M" => n.saturating_mul(1 << 20),
            "G" => n.saturating_mul(1 << 30),
            "T" => n.saturating_mul(1 << 40),
            _ => continue,
        };
        return (bytes + (1 << 20) - 1) >> 20;
    }
    0
}

/// A crypt(3) string without Dovecot's `{SCHEME}` prefix, named by its `$id$`.
fn with_scheme(hash: &str) -> Option<String> {
    if hash.starts_with('{') {
        return Some(hash.to_string());
    }
    let scheme = match hash.get(..3)? {
        "$6$" => "SHA512-CRYPT",
        "$5$" => "SHA256-CRYPT",
        "$1$" => "MD5-CRYPT",
        "$2y" | "$2b" | "$2a" => "BLF-CRYPT",
        _ if hash.starts_with("$argon2id$") => "ARGON2ID",
        _ if hash.starts_with("$argon2i$") => "ARGON2I",
        _ => return None,
    };
    Some(format!("{{{scheme}}}{hash}"))
}

/// One user of a passwd-file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdUser {
    pub user: String,
    pub hash: String,
    pub quota_mib: i64,
    /// The home directory field (or `userdb_home=`), if any.
    pub home: Option<String>,
    /// `userdb_mail=` (a mail location, `maildir:~/Maildir`), if any.
    pub mail: Option<String>,
}

/// One passwd-file line (`user@domain:{SCHEME}hash:uid:gid:gecos:home:shell:extra fields`).
pub fn parse_passwd_line(line: &str) -> Result<Option<PasswdUser>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let f: Vec<&str> = line.split(':').collect();
    let user = f[0].trim().to_ascii_lowercase();
    if !user.contains('@') {
        return Err("no domain in the user name".into());
    }
    let hash = f.get(1).copied().unwrap_or("").trim();
    if hash.is_empty() {
        return Err("no password hash".into());
    }
    let hash = with_scheme(hash).ok_or("no {SCHEME} prefix and not a crypt(3) string")?;
    let extra = if f.len() > 7 {
        f[7..].join(":")
    } else {
        String::new()
    };
    let field = |name: &str| {
        extra
            .split_whitespace()
            .find_map(|x| x.strip_prefix(name))
            .map(str::to_string)
    };
    let home = field("userdb_home=").or_else(|| {
        f.get(5)
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    });
    Ok(Some(PasswdUser {
        user,
        hash,
        quota_mib: quota_mib(&extra),
        home,
        mail: field("userdb_mail="),
    }))
}

/// The `mail_location` of the Dovecot config in `dirs` (`dovecot.conf` and `conf.d/*.conf`),
/// the last one set.
pub fn mail_location(dirs: &[PathBuf]) -> Option<String> {
    let mut files = Vec::new();
    for d in dirs {
        files.push(d.join("dovecot.conf"));
        if let Ok(rd) = std::fs::read_dir(d.join("conf.d")) {
            let mut conf: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            conf.sort();
            files.extend(conf);
        }
    }
    let mut found = None;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == "mail_location"
                && !v.trim().is_empty()
            {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

/// A user's Maildir from a mail location (`maildir:~/Maildir:INDEX=…`, `%u`, `%n`, `%d`,
/// `%h`, `~`); an error names what can't be read.
pub fn maildir_path(location: &str, u: &PasswdUser) -> Result<PathBuf, String> {
    let (driver, rest) = location.split_once(':').unwrap_or(("maildir", location));
    if driver != "maildir" {
        return Err(format!(
            "mail location {location:?}: only maildir can be imported"
        ));
    }
    let mut parts = rest.split(':');
    let path = parts.next().unwrap_or("");
    if parts.any(|p| p.eq_ignore_ascii_case("LAYOUT=fs")) {
        return Err(format!(
            "mail location {location:?}: LAYOUT=fs (folders as subdirectories) is not Maildir++"
        ));
    }
    let (local, domain) = u.user.rsplit_once('@').unwrap_or((&u.user, ""));
    let home = u.home.clone().unwrap_or_default();
    let mut out = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '~' if out.is_empty() => {
                if home.is_empty() {
                    return Err(format!(
                        "mail location {location:?} uses ~ but the user has no home"
                    ));
                }
                out.push_str(&home);
            }
            '%' => {
                let var = match chars.next() {
                    Some('{') => {
                        let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                        name
                    }
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                let lower = |s: &str| s.to_ascii_lowercase();
                match var.as_str() {
                    "u" | "user" => out.push_str(&u.user),
                    "n" | "username" => out.push_str(local),
                    "d" | "domain" => out.push_str(domain),
                    "Lu" => out.push_str(&lower(&u.user)),
                    "Ln" => out.push_str(&lower(local)),
                    "Ld" => out.push_str(&lower(domain)),
                    "h" | "home" => out.push_str(&home),
                    "%" => out.push('%'),
                    other => {
                        return Err(format!("mail location {location:?}: %{other} is not known"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(format!("mail location {location:?} names no directory"));
    }
    Ok(PathBuf::from(out))
}

/// Dovecot: the users of its `passwd-file` passdbs with the hashes they have (every file
/// named `users`, `passwd` or `*.passwd` in the `--from` directories, or a `--from` file),
/// then each user's Maildir++ (the userdb's `mail=`, else `mail_location` of the
/// `dovecot.conf` in the `--from` directories, else `~/Maildir`) and Sieve scripts.
pub async fn dovecot(api: &Api, from: &[PathBuf], dry_run: bool) -> Result<Report> {
    let mut report = Report::default();
    let mut files = Vec::new();
    let mut conf_dirs = Vec::new();
    for p in from {
        if p.is_file() {
            files.push(p.clone());
            if let Some(d) = p.parent() {
                conf_dirs.push(d.to_path_buf());
            }
            continue;
        }
        conf_dirs.push(p.clone());
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.is_file()
                    && f.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n == "users" || n == "passwd" || n.ends_with(".passwd")
                    })
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    if files.is_empty() {
        bail!("no passwd-file (users, passwd, *.passwd) in the --from paths");
    }
    let location = mail_location(&conf_dirs);
    let mut have = accounts(api).await?;
    let mut users = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        let text = read(&file)?;
        let lines: Vec<&str> = text.lines().collect();
        let pb = bar(lines.len(), "users");
        for (n, line) in lines.into_iter().enumerate() {
            if let Some(pb) = &pb {
                pb.inc(1);
            }
            let at = format!("{name}:{}", n + 1);
            let u = match parse_passwd_line(line) {
                Ok(Some(u)) => u,
                Ok(None) => continue,
                Err(why) => {
                    report.skip(
                        format!("{at}: {}", line.split(':').next().unwrap_or("")),
                        why,
                    );
                    continue;
                }
            };
            if have.contains_key(&u.user) {
                report.unchanged += 1;
                users.push(u);
                continue;
            }
            let scheme = u
                .hash
                .split('}')
                .next()
                .unwrap_or("")
                .trim_start_matches('{')
                .to_string();
            let what = format!(
                "account {} ({scheme}{})",
                u.user,
                if u.quota_mib > 0 {
                    format!(", quota {} MiB", u.quota_mib)
                } else {
                    String::new()
                }
            );
            if dry_run {
                report.changed.push(what);
                users.push(u);
                continue;
            }
            let (username, domain) = u.user.rsplit_once('@').unwrap_or((&u.user, ""));
            let body = json!({"domain": domain, "username": username, "password_hash": u.hash, "quota_mb": u.quota_mib});
            match api.post("/email/accounts/import", &body).await {
                Ok(_) => {
                    report.changed.push(what);
                    users.push(u);
                }
                Err(e) => report.skip(format!("{at}: {}", u.user), format!("{e:#}")),
            }
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
    }
    if !dry_run {
        have = accounts(api).await?;
    }
    for u in &users {
        let path = match u
            .mail
            .as_deref()
            .or(location.as_deref())
            .map_or_else(
                || {
                    u.home
                        .as_ref()
                        .map(|h| PathBuf::from(h).join("Maildir"))
                        .ok_or_else(|| {
                            "no mail location: no userdb mail=, no mail_location in dovecot.conf, no home".to_string()
                        })
                },
                |l| maildir_path(l, u),
            ) {
            Ok(p) => p,
            Err(why) => {
                report.skip(format!("mail of {}", u.user), why);
                continue;
            }
        };
        if !path.is_dir() {
            report.skip(
                format!("mail of {}", u.user),
                format!("no Maildir at {}", path.display()),
            );
        } else {
            let id = have.get(&u.user).copied();
            maildir(api, &u.user, id, &path, dry_run, &mut report).await?;
        }
        if let Some(home) = &u.home {
            sieve(api, &u.user, Path::new(home), dry_run, &mut report).await?;
        }
    }
    Ok(report)
}

/// The server's accounts: address → id.
async fn accounts(api: &Api) -> Result<BTreeMap<String, u64>> {
    let have = api.get("/email/accounts").await?;
    Ok(have["accounts"]
        .as_array()
        .or_else(|| have["data"]["accounts"].as_array())
        .or_else(|| have["data"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| Some((x["email"].as_str()?.to_string(), x["id"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default())
}

/// A batch's message bytes (before base64) past which it is sent.
const BATCH_BYTES: u64 = 4 << 20;
/// Messages in a batch at most (`--batch-messages`; the API takes up to 10,000).
pub static BATCH_MESSAGES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(2_000);
/// Largest message file brought over: what one import request carries (the API's 72 MiB,
/// base64).
const MAX_IMPORT_MESSAGE: u64 = 50 << 20;

/// The RFC 6154 attribute Dovecot's default config gives a folder of this name.
fn special_use(name: &str) -> Option<&'static str> {
    match name {
        "Sent" | "Sent Messages" | "Sent Items" => Some("\\Sent"),
        "Drafts" => Some("\\Drafts"),
        "Trash" | "Deleted Messages" | "Deleted Items" => Some("\\Trash"),
        "Junk" | "Spam" => Some("\\Junk"),
        "Archive" | "Archives" => Some("\\Archive"),
        _ => None,
    }
}

/// Progress over a user's messages: a bar on a terminal, else a line every few seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    total: u64,
    done: u64,
    started: std::time::Instant,
    last_line: std::time::Instant,
}

impl Progress {
    fn new(what: String, total: u64) -> Progress {
        let bar = bar(usize::try_from(total).unwrap_or(usize::MAX), "messages");
        if let Some(b) = &bar {
            b.set_message(what.clone());
        }
        let now = std::time::Instant::now();
        Progress {
            bar,
            what,
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_line.elapsed() >= std::time::Duration::from_secs(5) => {
                self.last_line = std::time::Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{}: {}/{} messages ({:.0}/s)",
            self.what,
            self.done,
            self.total,
            self.done as f64 / secs
        )
    }

    fn finish(self) {
        match self.bar {
            Some(b) => b.finish_and_clear(),
            None if self.total >= 1000 => eprintln!("{}", self.line()),
            None => {}
        }
    }
}

/// One batch's request body, read from the message files (on a blocking thread).
fn batch_body(
    folder: &crate::maildir::Folder,
    subscribed: bool,
    batch: &[crate::maildir::Message],
    last: bool,
    dry_run: bool,
    owner: crate::maildir::Owner,
) -> (Vec<u8>, Vec<(String, String)>) {
    use base64::Engine as _;
    let mut skipped = Vec::new();
    let mut messages = Vec::with_capacity(batch.len());
    for m in batch {
        let data = if dry_run {
            // the server decides by UID alone: a dry run reads no message
            Ok(String::new())
        } else {
            let read = |p: &Path| crate::maildir::read_file(p, MAX_IMPORT_MESSAGE, owner);
            // Dovecot renames a file when its flags change: found again by its base name
            let data = match read(&m.path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match crate::maildir::moved(&m.path) {
                        Some(p) => read(&p),
                        None => Err(e),
                    }
                }
                other => other,
            };
            data.and_then(|d| {
                let d = crate::maildir::crlf(d);
                if d.len() as u64 > MAX_IMPORT_MESSAGE {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("larger than {MAX_IMPORT_MESSAGE} bytes with CRLF line ends"),
                    ));
                }
                Ok(base64::engine::general_purpose::STANDARD.encode(d))
            })
        };
        match data {
            Ok(data) => messages.push(json!({
                "uid": m.uid,
                "flags": m.flags,
                "internal_date": m.internal_date,
                "data": data,
            })),
            Err(e) => skipped.push((m.path.display().to_string(), e.to_string())),
        }
    }
    let body = json!({
        "mailbox": folder.name,
        "uidvalidity": folder.uidvalidity,
        "uidnext": if last { folder.uidnext } else { 0 },
        "subscribed": subscribed,
        "special_use": special_use(&folder.name),
        "messages": messages,
        "dry_run": dry_run,
    });
    (serde_json::to_vec(&body).unwrap_or_default(), skipped)
}

/// What a folder's import did, summed over its batches.
#[derive(Default)]
struct FolderTally {
    imported: u64,
    already: u64,
    renumbered: u64,
    created: bool,
    uids_kept: bool,
}

impl FolderTally {
    fn add(&mut self, v: &Value) {
        let d = &v["data"];
        self.imported += d["imported"].as_u64().unwrap_or(0);
        self.already += d["already"].as_u64().unwrap_or(0);
        self.renumbered += d["renumbered"].as_u64().unwrap_or(0);
        self.created |= d["created"].as_bool().unwrap_or(false);
        self.uids_kept = d["uids_kept"].as_bool().unwrap_or(false);
    }
}

/// One user's Maildir++: every folder, its UIDs, flags, keywords and dates, and the
/// subscriptions. Batches are committed one at a time, each mailbox in UID order, while the
/// next is read: an interrupted import resumes where the last committed batch ended.
async fn maildir(
    api: &Api,
    user: &str,
    id: Option<u64>,
    root: &Path,
    dry_run: bool,
    report: &mut Report,
) -> Result<()> {
    let owner = crate::maildir::Owner::of(root);
    let (folders, owner) = match (crate::maildir::folders(root), owner) {
        (Ok(f), Ok(o)) => (f, o),
        (Err(e), _) | (_, Err(e)) => {
            report.skip(
                format!("mail of {user}"),
                format!("{}: {e}", root.display()),
            );
            return Ok(());
        }
    };
    let subscribed = crate::maildir::subscriptions(root, owner);
    for s in &subscribed {
        if !folders.iter().any(|(n, _)| n == s) {
            report.skip(
                format!("subscription {user} {s}"),
                "subscribed in Dovecot, but there is no such folder",
            );
        }
    }
    if id.is_none() && !dry_run {
        report.skip(
            format!("mail of {user}"),
            "the account is not on the server (see the account's line above)",
        );
        return Ok(());
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    // one folder at a time: only its file list is held
    for (name, path) in folders {
        let dir = path.display().to_string();
        // the mailbox it would be: `inbox/x` is `INBOX/x`, `Foo/` is `Foo`
        let key = wispd_engine::mailbox::canonical(&name);
        if let Err(why) = wispd_engine::mailbox::check_name(&key) {
            report.skip(format!("folder {user} {dir}"), why.to_string());
            continue;
        }
        if let Some(first) = seen.get(&key) {
            report.skip(
                format!("folder {user} {dir}"),
                format!("its name is the same mailbox as {first}'s ({name})"),
            );
            continue;
        }
        seen.insert(key, dir.clone());
        let mut folder = match crate::maildir::scan(&name, &path, owner) {
            Ok(f) => f,
            Err(e) => {
                report.skip(format!("folder {user} {name}"), e.to_string());
                continue;
            }
        };
        for (file, why) in std::mem::take(&mut folder.skipped) {
            report.skip(file, why);
        }
        let mut bad_flags = BTreeSet::new();
        folder.messages.retain_mut(|m| {
            m.flags.retain(|f| {
                let ok = wispd_engine::mailbox::is_flag(f);
                if !ok {
                    bad_flags.insert(f.clone());
                }
                ok
            });
            if m.size > MAX_IMPORT_MESSAGE {
                report.skip(
                    m.path.display().to_string(),
                    format!("larger than {MAX_IMPORT_MESSAGE} bytes"),
                );
                return false;
            }
            if m.uid >= wispd_engine::mailbox::MAX_IMPORTED_UID {
                report.skip(
                    m.path.display().to_string(),
                    format!(
                        "UID {} is above what wispd takes over ({})",
                        m.uid,
                        wispd_engine::mailbox::MAX_IMPORTED_UID - 1
                    ),
                );
                return false;
            }
            true
        });
        folder.uidnext = folder.uidnext.min(wispd_engine::mailbox::MAX_IMPORTED_UID);
        for f in bad_flags {
            report.skip(
                format!("keyword {f:?} in {user} {name}"),
                "not an IMAP keyword: left off the messages",
            );
        }
        let sub = subscribed.contains(&folder.name);
        let Some(id) = id else {
            // a dry run for an account still to be made: all of it would come
            report.changed.push(format!(
                "mailbox {user} {}: {} message(s)",
                folder.name,
                folder.messages.len()
            ));
            continue;
        };
        let mut progress = Progress::new(
            format!("{user} {}", folder.name),
            folder.messages.len() as u64,
        );
        let path = format!("/email/accounts/{id}/mailboxes/import");
        let folder = std::sync::Arc::new(folder);
        // cut into batches by bytes and count; at least one (an empty folder is created too)
        let per_batch = BATCH_MESSAGES
            .load(std::sync::atomic::Ordering::Relaxed)
            .clamp(1, 10_000);
        let mut cuts = vec![0usize];
        let mut bytes = 0u64;
        for (i, m) in folder.messages.iter().enumerate() {
            if i > cuts[cuts.len() - 1]
                && (bytes + m.size > BATCH_BYTES || i - cuts[cuts.len() - 1] >= per_batch)
            {
                cuts.push(i);
                bytes = 0;
            }
            bytes += m.size;
        }
        cuts.push(folder.messages.len());
        let mut tally = FolderTally::default();
        // one batch in flight while the next is read; a batch refused stops the folder there
        // (nothing after it is sent, so a rerun resumes at it)
        let mut inflight: Option<(tokio::task::JoinHandle<Result<Value>>, usize, u32)> = None;
        let mut failed = None;
        let settle = |h: Result<Result<Value>, tokio::task::JoinError>, first: u32| match h {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("stopped at UID {first}: {e:#}")),
            Err(e) => Err(format!("stopped at UID {first}: {e}")),
        };
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let f = folder.clone();
            let last = b == f.messages.len();
            let built = tokio::task::spawn_blocking(move || {
                batch_body(&f, sub, &f.messages[a..b], last, dry_run, owner)
            });
            if let Some((h, n, first)) = inflight.take() {
                match settle(h.await, first) {
                    Ok(v) => {
                        tally.add(&v);
                        progress.add(n as u64);
                    }
                    Err(why) => {
                        failed = Some(why);
                        break;
                    }
                }
            }
            let (body, skipped) = built.await?;
            for (file, why) in skipped {
                report.skip(file, why);
            }
            let api = api.clone();
            let p = path.clone();
            let first = folder.messages.get(a).map_or(0, |m| m.uid);
            inflight = Some((
                tokio::spawn(async move { api.post_json_bytes(&p, body).await }),
                b - a,
                first,
            ));
        }
        if let Some((h, n, first)) = inflight.take() {
            match settle(h.await, first) {
                Ok(v) => {
                    tally.add(&v);
                    progress.add(n as u64);
                }
                Err(why) => failed = Some(why),
            }
        }
        progress.finish();
        if let Some(why) = failed {
            report.skip(format!("mailbox {user} {}", folder.name), why);
        }
        report.unchanged += usize::try_from(tally.already).unwrap_or(usize::MAX);
        if tally.imported == 0 && tally.created {
            report
                .changed
                .push(format!("mailbox {user} {}: created (empty)", folder.name));
        } else if tally.imported > 0 {
            let how = if tally.uids_kept && tally.renumbered == 0 {
                "UIDs kept".to_string()
            } else if tally.renumbered > 0 {
                format!(
                    "{} given new UIDs: the mailbox already had other mail",
                    tally.renumbered
                )
            } else {
                "new UIDVALIDITY".to_string()
            };
            report.changed.push(format!(
                "mailbox {user} {}: {} message(s) ({how})",
                folder.name, tally.imported
            ));
        } else if folder.messages.is_empty() {
            report.unchanged += 1;
        }
    }
    Ok(())
}

/// A user's Sieve scripts (`~/sieve/*.sieve`), the one `~/.dovecot.sieve` links to active (a
/// plain `~/.dovecot.sieve` comes over as the active script `dovecot`).
async fn sieve(
    api: &Api,
    user: &str,
    home: &Path,
    dry_run: bool,
    report: &mut Report,
) -> Result<()> {
    let link = home.join(".dovecot.sieve");
    let active: Option<String> = std::fs::read_link(&link).ok().and_then(|t| {
        t.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sieve"))
            .map(str::to_string)
    });
    let sieve_dir = home.join("sieve");
    let mut scripts: Vec<(String, PathBuf)> =
        if std::fs::symlink_metadata(&sieve_dir).is_ok_and(|m| m.is_dir()) {
            std::fs::read_dir(&sieve_dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                        .filter_map(|e| {
                            let p = e.path();
                            let stem = p.file_name()?.to_str()?.strip_suffix(".sieve")?.to_string();
                            Some((stem, p))
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
    scripts.sort();
    if active.is_none()
        && link.is_file()
        && std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_file())
    {
        scripts.push(("dovecot".into(), link.clone()));
    }
    if scripts.is_empty() {
        return Ok(());
    }
    let (local, domain) = user.rsplit_once('@').unwrap_or((user, ""));
    let path = format!("/email/filters/{domain}/{local}");
    let have = match api.get(&path).await {
        Ok(v) => v,
        // a dry run for an account still to be made: it has no scripts
        Err(_) if dry_run => Value::Null,
        Err(e) => return Err(e),
    };
    let plain_active = active.is_none();
    for (name, file) in scripts {
        let text = match crate::maildir::Owner::of(home)
            .and_then(|o| crate::maildir::read_file(&file, crate::maildir::SMALL_FILE_MAX, o))
        {
            Ok(b) => match String::from_utf8(b) {
                Ok(t) => t,
                Err(_) => {
                    report.skip(file.display().to_string(), "not UTF-8");
                    continue;
                }
            },
            Err(e) => {
                report.skip(file.display().to_string(), e.to_string());
                continue;
            }
        };
        let is_active =
            active.as_deref() == Some(name.as_str()) || (plain_active && name == "dovecot");
        let same = have["data"]["scripts"].as_array().is_some_and(|a| {
            a.iter().any(|s| {
                s["name"].as_str() == Some(name.as_str())
                    && s["script"].as_str() == Some(text.as_str())
                    && s["active"].as_bool() == Some(is_active)
            })
        });
        if same {
            report.unchanged += 1;
            continue;
        }
        let what = format!(
            "sieve script {user} {name}{}",
            if is_active { " (active)" } else { "" }
        );
        if dry_run {
            report.changed.push(what);
            continue;
        }
        match api
            .put(
                &path,
                &json!({"name": name, "script": text, "active": is_active}),
            )
            .await
        {
            Ok(_) => report.changed.push(what),
            Err(e) => report.skip(file.display().to_string(), format!("{e:#}")),
        }
    }
    Ok(())
}

/// Every source, for `wispd import all`: each reads the `--from` directories (or its own
/// defaults); a source with nothing there is noted, not an error.
pub async fn run(
    api: &Api,
    source: crate::cli::ImportSource,
    from: &[PathBuf],
    dry_run: bool,
) -> Result<Report> {
    use crate::cli::ImportSource;
    let one = |s: ImportSource| -> &'static [&'static str] {
        match s {
            ImportSource::Csf => &["/etc/csf", "/var/lib/csf"],
            ImportSource::Postfix => &["/etc/postfix"],
            ImportSource::Dovecot | ImportSource::All => &["/etc/dovecot"],
        }
    };
    let go = |s: ImportSource| async move {
        let dirs = dirs(from, one(s))?;
        match s {
            ImportSource::Csf => csf(api, &dirs, dry_run).await,
            ImportSource::Postfix => postfix(api, &dirs, dry_run).await,
            ImportSource::Dovecot | ImportSource::All => dovecot(api, &dirs, dry_run).await,
        }
    };
    if !matches!(source, ImportSource::All) {
        return go(source).await;
    }
    let mut all = Report::default();
    for (s, name, marker) in [
        (
            ImportSource::Csf,
            "csf",
            &["csf.conf", "csf.allow", "csf.deny"][..],
        ),
        (ImportSource::Postfix, "postfix", &["main.cf"][..]),
        (ImportSource::Dovecot, "dovecot", &[][..]),
    ] {
        let dirs = if from.is_empty() {
            one(s).iter().map(PathBuf::from).collect()
        } else {
            from.to_vec()
        };
        let present = if marker.is_empty() {
            dirs.iter().any(|d| d.exists())
        } else {
            marker.iter().any(|m| find(&dirs, m).is_some())
        };
        if !present {
            all.skip(name, "nothing of it in the --from directories");
            continue;
        }
        match go(s).await {
            Ok(r) => {
                all.changed.extend(r.changed);
                all.unchanged += r.unchanged;
                all.skipped.extend(r.skipped);
                all.skipped_more += r.skipped_more;
            }
            Err(e) => all.skip(name, format!("{e:#}")),
        }
    }
    Ok(all)
}

/// The directories to read: `--from`, else the source's own (`defaults`).
pub fn dirs(from: &[PathBuf], defaults: &[&str]) -> Result<Vec<PathBuf>> {
    if from.is_empty() {
        return Ok(defaults.iter().map(PathBuf::from).collect());
    }
    for d in from {
        if !d.exists() {
            bail!("--from {}: not a directory", d.display());
        }
    }
    Ok(from.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csf_files_are_read_as_csf_writes_them() {
        let conf =
            "# comment\nTESTING = \"0\"\nTCP_IN = \"20,21,22\"\n\nLF_SSHD=\"5\"\nbroken line\n";
        let parsed: Vec<(String, String)> = parse_conf(conf)
            .into_iter()
            .map(|(_, k, v)| (k, v))
            .collect();
        assert_eq!(
            parsed,
            [("TESTING", "0"), ("TCP_IN", "20,21,22"), ("LF_SSHD", "5")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let mut r = Report::default();
        let list = "1.2.3.4 # office\n10.0.0.0/8\n#5.5.5.5\ntcp|in|d=22|s=6.6.6.6\nInclude /etc/csf/more\n7.7.7.7 # lfd: (sshd) Failed login - Mon Jan 1 #do not delete\n";
        let got = parse_list("csf.allow", list, &mut r);
        assert_eq!(
            got.iter().map(|(_, ip, _)| ip.as_str()).collect::<Vec<_>>(),
            ["1.2.3.4", "10.0.0.0/8", "7.7.7.7"]
        );
        assert_eq!(got[0].2, "office");
        assert!(got[2].2.contains("do not delete"), "{:?}", got[2]);
        assert_eq!(r.skipped.len(), 2);
        assert!(normal("22, 20,21") == normal("20,21,22"));
        assert!(same_net("1.2.3.4", "1.2.3.4/32") && !same_net("1.2.3.4", "1.2.3.5"));
        let bans = parse_tempban(
            "1000|9.9.9.9|22|in|3600|lfd ban\n1000|8.8.8.8|22|in|10|gone\n",
            1100,
        );
        assert_eq!(
            bans,
            vec![("9.9.9.9".to_string(), 3500, "lfd ban".to_string())]
        );
    }
}
