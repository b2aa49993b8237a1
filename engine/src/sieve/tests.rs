use super::*;
use crate::directory::{Directory, NewAccount};

fn setup(name: &str) -> (Store, Filters, u64) {
    let d = std::env::temp_dir().join(format!("wispd-sieve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    let store = Store::open(&d).expect("store");
    let dir = Directory::new(store.clone());
    let id = dir
        .create_account(NewAccount {
            password_hash: None,
            domain: Some("example.com".into()),
            username: Some("ann".into()),
            password: Some("password1".into()),
            quota_mb: Some(0),
        })
        .expect("account")
        .id;
    let filters = Filters::new(
        store.clone(),
        SieveSettings {
            cpu_limit: 2000,
            ..SieveSettings::default()
        },
    );
    (store, filters, id)
}

const MESSAGE: &str = "Return-Path: <bob@remote.test>\r\nFrom: Bob <bob@remote.test>\r\nTo: ann@example.com\r\nSubject: Quarterly report\r\nMessage-ID: <m1@remote.test>\r\n\r\nThe TPS report is attached.\r\n";

fn plan(filters: &Filters, id: u64, message: &str, from: &str) -> Option<Plan> {
    let parsed = mail_parser::MessageParser::new()
        .parse(message.as_bytes())
        .expect("parse");
    filters.plan(
        id,
        "ann@example.com",
        MailEnvelope {
            from,
            to: "ann+work@example.com",
            spam: crate::spam::SpamLevel::Unknown,
            virus: 0,
        },
        &parsed,
        1_000_000,
    )
}

fn activate(filters: &Filters, id: u64, source: &str) {
    filters
        .put(id, "main", source, Some(true), false)
        .expect("put");
}

#[test]
fn compile_errors_name_line_and_column() {
    let (_s, filters, _) = setup("compile");
    let e = filters
        .compile("require \"fileinto\";\r\nif header :contains \"Subject\" \"x\" {\r\n  fileinto \"A\"\r\n}\r\n")
        .expect_err("missing semicolon");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.to_string().starts_with("line 4, column"), "{e}");
    let e = filters
        .compile("require [\"fileinto\", \"enotify\"];\r\nkeep;\r\n")
        .expect_err("withheld extension");
    assert!(e.message.contains("enotify"), "{e}");
    assert_eq!((e.line, e.column), (1, 22), "{e}");
    assert!(
        filters
            .compile("require \"x-unknown\";\r\nkeep;\r\n")
            .is_err()
    );
    let ext = filters.extensions();
    for e in [
        "fileinto",
        "vacation",
        "imap4flags",
        "editheader",
        "include",
        "regex",
    ] {
        assert!(ext.split(' ').any(|x| x == e), "{e} in {ext}");
    }
    assert!(!ext.contains("enotify"), "{ext}");
}

#[test]
fn no_scripts_means_no_plan_and_an_active_script_is_cached() {
    let (_s, filters, id) = setup("none");
    assert!(plan(&filters, id, MESSAGE, "bob@remote.test").is_none());
    filters
        .put(id, "idle", "discard;", None, false)
        .expect("put inactive");
    assert!(
        plan(&filters, id, MESSAGE, "bob@remote.test").is_none(),
        "inactive scripts don't run"
    );
    filters.set_active(id, Some("idle")).expect("activate");
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert!(p.copies.is_empty(), "discarded");
    filters.set_active(id, None).expect("deactivate");
    assert!(plan(&filters, id, MESSAGE, "bob@remote.test").is_none());
}

#[test]
fn fileinto_flags_and_subaddress() {
    let (_s, filters, id) = setup("fileinto");
    activate(
        &filters,
        id,
        r#"require ["fileinto", "mailbox", "imap4flags", "envelope", "subaddress"];
if envelope :detail "to" "work" {
    addflag "$Work";
    fileinto :create :flags ["\\Flagged", "bad flag", "\\Recent"] "Work/Reports";
}
"#,
    );
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert_eq!(p.copies.len(), 1, "{p:?}");
    let c = &p.copies[0];
    assert_eq!(c.mailbox, "Work/Reports");
    assert!(c.create);
    assert_eq!(c.flags, vec!["\\Flagged".to_string()], "bad flags dropped");
}

#[test]
fn a_failing_script_keeps_the_message_in_inbox_only() {
    let (_s, filters, id) = setup("cpu");
    // Far more tests than the 2,000-instruction budget allows.
    let mut src = String::from("require [\"fileinto\"];\r\n");
    for i in 0..1000 {
        src.push_str(&format!(
            "if header :contains \"X-Nope-{i}\" \"x\" {{ discard; }}\r\n"
        ));
    }
    src.push_str("fileinto \"Never\";\r\n");
    activate(&filters, id, &src);
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert_eq!(p.error.as_deref(), Some("CPU limit reached"));
    assert_eq!(p.copies.len(), 1);
    assert_eq!(p.copies[0].mailbox, "INBOX");
    assert!(p.replies.is_empty());
    // A missing include is an error too.
    activate(
        &filters,
        id,
        "require \"include\";\r\ninclude :personal \"nothere\";\r\ndiscard;\r\n",
    );
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert!(
        p.error.as_deref().is_some_and(|e| e.contains("nothere")),
        "{p:?}"
    );
    assert_eq!(p.copies[0].mailbox, "INBOX");
}

#[test]
fn include_runs_the_accounts_other_script() {
    let (_s, filters, id) = setup("include");
    filters
        .put(
            id,
            "lists",
            "require \"fileinto\";\r\nfileinto \"Lists\";\r\n",
            None,
            false,
        )
        .expect("put");
    activate(
        &filters,
        id,
        "require \"include\";\r\ninclude :personal \"lists\";\r\n",
    );
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert_eq!(p.copies.len(), 1, "{p:?}");
    assert_eq!(p.copies[0].mailbox, "Lists");
}

#[test]
fn redirect_reject_and_editheader() {
    let (_s, filters, id) = setup("actions");
    activate(
        &filters,
        id,
        "require [\"copy\", \"editheader\"];\r\naddheader \"X-Filed\" \"yes\";\r\nredirect :copy \"carol@elsewhere.test\";\r\n",
    );
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert_eq!(p.copies.len(), 1, "kept too (:copy)");
    let edited = p.copies[0].message.expect("edited copy");
    assert!(String::from_utf8_lossy(&p.created[edited]).contains("X-Filed: yes"));
    assert!(
        matches!(&p.replies[..], [Reply::Redirect { to, message: Some(_) }] if to == "carol@elsewhere.test"),
        "{p:?}"
    );
    activate(
        &filters,
        id,
        "require \"reject\";\r\nreject \"Not here\";\r\n",
    );
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert!(p.copies.is_empty());
    assert_eq!(p.reject, Some((false, "Not here".into())));
}

#[test]
fn vacation_replies_once_and_never_to_lists_or_the_null_sender() {
    let (store, filters, id) = setup("vacation");
    activate(
        &filters,
        id,
        "require \"vacation\";\r\nvacation :days 3 :subject \"Away\" :from \"ceo@example.com\" \"Back Monday.\";\r\n",
    );
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert_eq!(p.copies.len(), 1, "implicit keep");
    let [Reply::Vacation { to, message, seen }] = &p.replies[..] else {
        panic!("one vacation reply: {p:?}");
    };
    assert_eq!(to, "bob@remote.test");
    assert_eq!(seen.1, 1_000_000 + 3 * 86_400);
    let reply = String::from_utf8_lossy(&p.created[*message]).into_owned();
    assert!(
        reply.starts_with("From: <ann@example.com>"),
        "not another's address: {reply}"
    );
    assert!(reply.contains("Auto-Submitted: auto-replied"), "{reply}");
    assert!(reply.contains("In-Reply-To: <m1@remote.test>"), "{reply}");
    // Remembered (as the delivery commit does): no second reply within the period.
    store
        .write(|w| {
            w.put(
                &wispd_store::schema::SIEVE_SEEN,
                (id, seen.0.as_str()),
                &seen.1,
            )
        })
        .expect("remember");
    let again = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert!(again.replies.is_empty(), "{again:?}");
    for (headers, from) in [
        ("Precedence: list\r\n", "carol@remote.test"),
        ("Precedence: bulk\r\n", "carol@remote.test"),
        ("List-Id: <x.remote.test>\r\n", "carol@remote.test"),
        ("Auto-Submitted: auto-generated\r\n", "carol@remote.test"),
        ("", ""),
        ("", "mailer-daemon@remote.test"),
        ("", "news-request@remote.test"),
    ] {
        let m = MESSAGE.replacen("Subject:", &format!("{headers}Subject:"), 1);
        let p = plan(&filters, id, &m, from).expect("plan");
        assert!(p.replies.is_empty(), "{headers:?} {from:?}: {p:?}");
    }
    // Not addressed to the account (Bcc to a list it is on): no reply.
    let m = MESSAGE.replace("To: ann@example.com", "To: team@remote.test");
    let p = plan(&filters, id, &m, "dave@remote.test").expect("plan");
    assert!(p.replies.is_empty(), "{p:?}");
}

#[test]
fn the_autoresponder_runs_beside_the_script_within_its_window() {
    let (_s, filters, id) = setup("responder");
    activate(
        &filters,
        id,
        "require \"fileinto\";\r\nfileinto :copy \"Copies\";\r\n"
            .replace(":copy ", "")
            .as_str(),
    );
    let mut a = Autoresponder {
        enabled: true,
        subject: "Out of office \"quoted\"".into(),
        body: "Back soon \\ really.".into(),
        from: String::new(),
        start: Some(900_000),
        end: Some(1_100_000),
        interval_days: 1,
        updated_at: 0,
    };
    filters.set_autoresponder(id, &a).expect("set");
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert_eq!(p.copies.len(), 1);
    assert_eq!(p.copies[0].mailbox, "Copies", "the script still decides");
    let [Reply::Vacation { message, .. }] = &p.replies[..] else {
        panic!("{p:?}");
    };
    let reply = String::from_utf8_lossy(&p.created[*message]).into_owned();
    assert!(
        reply.contains("Subject: Out of office \"quoted\""),
        "{reply}"
    );
    assert!(reply.contains("Back soon \\ really."), "{reply}");
    a.end = Some(950_000);
    filters.set_autoresponder(id, &a).expect("set");
    let p = plan(&filters, id, MESSAGE, "bob@remote.test").expect("plan");
    assert!(p.replies.is_empty(), "outside its window");
}

#[test]
fn script_quota_and_names() {
    let (_s, filters, id) = setup("quota");
    assert!(matches!(
        filters.put(id, "bad/name", "keep;", None, false),
        Err(FilterError::BadName(_))
    ));
    let big = format!("# {}\r\nkeep;\r\n", "x".repeat(70 << 10));
    assert!(matches!(
        filters.put(id, "big", &big, None, false),
        Err(FilterError::TooLarge { .. })
    ));
    filters.put(id, "a", "keep;", Some(true), false).expect("a");
    assert!(matches!(
        filters.put(id, "a", "keep;", None, true),
        Err(FilterError::Exists(_))
    ));
    assert!(matches!(
        filters.delete(id, "a", false),
        Err(FilterError::Active(_))
    ));
    filters.rename(id, "a", "b").expect("rename");
    let s = filters.script(id, "b").expect("read").expect("b");
    assert!(s.active, "rename keeps it active");
    filters.delete(id, "b", true).expect("delete");
    assert!(filters.scripts(id).expect("list").is_empty());
}

#[test]
fn expired_records_are_purged() {
    let (store, filters, id) = setup("purge");
    store
        .write(|w| {
            w.put(&wispd_store::schema::SIEVE_SEEN, (id, "v:old"), &10i64)?;
            w.put(&wispd_store::schema::SIEVE_SEEN, (id, "v:new"), &30i64)
        })
        .expect("write");
    assert_eq!(filters.purge_seen(20).expect("purge"), 1);
    let left = store
        .read(|r| r.len(&wispd_store::schema::SIEVE_SEEN))
        .expect("read");
    assert_eq!(left, 1);
}

#[test]
fn error_positions_are_one_based_and_point_at_the_token() {
    let (_s, filters, _) = setup("positions");
    let e = filters
        .compile("keep;\r\n  foo;\r\n")
        .expect_err("unknown command");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
    assert!(!e.message.contains(" at line "), "location once: {e}");
    let e = filters
        .compile("if header :is \"a\" {")
        .expect_err("missing key");
    assert_eq!((e.line, e.column), (1, 19), "{e}");
}

#[test]
fn a_script_that_panics_the_compiler_is_refused() {
    let (_s, filters, _) = setup("panic");
    // The first find of the sieve_script fuzz target (sieve-rs panics compiling it).
    let src = String::from_utf8_lossy(include_bytes!(
        "../../../fuzz/seeds/sieve_script/compiler-panic"
    ));
    assert!(filters.compile(&src).is_err());
}

#[test]
fn unknown_commands_and_tests_are_refused_when_stored() {
    let (_s, filters, _) = setup("unknown");
    for source in [
        "if foo { keep; }\r\n",
        "frobnicate;\r\n",
        "if header :contains \"Subject\" \"x\" { frobnicate; }\r\n",
    ] {
        let r = filters.compile(source);
        assert!(r.is_err(), "{source:?} compiled");
    }
    let e = filters
        .compile("require \"fileinto\";\r\nif foo { keep; }\r\n")
        .expect_err("unknown test");
    assert_eq!(e.line, 2, "{e}");
    assert!(
        e.to_string().contains("unknown test or command \"foo\""),
        "{e}"
    );
}
