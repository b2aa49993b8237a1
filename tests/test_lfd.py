"""lfd in process, against the real kernel inside network namespaces the tests create: a client
namespace fails logins (IMAP, SMTP AUTH, API tokens, sshd lines in a log) and its next TCP
connection is dropped by the ban lfd put in the blacklist; TTLs, escalation to permanent,
LF_IGNORE and the whitelist, alerts by webhook and by email through the queue, kept across a
restart."""

import http.server
import itertools
import json
import os
import threading
import time

import pytest

from netns import Pair, sh, wait_until
from test_queue import Receiver, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

_counter = itertools.count(60)

API, SUBMISSIONS, IMAPS, POP3S = 18083, 14650, 19930, 19950

CONFIG = f"""
hostname = "mx.test.example"
[api]
listen = "0.0.0.0:{API}"
rate_limit_per_minute = 100000
[smtp]
listen = []
submission = []
submissions = ["0.0.0.0:{SUBMISSIONS}"]
verify_senders = false
{{relay}}
[imap]
listen = []
imaps = ["0.0.0.0:{IMAPS}"]
[pop3]
listen = []
pop3s = ["0.0.0.0:{POP3S}"]
[sieve]
listen = []
[firewall]
enabled = true
table = "wispd"
"""


@pytest.fixture
def net():
    pair = Pair(next(_counter) + (os.getpid() % 100)).create()
    pair.enter()
    try:
        yield pair
    finally:
        pair.leave()
        pair.destroy()


def start(make_wispd, settings, relay=None):
    relay_line = f'relay = "{relay}"' if relay else ""
    w = make_wispd(config=CONFIG.replace("{relay}", relay_line), firewall=True)
    w.host = "127.0.0.1"  # it listens on every address; its certificate names loopback
    assert w.request("POST", "/api/v1/email/install").status == 200
    r = w.request("POST", "/api/v1/email/accounts",
                  body={"domain": "example.com", "username": "info", "password": "password123"})
    assert r.status == 201, r
    r = w.request("PUT", "/api/v1/csf/config", body={"TESTING": "0", "SSHD_LOG": "", **settings})
    assert r.status == 200, r
    return w


def fail_logins(net, kind, n, port):
    """`n` wrong logins at once from the client namespace (in parallel: each answer is delayed)."""
    code = f"""
import imaplib, smtplib, ssl, threading, urllib.request, poplib
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def one(i):
    try:
        if "{kind}" == "imap":
            c = imaplib.IMAP4_SSL("{net.srv4}", {port}, ssl_context=ctx, timeout=20)
            try: c.login("info@example.com", "wrong%d" % i)
            except imaplib.IMAP4.error: pass
        elif "{kind}" == "smtp":
            c = smtplib.SMTP_SSL("{net.srv4}", {port}, context=ctx, timeout=20)
            try: c.login("info@example.com", "wrong%d" % i)
            except smtplib.SMTPAuthenticationError: pass
        elif "{kind}" == "pop3":
            c = poplib.POP3_SSL("{net.srv4}", {port}, context=ctx, timeout=20)
            c.user("info@example.com")
            try: c.pass_("wrong%d" % i)
            except poplib.error_proto: pass
        else:
            req = urllib.request.Request("https://{net.srv4}:{port}/api/v1/csf/status",
                                         headers={{"Authorization": "Bearer wsp_nottherighttoken%d" % i}})
            try: urllib.request.urlopen(req, timeout=20, context=ctx)
            except Exception: pass
    except Exception as e:
        print("error", e)
ts = [threading.Thread(target=one, args=(i,)) for i in range({n})]
[t.start() for t in ts]; [t.join() for t in ts]
print("done")
"""
    r = sh("python3", "-c", code, ns=net.cli, check=False, timeout=60)
    assert "done" in r.stdout, r.stdout + r.stderr


def blacklist(w):
    r = w.request("GET", "/api/v1/csf/blacklist")
    assert r.status == 200, r
    return {e["ip"]: e for e in r.json["data"]}


def failures(w, ip):
    r = w.request("GET", f"/api/v1/csf/lfd/failures?ip={ip}")
    assert r.status == 200, r
    return r.json["data"]


def alerts(w):
    r = w.request("GET", "/api/v1/csf/alerts?per_page=100")
    assert r.status == 200, r
    return r.json["data"]["alerts"]


