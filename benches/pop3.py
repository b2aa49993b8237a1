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
MB/s per server and mode, the server's CPU time per message (wispd's process; Dovecot's master
and every process under it, reaped session processes included), and the ratios. One by one,
both servers wait on the client's round trips on 2 cores, so messages/s understates the gap the
CPU column shows.

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
    """Reads into one buffer and walks it by offset (no copies per answer), so that the
    client's own cost per message stays well below the servers'."""

    def __init__(self, port, user):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = bytearray()
        self.pos = 0
        self.status()
        self.cmd(f"USER {user}")
        self.cmd(f"PASS {PASSWORD}")

    def fill(self):
        if self.pos > (1 << 20) and self.pos * 2 > len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        self.buf += chunk

    def status(self):
        while True:
            at = self.buf.find(b"\r\n", self.pos)
            if at >= 0:
                break
            self.fill()
        line = bytes(self.buf[self.pos : at])
        self.pos = at + 2
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"server said {line!r}")
        return line

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
        if self.buf.startswith(b".\r\n", self.pos):
            self.pos += 3
            return 0
        start = self.pos
        search = start
        while True:
            at = self.buf.find(END, search)
            if at >= 0:
                self.pos = at + len(END)
                return at + 2 - start
            search = max(start, len(self.buf) - len(END) + 1)
            before = self.pos
            self.fill()
            # fill may have compacted the buffer: shift the offsets with it
            shift = before - self.pos
            start -= shift
            search -= shift

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


def cpu_seconds(root):
    """CPU seconds of process `root`, its reaped children and its live descendants (Dovecot
    runs a process per POP3 session; wispd is one process)."""
    def fields(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (f := fields(d)):
            parents[int(d)] = int(f[1])
    def under(pid):
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False
    ticks = 0
    for pid in parents:
        if under(pid) and (f := fields(pid)):
            # utime stime cutime cstime
            ticks += sum(int(x) for x in f[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(port, users, rounds, n, root):
    """{mode: (messages/s, MB/s, server CPU µs per message)}."""
    out = {}
    for mode in ("one by one", "pipelined"):
        before = cpu_seconds(root)
        mps, mbs = run(port, users, rounds, n, mode == "pipelined")
        time.sleep(0.5)  # Dovecot's session processes exit and are reaped
        used = cpu_seconds(root) - before
        out[mode] = (mps, mbs, used * 1e6 / (len(users) * rounds * n))
    return out


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
            wispd = measure(pop3_port(w), users, args.rounds, n, w.proc.pid)
        finally:
            w.stop()
        dovecot = Dovecot(work, pop3=True).start()
        try:
            for u in users:
                fill(dovecot.lmtp_port, u, n, args.size, lmtp=True)
            master = int((dovecot.dir / "run" / "master.pid").read_text().split()[0])
            dove = measure(dovecot.pop3_port, users, args.rounds, n, master)
        finally:
            dovecot.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<10} {'mode':<12} {'messages/s':>11} {'MB/s':>8} {'server CPU/msg':>15}")
    for name, result in (("wispd", wispd), ("Dovecot", dove)):
        for mode, (mps, mbs, cpu) in result.items():
            print(f"{name:<10} {mode:<12} {mps:11.0f} {mbs:8.1f} {cpu:12.1f} us")
    print()
    for mode in wispd:
        print(f"wispd vs Dovecot, RETR {mode}: {wispd[mode][0] / dove[mode][0]:.2f}x messages/s, "
              f"{dove[mode][2] / wispd[mode][2]:.2f}x less server CPU per message  (goal >= 2x)")


if __name__ == "__main__":
    main()
