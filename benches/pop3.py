#!/usr/bin/env python3
"""POP3 benchmark, side by side in one run (loopback only): wispd against Dovecot's POP3 (a
private instance with Maildir on a loopback high port, set up here; Debian package
dovecot-pop3d).

Both hold the same maildrops: C accounts of N messages of S bytes each, delivered by
smtp-source over SMTP to wispd and over LMTP to Dovecot. C clients at once, one per account,
each R rounds of: connect, USER/PASS, RETR 1 .. RETR N one at a time (command, whole answer,
next command, as mail clients do; only this part is timed), QUIT without DELE. Then the same with the N RETRs
pipelined (RFC 2449 PIPELINING, which both advertise). The client reads raw bytes and counts
terminations, so Python's line handling doesn't bound the figures. Printed: messages/s and
MB/s per server and mode, and the ratios.

Usage: benches/pop3.py [--bin target/release/wispd] [--messages 1000] [--size 10240]
                       [--clients 2] [--rounds 3]
"""

import argparse
import multiprocessing
import os
import re
import shutil
import socket
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

PASSWORD = "password123"
END = b"\r\n.\r\n"


class Client:
    def __init__(self, port, user):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = bytearray()
        self.status()
        self.cmd(f"USER {user}")
        self.cmd(f"PASS {PASSWORD}")

    def status(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf = bytearray(rest)
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"server said {line!r}")
        return line

    def fill(self):
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise RuntimeError("connection closed")
        self.buf += chunk

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.status()

    def retr_each(self, n):
        """RETR 1..n, each answer read whole before the next command; returns octets read."""
        total = 0
        for i in range(1, n + 1):
            self.sock.sendall(b"RETR %d\r\n" % i)
            self.status()
            total += self.body()
        return total

    def retr_pipelined(self, n):
        self.sock.sendall(b"".join(b"RETR %d\r\n" % i for i in range(1, n + 1)))
        total = 0
        for _ in range(n):
            self.status()
            total += self.body()
        return total

    def body(self):
        """Reads up to the termination line (the status line already taken); its length."""
        if self.buf.startswith(b".\r\n"):
            del self.buf[:3]
            return 0
        start = 0
        while True:
            at = self.buf.find(END, start)
            if at >= 0:
                del self.buf[:at + len(END)]
                return at + 2
            start = max(0, len(self.buf) - len(END) + 1)
            self.fill()

    def quit(self):
        self.cmd("QUIT")
        self.sock.close()


def client(args):
    """One client's rounds: octets read and seconds spent in the RETRs (login and QUIT are not
    timed: Dovecot's static passdb here hashes nothing, wispd checks Argon2)."""
    port, user, rounds, n, pipelined = args
    octets, seconds = 0, 0.0
    for _ in range(rounds):
        c = Client(port, user)
        t = time.monotonic()
        octets += c.retr_pipelined(n) if pipelined else c.retr_each(n)
        seconds += time.monotonic() - t
        c.quit()
    return octets, seconds


def run(port, users, rounds, n, pipelined):
    """(messages/s, MB/s) over all clients, which run at once."""
    with multiprocessing.Pool(len(users)) as pool:
        results = pool.map(client, [(port, u, rounds, n, pipelined) for u in users])
    mps = sum(rounds * n / seconds for _, seconds in results)
    mbs = sum(octets / seconds for octets, seconds in results) / 1e6
    return mps, mbs


def pop3_port(w, timeout=10):
    """The first `pop3=[…]` address of the listener log line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in reversed(list(w.lines)):
            m = re.search(r"mail listeners started .*pop3=\[[0-9.]+:(\d+)", line)
            if m:
                return int(m.group(1))
        time.sleep(0.05)
    raise RuntimeError("no POP3 listener in the log")


def fill(port, user, n, size, lmtp=False):
    cmd = ["smtp-source", "-d", "-s", "10", "-m", str(n), "-l", str(size), "-f", "sender@remote.example",
           "-t", user, f"127.0.0.1:{port}"]
    if lmtp:
        cmd.insert(1, "-L")
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


def measure(port, users, rounds, n):
    return {mode: run(port, users, rounds, n, mode == "pipelined") for mode in ("one by one", "pipelined")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = args.bin
    n = args.messages
    users = [f"bench{i}@example.com" for i in range(args.clients)]
    work = Path(tempfile.mkdtemp(prefix="wispd-pop3-bench-"))
    os.chmod(work, 0o755)
    print(f"{args.clients} clients x {args.rounds} rounds of USER/PASS, RETR 1..{n}, QUIT; "
          f"{n} messages of {args.size} bytes per account\n", flush=True)
    try:
        wdir = work / "wispd"
        wdir.mkdir()
        w = conftest.Wispd(wdir, mailutil.mail_config())
        w.start()
        try:
            assert w.request("POST", "/api/v1/email/install").status == 200
            for u in users:
                mailutil.account(w, u.split("@")[0], "example.com", password=PASSWORD)
            smtp, _, _ = mailutil.ports(w)
            for u in users:
                fill(smtp, u, n, args.size)
            wispd = measure(pop3_port(w), users, args.rounds, n)
        finally:
            w.stop()
        dovecot = Dovecot(work, pop3=True).start()
        try:
            for u in users:
                fill(dovecot.lmtp_port, u, n, args.size, lmtp=True)
            dove = measure(dovecot.pop3_port, users, args.rounds, n)
        finally:
            dovecot.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<10} {'mode':<12} {'messages/s':>11} {'MB/s':>8}")
    for name, result in (("wispd", wispd), ("Dovecot", dove)):
        for mode, (mps, mbs) in result.items():
            print(f"{name:<10} {mode:<12} {mps:11.0f} {mbs:8.1f}")
    print()
    for mode in wispd:
        print(f"wispd vs Dovecot, RETR {mode}: {wispd[mode][0] / dove[mode][0]:.2f}x")


if __name__ == "__main__":
    main()
