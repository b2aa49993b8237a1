"""The firewall against the real kernel, inside network namespaces the tests create: real TCP
connections from a client namespace to a server namespace where wispd programs nftables."""

import itertools
import json
import os
import socket
import threading
import time

import pytest

from conftest import assert_envelope
from netns import Pair, nft, sh, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

_counter = itertools.count(1)

FW_CONFIG = """
hostname = "mail.test.example"
[api]
listen = "127.0.0.1:0"
rate_limit_per_minute = 100000
[smtp]
listen = []
submission = []
submissions = []
[imap]
listen = []
imaps = []
[pop3]
listen = []
pop3s = []
[sieve]
listen = []
[firewall]
enabled = true
table = "wispd"
"""

APP_PORT = 8088


class Listener:
    """A dual-stack TCP server in the server namespace that accepts and closes."""

    def __init__(self, port):
        self.sock = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                c.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def net():
    pair = Pair(next(_counter) + (os.getpid() % 200)).create()
    pair.enter()
    listener = Listener(APP_PORT)
    try:
        yield pair
    finally:
        listener.close()
        pair.leave()
        pair.destroy()


@pytest.fixture
def fw(net, make_wispd):
    """wispd in the server namespace with TESTING off (restrictive policy in force) and the app port open."""
    w = make_wispd(config=FW_CONFIG, firewall=True)
    r = w.request("PUT", "/api/v1/csf/config", body={"TESTING": "0"})
    assert r.status == 200, r
    r = w.request("POST", "/api/v1/csf/ports/", body={"port": APP_PORT, "protocol": "tcp", "direction": "in"})
    assert r.status == 201, r
    assert net.can_connect(APP_PORT) and net.can_connect(APP_PORT, v6=True)
    return w


def ruleset():
    return json.loads(nft("-j", "list", "ruleset").stdout or "{}")


def set_elements(name):
    out = nft("-j", "list", "set", "inet", "wispd", name).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return item["set"].get("elem", [])
    return []


def test_ban_blocks_a_real_connection_and_delete_unblocks(net, fw):
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4, "comment": "bruteforce"})
    assert r.status == 201, r
    assert r.json["data"] == {"ip": net.cli4, "comment": "bruteforce", "ttl": 0,
                              "created_at": r.json["data"]["created_at"], "expires_at": None}
    assert not net.can_connect(APP_PORT), "banned client must not connect"
    assert net.can_connect(APP_PORT, v6=True), "the v6 address is not banned"
    listing = fw.request("GET", "/api/v1/csf/blacklist")
    assert [e["ip"] for e in listing.json["data"]] == [net.cli4]
    assert fw.request("DELETE", f"/api/v1/csf/blacklist/{net.cli4}").status == 200
    assert net.can_connect(APP_PORT)
    assert_envelope(fw.request("DELETE", f"/api/v1/csf/blacklist/{net.cli4}"), 404, "NOT_FOUND")


def test_ttl_ban_expires_by_itself_in_the_kernel(net, fw):
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4, "ttl": 4})
    assert r.status == 201 and r.json["data"]["ttl"] == 4 and r.json["data"]["expires_at"]
    elems = set_elements("blacklist4")
    assert elems and "timeout" in json.dumps(elems), "the element carries its own kernel timeout"
    assert not net.can_connect(APP_PORT, timeout=0.5)
    # nothing but the kernel's timeout lifts it: no API call from here on
    assert wait_until(lambda: net.can_connect(APP_PORT, timeout=0.5), timeout=15, step=0.5)
    assert fw.request("GET", "/api/v1/csf/blacklist").json["data"] == []


def test_cidr_and_ipv6_bans(net, fw):
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": f"10.231.{net.n}.2/31"}).status == 201
    assert not net.can_connect(APP_PORT)
    assert net.can_connect(APP_PORT, v6=True)
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": f"{net.cli6}/127"}).status == 201
    assert not net.can_connect(APP_PORT, v6=True)
    check = fw.request("GET", f"/api/v1/csf/check-ip?ip={net.cli6}").json["data"]
    assert check["blacklisted"] and check["blocked"] and check["matches"][0]["entry"] == f"{net.cli6}/127"
    assert fw.request("DELETE", f"/api/v1/csf/blacklist/{net.cli6}/127").status == 200
    assert net.can_connect(APP_PORT, v6=True)