def test_failed_imap_logins_ban_the_client_until_the_ttl(net, make_wispd):
    w = start(make_wispd, {"LF_IMAPD": "3", "LF_IMAPD_PERM": "6", "LF_PERMBLOCK": "0"})
    assert net.can_connect(IMAPS) and net.can_connect(API)
    fail_logins(net, "imap", 2, IMAPS)
    assert net.can_connect(IMAPS), "two failures are under the trigger"
    fail_logins(net, "imap", 1, IMAPS)
    # every port of the server is closed to it, not only IMAP's
    assert wait_until(lambda: not net.can_connect(API, timeout=0.5), timeout=5)
    assert not net.can_connect(SUBMISSIONS, timeout=0.5)
    entry = blacklist(w)[net.cli4]
    assert entry["comment"] == "lfd: 3 failed IMAP logins in 3600s", entry
    assert 0 < entry["ttl"] <= 6, entry
    [row] = failures(w, net.cli4)
    assert row["banned"] and row["service"] == "imapd" and row["count"] == 3, row
    assert row["services"] == {"imapd": 3} and row["last_user"] == "info@example.com", row
    r = w.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}")
    assert r.json["data"]["blocked"], r
    [a] = [a for a in alerts(w) if a["ip"] == net.cli4]
    assert a["kind"] == "ban" and a["service"] == "imapd" and "blocked for 6s" in a["message"], a
    st = w.request("GET", "/api/v1/csf/lfd/status").json["data"]
    assert st["running"] and st["enabled"] and st["counts"]["bans_total"] == 1, st
    imapd = [s for s in st["settings"]["services"] if s["service"] == "imapd"][0]
    assert imapd == {"service": "imapd", "key": "LF_IMAPD", "trigger": 3, "block_seconds": 6}, st
    csf = w.request("GET", "/api/v1/csf/status").json["data"]
    # the blocklists cannot be fetched in the namespace: their failures are alerts too
    assert csf["alerts_24h"] == len(alerts(w)) >= 1, csf
    assert csf["alerts"]["enabled"] and csf["alerts"]["running"], csf
    # the kernel lets it go when the TTL is up
    assert wait_until(lambda: net.can_connect(IMAPS, timeout=0.5), timeout=15)
    assert net.can_connect(API)


def test_smtp_auth_bans_escalate_to_permanent(net, make_wispd):
    w = start(make_wispd, {"LF_SMTPAUTH": "2", "LF_SMTPAUTH_PERM": "10", "LF_PERMBLOCK": "1",
                           "LF_PERMBLOCK_COUNT": "2", "LF_PERMBLOCK_INTERVAL": "3600"})
    # smtplib tries each mechanism the server offers: one login is two failures
    fail_logins(net, "smtp", 1, SUBMISSIONS)
    assert wait_until(lambda: not net.can_connect(SUBMISSIONS, timeout=0.5), timeout=5)
    assert blacklist(w)[net.cli4]["ttl"] > 0
    assert wait_until(lambda: net.can_connect(SUBMISSIONS, timeout=0.5), timeout=25)
    # smtplib tries each mechanism the server offers: one login is two failures
    fail_logins(net, "smtp", 1, SUBMISSIONS)
    assert wait_until(lambda: not net.can_connect(SUBMISSIONS, timeout=0.5), timeout=5)
    entry = blacklist(w)[net.cli4]
    assert entry["ttl"] == 0 and "2 temporary bans in 3600s, now permanent" in entry["comment"], entry
    kinds = [a["kind"] for a in alerts(w) if a["ip"] == net.cli4]
    assert kinds == ["permblock", "ban"], kinds
    st = w.request("GET", "/api/v1/csf/lfd/status").json["data"]
    assert st["counts"]["escalations"] == 1 and st["counts"]["bans_total"] == 2, st
    time.sleep(4)
    assert not net.can_connect(SUBMISSIONS, timeout=0.5), "a permanent ban does not lift"


def test_wrong_api_tokens_and_pop3_logins_ban(net, make_wispd):
    w = start(make_wispd, {"LF_API": "3", "LF_API_PERM": "30", "LF_POP3D": "2", "LF_POP3D_PERM": "30"})
    fail_logins(net, "api", 3, API)
    assert wait_until(lambda: not net.can_connect(API, timeout=0.5), timeout=5)
    entry = blacklist(w)[net.cli4]
    assert entry["comment"] == "lfd: 3 failed API requests with a wrong token in 3600s", entry
    [row] = failures(w, net.cli4)
    assert row["service"] == "api" and row["last_user"].startswith("a malformed token"), row
    r = w.request("DELETE", f"/api/v1/csf/blacklist/{net.cli4}")
    assert r.status == 200, r
    assert wait_until(lambda: net.can_connect(POP3S, timeout=0.5), timeout=5), (blacklist(w), w.request("GET", "/api/v1/csf/config").json["data"]["TCP_IN"])
    fail_logins(net, "pop3", 2, POP3S)
    assert wait_until(lambda: not net.can_connect(POP3S, timeout=0.5), timeout=5)
    assert blacklist(w)[net.cli4]["comment"] == "lfd: 2 failed POP3 logins in 3600s"


