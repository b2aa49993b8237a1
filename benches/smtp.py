#!/usr/bin/env python3
"""SMTP inbound benchmark, side by side in one run (root; loopback of a network namespace of its
own, so that every peer's system resolver asks the benchmark's DNS server on 127.0.0.1:53).

Postfix's `smtp-source` sends N copies of one DKIM-signed message (dkimpy, ~S bytes, from
sender@remote.example, HELO mail.remote.example) over C concurrent sessions to:
  1. wispd (MX listener, mail for a local account; `250` only after the redb commit), checks off,
  2. wispd with its inbound trust on: SPF (HELO and MAIL FROM), DKIM, DMARC (p=reject, enforced),
     iprev, one DNSBL zone and spam scoring (built-in rules),
  3. Postfix -> Dovecot LMTP -> Maildir (private instances on loopback high ports), no checks,
  4. the same with what an operator runs for the same checks: postscreen (the DNSBL zone,
     enforced), postfix-policyd-spf-python (HELO and MAIL FROM), OpenDKIM (verifying) and
     OpenDMARC (p=reject enforced) milters; smtpd's own reverse lookup is the iprev. (No
     SpamAssassin: the peer does no scoring),
  5. `smtp-sink` (accepts and discards: the client's own ceiling).
The DNS server answers SPF, the DKIM key, DMARC, PTR/A and the DNSBL zone (not listing the
client), with SOAs on negative answers so resolvers that cache can. Printed: msg/s accepted
(smtp-source finished) and end to end (every message in the mailbox), and ratios; each checked
row also shows one delivered message's Authentication-Results, so it is seen that the checks ran
and passed. For wispd accepted and end to end are the same moment.

Usage: benches/smtp.py [--bin target/release/wispd] [--messages 20000] [--sessions 20] [--size 10240]
                       [--only wispd|wispd-checks|postfix|postfix-checks|sink]...
"""

import argparse
import base64
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
from peers import Dovecot, OpenDkim, OpenDmarc, Postfix, free_port, wait_port  # noqa: E402

DOMAIN, USER = "example.com", "bench"
SENDER, HELO = "sender@remote.example", "mail.remote.example"
ZONE = "bl.test"
NETNS_ENV = "WISPD_SMTP_BENCH_NETNS"


def in_own_namespace():
    """Runs this script again inside a new network namespace whose resolv.conf points at
    127.0.0.1 (`ip netns exec` binds /etc/netns/<name>/resolv.conf over /etc/resolv.conf for
    the processes inside only); returns its exit code. Removed afterwards."""
    name = f"wispd-smtpbench-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, **{NETNS_ENV: name})
        return subprocess.run(["ip", "netns", "exec", name, sys.executable, *sys.argv], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name])
        shutil.rmtree(etc, ignore_errors=True)


