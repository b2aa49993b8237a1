"""Attacks on what this wave added, against the real server: a POP3 failed-login and connection
flood with peak RSS measured, and hostile input to the new IMAP syntax (QRESYNC parameters,
LIST-EXTENDED, ESEARCH, MODSEQ keys, LITERAL-): each gets a proper answer, the session goes
on, and memory stays bounded."""

import poplib
import socket
import threading
import time

import pytest

from mailutil import account, installed, message, ports
from test_hardening import rss_kib
from test_imap_qresync import Imap, send
from test_pop3 import pop3_port

PASSWORD = "password123"


@pytest.fixture
def mail(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    return w, smtp


def test_pop3_failed_login_and_connection_flood_keeps_memory_bounded(mail):
    w, smtp = mail
    send(smtp, message("keep me"))
    port = pop3_port(w)
    before = rss_kib(w)
    stop = time.monotonic() + 8
    answers = {"refused": 0, "busy": 0, "limited": 0}
    lock = threading.Lock()

    def guesser(n):
        i = 0
        while time.monotonic() < stop:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=15)
                f = s.makefile("rb")
                greeting = f.readline()
                if not greeting.startswith(b"+OK"):
                    with lock:
                        answers["limited"] += 1
                    s.close()
                    continue
                s.sendall(b"USER info@example.com\r\nPASS wrong%d-%d\r\n" % (n, i))
                assert f.readline().startswith(b"+OK")
                line = f.readline()
                assert line.startswith(b"-ERR"), line
                with lock:
                    answers["refused"] += 1
                    answers["busy"] += b"SYS/TEMP" in line
                s.close()
            except (ConnectionError, socket.timeout):
                pass
            i += 1

    # more connections than one address may hold: the ones over the limit are told so
    held, over = [], 0
    for _ in range(60):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        greeting = s.makefile("rb").readline()
        over += greeting.startswith(b"-ERR")
        held.append(s)
    assert over == 10, over
    for s in held:
        s.close()
    time.sleep(0.5)
    threads = [threading.Thread(target=guesser, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = rss_kib(w, "VmHWM")
    print(f"pop3 flood: {answers}, RSS before {before} KiB, peak {peak} KiB")
    assert answers["refused"] >= 40, answers
    assert peak < 300 * 1024, f"peak RSS {peak} KiB (before {before} KiB) after {answers}"
    # the owner still gets in, and the mail is there
    time.sleep(1)
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    p.user("info@example.com")
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    p.quit()


def test_hostile_imap_input_to_the_new_syntax_is_answered(mail):
    w, smtp = mail
    for i in range(3):
        send(smtp, message(f"m{i}"))
    _, imap, _ = ports(w)
    before = rss_kib(w)
    c = Imap(imap)
    c.cmd("ENABLE QRESYNC")
    # known-uids as long as a command line may be: answered, and quickly enough to finish
    uids = ",".join(str(2 * i + 1) for i in range(9000))
    ok, lines = c.cmd(f"SELECT INBOX (QRESYNC (1 1 {uids}))")
    assert ok.startswith(b"OK"), ok
    for bad in (
        "SELECT INBOX (QRESYNC (1 99999999999999999999999))",
        "SELECT INBOX (QRESYNC (0 1))",
        "SELECT INBOX (QRESYNC (1 1 x:y))",
        "SELECT INBOX (QRESYNC (",
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 99999999999999999999999 VANISHED)",
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 BOGUS)",
        "UID FETCH 1:* (FLAGS) (VANISHED)",
        "SEARCH RETURN (MIN MAX",
        "SEARCH MODSEQ \"/flags/\\\\seen\" nonsense 5",
        "SEARCH HEADER X-Wispd-Modseq-0 \"\" MODSEQ 1",
        'LIST (RECURSIVEMATCH) "" *',
        'LIST (SUBSCRIBED "" *',
        'LIST "" (' + " ".join(f'"p{i}"' for i in range(1000)) + ")",
        'LIST "" % RETURN (STATUS (MESSAGES BOGUS))',
        "LIST " + "(" * 50 + ")" * 50 + ' "" *',
    ):
        ok, _ = c.cmd(bad)
        assert ok.startswith(b"BAD"), (bad[:80], ok)
    # LITERAL- of an absurd size: refused, the session goes on
    ok, _ = c.cmd("", raw=b"t%d APPEND INBOX {99999999999-}\r\n" % (c.n + 1))
    assert ok.startswith(b"NO") or ok.startswith(b"BAD"), ok
    ok, lines = c.cmd("STATUS INBOX (SIZE SIZE MESSAGES)")
    assert ok.startswith(b"OK") and lines[0].startswith(b"* STATUS INBOX ("), lines
    ok, lines = c.cmd("NOOP")
    assert ok.startswith(b"OK")
    c.close()
    assert rss_kib(w, "VmHWM") < before + 100 * 1024