def test_unsafe_bans_are_refused(net, fw):
    for ip, part in [("127.0.0.1", "loopback"), ("::1", "loopback"), (net.srv4, "own address"),
                     (f"10.231.{net.n}.0/24", "own address"), ("0.0.0.0/0", "loopback")]:
        r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": ip})
        assert_envelope(r, 400, "VALIDATION_ERROR")
        assert part in r.json["message"], r.json
    for body, msg in [({}, "IP address is required"), ({"ip": "1.2.3.999"}, 'Invalid IP address or CIDR: "1.2.3.999"'),
                      ({"ip": "1.2.3.4", "ttl": -5}, "TTL must be between 0 (permanent) and 315360000 seconds"),
                      ({"ip": "1.2.3.4", "ttl": 10**12}, "TTL must be between 0 (permanent) and 315360000 seconds"),
                      ({"ip": "1.2.3.4", "comment": "x" * 300}, "Comment must be at most 255 printable characters")]:
        assert_envelope(fw.request("POST", "/api/v1/csf/blacklist", body=body), 400, "VALIDATION_ERROR", msg)


def test_whitelist_beats_blacklist(net, fw):
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": f"10.231.{net.n}.2/31"}).status == 201
    assert not net.can_connect(APP_PORT)
    assert fw.request("POST", "/api/v1/csf/whitelist", body={"ip": net.cli4, "comment": "office"}).status == 201
    assert net.can_connect(APP_PORT), "whitelist accept comes before blacklist drop"
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "whitelisted" in r.json["message"]
    check = fw.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}").json["data"]
    assert check["whitelisted"] and check["blacklisted"] and not check["blocked"]
    assert {m["list"] for m in check["matches"]} == {"whitelist", "blacklist"}


def test_ports_open_and_close(net, fw):
    other = 8099
    extra = Listener(other)
    try:
        assert not net.can_connect(other), "a port outside TCP_IN is dropped by the policy"
        assert fw.request("POST", "/api/v1/csf/ports/", body={"port": "8090:8100", "protocol": "tcp", "direction": "in"}).status == 201
        assert net.can_connect(other) and net.can_connect(other, v6=True)
        ports = fw.request("GET", "/api/v1/csf/ports/").json["data"]
        assert {"port": "8090:8100", "protocol": "tcp", "direction": "in"} in ports
        assert fw.request("DELETE", "/api/v1/csf/ports/8090:8100?protocol=tcp&direction=in").status == 200
        assert not net.can_connect(other)
        assert "8090" not in fw.request("GET", "/api/v1/csf/config").json["data"]["TCP_IN"]
    finally:
        extra.close()


def test_config_put_validates_every_key_and_changes_nothing_on_error(net, fw):
    before = fw.request("GET", "/api/v1/csf/config").json["data"]
    r = fw.request("PUT", "/api/v1/csf/config", body={"TCP_IN": "22,abc", "TESTING": "maybe", "NOPE": 1})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "NOPE" in r.json["message"]
    r = fw.request("PUT", "/api/v1/csf/config", body={"TCP_IN": "22,abc", "TESTING": "maybe"})
    assert "TCP_IN" in r.json["message"] and "TESTING" in r.json["message"]
    assert fw.request("GET", "/api/v1/csf/config").json["data"] == before
    assert net.can_connect(APP_PORT)


def test_drop_rule_drops_and_reject_rejects(net, fw):
    r = fw.request("POST", "/api/v1/firewall/rules", body={"chain": "INPUT", "protocol": "tcp", "port": APP_PORT, "action": "DROP"})
    assert r.status == 201, r
    rule = r.json["data"]
    assert rule["id"] >= 1 and rule["port"] == APP_PORT and rule["action"] == "DROP"
    assert not net.can_connect(APP_PORT)
    assert fw.request("DELETE", f"/api/v1/firewall/rules/{rule['id']}").status == 200
    assert net.can_connect(APP_PORT)
    r = fw.request("POST", "/api/v1/firewall/rules", body={"chain": "INPUT", "protocol": "tcp", "port": APP_PORT, "source": net.cli4, "action": "REJECT"})
    assert r.status == 201
    t0 = time.monotonic()
    assert not net.can_connect(APP_PORT, timeout=3)
    assert time.monotonic() - t0 < 2, "REJECT answers with a reset at once"
    assert net.can_connect(APP_PORT, v6=True)
    assert_envelope(fw.request("POST", "/api/v1/firewall/rules", body={"chain": "FORWARD", "action": "DROP", "protocol": "tcp"}), 400, "VALIDATION_ERROR")
    assert_envelope(fw.request("DELETE", "/api/v1/firewall/rules/999"), 404, "NOT_FOUND")


