"""The outbound queue against the real server: submission to other domains through `smtp.relay`
and through MX lookups (a DNS server on loopback, the destination in another network
namespace), DKIM verified by dkimpy, retries while the destination is down, bounces (DSN) to
the sender's INBOX, the queue kept across a restart, the queue API, SRS for external forwarders."""

import email
import imaplib
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import dkim
import pytest

from conftest import assert_envelope
from dnsserver import DnsServer
from mailutil import MAIL_CONFIG, account, ports, submission_ports, toml_lines
from netns import wait_until

PASSWORD = "password123"
RECEIVER = str(Path(__file__).with_name("receiver.py"))


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Receiver:
    """The destination server (tests/receiver.py), started and stopped at will."""

    def __init__(self, workdir, listen, ns=None, reject=(), defer=(), tls=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.listen, self.ns, self.reject, self.defer, self.tls = listen, ns, reject, defer, tls
        self.proc = None

    def start(self):
        cmd = [sys.executable, RECEIVER, "--listen", self.listen, "--dir", str(self.dir)]
        for r in self.reject:
            cmd += ["--reject", r]
        for d in self.defer:
            cmd += ["--defer", d]
        if self.tls:
            cmd += ["--tls", *self.tls]
        if self.ns:
            cmd = ["ip", "netns", "exec", self.ns, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def messages(self):
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))]

    def wait(self, n, timeout=20):
        assert wait_until(lambda: len(self.messages()) >= n, timeout=timeout), self.messages()
        return self.messages()


@pytest.fixture
def receivers():
    made = []

    def make(*args, **kwargs):
        r = Receiver(*args, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def start(make_wispd, dns=None, **smtp):
    smtp.setdefault("verify_senders", False)
    config = MAIL_CONFIG.format(smtp="127.0.0.1:0", smtp_extra=toml_lines(smtp), imap_listen='["127.0.0.1:0"]', imap_extra="",
                              pop3_listen='["127.0.0.1:0"]')
    if dns is not None:
        config = config.replace("[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    account(w, "bob")
    return w


def submit(w, to, subject="hello", sender="info@example.com", extra=b""):
    port, _ = submission_ports(w)
    ctx = ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))
    msg = (f"From: Info <{sender}>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
           f"Date: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@example.com>\r\n").encode()
    msg += extra + b"\r\nHello there.\r\n.leading dot line\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as c:
        c.starttls(context=ctx)
        c.login(sender, PASSWORD)
        refused = c.sendmail(sender, to, msg)
        assert refused == {}
    return msg


def queue(w):
    r = w.request("GET", "/api/v1/email/queue")
    assert r.status == 200, r
    return r.json["data"]


def inbox(w, user="info@example.com"):
    """Every message in the account's INBOX, over IMAP."""
    _, imap, _ = ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=10)
    m.login(user, PASSWORD)
    m.select("INBOX", readonly=True)
    _, ids = m.search(None, "ALL")
    out = []
    for i in ids[0].split():
        _, data = m.fetch(i, "(BODY.PEEK[])")
        out.append(email.message_from_bytes(data[0][1]))
    m.logout()
    return out


def self_signed(workdir):
    key, cert = str(workdir / "dest.key"), str(workdir / "dest.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=dest.test"], check=True, capture_output=True)
    return cert, key


def test_submission_goes_out_through_the_relay_dkim_signed_over_tls(make_wispd, receivers, tmp_path):
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}", tls=self_signed(tmp_path)).start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}")
    key = w.request("POST", "/api/v1/email/dkim/example.com").json["data"]
    sent = submit(w, ["friend@remote.example", "bob@example.com"], subject="signed hello")
    got = dest.wait(1)
    assert len(got) == 1
    m = got[0]
    assert m["mail_from"] == "info@example.com" and m["rcpt_tos"] == ["friend@remote.example"]
    assert m["tls"] is True, "STARTTLS is used when the destination offers it"
    assert m["helo"] == "mx.test.example"
    data = m["data"].encode("latin-1")
    assert data.startswith(b"DKIM-Signature:") and b"Return-Path" not in data
    assert b"\r\n.leading dot line\r\n" in data, "dot-stuffing undone at the other end"
    assert data.endswith(sent.split(b"\r\n\r\n", 1)[1])
    # an independent verifier, against the record the API says to publish
    record = key["dns_record"].encode()
    lookups = []

    def dnsfunc(name, timeout=5):
        lookups.append(name)
        return record if name == b"wispd._domainkey.example.com." else None

    assert dkim.verify(data, dnsfunc=dnsfunc), "dkimpy verifies the signature"
    assert lookups == [b"wispd._domainkey.example.com."]
    header = email.message_from_bytes(data)["DKIM-Signature"]
    signature = dkim.util.parse_tag_value(header.replace("\r\n", "").encode())
    assert signature[b"c"] == b"relaxed/relaxed" and signature[b"d"] == b"example.com" and signature[b"a"] == b"rsa-sha256"
    assert signature[b"h"].lower().split(b":").count(b"from") == 2, "From is oversigned"
    # the tampered message fails
    assert not dkim.verify(data.replace(b"Hello there.", b"Hello thera."), dnsfunc=dnsfunc)
    assert wait_until(lambda: queue(w) == []), queue(w)
    # the local recipient got the same message directly
    assert [x["Subject"] for x in inbox(w, "bob@example.com")] == ["signed hello"]


