#!/usr/bin/env python3
"""SMTP inbound benchmark, side by side in one run (root; loopback only).

Postfix's `smtp-source` sends N messages of S bytes over C concurrent sessions to:
  1. wispd (MX listener, mail for a local account; `250` only after the redb commit),
  2. Postfix -> Dovecot LMTP -> Maildir (private instances on loopback high ports),
  3. `smtp-sink` (accepts and discards: the client's own ceiling).
Printed: msg/s accepted (smtp-source finished) and end to end (every message in the mailbox),
and ratios. For wispd the two are the same moment: a message is acknowledged only once stored.

Usage: benches/smtp.py [--bin target/release/wispd] [--messages 20000] [--sessions 20] [--size 10240]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402
import peers  # noqa: E402
from peers import Dovecot, Postfix, free_port, wait_port  # noqa: E402

DOMAIN, USER = "example.com", "bench"


def smtp_source(port, n, sessions, size):
    return peers.smtp_source(port, n, sessions, size, f"{USER}@{DOMAIN}")


def bench_wispd(work, binary, n, sessions, size, checks=False):
    """wispd; `checks`: with SPF/DKIM/DMARC/iprev and one DNSBL zone, answered by a DNS server
    on loopback (sending SOAs with its negative answers, as real ones do, so they cache)."""
    import mailutil
    from dnsserver import DnsServer
    conftest.WISPD_BIN = mailutil.WISPD_BIN = binary
    wdir = work / ("wispd-checks" if checks else "wispd")
    wdir.mkdir()
    config = mailutil.mail_config(max_connections_per_ip=sessions * 2, verify_senders=checks)
    dns = None
    if checks:
        dns = DnsServer(soa=True)
        dns.txt["remote.example"] = ["v=spf1 ip4:127.0.0.1 -all"]
        dns.txt["_dmarc.remote.example"] = ["v=DMARC1; p=reject"]
        config = config.replace("[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    w = conftest.Wispd(wdir, config)
    w.start()
    try:
        assert w.request("POST", "/api/v1/email/install").status == 200
        if checks:
            r = w.request("PUT", "/api/v1/email/rbl",
                          body={"enabled": True, "zones": [{"zone": "bl.test", "action": "reject"}]})
            assert r.status == 200, r
        mailutil.account(w, USER, DOMAIN)
        port = mailutil.smtp_port(w)
        accepted = smtp_source(port, n, sessions, size)
    finally:
        w.stop()
        if dns:
            dns.close()
    got = len(mailutil.stored(w, f"{USER}@{DOMAIN}"))
    if got != n:
        raise RuntimeError(f"wispd stored {got} of {n}")
    return accepted, accepted


def bench_postfix_dovecot(work, n, sessions, size):
    dovecot = Dovecot(work).start()
    postfix = Postfix(work, DOMAIN, dovecot.lmtp_port).start()
    try:
        t = time.monotonic()
        accepted = smtp_source(postfix.port, n, sessions, size)
        deadline = time.monotonic() + 3600
        while dovecot.delivered(DOMAIN, USER) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot has {dovecot.delivered(DOMAIN, USER)} of {n}")
            time.sleep(0.05)
        return accepted, time.monotonic() - t
    finally:
        postfix.stop()
        dovecot.stop()


def bench_sink(n, sessions, size):
    port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        accepted = smtp_source(port, n, sessions, size)
        return accepted, None
    finally:
        sink.kill()
        sink.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240)
    args = ap.parse_args()
    os.environ["WISPD_BIN"] = args.bin
    n, c, s = args.messages, args.sessions, args.size
    work = Path(tempfile.mkdtemp(prefix="wispd-smtp-bench-"))
    os.chmod(work, 0o755)
    print(f"smtp-source: {n} messages x {s} bytes over {c} sessions (-d: one session sends many), loopback\n",
          flush=True)
    try:
        rows = [
            ("wispd", *bench_wispd(work, args.bin, n, c, s)),
            ("wispd, sender checks+DNSBL", *bench_wispd(work, args.bin, n, c, s, checks=True)),
            ("Postfix -> Dovecot LMTP", *bench_postfix_dovecot(work, n, c, s)),
            ("smtp-sink (discards)", *bench_sink(n, c, s)),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<26} {'accepted msg/s':>15} {'end-to-end msg/s':>17}")
    for name, acc, e2e in rows:
        e2e_s = f"{n / e2e:17.0f}" if e2e else f"{'-':>17}"
        print(f"{name:<26} {n / acc:15.0f} {e2e_s}")
    w, wc, pd, sink = rows
    print(f"\nwispd with sender checks+DNSBL / without:  {w[1] / wc[1]:.2f}  (goal >= 0.8)")
    print(f"wispd vs Postfix -> Dovecot, end to end: {pd[2] / w[2]:.1f}x")
    print(f"wispd vs Postfix -> Dovecot, accepted:   {pd[1] / w[1]:.1f}x")
    print(f"wispd vs smtp-sink (client ceiling):     {sink[1] / w[1]:.2f}x")


if __name__ == "__main__":
    main()
