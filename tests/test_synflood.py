"""SYNFLOOD against the real kernel in namespaces the tests create: a burst of new connections
from the client namespace is cut to the configured rate and burst by one `limit` rule (no rule
per address), an established connection keeps working through the burst, and the kernel's drop
counter shows in `/csf/synflood/status`."""

import json
import os
import socket
import threading

import pytest

from conftest import assert_envelope
from netns import nft, sh
from test_conntrack import net, start  # noqa: F401  (the fixture and the server)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

ECHO = 18091


def echo_server(host):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, ECHO))
    srv.listen(1024)

    def serve(c):
        with c:
            while data := c.recv(4096):
                c.sendall(data)

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    return srv


def burst(net, n):
    """From the client namespace: holds one connection, fires `n` new ones at once, counts those
    that complete within 0.7 s (a dropped SYN is retried only after 1 s), then checks the held
    one still echoes."""
    code = f"""
import json, select, socket, time
held = socket.create_connection(('{net.srv4}', {ECHO}), timeout=5)
socks = []
for _ in range({n}):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(('{net.srv4}', {ECHO}))
    except BlockingIOError: pass
    socks.append(s)
deadline = time.time() + 0.7
pending = list(socks); done = 0
while pending and time.time() < deadline:
    _, w, _ = select.select([], pending, [], 0.05)
    for s in w:
        pending.remove(s)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0: done += 1
held.sendall(b'still here'); echoed = held.recv(100)
print(json.dumps({{"connected": done, "echoed": echoed.decode()}}))
"""
    r = sh("python3", "-c", code, ns=net.cli, check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_synflood_limits_new_connections_and_established_traffic_goes_on(net, make_wispd):  # noqa: F811
    w = start(make_wispd)
    srv = echo_server(net.srv4)
    try:
        r = w.request("POST", "/api/v1/csf/ports/", body={"port": ECHO, "protocol": "tcp", "direction": "in"})
        assert r.status == 201, r.json
        off = w.request("GET", "/api/v1/csf/synflood/status").json["data"]
        assert off["enabled"] is False and off["rate"] == "100/s" and off["burst"] == 150, off
        assert burst(net, 40)["connected"] == 40, "no limit while SYNFLOOD is 0"

        for key, bad in (("SYNFLOOD_RATE", "fast"), ("SYNFLOOD_RATE", "0/s"), ("SYNFLOOD_BURST", "0"),
                         ("SYNFLOOD", "2"), ("SYNFLOOD_RATE", "99999999999/s")):
            assert_envelope(w.request("PUT", "/api/v1/csf/config", body={key: bad}), 400, "VALIDATION_ERROR")
        r = w.request("PUT", "/api/v1/csf/config", body={"SYNFLOOD": "1", "SYNFLOOD_RATE": "2/s", "SYNFLOOD_BURST": "6"})
        assert r.status == 200, r.json
        got = burst(net, 40)
        assert 1 <= got["connected"] <= 12, got
        assert got["echoed"] == "still here", got
        st = w.request("GET", "/api/v1/csf/synflood/status").json["data"]
        assert st["enabled"] and st["rate"] == "2/s" and st["burst"] == 6, st
        assert st["dropped_packets"] >= 40 - 12 and st["dropped_bytes"] > 0, st
        # one rule for everyone: a kernel limit, not a rule per source
        rules = nft("list", "chain", "inet", "wispd", "input").stdout
        assert "limit rate over 2/second burst 6 packets" in rules, rules
        assert rules.count("limit rate over") == 1 and net.cli4 not in rules, rules
    finally:
        srv.close()
