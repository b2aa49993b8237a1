"""Blocklists against the real kernel in namespaces, fed by a local HTTP server."""

import http.server
import itertools
import json
import os
import threading
import time

import pytest

from conftest import assert_envelope
from netns import wait_until
from test_firewall import APP_PORT, FW_CONFIG, fw, net  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


class Source:
    """A local HTTP server (in the server namespace) over a directory, logging what it answered."""

    def __init__(self, root):
        self.root = root
        self.log = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, fmt, *args):
                outer.log.append((self.path, args[1] if len(args) > 1 else ""))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def write(self, name, text):
        path = self.root / name
        path.write_text(text)
        # make each version's Last-Modified differ so conditional GETs see the change
        t = time.time() + len(self.log)
        os.utime(path, (t, t))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def source(net, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    s = Source(root)
    yield s
    s.close()


def create(fw, name, url, **kw):
    r = fw.request("POST", "/api/v1/csf/blocklists/", body={"name": name, "url": url, "interval": 3600, **kw})
    assert r.status == 201, r
    return r.json["data"]


def refresh(fw, name):
    r = fw.request("POST", f"/api/v1/csf/blocklists/{name}/refresh")
    assert r.status == 200, r
    return r.json["data"]


def test_listed_client_is_dropped_a_broken_source_keeps_it_and_a_new_version_frees_it(net, fw, source):
    source.write("drop.txt", f"; Spamhaus DROP List\n10.231.{net.n}.2/31 ; SBL0001\n192.0.2.0/24 ; SBL0002\nnot-an-address\n")
    d = create(fw, "testdrop", source.url("drop.txt"))
    assert set(d) >= {"name", "enabled", "entry_count", "last_error", "last_updated", "url", "interval", "max"}
    d = refresh(fw, "testdrop")
    assert d["entry_count"] == 2 and d["invalid_lines"] == 1 and d["last_error"] == "" and d["last_updated"], d
    assert not net.can_connect(APP_PORT)
    assert net.can_connect(APP_PORT, v6=True)
    check = fw.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}").json["data"]
    assert check["blocklisted"] and check["blocked"]
    assert {"list": "blocklist", "name": "testdrop", "entry": f"10.231.{net.n}.2/31"}.items() <= check["matches"][0].items()

    # the same file again: a conditional GET answered 304, entries unchanged
    d = refresh(fw, "testdrop")
    assert d["entry_count"] == 2 and d["last_error"] == ""
    assert source.log[-1] == ("/drop.txt", "304"), source.log

    # a broken source keeps the previous entries in force and says why
    assert fw.request("PUT", "/api/v1/csf/blocklists/testdrop", body={"url": source.url("missing.txt")}).status == 200
    d = refresh(fw, "testdrop")
    assert d["last_error"] == "HTTP 404" and d["entry_count"] == 2, d
    assert not net.can_connect(APP_PORT)

    # a new version without the network frees the client
    source.write("drop2.txt", "192.0.2.0/24 ; SBL0002\n")
    assert fw.request("PUT", "/api/v1/csf/blocklists/testdrop", body={"url": source.url("drop2.txt")}).status == 200
    d = refresh(fw, "testdrop")
    assert d["entry_count"] == 1 and d["last_error"] == ""
    assert net.can_connect(APP_PORT)

    status = fw.request("GET", "/api/v1/csf/status").json["data"]["blocklist"]["blocklists"]
    mine = [b for b in status if b["name"] == "testdrop"][0]
    assert set(mine) == {"name", "enabled", "entry_count", "last_error", "last_updated"}
    assert mine["entry_count"] == 1


def test_ipv6_json_lines_list_and_disable(net, fw, source):
    lines = [json.dumps({"cidr": f"fd00:231:{net.n}::2/127", "sblid": "SBL9", "rir": "ripencc"}),
             json.dumps({"type": "metadata", "timestamp": 1715446503, "size": 1})]
    source.write("drop_v6.json", "\n".join(lines) + "\n")
    create(fw, "v6drop", source.url("drop_v6.json"))
    d = refresh(fw, "v6drop")
    assert d["entry_count"] == 1 and d["invalid_lines"] == 0, d
    assert not net.can_connect(APP_PORT, v6=True)
    assert net.can_connect(APP_PORT)
    assert fw.request("PUT", "/api/v1/csf/blocklists/v6drop", body={"enabled": False}).status == 200
    assert net.can_connect(APP_PORT, v6=True)
    assert fw.request("PUT", "/api/v1/csf/blocklists/v6drop", body={"enabled": True}).status == 200
    assert not net.can_connect(APP_PORT, v6=True), "the stored copy comes back with the list"
    assert fw.request("DELETE", "/api/v1/csf/blocklists/v6drop").status == 200
    assert net.can_connect(APP_PORT, v6=True)
    assert_envelope(fw.request("DELETE", "/api/v1/csf/blocklists/v6drop"), 404, "NOT_FOUND")


