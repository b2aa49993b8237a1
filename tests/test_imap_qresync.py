"""IMAP state across sessions, against the real server: \\Recent (RFC 3501 2.3.2), keywords
announced before use, SELECT's responses in order, QRESYNC (RFC 7162) resync after expunges in
another session, LIST-EXTENDED/LIST-STATUS, STATUS SIZE, LITERAL-, IMAP4rev2, and
subscriptions that outlive their mailbox. A raw client where the order of untagged responses
matters (imaplib files them in a dict), imaplib elsewhere."""

import imaplib
import re
import smtplib
import socket

import pytest

from mailutil import account, installed, message, ports

PASSWORD = "password123"


@pytest.fixture
def mail(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    _, imap, _ = ports(w)
    return w, smtp, imap


def send(smtp, raw, to="info@example.com"):
    with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as c:
        c.sendmail("a@remote.example", [to], raw)


class Imap:
    """Tagged commands, every untagged line kept in order."""

    def __init__(self, port, user="info@example.com"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buf = b""
        self.n = 0
        assert self.line().startswith(b"* OK")
        status, _ = self.cmd(f"LOGIN {user} {PASSWORD}")
        assert status.startswith(b"OK"), status

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        # a literal: the line ends with {n}; its data and the rest of the line follow
        m = re.search(rb"\{(\d+)\}$", line)
        if m:
            n = int(m.group(1))
            while len(self.buf) < n:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n:]
            return line + b"\r\n" + data + self.line()
        return line

    def cmd(self, text, raw=None):
        """Sends `tag text`; returns (tagged status text, [untagged lines])."""
        self.n += 1
        tag = f"t{self.n}".encode()
        self.sock.sendall(raw if raw is not None else tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return line[len(tag) + 1 :], untagged
            untagged.append(line)

    def close(self):
        self.sock.close()


def test_recent_belongs_to_the_first_read_write_session(mail):
    w, smtp, imap = mail
    send(smtp, message("one"))
    send(smtp, message("two"))
    c = Imap(imap)
    ok, lines = c.cmd("EXAMINE INBOX")
    assert b"* 2 RECENT" in lines, lines  # read-only: sees them recent, claims nothing
    a = Imap(imap)
    ok, lines = a.cmd("SELECT INBOX")
    assert ok.startswith(b"OK [READ-WRITE]")
    assert b"* 2 RECENT" in lines, lines
    ok, lines = a.cmd("FETCH 1:* (FLAGS)")
    assert lines == [b"* 1 FETCH (FLAGS (\\Recent))", b"* 2 FETCH (FLAGS (\\Recent))"], lines
    # \Recent can't be set or cleared by a client
    ok, lines = a.cmd("STORE 1 FLAGS (\\Seen \\Recent)")
    assert lines == [b"* 1 FETCH (FLAGS (\\Seen \\Recent))"], lines
    b = Imap(imap)
    ok, lines = b.cmd("SELECT INBOX")
    assert b"* 0 RECENT" in lines, lines
    ok, lines = b.cmd("FETCH 2 (FLAGS)")
    assert lines == [b"* 2 FETCH (FLAGS ())"], lines
    ok, lines = b.cmd("STATUS INBOX (RECENT MESSAGES)")
    assert lines == [b'* STATUS INBOX (RECENT 0 MESSAGES 2)'], lines
    # a new delivery is recent to whichever selected session hears of it first
    send(smtp, message("three"))
    ok, lines = a.cmd("NOOP")
    assert lines == [b"* 3 EXISTS", b"* 3 RECENT"], lines
    ok, lines = b.cmd("NOOP")
    assert lines == [b"* 3 EXISTS", b"* 0 RECENT"], lines
    # APPEND to the selected mailbox is announced to the appending session before its OK
    ok, lines = b.cmd("", raw=b"t%d APPEND INBOX {12+}\r\nSubject: x\r\n\r\n" % (b.n + 1))
    assert ok.startswith(b"OK [APPENDUID"), ok
    assert lines == [b"* 4 EXISTS", b"* 1 RECENT"], lines
    for s in (a, b, c):
        s.close()
    # the claims outlive a restart: nothing is recent to the next session
    w.stop()
    w.start()
    _, imap, _ = ports(w)
    d = Imap(imap)
    ok, lines = d.cmd("SELECT INBOX")
    assert b"* 4 EXISTS" in lines and b"* 0 RECENT" in lines, lines
    d.close()


def test_select_order_and_keywords_announced_before_use(mail):
    w, smtp, imap = mail
    send(smtp, message("one"))
    a, b = Imap(imap), Imap(imap)
    ok, lines = a.cmd("SELECT INBOX")
    kinds = [re.match(rb"\* (?:OK \[)?([A-Z]+|\d+ [A-Z]+)", l).group(1) for l in lines]
    kinds = [k.split(b" ")[-1] for k in kinds]
    assert kinds == [b"FLAGS", b"EXISTS", b"RECENT", b"UNSEEN", b"PERMANENTFLAGS", b"UIDNEXT",
                     b"UIDVALIDITY", b"HIGHESTMODSEQ"], lines
    b.cmd("SELECT INBOX")
    ok, lines = a.cmd("STORE 1 +FLAGS ($Label1)")
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)", lines
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)]")
    assert lines[2] == b"* 1 FETCH (FLAGS ($Label1 \\Recent))", lines
    # the other session hears of the keyword before the FETCH that carries it
    ok, lines = b.cmd("NOOP")
    assert lines[0].startswith(b"* FLAGS (") and b"$Label1" in lines[0], lines
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (") and b"$Label1" in lines[1], lines
    assert lines[2] == b"* 1 FETCH (UID 1 FLAGS ($Label1))", lines
    # and a later SELECT lists it in FLAGS
    ok, lines = b.cmd("SELECT INBOX")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox is now closed", lines
    assert lines[1] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)", lines
    a.close()
    b.close()


