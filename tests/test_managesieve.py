"""ManageSieve (RFC 5804) against the real server: sievelib's client over STARTTLS for the script
commands, a raw socket for what a library won't send (exact capability lines, SASL continuations,
oversize literals, junk), and one delivery through a script put over ManageSieve."""

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import time

from sievelib import managesieve

from mailutil import account, mail_config, ports, stored
from test_metrics import scrape, value

PASSWORD = "password123"
SIEVE_LISTENER = re.compile(r"mail listeners started .*sieve=\[([^\]]*)\]")
BAD_SCRIPT = 'require "fileinto";\nif true {\n  fileinto "x"\n}\n'
FILING = 'require ["fileinto", "mailbox"];\nfileinto :create "Filed";\n'


def start(make_wispd, **sieve):
    config = mail_config()
    extra = "".join(f"{k} = {v}\n" for k, v in sieve.items())
    config = config.replace('[sieve]\nlisten = ["127.0.0.1:0"]\n', '[sieve]\nlisten = ["127.0.0.1:0"]\n' + extra)
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    return w


def sieve_port(w, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in reversed(list(w.lines)):
            m = SIEVE_LISTENER.search(line)
            if m:
                return int(m.group(1).split(", ")[0].rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("no ManageSieve listener in the log:\n" + w.log())


class TrustingClient(managesieve.Client):
    """sievelib's client, trusting wispd's self-signed certificate. sievelib builds its TLS
    context with a bare ssl.create_default_context() and takes no CA file, so its private
    (name-mangled) __enable_ssl is replaced by the same code with our CA; verification stays on."""

    cafile = None

    def _Client__enable_ssl(self, keyfile=None, certfile=None):
        ctx = ssl.create_default_context(cafile=self.cafile)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.srvhostname)


def client(w, user="info@example.com", password=PASSWORD, expect=True):
    c = TrustingClient("127.0.0.1", sieve_port(w), srvhostname="localhost")
    c.cafile = str(w.data_dir / "tls" / "cert.pem")
    assert c.connect(user, password, starttls=True) is expect, c.errmsg
    return c


class Wire:
    """A raw ManageSieve connection: lines in, lines out."""

    def __init__(self, w):
        self.w = w
        self.sock = socket.create_connection(("127.0.0.1", sieve_port(w)), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def response(self):
        """Lines up to and including the one starting with OK, NO or BYE."""
        lines = []
        while True:
            lines.append(self.line())
            if re.match(r"(OK|NO|BYE)\b", lines[-1]):
                return lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.response()

    def starttls(self):
        assert self.cmd("STARTTLS")[-1].startswith("OK"), "STARTTLS refused"
        assert self.buf == b""
        ctx = ssl.create_default_context(cafile=str(self.w.data_dir / "tls" / "cert.pem"))
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def closed(self, timeout=5):
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


def plain(user="info@example.com", password=PASSWORD):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def capabilities(lines):
    """{name: value} of capability lines (value None for a bare `"STARTTLS"`)."""
    out = {}
    for line in lines[:-1]:
        m = re.fullmatch(r'"([A-Z-]+)"(?: "((?:[^"\\]|\\.)*)")?', line)
        assert m, line
        out[m.group(1)] = m.group(2)
    return out


def test_greeting_starttls_sasl_continuation_and_unauthenticate(make_wispd):
    w = start(make_wispd)
    c = Wire(w)
    greeting = c.response()
    assert greeting[-1] == 'OK "wispd ManageSieve ready."', greeting
    caps = capabilities(greeting)
    assert caps["IMPLEMENTATION"] == "wispd" and caps["VERSION"] == "1.0" and caps["MAXREDIRECTS"] == "4", caps
    assert caps["SASL"] == "" and "STARTTLS" in caps and "OWNER" not in caps, caps
    extensions = caps["SIEVE"].split()
    assert {"fileinto", "mailbox", "vacation", "imap4flags", "envelope"} <= set(extensions), extensions
    assert "enotify" not in extensions and "NOTIFY" not in caps, caps
    assert capabilities(c.cmd("capability")) == caps, "CAPABILITY repeats the greeting"
    # No password in the clear while TLS is on offer.
    refused = c.cmd(f'AUTHENTICATE "PLAIN" "{plain()}"')
    assert refused[-1].startswith("NO (ENCRYPT-NEEDED)"), refused
    assert c.cmd("LISTSCRIPTS")[-1].startswith("NO"), "scripts need a login"
    c.starttls()
    again = c.response()
    assert again[-1].startswith("OK"), again
    tls_caps = capabilities(again)
    assert tls_caps["SASL"] == "PLAIN" and "STARTTLS" not in tls_caps, tls_caps
    assert c.cmd("STARTTLS")[-1].startswith("NO"), "TLS is up already"
    # Without an initial response the server asks with an empty string; "*" aborts.
    c.send('AUTHENTICATE "PLAIN"\r\n')
    assert c.line() == '""'
    assert c.cmd('"*"')[-1].startswith("NO"), "aborted"
    # A response sent as a literal logs in.
    c.send('Authenticate "plain"\r\n')
    assert c.line() == '""'
    response = plain()
    ok = c.cmd(f"{{{len(response)}+}}\r\n{response}")
    assert ok[-1].startswith("OK"), ok
    assert capabilities(c.cmd("CAPABILITY"))["OWNER"] == "info@example.com"
    assert c.cmd(f'AUTHENTICATE "PLAIN" "{plain()}"')[-1].startswith("NO"), "already logged in"
    assert c.cmd('NOOP "tag \\"1\\""') == ['OK (TAG "tag \\"1\\"") "Done"']
    assert c.cmd("UNAUTHENTICATE")[-1].startswith("OK")
    assert "OWNER" not in capabilities(c.cmd("CAPABILITY"))
    assert c.cmd("LISTSCRIPTS")[-1].startswith("NO"), "logged out again"
    assert c.cmd("LOGOUT")[-1].startswith("OK")
    assert c.closed()


def test_scripts_put_listed_activated_renamed_and_deleted_with_sievelib(make_wispd):
    w = start(make_wispd)
    c = client(w)
    assert "fileinto" in c.get_sieve_capabilities()
    assert c.listscripts() == (None, [])
    assert c.putscript("main", FILING)
    assert c.putscript("plain", "keep;\n")
    assert c.listscripts() == (None, ["main", "plain"])
    assert c.setactive("main")
    assert c.listscripts() == ("main", ["plain"])
    assert c.getscript("main").splitlines() == FILING.splitlines()
    # The API edits the same scripts.
    got = w.request("GET", "/api/v1/email/filters/example.com/info").json["data"]
    assert got["active"] == "main" and sorted(s["name"] for s in got["scripts"]) == ["main", "plain"], got
    # Renaming keeps it active; a taken name and a missing script get their codes.
    assert c.renamescript("main", "filed")
    assert c.listscripts() == ("filed", ["plain"])
    assert not c.renamescript("plain", "filed") and c.errcode == b"ALREADYEXISTS"
    assert not c.renamescript("gone", "other") and c.errcode == b"NONEXISTENT"
    assert c.getscript("gone") is None and c.errcode == b"NONEXISTENT"
    assert not c.setactive("gone") and c.errcode == b"NONEXISTENT"
    # The active script can't be deleted until it is deactivated.
    assert not c.deletescript("filed") and c.errcode == b"ACTIVE"
    assert c.setactive("")
    assert c.listscripts() == (None, ["filed", "plain"])
    assert c.deletescript("filed")
    assert not c.deletescript("filed") and c.errcode == b"NONEXISTENT"
    # CHECKSCRIPT and PUTSCRIPT say where a script is wrong; nothing is stored.
    assert c.checkscript(FILING)
    assert not c.checkscript(BAD_SCRIPT)
    assert re.match(rb"line 4, column \d+: ", c.errmsg), c.errmsg
    assert not c.putscript("bad", BAD_SCRIPT)
    assert re.match(rb"line 4, column \d+: ", c.errmsg), c.errmsg
    assert not c.checkscript('require "enotify";\nkeep;\n') and b"enotify" in c.errmsg, c.errmsg
    assert c.listscripts() == (None, ["plain"])
    c.logout()


def test_names_are_quoted_back_and_junk_ends_in_bye(make_wispd):
    w = start(make_wispd)
    c = Wire(w)
    c.response()
    c.starttls()
    c.response()
    assert c.cmd(f'AUTHENTICATE "PLAIN" "{plain()}"')[-1].startswith("OK")
    # A name with a quote and a backslash, sent quoted, comes back escaped.
    assert c.cmd('PUTSCRIPT "we\\"ird\\\\name" {5+}\r\nkeep;')[-1].startswith("OK")
    assert c.cmd('SETACTIVE {11}\r\nwe"ird\\name')[-1].startswith("OK"), "a literal name, {n} form"
    assert c.cmd("LISTSCRIPTS") == ['"we\\"ird\\\\name" ACTIVE', 'OK "Listscripts completed."']
    got = c.cmd('GETSCRIPT "we\\"ird\\\\name"')
    assert got[:2] == ["{5}", "keep;"] and got[-1].startswith("OK"), got
    assert c.cmd('PUTSCRIPT "a/b" "keep;"')[-1].startswith("NO"), "no / in names"
    assert c.cmd('HAVESPACE "x" 4294967295')[-1].startswith("NO (QUOTA/MAXSIZE)")
    assert c.cmd('HAVESPACE "x" 99999999999999999999999')[-1].startswith("NO"), "a number past 64 bits"
    # Unknown commands and broken syntax are answered; too many of them end the session.
    for i in range(12):
        last = c.cmd("FROB" if i % 2 else '"unterminated')
        if last[-1].startswith("BYE"):
            break
        assert last[-1].startswith("NO"), last
    assert last[-1].startswith("BYE"), last
    assert c.closed()


def test_size_and_count_quotas_and_oversize_literals(make_wispd):
    w = start(make_wispd, max_script_size=1024, max_scripts=2)
    c = client(w)
    assert c.havespace("first", 1000)
    assert not c.havespace("first", 5000) and c.errcode == b"QUOTA/MAXSIZE"
    big = "keep;\n" + "# padding\n" * 150
    assert not c.putscript("first", big) and c.errcode == b"QUOTA/MAXSIZE"
    assert c.putscript("first", "keep;\n") and c.putscript("second", "keep;\n")
    assert not c.havespace("third", 10) and c.errcode == b"QUOTA/MAXSCRIPTS"
    assert c.havespace("first", 10), "replacing a script needs no new slot"
    assert not c.putscript("third", "keep;\n") and c.errcode == b"QUOTA/MAXSCRIPTS"
    c.logout()
    # A literal far over the limit is answered and read past; the session stays in step.
    r = Wire(w)
    r.response()
    r.starttls()
    r.response()
    assert r.cmd(f'AUTHENTICATE "PLAIN" "{plain()}"')[-1].startswith("OK")
    r.send('PUTSCRIPT "huge" {200000+}\r\n' + "#" * 200000 + "\r\n")
    assert r.response()[-1].startswith("NO (QUOTA/MAXSIZE)")
    assert r.cmd('NOOP "after"') == ['OK (TAG "after") "Done"']
    assert r.cmd('PUTSCRIPT "x" {99999999999999999999999+}')[-1].startswith("NO"), "an overflowing length"
    assert r.cmd('NOOP "still"') == ['OK (TAG "still") "Done"']
    assert r.cmd("LISTSCRIPTS")[:-1] == ['"first"', '"second"']


def test_a_failed_login_is_counted_and_delayed_like_imap(make_wispd):
    w = start(make_wispd)
    t0 = time.monotonic()
    c = client(w, password="wrong password", expect=False)
    assert time.monotonic() - t0 >= 1.0, "a failed login is delayed"
    f = scrape(w)
    assert value(f, "wispd_logins", protocol="managesieve", result="refused") == 1
    # The failure counts for the address in every protocol: IMAP's next answer waits too.
    _, imap, _ = ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    t0 = time.monotonic()
    m.login("info@example.com", PASSWORD)
    assert time.monotonic() - t0 >= 1.0, "IMAP waits after the ManageSieve failure"
    m.logout()
    c = client(w)
    c.logout()
    assert value(scrape(w), "wispd_logins", protocol="managesieve", result="accepted") == 1


def test_a_script_put_over_managesieve_files_delivered_mail(make_wispd):
    w = start(make_wispd)
    c = client(w)
    assert c.putscript("filing", FILING) and c.setactive("filing")
    c.logout()
    smtp, _, _ = ports(w)
    with smtplib.SMTP("127.0.0.1", smtp, timeout=15) as s:
        s.sendmail("carol@remote.test", ["info@example.com"],
                   b"From: carol@remote.test\r\nTo: info@example.com\r\nSubject: file me\r\n"
                   b"Message-ID: <filed.1@remote.test>\r\n\r\nHello.\r\n")
    assert w.stop()[0] == 0
    got = stored(w, "info@example.com")
    assert [(m["mailbox"], m["message_id"]) for m in got] == [("Filed", "<filed.1@remote.test>")], got
