"""CONNLIMIT and PORTFLOOD against the real kernel in namespaces the tests create: the 4th
concurrent connection of a 3-limit port is reset while another source still connects; the
(hits+1)th new connection in the window is dropped, the block lasts while the source keeps
trying (shown in check-ip, with one alert) and lifts once it has been quiet for the window. Both live in dynamic sets the packet
path updates: the table has a rule per port and family, none per source."""

import json
import os
import time

import pytest

from conftest import assert_envelope
from netns import nft, sh, wait_until
from test_conntrack import net, start  # noqa: F401  (the fixture and the server)
from test_synflood import ECHO, echo_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def client(net, code, source=None):
    """Runs `code` in the client namespace with `connect(timeout)` -> 'ok' | 'reset' | 'timeout'."""
    prelude = f"""
import json, socket, time
def connect(timeout=0.5, hold=None):
    s = socket.socket()
    {"s.bind(('" + source + "', 0))" if source else ""}
    s.settimeout(timeout)
    try:
        s.connect(('{net.srv4}', {ECHO}))
        s.sendall(b'x'); s.recv(1)
    except ConnectionResetError: return 'reset'
    except ConnectionRefusedError: return 'reset'
    except (socket.timeout, TimeoutError): return 'timeout'
    if hold is not None: hold.append(s)
    else: s.close()
    return 'ok'
"""
    r = sh("python3", "-c", prelude + code, ns=net.cli, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def status(w):
    r = w.request("GET", "/api/v1/csf/portflood/status")
    assert r.status == 200, r.json
    return r.json["data"]


def test_connlimit_resets_the_connection_over_the_limit(net, make_wispd):  # noqa: F811
    w = start(make_wispd)
    srv = echo_server(net.srv4)
    try:
        assert w.request("POST", "/api/v1/csf/ports/", body={"port": ECHO, "protocol": "tcp", "direction": "in"}).status == 201
        for bad in ("22", "22;0", "0;5", "x;5", "22;5,22;6", "22;5;1"):
            assert_envelope(w.request("PUT", "/api/v1/csf/config", body={"CONNLIMIT": bad}), 400, "VALIDATION_ERROR")
        assert w.request("PUT", "/api/v1/csf/config", body={"CONNLIMIT": f"{ECHO};3"}).status == 200
        sh("ip", "addr", "add", f"10.231.{net.n}.3/24", "dev", "veth1", ns=net.cli)
        got = client(net, """
held = []
first = [connect(hold=held) for _ in range(3)]
fourth = connect()
print(json.dumps({"first": first, "fourth": fourth}))
""")
        assert got == {"first": ["ok", "ok", "ok"], "fourth": "reset"}, got
        # another source is counted on its own; once the three are closed, the first connects again
        other = client(net, "print(json.dumps([connect() for _ in range(3)]))", source=f"10.231.{net.n}.3")
        assert other == ["ok", "ok", "ok"], other
        assert wait_until(lambda: client(net, "print(json.dumps(connect()))") == "ok", timeout=10)
        st = status(w)
        assert st["enabled"] and st["applied"] and st["connlimit"][0]["port"] == ECHO and st["connlimit"][0]["limit"] == 3, st
        rules = nft("list", "chain", "inet", "wispd", "input").stdout
        assert "ct count over 3" in rules and net.cli4 not in rules, rules
    finally:
        srv.close()


def test_portflood_blocks_until_the_source_is_quiet(net, make_wispd):  # noqa: F811
    w = start(make_wispd)
    srv = echo_server(net.srv4)
    try:
        assert w.request("POST", "/api/v1/csf/ports/", body={"port": ECHO, "protocol": "tcp", "direction": "in"}).status == 201
        for bad in ("80;tcp;5", "80;icmp;5;3", "80;tcp;0;3", "80;tcp;5;0", "80;tcp;5;100000"):
            assert_envelope(w.request("PUT", "/api/v1/csf/config", body={"PORTFLOOD": bad}), 400, "VALIDATION_ERROR")
        assert w.request("PUT", "/api/v1/csf/config", body={"PORTFLOOD": f"{ECHO};tcp;5;3"}).status == 200
        got = client(net, "print(json.dumps([connect() for _ in range(6)]))")
        assert got == ["ok"] * 5 + ["timeout"], got
        st = status(w)
        [entry] = st["portflood"]
        assert (entry["port"], entry["protocol"], entry["hits"], entry["seconds"]) == (ECHO, "tcp", 5, 3), entry
        assert [b["ip"] for b in entry["blocked"]] == [net.cli4] and 0 < entry["blocked"][0]["expires_in"] <= 3, entry
        # trying again within the window keeps it blocked past the first window's end
        got = client(net, """
out = []
for _ in range(5):
    out.append(connect(timeout=0.3)); time.sleep(0.5)
print(json.dumps(out))
""")
        assert got == ["timeout"] * 5, got
        # the block shows in check-ip, and upkeep raised an alert for it
        check = w.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}").json["data"]
        assert any(m["list"] == "portflood" and m["name"] == f"{ECHO}/tcp" for m in check["matches"]), check
        alerts = w.request("GET", "/api/v1/csf/alerts").json["data"]["alerts"]
        assert [a["kind"] for a in alerts if a["ip"] == net.cli4] == ["portflood"], alerts
        # quiet for the window: let through again
        time.sleep(3.5)
        assert client(net, "print(json.dumps(connect()))") == "ok"
        assert status(w)["portflood"][0]["blocked_count"] == 0
        # the sources are set elements; no rule names one
        rules = nft("list", "chain", "inet", "wispd", "input").stdout
        assert f"@pfb4_tcp{ECHO}" in rules and net.cli4 not in rules, rules
    finally:
        srv.close()