def test_ed25519_signatures_verify_too(make_wispd, receivers, tmp_path):
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}").start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}")
    key = w.request("POST", "/api/v1/email/dkim/example.com", body={"algorithm": "ed25519-sha256", "selector": "ed"}).json["data"]
    submit(w, ["friend@remote.example"], subject="ed signed")
    data = dest.wait(1)[0]["data"].encode("latin-1")
    assert b"a=ed25519-sha256" in data
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: key["dns_record"].encode())


def test_mx_lookup_finds_the_destination_in_another_namespace(make_wispd, receivers, tmp_path):
    from netns import Pair
    pair = Pair(150 + os.getpid() % 40).create()
    pair.enter()
    dns = None
    try:
        dns = DnsServer()
        dns.mx["dest.example"] = [(20, "backup.dest.example"), (10, "mx.dest.example")]
        dns.a["mx.dest.example"] = [pair.cli4]
        dns.a["backup.dest.example"] = ["10.231.254.254"]  # never reached: preference 20
        dns.a["plain.example"] = [pair.cli4]  # no MX: its own address (implicit MX)
        dns.mx["nomail.example"] = [(0, ".")]  # RFC 7505 null MX
        dest = receivers(tmp_path / "dest", f"{pair.cli4}:25", ns=pair.cli).start()
        w = start(make_wispd, dns=dns)
        submit(w, ["a@dest.example", "b@dest.example"], subject="via mx")
        submit(w, ["c@plain.example"], subject="via a record")
        got = dest.wait(2)
        by_subject = {email.message_from_string(m["data"])["Subject"]: m for m in got}
        assert by_subject["via mx"]["rcpt_tos"] == ["a@dest.example", "b@dest.example"], "one transaction per domain"
        assert by_subject["via a record"]["rcpt_tos"] == ["c@plain.example"]
        assert all(m["peer"] == pair.srv4 for m in got)
        assert ("dest.example", 15) in dns.queries and ("mx.dest.example", 1) in dns.queries
        assert ("backup.dest.example", 1) not in dns.queries, "the preferred MX took it"
        # a null MX and a domain that does not exist bounce at once
        submit(w, ["x@nomail.example", "y@missing.example"], subject="nowhere")
        # (one report per destination domain, as each domain's attempt ends)
        assert wait_until(lambda: len(inbox(w)) == 2, timeout=20), queue(w)
        reports = inbox(w)
        text = "".join(r.as_string() for r in reports)
        assert {r["Subject"] for r in reports} == {"Undelivered Mail Returned to Sender"}
        assert "Final-Recipient: rfc822; x@nomail.example" in text and "Status: 5.1.10" in text
        assert "Final-Recipient: rfc822; y@missing.example" in text and "Status: 5.1.2" in text
        assert wait_until(lambda: queue(w) == [])
    finally:
        if dns:
            dns.close()
        pair.leave()
        pair.destroy()


def test_down_destination_is_retried_and_the_queue_survives_a_restart(make_wispd, receivers, tmp_path):
    port = free_port()
    w = start(make_wispd, relay=f"127.0.0.1:{port}", retry_seconds=1, max_retry_seconds=2)
    submit(w, ["friend@remote.example"], subject="patience")
    assert wait_until(lambda: queue(w) and queue(w)[0]["recipients"][0]["attempts"] >= 2, timeout=15), queue(w)
    q = queue(w)
    assert len(q) == 1
    entry = q[0]
    assert entry["sender"] == "info@example.com" and entry["source"] == "submission"
    r = entry["recipients"][0]
    assert r["address"] == "friend@remote.example" and r["status"] == "queued"
    assert "connect to" in r["last_error"] and r["last_error"].startswith("451 4.4.1")
    assert r["next_attempt"] >= r["last_attempt"]
    # killed (-9) and started again: the message is still there, under the same id
    assert w.stop(signal.SIGKILL)[0] == -signal.SIGKILL
    w.start()
    assert [m["id"] for m in queue(w)] == [entry["id"]]
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}").start()
    got = dest.wait(1, timeout=20)
    assert got[0]["rcpt_tos"] == ["friend@remote.example"]
    assert wait_until(lambda: queue(w) == [])
    assert inbox(w) == [], "no bounce for a delivered message"


