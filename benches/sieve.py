#!/usr/bin/env python3
"""Sieve filtering benchmark, side by side in one run (root; loopback only).

N messages over C concurrent SMTP sessions (Postfix's `smtp-source`, C processes of one session
each, every one sending a pre-formatted S-byte-body message with `-F`) to 10 accounts
(bench0..bench9@example.com) that each have the same 30-rule Sieve script: `header`
:contains/:is/:matches, `address` :domain/:localpart, `body` :contains, `exists`, `size`, and two
`fileinto :create` targets. Three kinds of message (personal mail, a mailing list, a monitoring
report) end, about a third each, in INBOX, "Lists" and "Reports"; every one runs through most of
the script (the two rules that file come last, the 28 before them never match).
  1. wispd with the script (`PUT /api/v1/email/filters/{domain}/{username}`),
  2. wispd without scripts (same messages, same accounts),
  3. Postfix -> Dovecot LMTP with Pigeonhole running the same script (private instances on
     loopback high ports; Debian package dovecot-sieve).
Printed: msg/s accepted (every smtp-source finished) and end to end (every message stored in its
final mailbox: wispd seen through IMAP STATUS on every folder of every account, then counted from
the store after it stops; Dovecot's Maildir files of every folder), the folder distribution, and
the ratios. The distribution must be the expected one on all three (the same on wispd and Dovecot:
same script, same messages), else the bench fails.

Usage: benches/sieve.py [--bin target/release/wispd] [--messages 20000] [--sessions 20] [--size 10240]
                        [--only wispd-sieve,wispd,dovecot]
"""

import argparse
import collections
import imaplib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402
import peers  # noqa: E402
from peers import Dovecot, Postfix  # noqa: E402

DOMAIN = "example.com"
USERS = [f"bench{i}" for i in range(10)]
PASSWORD = "password123"
SYSTEMS = {"wispd-sieve": "wispd, Sieve", "wispd": "wispd, no scripts", "dovecot": "Postfix -> Dovecot+Sieve"}
# Longest wait for the last message to reach its mailbox once the senders are done, and for no
# progress at all.
DRAIN_TIMEOUT, STALL_TIMEOUT = 1800, 120

SCRIPT = r"""require ["fileinto", "mailbox", "body"];

# 1-28: spam, junk and sorting rules that none of the bench's messages match
if header :contains "X-Spam-Flag" "YES" { fileinto :create "Junk"; stop; }
if header :is "X-Spam-Status" "Yes" { fileinto :create "Junk"; stop; }
if header :matches "Subject" "*[SPAM]*" { fileinto :create "Junk"; stop; }
if address :domain :is "from" "spammer.example" { discard; stop; }
if address :localpart :is "from" "mailer-daemon" { fileinto :create "Bounces"; stop; }
if header :contains "Subject" ["viagra", "casino", "crypto giveaway"] { fileinto :create "Junk"; stop; }
if body :contains "unsubscribe from this casino" { fileinto :create "Junk"; stop; }
if exists "X-Virus-Infected" { discard; stop; }
if size :over 5M { fileinto :create "Large"; stop; }
if header :matches "From" "*@phish.example*" { discard; stop; }
if address :domain :is "to" "other.example" { fileinto :create "Other"; stop; }
if header :is "Precedence" "junk" { fileinto :create "Junk"; stop; }
if header :contains "X-Mailer" "MassMailer" { fileinto :create "Junk"; stop; }
if address :localpart :matches "from" "promo-*" { fileinto :create "Promotions"; stop; }
if body :contains "you are our lottery winner" { fileinto :create "Junk"; stop; }
if exists ["X-Bench-Never", "X-Campaign-Id"] { discard; stop; }
if header :is "Importance" "low" { fileinto :create "Low"; stop; }
if header :matches "Subject" "Re: Re: Re: Re: *" { fileinto :create "Threads"; stop; }
if address :domain :is "from" ["facebookmail.com", "linkedin.example"] { fileinto :create "Social"; stop; }
if size :under 100 { fileinto :create "Tiny"; stop; }
if header :contains "Received" "blacklisted.example" { fileinto :create "Junk"; stop; }
if body :contains "wire the money urgently" { fileinto :create "Junk"; stop; }
if header :is "Auto-Submitted" "auto-replied" { fileinto :create "AutoReplies"; stop; }
if address :localpart :is "to" ["postmaster", "abuse"] { fileinto :create "Postmaster"; stop; }
if allof (exists "List-Unsubscribe", header :contains "Subject" "newsletter") { fileinto :create "Newsletters"; stop; }
if header :matches "X-Priority" "5*" { fileinto :create "Low"; stop; }
if anyof (address :domain :is "from" "calendar.example", header :contains "Content-Type" "text/calendar") {
  fileinto :create "Calendar"; stop;
}
if body :contains "CONFIDENTIAL-DO-NOT-FILE" { discard; stop; }

# 29-30: the two that file
if allof (exists "List-Id", header :contains "List-Id" "dev.lists.example.org") {
  fileinto :create "Lists"; stop;
}
if anyof (address :domain :is "from" "monitor.example.net", body :contains "Report-ID:") {
  fileinto :create "Reports"; stop;
}
"""