def test_sshd_log_lines_ban_across_a_rotation_and_forged_addresses_do_not(net, make_wispd, tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("Dec  3 10:00:00 web sshd[1]: Failed password for root from 203.0.113.9 port 1 ssh2\n")
    w = start(make_wispd, {"LF_SSHD": "2", "LF_SSHD_PERM": "30", "SSHD_LOG": str(log)})
    st = lambda: w.request("GET", "/api/v1/csf/lfd/status").json["data"]["sources"][0]  # noqa: E731
    assert wait_until(lambda: st()["following"], timeout=5), st()
    with log.open("a") as f:
        # a user name carrying somebody else's address: the address is the last one of the line
        f.write(f"Dec  3 10:00:01 web sshd[2]: Invalid user x from 198.51.100.1 port 22 from {net.cli4} port 5\n")
    assert wait_until(lambda: failures(w, net.cli4), timeout=5)
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text(f"Dec  3 10:00:02 web sshd[3]: Failed password for invalid user bob from {net.cli4} port 7 ssh2\n")
    assert wait_until(lambda: not net.can_connect(API, timeout=0.5), timeout=5)
    assert blacklist(w)[net.cli4]["comment"] == "lfd: 2 failed SSH logins in 3600s"
    assert failures(w, "198.51.100.1") == [] and failures(w, "203.0.113.9") == [], "the line read at start is old"
    src = st()
    assert src["rotations"] == 1 and src["failures_found"] == 2 and "bob" in src["last_line"], src


def test_ignored_and_whitelisted_clients_are_never_banned(net, make_wispd):
    w = start(make_wispd, {"LF_IMAPD": "2", "LF_IGNORE": net.cli4})
    fail_logins(net, "imap", 3, IMAPS)
    [row] = failures(w, net.cli4)
    assert not row["banned"] and row["note"] == "not banned: in LF_IGNORE", row
    assert net.can_connect(IMAPS) and net.cli4 not in blacklist(w)
    r = w.request("PUT", "/api/v1/csf/config", body={"LF_IGNORE": ""})
    assert r.status == 200, r
    r = w.request("POST", "/api/v1/csf/whitelist", body={"ip": net.cli4, "comment": "office"})
    assert r.status in (200, 201), r
    fail_logins(net, "imap", 2, IMAPS)
    [row] = failures(w, net.cli4)
    assert not row["banned"] and "whitelisted" in row["note"], row
    assert net.can_connect(IMAPS) and net.cli4 not in blacklist(w)


class Hook(http.server.BaseHTTPRequestHandler):
    got = []
    fail_first = [True]

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first[0]:
            Hook.fail_first[0] = False
            self.send_response(503)
        else:
            Hook.got.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_alerts_reach_a_webhook_and_a_mailbox_and_survive_a_restart(net, make_wispd, tmp_path):
    listen = f"127.0.0.1:{free_port()}"
    sink = Receiver(tmp_path / "sink", listen).start()
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        # (the blocklists can't be fetched in the namespace: their failure alerts may make the
        # first digest, and the ban the next one, LF_ALERT_DIGEST seconds later)
        w = start(make_wispd, {"LF_IMAPD": "2", "LF_IMAPD_PERM": "60", "LF_ALERT_TO": "ops@remote.example",
                               "LF_ALERT_FROM": "lfd@mx.test.example", "LF_ALERT_DIGEST": "5",
                               "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/alerts"},
                  relay=listen)
        fail_logins(net, "imap", 2, IMAPS)
        # the receiver refused the first POST: it is retried
        assert wait_until(lambda: Hook.got, timeout=15), w.request("GET", "/api/v1/csf/alerts-service/status").json
        assert wait_until(lambda: any(g["kind"] == "ban" for g in Hook.got), timeout=15), Hook.got
        [got] = [g for g in Hook.got if g["kind"] == "ban"]
        assert got["kind"] == "ban" and got["ip"] == net.cli4 and got["host"] == "mx.test.example", got
        banned = f"{net.cli4} blocked for 60s"
        assert wait_until(lambda: any(banned in m["data"] for m in sink.messages()), timeout=30), sink.messages()
        [m] = [m for m in sink.messages() if banned in m["data"]]
        assert m["rcpt_tos"] == ["ops@remote.example"] and m["mail_from"] == "<>", m
        assert "Auto-Submitted: auto-generated" in m["data"], m
        mails = len(sink.messages())
        svc = w.request("GET", "/api/v1/csf/alerts-service/status").json["data"]
        assert svc["emails_sent"] == mails and svc["webhooks_sent"] >= 1 and svc["failures"] >= 1, svc
        assert svc["unnotified"] == 0 and svc["smtp_configured"] and svc["webhook"], svc
        w.stop()
        w.start()
        w.host = "127.0.0.1"
        assert [a["ip"] for a in alerts(w) if a["kind"] == "ban"] == [net.cli4]
        time.sleep(2)
        bans = [g for g in Hook.got if g["kind"] == "ban"]
        assert len(bans) == 1 and len(sink.messages()) == mails, "nothing is sent twice after a restart"
    finally:
        hook.shutdown()
        sink.stop()