def test_queue_api_flush_delete_and_access(make_wispd, receivers, tmp_path):
    port = free_port()
    w = start(make_wispd, relay=f"127.0.0.1:{port}", retry_seconds=3600)
    submit(w, ["one@remote.example"], subject="first")
    submit(w, ["two@remote.example"], subject="second")
    assert wait_until(lambda: len(queue(w)) == 2 and all(m["recipients"][0]["attempts"] == 1 for m in queue(w)))
    first, second = queue(w)
    assert first["recipients"][0]["next_attempt"] - first["recipients"][0]["last_attempt"] >= 3000
    # user tokens don't see or touch the queue
    tok = w.request("POST", "/api/v1/tokens", body={"name": "u", "role": "user", "domains": ["example.com"]})
    assert tok.status == 201, tok
    user = tok.json["data"]["token"]
    for method, path in [("GET", "/api/v1/email/queue"), ("POST", "/api/v1/email/queue/flush"),
                         ("DELETE", f"/api/v1/email/queue/{first['id']}")]:
        assert_envelope(w.request(method, path, token=user), 403, "FORBIDDEN")
        assert_envelope(w.request(method, path, token=None), 401, "UNAUTHORIZED")
    r = w.request("DELETE", f"/api/v1/email/queue/{first['id']}")
    assert r.status == 200 and r.json["data"]["id"] == first["id"]
    assert_envelope(w.request("DELETE", f"/api/v1/email/queue/{first['id']}"), 404, "NOT_FOUND")
    assert_envelope(w.request("DELETE", "/api/v1/email/queue/abc"), 400, "VALIDATION_ERROR")
    assert [m["id"] for m in queue(w)] == [second["id"]]
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}").start()
    time.sleep(1)
    assert dest.messages() == [], "nothing is due for an hour"
    r = w.request("POST", "/api/v1/email/queue/flush")
    assert r.status == 200 and r.json["data"] == {"scheduled": 1}
    got = dest.wait(1)
    assert [m["rcpt_tos"] for m in got] == [["two@remote.example"]], "the deleted message never left"
    assert wait_until(lambda: queue(w) == [])
    assert inbox(w) == [], "deleting does not bounce"


def test_5xx_bounces_to_the_sender_inbox_and_bounces_never_bounce(make_wispd, receivers, tmp_path):
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}", reject=["nobody@"]).start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}")
    submit(w, ["nobody@remote.example", "friend@remote.example"], subject="partly")
    got = dest.wait(1)
    assert got[0]["rcpt_tos"] == ["friend@remote.example"]
    assert wait_until(lambda: len(inbox(w)) == 1, timeout=20), (queue(w), w.log()[-3000:])
    report = inbox(w)[0]
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["Return-Path"] == "<>"
    assert report.get_content_type() == "multipart/report" and report.get_param("report-type") == "delivery-status"
    parts = {p.get_content_type(): p for p in report.walk()}
    status = parts["message/delivery-status"].as_string()
    assert "Reporting-MTA: dns; mx.test.example" in status
    assert "Final-Recipient: rfc822; nobody@remote.example" in status and "friend@" not in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.example>: Recipient address rejected" in status
    assert "Remote-MTA: dns; 127.0.0.1[127.0.0.1]" in status
    assert "Subject: partly" in parts["text/rfc822-headers"].as_string()
    assert wait_until(lambda: queue(w) == [])
    # A forwarded bounce (null sender) that is refused is dropped, not bounced.
    assert w.request("POST", "/api/v1/email/forwarders",
                     body={"source": "sales@example.com", "destination": "nobody@remote.example"}).status == 201
    mx, _, _ = ports(w)
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        c.sendmail("<>", ["sales@example.com"], b"From: MAILER-DAEMON@far.example\r\nSubject: bounce\r\n\r\nx\r\n")
    assert wait_until(lambda: "no bounce for a bounce" in w.log(), timeout=20), w.log()[-3000:]
    assert wait_until(lambda: queue(w) == [])
    assert len(inbox(w)) == 1 and len(dest.messages()) == 1


