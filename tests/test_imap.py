"""IMAP against the real server: Python's imaplib (and curl's IMAP) over STARTTLS and IMAPS."""

import imaplib
import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from mailutil import Raw, account, installed, message, ports

PASSWORD = "password123"

MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@remote.example>\r\n"
    b"To: info@example.com, Bob <bob@example.org>\r\n"
    b"Subject: =?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n"
    b"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <multi@remote.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Sch=F6ne Gr=FC=DFe\r\n"
    b"--XX\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n"
)


@pytest.fixture
def mail(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    account(w, "other")
    _, imap, imaps = ports(w)
    return w, smtp, imap, imaps


def send(smtp, raw, to="info@example.com"):
    with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as c:
        c.sendmail("a@remote.example", [to], raw)


def tls_context(w):
    return ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))


def login(imap, user="info@example.com"):
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login(user, PASSWORD)
    return m


def test_status_capabilities_starttls_imaps_and_login_failures(mail):
    w, smtp, imap, imaps = mail
    s = w.request("GET", "/api/v1/email/status").json
    assert s["dovecot"] == {"installed": True, "running": True}
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    caps = set(m.capabilities)
    assert {"IMAP4REV1", "STARTTLS", "AUTH=PLAIN", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "ID",
            "ENABLE", "LITERAL+", "UNSELECT", "CHILDREN", "QUOTA"} <= caps, caps
    m.starttls(ssl_context=tls_context(w))
    assert "STARTTLS" not in m.capabilities
    t0 = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("info@example.com", "wrong password")
    assert time.monotonic() - t0 >= 1.0, "a failed login is delayed"
    typ, data = m.login("info@example.com", PASSWORD)
    assert typ == "OK" and b"[CAPABILITY IMAP4rev1" in data[0]
    m.logout()
    s = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=tls_context(w), timeout=15)
    assert s.authenticate("PLAIN", lambda _: f"\0info@example.com\0{PASSWORD}".encode())[0] == "OK"
    assert s.select("INBOX") == ("OK", [b"0"])
    s.logout()
    # a disabled account can't log in
    other = [a for a in w.request("GET", "/api/v1/email/accounts").json["accounts"] if a["username"] == "other"][0]
    w.request("POST", f"/api/v1/email/accounts/{other['id']}/toggle")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(imap, "other@example.com")


def test_split_literals_line_limits_and_bad_commands(mail):
    w, smtp, imap, imaps = mail
    r = Raw(imap)
    greeting = r.sock.recv(4096)
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1"), greeting
    r.send("a1 LOGIN {16}\r\n")
    assert r.sock.recv(4096) == b"+ Ready for literal data\r\n"
    r.send("info@example")
    r.send(".com {11+}\r\npass")
    r.send("word123\r\n")
    data = r.sock.recv(4096)
    assert data.startswith(b"a1 OK [CAPABILITY"), data
    r.send("a2 NOOP " + "x" * 70000 + "\r\na3 FROB\r\na4 NOOP\r\n")
    got = b""
    while b"a4 " not in got:
        got += r.sock.recv(65536)
    assert b"a2 BAD Command line too long\r\n" in got, got
    assert b"a3 BAD " in got and b"a4 OK NOOP completed" in got, got
    r.send("a5 APPEND INBOX {999999999}\r\n")
    assert r.sock.recv(4096).startswith(b"a5 NO [TOOBIG]")
    r.send("a6 FETCH 1 FLAGS\r\n")
    assert r.sock.recv(4096).startswith(b"a6 BAD No mailbox selected")
    r.close()


