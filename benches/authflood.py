#!/usr/bin/env python3
"""Failed-login flood, side by side in one run (loopback only): wispd against Dovecot (a private
instance on a loopback high port, set up here), both checking the same Argon2id hash
(m=19456 KiB, t=2, p=1 — wispd's parameters).

C connections from 127.0.0.1 each send `a LOGIN info@example.com wrongN`, wait for the answer,
disconnect and reconnect, for D seconds. Meanwhile a legitimate user logs in with the right
password from 127.0.0.2 every second. Printed per server: failed logins answered, peak memory
(wispd: the process's VmHWM; Dovecot: the peak of the summed RSS of all its processes, sampled
every 0.2 s), and the legitimate user's login latency (median, p95, max).

Before the flood, account probing by timing: 10 wrong passwords for an existing account and 10
for an unknown one, each from a fresh source address (127.0.1.N / 127.0.2.N, so no earlier failure
delays it); printed: the median answer time of each and their difference.

Usage: benches/authflood.py [--bin target/release/wispd] [--connections 50] [--seconds 60]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402
from peers import Dovecot  # noqa: E402

PASSWORD = "password123"


def read_line(sock, buf):
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf.split(b"\r\n", 1)


def login(port, user, password, source="127.0.0.1"):
    """One connection, greeting, LOGIN; returns the tagged answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(source, 0))
    try:
        line, rest = read_line(s, b"")
        s.sendall(b"a LOGIN %s %s\r\n" % (user.encode(), password.encode()))
        while True:
            line, rest = read_line(s, rest)
            if line.startswith(b"a "):
                return line
    finally:
        s.close()


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def dovecot_pids(base):
    """Every process of the private Dovecot: the master (its pid file) and its children."""
    master = int((base / "run" / "master.pid").read_text())
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)
    return [master] + [int(p) for p in out.stdout.split()]


def probe_timing(port):
    """Median answer time of a wrong password for an existing and for an unknown account."""
    times = {"existing": [], "unknown": []}
    for i in range(10):
        for kind, user, net in (("existing", "info@example.com", 1), ("unknown", "nobody@example.com", 2)):
            t = time.monotonic()
            answer = login(port, user, f"wrong{i}", source=f"127.0.{net}.{i + 1}")
            assert answer.startswith(b"a NO"), answer
            times[kind].append(time.monotonic() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def flood(port, connections, seconds, pids_of):
    stop = time.monotonic() + seconds
    counts = {"refused": 0, "busy": 0, "errors": 0}
    lock = threading.Lock()

    def guesser(n):
        i = 0
        while time.monotonic() < stop:
            try:
                answer = login(port, "info@example.com", f"wrong{n}x{i}")
                with lock:
                    counts["busy" if b"UNAVAILABLE" in answer else "refused"] += 1
            except OSError:
                with lock:
                    counts["errors"] += 1
                time.sleep(0.05)
            i += 1

    legit = []

    def owner():
        while time.monotonic() < stop:
            t = time.monotonic()
            answer = login(port, "bench@example.com", PASSWORD, source="127.0.0.2")
            assert answer.startswith(b"a OK"), answer
            legit.append(time.monotonic() - t)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))

    peak = [0]

    def sampler():
        while time.monotonic() < stop + 1:
            peak[0] = max(peak[0], rss_kib(pids_of()))
            time.sleep(0.2)

    threads = [threading.Thread(target=guesser, args=(n,)) for n in range(connections)]
    threads += [threading.Thread(target=owner), threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    legit.sort()
    return counts, peak[0], legit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = args.bin
    work = Path(tempfile.mkdtemp(prefix="wispd-authflood-"))
    os.chmod(work, 0o755)
    print(f"{args.connections} connections failing IMAP LOGIN for {args.seconds} s; "
          f"the owner logs in from another address every second\n", flush=True)
    results, timing = {}, {}
    try:
        wdir = work / "wispd"
        wdir.mkdir()
        w = conftest.Wispd(wdir, mailutil.mail_config(imap={"max_connections_per_ip": 100}))
        w.start()
        try:
            assert w.request("POST", "/api/v1/email/install").status == 200
            mailutil.account(w, "info", "example.com", password=PASSWORD)
            mailutil.account(w, "bench", "example.com", password=PASSWORD)
            _, imap, _ = mailutil.ports(w)
            login(imap, "bench@example.com", PASSWORD, source="127.0.0.2")
            timing["wispd"] = probe_timing(imap)
            idle = rss_kib([w.proc.pid])
            counts, _, legit = flood(imap, args.connections, args.seconds, lambda: [w.proc.pid])
            hwm = next(int(x.split()[1]) for x in open(f"/proc/{w.proc.pid}/status") if x.startswith("VmHWM:"))
            results["wispd"] = (counts, hwm, legit, idle)
        finally:
            w.stop()
        from imap import argon2_hash
        dovecot = Dovecot(work, imap=True, passdb_hash=argon2_hash()).start()
        try:
            pids = lambda: dovecot_pids(dovecot.dir)  # noqa: E731
            login(dovecot.imap_port, "bench@example.com", PASSWORD, source="127.0.0.2")
            timing["Dovecot"] = probe_timing(dovecot.imap_port)
            idle = rss_kib(pids())
            counts, peak, legit = flood(dovecot.imap_port, args.connections, args.seconds, pids)
            results["Dovecot"] = (counts, peak, legit, idle)
        finally:
            dovecot.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<9} {'failures':>9} {'busy':>5} {'errors':>6} {'idle RSS':>9} {'peak RSS':>9} "
          f"{'owner login median':>19} {'p95':>8} {'max':>8}")
    for name, (counts, peak, legit, idle) in results.items():
        med = statistics.median(legit) if legit else float("nan")
        p95 = legit[max(0, int(len(legit) * 0.95) - 1)] if legit else float("nan")
        mx = legit[-1] if legit else float("nan")
        print(f"{name:<9} {counts['refused']:9d} {counts['busy']:5d} {counts['errors']:6d} "
              f"{idle / 1024:7.0f} MB {peak / 1024:7.0f} MB {med * 1000:16.1f} ms {p95 * 1000:6.0f} ms "
              f"{mx * 1000:6.0f} ms")
    print(f"\n{'server':<9} {'wrong password, existing':>25} {'unknown account':>16} {'difference':>11}")
    for name, t in timing.items():
        print(f"{name:<9} {t['existing'] * 1000:22.1f} ms {t['unknown'] * 1000:13.1f} ms "
              f"{(t['existing'] - t['unknown']) * 1000:8.1f} ms")
    w_, d_ = results["wispd"], results["Dovecot"]
    print(f"\npeak memory under the flood: wispd {w_[1] / 1024:.0f} MB, Dovecot {d_[1] / 1024:.0f} MB")
    print(f"owner login median under the flood: wispd {statistics.median(w_[2]) * 1000:.1f} ms, "
          f"Dovecot {statistics.median(d_[2]) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
