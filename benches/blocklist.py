#!/usr/bin/env python3
"""Blocklist benchmark, side by side in one run (root; private network namespaces only).

1. Load: N CIDRs fetched over loopback HTTP, parsed and loaded into the kernel by wispd
   (POST /csf/blocklists/:name/refresh), vs `nft -f` and `ipset restore` of the same set.
2. Packet path: TCP throughput (iperf3) between two namespaces with 0, 100k and 1M non-matching
   entries loaded in wispd's blocklist, vs 10k linear iptables rules (how CSF bans without ipset);
   and with every protection on (SYNFLOOD, CONNLIMIT, PORTFLOOD, port-scan detection, CT_LIMIT).
3. Changes with the largest blocklist loaded (a port opened and closed, a rule added, a setting
   changed) vs the full `nft -f` reload of the same ruleset CSF-style tools do for any change.
4. The conntrack table with ~100k entries: /csf/conntrack/status and a filtered
   /csf/conntrack/connections vs `conntrack -L` and `conntrack -C` (Debian's conntrack).

Usage: benches/blocklist.py [--bin target/release/wispd] [--sizes 100000,1000000]
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import Wispd  # noqa: E402
from netns import Pair, sh  # noqa: E402

from test_firewall import FW_CONFIG as CONFIG  # noqa: E402  (firewall on, loopback API, no mail ports)


def cidrs(n):
    # /28 networks 32 addresses apart: nothing merges, like a real DROP/netset list
    for i in range(n):
        a = 0x0B000000 + 32 * i
        yield f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/28"


def timed(cmd, **kw):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr[:500]}")
    return time.monotonic() - t


def iperf(pair, seconds=5):
    out = sh("iperf3", "-c", pair.srv4, "-t", str(seconds), "-J", ns=pair.cli, check=False, timeout=seconds + 20).stdout
    try:
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()
    os.environ["WISPD_BIN"] = args.bin
    import conftest
    conftest.WISPD_BIN = args.bin
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="wispd-bench-"))
    www = work / "www"
    www.mkdir()
    for n in sizes:
        (www / f"list_{n}.txt").write_text("\n".join(cidrs(n)) + "\n")

    pair = Pair(250).create()
    pair.enter()
    results = {"load": [], "path": [], "change": [], "ct": []}
    w = None
    try:
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **kw)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port = httpd.server_address[1]
        iperf_srv = subprocess.Popen(["iperf3", "-s", "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

        (work / "w").mkdir()
        w = Wispd(work / "w", CONFIG)
        w.start()
        assert w.request("PUT", "/api/v1/csf/config", body={"TESTING": "0", "TCP_IN": "22,5201"}).status == 200
        for name in ("spamhaus_drop", "spamhaus_dropv6"):
            w.request("DELETE", f"/api/v1/csf/blocklists/{name}")

        results["path"].append(("no filtering (wispd off)", None, toggle_and_iperf(w, pair, False)))
        results["path"].append(("wispd, 0 blocklist entries", 0, iperf(pair)))
        for n in sizes:
            name = f"b{n}"
            r = w.request("POST", "/api/v1/csf/blocklists/", body={"name": name, "url": f"http://127.0.0.1:{port}/list_{n}.txt", "interval": 86400})
            assert r.status == 201, r
            t = time.monotonic()
            r = w.request("POST", f"/api/v1/csf/blocklists/{name}/refresh", conn=w.connection(timeout=600))
            took = time.monotonic() - t
            assert r.status == 200 and r.json["data"]["entry_count"] == n, r
            results["load"].append(("wispd (HTTP fetch + parse + kernel + store)", n, took))
            results["path"].append((f"wispd, {n:,} blocklist entries", n, iperf(pair)))
            if n == max(sizes):
                t = time.monotonic()
                r = w.request("POST", "/api/v1/csf/ports/", body={"port": 8081, "protocol": "tcp", "direction": "in"})
                results["change"].append(("wispd: open a port (POST /csf/ports/)", n, time.monotonic() - t))
                assert r.status == 201, r
                t = time.monotonic()
                r = w.request("DELETE", "/api/v1/csf/ports/8081")
                results["change"].append(("wispd: close it (DELETE /csf/ports/8081)", n, time.monotonic() - t))
                assert r.status == 200, r
                t = time.monotonic()
                r = w.request("POST", "/api/v1/firewall/rules",
                              body={"chain": "INPUT", "protocol": "tcp", "port": 8082, "action": "ACCEPT"})
                results["change"].append(("wispd: add a rule (POST /firewall/rules)", n, time.monotonic() - t))
                assert r.status == 201, r
                t = time.monotonic()
                r = w.request("PUT", "/api/v1/csf/config", body={"LF_IMAPD": "7"})
                results["change"].append(("wispd: change a setting (PUT /csf/config)", n, time.monotonic() - t))
                assert r.status == 200, r
                # what a full reload sends for any change: a table like wispd's (its port sets,
                # its chain, the blocklist set with all its entries), written for nft -f
                full = work / "reload.nft"
                with open(full, "w") as f:
                    f.write("table inet wispd_reload\ndelete table inet wispd_reload\n"
                            "table inet wispd_reload {\n"
                            " set tcp_in { type inet_service; flags interval; elements = { 22, 5201, 8081 } }\n"
                            " set bl4 { type ipv4_addr; flags interval; }\n"
                            " chain input { type filter hook input priority filter; policy accept;\n"
                            "  ct state established,related accept\n"
                            "  ip saddr @bl4 counter drop\n"
                            "  tcp dport @tcp_in accept\n }\n}\n")
                    f.write("add element inet wispd_reload bl4 { " + ", ".join(cidrs(n)) + " }\n")
                results["change"].append(("full reload, the same table and entries (nft -f)", n,
                                          timed(["nft", "-f", str(full)])))
                sh("nft", "delete", "table", "inet", "wispd_reload", check=False)
            w.request("DELETE", f"/api/v1/csf/blocklists/{name}")
        # every protection on, none matching the benchmark's own flow
        r = w.request("PUT", "/api/v1/csf/config", body={
            "SYNFLOOD": "1", "SYNFLOOD_RATE": "1000/s", "SYNFLOOD_BURST": "2000",
            "CONNLIMIT": "5201;50,22;10", "PORTFLOOD": "5201;tcp;500;10,22;tcp;50;60",
            "PS_INTERVAL": "300", "PS_LIMIT": "20", "CT_LIMIT": "5000", "CT_INTERVAL": "30"})
        assert r.status == 200, r.json
        results["path"].append(("wispd, every protection on", 0, iperf(pair)))
        r = w.request("PUT", "/api/v1/csf/config", body={
            "SYNFLOOD": "0", "CONNLIMIT": "", "PORTFLOOD": "", "PS_INTERVAL": "0", "CT_LIMIT": "0",
            "UDP_IN": "1:65535"})
        assert r.status == 200, r.json
        # ~100k tracked flows: UDP from two client sockets to 50,000 ports each (accepted, so
        # their conntrack entries are confirmed)
        code = (f"import socket\nfor k in range(2):\n s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f" for p in range(1, 50001): s.sendto(b'x', ('{pair.srv4}', p))\n")
        sh("python3", "-c", code, ns=pair.cli, timeout=120)
        entries = int(open("/proc/sys/net/netfilter/nf_conntrack_count").read())
        t = time.monotonic()
        r = w.request("GET", "/api/v1/csf/conntrack/status")
        results["ct"].append(("wispd: GET /csf/conntrack/status (counts)", entries, time.monotonic() - t))
        assert r.status == 200, r.json
        t = time.monotonic()
        r = w.request("GET", f"/api/v1/csf/conntrack/connections?ip={pair.cli4}&port=4242")
        results["ct"].append(("wispd: GET /csf/conntrack/connections?ip=&port=", entries, time.monotonic() - t))
        assert r.status == 200 and r.json["data"]["total"] == 2, r.json
        results["ct"].append(("conntrack -L (to /dev/null)", entries, timed(["conntrack", "-L"])))
        results["ct"].append(("conntrack -L -s <ip> -p udp --dport 4242", entries,
                              timed(["conntrack", "-L", "-s", pair.cli4, "-p", "udp", "--dport", "4242"])))
        results["ct"].append(("conntrack -C", entries, timed(["conntrack", "-C"])))
        w.stop()

        for n in sizes:
            nft_file = work / f"nft_{n}.nft"
            with open(nft_file, "w") as f:
                f.write("add table inet bench\nadd set inet bench s { type ipv4_addr; flags interval; }\n")
                f.write("add element inet bench s { " + ", ".join(cidrs(n)) + " }\n")
            results["load"].append(("nft -f (same set, interval)", n, timed(["nft", "-f", str(nft_file)])))
            sh("nft", "delete", "table", "inet", "bench", check=False)
            ips_file = work / f"ipset_{n}.txt"
            with open(ips_file, "w") as f:
                f.write(f"create bench hash:net maxelem {max(n * 2, 65536)}\n")
                for c in cidrs(n):
                    f.write(f"add bench {c}\n")
            with open(ips_file) as f:
                results["load"].append(("ipset restore (hash:net)", n, timed(["ipset", "restore"], stdin=f)))
            sh("ipset", "destroy", "bench", check=False)

        ipt = "iptables-legacy" if sh("iptables-legacy", "-L", check=False).returncode == 0 else "iptables"
        rules = work / "ipt.txt"
        with open(rules, "w") as f:
            f.write("*filter\n:INPUT ACCEPT [0:0]\n")
            for i in range(10_000):
                a = 0x0B000000 + 32 * i
                f.write(f"-A INPUT -s {a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/32 -j DROP\n")
            f.write("COMMIT\n")
        with open(rules) as f:
            subprocess.run([f"{ipt}-restore"], stdin=f, check=True)
        results["path"].append((f"{ipt}: 10,000 linear DROP rules", 10000, iperf(pair)))
        iperf_srv.kill()
        httpd.shutdown()
    finally:
        # a failed run must not leave its wispd behind in a namespace that is about to go
        if w is not None and w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
        pair.leave()
        pair.destroy()

    print("\nblocklist load (one run; kernel", open("/proc/sys/kernel/osrelease").read().strip() + ")")
    print(f"{'':48} {'entries':>10} {'seconds':>9} {'entries/s':>12}")
    for who, n, s in results["load"]:
        print(f"{who:48} {n:>10,} {s:>9.2f} {n / s:>12,.0f}")
    for n in sizes:
        row = {who: s for who, m, s in results["load"] if m == n}
        wispd = next(s for who, s in row.items() if who.startswith("wispd"))
        print(f"  {n:,}: nft -f / wispd = {row['nft -f (same set, interval)'] / wispd:.1f}x, "
              f"ipset restore / wispd = {row['ipset restore (hash:net)'] / wispd:.2f}x")
    print("\nchanges with the blocklist loaded")
    for who, n, s in results["change"]:
        print(f"{who:48} {n:>10,} {s * 1000:>9.1f} ms")
    if results["change"]:
        reload = results["change"][-1][2]
        print(f"  full reload / wispd port change: {reload / max(results['change'][0][2], 1e-6):.0f}x")
    print("\nconntrack table")
    for who, n, s in results["ct"]:
        print(f"{who:48} {n:>10,} {s * 1000:>9.1f} ms")
    print("\npacket path: iperf3 TCP, client namespace -> server namespace, source not listed")
    base = results["path"][0][2]
    for who, n, gbps in results["path"]:
        print(f"{who:48} {gbps:>8.2f} Gbit/s  ({gbps / base:.2f} of unfiltered)")


def toggle_and_iperf(w, pair, enabled):
    assert w.request("POST", "/api/v1/firewall/toggle", body={"enabled": enabled}).status == 200
    g = iperf(pair)
    assert w.request("POST", "/api/v1/firewall/toggle", body={"enabled": not enabled}).status == 200
    return g


if __name__ == "__main__":
    main()