def test_select_fetch_envelope_bodystructure_sections_and_seen(mail):
    w, smtp, imap, imaps = mail
    send(smtp, MULTIPART)
    m = login(imap)
    typ, data = m.select("INBOX", readonly=True)
    assert (typ, data) == ("OK", [b"1"])
    typ, data = m.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    head = data[0] if isinstance(data[0], bytes) else data[0][0]
    text = head.decode()
    assert "UID 1 FLAGS (\\Recent)" in text, text  # EXAMINE sees it recent, claims nothing
    assert 'ENVELOPE ("Sun, 22 Nov 2026 10:00:00 +0000" "=?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?="' in text, text
    assert '(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "remote.example"))' in text, text  # encoded words untouched
    assert '((NIL NIL "info" "example.com")("Bob" NIL "bob" "example.org"))' in text, text
    assert '"<multi@remote.example>")' in text
    assert ('BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "iso-8859-1") NIL NIL "QUOTED-PRINTABLE" 18 1 NIL NIL NIL NIL)'
            '("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 8 NIL ("attachment" ("FILENAME" "a.pdf")) NIL NIL)'
            ' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)') in text, text
    typ, data = m.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[]<0.4>)")
    parts = {p[0].decode(): p[1] for p in data if isinstance(p, tuple)}
    values = list(parts.values())
    assert values[0] == b"Sch=F6ne Gr=FC=DFe"
    assert values[1] == b"JVBERi0="
    assert values[2].startswith(b"Content-Type: text/plain; charset=iso-8859-1\r\n")
    assert values[3] == b"Subject: =?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n\r\n"
    assert values[4] == b"Retu"
    assert any("BODY[]<0>" in k for k in parts)
    # EXAMINE is read-only: fetching a body doesn't set \Seen
    assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]
    m.select("INBOX")  # read-write: this session claims the message as \Recent
    typ, data = m.fetch("1", "(BODY[TEXT])")
    assert b"FLAGS (\\Seen \\Recent)" in b"".join(x if isinstance(x, bytes) else x[0] for x in data)
    assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Seen \\Recent))"]
    typ, data = m.fetch("1", "RFC822.HEADER")
    assert data[0][1].startswith(b"Return-Path: <a@remote.example>\r\nReceived: from ")
    m.logout()


def test_search_store_copy_move_append_expunge(mail):
    w, smtp, imap, imaps = mail
    send(smtp, MULTIPART)
    send(smtp, message("plain one", body="the quick brown fox\r\n"))
    send(smtp, message("plain two", body="lazy dog\r\n", size=5000))
    m = login(imap)
    m.select("INBOX")
    assert m.search(None, "ALL") == ("OK", [b"1 2 3"])
    m.literal = "Grüße".encode()
    assert m.search("UTF-8", "SUBJECT") == ("OK", [b"1"])
    m.literal = "Schöne".encode()
    assert m.search("UTF-8", "BODY") == ("OK", [b"1"])
    assert m.search(None, "BODY", "fox") == ("OK", [b"2"])
    assert m.search(None, "TEXT", "lazy") == ("OK", [b"3"])
    assert m.search(None, "FROM", "jorg") == ("OK", [b"1"])
    assert m.search(None, "LARGER", "4000") == ("OK", [b"3"])
    assert m.search(None, "OR", "SUBJECT", "one", "SUBJECT", "two") == ("OK", [b"2 3"])
    assert m.search(None, "SENTON", "22-Nov-2026") == ("OK", [b"1"])
    assert m.search("ISO-8859-1", "ALL")[0] == "NO"
    assert m.uid("SEARCH", None, "UID", "2:*") == ("OK", [b"2 3"])
    # this session was the first to see message 2: \Recent in its eyes (RFC 3501 2.3.2)
    assert m.store("2", "+FLAGS", "(\\Flagged $Important)") == ("OK", [b"2 (FLAGS (\\Flagged $Important \\Recent))"])
    assert m.search(None, "FLAGGED") == ("OK", [b"2"])
    assert m.search(None, "KEYWORD", "$Important") == ("OK", [b"2"])
    assert m.search(None, "UNFLAGGED") == ("OK", [b"1 3"])
    assert m.store("2", "-FLAGS.SILENT", "(\\Flagged)") == ("OK", [None])
    assert m.create("Projects/2026")[0] == "OK"
    assert m.create("Projects/2026")[0] == "NO"
    typ, data = m.copy("1:2", "Projects/2026")
    assert typ == "OK" and b"[COPYUID " in data[0] and data[0].split()[2:4] == [b"1:2", b"1:2]"], data
    assert m.copy("1", "Nope")[1][0].startswith(b"[TRYCREATE]")
    typ, data = m.uid("MOVE", "3", "Projects/2026")
    assert typ == "OK", data
    assert m.untagged_responses.pop("EXPUNGE") == [b"3"]
    typ, data = m.append("Drafts", "(\\Draft)", imaplib.Time2Internaldate(time.time()), b"Subject: draft\r\n\r\nbody\r\n")
    assert typ == "OK" and data[0].startswith(b"[APPENDUID ") and data[0].split()[2] == b"1]", data
    assert m.status("Projects/2026", "(MESSAGES UIDNEXT UNSEEN)") == (
        "OK", [b'Projects/2026 (MESSAGES 3 UIDNEXT 4 UNSEEN 3)'])
    m.store("1", "+FLAGS", "(\\Deleted)")
    assert m.expunge() == ("OK", [b"1"])
    assert m.search(None, "ALL") == ("OK", [b"1"])
    m.select("Projects/2026")
    m.store("1:3", "+FLAGS", "(\\Deleted)")
    assert m.uid("EXPUNGE", "2")[0] == "OK"
    assert m.untagged_responses.pop("EXPUNGE") == [b"2"], "only UID 2 of the three \\Deleted"
    assert m.search(None, "ALL") == ("OK", [b"1 2"])
    assert m.close()[0] == "OK"
    assert m.select("Projects/2026") == ("OK", [b"0"])
    m.unselect()
    assert m.rename("Projects", "Archive")[0] == "OK"
    names = [l.decode() for l in m.list('""', "*")[1]]
    assert '(\\Noselect \\HasChildren) "/" Archive' in names and '(\\HasNoChildren) "/" Archive/2026' in names, names
    assert '(\\HasNoChildren \\Sent) "/" Sent' in names
    assert m.list('""', "%")[1].count(b'(\\Noselect \\HasChildren) "/" Archive') == 1
    assert m.subscribe("Archive/2026")[0] == "OK"
    assert b'"/" Archive/2026' in b" ".join(m.lsub('""', "*")[1])
    assert m.delete("Archive/2026")[0] == "OK"
    assert m.delete("INBOX")[0] == "NO"
    assert m.getquotaroot("INBOX")[1][1] == [b'"" ()']
    m.logout()


