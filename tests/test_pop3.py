"""POP3 (RFC 1939, 2449, 2595, 5034) against the real server: Python's poplib over STLS and
POP3S reading mail delivered over SMTP, checked against what IMAP returns for the same
messages; deletes committed only at QUIT; the maildrop lock; a raw socket for what poplib
won't send (junk, overlong lines, SASL continuations)."""

import base64
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import time

import pytest

from mailutil import account, mail_config, ports

PASSWORD = "password123"
USER = "info@example.com"
POP3_LISTENER = re.compile(r"mail listeners started .*pop3=\[([^\]]*)\]")


def start(make_wispd, pop3_listen=("127.0.0.1:0",)):
    w = make_wispd(config=mail_config(pop3_listen=pop3_listen))
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    return w


def pop3_addrs(w, timeout=10):
    """[(host, port)] of `pop3.listen` then `pop3.pop3s`, from the latest listener log line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in reversed(list(w.lines)):
            m = POP3_LISTENER.search(line)
            if m:
                return [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in m.group(1).split(", ")]
        time.sleep(0.05)
    raise AssertionError("no POP3 listener in the log:\n" + w.log())


def pop3_port(w):
    return pop3_addrs(w)[0][1]


def pop3s_port(w):
    return pop3_addrs(w)[-1][1]


def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def deliver(w, *messages):
    smtp, _, _ = ports(w)
    with smtplib.SMTP("127.0.0.1", smtp, timeout=15) as s:
        for m in messages:
            s.sendmail("a@remote.example", [USER], m)


def message(subject, body):
    return (f"From: a@remote.example\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{body}").encode()


def imap_messages(w):
    """[(uid, size, bytes, flags)] of INBOX, in order, as IMAP returns them."""
    _, imap, _ = ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login(USER, PASSWORD)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(UID RFC822.SIZE FLAGS BODY.PEEK[])")
    m.logout()
    if data == [None]:
        return []
    out = []
    for item in data:
        if isinstance(item, tuple):
            head = item[0].decode()
            uid = int(re.search(r"UID (\d+)", head).group(1))
            size = int(re.search(r"RFC822\.SIZE (\d+)", head).group(1))
            flags = re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()
            out.append((uid, size, item[1], flags))
    return out


def login(port, tls="stls", user=USER, password=PASSWORD):
    if tls == "pop3s":
        p = poplib.POP3_SSL("127.0.0.1", port, context=unverified(), timeout=15)
    else:
        p = poplib.POP3("127.0.0.1", port, timeout=15)
        if tls == "stls":
            p.stls(context=unverified())
    p.user(user)
    p.pass_(password)
    return p


def login_when_unlocked(port, timeout=5):
    """A login once the session before has ended (it holds the maildrop until it sees EOF)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return login(port)
        except poplib.error_proto as e:
            if b"[IN-USE]" not in e.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def retr(p, n):
    _, lines, octets = p.retr(n)
    return b"".join(line + b"\r\n" for line in lines), octets


