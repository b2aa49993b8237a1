//! The engine's tests: `store_only` without the kernel, `kernel` in a fresh network namespace.

mod store_only {
    //! The engine's rules without the kernel (`kernel: false`): store and validation only.
    use super::super::*;
    use crate::lockout::Origin;
    use crate::model::parse_net;
    use wispd_store::schema::{FW_BLACKLIST, FwEntry};

    fn engine(name: &str) -> Firewall {
        let dir = std::env::temp_dir().join(format!("wispd-fw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Firewall::start(Store::open(&dir).expect("store"), config()).expect("start")
    }

    fn config() -> FirewallConfig {
        FirewallConfig {
            table: "wispd".into(),
            kernel: false,
            protected_tcp_ports: vec![2083],
            api_port: Some(2083),
        }
    }

    fn entry(ip: &str, force: bool, caller: Option<&str>) -> EntryRequest {
        EntryRequest {
            ip: ip.into(),
            comment: String::new(),
            ttl: 0,
            force,
            caller: caller.map(|c| c.parse().expect("caller")),
        }
    }

    fn refusal(r: Result<impl std::fmt::Debug, FwError>) -> String {
        match r {
            Err(FwError::Invalid(m)) => m,
            other => panic!("expected a 400 refusal, got {other:?}"),
        }
    }

    const REMOTE: &str = "203.0.113.5";

    /// Whether `net` leaves every address of the machine running the test alone (a ban covering
    /// one is refused for that reason first).
    fn off_this_host(net: &str) -> bool {
        let net = parse_net(net).expect("net");
        !local_addresses().iter().any(|a| net.contains(a))
    }

    #[test]
    fn ipv4_mapped_entries_are_stored_checked_and_removed_as_ipv4() {
        let fw = engine("mapped");
        let e = fw
            .add(ListKind::Black, entry("::ffff:198.51.100.7", false, None))
            .expect("ban");
        assert_eq!(e.net, "198.51.100.7/32");
        let e = fw
            .add(
                ListKind::Black,
                entry("::ffff:203.0.113.0/120", false, None),
            )
            .expect("ban");
        assert_eq!(e.net, "203.0.113.0/24");
        for probe in ["198.51.100.7", "::ffff:198.51.100.7", "::FFFF:203.0.113.9"] {
            let hits = fw.check(probe).expect("check");
            assert_eq!(hits.len(), 1, "{probe}");
            assert_eq!(hits[0].list, "blacklist");
        }
        fw.remove(ListKind::Black, "::ffff:198.51.100.7")
            .expect("unban by the mapped form");
        assert!(fw.check("198.51.100.7").expect("check").is_empty());
    }

    #[test]
    fn mapped_loopback_and_mapped_caller_are_protected_like_ipv4() {
        let fw = engine("mappedlo");
        let why = refusal(fw.add(ListKind::Black, entry("::ffff:127.0.0.1", true, None)));
        assert!(why.contains("loopback"), "{why}");
        let why = refusal(fw.add(
            ListKind::Black,
            entry(REMOTE, false, Some(&format!("::ffff:{REMOTE}"))),
        ));
        assert!(why.contains("your own address"), "{why}");
    }

    #[test]
    fn entries_stored_under_a_mapped_key_are_rekeyed_at_start() {
        let dir = std::env::temp_dir().join(format!("wispd-fw-rekey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir).expect("store");
        let legacy = FwEntry {
            net: "::ffff:198.51.100.7/128".into(),
            comment: "old".into(),
            ttl: 0,
            created_at: 1,
            expires_at: None,
        };
        store
            .write(|w| w.put(&FW_BLACKLIST, legacy.net.as_str(), &legacy))
            .expect("seed");
        let fw = Firewall::start(store, config()).expect("start");
        let list = fw.list(ListKind::Black).expect("list");
        assert_eq!(
            list.iter().map(|e| e.net.as_str()).collect::<Vec<_>>(),
            ["198.51.100.7/32"]
        );
        assert_eq!(fw.check("198.51.100.7").expect("check").len(), 1);
        fw.remove(ListKind::Black, "198.51.100.7").expect("unban");
    }

    #[test]
    fn broad_blacklist_and_whitelist_entries_need_force() {
        let fw = engine("broad");
        let wide = [
            "32.0.0.0/3",
            "128.0.0.0/1",
            "4000::/2",
            "2001:d00::/24",
            "::ffff:32.0.0.0/99",
        ];
        let wide: Vec<&str> = wide.into_iter().filter(|n| off_this_host(n)).collect();
        assert!(!wide.is_empty());
        for ip in &wide {
            let why = refusal(fw.add(ListKind::Black, entry(ip, false, None)));
            assert!(
                why.contains("wider than /") && why.contains("\"force\": true"),
                "{why}"
            );
        }
        for ip in ["0.0.0.0/0", "::/0", "10.0.0.0/7"] {
            let why = refusal(fw.add(ListKind::White, entry(ip, false, None)));
            assert!(why.contains("Refusing to whitelist"), "{why}");
        }
        fw.add(ListKind::Black, entry(wide[0], true, None))
            .expect("forced ban");
        fw.add(ListKind::White, entry("0.0.0.0/0", true, None))
            .expect("forced whitelist");
        fw.add(ListKind::Black, entry("2001:db8::/32", false, None))
            .expect("a /32 is not broad");
    }

    #[test]
    fn settings_that_close_the_api_port_to_the_caller_need_force() {
        let fw = engine("settings");
        let remote = Origin {
            caller: Some(REMOTE.parse().expect("ip")),
            force: false,
        };
        let change = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let closing = change(&[("TCP_IN", "22"), ("TESTING", "0")]);
        let why = refusal(fw.update_settings(closing.clone(), remote));
        assert!(
            why.contains("TCP_IN") && why.contains("2083") && why.contains("\"force\": true"),
            "{why}"
        );
        // the mapped form of the same caller is the same caller
        let mapped = Origin {
            caller: Some(format!("::ffff:{REMOTE}").parse().expect("ip")),
            force: false,
        };
        refusal(fw.update_settings(closing.clone(), mapped));
        refusal(fw.remove_port("2083", None, None, remote));
        // PORTFLOOD / CONNLIMIT on the API port would count the caller's own requests
        for (key, value) in [("PORTFLOOD", "2083;tcp;3;60"), ("CONNLIMIT", "2083;1")] {
            let why = refusal(fw.update_settings(change(&[(key, value)]), remote));
            assert!(
                why.contains(key) && why.contains("2083") && why.contains("force"),
                "{why}"
            );
        }
        // on another port, or for UDP, it is fine
        fw.update_settings(
            change(&[("PORTFLOOD", "80;tcp;3;60,2083;udp;3;60")]),
            remote,
        )
        .expect("another port");
        // loopback callers can't be locked out (lo is accepted first); nor whitelisted ones
        let lo = Origin {
            caller: Some("127.0.0.1".parse().expect("ip")),
            force: false,
        };
        fw.update_settings(change(&[("TCP_IN", "22,2083")]), lo)
            .expect("unchanged port");
        fw.add(ListKind::White, entry(REMOTE, false, None))
            .expect("whitelist");
        fw.update_settings(change(&[("TCP_IN", "22")]), remote)
            .expect("whitelisted caller");
        fw.remove(ListKind::White, REMOTE).expect("unlist");
        // TESTING 1 -> 0 with the port already closed makes the lockout permanent
        let why = refusal(fw.update_settings(change(&[("TESTING", "0")]), remote));
        assert!(why.contains("TESTING is 0"), "{why}");
        let forced = Origin {
            force: true,
            ..remote
        };
        fw.update_settings(change(&[("TESTING", "0")]), forced)
            .expect("forced");
        // nothing gets worse: unrelated changes pass
        fw.update_settings(change(&[("DENY_IP_LIMIT", "10")]), remote)
            .expect("unrelated change");
        fw.toggle(false, remote).expect("off");
        refusal(fw.toggle(true, remote));
        fw.toggle(true, forced).expect("forced on");
    }

    #[test]
    fn rules_that_shut_the_caller_out_need_force() {
        let fw = engine("rules");
        let req = |port: Option<&str>, source: Option<&str>, force: bool| RuleRequest {
            chain: "INPUT".into(),
            protocol: "tcp".into(),
            port: port.map(Into::into),
            source: source.map(Into::into),
            action: "DROP".into(),
            force,
            caller: Some(REMOTE.parse().expect("ip")),
        };
        for (port, source) in [
            (Some("2083"), None),
            (Some("2083"), Some(REMOTE)),
            (Some("2083"), Some("::ffff:203.0.113.0/120")),
            (None, Some("0.0.0.0/0")),
        ] {
            let why = refusal(fw.add_rule(req(port, source, false)));
            assert!(why.contains("\"force\": true"), "{why}");
        }
        let out = RuleRequest {
            chain: "OUTPUT".into(),
            protocol: "all".into(),
            source: Some("0.0.0.0/0".into()),
            ..req(None, None, false)
        };
        refusal(fw.add_rule(out));
        let r = fw
            .add_rule(req(Some("2083"), Some("::ffff:203.0.113.5"), true))
            .expect("forced");
        assert_eq!(r.source.as_deref(), Some("203.0.113.5"));
        fw.add_rule(req(Some("8088"), None, false))
            .expect("another port");
    }

    #[test]
    fn opening_a_range_over_an_open_port_merges_instead_of_eexist() {
        let fw = engine("ports");
        let open = |port: &str| {
            fw.add_port(PortRequest {
                port: port.into(),
                protocol: "tcp".into(),
                direction: "in".into(),
            })
        };
        open("20:25").expect("range over 22");
        open("40000:40010").expect("range");
        open("40005").expect("port inside the range");
        let tcp_in = fw.settings().expect("settings")["TCP_IN"].clone();
        assert_eq!(tcp_in, "20:25,2083,40000:40010");
        assert_eq!(fw.settings().expect("settings")["TCP6_IN"], tcp_in);
        assert_eq!(
            fw.remove_port("22", Some("tcp"), Some("in"), Origin::default())
                .expect("close"),
            2
        );
        assert_eq!(
            fw.settings().expect("settings")["TCP_IN"],
            "20:21,23:25,2083,40000:40010"
        );
    }
}

mod kernel {
    //! Needs root: each test moves its thread into a fresh network namespace.
    use super::super::*;
    use crate::msg::{Batch, MsgType, NFPROTO_INET, NLM_F_CREATE};
    use crate::plan;

    fn ruleset() -> String {
        let out = std::process::Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn a_rejected_batch_changes_nothing_and_names_the_error() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare needs root");
        let dir = std::env::temp_dir().join(format!("wispd-fwreject-{}", std::process::id()));
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
        .expect("start");
        fw.add(
            ListKind::Black,
            EntryRequest {
                ip: "192.0.2.1".into(),
                comment: String::new(),
                ttl: 0,
                force: false,
                caller: None,
            },
        )
        .expect("ban");
        let before = ruleset();
        assert!(before.contains("192.0.2.1"), "{before}");

        // A whole-table rebuild that also adds a rule looking up a set that does not exist: the
        // kernel must refuse the batch as a unit.
        let mut k = fw.kernel();
        let nl = k.nl.as_mut().expect("netlink");
        let mut batch = Batch::new(nl.next_seq());
        plan::remove(&mut batch, "wispd");
        batch.msg(MsgType::NewRule, NLM_F_CREATE, NFPROTO_INET);
        batch.w.str(1, "wispd");
        batch.w.str(2, "input");
        batch.end_msg();
        let err = nl
            .commit(batch)
            .expect_err("the kernel must refuse a rule in a deleted table");
        assert!(err.to_string().contains("ENOENT"), "{err}");
        drop(k);
        assert_eq!(ruleset(), before, "nothing of the refused batch may apply");
        // the socket is still usable afterwards
        fw.reload().expect("reload");
        assert!(ruleset().contains("192.0.2.1"));
    }

    fn nft_json() -> serde_json::Value {
        let out = std::process::Command::new("nft")
            .args(["-j", "list", "table", "inet", "wispd"])
            .output()
            .expect("nft");
        serde_json::from_slice(&out.stdout).expect("nft -j answers JSON")
    }

    /// The batches plan.rs builds, read back by an independent decoder (nft's libnftables, in
    /// JSON): every set with its type and flags, every protection's expressions as meant, and
    /// as many rules as the engine counts.
    #[test]
    fn nft_reads_back_what_the_plan_built() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare needs root");
        let dir = std::env::temp_dir().join(format!("wispd-fworacle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let fw = Firewall::start(
            Store::open(&dir).expect("store"),
            FirewallConfig {
                table: "wispd".into(),
                kernel: true,
                protected_tcp_ports: vec![2083],
                api_port: None,
            },
        )
        .expect("start");
        let changes: std::collections::BTreeMap<String, String> = [
            ("SYNFLOOD", "1"),
            ("SYNFLOOD_RATE", "100/s"),
            ("SYNFLOOD_BURST", "150"),
            ("CONNLIMIT", "22;5"),
            ("PORTFLOOD", "80;tcp;20;60"),
            ("PS_INTERVAL", "300"),
            ("PS_LIMIT", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        fw.update_settings(changes, crate::Origin::default())
            .expect("settings");
        fw.add(
            ListKind::Black,
            EntryRequest {
                ip: "192.0.2.7".into(),
                comment: String::new(),
                ttl: 0,
                force: false,
                caller: None,
            },
        )
        .expect("ban");
        let doc = nft_json();
        let items = doc["nftables"].as_array().expect("nftables array");
        let sets: std::collections::BTreeMap<String, &serde_json::Value> = items
            .iter()
            .filter_map(|i| i.get("set"))
            .map(|s| (s["name"].as_str().unwrap_or_default().to_string(), s))
            .collect();
        let flags = |name: &str| -> Vec<String> {
            sets[name]["flags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(sets["blacklist4"]["type"], "ipv4_addr");
        assert!(
            flags("blacklist4").contains(&"timeout".to_string()),
            "{:?}",
            sets["blacklist4"]
        );
        assert_eq!(sets["tcp_in"]["type"], "inet_service");
        assert!(flags("tcp_in").contains(&"interval".to_string()));
        // (nft's JSON leaves `dynamic` out even for sets nft made itself; its text says it)
        for dynamic in [
            "cl4_22",
            "cl6_22",
            "pfm4_tcp80",
            "pfb4_tcp80",
            "pslog4",
            "pslog6",
        ] {
            let out = std::process::Command::new("nft")
                .args(["list", "set", "inet", "wispd", dynamic])
                .output()
                .expect("nft");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("flags dynamic"), "{dynamic}: {text}");
            assert_eq!(sets[dynamic]["size"], 65536, "{dynamic}");
        }
        assert_eq!(sets["pfb6_tcp80"]["type"], "ipv6_addr");
        assert_eq!(
            sets["pfb4_tcp80"]["timeout"], 60,
            "{:?}",
            sets["pfb4_tcp80"]
        );
        let rules: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("rule")).collect();
        assert_eq!(
            rules.len(),
            fw.kernel().rules,
            "nft counts the rules the engine counts"
        );
        let text: Vec<String> = rules.iter().map(|r| r["expr"].to_string()).collect();
        let has = |needle: &str| text.iter().filter(|t| t.contains(needle)).count();
        assert_eq!(
            has(
                r#""limit":{"rate":100,"burst":150,"per":"second","inv":true}},{"counter":"synflood_drops"},{"drop":null}"#
            ),
            1,
            "{text:#?}"
        );
        assert_eq!(
            has(
                r#""set":"@cl4_22","stmt":[{"ct count":{"val":5,"inv":true}}]}},{"reject":{"type":"tcp reset"}}"#
            ),
            1,
            "{text:#?}"
        );
        assert_eq!(
            has(
                r#""set":"@cl6_22","stmt":[{"ct count":{"val":5,"inv":true}}]}},{"reject":{"type":"tcp reset"}}"#
            ),
            1,
            "{text:#?}"
        );
        assert_eq!(
            has(
                r#""set":"@pfm4_tcp80","stmt":[{"limit":{"rate":20,"burst":20,"per":"minute","inv":true}}]"#
            ),
            1,
            "{text:#?}"
        );
        assert_eq!(
            has(
                r#""op":"update","elem":{"elem":{"val":{"payload":{"protocol":"ip","field":"saddr"}},"timeout":60}},"set":"@pfb4_tcp80""#
            ),
            1,
            "{text:#?}"
        );
        assert_eq!(
            has(
                r#""op":"add","elem":{"elem":{"val":{"payload":{"protocol":"ip","field":"saddr"}},"timeout":60}},"set":"@pfb4_tcp80""#
            ),
            1,
            "{text:#?}"
        );
        // TCP, UDP and ICMP echo requests, per family
        assert_eq!(
            has(r#""set":"@pslog4","stmt":[{"limit":{"rate":40,"burst":40"#),
            3,
            "{text:#?}"
        );
        assert_eq!(has(r#""log":{"group":7331,"snaplen":80}"#), 6, "{text:#?}");
        // the objects: the named counter
        assert!(
            items
                .iter()
                .any(|i| i["counter"]["name"] == "synflood_drops")
        );

        // a flushed set is noticed by upkeep and restored
        let out = std::process::Command::new("nft")
            .args(["flush", "set", "inet", "wispd", "blacklist4"])
            .output()
            .expect("nft");
        assert!(out.status.success());
        assert!(!ruleset().contains("192.0.2.7"));
        let up = fw.tick().expect("tick");
        assert!(
            up.repaired
                .as_deref()
                .is_some_and(|r| r.contains("blacklist4")),
            "{up:?}"
        );
        assert!(ruleset().contains("192.0.2.7"));
        // and a quiet table is left alone
        assert_eq!(fw.tick().expect("tick").repaired, None);

        // a change that keeps the table's sets rebuilds the chains alone: what the packet path
        // put in a dynamic set is still there, and nft still counts what the engine counts
        let out = std::process::Command::new("nft")
            .args([
                "add",
                "element",
                "inet",
                "wispd",
                "pfb4_tcp80",
                "{ 198.51.100.9 timeout 60s }",
            ])
            .output()
            .expect("nft");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lfd: std::collections::BTreeMap<String, String> = [
            ("LF_IMAPD".to_string(), "7".to_string()),
            ("SYNFLOOD_RATE".to_string(), "50/s".to_string()),
        ]
        .into_iter()
        .collect();
        fw.update_settings(lfd, crate::Origin::default())
            .expect("settings");
        let after = ruleset();
        assert!(
            after.contains("198.51.100.9") && after.contains("192.0.2.7"),
            "{after}"
        );
        assert!(after.contains("limit rate over 50/second"), "{after}");
        let rules = nft_json()["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|i| i.get("rule").is_some())
            .count();
        assert_eq!(rules, fw.kernel().rules);
        assert_eq!(fw.tick().expect("tick").repaired, None);
        // one that changes the sets (a PORTFLOOD window) rebuilds it whole
        let pf: std::collections::BTreeMap<String, String> =
            [("PORTFLOOD".to_string(), "80;tcp;20;30".to_string())]
                .into_iter()
                .collect();
        fw.update_settings(pf, crate::Origin::default())
            .expect("settings");
        let after = ruleset();
        assert!(
            !after.contains("198.51.100.9") && after.contains("192.0.2.7"),
            "{after}"
        );
    }
}