def test_idle_and_a_second_session_see_deliveries_flags_and_expunges(mail):
    w, smtp, imap, imaps = mail
    send(smtp, message("first"))
    a, b = login(imap), login(imap)
    a.select("INBOX")
    b.select("INBOX")
    raw = b.socket()
    tag = b._new_tag().decode()
    b.send(f"{tag} IDLE\r\n".encode())
    assert b.readline().startswith(b"+ ")
    send(smtp, message("second"))
    raw.settimeout(10)
    assert b.readline() == b"* 2 EXISTS\r\n"
    # b, idling, is the first session to see message 2: it's recent to b
    assert b.readline() == b"* 1 RECENT\r\n"
    a.store("1", "+FLAGS", "(\\Seen)")
    assert b.readline() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
    b.send(b"DONE\r\n")
    assert b.readline() == f"{tag} OK Idle completed\r\n".encode()
    a.store("1", "+FLAGS", "(\\Deleted)")
    a.expunge()
    typ, _ = b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"1"], b.untagged_responses
    assert b.search(None, "ALL") == ("OK", [b"1"])
    assert b.fetch("1", "(UID)")[1] == [b"1 (UID 2)"]
    a.logout()
    b.logout()


def test_users_only_reach_their_own_mail(mail):
    w, smtp, imap, imaps = mail
    send(smtp, message("for info"))
    send(smtp, message("for other"), to="other@example.com")
    o = login(imap, "other@example.com")
    o.select("INBOX")
    typ, data = o.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert [d[1] for d in data if isinstance(d, tuple)] == [b"Subject: for other\r\n\r\n"]
    assert o.uid("FETCH", "1:100", "(UID)") == ("OK", [b"1 (UID 1)"])
    assert o.select("info@example.com/INBOX")[0] == "NO"
    assert o.status("info@example.com/INBOX", "(MESSAGES)")[0] == "NO"
    o.logout()


