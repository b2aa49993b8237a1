//! The engine against the real kernel, in a network namespace of this test thread's own
//! (unshare(CLONE_NEWNET)): the host's ruleset is never touched.

use std::process::Command;
use std::time::Instant;

use wispd_firewall::{EntryRequest, Firewall, FirewallConfig, ListKind, Origin};
use wispd_store::Store;
use wispd_store::schema::{FW_BLACKLIST, FwEntry};

fn private_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): these tests need root (CI runs as root)");
}

fn nft_elements(set: &str) -> usize {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", "wispd", set])
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|i| i.get("set")))
        .and_then(|s| s.get("elem"))
        .and_then(|e| e.as_array())
        .map_or(0, Vec::len)
}

fn temp_store(name: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("wispd-fwk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    Store::open(&dir).expect("store")
}

fn config() -> FirewallConfig {
    FirewallConfig {
        table: "wispd".into(),
        kernel: true,
        protected_tcp_ports: vec![2083],
        api_port: Some(2083),
    }
}

#[test]
fn hundred_thousand_element_list_loads_in_one_transaction() {
    private_netns();
    let store = temp_store("100k");
    let n: u32 = 100_000;
    store
        .write(|w| {
            for i in 0..n {
                // every other address, so no two entries merge into one interval
                let ip = std::net::Ipv4Addr::from(0x0a00_0000u32 + 2 * i);
                let e = FwEntry {
                    net: format!("{ip}/32"),
                    comment: String::new(),
                    ttl: 0,
                    created_at: 1,
                    expires_at: None,
                };
                w.put(&FW_BLACKLIST, e.net.as_str(), &e)?;
            }
            Ok::<_, wispd_store::StoreError>(())
        })
        .expect("seed store");
    let t0 = Instant::now();
    let fw = Firewall::start(store, config()).expect("start");
    eprintln!("100k-element full apply: {:?}", t0.elapsed());
    assert_eq!(nft_elements("blacklist4"), n as usize);
    let status = fw.status().expect("status");
    assert_eq!(status.blacklist_count, n as usize);
    // an incremental ban on top of the big set still lands
    fw.add(
        ListKind::Black,
        EntryRequest {
            ip: "192.0.2.1".into(),
            comment: String::new(),
            ttl: 60,
            force: false,
            caller: None,
        },
    )
    .expect("ban");
    assert_eq!(nft_elements("blacklist4"), n as usize + 1);
}

#[test]
fn invalid_settings_change_leaves_the_ruleset_as_it_was() {
    private_netns();
    let store = temp_store("reject");
    let fw = Firewall::start(store, config()).expect("start");
    fw.add(
        ListKind::Black,
        EntryRequest {
            ip: "198.51.100.1".into(),
            comment: String::new(),
            ttl: 0,
            force: false,
            caller: None,
        },
    )
    .expect("ban");
    let before = Command::new("nft")
        .args(["list", "table", "inet", "wispd"])
        .output()
        .expect("nft")
        .stdout;
    let err = fw
        .update_settings(
            [("TCP_IN".to_string(), "22,99999".to_string())].into(),
            Origin::default(),
        )
        .expect_err("invalid");
    assert!(err.to_string().contains("TCP_IN"), "{err}");
    let after = Command::new("nft")
        .args(["list", "table", "inet", "wispd"])
        .output()
        .expect("nft")
        .stdout;
    assert_eq!(
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );
}