def test_lists_load_from_the_store_at_start_before_any_refresh(net, fw, source):
    source.write("drop.txt", f"10.231.{net.n}.2/31\n")
    create(fw, "keep", source.url("drop.txt"))
    refresh(fw, "keep")
    assert fw.stop()[0] == 0
    source.close()  # the source is gone now
    fw.start()
    assert not net.can_connect(APP_PORT), "last good copy in force right after start"
    d = [b for b in fw.request("GET", "/api/v1/csf/blocklists/").json["data"] if b["name"] == "keep"][0]
    assert d["entry_count"] == 1


def test_blocklist_validation_and_conflicts(net, fw, source):
    for body, msg in [({}, "Name is required"), ({"name": "x"}, "URL is required"),
                      ({"name": "Bad-Name", "url": "http://x/"}, None),
                      ({"name": "ok", "url": "ftp://x/"}, None),
                      ({"name": "ok", "url": "http://x/", "interval": 5}, "Interval must be between 300 and 31536000 seconds"),
                      ({"name": "ok", "url": "http://x/", "max": -1}, "Max must be between 0 (all) and 100000000")]:
        assert_envelope(fw.request("POST", "/api/v1/csf/blocklists/", body=body), 400, "VALIDATION_ERROR", msg)
    create(fw, "dup", source.url("x.txt"))
    assert_envelope(fw.request("POST", "/api/v1/csf/blocklists/", body={"name": "dup", "url": source.url("y.txt")}), 409, "CONFLICT")
    assert_envelope(fw.request("POST", "/api/v1/csf/blocklists/nope/refresh"), 404, "NOT_FOUND")


def test_preconfigured_spamhaus_lists_report_the_fetch_error_without_internet(net, fw):
    def errors():
        lists = fw.request("GET", "/api/v1/csf/blocklists/").json["data"]
        return {b["name"]: b["last_error"] for b in lists if b["name"].startswith("spamhaus")}

    assert set(errors()) == {"spamhaus_drop", "spamhaus_dropv6"}
    assert wait_until(lambda: all(errors().values()), timeout=60, step=1), errors()
    for name, err in errors().items():
        assert "spamhaus.org" in err or "connect" in err, (name, err)


def test_a_million_line_list_loads_with_bounded_memory(net, fw, tmp_path):
    path = tmp_path / "big.netset"
    with open(path, "w") as f:
        f.write("# a FireHOL-style netset\n")
        for i in range(1_000_000):
            a = 0x0B000000 + 2 * i  # 11.0.0.0 upwards, every other address: nothing merges
            f.write(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}\n")
    size = path.stat().st_size
    create(fw, "big", f"file://{path}")
    before = rss_kib(fw.proc.pid)
    t0 = time.monotonic()
    r = fw.request("POST", "/api/v1/csf/blocklists/big/refresh", conn=fw.connection(timeout=300))
    took = time.monotonic() - t0
    assert r.status == 200, r
    d = r.json["data"]
    assert d["entry_count"] == 1_000_000 and d["last_error"] == "", d
    peak = peak_kib(fw.proc.pid)
    grew = peak - before
    print(f"1M-line list: file {size >> 20} MiB, refresh {took:.1f} s, wispd peak RSS grew {grew >> 10} MiB")
    assert grew < 400 * 1024, f"peak RSS grew {grew} KiB for a {size} byte list"
    check = fw.request("GET", "/api/v1/csf/check-ip?ip=11.0.0.200").json["data"]
    assert check["blocklisted"]


def rss_kib(pid):
    return _status(pid, "VmRSS:")


def peak_kib(pid):
    return _status(pid, "VmHWM:")


