#!/usr/bin/env python3
"""IMAP benchmark, side by side in one run (loopback only): wispd against Dovecot (a private
instance with Maildir on a loopback high port, set up here).

Both hold the same mailbox (N messages of S bytes, delivered by smtp-source over SMTP to wispd
and over LMTP to Dovecot) and check the same password hash (Argon2id, m=19456 KiB, t=2, p=1 —
wispd's parameters), with a cache of successful logins (Dovecot's auth_cache, 1 hour; wispd's
login cache, 1 hour). C client processes each run R rounds of: connect + LOGIN (timed), SELECT
INBOX, FETCH 1:* (FLAGS RFC822.SIZE), 100 × FETCH n BODY.PEEK[], LOGOUT.
Printed: commands/s, login latency (median, p95) and the ratios.

Then a QRESYNC resync (RFC 7162): a second mailbox of R messages (bench0@example.com) is
selected with ENABLE QRESYNC, another session makes 100 flag changes and expunges 100
messages, and the client comes back: `SELECT INBOX (QRESYNC (uidvalidity modseq))` (what it
missed: VANISHED (EARLIER) + 100 FETCH) against what a client without QRESYNC does, `SELECT
INBOX` + `FETCH 1:* (FLAGS)`. Bytes received and time (median of 5), on both servers.

Usage: benches/imap.py [--bin target/release/wispd] [--messages 1000] [--clients 10] [--rounds 5]
                       [--resync-messages 10000]
"""

import argparse
import imaplib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402
from peers import Dovecot  # noqa: E402

USER, PASSWORD = "bench@example.com", "password123"


def client(args):
    port, rounds, n = args
    logins, commands = [], 0
    for r in range(rounds):
        t = time.monotonic()
        m = imaplib.IMAP4("127.0.0.1", port, timeout=60)
        m.login(USER, PASSWORD)
        logins.append(time.monotonic() - t)
        m.select("INBOX")
        typ, data = m.fetch("1:*", "(FLAGS RFC822.SIZE)")
        assert typ == "OK" and len(data) == n, (typ, len(data))
        for i in range(100):
            typ, data = m.fetch(str(1 + (i * 7 + r) % n), "(BODY.PEEK[])")
            assert typ == "OK"
        m.logout()
        commands += 104
    return logins, commands


def run(port, clients, rounds, n):
    with multiprocessing.Pool(clients) as pool:
        t = time.monotonic()
        results = pool.map(client, [(port, rounds, n)] * clients)
        elapsed = time.monotonic() - t
    logins = sorted(x for r in results for x in r[0])
    commands = sum(r[1] for r in results)
    return commands / elapsed, statistics.median(logins), logins[int(len(logins) * 0.95) - 1]


def fill_to(port, n, rcpt, lmtp=False, size=512):
    cmd = ["smtp-source", "-d", "-s", "10", "-m", str(n), "-l", str(size), "-f", "sender@remote.example",
           "-t", rcpt, f"127.0.0.1:{port}"]
    if lmtp:
        cmd.insert(1, "-L")
    subprocess.run(cmd, check=True, capture_output=True, timeout=1200)


def fill(port, n, size, lmtp=False):
    cmd = ["smtp-source", "-d", "-s", "10", "-m", str(n), "-l", str(size), "-f", "sender@remote.example",
           "-t", USER, f"127.0.0.1:{port}"]
    if lmtp:
        cmd.insert(1, "-L")
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


class RawImap:
    """Counts the bytes of each command's answer."""

    def __init__(self, port, user):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = b""
        self.n = 0
        self.read_until(b"\r\n")
        self.cmd(f"LOGIN {user} {PASSWORD}")

    def read_until(self, end):
        while end not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(self.buf[-200:])
            self.buf += chunk
        i = self.buf.index(end) + len(end)
        data, self.buf = self.buf[:i], self.buf[i:]
        return data

    def cmd(self, text):
        """(bytes received, the answer) for one command."""
        self.n += 1
        tag = b"b%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        # the tagged reply starts a line: CRLF + tag + space (or the answer is just that line)
        self.buf = b"\r\n" + self.buf
        data = self.read_until(b"\r\n" + tag + b" ")
        data += self.read_until(b"\r\n")
        status = data.rsplit(b"\r\n" + tag + b" ", 1)[1]
        assert status.startswith(b"OK"), (text, status, data[-300:])
        return len(data) - 2, data

    def close(self):
        self.sock.close()


