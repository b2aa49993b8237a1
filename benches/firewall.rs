//! Firewall ban benchmark, side by side in one run (needs root; runs in a private network
//! namespace, never the host's):
//!
//! - wispd: single-ban latency (p50/p99) and 10k-ban throughput through the engine's API path
//!   (validation, kernel transaction, durable store commit);
//! - `nft add element` once per process, as CSF and fail2ban ban;
//! - one `nft -f` batch of 10k elements.
//!
//! `cargo bench --bench firewall` (or `make bench`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use wispd_firewall::{EntryRequest, Firewall, FirewallConfig, ListKind, Origin};
use wispd_store::Store;

const SINGLE: u32 = 1_000;
const BULK: u32 = 10_000;
const NFT_PROCS: u32 = 300;

fn ban(fw: &Firewall, ip: Ipv4Addr) -> Duration {
    let t0 = Instant::now();
    fw.add(
        ListKind::Black,
        EntryRequest {
            ip: ip.to_string(),
            comment: "bench".into(),
            ttl: 3600,
            force: false,
            caller: None,
        },
    )
    .expect("ban");
    t0.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench discovery
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) needs root");
    let dir = std::env::temp_dir().join(format!("wispd-fwbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir).expect("store");
    let fw = Firewall::start(
        store,
        FirewallConfig {
            table: "wispd".into(),
            kernel: true,
            protected_tcp_ports: vec![],
            api_port: None,
        },
    )
    .expect("firewall");
    fw.update_settings(
        [
            ("DENY_IP_LIMIT", "0"),
            ("DENY_TEMP_IP_LIMIT", "0"),
            ("TESTING", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        Origin::default(),
    )
    .expect("settings");

    // wispd: single bans, one at a time
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut lat: Vec<Duration> = (0..SINGLE)
        .map(|i| ban(&fw, Ipv4Addr::from(base + 2 * i)))
        .collect();
    lat.sort();
    let p50 = pct(&lat, 0.5);
    let p99 = pct(&lat, 0.99);

    // wispd: 10k bans back to back
    let t0 = Instant::now();
    for i in 0..BULK {
        ban(&fw, Ipv4Addr::from(base + 2 * (SINGLE + i)));
    }
    let bulk = t0.elapsed();
    let wispd_rate = f64::from(BULK) / bulk.as_secs_f64();

    // what one durable store commit costs on this disk (part of every wispd ban)
    std::fs::create_dir_all(dir.join("probe")).expect("dir");
    let probe = Store::open(&dir.join("probe")).expect("probe store");
    let mut commit: Vec<Duration> = Vec::new();
    {
        for i in 0..300u32 {
            let e = wispd_store::schema::FwEntry {
                net: format!("198.18.{}.{}/32", i / 256, i % 256),
                comment: "bench".into(),
                ttl: 0,
                created_at: 0,
                expires_at: None,
            };
            let t = Instant::now();
            probe
                .write(|w| w.put(&wispd_store::schema::FW_BLACKLIST, e.net.as_str(), &e))
                .expect("put");
            commit.push(t.elapsed());
        }
    }
    commit.sort();

    // nft: one process per ban (CSF / fail2ban)
    let nbase = u32::from(Ipv4Addr::new(100, 96, 0, 0));
    let mut nft_lat = Vec::new();
    for i in 0..NFT_PROCS {
        let ip = Ipv4Addr::from(nbase + 2 * i);
        let t = Instant::now();
        let ok = Command::new("nft")
            .args([
                "add",
                "element",
                "inet",
                "wispd",
                "blacklist4",
                &format!("{{ {ip} timeout 3600s }}"),
            ])
            .status()
            .expect("nft");
        assert!(ok.success());
        nft_lat.push(t.elapsed());
    }
    nft_lat.sort();
    let nft_p50 = pct(&nft_lat, 0.5);
    let nft_rate = f64::from(NFT_PROCS) / nft_lat.iter().sum::<Duration>().as_secs_f64();

    // nft -f: one batch of 10k
    let fbase = u32::from(Ipv4Addr::new(100, 112, 0, 0));
    let path = dir.join("batch.nft");
    let mut f = std::fs::File::create(&path).expect("file");
    let elems: Vec<String> = (0..BULK)
        .map(|i| format!("{} timeout 3600s", Ipv4Addr::from(fbase + 2 * i)))
        .collect();
    writeln!(
        f,
        "add element inet wispd blacklist4 {{ {} }}",
        elems.join(", ")
    )
    .expect("write");
    drop(f);
    let t = Instant::now();
    assert!(
        Command::new("nft")
            .arg("-f")
            .arg(&path)
            .status()
            .expect("nft")
            .success()
    );
    let nft_f = t.elapsed();
    let nft_f_rate = f64::from(BULK) / nft_f.as_secs_f64();

    println!(
        "firewall bans (one run, private netns, kernel {})",
        kernel()
    );
    println!("{:<44} {:>12} {:>12} {:>14}", "", "p50", "p99", "bans/s");
    println!(
        "{:<44} {:>12?} {:>12?} {:>14.0}",
        "wispd engine: ban (validate+netlink+fsync)",
        p50,
        p99,
        f64::from(SINGLE) / lat.iter().sum::<Duration>().as_secs_f64()
    );
    println!(
        "{:<44} {:>12} {:>12} {:>14.0}",
        "wispd engine: 10k bans back to back", "", "", wispd_rate
    );
    println!(
        "{:<44} {:>12?} {:>12?}",
        "  of which one durable redb commit",
        pct(&commit, 0.5),
        pct(&commit, 0.99)
    );
    println!(
        "{:<44} {:>12?} {:>12} {:>14.0}",
        "nft add element, a process per ban", nft_p50, "", nft_rate
    );
    println!(
        "{:<44} {:>12} {:>12} {:>14.0}",
        "nft -f, one 10k-element batch", "", "", nft_f_rate
    );
    println!();
    println!(
        "single ban latency: nft process / wispd = {:.1}x",
        nft_p50.as_secs_f64() / p50.as_secs_f64()
    );
    println!(
        "ban throughput:     wispd / nft process = {:.1}x",
        wispd_rate / nft_rate
    );
    println!(
        "ban throughput:     wispd / nft -f batch = {:.2}x (a batch is not a ban: no per-ban answer, no persistence)",
        wispd_rate / nft_f_rate
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
