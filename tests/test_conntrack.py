"""The conntrack view and CT_LIMIT against the real kernel, in namespaces the tests create: a
client's open connection is listed with its tuple and TCP state (`/csf/conntrack/connections`,
filters), the status counts the table and reads `nf_conntrack_max`; a client holding more
connections than `CT_LIMIT` is banned through the blacklist with the block time and an alert,
and its next SYN is dropped."""

import itertools
import os
import subprocess
import time

import pytest

from conftest import assert_envelope
from netns import Pair, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

_counter = itertools.count(120)
API, IMAPS = 18084, 19931

CONFIG = f"""
hostname = "mx.test.example"
[api]
listen = "0.0.0.0:{API}"
rate_limit_per_minute = 100000
[smtp]
listen = []
submission = []
submissions = []
verify_senders = false
[imap]
listen = []
imaps = ["0.0.0.0:{IMAPS}"]
[pop3]
listen = []
pop3s = []
[sieve]
listen = []
[firewall]
enabled = true
table = "wispd"
"""


@pytest.fixture
def net():
    pair = Pair(next(_counter) + (os.getpid() % 50)).create()
    pair.enter()
    try:
        yield pair
    finally:
        pair.leave()
        pair.destroy()


def start(make_wispd, settings=None):
    w = make_wispd(config=CONFIG, firewall=True)
    w.host = "127.0.0.1"
    assert w.request("POST", "/api/v1/email/install").status == 200
    r = w.request("PUT", "/api/v1/csf/config", body={"TESTING": "0", "SSHD_LOG": "", **(settings or {})})
    assert r.status == 200, r
    return w


def hold(net, port, n, seconds):
    """`n` TCP connections from the client namespace to `port`, held open for `seconds`."""
    code = (
        "import socket, time\n"
        f"socks = [socket.create_connection(('{net.srv4}', {port}), timeout=5) for _ in range({n})]\n"
        "print('open', flush=True)\n"
        f"time.sleep({seconds})\n"
    )
    p = subprocess.Popen(["ip", "netns", "exec", net.cli, "python3", "-c", code],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "open", p.stderr.read()
    return p


def connections(w, **params):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    r = w.request("GET", f"/api/v1/csf/conntrack/connections?{q}")
    assert r.status == 200, r.json
    return r.json["data"]


def test_an_open_connection_is_listed_with_its_tuple_and_state(net, make_wispd):
    w = start(make_wispd)
    p = hold(net, IMAPS, 2, 20)
    try:
        data = connections(w, ip=net.cli4, port=IMAPS)
        assert data["total"] == 2, data
        c = data["connections"][0]
        assert c["protocol"] == "tcp" and c["family"] == "ipv4" and c["state"] == "ESTABLISHED", c
        assert c["original"]["src"] == net.cli4 and c["original"]["dst"] == net.srv4, c
        assert c["original"]["dport"] == IMAPS and c["original"]["sport"] > 1024, c
        assert c["reply"] == {"src": net.srv4, "dst": net.cli4, "sport": IMAPS,
                              "dport": c["original"]["sport"]}, c
        assert c["replied"] is True and c["timeout"] > 0
        # filters: state, protocol, paging
        assert connections(w, ip=net.cli4, state="established")["total"] == 2
        assert connections(w, ip=net.cli4, state="TIME_WAIT")["total"] == 0
        assert connections(w, ip=net.cli4, protocol="udp")["total"] == 0
        page = connections(w, ip=net.cli4, per_page=1, page=2)
        assert page["total"] == 2 and len(page["connections"]) == 1 and page["page"] == 2
        assert connections(w, ip="192.0.2.99")["total"] == 0
        st = w.request("GET", "/api/v1/csf/conntrack/status").json["data"]
        assert st["available"] and st["entries"] >= 2 and st["tcp_states"]["ESTABLISHED"] >= 2, st
        assert st["by_protocol"]["tcp"] >= 2 and st["ipv4"] >= 2
        with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
            assert st["max"] == int(f.read())
        assert st["limit"]["enabled"] is False and st["limit"]["limit"] == 0
    finally:
        p.kill()
    for bad in ("ip=nope", "port=0", "port=70000", "state=BOGUS", "protocol=xyz", "per_page=5000", "page=0"):
        r = w.request("GET", f"/api/v1/csf/conntrack/connections?{bad}")
        assert_envelope(r, 400, "VALIDATION_ERROR")


def test_ct_limit_bans_a_client_holding_too_many_connections(net, make_wispd):
    w = start(make_wispd)
    for key, bad in (("CT_INTERVAL", "1"), ("CT_STATES", "OPEN"), ("CT_PORTS", "70000"),
                     ("CT_LIMIT", "-1"), ("CT_PERMANENT", "2")):
        r = w.request("PUT", "/api/v1/csf/config", body={key: bad})
        assert_envelope(r, 400, "VALIDATION_ERROR")
    r = w.request("PUT", "/api/v1/csf/config", body={
        "CT_LIMIT": "3", "CT_INTERVAL": "5", "CT_BLOCK_TIME": "30", "CT_PORTS": str(IMAPS)})
    assert r.status == 200, r.json
    # three are within the limit; the API port isn't counted at all (CT_PORTS)
    p = hold(net, IMAPS, 3, 30)
    q = hold(net, API, 4, 30)
    time.sleep(7)
    assert net.can_connect(API), "within the limit"
    r = None
    p2 = hold(net, IMAPS, 2, 30)
    try:
        assert wait_until(lambda: net.cli4 in {e["ip"] for e in w.request("GET", "/api/v1/csf/blacklist").json["data"]},
                          timeout=15)
        entry = [e for e in w.request("GET", "/api/v1/csf/blacklist").json["data"] if e["ip"] == net.cli4][0]
        assert entry["comment"] == "lfd: CT_LIMIT: 5 connections (limit 3)", entry
        assert 0 < entry["ttl"] <= 30, entry
        assert not net.can_connect(API, timeout=0.5), "a new connection is dropped"
        alerts = w.request("GET", "/api/v1/csf/alerts").json["data"]["alerts"]
        assert any(a["kind"] == "ct_limit" and a["ip"] == net.cli4 for a in alerts), alerts
        st = w.request("GET", "/api/v1/csf/conntrack/status").json["data"]["limit"]
        assert st["enabled"] and st["bans_total"] == 1 and st["top_ip"] == net.cli4 and st["top_count"] == 5, st
        check = w.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}").json["data"]
        assert check["blocked"], check
    finally:
        for proc in (p, q, p2):
            proc.kill()
