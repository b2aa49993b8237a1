"""Port-scan detection against the real kernel in namespaces the tests create: a client that
knocks on PS_LIMIT closed ports is banned through the blacklist (check-ip, an alert,
`/csf/portscan/status`), its next connection to an open port is dropped; hits on one port
don't ban while PS_DIVERSITY asks for more ports; the candidates reach lfd over NFLOG from one
rule per protocol and family, with no rule per source."""

import json
import os

import pytest

from conftest import assert_envelope
from netns import nft, sh, wait_until
from test_conntrack import API, net, start  # noqa: F401  (the fixture and the server)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def knock(net, ports, source=None):
    """A SYN to each port from the client namespace (a dropped one times out after 0.3 s)."""
    code = f"""
import json, socket
out = []
for p in {list(ports)}:
    s = socket.socket(); s.settimeout(0.3)
    {"s.bind(('" + source + "', 0))" if source else ""}
    try: s.connect(('{net.srv4}', p)); out.append('open')
    except ConnectionRefusedError: out.append('refused')
    except OSError: out.append('dropped')
    s.close()
print(json.dumps(out))
"""
    r = sh("python3", "-c", code, ns=net.cli, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def blacklisted(w, ip):
    return ip in {e["ip"] for e in w.request("GET", "/api/v1/csf/blacklist").json["data"]}


def test_a_port_scan_is_banned_and_one_port_hammered_is_not_with_diversity(net, make_wispd):  # noqa: F811
    w = start(make_wispd)
    off = w.request("GET", "/api/v1/csf/portscan/status").json["data"]
    assert off["enabled"] is False and off["settings"]["limit"] == 10 and off["settings"]["icmp"] is True, off
    for key, bad in (("PS_LIMIT", "x"), ("PS_PORTS", "70000"), ("PS_DIVERSITY", "0"),
                     ("PS_BLOCK_TIME", "-5"), ("PS_INTERVAL", "99999999")):
        assert_envelope(w.request("PUT", "/api/v1/csf/config", body={key: bad}), 400, "VALIDATION_ERROR")
    r = w.request("PUT", "/api/v1/csf/config", body={
        "PS_INTERVAL": "60", "PS_LIMIT": "5", "PS_DIVERSITY": "3", "PS_PORTS": "1:65535", "PS_BLOCK_TIME": "30"})
    assert r.status == 200, r.json
    assert wait_until(lambda: w.request("GET", "/api/v1/csf/portscan/status").json["data"]["running"], timeout=10)
    # one closed port, again and again: one port is not a scan while PS_DIVERSITY is 3
    assert knock(net, [30001] * 6) == ["dropped"] * 6
    assert not wait_until(lambda: blacklisted(w, net.cli4), timeout=2)
    # five closed ports: banned
    assert knock(net, range(30002, 30007)) == ["dropped"] * 5
    assert wait_until(lambda: blacklisted(w, net.cli4), timeout=5)
    entry = [e for e in w.request("GET", "/api/v1/csf/blacklist").json["data"] if e["ip"] == net.cli4][0]
    assert entry["comment"].startswith("lfd: port scan: 5 hits on closed ports in 60s"), entry
    assert 0 < entry["ttl"] <= 30, entry
    assert not knock(net, [API]) == ["open"], "the open API port is closed to it now"
    check = w.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}").json["data"]
    assert check["blocked"], check
    alerts = w.request("GET", "/api/v1/csf/alerts").json["data"]["alerts"]
    assert any(a["kind"] == "portscan" and a["ip"] == net.cli4 for a in alerts), alerts
    st = w.request("GET", "/api/v1/csf/portscan/status").json["data"]
    assert st["enabled"] and st["bans_total"] == 1 and st["last_ban_ip"] == net.cli4, st
    assert st["packets_seen"] >= 8 and st["group"] == 7331, st
    rules = nft("list", "chain", "inet", "wispd", "input").stdout
    assert "log group 7331" in rules and net.cli4 not in rules, rules