def _status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def test_country_deny_allow_and_allow_filter(net, fw, source):
    n = net.n
    (source.root / "v4").mkdir()
    (source.root / "v6").mkdir()
    source.write("v4/zz-aggregated.zone", f"10.231.{n}.2/31\n")
    source.write("v6/zz-aggregated.zone", f"fd00:231:{n}::2/127\n")
    source.write("v4/yy-aggregated.zone", "192.0.2.0/24\n")
    source.write("v6/yy-aggregated.zone", "2001:db8::/32\n")
    base = f"http://127.0.0.1:{source.port}"
    r = fw.request("PUT", "/api/v1/csf/config", body={"CC_SOURCE": base + "/v4/{cc}-aggregated.zone",
                                                       "CC6_SOURCE": base + "/v6/{cc}-aggregated.zone",
                                                       "CC_DENY": "ZZ"})
    assert r.status == 200, r
    assert wait_until(lambda: not net.can_connect(APP_PORT, timeout=0.5), timeout=30), "CC_DENY drops the country"
    assert wait_until(lambda: not net.can_connect(APP_PORT, v6=True, timeout=0.5), timeout=15)
    geo = fw.request("GET", "/api/v1/csf/geoip/status").json["data"]
    assert geo["enabled"] and geo["deny"] == ["ZZ"]
    assert geo["countries"][0]["country"] == "ZZ" and geo["countries"][0]["roles"] == ["deny"]
    assert geo["countries"][0]["entry_count"] == 2 and geo["countries"][0]["last_error"] == ""
    check = fw.request("GET", f"/api/v1/csf/check-ip?ip={net.cli4}").json["data"]
    assert check["blocked"] and check["matches"][0]["name"] == "cc_zz"
    names = [b["name"] for b in fw.request("GET", "/api/v1/csf/blocklists/").json["data"]]
    assert not any(x.startswith("cc_") for x in names), "country lists are managed by CC_* only"
    assert_envelope(fw.request("POST", "/api/v1/csf/blocklists/", body={"name": "cc_x", "url": base + "/x"}), 400, "VALIDATION_ERROR")

    # only YY may connect now: the client is elsewhere
    assert fw.request("PUT", "/api/v1/csf/config", body={"CC_DENY": "", "CC_ALLOW_FILTER": "yy"}).status == 200
    assert wait_until(lambda: fw.request("GET", "/api/v1/csf/geoip/status").json["data"]["allow_filter_active"], timeout=30)
    assert not net.can_connect(APP_PORT) and not net.can_connect(APP_PORT, v6=True)
    assert fw.request("GET", "/api/v1/health", token=None).status == 200, "loopback is never filtered"

    # add the client's country to the filter
    assert fw.request("PUT", "/api/v1/csf/config", body={"CC_ALLOW_FILTER": "YY,ZZ"}).status == 200
    assert wait_until(lambda: net.can_connect(APP_PORT, timeout=0.5), timeout=30)

    # CC_ALLOW accepts the country like the whitelist, ahead of the blacklist
    assert fw.request("PUT", "/api/v1/csf/config", body={"CC_ALLOW_FILTER": ""}).status == 200
    assert fw.request("POST", "/api/v1/csf/blacklist", body={"ip": net.cli4}).status == 201
    assert not net.can_connect(APP_PORT)
    assert fw.request("PUT", "/api/v1/csf/config", body={"CC_ALLOW": "zz"}).status == 200
    assert wait_until(lambda: net.can_connect(APP_PORT, timeout=0.5), timeout=30)
    assert_envelope(fw.request("PUT", "/api/v1/csf/config", body={"CC_DENY": "ZZZ"}), 400, "VALIDATION_ERROR")


