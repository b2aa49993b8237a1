//! The admin commands: `wispd status`, `queue`, `ban` and `messages`, for people (text) or
//! scripts (`--json`), through the running server's API (see [`crate::client`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::cli::Target;
use crate::client::{self, Api};
use crate::config::Config;

/// What an admin command asks of the server.
pub enum Job {
    Status,
    Queue,
    Ban {
        ip: String,
        ttl: i64,
        comment: String,
        force: bool,
    },
}

/// The data directory and the API certificate of the server `target` names.
fn config(target: &Target) -> Result<Config> {
    Ok(match &target.config {
        Some(path) => Config::load(path).map_err(|errors| {
            crate::report(&path.display().to_string(), &errors);
            anyhow::anyhow!("the config file has errors")
        })?,
        None => Config::embedded(),
    })
}

fn locate(target: &Target) -> Result<(PathBuf, PathBuf)> {
    let cfg = config(target)?;
    let data_dir = target.data_dir.clone().unwrap_or(cfg.data_dir);
    let configured = cfg.api.tls_files.map(|(cert, _)| cert);
    let cert = client::cert_file(&data_dir, configured.as_ref());
    Ok((data_dir, cert))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `job` against the running server and prints its answer.
pub fn run(target: &Target, job: Job) -> ExitCode {
    let result = locate(target).and_then(|(data_dir, cert)| {
        let api = Api::connect(&data_dir, &cert)?;
        runtime()?.block_on(async { answer(&api, job, target.json).await })
    });
    finish(result)
}

fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wispd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn answer(api: &Api, job: Job, as_json: bool) -> Result<()> {
    match job {
        Job::Status => {
            let email = api.get("/email/status").await?;
            let firewall = api.get("/firewall/status").await?;
            let queue = api.get("/email/queue").await?;
            let queued = queue["data"].as_array().map_or(0, Vec::len);
            if as_json {
                println!(
                    "{}",
                    json!({"email": email, "firewall": firewall["data"], "queue": {"messages": queued}})
                );
                return Ok(());
            }
            let yes = |v: &Value| {
                if v.as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
            };
            println!("mail stack installed: {}", yes(&email["installed"]));
            let engine = |v: &Value| match (v["installed"].as_bool(), v["running"].as_bool()) {
                (_, Some(true)) => "running",
                (Some(true), _) => "installed, not running",
                _ => "not installed",
            };
            println!("  SMTP (postfix):     {}", engine(&email["postfix"]));
            println!("  IMAP (dovecot):     {}", engine(&email["dovecot"]));
            println!("  clamd running:      {}", yes(&email["clamav_running"]));
            let fw = &firewall["data"];
            println!("firewall:             {}", summary(fw));
            println!("outbound queue:       {queued} message(s)");
        }
        Job::Queue => {
            let queue = api.get("/email/queue").await?;
            let messages = queue["data"].as_array().cloned().unwrap_or_default();
            if as_json {
                for m in &messages {
                    println!("{m}");
                }
                return Ok(());
            }
            if messages.is_empty() {
                println!("the outbound queue is empty");
            }
            for m in &messages {
                let rcpts: Vec<String> = m["recipients"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .map(|x| format!("{} ({})", text(&x["address"]), text(&x["status"])))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}  {}  from <{}>  {} bytes  to {}",
                    text(&m["id"]),
                    text(&m["created_at"]),
                    text(&m["sender"]),
                    text(&m["size"]),
                    rcpts.join(", ")
                );
            }
        }
        Job::Ban {
            ip,
            ttl,
            comment,
            force,
        } => {
            let body = json!({"ip": ip, "ttl": ttl, "comment": comment, "force": force});
            let r = api.post("/csf/blacklist", &body).await?;
            if as_json {
                println!("{r}");
            } else {
                let d = &r["data"];
                let until = if d["ttl"].as_u64().unwrap_or(0) == 0 {
                    "permanently".to_string()
                } else {
                    format!("for {} s", text(&d["ttl"]))
                };
                println!("banned {} {until}", text(&d["ip"]));
            }
        }
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One line about the firewall from `/firewall/status`'s data.
fn summary(fw: &Value) -> String {
    let mut parts = Vec::new();
    for (k, v) in fw.as_object().into_iter().flatten() {
        if matches!(v, Value::Bool(_) | Value::String(_) | Value::Number(_)) {
            parts.push(format!("{k}={}", text(v)));
        }
    }
    parts.join(" ")
}

/// `wispd messages`: straight from the store when no server holds it, else through the API.
/// `wispd import`: through the running server's API.
pub fn import(
    target: &Target,
    source: crate::cli::ImportSource,
    from: &[PathBuf],
    dry_run: bool,
) -> ExitCode {
    let result = (|| {
        let cfg = config(target)?;
        let data_dir = target.data_dir.clone().unwrap_or(cfg.data_dir.clone());
        let cert = client::cert_file(
            &data_dir,
            cfg.api.tls_files.as_ref().map(|(c, _)| c.clone()).as_ref(),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        rt.block_on(async {
            // a stopped server's store is served here, the same API over the same store; a
            // dry run with no store yet looks at an empty one made for it, and removed after
            let scratch = if dry_run && !data_dir.join(wispd_store::FILE_NAME).exists() {
                Some(scratch_dir()?)
            } else {
                None
            };
            let dir = scratch.as_ref().unwrap_or(&data_dir);
            let offline = crate::serve::Offline::start(&cfg, dir).await?;
            let api = match &offline {
                Some(o) => Api::local(o.base.clone(), dir)?,
                None => Api::connect(&data_dir, &cert)?,
            };
            let report = crate::import::run(&api, source, from, dry_run).await;
            if let Some(o) = offline {
                o.stop().await;
            }
            if let Some(s) = &scratch {
                let _ = std::fs::remove_dir_all(s);
            }
            let report = report?;
            if target.json {
                println!("{}", report.json(dry_run));
            } else {
                report.print(dry_run);
            }
            Ok(())
        })
    })();
    finish(result)
}

/// A new directory of this process's own under the temp dir (0700, made exclusively: one that
/// someone made beforehand is never used).
fn scratch_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    for i in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "wispd-dry-run-{}-{nanos:x}-{i}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow::anyhow!("cannot make {}: {e}", p.display())),
        }
    }
    anyhow::bail!(
        "cannot make a scratch directory under {}",
        std::env::temp_dir().display()
    )
}