def test_toggle_off_passes_everything_and_keeps_state(net, fw):
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4}).status == 201
    r = fw.request("POST", "/api/v1/firewall/toggle", body={"enabled": False})
    assert r.status == 200 and r.json["data"]["enabled"] is False
    assert net.can_connect(APP_PORT)
    assert "wispd" not in nft("list", "tables").stdout
    assert fw.request("GET", "/api/v1/csf/blacklist").json["data"][0]["ip"] == net.cli4
    assert fw.request("POST", "/api/v1/firewall/toggle", body={"enabled": True}).status == 200
    assert not net.can_connect(APP_PORT)


def test_permanent_ban_survives_restart_and_table_stays_while_stopped(net, fw):
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4}).status == 201
    assert fw.stop()[0] == 0
    assert not net.can_connect(APP_PORT), "protection continues while wispd is stopped"
    fw.start()
    assert not net.can_connect(APP_PORT)
    assert [e["ip"] for e in fw.request("GET", "/api/v1/csf/blacklist").json["data"]] == [net.cli4]


def test_other_tables_are_untouched_and_a_deleted_table_is_restored(net, fw):
    sh("bash", "-c", "nft 'add table inet other'; nft 'add chain inet other keep { type filter hook input priority 10; policy accept; }'; nft 'add rule inet other keep tcp dport 9999 counter accept'")
    before = nft("list", "table", "inet", "other").stdout
    assert "dport 9999" in before
    assert fw.request("POST", "/api/v1/csf/reload").status == 200
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4}).status == 201
    assert nft("list", "table", "inet", "other").stdout == before
    nft("delete", "table", "inet", "wispd")
    assert wait_until(lambda: "table inet wispd" in nft("list", "tables").stdout, timeout=10)
    assert wait_until(lambda: not net.can_connect(APP_PORT, timeout=0.5), timeout=5), "ban restored with the table"
    nft("flush", "table", "inet", "wispd")
    assert wait_until(lambda: "blacklist4" in nft("list", "chain", "inet", "wispd", "input").stdout, timeout=10)
    assert nft("list", "table", "inet", "other").stdout == before


def test_status_reports_the_engine(net, fw):
    st = fw.request("GET", "/api/v1/firewall/status").json["data"]
    assert st["available"] is True and st["enabled"] is True and st["policy"] == "drop"
    assert st["table"] == "inet wispd" and st["testing"] is False
    csf = fw.request("GET", "/api/v1/csf/status").json
    assert csf["success"] is True
    assert set(csf["data"]) >= {"alerts", "alerts_24h", "blacklist_count", "blocklist"}
    assert csf["data"]["blacklist_count"] == 0
    names = [b["name"] for b in csf["data"]["blocklist"]["blocklists"]]
    assert names == ["spamhaus_drop", "spamhaus_dropv6"]


def test_fresh_install_keeps_ssh_api_and_mail_ports_with_testing_on(net, make_wispd):
    w = make_wispd(config=FW_CONFIG.replace('listen = []\nsubmission', 'listen = ["127.0.0.1:2525"]\nsubmission'), firewall=True)
    cfg = w.request("GET", "/api/v1/csf/config").json["data"]
    ports = cfg["TCP_IN"].split(",")
    assert "22" in ports and str(w.port) in ports and "2525" in ports
    assert cfg["TESTING"] == "1"
    st = w.request("GET", "/api/v1/firewall/status").json["data"]
    assert st["testing"] is True and st["testing_lifts_at"] is not None