def test_expired_messages_bounce_with_4_4_7(make_wispd, tmp_path):
    port = free_port()
    w = start(make_wispd, relay=f"127.0.0.1:{port}", retry_seconds=1, max_retry_seconds=1, queue_lifetime_seconds=3)
    submit(w, ["friend@remote.example"], subject="too late")
    assert wait_until(lambda: len(inbox(w)) == 1, timeout=30), queue(w)
    text = inbox(w)[0].as_string()
    assert "Final-Recipient: rfc822; friend@remote.example" in text
    assert "Status: 4.4.7" in text and "delivery time expired" in text
    assert wait_until(lambda: queue(w) == [])


def test_external_forwarders_rewrite_the_sender_with_srs(make_wispd, receivers, tmp_path):
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}", reject=["nobody@"]).start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}")
    r = w.request("POST", "/api/v1/email/forwarders", body={"source": "sales@example.com", "destination": "boss@remote.example"})
    assert r.status == 201, r
    assert w.request("POST", "/api/v1/email/forwarders", body={"source": "sales@example.com", "destination": "bob@example.com"}).status == 201
    r = w.request("POST", "/api/v1/email/forwarders", body={"source": "x@example.com", "destination": "nobody@example.com"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    w.request("POST", "/api/v1/email/dkim/example.com")
    mx, _, _ = ports(w)
    original = b"From: Alice <alice@origin.example>\r\nTo: sales@example.com\r\nSubject: quote\r\n\r\nplease\r\n"
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        assert c.sendmail("alice@origin.example", ["sales@example.com"], original) == {}
    got = dest.wait(1)[0]
    srs = got["mail_from"]
    assert srs.startswith("SRS0=") and srs.endswith("=origin.example=alice@example.com"), srs
    assert got["rcpt_tos"] == ["boss@remote.example"]
    assert not re.search(r"(?m)^DKIM-Signature:", got["data"]), "forwarded mail is not re-signed as ours"
    assert [x["Subject"] for x in inbox(w, "bob@example.com")] == ["quote"], "local destinations still get theirs"
    # The destination bounces to the SRS address: it goes back to Alice; a forged one is unknown.
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        c.ehlo("remote.example")
        assert c.mail("<>") == (250, b"2.1.0 Ok")
        forged = srs.replace("SRS0=", "SRS0=x", 1)
        assert c.rcpt(forged)[0] == 550
        assert c.rcpt(srs) == (250, b"2.1.5 Ok")
        assert c.data(b"From: MAILER-DAEMON@remote.example\r\nSubject: Undeliverable: quote\r\n\r\nsorry\r\n")[0] == 250
    back = dest.wait(2)[1]
    assert back["mail_from"] == "<>" and back["rcpt_tos"] == ["alice@origin.example"]
    # an SRS address is no open relay
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        c.ehlo("spammer.example")
        c.mail("spam@spammer.example")
        assert c.rcpt("SRS0=abcdefgh=AB=victim.example=v@example.com")[0] == 550
    # A long original sender makes an SRS local part over 64 characters: still taken back.
    long_sender = "a.very.long.local.part.for.a.mailing.list.bounce.handler.x@lists.origin.example"
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        assert c.sendmail(long_sender, ["sales@example.com"], b"From: list@lists.origin.example\r\nSubject: digest\r\n\r\nx\r\n") == {}
    srs_long = dest.wait(3)[2]["mail_from"]
    assert len(srs_long.split("@")[0]) > 64 and srs_long.endswith("@example.com"), srs_long
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        assert c.sendmail("<>", [srs_long], b"From: MAILER-DAEMON@remote.example\r\nSubject: bounce\r\n\r\nx\r\n") == {}
    assert dest.wait(4)[3]["rcpt_tos"] == [long_sender]
    # The destination refuses a forwarded message: wispd's own bounce goes to the original
    # sender (the SRS address reversed), naming the forwarder's address.
    assert w.request("POST", "/api/v1/email/forwarders", body={"source": "help@example.com", "destination": "nobody@remote.example"}).status == 201
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        assert c.sendmail("carol@origin.example", ["help@example.com"], b"From: carol@origin.example\r\nSubject: help\r\n\r\nx\r\n") == {}
    report = dest.wait(5)[4]
    assert report["mail_from"] == "<>" and report["rcpt_tos"] == ["carol@origin.example"], report
    assert "Final-Recipient: rfc822; nobody@remote.example" in report["data"]
    assert "Original-Recipient: rfc822; help@example.com" in report["data"]
    assert wait_until(lambda: queue(w) == [])


def test_over_quota_local_recipients_are_reported_to_the_sender(make_wispd, receivers, tmp_path):
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}").start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}")
    account(w, "tiny", quota_mb=1)
    mx, _, _ = ports(w)
    big = b"From: sender@far.example\r\nSubject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 600
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        assert c.sendmail("sender@far.example", ["tiny@example.com", "bob@example.com"], big) == {}
        assert c.sendmail("sender@far.example", ["tiny@example.com", "bob@example.com"], big) == {}
    got = dest.wait(1)
    assert got[0]["mail_from"] == "<>" and got[0]["rcpt_tos"] == ["sender@far.example"]
    assert "Final-Recipient: rfc822; tiny@example.com" in got[0]["data"] and "Status: 5.2.2" in got[0]["data"]
    assert len(inbox(w, "bob@example.com")) == 2