pub fn messages(target: &Target, address: &str, raw: bool) -> ExitCode {
    let located = locate(target);
    let (data_dir, cert) = match located {
        Ok(l) => l,
        Err(e) => return finish(Err(e)),
    };
    match wispd_store::Store::open(&data_dir) {
        Ok(store) => finish(from_store(&store, &data_dir, address, raw, target.json)),
        Err(wispd_store::StoreError::InUse { .. }) => finish((|| {
            let api = Api::connect(&data_dir, &cert)?;
            runtime()?.block_on(async {
                let accounts = api.get("/email/accounts").await?;
                let id = accounts["accounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["email"].as_str() == Some(address.to_lowercase().as_str()))
                    .and_then(|a| a["id"].as_u64())
                    .with_context(|| format!("no account {address:?}"))?;
                let query = if raw { "?raw=true" } else { "" };
                let listed = api
                    .get(&format!("/email/accounts/{id}/messages{query}"))
                    .await?;
                for m in listed["data"].as_array().into_iter().flatten() {
                    print_message(m, target.json);
                }
                Ok(())
            })
        })()),
        Err(e) => finish(Err(anyhow::anyhow!("{}: {e}", data_dir.display()))),
    }
}

fn from_store(
    store: &wispd_store::Store,
    data_dir: &std::path::Path,
    address: &str,
    raw: bool,
    as_json: bool,
) -> Result<()> {
    let listed = wispd_engine::mailstore::list(store, address, raw)?
        .with_context(|| format!("no account {address:?} in {}", data_dir.display()))?;
    for m in listed {
        let mut line = json!({
            "mailbox": m.mailbox,
            "uid": m.entry.uid,
            "size": m.entry.size,
            "internal_date": m.entry.internal_date,
            "flags": m.entry.flags,
            "message_id": m.message_id,
            "subject": m.subject,
        });
        if let Some(bytes) = &m.raw {
            line["raw"] = String::from_utf8_lossy(bytes).into();
        }
        print_message(&line, as_json);
    }
    Ok(())
}

fn print_message(m: &Value, as_json: bool) {
    if as_json {
        println!("{m}");
        return;
    }
    let flags: Vec<String> = m["flags"]
        .as_array()
        .map(|f| f.iter().map(text).collect())
        .unwrap_or_default();
    println!(
        "{}/{}  {} bytes  [{}]  {}  {}",
        text(&m["mailbox"]),
        text(&m["uid"]),
        text(&m["size"]),
        flags.join(" "),
        text(&m["message_id"]),
        text(&m["subject"]),
    );
    if let Some(raw) = m["raw"].as_str() {
        println!("{raw}");
    }
}