def test_without_cap_net_admin_everything_is_kept_and_status_says_why(net):
    import subprocess, tempfile, pathlib, shutil
    from conftest import WISPD_BIN, Wispd
    assert sh("which", "setpriv", check=False).returncode == 0, "setpriv (util-linux) is required"
    base = pathlib.Path(tempfile.mkdtemp(prefix="wispd-nocap-"))
    os.chmod(base, 0o777)
    w = Wispd(base, FW_CONFIG)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
           WISPD_BIN, "serve", "--config", str(w.config_path), "--data-dir", str(w.data_dir)]
    import conftest
    w.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 20
    for line in w.proc.stderr:
        lines.append(line)
        m = conftest.READY.search(line)
        if m:
            w.scheme, w.host, w.port = m.group(1), m.group(2), int(m.group(3))
            break
        assert time.monotonic() < deadline
    assert w.proc.poll() is None, "".join(lines)
    try:
        st = w.request("GET", "/api/v1/firewall/status").json["data"]
        assert st["available"] is False and "CAP_NET_ADMIN" in st["reason"], st
        assert w.request("POST", "/api/v1/csf/blacklist", body={"ip": "198.51.100.7"}).status == 201
        assert w.request("GET", "/api/v1/csf/blacklist").json["data"][0]["ip"] == "198.51.100.7"
        assert w.request("GET", "/api/v1/tokens").status == 200
        assert w.proc.poll() is None
    finally:
        w.proc.kill()
        w.proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_deny_ip_limit_rotates_the_oldest_ban_out(net, fw):
    assert fw.request("PUT", "/api/v1/csf/config", body={"DENY_IP_LIMIT": 2, "DENY_TEMP_IP_LIMIT": 1}).status == 200
    for ip in ["192.0.2.1", "192.0.2.3", net.cli4]:
        assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": ip}).status == 201
        time.sleep(1.05)  # distinct created_at seconds: "oldest" is well defined
    ips = [e["ip"] for e in fw.request("GET", "/api/v1/csf/blacklist").json["data"]]
    assert ips == ["192.0.2.3", net.cli4]
    assert not net.can_connect(APP_PORT)
    elems = json.dumps(set_elements("blacklist4"))
    assert "192.0.2.1" not in elems and "192.0.2.3" in elems
    # temporary bans have their own limit and leave permanent ones alone
    for ip in ["198.51.100.1", "198.51.100.3"]:
        assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": ip, "ttl": 600}).status == 201
    ips = [e["ip"] for e in fw.request("GET", "/api/v1/csf/blacklist").json["data"]]
    assert ips == ["192.0.2.3", net.cli4, "198.51.100.3"]


def test_readding_an_address_updates_its_ttl_and_comment(net, fw):
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4, "ttl": 2, "comment": "first"}).status == 201
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4, "comment": "now permanent"})
    assert r.status == 201 and r.json["data"]["ttl"] == 0
    time.sleep(2.5)
    assert not net.can_connect(APP_PORT), "the permanent ban replaced the 2 s one"
    data = fw.request("GET", "/api/v1/csf/blacklist").json["data"]
    assert [(e["ip"], e["comment"]) for e in data] == [(net.cli4, "now permanent")]


def test_caller_cannot_ban_itself_without_force(net, make_wispd):
    w = make_wispd(config=FW_CONFIG.replace('listen = "127.0.0.1:0"', f'listen = "{net.srv4}:0"'), firewall=True)
    assert w.request("PUT", "/api/v1/csf/config", body={"TESTING": "0"}).status == 200
    token = w.admin_token
    url = f"https://{net.srv4}:{w.port}/api/v1/csf/blacklist"

    def from_client(body):
        r = sh("curl", "-sk", "-m", "3", "-H", f"Authorization: Bearer {token}", "-d", json.dumps(body), url, ns=net.cli, check=False)
        return json.loads(r.stdout) if r.stdout else None

    r = from_client({"ip": net.cli4})
    assert r["status"] == 400 and "your own address" in r["message"] and '"force": true' in r["message"], r
    r = from_client({"ip": net.cli4, "force": True})
    assert r["success"] is True, r
    assert from_client({"ip": "192.0.2.9"}) is None, "the caller banned itself: the API is out of reach now"


