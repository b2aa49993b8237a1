"""SMTP MX inbound against the real server: Python's smtplib, curl's SMTP and a raw socket."""

import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from mailutil import Raw, account, installed, mail_config, message, smtp_port, stored


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


STATUS_KEYS = {"installed", "mta_installed", "mta_path", "postfix", "dovecot", "dovecot_installed",
               "dovecot_running", "clamav_installed", "clamav_running"}


def test_install_starts_the_listener_and_survives_restart(make_wispd):
    port = free_port()
    w = make_wispd(config=mail_config(smtp=f"127.0.0.1:{port}"))
    s = w.request("GET", "/api/v1/email/status")
    assert s.status == 200 and set(s.json) == STATUS_KEYS, s
    assert (s.json["installed"], s.json["mta_installed"], s.json["mta_path"]) == (False, False, "")
    assert s.json["postfix"] == {"installed": False, "running": False}
    assert s.json["dovecot"] == {"installed": False, "running": False}
    assert refused(port), "no mail port listens before install"
    user = w.request("POST", "/api/v1/tokens", body={"name": "u", "role": "user", "domains": ["example.com"]})
    r = w.request("POST", "/api/v1/email/install", token=user.json["data"]["token"])
    assert r.status == 403, r
    assert refused(port)
    for _ in range(2):  # idempotent
        r = w.request("POST", "/api/v1/email/install")
        assert r.status == 200 and r.json["success"] is True, r
    s = w.request("GET", "/api/v1/email/status").json
    assert s["installed"] and s["mta_installed"] and s["postfix"] == {"installed": True, "running": True}
    assert s["mta_path"].endswith("/wispd")
    assert s["dovecot"] == {"installed": True, "running": True}
    assert (s["dovecot_installed"], s["dovecot_running"]) == (True, True)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        assert c.noop()[0] == 250
    assert w.stop()[0] == 0
    w.start()
    assert w.request("GET", "/api/v1/email/status").json["postfix"]["running"] is True
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        assert c.ehlo("client.example")[0] == 250


def test_install_with_a_busy_port_says_why_and_installs_nothing(make_wispd):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    w = make_wispd(config=mail_config(smtp=f"127.0.0.1:{port}"))
    r = w.request("POST", "/api/v1/email/install")
    assert r.status == 503 and r.json["code"] == "UNAVAILABLE", r
    assert f"127.0.0.1:{port} (smtp.listen)" in r.json["message"]
    assert w.request("GET", "/api/v1/email/status").json["installed"] is False
    busy.close()
    assert w.request("POST", "/api/v1/email/install").status == 200


@pytest.fixture
def mx(make_wispd):
    w, port = installed(make_wispd)
    account(w, "info")
    return w, port