def test_bogon_filter_on_the_configured_interface_only(net, fw):
    r = fw.request("PUT", "/api/v1/csf/config", body={"LF_BOGON": "1"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "BOGON_INTERFACE" in r.json["message"]
    st = fw.request("GET", "/api/v1/csf/bogon/status").json["data"]
    assert st["enabled"] is False and st["active"] is False and st["entry_count"] > 10
    assert fw.request("PUT", "/api/v1/csf/config", body={"LF_BOGON": "1", "BOGON_INTERFACE": "veth0"}).status == 200
    # the test network itself is private address space: a bogon source on veth0
    assert not net.can_connect(APP_PORT) and not net.can_connect(APP_PORT, v6=True)
    st = fw.request("GET", "/api/v1/csf/bogon/status").json["data"]
    assert st["enabled"] and st["active"] and st["interface"] == "veth0"
    assert fw.request("PUT", "/api/v1/csf/config", body={"BOGON_INTERFACE": "eth9"}).status == 200
    assert net.can_connect(APP_PORT), "another interface is not filtered"
    assert fw.request("PUT", "/api/v1/csf/config", body={"LF_BOGON": "0"}).status == 200
    assert net.can_connect(APP_PORT) and net.can_connect(APP_PORT, v6=True)


def test_https_source_verified_against_trusted_roots(net, make_wispd, tmp_path):
    """An https:// list is fetched over rustls and its certificate verified: a CA the client
    doesn't trust is refused, a trusted one (SSL_CERT_FILE) works."""
    import ssl
    import subprocess
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, csr = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "c.csr"
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=test CA")
    run("openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=lists.test")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    www = tmp_path / "www"
    www.mkdir()
    (www / "drop.txt").write_text(f"10.231.{net.n}.2/31 ; SBL1\n")
    src = Source(www)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    src.httpd.socket = ctx.wrap_socket(src.httpd.socket, server_side=True)
    url = f"https://127.0.0.1:{src.port}/drop.txt"
    try:
        untrusting = make_wispd(config=FW_CONFIG, firewall=True, start=False)
        untrusting.env = {"SSL_CERT_FILE": str(tmp_path / "nothing.pem")}
        (tmp_path / "nothing.pem").write_text("")
        untrusting.start()
        create(untrusting, "tls", url)
        d = refresh(untrusting, "tls")
        assert d["entry_count"] == 0 and d["last_error"], d
        untrusting.stop()

        trusting = make_wispd(config=FW_CONFIG, firewall=True, start=False)
        trusting.env = {"SSL_CERT_FILE": str(ca)}
        trusting.start()
        assert trusting.request("PUT", "/api/v1/csf/config", body={"TESTING": "0", "TCP_IN": f"22,{APP_PORT}"}).status == 200
        create(trusting, "tls", url)
        d = refresh(trusting, "tls")
        assert d["entry_count"] == 1 and d["last_error"] == "", d
        assert not net.can_connect(APP_PORT)
    finally:
        src.close()


class Proxy:
    """A forward proxy on loopback that records the request lines it gets and answers them itself:
    a GET with `body`, a CONNECT (the start of an https:// tunnel) with 403."""

    def __init__(self, body):
        self.lines = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.lines.append(self.requestline)
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_CONNECT(self):
                outer.lines.append(self.requestline)
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_proxy_https_proxy_and_no_proxy_from_the_environment_are_used(net, make_wispd, source, tmp_path):
    """The old client ignored the proxy variables and always connected directly."""
    import subprocess
    ca = tmp_path / "ca.pem"  # a root store of its own, so https:// doesn't depend on the host's
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp_path / "ca.key"), "-out", str(ca), "-days", "2", "-subj", "/CN=test CA"],
                   check=True, capture_output=True)
    proxy = Proxy(f"10.231.{net.n}.2/31 ; via the proxy\n")
    source.write("direct.txt", "192.0.2.0/24\n")
    try:
        w = make_wispd(config=FW_CONFIG, firewall=True, start=False)
        w.env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1",
                 "SSL_CERT_FILE": str(ca)}
        w.start()

        # a name only the proxy can reach (.invalid never resolves): the list comes through it
        create(w, "viaproxy", "http://lists.invalid/drop.txt")
        d = refresh(w, "viaproxy")
        assert d["entry_count"] == 1 and d["last_error"] == "", d
        assert "GET http://lists.invalid/drop.txt HTTP/1.1" in proxy.lines, proxy.lines

        # NO_PROXY: fetched directly from the source
        create(w, "direct", source.url("direct.txt"))
        d = refresh(w, "direct")
        assert d["entry_count"] == 1 and d["last_error"] == "", d
        assert source.log[-1] == ("/direct.txt", "200"), source.log
        assert not any("direct.txt" in line for line in proxy.lines), proxy.lines

        # HTTPS_PROXY: a tunnel is asked for; this proxy refuses it, and the list says so
        create(w, "tunnel", "https://lists.invalid/drop.txt")
        d = refresh(w, "tunnel")
        assert d["entry_count"] == 0 and "lists.invalid" in d["last_error"], d
        assert "CONNECT lists.invalid:443 HTTP/1.1" in proxy.lines, proxy.lines
        print("tunnel refused:", d["last_error"])
    finally:
        proxy.close()
