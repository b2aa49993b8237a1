//! Sessions driven over in-memory streams: what a client from a non-loopback address without
//! TLS is offered and refused, a whole session's numbering, stuffing and UPDATE, the maildrop
//! lock, and the idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;
use wispd_store::Store;

use super::session::{self, Session};
use super::{Pop3Settings, Server};
use crate::directory::{Directory, NewAccount};
use crate::login::Logins;
use crate::mailbox::{self, Changes};
use crate::metrics::MailMetrics;

const PASSWORD: &str = "password123";

fn server(name: &str, settings: Pop3Settings) -> (Arc<Server>, Store, u64) {
    let d = std::env::temp_dir().join(format!("wispd-pop3-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    let store = Store::open(&d).expect("store");
    let directory = Directory::new(store.clone());
    let id = directory
        .create_account(NewAccount {
            password_hash: None,
            domain: Some("example.com".into()),
            username: Some("ann".into()),
            password: Some(PASSWORD.into()),
            quota_mb: Some(0),
        })
        .expect("account")
        .id;
    let logins = Logins::with_permits(directory, 1, Duration::from_millis(1)).expect("logins");
    let server = Server::new(
        settings,
        store.clone(),
        Changes::default(),
        None,
        logins,
        CancellationToken::new(),
        MailMetrics::new(),
    );
    (Arc::new(server), store, id)
}

fn peer(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 40000))
}

/// A session on its own task; the test holds the client end.
fn connect(server: &Arc<Server>, from: SocketAddr) -> DuplexStream {
    connect_buffered(server, from, 1 << 20)
}

fn connect_buffered(server: &Arc<Server>, from: SocketAddr, buffer: usize) -> DuplexStream {
    let (client, theirs) = tokio::io::duplex(buffer);
    let server = server.clone();
    tokio::spawn(async move {
        let mut s = Session::new(server, theirs, from, false);
        s.greet();
        let _ = session::run(&mut s).await;
    });
    client
}

/// Sends `input`, then reads until `lines` lines (or the end) have come.
async fn talk(c: &mut DuplexStream, input: &str, lines: usize) -> String {
    c.write_all(input.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.iter().filter(|&&b| b == b'\n').count() < lines {
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).expect("utf-8")
}

#[tokio::test]
async fn plaintext_logins_are_refused_from_a_remote_address_without_tls() {
    let (server, _store, _) = server("remote", Pop3Settings::default());
    let mut c = connect(&server, peer([192, 0, 2, 1]));
    let out = talk(
        &mut c,
        "CAPA\r\nUSER ann@example.com\r\nPASS password123\r\nAUTH PLAIN AGFubkBleGFtcGxlLmNvbQBwYXNzd29yZDEyMw==\r\nAUTH\r\nSTLS\r\nQUIT\r\n",
        17,
    )
    .await;
    assert_eq!(
        out,
        "+OK wispd POP3 ready\r\n\
         +OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION wispd\r\n.\r\n\
         -ERR [SYS/PERM] Plaintext authentication disallowed on non-secure connections: STLS first\r\n\
         -ERR [SYS/PERM] Plaintext authentication disallowed on non-secure connections: STLS first\r\n\
         -ERR [SYS/PERM] Plaintext authentication disallowed on non-secure connections: STLS first\r\n\
         +OK\r\n.\r\n\
         -ERR TLS is not available\r\n\
         +OK wispd POP3 server signing off\r\n"
    );
    // from loopback the same client may log in in plaintext
    let mut c = connect(&server, peer([127, 0, 0, 1]));
    let out = talk(&mut c, "capa\r\n", 11).await;
    assert!(out.contains("\r\nUSER\r\nSASL PLAIN\r\n"), "{out}");
}

#[tokio::test]
async fn a_session_lists_retrieves_stuffed_and_deletes_at_quit_only() {
    let (server, store, id) = server("session", Pop3Settings::default());
    let changes = Changes::default();
    let one = b"Subject: one\r\n\r\n.dot line\r\nbody\r\n";
    let two = b"Subject: two\r\n\r\nl1\r\nl2\r\nl3\r\n";
    for m in [&one[..], &two[..]] {
        mailbox::append(&store, &changes, id, "INBOX", vec![], 0, m).expect("append");
    }
    let (mb, _) = mailbox::snapshot(&store, id, "INBOX")
        .expect("read")
        .expect("inbox");
    let uv = mb.uidvalidity;
    let mut c = connect(&server, peer([127, 0, 0, 1]));
    let out = talk(&mut c, "USER ann@example.com\r\nPASS password123\r\n", 3).await;
    assert!(
        out.ends_with("+OK Logged in, maildrop has 2 messages (61 octets)\r\n"),
        "{out}"
    );
    // pipelined, as RFC 2449 PIPELINING allows
    let out = talk(
        &mut c,
        "STAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nTOP 2 1\r\nLIST 0\r\nRETR 3\r\nDELE 99999999999999999999\r\nDELE -1\r\n",
        21,
    )
    .await;
    assert_eq!(
        out,
        format!(
            "+OK 2 61\r\n\
             +OK 2 messages (61 octets)\r\n1 33\r\n2 28\r\n.\r\n\
             +OK 2 {uv:08x}00000002\r\n\
             +OK 33 octets\r\nSubject: one\r\n\r\n..dot line\r\nbody\r\n.\r\n\
             +OK\r\nSubject: two\r\n\r\nl1\r\n.\r\n\
             -ERR no such message, only 2 messages in maildrop\r\n\
             -ERR no such message, only 2 messages in maildrop\r\n\
             -ERR Number out of range\r\n\
             -ERR Invalid message number\r\n"
        )
    );
    let out = talk(
        &mut c,
        "DELE 2\r\nDELE 2\r\nRETR 2\r\nSTAT\r\nRSET\r\nDELE 2\r\n",
        6,
    )
    .await;
    assert_eq!(
        out,
        "+OK message 2 deleted\r\n-ERR message 2 already deleted\r\n-ERR message 2 already deleted\r\n\
         +OK 1 33\r\n+OK maildrop has 2 messages (61 octets)\r\n+OK message 2 deleted\r\n"
    );
    // a second session on the same maildrop is refused while this one holds it
    let mut other = connect(&server, peer([127, 0, 0, 1]));
    let got = talk(
        &mut other,
        "USER ann@example.com\r\nPASS password123\r\n",
        3,
    )
    .await;
    assert!(
        got.ends_with("-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n"),
        "{got}"
    );
    let out = talk(&mut c, "QUIT\r\n", 1).await;
    assert_eq!(
        out,
        "+OK wispd POP3 server signing off (1 messages left)\r\n"
    );
    let (_, entries) = mailbox::snapshot(&store, id, "INBOX")
        .expect("read")
        .expect("inbox");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].uid, 1);
    assert!(
        entries[0].flags.iter().any(|f| f == "\\Seen"),
        "RETR'd: {:?}",
        entries[0].flags
    );
    // the lock went with the session; a dropped session deletes nothing
    let got = talk(
        &mut other,
        "USER ann@example.com\r\nPASS password123\r\nDELE 1\r\n",
        2,
    )
    .await;
    assert!(got.starts_with("+OK\r\n+OK Logged in"), "{got}");
    assert!(got.ends_with("+OK message 1 deleted\r\n"), "{got}");
    drop(other);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, entries) = mailbox::snapshot(&store, id, "INBOX")
        .expect("read")
        .expect("inbox");
    assert_eq!(entries.len(), 1);
    let mut again = connect(&server, peer([127, 0, 0, 1]));
    let got = talk(
        &mut again,
        "USER ann@example.com\r\nPASS password123\r\n",
        3,
    )
    .await;
    assert!(
        got.ends_with("+OK Logged in, maildrop has 1 messages (33 octets)\r\n"),
        "{got}"
    );
}