def resync(port, user, n):
    """(QRESYNC resync (seconds, bytes), full resync (seconds, bytes)), medians of 5."""
    import re
    c = RawImap(port, user)
    c.cmd("ENABLE QRESYNC")
    _, sel = c.cmd("SELECT INBOX")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", sel).group(1))
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", sel).group(1))
    c.close()
    m = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    m.login(user, PASSWORD)
    m.select("INBOX")
    step = max(3, n // 100)
    for i in range(100):
        assert m.uid("STORE", str(step * i + 1), "+FLAGS", "(\\Flagged)")[0] == "OK"
    gone = ",".join(str(step * i + 2) for i in range(100))
    assert m.uid("STORE", gone, "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.expunge()[0] == "OK"
    m.logout()
    quick, full = [], []
    for _ in range(5):
        c = RawImap(port, user)
        c.cmd("ENABLE QRESYNC")
        t = time.monotonic()
        nbytes, data = c.cmd(f"SELECT INBOX (QRESYNC ({validity} {modseq}))")
        quick.append((time.monotonic() - t, nbytes))
        assert b"VANISHED (EARLIER)" in data and data.count(b" FETCH ") == 100, data[-500:]
        c.close()
        c = RawImap(port, user)
        t = time.monotonic()
        a, _ = c.cmd("SELECT INBOX")
        b, data = c.cmd("FETCH 1:* (FLAGS)")
        full.append((time.monotonic() - t, a + b))
        c.close()
    return sorted(quick)[2], sorted(full)[2]


def argon2_hash():
    from argon2 import PasswordHasher
    return "{ARGON2ID}" + PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(PASSWORD)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--resync-messages", type=int, default=10000)
    args = ap.parse_args()
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = args.bin
    n = args.messages
    work = Path(tempfile.mkdtemp(prefix="wispd-imap-bench-"))
    os.chmod(work, 0o755)
    print(f"{args.clients} clients x {args.rounds} rounds of LOGIN, SELECT, FETCH 1:* (FLAGS RFC822.SIZE), "
          f"100 x FETCH BODY.PEEK[], LOGOUT; {n} messages of {args.size} bytes\n", flush=True)
    try:
        wdir = work / "wispd"
        wdir.mkdir()
        w = conftest.Wispd(wdir, mailutil.mail_config(max_connections_per_ip=100, imap={"max_connections_per_ip": 100}))
        w.start()
        try:
            assert w.request("POST", "/api/v1/email/install").status == 200
            mailutil.account(w, "bench", "example.com", password=PASSWORD)
            smtp, imap, _ = mailutil.ports(w)
            fill(smtp, n, args.size)
            wispd = run(imap, args.clients, args.rounds, n)
            mailutil.account(w, "bench0", "example.com", password=PASSWORD)
            fill_to(smtp, args.resync_messages, "bench0@example.com")
            wispd_resync = resync(imap, "bench0@example.com", args.resync_messages)
        finally:
            w.stop()
        dovecot = Dovecot(work, imap=True, passdb_hash=argon2_hash()).start()
        try:
            fill(dovecot.lmtp_port, n, args.size, lmtp=True)
            dove = run(dovecot.imap_port, args.clients, args.rounds, n)
            fill_to(dovecot.lmtp_port, args.resync_messages, "bench0@example.com", lmtp=True)
            dove_resync = resync(dovecot.imap_port, "bench0@example.com", args.resync_messages)
        finally:
            dovecot.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<10} {'commands/s':>11} {'login median':>13} {'login p95':>10}")
    for name, (cps, med, p95) in (("wispd", wispd), ("Dovecot", dove)):
        print(f"{name:<10} {cps:11.0f} {med * 1000:10.1f} ms {p95 * 1000:7.1f} ms")
    print(f"\nwispd vs Dovecot, commands/s:   {wispd[0] / dove[0]:.2f}x")
    print(f"wispd vs Dovecot, login median: {dove[1] / wispd[1]:.2f}x faster")
    r = args.resync_messages
    print(f"\nresync of {r} messages after 100 flag changes and 100 expunges elsewhere (median of 5):")
    print(f"{'server':<10} {'QRESYNC':>10} {'bytes':>9} {'SELECT+FETCH 1:* FLAGS':>24} {'bytes':>9}")
    for name, ((qt, qb), (ft, fb)) in (("wispd", wispd_resync), ("Dovecot", dove_resync)):
        print(f"{name:<10} {qt * 1000:7.1f} ms {qb:9d} {ft * 1000:21.1f} ms {fb:9d}")
    (wq, wqb), (wf, wfb) = wispd_resync
    (dq, dqb), (df, dfb) = dove_resync
    print(f"\nwispd QRESYNC vs its full resync: {wf / wq:.1f}x faster, {wfb / wqb:.0f}x fewer bytes")
    print(f"wispd QRESYNC vs Dovecot QRESYNC: {dq / wq:.2f}x  (goal >= 2x)")
    print(f"wispd full resync vs Dovecot's:   {df / wf:.2f}x")


if __name__ == "__main__":
    main()