def test_stls_and_pop3s_serve_what_imap_serves(make_wispd):
    w = start(make_wispd)
    big = "".join(f"line {i} " + "x" * 70 + "\r\n" for i in range(4000))  # ~320 KB, streamed
    deliver(w, message("first", "hello\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"),
            message("second", "one\r\ntwo\r\nthree\r\nfour\r\n"),
            message("big", big))
    imap = imap_messages(w)
    assert len(imap) == 3

    p = poplib.POP3("127.0.0.1", pop3_port(w), timeout=15)
    assert p.getwelcome() == b"+OK wispd POP3 ready"
    caps = p.capa()
    for c in ("TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "USER", "STLS"):
        assert c in caps, caps
    assert caps["SASL"] == ["PLAIN"] and caps["IMPLEMENTATION"] == ["wispd"], caps
    p.stls(context=unverified())
    assert "STLS" not in p.capa()
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK Logged in")
    assert p.stat() == (3, sum(size for _, size, _, _ in imap))
    _, listing, _ = p.list()
    assert listing == [f"{i} {size}".encode() for i, (_, size, _, _) in enumerate(imap, 1)]
    assert p.list(2) == f"+OK 2 {imap[1][1]}".encode()
    _, uidls, _ = p.uidl()
    assert len({u.split()[1] for u in uidls}) == 3
    assert all(re.fullmatch(rb"\d+ [0-9a-f]{16}", u) for u in uidls), uidls
    for i, (_, size, raw, _) in enumerate(imap, 1):
        body, octets = retr(p, i)
        assert body == raw, i
        assert len(body) == size
    _, top, _ = p.top(2, 2)
    header = imap[1][2].split(b"\r\n\r\n", 1)[0]
    assert top == header.split(b"\r\n") + [b"", b"one", b"two"], top
    _, top0, _ = p.top(1, 0)
    assert top0[-1] == b"" and b"Subject: first" in top0
    assert p.quit().startswith(b"+OK")

    # POP3S, AUTH PLAIN with an initial response: the same maildrop, the same unique ids
    s = poplib.POP3_SSL("127.0.0.1", pop3s_port(w), context=unverified(), timeout=15)
    assert s.getwelcome() == b"+OK wispd POP3 ready"
    assert "STLS" not in s.capa()
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert s._shortcmd(f"AUTH PLAIN {plain}").startswith(b"+OK Logged in")
    assert s.uidl()[1] == uidls
    assert retr(s, 1)[0] == imap[0][2]
    s.quit()
    # what RETR read is \Seen now (as Dovecot does), what only TOP read is not
    flags = {uid: f for uid, _, _, f in imap_messages(w)}
    assert all("\\Seen" in f for f in flags.values()), flags


def test_uidl_is_stable_across_a_restart(make_wispd):
    w = start(make_wispd)
    deliver(w, message("a", "1\r\n"), message("b", "2\r\n"))
    p = login(pop3_port(w))
    before = p.uidl()[1]
    p.quit()
    w.stop()
    w.start()
    p = login(pop3_port(w))
    assert p.uidl()[1] == before
    assert p.uidl(2) == b"+OK " + before[1]
    p.quit()


def test_dele_commits_at_quit_and_a_dropped_connection_deletes_nothing(make_wispd):
    w = start(make_wispd)
    deliver(w, message("keep-1", "a\r\n"), message("gone", "b\r\n"), message("keep-2", "c\r\n"))
    port = pop3_port(w)

    p = login(port)
    p.dele(1)
    p.dele(2)
    with pytest.raises(poplib.error_proto, match=r"-ERR message 2 already deleted"):
        p.retr(2)
    assert p.stat()[0] == 1
    p.file.close()  # no QUIT: no UPDATE state
    p.sock.close()

    p = login_when_unlocked(port)
    assert p.stat()[0] == 3, "a dropped connection deleted mail"
    p.dele(1)
    assert p.rset().startswith(b"+OK maildrop has 3 messages")
    assert p.stat()[0] == 3
    p.dele(2)
    with pytest.raises(poplib.error_proto, match=r"-ERR message 2 already deleted"):
        p.dele(2)
    assert p.quit() == b"+OK wispd POP3 server signing off (2 messages left)"

    left = imap_messages(w)
    subjects = [re.search(rb"Subject: (\S+)", raw).group(1) for _, _, raw, _ in left]
    assert subjects == [b"keep-1", b"keep-2"]
    p = login(port)
    assert p.stat()[0] == 2
    p.quit()


def test_wrong_password_is_auth_and_the_maildrop_is_locked_in_use(make_wispd):
    w = start(make_wispd)
    port = pop3_port(w)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        login(port, password="wrong")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        login(port, user="nobody@example.com")
    first = login(port)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        login(port)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        login(pop3s_port(w), tls="pop3s")
    first.quit()
    login(port).quit()
    # a disabled account can't log in
    acct = w.request("GET", "/api/v1/email/accounts").json["accounts"][0]
    assert w.request("POST", f"/api/v1/email/accounts/{acct['id']}/toggle").status == 200
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        login(port)


def local_address():
    """A non-loopback IPv4 address of this machine, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_plaintext_logins_need_tls_from_a_remote_address(make_wispd):
    ip = local_address()
    if ip is None:
        pytest.skip("no non-loopback address (the capability logic is covered by a unit test)")
    w = start(make_wispd, pop3_listen=("127.0.0.1:0", f"{ip}:0"))
    remote = [port for host, port in pop3_addrs(w) if host == ip][0]
    p = poplib.POP3(ip, remote, timeout=15)
    caps = p.capa()
    assert "USER" not in caps and "SASL" not in caps and "STLS" in caps, caps
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/PERM\] Plaintext authentication disallowed"):
        p.user(USER)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/PERM\]"):
        p._shortcmd("AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode())
    p.stls(context=unverified())
    assert "USER" in p.capa()
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK Logged in")
    p.quit()


class Wire:
    """A raw POP3 connection."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""
        assert self.line() == "+OK wispd POP3 ready"

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

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.line()

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


def test_junk_overlong_lines_and_bad_numbers_are_answered_and_the_session_goes_on(make_wispd):
    w = start(make_wispd)
    deliver(w, message("one", "x\r\n"))
    port = pop3_port(w)
    c = Wire(port)
    assert c.cmd("user " + USER) == "+OK"
    # AUTH PLAIN with a continuation, aborted, then done right
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd("*") == "-ERR Authentication aborted"
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd(base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()).startswith("+OK Logged in")
    # after login, a flood of junk is answered line by line and the session stays
    c.send("".join(f"XYZZY{i}\r\n" for i in range(50)))
    assert all(c.line().startswith("-ERR Unknown command") for _ in range(50))
    c.send("A" * 5000 + "\r\nSTAT\r\n")
    assert c.line() == "-ERR line too long"
    assert c.line().startswith("+OK 1 ")
    for arg, answer in [("99999999999999999999", "-ERR Number out of range"),
                        ("0", "-ERR no such message, only 1 messages in maildrop"),
                        ("2", "-ERR no such message, only 1 messages in maildrop"),
                        ("-1", "-ERR Invalid message number"),
                        ("1x", "-ERR Invalid message number"),
                        ("", "-ERR One message number expected")]:
        assert c.cmd(f"RETR {arg}".rstrip()) == answer, arg
    assert c.cmd("list 1").startswith("+OK 1 ")
    assert c.cmd("quit").startswith("+OK")
    assert c.closed()

    # before login, ten invalid commands end the session
    c = Wire(port)
    c.send("".join(f"BOGUS{i}\r\n" for i in range(9)))
    assert all(c.line().startswith("-ERR") for _ in range(9))
    assert c.cmd("STAT") == "-ERR Not logged in: USER/PASS or AUTH first"
    assert c.line() == "-ERR Too many invalid commands"
    assert c.closed()