def dns_and_message(work, size):
    """The DNS server on 127.0.0.1:53 and the signed message file (LF line ends, as
    smtp-source -F wants them; signed over the CRLF form it sends)."""
    import dkim
    from dnsserver import DnsServer
    key = work / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "der"],
                         check=True, capture_output=True).stdout
    dns = DnsServer(soa=True, port=53)
    dns.txt["remote.example"] = ["v=spf1 ip4:127.0.0.1 -all"]
    dns.txt[HELO] = ["v=spf1 ip4:127.0.0.1 -all"]
    dns.a[HELO] = ["127.0.0.1"]
    dns.txt["sel._domainkey.remote.example"] = [f"v=DKIM1; k=rsa; p={base64.b64encode(pub).decode()}"]
    dns.txt["_dmarc.remote.example"] = ["v=DMARC1; p=reject"]
    dns.ptr["1.0.0.127.in-addr.arpa"] = [HELO]
    line = "The quick brown fox jumps over the lazy dog, and again, and once more.\r\n"
    body = (line * max(1, size // len(line))).encode()
    head = (f"From: Sender <{SENDER}>\r\nTo: {USER}@{DOMAIN}\r\nSubject: benchmark message\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench.1@remote.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n").encode()
    raw = head + b"\r\n" + body
    signed = dkim.sign(raw, b"sel", b"remote.example", key.read_bytes(),
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + raw
    path = work / "message.eml"
    path.write_bytes(signed.replace(b"\r\n", b"\n"))
    return dns, path


def send(port, n, sessions, message):
    per = [n // sessions + (1 if i < n % sessions else 0) for i in range(sessions)]
    return peers.smtp_sources(port, [(f"{USER}@{DOMAIN}", k, message) for k in per],
                              sender=SENDER, helo=HELO)


def first_results(raw):
    """A delivered message's Authentication-Results values, on one line each."""
    import email
    m = email.message_from_bytes(raw)
    return [" ".join(v.split()) for v in m.get_all("Authentication-Results") or []] + \
        [" ".join(v.split()) for v in m.get_all("Received-SPF") or []] + \
        ["X-Spam-Status: " + " ".join(v.split()) for v in m.get_all("X-Spam-Status") or []]


def first_header(w):
    """The header of the first message in the bench account's INBOX, over IMAP."""
    import imaplib
    import mailutil
    _, imap, _ = mailutil.ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=30)
    m.login(f"{USER}@{DOMAIN}", "password123")
    m.select("INBOX", readonly=True)
    _, data = m.fetch(b"1", "(BODY.PEEK[HEADER])")
    m.logout()
    return data[0][1]


def bench_wispd(work, binary, n, sessions, message, checks=False):
    """wispd; `checks`: with SPF/DKIM/DMARC/iprev, one DNSBL zone and spam scoring."""
    import mailutil
    conftest.WISPD_BIN = mailutil.WISPD_BIN = binary
    wdir = work / ("wispd-checks" if checks else "wispd")
    wdir.mkdir()
    config = mailutil.mail_config(max_connections_per_ip=sessions * 2, verify_senders=checks)
    if checks:
        config = config.replace("[firewall]", '[dns]\nnameservers = ["127.0.0.1:53"]\n[firewall]')
    w = conftest.Wispd(wdir, config)
    w.start()
    try:
        assert w.request("POST", "/api/v1/email/install").status == 200
        if checks:
            r = w.request("PUT", "/api/v1/email/rbl",
                          body={"enabled": True, "zones": [{"zone": ZONE, "action": "reject"}]})
            assert r.status == 200, r
            r = w.request("PUT", "/api/v1/email/spam", body={"enabled": True})
            assert r.status == 200, r
        mailutil.account(w, USER, DOMAIN)
        port = mailutil.smtp_port(w)
        accepted = send(port, n, sessions, message)
        spam = w.request("GET", "/api/v1/email/spam").json["data"]["stats"]
        results = first_results(first_header(w)) if checks else []
    finally:
        w.stop()
    stored = mailutil.stored(w, f"{USER}@{DOMAIN}")
    if len(stored) != n:
        raise RuntimeError(f"wispd stored {len(stored)} of {n}")
    if checks:
        x = [v for v in results if "dkim=pass" in v and "spf=pass" in v and "dmarc=pass" in v]
        assert x, f"the checks did not pass: {results}"
        assert spam["scored"] == n, spam
    return accepted, accepted, results


def bench_postfix_dovecot(work, n, sessions, message, checks=False):
    dovecot = Dovecot(work / ("dovecot-checks" if checks else "dovecot")).start()
    milters = [OpenDkim(work), OpenDmarc(work)] if checks else []
    postfix = Postfix(work, DOMAIN, dovecot.lmtp_port, checks=checks, dnsbl=ZONE,
                      milters=[m.socket for m in milters],
                      name="postfix-checks" if checks else "postfix")
    try:
        for m in milters:
            m.start()
        postfix.start()
        t = time.monotonic()
        accepted = send(postfix.port, n, sessions, message)
        deadline = time.monotonic() + 3600
        while dovecot.delivered(DOMAIN, USER) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot has {dovecot.delivered(DOMAIN, USER)} of {n}")
            time.sleep(0.05)
        e2e = time.monotonic() - t
        results = []
        if checks:
            root = dovecot.mail / DOMAIN / USER
            first = next(p for d in ("new", "cur") for p in sorted((root / d).iterdir()))
            results = first_results(first.read_bytes())
            joined = " ".join(results)
            assert "dkim=pass" in joined and "dmarc=pass" in joined and "pass" in joined, results
        return accepted, e2e, results
    finally:
        postfix.stop()
        for m in milters:
            m.stop()
        dovecot.stop()


def bench_sink(n, sessions, message):
    port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return send(port, n, sessions, message), None, []
    finally:
        sink.kill()
        sink.wait()


ROWS = {
    "wispd": "wispd",
    "wispd-checks": "wispd, checks+DNSBL+spam",
    "postfix": "Postfix -> Dovecot LMTP",
    "postfix-checks": "Postfix+checks -> Dovecot",
    "sink": "smtp-sink (discards)",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "wispd"))
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--only", choices=ROWS, action="append",
                    help="run just these rows (no ratios then), e.g. to profile one")
    args = ap.parse_args()
    if not os.environ.get(NETNS_ENV):
        sys.exit(in_own_namespace())
    os.environ["WISPD_BIN"] = args.bin
    n, c, s = args.messages, args.sessions, args.size
    work = Path(tempfile.mkdtemp(prefix="wispd-smtp-bench-"))
    os.chmod(work, 0o755)
    dns, message = dns_and_message(work, s)
    print(f"smtp-source: {n} copies of a DKIM-signed {message.stat().st_size}-byte message over {c} "
          f"sessions (-d: one session sends many), loopback of namespace {os.environ[NETNS_ENV]}\n",
          flush=True)
    try:
        runs = {
            "wispd": lambda: bench_wispd(work, args.bin, n, c, message),
            "wispd-checks": lambda: bench_wispd(work, args.bin, n, c, message, checks=True),
            "postfix": lambda: bench_postfix_dovecot(work, n, c, message),
            "postfix-checks": lambda: bench_postfix_dovecot(work, n, c, message, checks=True),
            "sink": lambda: bench_sink(n, c, message),
        }
        rows = [(ROWS[k], *runs[k]()) for k in ROWS if not args.only or k in args.only]
    finally:
        dns.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'server':<27} {'accepted msg/s':>15} {'end-to-end msg/s':>17}")
    for name, acc, e2e, _ in rows:
        e2e_s = f"{n / e2e:17.0f}" if e2e else f"{'-':>17}"
        print(f"{name:<27} {n / acc:15.0f} {e2e_s}")
    if args.only:
        return
    w, wc, pd, pdc, sink = rows
    print("\nwhat the checked rows recorded on a delivered message:")
    for name, *_, results in (wc, pdc):
        for r in results:
            print(f"  {name}: {r[:300]}")
    print("  (Postfix row: postscreen DNSBL + policyd-spf + OpenDKIM + OpenDMARC, iprev by smtpd's "
          "reverse lookup; no scoring. wispd row: the same plus built-in spam scoring.)")
    print(f"\nwispd with checks / without:                      {w[1] / wc[1]:.2f}  (goal >= 0.8)")
    print(f"wispd with checks vs Postfix+checks, end to end:   {pdc[2] / wc[2]:.1f}x  (goal >= 10)")
    print(f"wispd vs Postfix -> Dovecot, end to end:           {pd[2] / w[2]:.1f}x")
    print(f"wispd vs Postfix -> Dovecot, accepted:             {pd[1] / w[1]:.1f}x")
    print(f"wispd vs smtp-sink (client ceiling):               {sink[1] / w[1]:.2f}x")


if __name__ == "__main__":
    main()