def test_ehlo_advertises_the_extensions_and_helo_is_plain(mx):
    w, port = mx
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        code, text = c.ehlo("client.example")
        assert code == 250
        lines = text.decode().split("\n")
        assert lines[0] == "mx.test.example Hello [127.0.0.1]"
        assert lines[1:] == ["PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                             "CHUNKING", "STARTTLS"]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        assert c.helo("client.example") == (250, b"mx.test.example")


def test_delivery_replies_and_stored_headers(mx):
    w, port = mx
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        assert c.docmd("MAIL FROM:<a@remote.example>") == (503, b"5.5.1 Send HELO/EHLO first")
        c.ehlo("client.example")
        assert c.rcpt("info@example.com") == (503, b"5.5.1 Need MAIL command first")
        assert c.docmd("DATA") == (503, b"5.5.1 Need MAIL command first")
        assert c.mail("a@remote.example") == (250, b"2.1.0 Ok")
        assert c.mail("b@remote.example") == (503, b"5.5.1 Nested MAIL command")
        assert c.docmd("DATA") == (554, b"5.5.1 No valid recipients")
        assert c.rcpt("nobody@example.com") == (550, b"5.1.1 <nobody@example.com>: Recipient address rejected: User unknown")
        assert c.rcpt("someone@elsewhere.example") == (554, b"5.7.1 <someone@elsewhere.example>: Relay access denied")
        assert c.docmd("RCPT TO:<no at sign>")[0] == 501
        assert c.rcpt("Info@EXAMPLE.com") == (250, b"2.1.5 Ok")
        code, text = c.data(message("first", body="line\r\n.leading dot\r\n", msgid="m1@remote.example"))
        assert code == 250 and text.startswith(b"2.0.0 Ok: stored as "), text
        queue_id = text.decode().rsplit(" ", 1)[1]
        assert c.verify("info") == (252, b"2.0.0 Cannot VRFY user, but will accept message and attempt delivery")
        assert c.noop() == (250, b"2.0.0 Ok")
        assert c.rset() == (250, b"2.0.0 Ok")
        # the null sender (bounces) is accepted
        assert c.mail("<>") == (250, b"2.1.0 Ok")
        assert c.rcpt("info+tag@example.com") == (250, b"2.1.5 Ok")
        assert c.data(message("bounce"))[0] == 250
        assert c.docmd("EXPN", "info") == (502, b"5.5.1 EXPN is not available")
        assert c.docmd("ETRN", "example.com") == (502, b"5.5.1 ETRN is not offered on this server")
        assert c.docmd("FROB") == (500, b"5.5.2 Command unrecognized")
        assert c.docmd("AUTH PLAIN AGJvYgBwdw==")[0] == 503
    assert w.stop()[0] == 0
    msgs = stored(w, "info@example.com", raw=True)
    assert [m["subject"] for m in msgs] == ["first", "bounce"]
    assert [(m["mailbox"], m["uid"]) for m in msgs] == [("INBOX", 1), ("INBOX", 2)]
    raw = msgs[0]["raw"]
    assert raw.startswith("Return-Path: <a@remote.example>\r\nReceived: from client.example (unknown [127.0.0.1])\r\n"
                          f"\tby mx.test.example (wispd) with ESMTP id {queue_id}\r\n\tfor <Info@EXAMPLE.com>; "), raw
    assert "\r\n.leading dot\r\n" in raw and raw.endswith("line\r\n.leading dot\r\n")
    assert msgs[1]["raw"].startswith("Return-Path: <>\r\n")
    assert msgs[0]["size"] == len(raw.encode())


def test_starttls_then_delivery_records_tls_and_drops_pipelined_plaintext(mx):
    w, port = mx
    cafile = str(w.data_dir / "tls" / "cert.pem")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.example")
        assert c.starttls(context=ssl.create_default_context(cafile=cafile))[0] == 220
        code, text = c.ehlo("client.example")
        assert b"STARTTLS" not in text and b"CHUNKING" in text
        assert c.docmd("STARTTLS") == (503, b"5.5.1 TLS is already active")
        c.sendmail("a@remote.example", ["info@example.com"], message("over tls"))
    # RFC 3207: commands pipelined after STARTTLS in clear must not be executed
    r = Raw(port)
    assert r.reply()[0] == 220
    r.cmd("EHLO client.example")
    r.send("STARTTLS\r\nMAIL FROM:<injected@remote.example>\r\n")
    assert r.reply() == (220, ["2.0.0 Ready to start TLS"])
    r.tls(cafile)
    assert r.cmd("EHLO client.example")[0] == 250
    assert r.cmd("RCPT TO:<info@example.com>") == (503, ["5.5.1 Need MAIL command first"]), "injected MAIL ran"
    r.close()
    assert w.stop()[0] == 0
    raw = stored(w, "info@example.com", raw=True)[0]["raw"]
    assert "with ESMTPS id" in raw and "\t(using TLSv1.3 with cipher TLS13_" in raw, raw


def test_curl_sends_over_smtp_and_starttls(mx, tmp_path):
    w, port = mx
    f = tmp_path / "mail.txt"
    f.write_bytes(message("from curl"))
    base = ["curl", "-sS", "--mail-from", "a@remote.example", "--mail-rcpt", "info@example.com", "-T", str(f)]
    out = subprocess.run(base + [f"smtp://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(base + ["--ssl-reqd", "--cacert", str(w.data_dir / "tls" / "cert.pem"),
                                 f"smtp://localhost:{port}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["curl", "-sS", "--mail-from", "a@remote.example", "--mail-rcpt", "nobody@example.com",
                          "-T", str(f), f"smtp://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "550" in out.stderr, out.stderr
    assert w.stop()[0] == 0
    assert [m["subject"] for m in stored(w, "info@example.com")] == ["from curl", "from curl"]


def test_forwarders_catchall_and_disabled_accounts(mx):
    w, port = mx
    sales = account(w, "sales")
    off = account(w, "off")
    assert w.request("POST", "/api/v1/email/forwarders",
                     body={"source": "team@example.com", "destination": "info@example.com"}).status == 201
    assert w.request("POST", "/api/v1/email/forwarders",
                     body={"source": "team@example.com", "destination": "sales@example.com"}).status == 201
    # an account that also forwards keeps its own copy
    assert w.request("POST", "/api/v1/email/forwarders",
                     body={"source": "sales@example.com", "destination": "info@example.com"}).status == 201
    assert w.request("POST", f"/api/v1/email/accounts/{off['id']}/toggle").json["data"]["enabled"] is False
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.example")
        c.mail("a@remote.example")
        assert c.rcpt("off@example.com") == (550, b"5.2.1 <off@example.com>: Mailbox disabled")
        assert c.rcpt("stranger@example.com")[0] == 550
        assert c.rcpt("team@example.com")[0] == 250
        assert c.rcpt("info@example.com")[0] == 250  # already reached through team: stored once
        assert c.data(message("to the team"))[0] == 250
        assert c.sendmail("a@remote.example", ["sales@example.com"], message("to sales")) == {}
    r = w.request("PUT", "/api/v1/email/catchall/example.com", body={"enabled": True, "destination": "sales@example.com"})
    assert r.status == 200, r
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        assert c.sendmail("a@remote.example", ["stranger@example.com"], message("caught")) == {}
        c.ehlo("client.example")
        c.mail("a@remote.example")
        assert c.rcpt("off@example.com")[0] == 550, "a disabled account is not swallowed by the catch-all"
    assert w.stop()[0] == 0
    assert [m["subject"] for m in stored(w, "info@example.com")] == ["to the team", "to sales"]
    assert [m["subject"] for m in stored(w, "sales@example.com")] == ["to the team", "to sales", "caught"]
    assert stored(w, "off@example.com") == []
    assert sales["id"] != off["id"]


def test_quota_full_at_rcpt_and_message_too_big_for_it_at_data(mx):
    w, port = mx
    a = account(w, "small", quota_mb=1)
    limit = 1 << 20
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example")  # the same Received: header for every message
        first = message("first", size=600_000)
        assert c.sendmail("a@remote.example", ["small@example.com"], first) == {}
        used = w.request("GET", f"/api/v1/email/accounts/{a['id']}").json["data"]["used_bytes"]
        overhead = used - len(first)
        c.ehlo("client.example")
        c.mail("a@remote.example")
        assert c.rcpt("small@example.com")[0] == 250
        assert c.data(message("too big for the rest", size=600_000)) == (
            552, b"5.2.2 Mailbox full: the message does not fit in the recipient's quota")
        # fill the quota to the byte: the next RCPT is refused as full
        assert c.sendmail("a@remote.example", ["small@example.com"],
                          message("filler", size=limit - used - overhead)) == {}
        assert w.request("GET", f"/api/v1/email/accounts/{a['id']}").json["data"]["used_bytes"] == limit
        c.mail("a@remote.example")
        assert c.rcpt("small@example.com") == (452, b"4.2.2 <small@example.com>: Mailbox full")
        assert c.rcpt("info@example.com")[0] == 250, "others still receive"


def test_limits_size_recipients_line_length_and_errors(make_wispd):
    w, port = installed(make_wispd, max_message_size=100_000, max_recipients=3)
    for u in ("a", "b", "c", "d"):
        account(w, u)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        code, text = c.ehlo("client.example")
        assert b"SIZE 100000" in text
        assert c.docmd("MAIL FROM:<a@remote.example> SIZE=200000") == (
            552, b"5.3.4 Message size exceeds fixed limit of 100000 bytes")
        c.mail("a@remote.example")
        for u in ("a", "b", "c"):
            assert c.rcpt(f"{u}@example.com")[0] == 250
        assert c.rcpt("d@example.com") == (452, b"4.5.3 Too many recipients")
        assert c.data(message("huge", size=300_000)) == (552, b"5.3.4 Message size exceeds fixed limit of 100000 bytes")
        assert c.noop()[0] == 250, "the session goes on after an oversize message"
        assert c.docmd("NOOP " + "x" * 5000) == (500, b"5.5.0 Line too long")
        assert c.noop()[0] == 250, "and after an overlong line"
    r = Raw(port)
    r.reply()
    for i in range(19):
        assert r.cmd(f"BOGUS{i}")[0] == 500
    assert r.cmd("BOGUS") == (500, ["5.5.2 Command unrecognized"])
    assert r.reply() == (421, ["4.7.0 Too many errors, closing connection"])
    assert r.closed()


def test_pipelining_bdat_and_smuggled_end_of_data(mx):
    w, port = mx
    r = Raw(port)
    r.reply()
    r.send("EHLO client.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<info@example.com>\r\n"
           "RCPT TO:<nobody@example.com>\r\nDATA\r\n")
    assert r.reply()[0] == 250
    assert r.reply() == (250, ["2.1.0 Ok"])
    assert r.reply() == (250, ["2.1.5 Ok"])
    assert r.reply()[0] == 550
    assert r.reply() == (354, ["End data with <CR><LF>.<CR><LF>"])
    # a bare-LF dot line is not the end of the message (no SMTP smuggling)
    r.send("Subject: smuggle\r\n\r\nbody\n.\nMAIL FROM:<evil@remote.example>\r\n.\r\nNOOP\r\n")
    code, lines = r.reply()
    assert code == 250 and lines[0].startswith("2.0.0 Ok: stored as"), lines
    assert r.reply() == (250, ["2.0.0 Ok"])
    # BDAT without a transaction: the chunk is read and skipped, then refused; stream stays in sync
    r.send("BDAT 10 LAST\r\nNOOP\r\nXXXXNOOP\r\n")
    assert r.reply() == (503, ["5.5.1 Need MAIL command first"])
    assert r.reply() == (250, ["2.0.0 Ok"])
    r.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<info@example.com>\r\n")
    r.reply(), r.reply()
    body = b"Subject: chunked\r\n\r\nin two chunks\r\n"
    r.send(b"BDAT 10\r\n" + body[:10])
    assert r.reply() == (250, ["2.0.0 10 octets received"])
    assert r.cmd("DATA") == (503, ["5.5.1 DATA after BDAT"])
    r.send(b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
    code, lines = r.reply()
    assert code == 250 and lines[0].startswith("2.0.0 Ok: stored as"), lines
    # BDAT 0 LAST closes a message without waiting for bytes (it used to hang)
    r.send("MAIL FROM:<a@remote.example>\r\nRCPT TO:<info@example.com>\r\n")
    r.reply(), r.reply()
    tail = b"Subject: zero\r\n\r\nended by BDAT 0\r\n"
    r.send(b"BDAT %d\r\n" % len(tail) + tail + b"BDAT 0 LAST\r\n")
    assert r.reply()[0] == 250
    code, lines = r.reply()
    assert code == 250 and lines[0].startswith("2.0.0 Ok: stored as"), lines
    assert r.cmd("QUIT") == (221, ["2.0.0 Bye"])
    assert r.closed()
    assert w.stop()[0] == 0
    msgs = stored(w, "info@example.com", raw=True)
    assert [m["subject"] for m in msgs] == ["smuggle", "chunked", "zero"]
    assert msgs[0]["raw"].endswith("body\n.\nMAIL FROM:<evil@remote.example>\r\n")
    assert msgs[1]["raw"].endswith("\r\n\r\nin two chunks\r\n")


def test_idle_timeout_and_connections_per_address(make_wispd):
    w, port = installed(make_wispd, idle_timeout_seconds=1, max_connections_per_ip=2)
    a, b = Raw(port), Raw(port)
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    c = Raw(port)
    assert c.reply() == (421, ["4.7.0 Too many connections from your address, try again later"])
    assert c.closed()
    t0 = time.monotonic()
    assert a.reply() == (421, ["4.4.2 Timeout exceeded, closing connection"])
    assert time.monotonic() - t0 < 5
    assert a.closed() and b.closed()
    d = Raw(port)
    assert d.reply()[0] == 220, "slots are freed when sessions end"


def test_shutdown_answers_421_and_exits(mx):
    w, port = mx
    r = Raw(port)
    r.reply()
    r.cmd("EHLO client.example")
    assert w.stop()[0] == 0
    assert r.reply() == (421, ["4.3.2 Server shutting down"])


def test_kill_9_under_load_loses_no_acknowledged_message(mx):
    w, port = mx
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def sender(n):
        i = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                    while not stop.is_set():
                        mid = f"{n}.{i}@load.example"
                        i += 1
                        c.sendmail("a@remote.example", ["info@example.com"], message("load", msgid=mid, size=4000))
                        with lock:
                            acked.append(f"<{mid}>")
            except (smtplib.SMTPException, OSError):
                return

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.proc.kill()  # SIGKILL in the middle of the load
    w.proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    with lock:
        acknowledged = set(acked)
    assert len(acknowledged) >= 300
    ids = [m["message_id"] for m in stored(w, "info@example.com")]
    assert acknowledged <= set(ids), f"lost: {sorted(acknowledged - set(ids))[:5]}"
    assert len(ids) == len(set(ids))
    # the store opens and the server serves again
    w.start()
    with smtplib.SMTP("127.0.0.1", smtp_port(w), timeout=10) as c:
        assert c.sendmail("a@remote.example", ["info@example.com"], message("after crash")) == {}