#[tokio::test]
async fn bad_commands_before_login_end_the_session_after_ten() {
    let (server, _store, _) = server("bad", Pop3Settings::default());
    let mut c = connect(&server, peer([127, 0, 0, 1]));
    let mut input = String::from("STAT\r\n");
    input.push_str(&"X".repeat(5000));
    input.push_str("\r\nNOOP\r\n");
    for _ in 0..8 {
        input.push_str("BOGUS\r\n");
    }
    input.push_str("CAPA\r\n");
    let out = talk(&mut c, &input, 100).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "-ERR Not logged in: USER/PASS or AUTH first");
    assert_eq!(lines[2], "-ERR line too long");
    assert_eq!(lines[3], "-ERR Not logged in: USER/PASS or AUTH first");
    assert_eq!(lines[4], "-ERR Unknown command: BOGUS");
    assert_eq!(lines.last(), Some(&"-ERR Too many invalid commands"));
    assert_eq!(lines.len(), 12, "{out}");
}

#[tokio::test]
async fn an_idle_client_is_told_and_disconnected() {
    let settings = Pop3Settings {
        idle_timeout: Duration::from_millis(200),
        ..Pop3Settings::default()
    };
    let (server, _store, _) = server("idle", settings);
    let mut c = connect(&server, peer([127, 0, 0, 1]));
    let out = talk(&mut c, "", 2).await;
    assert_eq!(
        out,
        "+OK wispd POP3 ready\r\n-ERR [SYS/TEMP] Disconnected for inactivity\r\n"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_frees_the_maildrop() {
    let settings = Pop3Settings {
        idle_timeout: Duration::from_millis(300),
        ..Pop3Settings::default()
    };
    let (server, store, id) = server("stuck", settings);
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(998)).repeat(1000)
    );
    mailbox::append(
        &store,
        &Changes::default(),
        id,
        "INBOX",
        vec![],
        0,
        big.as_bytes(),
    )
    .expect("append");
    let mut stuck = connect_buffered(&server, peer([127, 0, 0, 1]), 4096);
    let got = talk(
        &mut stuck,
        "USER ann@example.com\r\nPASS password123\r\n",
        3,
    )
    .await;
    assert!(got.contains("+OK Logged in"), "{got}");
    // RETR, DELE, QUIT pipelined, and never read: the RETR can't be written out
    stuck
        .write_all(b"RETR 1\r\nDELE 1\r\nQUIT\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut next = connect(&server, peer([127, 0, 0, 1]));
    let got = talk(&mut next, "USER ann@example.com\r\nPASS password123\r\n", 3).await;
    assert!(
        got.contains("+OK Logged in, maildrop has 1 messages ("),
        "{got}"
    );
    drop(stuck);
}

#[test]
fn the_fuzz_seeds_pass_the_fuzz_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/pop3_codec");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("seeds") {
        super::fuzz_codec(&std::fs::read(e.expect("seed").path()).expect("read"));
        n += 1;
    }
    assert!(n >= 2);
}
