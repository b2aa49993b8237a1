#!/usr/bin/env python3
"""Mailing-list fan-out benchmark, side by side in one run (root; loopback only).

One post of S bytes to a list of N members, M of them local accounts and the rest at another
domain behind the relay (`smtp-sink`, which counts what arrives), timed from the start of the
SMTP transaction that posts it to the last delivery:
  1. wispd: `team@example.com`, a members list made through the API; the local members' copy
     is committed before the `250` (one delivery), every remote member gets its own
     transaction with its VERP return path and one-click unsubscribe link, 20 connections to
     the relay (`destination_concurrency`);
  2. Postfix expanding a virtual alias of the same N addresses (what operators use instead of
     a list manager; no VERP, no per-member headers): the local members over LMTP into
     Dovecot (Maildir), the others through `relayhost` to the same kind of sink, 20
     connections per destination, 50 recipients per transaction (Postfix's defaults). Its last
     delivery is the N-th `status=sent` in its log.
Printed: seconds to the last delivery and members per second, and the ratio.

Usage: benches/lists.py [--bin target/release/wispd] [--members 10000] [--local 1000] [--size 10240]
"""

import argparse
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402
from outbound import Sink  # noqa: E402
from peers import Dovecot, Postfix, free_port  # noqa: E402


def members(n, local):
    return [f"u{i}@example.com" for i in range(local)] + [f"r{i}@sink.example" for i in range(n - local)]


def message(size):
    head = ("From: u0@example.com\r\nTo: team@example.com\r\nSubject: fan-out\r\n"
            "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <fanout@example.com>\r\n\r\n")
    line = "x" * 76 + "\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


def post(port, to, raw):
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=600) as c:
        c.ehlo("client.example.com")
        c.sendmail("u0@example.com", [to], raw)
    return t0, time.monotonic()


def bench_wispd(work, binary, n, local, size):
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = binary
    sink = Sink()
    wdir = work / "wispd"
    wdir.mkdir()
    w = conftest.Wispd(wdir, mailutil.mail_config(relay=f"127.0.0.1:{sink.port}", destination_concurrency=20))
    w.start()
    try:
        assert w.request("POST", "/api/v1/email/install").status == 200
        with ThreadPoolExecutor(4) as pool:  # Argon2 per account: setup only, not timed
            list(pool.map(lambda i: mailutil.account(w, f"u{i}"), range(local)))
        r = w.request("POST", "/api/v1/email/mailinglist/example.com",
                      body={"name": "team", "owner": "u0@example.com", "members": members(n, local)})
        assert r.status == 201 and r.json["data"]["members"] == n, r
        t0, t250 = post(mailutil.smtp_port(w), "team@example.com", message(size))
        done = sink.wait(n - local, t0)
        status = Path(f"/proc/{w.proc.pid}/status").read_text()
        hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) // 1024
        print(f"wispd: 250 after {t250 - t0:.2f} s, last delivery {done:.2f} s, peak RSS {hwm} MB", flush=True)
        return max(done, t250 - t0), t250 - t0
    finally:
        w.stop()
        sink.stop()


def bench_postfix(work, n, local, size):
    sink = Sink()
    dovecot = Dovecot(work).start()
    pdir = work / "postfix"
    pdir.mkdir(parents=True, exist_ok=True)
    alias = pdir / "virtual"
    alias.write_text("team@example.com " + ",\n ".join(members(n, local)) + "\n")
    extra = (f"virtual_alias_maps = hash:{alias}\nvirtual_alias_expansion_limit = {n * 2}\n"
             "virtual_alias_recursion_limit = 10\n")
    postfix = Postfix(work, "example.com", dovecot.lmtp_port, relayhost=f"127.0.0.1:{sink.port}",
                      extra=extra).start()
    subprocess.run(["postmap", "-c", str(postfix.dir / "etc"), f"hash:{alias}"], check=True)
    log = postfix.dir / "maillog"
    try:
        t0, t250 = post(postfix.port, "team@example.com", message(size))
        deadline = time.monotonic() + 1800
        while True:
            sent = log.read_text(errors="replace").count("status=sent") if log.exists() else 0
            if sent >= n:
                last = time.monotonic() - t0
                print(f"Postfix: 250 after {t250 - t0:.2f} s, last delivery {last:.2f} s", flush=True)
                return last, t250 - t0
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix delivered {sent} of {n}")
            time.sleep(0.02)
    finally:
        postfix.stop()
        dovecot.stop()
        sink.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--members", type=int, default=10000)
    ap.add_argument("--local", type=int, default=1000)
    ap.add_argument("--size", type=int, default=10240)
    args = ap.parse_args()
    os.environ["WISPD_BIN"] = args.bin
    n, local, size = args.members, args.local, args.size
    work = Path(tempfile.mkdtemp(prefix="wispd-lists-bench-"))
    os.chmod(work, 0o755)
    print(f"one {size}-byte post to {n} members ({local} local, {n - local} behind the relay), loopback\n",
          flush=True)
    try:
        rows = [
            ("wispd list (VERP, per-member links)", *bench_wispd(work, args.bin, n, local, size)),
            ("Postfix virtual alias -> Dovecot/relay", *bench_postfix(work, n, local, size)),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<40} {'250 after s':>11} {'last delivery s':>16} {'members/s':>10}")
    for name, last, t250 in rows:
        print(f"{name:<40} {t250:11.2f} {last:16.2f} {n / last:10.0f}")
    w, p = rows
    print(f"\nwispd vs Postfix, members per second: {p[1] / w[1]:.2f}x  (goal >= 1)")


if __name__ == "__main__":
    main()
