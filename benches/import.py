#!/usr/bin/env python3
"""Maildir import benchmark, side by side in one run (root; loopback only).

A Dovecot user's Maildir++ of N messages of S bytes (LF line ends, as Dovecot stores them)
in three folders (INBOX, Archive, Archive.2024), with flags, keywords and a dovecot-uidlist
made by Dovecot itself (a private instance: own base dir, passwd-file, loopback), is copied:
  1. `doveadm backup` (dsync) of the user into a second Maildir: Dovecot's own migration and
     replication tool, one-way, with its index and uidlist work;
  2. `wispd import dovecot` into a stopped wispd's data dir (the import serves the same API
     over the store in its own process: one process holds both sides);
  3. `wispd import dovecot` into a running `wispd serve`, killed (-9) after a few seconds and
     run again: the second run resumes; the two runs' time is the figure, and the server's
     message count must be N afterwards.
Printed: seconds, messages/s and peak RSS (the importing process; for 3 also the server's),
and wispd's rate over dsync's.

Usage: benches/import.py [--bin target/release/wispd] [--messages 100000] [--size 10240]
"""

import argparse
import json
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from peers import free_port, wait_port  # noqa: E402

USER = "bench@example.com"
PASSWORD = "bench-password-1"


def timed(cmd, **kw):
    """Runs cmd; returns (seconds, stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    out, err = p.communicate()
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {err[-2000:]}")
    return secs, out


def measured(cmd, **kw):
    """(seconds, peak RSS MiB, stdout) of cmd, run from a fresh fork: RUSAGE_CHILDREN's
    ru_maxrss is the largest of all children waited for, so each command gets its own parent."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            secs, out = timed(cmd, **kw)
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            os.write(w, json.dumps([secs, rss, out]).encode())
            os._exit(0)
        except Exception as e:  # noqa: BLE001
            os.write(w, json.dumps({"error": str(e)}).encode())
            os._exit(1)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 20):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    v = json.loads(data)
    if isinstance(v, dict):
        raise RuntimeError(v["error"])
    return v