def test_testing_mode_lifts_the_restrictive_policy_after_the_interval(net, make_wispd):
    w = make_wispd(config=FW_CONFIG, firewall=True)
    r = w.request("PUT", "/api/v1/csf/config", body={"TESTING": "1", "TESTING_INTERVAL": "1"})
    assert r.status == 200
    st = w.request("GET", "/api/v1/firewall/status").json["data"]
    assert st["policy"] == "drop" and st["testing_lifts_at"]
    assert not net.can_connect(APP_PORT), "port not in TCP_IN: dropped while TESTING counts down"
    assert w.request("POST", "/api/v1/csf/blacklist", body={"ip": f"fd00:231:{net.n}::2"}).status == 201
    assert wait_until(lambda: net.can_connect(APP_PORT, timeout=0.5), timeout=75, step=2), "policy lifted after 1 minute"
    st = w.request("GET", "/api/v1/firewall/status").json["data"]
    assert st["policy"] == "accept" and st["testing"] is True
    assert not net.can_connect(APP_PORT, v6=True), "the lists still drop while TESTING has lifted the policy"
    # turning TESTING off makes the restrictive policy permanent
    assert w.request("PUT", "/api/v1/csf/config", body={"TESTING": "0"}).status == 200
    assert not net.can_connect(APP_PORT)


# -- regressions from the outside security probe -------------------------------------------------