def test_curl_reads_over_imap_and_imaps(mail):
    w, smtp, imap, imaps = mail
    send(smtp, message("via curl", body="curl body\r\n"))
    out = subprocess.run(["curl", "-sS", "-u", f"info@example.com:{PASSWORD}", f"imap://127.0.0.1:{imap}/INBOX;UID=1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "Subject: via curl" in out.stdout and "curl body" in out.stdout, out
    out = subprocess.run(["curl", "-sS", "--cacert", str(w.data_dir / "tls" / "cert.pem"), "-u",
                          f"info@example.com:{PASSWORD}", f"imaps://localhost:{imaps}/", "-X", "LIST \"\" *"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and '"/" INBOX' in out.stdout, out


def test_idle_timeout_says_bye(make_wispd):
    w, smtp = installed(make_wispd, imap={"idle_timeout_seconds": 1})
    _, imap, _ = ports(w)
    r = Raw(imap)
    r.sock.settimeout(10)
    got = b""
    while b"BYE" not in got:
        chunk = r.sock.recv(4096)
        if not chunk:
            break
        got += chunk
    assert b"* BYE Disconnected for inactivity\r\n" in got, got


def rss_peak_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_a_10000_message_mailbox_is_fetched_without_loading_it_all(mail):
    w, smtp, imap, imaps = mail
    body = message("bulk", size=5000)

    def sender(n):
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as c:
            for _ in range(n):
                c.sendmail("a@remote.example", ["info@example.com"], body)

    threads = [threading.Thread(target=sender, args=(1250,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = login(imap)
    assert m.select("INBOX") == ("OK", [b"10000"])
    before = rss_peak_kib(w.proc.pid)
    typ, data = m.fetch("1:*", "(UID RFC822.SIZE FLAGS)")
    assert typ == "OK" and len(data) == 10000
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    bodies = [d for d in data if isinstance(d, tuple)]
    assert len(bodies) == 10000 and all(len(b[1]) > 5000 for b in bodies)
    grown = rss_peak_kib(w.proc.pid) - before
    # ~52 MB of messages went out; the server held about one at a time
    assert grown < 20_000, f"peak RSS grew {grown} KiB"
    m.logout()


def test_plaintext_login_needs_tls_from_a_remote_address(make_wispd):
    """From another host (a client namespace over veth), LOGIN is refused until STARTTLS."""
    from netns import Pair, sh

    pair = Pair(190 + os.getpid() % 50).create()
    pair.enter()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        w, smtp = installed(make_wispd, imap={"listen": [f"0.0.0.0:{port}"]})
        account(w, "info")
        cafile = str(w.data_dir / "tls" / "cert.pem")
        script = f"""
import imaplib, ssl
m = imaplib.IMAP4("{pair.srv4}", {port}, timeout=10)
print("caps", " ".join(sorted(m.capabilities)))
try:
    m.login("info@example.com", "{PASSWORD}")
    print("login ok")
except imaplib.IMAP4.error as e:
    print("login refused", e)
ctx = ssl.create_default_context(cafile="{cafile}")
ctx.check_hostname = False
m.starttls(ssl_context=ctx)
print("after tls", m.login("info@example.com", "{PASSWORD}")[0])
"""
        out = sh("python3", "-c", script, ns=pair.cli, check=False).stdout
        assert "LOGINDISABLED" in out and "AUTH=PLAIN" not in out.split("\n")[0], out
        assert "login refused" in out and "PRIVACYREQUIRED" in out, out
        assert "after tls OK" in out, out
    finally:
        pair.leave()
        pair.destroy()


def test_condstore_modseq_changedsince_unchangedsince(mail):
    w, smtp, imap, imaps = mail
    send(smtp, message("one"))
    send(smtp, message("two"))
    m = login(imap)
    assert "CONDSTORE" in m.capabilities
    typ, data = m._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK" and m.untagged_responses.pop("ENABLED") == [b"CONDSTORE"]
    m.select("INBOX")
    start = int(m.untagged_responses.pop("HIGHESTMODSEQ")[0])
    typ, data = m.fetch("1:*", "(FLAGS MODSEQ)")
    modseqs = [int(d.split(b"MODSEQ (")[1].split(b")")[0]) for d in data]
    assert len(modseqs) == 2 and max(modseqs) <= start, data
    typ, data = m.store("1", "+FLAGS", "(\\Seen)")
    assert b"MODSEQ (" in data[0], data
    after = int(data[0].split(b"MODSEQ (")[1].split(b")")[0])
    assert after > start
    typ, data = m._simple_command("FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {start})")
    assert m.untagged_responses.pop("FETCH") == [f"1 (FLAGS (\\Seen \\Recent) MODSEQ ({after}))".encode()]
    typ, data = m._simple_command("STORE", "1:2", f"(UNCHANGEDSINCE {start})", "+FLAGS", "(\\Flagged)")
    assert typ == "OK" and data == [b"[MODIFIED 1] Conditional STORE failed"], data
    fetched = m.untagged_responses.pop("FETCH")
    assert len(fetched) == 1 and fetched[0].startswith(b"2 (FLAGS (\\Flagged \\Recent) MODSEQ ("), fetched
    typ, data = m.search(None, "MODSEQ", str(after))
    assert typ == "OK" and data[0].startswith(b"1 2 (MODSEQ "), data
    assert int(data[0].split(b"MODSEQ ")[1].rstrip(b")")) > after
    typ, data = m.status("INBOX", "(HIGHESTMODSEQ)")
    assert typ == "OK" and b"HIGHESTMODSEQ " in data[0]
    m.logout()


def test_hostile_input_gets_answers_not_a_hung_or_crashed_server(mail):
    """Regressions from review: an 8-bit atom before '(' looped forever; deep MIME nesting
    overflowed the stack in BODYSTRUCTURE; big literals were accepted before login."""
    w, smtp, imap, imaps = mail
    r = Raw(imap)
    r.sock.recv(4096)
    r.send("a1 LOGIN \xfc (\r\n".encode("latin-1"))
    r.send("a2 NOOP\r\n")
    got = b""
    while b"a2 " not in got:
        got += r.sock.recv(4096)
    assert b"a1 BAD" in got and b"a2 OK" in got, got
    r.send("a3 LOGIN {100000}\r\n")
    assert r.sock.recv(4096).startswith(b"a3 NO [TOOBIG]"), "only small literals before login"
    r.close()
    depth = 3000
    nested = b"Subject: deep\r\nMIME-Version: 1.0\r\n" + b"".join(
        b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    ) + b"Content-Type: text/plain\r\n\r\nbottom\r\n"
    send(smtp, nested)
    m = login(imap)
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODYSTRUCTURE BODY.PEEK[1])")
    assert typ == "OK"
    assert m.noop()[0] == "OK", "the server is still there"
    m.logout()


def test_copy_by_sequence_number_uses_the_clients_numbers(mail):
    """Regression from review: another session's EXPUNGE was applied before COPY/MOVE read
    the client's sequence numbers, so the wrong message was copied."""
    w, smtp, imap, imaps = mail
    for i in range(1, 5):
        send(smtp, message(f"m{i}"))
    a, b = login(imap), login(imap)
    a.select("INBOX")
    b.select("INBOX")
    b.store("2", "+FLAGS", "(\\Deleted)")
    b.expunge()
    assert a.copy("3", "Trash")[0] == "OK"  # message 3 in a's view is still "m3"
    assert a.untagged_responses.get("EXPUNGE") is None
    a.select("Trash")
    typ, data = a.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: m3\r\n\r\n"
    a.logout()
    b.logout()


def test_rename_refuses_to_overwrite_a_childs_new_name(mail):
    w, smtp, imap, imaps = mail
    m = login(imap)
    for name in ("a", "a/x", "b/x"):
        assert m.create(name)[0] == "OK"
    m.append("b/x", None, None, b"Subject: keep me\r\n\r\nx\r\n")
    typ, data = m.rename("a", "b")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0], data
    assert m.select("b/x") == ("OK", [b"1"])
    assert m.select("a/x") == ("OK", [b"0"])
    m.logout()