def dovecot_conf(root, home, port):
    mail = pwd.getpwnam("mail")
    (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{mail.pw_uid}:{mail.pw_gid}::{home}::\n")
    (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
protocols = lmtp
listen = 127.0.0.1
ssl = no
log_path = {root}/dovecot.log
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
""")


def fill(maildir, n, size):
    """n messages over INBOX (60 %), Archive (30 %) and Archive.2024 (10 %)."""
    folders = [(maildir, 0.6), (maildir / ".Archive", 0.3), (maildir / ".Archive.2024", 0.1)]
    line = "y" * 76 + "\n"
    t = 1_700_000_000
    k = 0
    for i, (d, share) in enumerate(folders):
        for sub in ("cur", "new", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        count = n - k if i == len(folders) - 1 else int(n * share)
        for j in range(count):
            head = (f"From: sender{k % 97}@remote.example\nTo: {USER}\nSubject: message {k}\n"
                    f"Message-ID: <m{k}@remote.example>\nDate: Tue, 14 Nov 2023 22:13:20 +0000\n\n")
            body = head + line * max(1, (size - len(head)) // len(line))
            flags = ["", "S", "FS", "RS", "Sa"][k % 5]
            name = d / "cur" / f"{t + k}.M{k}P1.bench,S={len(body)}:2,{flags}"
            name.write_text(body)
            os.utime(name, (t + k, t + k))
            k += 1
        if d != maildir:
            (d / "maildirfolder").touch()
    (maildir / ".Archive" / "dovecot-keywords").write_text("0 Important\n")
    (maildir / "dovecot-keywords").write_text("0 Important\n")
    (maildir / "subscriptions").write_text("V\t2\n\nArchive\nArchive\t2024\n")


WISPD_CONFIG = """
hostname = "mail.bench.example"
[api]
listen = "127.0.0.1:0"
rate_limit_per_minute = 100000
[smtp]
listen = ["127.0.0.1:0"]
submission = []
submissions = []
verify_senders = false
[imap]
listen = ["127.0.0.1:0"]
imaps = []
[pop3]
listen = []
pop3s = []
[sieve]
listen = []
[firewall]
enabled = false
"""


def count_messages(wispd, data_dir, config):
    out = subprocess.run([wispd, "messages", USER, "--data-dir", str(data_dir), "--config", str(config), "--json"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1000:])
    return sum(1 for line in out.stdout.splitlines() if line.strip())


def vm_hwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=10_240)
    ap.add_argument("--kill-after", type=float, default=3.0)
    args = ap.parse_args()
    for tool in ("dovecot", "doveadm"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (make bench installs dovecot-core)")
    work = Path(tempfile.mkdtemp(prefix="wispd-import-bench-"))
    work.chmod(0o755)
    dove = work / "dovecot"
    home = work / "home"
    for d in (dove / "run", dove / "state", home):
        d.mkdir(parents=True)
    conf = dove / "dovecot.conf"
    try:
        dovecot_conf(dove, home, free_port())
        print(f"filling a Maildir with {args.messages} messages of {args.size} bytes …", flush=True)
        fill(home / "Maildir", args.messages, args.size)
        subprocess.run(["chown", "-R", "mail:mail", str(home)], check=True)
        subprocess.run(["dovecot", "-c", str(conf)], check=True)
        # Dovecot reads the Maildir once and writes its dovecot-uidlist (not timed)
        for box in ("INBOX", "Archive", "Archive.2024"):
            subprocess.run(["doveadm", "-c", str(conf), "mailbox", "status", "-u", USER, "messages", box],
                           check=True, capture_output=True, timeout=1800)
        for d in (home / "Maildir", home / "Maildir" / ".Archive"):
            assert (d / "dovecot-uidlist").exists(), d
        rows = []

        # 1. dsync into a second Maildir
        dest = work / "dsync-dest"
        dest.mkdir()
        shutil.chown(dest, "mail", "mail")
        secs, rss, _ = measured(["doveadm", "-c", str(conf), "backup", "-u", USER, f"maildir:{dest}/Maildir"])
        copied = sum(len(files) for d, _, files in os.walk(dest) if Path(d).name in ("cur", "new"))
        assert copied == args.messages, f"dsync copied {copied}"
        rows.append(("doveadm backup (dsync)", secs, rss, None))

        # 2. wispd import into a stopped server's data dir
        wconf = work / "wispd.toml"
        wconf.write_text(WISPD_CONFIG)
        stopped = work / "wispd-stopped"
        secs, rss, out = measured([args.bin, "import", "dovecot", "--from", str(dove), "--config", str(wconf),
                                   "--data-dir", str(stopped), "--json"])
        report = json.loads(out)
        got = sum(int(m.group(1)) for c in report["changed"] if (m := re.search(r": (\d+) message\(s\)", c)))
        assert got == args.messages and not report["skipped"], report
        n = count_messages(args.bin, stopped, wconf)
        assert n == args.messages, f"the stopped server's store holds {n}"
        rows.append(("wispd import (stopped server)", secs, rss, None))

        # 3. into a running server, killed after a few seconds, then resumed
        live = work / "wispd-live"
        server = subprocess.Popen([args.bin, "serve", "--config", str(wconf), "--data-dir", str(live)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not (live / "api.url").exists():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("wispd serve did not start")
                time.sleep(0.1)
            cmd = [args.bin, "import", "dovecot", "--from", str(dove), "--config", str(wconf),
                   "--data-dir", str(live), "--json"]
            t0 = time.monotonic()
            first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                first.wait(timeout=args.kill_after)
                killed = False
            except subprocess.TimeoutExpired:
                first.send_signal(signal.SIGKILL)
                first.wait()
                killed = True
            killed_at = time.monotonic() - t0
            secs2, rss2, out = measured(cmd)
            report = json.loads(out)
            resumed = sum(int(m.group(1)) for c in report["changed"]
                          if (m := re.search(r"mailbox .*: (\d+) message\(s\)", c)))
            server_rss = vm_hwm(server.pid)
            n = count_messages(args.bin, live, wconf)
            assert n == args.messages, f"after the kill and the resume the server holds {n}"
            how = f"-9 at {killed_at:.1f} s, {resumed} resumed" if killed else "done before the kill"
            rows.append((f"wispd import (running server; {how})",
                         killed_at + secs2, rss2, server_rss))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    finally:
        subprocess.run(["doveadm", "-c", str(conf), "stop"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.messages} messages of {args.size} bytes from Maildir++ (3 folders)\n")
    print(f"{'':58} {'seconds':>8} {'msg/s':>8} {'peak RSS MiB':>13}")
    for name, secs, rss, server_rss in rows:
        extra = f"  (server {server_rss:.0f})" if server_rss else ""
        print(f"{name:58} {secs:8.1f} {args.messages / secs:8.0f} {rss:13.0f}{extra}")
    dsync = rows[0][1]
    for name, secs, _, _ in rows[1:]:
        print(f"{name}: {dsync / secs:.2f}x dsync's rate")


if __name__ == "__main__":
    main()