def remote_wispd(net, make_wispd):
    """wispd whose API listens on the server's veth address, so a client namespace can call it: a
    caller the firewall filters (loopback callers are accepted before any rule)."""
    w = make_wispd(config=FW_CONFIG.replace('listen = "127.0.0.1:0"', f'listen = "{net.srv4}:0"'), firewall=True)
    token = w.admin_token

    def call(method, path, body=None):
        args = ["curl", "-sk", "-m", "3", "-X", method, "-H", f"Authorization: Bearer {token}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        r = sh(*args, f"https://{net.srv4}:{w.port}{path}", ns=net.cli, check=False)
        return json.loads(r.stdout) if r.stdout else None

    return w, call


def assert_needs_force(r, *parts):
    assert r is not None and r["status"] == 400 and r["code"] == "VALIDATION_ERROR", r
    assert '"force": true' in r["message"], r
    for p in parts:
        assert p in r["message"], r


def test_ipv4_mapped_ban_drops_the_ipv4_client(net, fw):
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": f"::ffff:{net.cli4}"})
    assert r.status == 201, r
    assert r.json["data"]["ip"] == net.cli4
    assert set_elements("blacklist4") and not set_elements("blacklist6")
    assert not net.can_connect(APP_PORT), "the mapped ban must drop the IPv4 client"
    assert net.can_connect(APP_PORT, v6=True)
    check = fw.request("GET", f"/api/v1/csf/check-ip?ip=::ffff:{net.cli4}").json["data"]
    assert check["ip"] == net.cli4 and check["blacklisted"] and check["blocked"], check
    assert fw.request("DELETE", f"/api/v1/csf/blacklist/::ffff:{net.cli4}").status == 200
    assert net.can_connect(APP_PORT)
    # a mapped CIDR is the IPv4 CIDR with prefix - 96
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": f"::ffff:10.231.{net.n}.2/127"})
    assert r.status == 201 and r.json["data"]["ip"] == f"10.231.{net.n}.2/31", r
    assert not net.can_connect(APP_PORT)
    # and the whitelist, the same way
    assert fw.request("POST", "/api/v1/csf/whitelist", body={"ip": f"::ffff:{net.cli4}"}).status == 201
    assert net.can_connect(APP_PORT)
    assert [e["ip"] for e in fw.request("GET", "/api/v1/csf/whitelist").json["data"]] == [net.cli4]


def test_ipv4_mapped_loopback_is_refused_like_loopback(net, fw):
    for ip in ["::ffff:127.0.0.1", "::ffff:127.0.0.0/104", f"::ffff:{net.srv4}"]:
        r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": ip, "force": True})
        assert_envelope(r, 400, "VALIDATION_ERROR")
        assert "loopback" in r.json["message"] or "own address" in r.json["message"], r.json


def test_ipv4_mapped_rule_source_matches_ipv4_traffic(net, fw):
    r = fw.request("POST", "/api/v1/firewall/rules",
                   body={"chain": "INPUT", "protocol": "tcp", "port": APP_PORT, "source": f"::ffff:{net.cli4}", "action": "DROP"})
    assert r.status == 201, r
    assert r.json["data"]["source"] == net.cli4
    assert not net.can_connect(APP_PORT)
    assert net.can_connect(APP_PORT, v6=True)


def test_config_that_closes_the_api_port_to_the_caller_needs_force(net, make_wispd):
    w, call = remote_wispd(net, make_wispd)
    port = str(w.port)
    assert_needs_force(call("PUT", "/api/v1/csf/config", {"TCP_IN": "22", "TESTING": "0"}), "TCP_IN", port, net.cli4)
    # TESTING 1 re-arms the drop policy for TESTING_INTERVAL minutes with every change: a lockout too
    assert_needs_force(call("PUT", "/api/v1/csf/config", {"TCP_IN": "22"}), "until TESTING lifts")
    assert_needs_force(call("DELETE", f"/api/v1/csf/ports/{port}?protocol=tcp&direction=in"), port)
    assert port in call("GET", "/api/v1/csf/config")["data"]["TCP_IN"].split(","), "nothing changed"
    # turning the firewall restrictive while the port is closed is caught as well
    assert call("POST", "/api/v1/firewall/toggle", {"enabled": False})["success"] is True
    assert call("PUT", "/api/v1/csf/config", {"TCP_IN": "22", "TESTING": "0"})["success"] is True, "off: nobody is shut out"
    assert_needs_force(call("POST", "/api/v1/firewall/toggle", {"enabled": True}), "TCP_IN", port)
    # forced: its own answer may already be dropped (the connection predates the table, so
    # conntrack never saw it established)
    call("POST", "/api/v1/firewall/toggle", {"enabled": True, "force": True})
    st = w.request("GET", "/api/v1/firewall/status").json["data"]
    assert st["enabled"] is True and st["policy"] == "drop", st
    assert call("GET", "/api/v1/csf/config") is None, "the caller really is locked out now"
    # a loopback caller can't be shut out (lo is accepted first), so it needs no force
    assert w.request("PUT", "/api/v1/csf/config", body={"TCP_IN": "22,8088"}).status == 200


def test_rule_that_shuts_the_caller_out_needs_force(net, make_wispd):
    w, call = remote_wispd(net, make_wispd)
    api = w.port
    for body, part in [
        ({"chain": "INPUT", "protocol": "tcp", "port": api, "source": net.cli4, "action": "DROP"}, "your own address"),
        ({"chain": "INPUT", "protocol": "tcp", "port": api, "source": f"10.231.{net.n}.0/24", "action": "REJECT"}, "your own address"),
        ({"chain": "INPUT", "protocol": "tcp", "port": api, "action": "DROP"}, "every API client"),
        ({"chain": "INPUT", "protocol": "tcp", "source": "0.0.0.0/0", "action": "DROP"}, "every TCP port"),
        ({"chain": "INPUT", "protocol": "all", "source": "::/0", "action": "REJECT"}, "every API client"),
        ({"chain": "OUTPUT", "protocol": "all", "source": "0.0.0.0/0", "action": "DROP"}, "cuts the server off"),
    ]:
        assert_needs_force(call("POST", "/api/v1/firewall/rules", body), part)
    assert call("GET", "/api/v1/firewall/rules")["data"] == []
    # narrow rules need no force
    r = call("POST", "/api/v1/firewall/rules", {"chain": "INPUT", "protocol": "tcp", "port": APP_PORT, "action": "DROP"})
    assert r["success"] is True, r
    r = call("POST", "/api/v1/firewall/rules",
             {"chain": "INPUT", "protocol": "tcp", "port": api, "source": net.cli4, "action": "REJECT", "force": True})
    assert r["success"] is True, r
    assert call("GET", "/api/v1/firewall/rules") is None, "forced: the caller is rejected now"
    assert len(w.request("GET", "/api/v1/firewall/rules").json["data"]) == 2


def test_very_short_prefix_ban_needs_force(net, fw):
    for ip, bound in [("128.0.0.0/1", "/8"), ("32.0.0.0/7", "/8"), ("4000::/2", "/32"), ("2001:d00::/24", "/32"),
                      ("::ffff:128.0.0.0/97", "/8")]:
        r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": ip})
        assert_envelope(r, 400, "VALIDATION_ERROR")
        assert f"wider than {bound}" in r.json["message"] and '"force": true' in r.json["message"], r.json
    # 8000::/1 also covers this server's fd00:: address: refused for that, force or not
    assert_envelope(fw.request("POST", "/api/v1/csf/blacklist", body={"ip": "8000::/1", "force": True}), 400, "VALIDATION_ERROR")
    assert fw.request("GET", "/api/v1/csf/blacklist").json["data"] == []
    r = fw.request("POST", "/api/v1/csf/blacklist", body={"ip": "128.0.0.0/1", "force": True})
    assert r.status == 201 and r.json["data"]["ip"] == "128.0.0.0/1", r
    assert net.can_connect(APP_PORT), "10.231.x is outside 128.0.0.0/1"


def test_whitelisting_everything_needs_force(net, fw):
    closed = 8099
    extra = Listener(closed)
    try:
        assert not net.can_connect(closed)
        for ip in ["0.0.0.0/0", "::/0", "10.0.0.0/7", "::ffff:0:0/96"]:
            r = fw.request("POST", "/api/v1/csf/whitelist", body={"ip": ip})
            assert_envelope(r, 400, "VALIDATION_ERROR")
            assert "Refusing to whitelist" in r.json["message"] and '"force": true' in r.json["message"], r.json
        assert fw.request("GET", "/api/v1/csf/whitelist").json["data"] == []
        assert not net.can_connect(closed)
        assert fw.request("POST", "/api/v1/csf/whitelist", body={"ip": "0.0.0.0/0", "force": True}).status == 201
        assert net.can_connect(closed), "the whitelist accepts before the policy drops"
        assert fw.request("DELETE", "/api/v1/csf/whitelist/0.0.0.0/0").status == 200
        assert not net.can_connect(closed)
    finally:
        extra.close()


def ports_text(*parts):
    """A port list as wispd stores it: sorted by first port."""
    return ",".join(sorted((str(p) for p in parts), key=lambda p: int(p.split(":")[0])))


def test_overlapping_port_ranges_merge_instead_of_eexist(net, fw):
    a, b = 8095, 8099
    la, lb = Listener(a), Listener(b)
    try:
        r = fw.request("POST", "/api/v1/csf/ports/", body={"port": "20:25", "protocol": "tcp", "direction": "in"})
        assert r.status == 201, r
        tcp_in = fw.request("GET", "/api/v1/csf/config").json["data"]["TCP_IN"].split(",")
        assert "20:25" in tcp_in and "22" not in tcp_in, tcp_in
        assert fw.request("POST", "/api/v1/csf/ports/", body={"port": "8090:8100", "protocol": "tcp", "direction": "in"}).status == 201
        r = fw.request("POST", "/api/v1/csf/ports/", body={"port": a, "protocol": "tcp", "direction": "in"})
        assert r.status == 201, r
        assert net.can_connect(a) and net.can_connect(b) and net.can_connect(b, v6=True)
        # a csf.conf-style list with overlaps goes in merged, in one PUT
        r = fw.request("PUT", "/api/v1/csf/config",
                       body={"TCP_IN": f"22,20:25,{fw.port},{APP_PORT},8090:8100,{a},8099:8105", "TCP6_IN": f"{APP_PORT},8090:8100,{b}"})
        assert r.status == 200, r
        assert r.json["data"]["TCP_IN"] == ports_text("20:25", fw.port, APP_PORT, "8090:8105")
        assert r.json["data"]["TCP6_IN"] == f"{APP_PORT},8090:8100"
        elems = json.dumps(set_elements("tcp_in"))
        assert "8105" in elems
        # closing one port inside a range splits it
        r = fw.request("DELETE", f"/api/v1/csf/ports/{a}?protocol=tcp&direction=in")
        assert r.status == 200 and r.json["data"]["removed_from"] == 2, r
        tcp_in = fw.request("GET", "/api/v1/csf/config").json["data"]["TCP_IN"]
        assert tcp_in == ports_text("20:25", fw.port, APP_PORT, "8090:8094", "8096:8105")
        assert not net.can_connect(a) and not net.can_connect(a, v6=True)
        assert net.can_connect(b) and net.can_connect(b, v6=True)
    finally:
        la.close()
        lb.close()
