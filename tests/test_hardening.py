"""Regressions for what an outside probe of SMTP, IMAP and submission found (issue 12), each
against the real server with real clients or raw sockets, named after what broke."""

import imaplib
import smtplib
import socket
import ssl
import threading
import time

import pytest

from mailutil import Raw, account, installed, mail_config, ports, stored, submission_ports

PASSWORD = "password123"


def rss_kib(w, field="VmRSS"):
    for line in open(f"/proc/{w.proc.pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def tls_context(w):
    return ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))


@pytest.fixture
def mail(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    account(w, "bob")
    _, imap, imaps = ports(w)
    return w, smtp, imap, imaps


def open_data(smtp, timeout=10):
    """A raw MX session past `DATA 354`, from a@remote.example to info@example.com."""
    r = Raw(smtp, timeout=timeout)
    r.reply()
    assert r.cmd("EHLO client.example")[0] == 250
    assert r.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    assert r.cmd("RCPT TO:<info@example.com>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    return r


def imap_line(sock, buf=b""):
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(buf)
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    return line, rest


def test_failed_login_flood_keeps_memory_bounded(mail):
    """50 parallel IMAP connections failing LOGIN (and a few SMTP AUTH ones) once took the
    server from 75 MB to 7.4 GB: every wrong password ran a 19 MiB Argon2 with no bound."""
    w, _, imap, _ = mail
    sub, _ = submission_ports(w)
    before = rss_kib(w)
    stop = time.monotonic() + 12
    answers = {"imap": 0, "smtp": 0, "busy": 0}
    lock = threading.Lock()

    def imap_guesser(n):
        i = 0
        while time.monotonic() < stop:
            try:
                s = socket.create_connection(("127.0.0.1", imap), timeout=15)
                line, rest = imap_line(s)
                s.sendall(b"a LOGIN info@example.com wrong%d-%d\r\n" % (n, i))
                line, rest = imap_line(s, rest)
                with lock:
                    answers["imap"] += 1
                    answers["busy"] += b"UNAVAILABLE" in line
                assert line.startswith(b"a NO"), line
                s.close()
            except (ConnectionError, socket.timeout):
                pass
            i += 1

    def smtp_guesser(n):
        while time.monotonic() < stop:
            try:
                with smtplib.SMTP("127.0.0.1", sub, timeout=15) as c:
                    c.starttls(context=tls_context(w))
                    with pytest.raises(smtplib.SMTPAuthenticationError):
                        c.login("info@example.com", f"wrong{n}")
                with lock:
                    answers["smtp"] += 1
            except (ConnectionError, socket.timeout, smtplib.SMTPServerDisconnected):
                pass

    threads = [threading.Thread(target=imap_guesser, args=(n,)) for n in range(50)]
    threads += [threading.Thread(target=smtp_guesser, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = rss_kib(w, "VmHWM")
    assert answers["imap"] >= 60, answers
    assert peak < 300 * 1024, f"peak RSS {peak} KiB (before {before} KiB) after {answers}"
    # the owner still gets in (after the delay the failures earned)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=30)
    assert m.login("info@example.com", PASSWORD)[0] == "OK"
    m.logout()


def test_a_correct_password_after_failures_is_delayed_too(mail):
    """Only failures were delayed: a right password after 8 wrong ones answered at once."""
    w, _, imap, _ = mail
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=30)
    for i in range(2):
        with pytest.raises(imaplib.IMAP4.error):
            m.login("info@example.com", f"wrong{i}")
    t0 = time.monotonic()
    m2 = imaplib.IMAP4("127.0.0.1", imap, timeout=30)
    assert m2.login("info@example.com", PASSWORD)[0] == "OK"
    assert time.monotonic() - t0 >= 2.0, "two recent failures hold the next answer two seconds"
    m2.logout()


SMUGGLING = [b"\r\n.\r\r\n", b"\r\r\n.\r\r\n", b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n\x00.\r\n",
             b"\r\n.\r"]


@pytest.mark.parametrize("end", SMUGGLING, ids=[repr(v)[2:-1] for v in SMUGGLING])
def test_smuggled_end_of_data_delivers_no_second_message(mail, end):
    """`\\r\\n.\\r\\r\\n` ended DATA (smtp-proto's parser) and a forged second message was
    delivered with the attacker's envelope."""
    w, smtp, _, _ = mail
    r = Raw(smtp)
    r.reply()
    assert r.cmd("EHLO attacker.example")[0] == 250
    assert r.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    assert r.cmd("RCPT TO:<info@example.com>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    body = (b"Subject: first\r\n\r\nhello" + end +
            b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            b"Subject: forged\r\n\r\nforged\r\n.\r\n")
    # split across reads, with the end-of-data variant cut in the middle
    cut = body.index(end) + 1
    r.send(body[:cut])
    time.sleep(0.05)
    r.send(body[cut:])
    code, lines = r.reply()
    assert code == 250 and lines[0].startswith("2.0.0 Ok: stored as"), lines
    assert r.cmd("QUIT") == (221, ["2.0.0 Bye"])
    assert w.stop()[0] == 0
    assert stored(w, "bob@example.com") == []
    msgs = stored(w, "info@example.com", raw=True)
    assert [m["subject"] for m in msgs] == ["first"]
    assert "MAIL FROM:<ceo@example.com>" in msgs[0]["raw"]


def test_overflowing_numbers_get_501(mail):
    """`BDAT 1844…021 LAST` was read as a 21-byte chunk; `SIZE=999…` parsed as 999."""
    _, smtp, _, _ = mail
    r = Raw(smtp)
    r.reply()
    r.cmd("EHLO client.example")
    assert r.cmd("MAIL FROM:<> SIZE=99999999999999999999999") == (501, ["5.5.4 Number too large"])
    assert r.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    assert r.cmd("RCPT TO:<info@example.com>")[0] == 250
    assert r.cmd("BDAT 184467440737095516160000000021 LAST") == (501, ["5.5.4 Number too large"])
    assert r.cmd("NOOP") == (250, ["2.0.0 Ok"])


def test_unadvertised_parameters_smtputf8_postmaster_and_helo_in_received(mail):
    """postmaster was refused (RFC 5321 §4.5.1 requires it); BINARYMIME and UTF-8 addresses
    without SMTPUTF8 were accepted; the HELO name went raw into Received:."""
    w, smtp, _, _ = mail
    r = Raw(smtp)
    r.reply()
    r.cmd("EHLO evil.example(by-trusted.example);x")
    assert r.cmd("MAIL FROM:<a@remote.example> BODY=BINARYMIME") == (
        555, ["5.5.4 MAIL parameter BODY=BINARYMIME is not supported"])
    assert r.cmd("MAIL FROM:<jörg@remote.example>")[0] == 553
    assert r.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    assert r.cmd("RCPT TO:<jörg@example.com>") == (
        553, ["5.6.7 Non-ASCII recipient address needs the SMTPUTF8 parameter on MAIL"])
    assert r.cmd("RCPT TO:<info@example.com> NOTIFY=SUCCESS") == (
        555, ["5.5.4 RCPT parameter NOTIFY is not supported"])
    assert r.cmd("RCPT TO:<postmaster@example.com>") == (250, ["2.1.5 Ok"])
    assert r.cmd("RCPT TO:<Postmaster>") == (250, ["2.1.5 Ok"])
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: to the postmaster\r\n\r\nhi\r\n.\r\n")
    assert r.reply()[0] == 250
    r.cmd("QUIT")
    assert w.stop()[0] == 0
    msgs = stored(w, "info@example.com", raw=True)
    assert [m["subject"] for m in msgs] == ["to the postmaster"], "the first account gets it, once"
    received = msgs[0]["raw"].split("\r\n\r\n")[0]
    assert "from evil.example?by-trusted.example??x (unknown [127.0.0.1])" in received, received


def test_submission_from_headers_must_all_be_owned(mail):
    """Submission accepted `From: alice, ceo`, two From headers, none, and encoded-word From."""
    w, _, _, _ = mail
    sub, _ = submission_ports(w)
    bad = [
        b"From: info@example.com, bob@example.com\r\n",
        b"From: <info@example.com>, <ceo@elsewhere.example>\r\n",
        b"From: info@example.com\r\nFrom: bob@example.com\r\n",
        b"",
        b"From: =?utf-8?q?bob=40example=2Ecom?=\r\n",
        b"From: info@example.com\r\nSender: bob@example.com\r\n",
    ]
    with smtplib.SMTP("127.0.0.1", sub, timeout=15) as c:
        c.starttls(context=tls_context(w))
        c.login("info@example.com", PASSWORD)
        for head in bad:
            c.mail("info@example.com")
            c.rcpt("bob@example.com")
            code, text = c.data(head + b"To: bob@example.com\r\nSubject: spoof\r\n\r\nx\r\n")
            assert code == 553 and text.startswith(b"5.7.1 "), (head, code, text)
        good = b"From: =?utf-8?q?Inf=C3=B6?= <info@example.com>\r\nTo: bob@example.com\r\nSubject: mine\r\n\r\nx\r\n"
        assert c.sendmail("info@example.com", ["bob@example.com"], good) == {}
    assert w.stop()[0] == 0
    assert [m["subject"] for m in stored(w, "bob@example.com")] == ["mine"]


def test_bodies_in_flight_are_bounded_by_the_memory_budget(make_wispd):
    """20 MX sessions each sending 49 MB without the final dot took the server past 1 GB; IMAP
    APPEND literals likewise. Now a budget holds them: the rest get a temporary failure."""
    w = make_wispd(config=mail_config(max_message_size=10_000_000, max_inflight_mb=20))
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    smtp, imap, _ = ports(w)
    before = rss_kib(w)
    chunk = (b"x" * 998 + b"\r\n") * 1000  # 1 MB
    sessions = []
    for _ in range(16):
        r = open_data(smtp, timeout=60)
        r.send(b"Subject: big\r\n\r\n")
        sessions.append(r)
    for _ in range(8):
        for r in sessions:
            r.send(chunk)
    # APPEND literals take the same budget
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=60)
    m.login("info@example.com", PASSWORD)
    appends = []
    for i in range(4):
        s = socket.create_connection(("127.0.0.1", imap), timeout=60)
        line, rest = imap_line(s)
        s.sendall(b"a LOGIN info@example.com password123\r\n")
        line, rest = imap_line(s, rest)
        s.sendall(b"b APPEND INBOX {8000000+}\r\n" + b"y" * 8_000_000 + b"\r\n")
        appends.append((s, rest))
    time.sleep(1)
    grown = rss_kib(w) - before
    replies = []
    for r in sessions:
        r.send(b"\r\n.\r\n")
        replies.append(r.reply())
    codes = sorted(code for code, _ in replies)
    assert grown < 120 * 1024, f"grew {grown} KiB holding 16 x 8 MB bodies and 4 x 8 MB literals"
    assert set(codes) <= {250, 452} and 452 in codes, replies
    starved = [lines for code, lines in replies if code == 452]
    assert starved[0][0].startswith("4.3.1 Insufficient system storage"), starved
    answers = []
    for s, rest in appends:
        line, rest = imap_line(s, rest)
        answers.append(line)
        s.sendall(b"c NOOP\r\n")
        line, rest = imap_line(s, rest)
        while not line.startswith(b"c "):
            line, rest = imap_line(s, rest)
        assert line.startswith(b"c OK"), "the stream is in sync after a refused literal"
    assert any(b"[UNAVAILABLE]" in a for a in answers), answers
    m.logout()
    # the budget is given back: one large message alone goes through
    r = open_data(smtp, timeout=60)
    r.send(b"Subject: big alone\r\n\r\n" + chunk * 8 + b"\r\n.\r\n")
    assert r.reply()[0] == 250


def test_trickled_body_cannot_outlast_the_transfer_deadline(make_wispd):
    """Bytes trickled into DATA kept resetting the idle timeout, holding the body for ever."""
    w = make_wispd(config=mail_config(idle_timeout_seconds=6, data_timeout_seconds=10))
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    smtp, _, _ = ports(w)
    r = open_data(smtp, timeout=30)
    t0 = time.monotonic()
    with pytest.raises((ConnectionError, BrokenPipeError)):
        while time.monotonic() - t0 < 25:
            r.send(b"x")
            time.sleep(2)
            r.sock.setblocking(False)
            try:
                data = r.sock.recv(4096)
                if data:
                    r.buf += data
                    raise ConnectionError(data)
            except BlockingIOError:
                pass
            finally:
                r.sock.setblocking(True)
    assert b"421 4.4.2" in r.buf, r.buf
    assert time.monotonic() - t0 < 20


def test_implicit_tls_ports_over_the_limit_close_without_plaintext(make_wispd):
    """Over the connection limit, 465 and 993 sent `421` / `* BYE` in plaintext before TLS."""
    w = make_wispd(config=mail_config(max_connections_per_ip=1, imap={"max_connections_per_ip": 1}))
    assert w.request("POST", "/api/v1/email/install").status == 200
    _, smtps = submission_ports(w)
    _, _, imaps = ports(w)
    for port in (smtps, imaps):
        first = tls_context(w).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                           server_hostname="localhost")
        first.recv(100)  # the greeting: the session holds its slot
        second = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert second.recv(100) == b"", f"port {port} wrote plaintext before closing"
        second.close()
        first.close()


def test_imap_hostile_pre_login_input_is_cut_off(mail):
    """Ten bad commands before login left the connection open; after a refused LITERAL+
    literal the rest of the command was parsed as a new one."""
    _, _, imap, _ = mail
    s = socket.create_connection(("127.0.0.1", imap), timeout=10)
    line, rest = imap_line(s)
    s.sendall(b"a LOGIN {9000+}\r\n" + b"z" * 9000 + b" secret\r\nb NOOP\r\n")
    line, rest = imap_line(s, rest)
    assert line == b"a NO [TOOBIG] Literal too large", line
    line, rest = imap_line(s, rest)
    assert line.startswith(b"b OK"), line
    s.sendall(b"c BOGUS\r\n" * 12)
    lines = []
    while True:
        try:
            line, rest = imap_line(s, rest)
        except ConnectionError:
            break
        lines.append(line)
    assert lines[-1] == b"* BYE Too many invalid commands", lines
    assert len([x for x in lines if x.startswith(b"c BAD")]) == 10


def test_passwords_with_control_characters_and_bad_punycode_are_refused(mail):
    w, _, _, _ = mail
    r = w.request("POST", "/api/v1/email/accounts",
                  body={"domain": "example.com", "username": "nul", "password": "pass\u0000word1"})
    assert r.status == 400 and "control characters" in r.json["message"], r
    r = w.request("POST", "/api/v1/email/accounts",
                  body={"domain": "xn--zz.test", "username": "a", "password": "password123"})
    assert r.status == 400 and "Invalid domain" in r.json["message"], r
    r = w.request("POST", "/api/v1/email/accounts",
                  body={"domain": "xn--bcher-kva.de", "username": "a", "password": "password123"})
    assert r.status == 201, r


def test_a_user_token_cannot_list_another_domains_messages(mail):
    """GET /email/accounts/:id/messages is new: a user token reaches only its own domains."""
    w, _, _, _ = mail
    other = account(w, "boss", domain="other.example")
    mine = w.request("GET", "/api/v1/email/accounts").json["accounts"][0]
    r = w.request("POST", "/api/v1/tokens", body={"name": "t", "role": "user", "domains": ["example.com"]})
    user = r.json["data"]["token"]
    assert w.request("GET", f"/api/v1/email/accounts/{mine['id']}/messages", token=user).status == 200
    for bad in (other["id"], 99999, "x", "18446744073709551616"):
        r = w.request("GET", f"/api/v1/email/accounts/{bad}/messages", token=user)
        assert r.status == 404 and r.json["code"] == "NOT_FOUND", r