def uids(text):
    out = set()
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def test_qresync_after_expunges_and_flag_changes_in_another_session(mail):
    w, smtp, imap = mail
    for i in range(10):
        send(smtp, message(f"m{i}"))
    c = Imap(imap)
    ok, lines = c.cmd("SELECT INBOX (QRESYNC (1 1))")
    assert ok.startswith(b"BAD"), ok  # not enabled yet
    ok, lines = c.cmd("ENABLE QRESYNC")
    assert lines == [b"* ENABLED QRESYNC"], lines
    ok, lines = c.cmd("SELECT INBOX")
    validity = int(next(re.search(rb"UIDVALIDITY (\d+)", l).group(1) for l in lines if b"UIDVALIDITY" in l))
    modseq = int(next(re.search(rb"HIGHESTMODSEQ (\d+)", l).group(1) for l in lines if b"HIGHESTMODSEQ" in l))
    c.cmd("LOGOUT")
    # another session changes flags and expunges while the client is away
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login("info@example.com", PASSWORD)
    m.select("INBOX")
    m.uid("STORE", "2,4", "+FLAGS", "(\\Flagged)")
    m.uid("STORE", "3,5,9", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.uid("MOVE", "7", "Trash")
    m.logout()
    c = Imap(imap)
    c.cmd("ENABLE QRESYNC")
    ok, lines = c.cmd(f"SELECT INBOX (QRESYNC ({validity} {modseq} 1:10))")
    assert ok.startswith(b"OK"), ok
    vanished = [l for l in lines if l.startswith(b"* VANISHED (EARLIER) ")]
    assert len(vanished) == 1 and uids(vanished[0].split(b" ")[-1]) == {3, 5, 7, 9}, lines
    fetched = [l for l in lines if b" FETCH " in l]
    assert len(fetched) == 2 and all(b"\\Flagged" in l and b"MODSEQ (" in l for l in fetched), lines
    assert {int(re.search(rb"UID (\d+)", l).group(1)) for l in fetched} == {2, 4}
    # known-uids narrows what is reported
    c.cmd("UNSELECT")
    ok, lines = c.cmd(f"SELECT INBOX (QRESYNC ({validity} {modseq} 1:4))")
    vanished = [l for l in lines if l.startswith(b"* VANISHED")]
    assert uids(vanished[0].split(b" ")[-1]) == {3}, lines
    # UID FETCH … (CHANGEDSINCE … VANISHED)
    ok, lines = c.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert ok.startswith(b"OK"), ok
    assert lines[0].startswith(b"* VANISHED (EARLIER) ") and uids(lines[0].split(b" ")[-1]) == {3, 5, 7, 9}
    assert len([l for l in lines if b" FETCH " in l]) == 2, lines
    ok, _ = c.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert ok.startswith(b"BAD"), ok  # VANISHED only with UID FETCH
    # a UIDVALIDITY that doesn't match: a plain SELECT
    ok, lines = c.cmd(f"SELECT INBOX (QRESYNC ({validity + 1} {modseq}))")
    assert ok.startswith(b"OK") and not any(b"VANISHED" in l or b" FETCH " in l for l in lines), lines
    # expunges in another session now show as VANISHED, not EXPUNGE
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login("info@example.com", PASSWORD)
    m.select("INBOX")
    m.uid("STORE", "10", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.logout()
    ok, lines = c.cmd("NOOP")
    assert b"* VANISHED 10" in lines and not any(l.endswith(b"EXPUNGE") for l in lines), lines
    c.close()


def test_list_extended_status_size_literal_minus_and_rev2(mail):
    w, smtp, imap = mail
    send(smtp, message("hello", body="x" * 100 + "\r\n"))
    c = Imap(imap)
    ok, lines = c.cmd("CAPABILITY")
    caps = lines[0].split()
    for cap in (b"IMAP4rev2", b"IMAP4rev1", b"ESEARCH", b"LIST-EXTENDED", b"LIST-STATUS",
                b"STATUS=SIZE", b"LITERAL-", b"QRESYNC", b"SPECIAL-USE", b"UIDPLUS", b"MOVE"):
        assert cap in caps, (cap, caps)
    c.cmd("CREATE Archive/2026")
    c.cmd("SUBSCRIBE Archive/2026")
    ok, lines = c.cmd('LIST (SUBSCRIBED) "" "*"')
    assert ok.startswith(b"OK"), ok
    assert any(b"\\Subscribed" in l and l.endswith(b"Archive/2026") for l in lines), lines
    ok, lines = c.cmd('LIST "" ("INBOX" "Sent") RETURN (SUBSCRIBED STATUS (MESSAGES SIZE UNSEEN))')
    assert ok.startswith(b"OK"), ok
    inbox = lines.index(next(l for l in lines if l.startswith(b"* LIST") and l.endswith(b"INBOX")))
    st = lines[inbox + 1]
    assert st.startswith(b"* STATUS INBOX (MESSAGES 1 SIZE ") and st.endswith(b" UNSEEN 1)"), lines
    size = int(re.search(rb"SIZE (\d+)", st).group(1))
    assert size > 100
    assert any(l.endswith(b"Sent") for l in lines) and len([l for l in lines if l.startswith(b"* LIST")]) == 2
    ok, lines = c.cmd('LIST (SPECIAL-USE) "" "*"')
    assert lines and all(re.search(rb"\\(Sent|Drafts|Trash|Junk|Archive)", l) for l in lines), lines
    ok, _ = c.cmd('LIST (RECURSIVEMATCH) "" "*"')
    assert ok.startswith(b"BAD"), ok
    ok, lines = c.cmd("STATUS INBOX (SIZE)")
    assert lines == [b"* STATUS INBOX (SIZE %d)" % size], lines
    # a subscription outlives its mailbox (RFC 3501 6.3.9); LIST shows it \NonExistent
    c.cmd("DELETE Archive/2026")
    ok, lines = c.cmd('LSUB "" "Archive/*"')
    assert lines == [b'* LSUB (\\Noselect \\HasNoChildren) "/" Archive/2026'], lines
    ok, lines = c.cmd('LIST (SUBSCRIBED) "" "Archive/*"')
    assert lines == [b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" Archive/2026'], lines
    ok, _ = c.cmd("UNSUBSCRIBE Archive/2026")
    assert ok.startswith(b"OK"), ok
    ok, lines = c.cmd('LSUB "" "Archive/*"')
    assert lines == [], lines
    # LITERAL- : a non-synchronising literal ending in '-'
    ok, lines = c.cmd("", raw=b"t%d CREATE {5-}\r\nLitMB\r\n" % (c.n + 1))
    assert ok.startswith(b"OK"), ok
    # IMAP4rev2: no RECENT, a LIST of the mailbox in SELECT
    ok, lines = c.cmd("ENABLE IMAP4rev2")
    assert lines == [b"* ENABLED IMAP4rev2"], lines
    ok, lines = c.cmd("SELECT INBOX")
    assert not any(b"RECENT" in l for l in lines), lines
    assert b'* LIST () "/" INBOX' in lines, lines
    ok, lines = c.cmd("FETCH 1 (FLAGS)")
    assert lines == [b"* 1 FETCH (FLAGS ())"], lines
    # …and SEARCH answers with ESEARCH
    ok, lines = c.cmd("SEARCH ALL")
    assert lines == [b'* ESEARCH (TAG "t%d") ALL 1' % c.n], lines
    c.close()


def test_esearch_and_modseq_anywhere_in_a_search(mail):
    w, smtp, imap = mail
    for i in range(5):
        send(smtp, message(f"m{i}"))
    c = Imap(imap)
    c.cmd("SELECT INBOX")
    ok, lines = c.cmd("SEARCH RETURN (MIN MAX COUNT ALL) NOT 3")
    assert lines == [b'* ESEARCH (TAG "t%d") MIN 1 MAX 5 COUNT 4 ALL 1:2,4:5' % c.n], lines
    ok, lines = c.cmd("UID SEARCH RETURN () 2:3")
    assert lines == [b'* ESEARCH (TAG "t%d") UID ALL 2:3' % c.n], lines
    ok, lines = c.cmd("SEARCH RETURN (COUNT) SUBJECT nothing-like-this")
    assert lines == [b'* ESEARCH (TAG "t%d") COUNT 0' % c.n], lines
    ok, _ = c.cmd("SEARCH RETURN (BOGUS) ALL")
    assert ok.startswith(b"BAD"), ok
    ok, lines = c.cmd("STORE 2,4 +FLAGS (\\Flagged)")
    ok, lines = c.cmd("FETCH 4 (MODSEQ)")
    top = int(re.search(rb"MODSEQ \((\d+)\)", lines[0]).group(1))
    # MODSEQ inside NOT and OR, with an entry name; the reply carries the highest MODSEQ found
    ok, lines = c.cmd(f"SEARCH NOT MODSEQ {top}")
    assert lines[0].startswith(b"* SEARCH 1 2 3 5 (MODSEQ "), lines
    ok, lines = c.cmd(f'SEARCH OR MODSEQ "/flags/\\\\flagged" all {top} SUBJECT m0')
    assert lines == [b"* SEARCH 1 4 (MODSEQ %d)" % top], lines
    ok, lines = c.cmd(f"SEARCH RETURN (COUNT) MODSEQ {top}")
    assert lines == [b'* ESEARCH (TAG "t%d") COUNT 1 MODSEQ %d' % (c.n, top)], lines
    ok, _ = c.cmd("SEARCH MODSEQ 99999999999999999999999")
    assert ok.startswith(b"BAD"), ok
    c.close()


BINARY_MESSAGE = (
    b"From: a@remote.example\r\nTo: info@example.com\r\nSubject: binary\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9 =\r\nsoft\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAECAw==\r\n"
    b"--b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-custom\r\n\r\nzz\r\n"
    b"--b--\r\n"
)


def test_binary_fetch_and_saved_search_results(mail):
    w, smtp, imap = mail
    send(smtp, BINARY_MESSAGE)
    for i in range(4):
        send(smtp, message(f"m{i}"))
    c = Imap(imap)
    c.cmd("SELECT INBOX")
    ok, lines = c.cmd("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2])")
    assert ok.startswith(b"OK"), ok
    assert b"BINARY[1] {10}\r\ncaf\xc3\xa9 soft" in lines[0], lines
    assert b"BINARY.SIZE[2] 4" in lines[0], lines
    ok, lines = c.cmd("FETCH 1 (BINARY.PEEK[2])")
    assert b"BINARY[2] ~{4}\r\n\x00\x01\x02\x03" in lines[0], lines  # NUL: literal8
    ok, lines = c.cmd("UID FETCH 1 (BINARY.PEEK[1]<6.4>)")
    assert b"BINARY[1]<6> {4}\r\nsoft" in lines[0], lines
    ok, _ = c.cmd("FETCH 1 (BINARY.PEEK[3])")
    assert ok.startswith(b"NO [UNKNOWN-CTE]"), ok
    ok, lines = c.cmd("FETCH 1 (FLAGS)")
    assert b"\\Seen" not in lines[0], lines  # PEEK left it unseen
    ok, lines = c.cmd("FETCH 1 (BINARY[1])")
    assert b"\\Seen" in lines[0], lines
    # SEARCHRES: RETURN (SAVE) answers nothing and keeps the result as $
    ok, lines = c.cmd("SEARCH RETURN (SAVE) SUBJECT m")
    assert ok.startswith(b"OK") and lines == [], lines
    ok, lines = c.cmd("FETCH $ (UID)")
    assert [l.split(b" ")[1] for l in lines] == [b"2", b"3", b"4", b"5"], lines
    ok, lines = c.cmd("UID SEARCH $ NOT SUBJECT m0")
    assert lines == [b"* SEARCH 3 4 5"], lines
    ok, lines = c.cmd("STORE $ +FLAGS.SILENT (\\Flagged)")
    assert ok.startswith(b"OK"), ok
    ok, lines = c.cmd("SEARCH FLAGGED")
    assert lines == [b"* SEARCH 2 3 4 5"], lines
    ok, lines = c.cmd("SEARCH RETURN (SAVE MIN) SUBJECT m")
    ok, lines = c.cmd("UID FETCH $ (UID)")
    assert lines == [b"* 2 FETCH (UID 2)"], lines
    # after SELECT the saved result is empty again
    c.cmd("SELECT INBOX")
    ok, lines = c.cmd("FETCH $ (UID)")
    assert ok.startswith(b"OK") and lines == [], lines
    ok, lines = c.cmd("UID SEARCH $")
    assert lines == [b"* SEARCH"], lines
    c.close()