def test_forwarding_loops_are_cut(make_wispd):
    w = start(make_wispd)
    mx, _, _ = ports(w)
    looping = b"".join(b"Received: from hop%d by hop%d; Sun, 22 Nov 2026 12:00:00 +0000\r\n" % (i, i) for i in range(50))
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        c.ehlo("far.example")
        c.mail("a@far.example")
        c.rcpt("info@example.com")
        assert c.data(looping + b"Subject: loop\r\n\r\nx\r\n") == (554, b"5.4.6 Too many hops: mail forwarding loop")
        assert c.sendmail("a@far.example", ["info@example.com"], b"".join(looping.splitlines(keepends=True)[:49]) + b"Subject: ok\r\n\r\nx\r\n") == {}
    assert [m["Subject"] for m in inbox(w)] == ["ok"]


def test_kill_9_while_delivering_loses_no_acknowledged_message(make_wispd, receivers, tmp_path):
    """Mail pours in for an external forwarder while the queue delivers it; wispd is killed -9 in
    the middle. After a restart every acknowledged message reaches the destination (a message
    whose delivery was under way at the kill may arrive twice, never zero times)."""
    import threading
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}").start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}", destination_concurrency=8, max_connections_per_ip=40)
    assert w.request("POST", "/api/v1/email/forwarders", body={"source": "fwd@example.com", "destination": "far@remote.example"}).status == 201
    mx, _, _ = ports(w)
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def sender(n):
        i = 0
        try:
            with smtplib.SMTP("127.0.0.1", mx, timeout=10) as c:
                while not stop.is_set():
                    mid = f"{n}.{i}@load.example"
                    i += 1
                    c.sendmail("a@origin.example", ["fwd@example.com"],
                               f"From: a@origin.example\r\nMessage-ID: <{mid}>\r\nSubject: load\r\n\r\n{('x' * 70 + chr(13) + chr(10)) * 30}".encode())
                    with lock:
                        acked.append(f"<{mid}>")
        except (smtplib.SMTPException, OSError):
            return

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(acked) >= 200 and len(dest.messages()) >= 20, timeout=60, step=0.05)
    w.proc.kill()
    w.proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    with lock:
        acknowledged = set(acked)
    w.start()

    def arrived():
        return {email.message_from_string(m["data"])["Message-ID"] for m in dest.messages()}

    assert wait_until(lambda: acknowledged <= arrived(), timeout=90), \
        f"missing {len(acknowledged - arrived())} of {len(acknowledged)}: {sorted(acknowledged - arrived())[:5]}"
    assert wait_until(lambda: queue(w) == [], timeout=30)


def test_connections_are_reused_for_the_next_message(make_wispd, receivers, tmp_path):
    port = free_port()
    dest = receivers(tmp_path / "dest", f"127.0.0.1:{port}").start()
    w = start(make_wispd, relay=f"127.0.0.1:{port}", destination_concurrency=1)
    assert w.request("POST", "/api/v1/email/forwarders", body={"source": "fwd@example.com", "destination": "far@remote.example"}).status == 201
    mx, _, _ = ports(w)
    with smtplib.SMTP("127.0.0.1", mx, timeout=15) as c:
        for i in range(6):
            assert c.sendmail("a@origin.example", ["fwd@example.com"], f"Subject: n{i}\r\n\r\nx\r\n".encode()) == {}
    got = dest.wait(6)
    assert sorted(email.message_from_string(m["data"])["Subject"] for m in got) == [f"n{i}" for i in range(6)]
    sessions = {m["session"] for m in got}
    assert len(sessions) < 6, "one destination slot: later messages ride the cached connection"
    assert wait_until(lambda: queue(w) == [])