# The three kinds of message, by the folder the script files them in.
KINDS = {
    "INBOX": ("From: Alice Example <alice@partner.example>\n"
              "Subject: Notes from Tuesday's meeting\n"
              "Importance: normal\n",
              "Hi,\n\nhere are the notes from Tuesday, as promised.\n\n"),
    "Lists": ("From: Dev list <dev-bounces@lists.example.org>\n"
              "Subject: [dev] weekly digest, issue 42\n"
              "List-Id: Developers <dev.lists.example.org>\n"
              "List-Unsubscribe: <mailto:dev-leave@lists.example.org>\n"
              "Precedence: list\n",
              "Today's topics:\n\n  1. Release planning\n  2. Build times\n\n"),
    "Reports": ("From: Monitoring <noreply@monitor.example.net>\n"
                "Subject: Daily availability report\n"
                "Auto-Submitted: auto-generated\n",
                "Report-ID: 2026-12-01/7731\nAll checks passed.\n\n"),
}
FILLER = "The quick brown fox jumps over the lazy dog while the bench keeps on counting messages.\n"


def message_text(kind, to, size):
    """One pre-formatted message whose body is `size` bytes once smtp-source sends each LF as CRLF."""
    head, intro = KINDS[kind]
    text = intro
    crlf = lambda s: len(s) + s.count("\n")  # noqa: E731
    while crlf(text) + crlf(FILLER) <= size:
        text += FILLER
    pad = size - crlf(text) - 2
    if pad > 0:
        text += "z" * pad + "\n"
    return (f"{head}To: <{to}>\nDate: Tue, 01 Dec 2026 10:00:00 +0000\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n{text}")


def plan(work, n, sessions, size):
    """The senders: one smtp-source session each, sender i to account i % 10 with kind i % 3.
    Returns ([(to, count, file)], expected {folder: count})."""
    msgs = work / "messages"
    msgs.mkdir()
    kinds = list(KINDS)
    jobs, expected = [], collections.Counter()
    for i in range(sessions):
        to, kind = f"{USERS[i % len(USERS)]}@{DOMAIN}", kinds[i % len(kinds)]
        count = n // sessions + (1 if i < n % sessions else 0)
        path = msgs / f"{i}.eml"
        path.write_text(message_text(kind, to, size))
        jobs.append((to, count, path))
        expected[kind] += count
    return jobs, dict(expected)


class Folders:
    """IMAP sessions (logged in beforehand) that count every account's messages, every folder,
    while wispd runs."""

    def __init__(self, port):
        self.conns = []
        for u in USERS:
            m = imaplib.IMAP4("127.0.0.1", port, timeout=60)
            m.login(f"{u}@{DOMAIN}", PASSWORD)
            self.conns.append(m)

    def counts(self):
        total = collections.Counter()
        for m in self.conns:
            typ, data = m.list('""', "*")
            assert typ == "OK", data
            for line in data:
                name = line.decode().rsplit(" ", 1)[1].strip('"') if line else None
                if not name or "\\Noselect" in line.decode():
                    continue
                typ, st = m.status(f'"{name}"', "(MESSAGES)")
                if typ == "OK":
                    total[name] += int(re.search(rb"MESSAGES (\d+)", st[0]).group(1))
        return total

    def close(self):
        for m in self.conns:
            try:
                m.logout()
            except Exception:
                pass


def drain(count, n, t0, what):
    """Waits until count() (a {folder: messages}) sums to n; returns the seconds since t0."""
    deadline, last, progress = time.monotonic() + DRAIN_TIMEOUT, -1, time.monotonic()
    while True:
        got = sum(count().values())
        now = time.monotonic()
        if got >= n:
            return now - t0
        if got != last:
            last, progress = got, now
        if now > deadline or now - progress > STALL_TIMEOUT:
            raise RuntimeError(f"{what}: {got} of {n} messages stored after {now - t0:.0f} s")
        time.sleep(0.05)


def bench_wispd(work, binary, jobs, n, sessions, script):
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = binary
    wdir = work / ("wispd-sieve" if script else "wispd-plain")
    wdir.mkdir()
    w = conftest.Wispd(wdir, mailutil.mail_config(max_connections_per_ip=sessions * 2,
                                                  imap={"max_connections_per_ip": 100}))
    w.start()
    folders = None
    try:
        r = w.request("POST", "/api/v1/email/install")
        if r.status != 200:
            raise RuntimeError(f"wispd: POST /email/install: {r}")
        for u in USERS:
            mailutil.account(w, u, DOMAIN, password=PASSWORD)
            if script:
                r = w.request("PUT", f"/api/v1/email/filters/{DOMAIN}/{u}",
                              body={"script": script, "name": "bench", "active": True})
                if r.status == 404:
                    raise RuntimeError(f"wispd has no Sieve filters API (PUT /email/filters answered 404): {r}")
                if not 200 <= r.status < 300:
                    raise RuntimeError(f"wispd: PUT /email/filters/{DOMAIN}/{u}: {r}")
        smtp, imap, _ = mailutil.ports(w)
        folders = Folders(imap)
        t0 = time.monotonic()
        accepted = peers.smtp_sources(smtp, jobs)
        e2e = drain(folders.counts, n, t0, "wispd")
    finally:
        if folders:
            folders.close()
        try:
            w.stop()
        except Exception:
            w.proc.kill()
            w.proc.wait()
    dist = collections.Counter()
    for u in USERS:
        dist.update(m["mailbox"] for m in mailutil.stored(w, f"{u}@{DOMAIN}"))
    return accepted, e2e, dict(dist)


