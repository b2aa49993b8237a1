"""Shared helpers for the mail tests: a wispd with the mail stack installed, accounts, the store."""

import json
import re
import socket
import ssl
import subprocess
import time

from conftest import WISPD_BIN

MAIL_CONFIG = """
hostname = "mx.test.example"
[api]
listen = "127.0.0.1:0"
rate_limit_per_minute = 100000
[smtp]
listen = ["{smtp}"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
{smtp_extra}
[imap]
listen = {imap_listen}
imaps = ["127.0.0.1:0"]
{imap_extra}
[pop3]
listen = {pop3_listen}
pop3s = ["127.0.0.1:0"]
[sieve]
listen = ["127.0.0.1:0"]
[firewall]
enabled = false
"""

LISTENING = re.compile(r"mail listeners started smtp=\[([^\]]*)\] imap=\[([^\]]*)\]")


def toml_lines(d):
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in (d or {}).items())


def mail_config(smtp="127.0.0.1:0", imap=None, pop3_listen=("127.0.0.1:0",), **extra):
    # Sender checks (SPF/DKIM/DMARC) would ask the machine's resolver about every test sender:
    # off unless a test turns them on with its own DNS server.
    extra.setdefault("verify_senders", False)
    imap = dict(imap or {})
    listen = json.dumps(imap.pop("listen", ["127.0.0.1:0"]))
    return MAIL_CONFIG.format(smtp=smtp, smtp_extra=toml_lines(extra), imap_listen=listen,
                              imap_extra=toml_lines(imap), pop3_listen=json.dumps(list(pop3_listen)))


def listener_ports(w, timeout=10):
    """([mx, submission, submissions], [imap, imaps]) ports from the latest 'mail listeners
    started' log line (one address per key in these configs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in reversed(list(w.lines)):
            m = LISTENING.search(line)
            if m:
                def portlist(s):
                    return [int(a.rsplit(":", 1)[1]) for a in s.split(", ") if a]
                return portlist(m.group(1)), portlist(m.group(2))
        time.sleep(0.05)
    raise AssertionError("no mail listener in the log:\n" + w.log())


def ports(w, timeout=10):
    """(smtp, imap, imaps) ports."""
    smtp, imap = listener_ports(w, timeout)
    return smtp[0], imap[0], imap[1]


def submission_ports(w, timeout=10):
    """(submission, submissions) ports."""
    smtp, _ = listener_ports(w, timeout)
    return smtp[1], smtp[2]


def smtp_port(w, timeout=10):
    return ports(w, timeout)[0]


def installed(make_wispd, imap=None, **smtp_extra):
    """A started wispd with the mail stack installed; returns (wispd, smtp port)."""
    w = make_wispd(config=mail_config(imap=imap, **smtp_extra))
    r = w.request("POST", "/api/v1/email/install")
    assert r.status == 200, r
    return w, smtp_port(w)


def account(w, username, domain="example.com", quota_mb=0, password="password123"):
    r = w.request("POST", "/api/v1/email/accounts",
                  body={"domain": domain, "username": username, "password": password, "quota_mb": quota_mb})
    assert r.status == 201, r
    return r.json["data"]


def stored(w, address, raw=False):
    """The account's messages straight from the store (wispd must be stopped)."""
    args = [WISPD_BIN, "messages", "--json", "--data-dir", str(w.data_dir), address]
    if raw:
        args.append("--raw")
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def message(subject, body="hello\r\n", msgid=None, size=0):
    head = f"From: a@remote.example\r\nTo: info@example.com\r\nSubject: {subject}\r\n"
    if msgid:
        head += f"Message-ID: <{msgid}>\r\n"
    text = head + "\r\n" + body
    if size > len(text):
        line = ("x" * 998 + "\r\n")
        pad = size - len(text)
        text += line * (pad // len(line)) + "y" * (pad % len(line))
    return text.encode()


class Raw:
    """A raw SMTP client for what smtplib won't send: pipelined bursts, BDAT, junk."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """One (possibly multi-line) reply as (code, [lines])."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode()
            lines.append(text[4:])
            if text[3:4] == " ":
                return int(text[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server has closed the connection (after any pending bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def tls(self, cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def close(self):
        self.sock.close()
