#!/usr/bin/env python3
"""Outbound queue benchmark, side by side in one run (root; loopback only).

`smtp-source` sends N messages of S bytes over C sessions to a server that must pass each one
on to another server, `smtp-sink` (which counts what arrives):
  1. wispd: MX for example.com, where fwd@example.com forwards to user@remote.example; each
     message is committed to the queue, then delivered through `smtp.relay` (the sink), SRS on;
  2. Postfix: relaying for its network to the same sink (`relayhost`), its own queue.
Both at 20 connections per destination. Printed: msg/s accepted (smtp-source done) and end to
end (the sink has all N), and ratios.

Usage: benches/outbound.py [--bin target/release/wispd] [--messages 5000] [--sessions 20] [--size 10240]
"""

import argparse
import os
import re
import shutil
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
import peers  # noqa: E402
from peers import Postfix, free_port, wait_port  # noqa: E402


class Sink:
    """smtp-sink with its running counter read from stdout."""

    def __init__(self):
        self.port = free_port()
        self.count = 0
        self.proc = subprocess.Popen(["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(self.port)

    def _read(self):
        buf = b""
        while chunk := self.proc.stdout.read1(4096):
            buf = (buf + chunk)[-256:]
            m = re.findall(rb"mesg=(\d+)", buf)
            if m:
                self.count = int(m[-1])

    def wait(self, n, t0):
        deadline = time.monotonic() + 3600
        while self.count < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink has {self.count} of {n}")
            time.sleep(0.02)
        return time.monotonic() - t0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def smtp_source(port, n, sessions, size, to):
    return peers.smtp_source(port, n, sessions, size, to, sender="sender@origin.example")


def bench_wispd(work, binary, n, sessions, size):
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = binary
    sink = Sink()
    wdir = work / "wispd"
    wdir.mkdir()
    w = conftest.Wispd(wdir, mailutil.mail_config(max_connections_per_ip=sessions * 2,
                                                  relay=f"127.0.0.1:{sink.port}", destination_concurrency=20))
    w.start()
    try:
        assert w.request("POST", "/api/v1/email/install").status == 200
        mailutil.account(w, "info", "example.com")
        r = w.request("POST", "/api/v1/email/forwarders", body={"source": "fwd@example.com", "destination": "user@remote.example"})
        assert r.status == 201, r
        t0 = time.monotonic()
        accepted = smtp_source(mailutil.smtp_port(w), n, sessions, size, "fwd@example.com")
        e2e = sink.wait(n, t0)
        return accepted, e2e
    finally:
        w.stop()
        sink.stop()


def bench_postfix(work, n, sessions, size):
    sink = Sink()
    postfix = Postfix(work, "example.com", free_port(), relayhost=f"127.0.0.1:{sink.port}").start()
    try:
        t0 = time.monotonic()
        accepted = smtp_source(postfix.port, n, sessions, size, "user@remote.example")
        e2e = sink.wait(n, t0)
        return accepted, e2e
    finally:
        postfix.stop()
        sink.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240)
    args = ap.parse_args()
    os.environ["WISPD_BIN"] = args.bin
    n, c, s = args.messages, args.sessions, args.size
    work = Path(tempfile.mkdtemp(prefix="wispd-queue-bench-"))
    os.chmod(work, 0o755)
    print(f"relay: smtp-source {n} messages x {s} bytes over {c} sessions -> server -> smtp-sink, loopback\n",
          flush=True)
    try:
        rows = [
            ("wispd (forwarder, queue)", *bench_wispd(work, args.bin, n, c, s)),
            ("Postfix (relayhost)", *bench_postfix(work, n, c, s)),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<26} {'accepted msg/s':>15} {'end-to-end msg/s':>17}")
    for name, acc, e2e in rows:
        print(f"{name:<26} {n / acc:15.0f} {n / e2e:17.0f}")
    w, p = rows
    print(f"\nwispd vs Postfix, end to end: {p[2] / w[2]:.1f}x")
    print(f"wispd vs Postfix, accepted:   {p[1] / w[1]:.1f}x")


if __name__ == "__main__":
    main()