def bench_postfix_dovecot(work, jobs, n, script):
    def count():
        total = collections.Counter()
        for u in USERS:
            total.update(dovecot.folders(DOMAIN, u))
        return total

    dovecot = Dovecot(work, sieve={f"{u}@{DOMAIN}": script for u in USERS}).start()
    try:
        postfix = Postfix(work, DOMAIN, dovecot.lmtp_port).start()
        try:
            t0 = time.monotonic()
            accepted = peers.smtp_sources(postfix.port, jobs)
            try:
                e2e = drain(count, n, t0, "Postfix -> Dovecot")
            except RuntimeError as e:
                log = dovecot.dir / "dovecot.log"
                tail = log.read_text()[-1500:] if log.exists() else ""
                raise RuntimeError(f"{e}\ndovecot.log:\n{tail}") from None
            return accepted, e2e, {f: c for f, c in count().items() if c}
        finally:
            postfix.stop()
    finally:
        dovecot.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--only", default=",".join(SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all three)")
    args = ap.parse_args()
    only = args.only.split(",")
    if not only or set(only) - set(SYSTEMS):
        ap.error(f"--only: choose from {','.join(SYSTEMS)}")
    if os.geteuid() != 0:
        sys.exit("benches/sieve.py runs as root (private Postfix and Dovecot instances)")
    # SIGTERM unwinds like ^C, so the private instances and the scratch directory go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["WISPD_BIN"] = args.bin
    n, c, s = args.messages, args.sessions, args.size
    work = Path(tempfile.mkdtemp(prefix="wispd-sieve-bench-"))
    os.chmod(work, 0o755)
    print(f"smtp-source: {n} messages x {s}-byte body over {c} sessions, to {len(USERS)} accounts with "
          f"the same {SCRIPT.count(chr(10) + 'if ')}-rule Sieve script, loopback\n", flush=True)
    rows = {}
    try:
        jobs, expected = plan(work, n, c, s)
        if "wispd-sieve" in only:
            rows["wispd-sieve"] = bench_wispd(work, args.bin, jobs, n, c, SCRIPT)
        if "wispd" in only:
            rows["wispd"] = bench_wispd(work, args.bin, jobs, n, c, None)
        if "dovecot" in only:
            rows["dovecot"] = bench_postfix_dovecot(work, jobs, n, SCRIPT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    folders = list(expected) + sorted({f for r in rows.values() for f in r[2]} - set(expected))
    print(f"{'server':<26} {'accepted msg/s':>15} {'end-to-end msg/s':>17}  " +
          " ".join(f"{f:>8}" for f in folders))
    print(f"{'(expected)':<26} {'':15} {'':17}  " + " ".join(f"{expected.get(f, 0):8}" for f in folders))
    for key, (acc, e2e, dist) in rows.items():
        print(f"{SYSTEMS[key]:<26} {n / acc:15.0f} {n / e2e:17.0f}  " + " ".join(f"{dist.get(f, 0):8}" for f in folders))
    print()
    ws, wp, pd = rows.get("wispd-sieve"), rows.get("wispd"), rows.get("dovecot")
    if ws and wp:
        print(f"wispd with Sieve / without, end to end:             {wp[1] / ws[1]:.2f}  (goal >= 0.9)")
        print(f"wispd with Sieve / without, accepted:               {wp[0] / ws[0]:.2f}")
    if ws and pd:
        print(f"wispd with Sieve vs Postfix -> Dovecot, end to end: {pd[1] / ws[1]:.1f}x  (goal >= 10x)")
        print(f"wispd with Sieve vs Postfix -> Dovecot, accepted:   {pd[0] / ws[0]:.1f}x")
    if wp and pd:
        print(f"wispd without scripts vs Postfix -> Dovecot+Sieve, end to end: {pd[1] / wp[1]:.1f}x")
    # Same script, same messages: the same folders on both servers, and the ones planned.
    bad = [SYSTEMS[k] for k in ("wispd-sieve", "dovecot") if k in rows and rows[k][2] != expected]
    if wp and wp[2] != {"INBOX": n}:
        bad.append(SYSTEMS["wispd"])
    if bad:
        sys.exit(f"FAIL: folder distribution is not the expected one: {', '.join(bad)}")


if __name__ == "__main__":
    main()
