"""IMAP against the real server, checked against the RFC text: BODY[section] inside attached
messages byte for byte (RFC 3501 6.4.5), ENVELOPE edge cases (7.4.2), date searches around
midnight and across timezones and flag/keyword searches (6.4.4). Messages go in by APPEND so
the stored bytes are exactly the corpus files."""

import imaplib
import re
from pathlib import Path

import pytest

from mailutil import account, installed, ports

PASSWORD = "password123"
CORPUS = Path(__file__).resolve().parent.parent / "engine" / "tests" / "corpus" / "imap"

# (section, start, end) in the corpus files; found by hand (each part's first and last bytes,
# the CRLF before a boundary left to the boundary). The same numbers as the Rust unit tests.
RFC3501_SECTIONS = [
    ("HEADER", 0, 284), ("TEXT", 284, 1520), ("1", 362, 374), ("1.MIME", 316, 362),
    ("2", 462, 470), ("3", 513, 807), ("3.HEADER", 513, 681), ("3.TEXT", 681, 807),
    ("3.MIME", 481, 513), ("3.1", 718, 732), ("3.2", 785, 794), ("4", 868, 1484),
    ("4.MIME", 818, 868), ("4.1", 969, 989), ("4.1.MIME", 876, 969), ("4.2", 1063, 1474),
    ("4.2.HEADER", 1063, 1204), ("4.2.TEXT", 1204, 1474), ("4.2.1", 1243, 1259),
    ("4.2.2", 1327, 1461), ("4.2.2.1", 1362, 1381), ("4.2.2.2", 1421, 1452),
    ("4.2.2.2.MIME", 1390, 1421),
]
NESTED_SECTIONS = [
    ("1", 140, 167), ("1.MIME", 138, 140), ("2", 206, 329), ("2.1", 274, 329),
    ("2.HEADER", 206, 274), ("2.TEXT", 274, 329), ("3", 368, 530), ("3.HEADER", 368, 463),
    ("3.TEXT", 463, 530), ("3.1", 463, 530), ("3.1.HEADER", 463, 517), ("3.1.TEXT", 517, 530),
    ("3.1.1", 517, 530),
]


@pytest.fixture
def imap(make_wispd):
    w, _smtp = installed(make_wispd)
    account(w, "info")
    _, port, _ = ports(w)
    return port


def login(port):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    m.login("info@example.com", PASSWORD)
    return m


def append(m, raw, flags=None, date='"01-Jan-2024 12:00:00 +0000"', mailbox="INBOX"):
    typ, data = m.append(mailbox, flags, date, raw)
    assert typ == "OK", data
    return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))


def body_section(m, uid, section):
    """BODY.PEEK[section] of one message: its bytes, or None for NIL."""
    typ, data = m.uid("FETCH", str(uid), f"(BODY.PEEK[{section}])")
    assert typ == "OK", data
    echoed = f"BODY[{section}]".encode()
    for item in data:
        if isinstance(item, tuple) and echoed in item[0]:
            return item[1]
        if isinstance(item, bytes) and echoed + b" NIL" in item:
            return None
    raise AssertionError(f"no {echoed!r} in {data!r}")


def fetch_line(m, uid, items):
    """One FETCH response flattened to bytes (literals inline, as sent)."""
    typ, data = m.uid("FETCH", str(uid), items)
    assert typ == "OK", data
    out = b""
    for item in data:
        if isinstance(item, tuple):
            out += item[0] + b"\r\n" + item[1]
        elif item is not None:
            out += item
    return out


def test_sections_inside_attached_messages_are_byte_exact(imap):
    rfc = (CORPUS / "rfc3501-sections.eml").read_bytes()
    nested = (CORPUS / "nested-single.eml").read_bytes()
    assert len(rfc) == 1520 and len(nested) == 539 and b"\r\n" in rfc
    m = login(imap)
    m.select("INBOX")
    u1, u2 = append(m, rfc), append(m, nested)
    assert fetch_line(m, u1, "(RFC822.SIZE)").endswith(b"RFC822.SIZE 1520)")
    assert body_section(m, u1, "") == rfc
    for section, a, b in RFC3501_SECTIONS:
        assert body_section(m, u1, section) == rfc[a:b], section
    for section, a, b in NESTED_SECTIONS:
        assert body_section(m, u2, section) == nested[a:b], section
    # BODY[2.1] of a single-part attached message is its body, not empty
    assert body_section(m, u2, "2.1") == b"Body of the single-part attached message.\r\nSecond line."
    assert body_section(m, u1, "3.HEADER.FIELDS (SUBJECT FROM)") == \
        b"From: Inner Three <three@example.net>\r\nSubject: part three\r\n\r\n"
    assert body_section(m, u1, "3.HEADER.FIELDS.NOT (FROM SUBJECT DATE MIME-VERSION)") == \
        b'Content-Type: multipart/mixed; boundary="three"\r\n\r\n'
    assert body_section(m, u2, "3.1.HEADER.FIELDS (SUBJECT)") == b"Subject: deepest\r\n\r\n"
    # partial fetch inside an attached message
    typ, data = m.uid("FETCH", str(u1), "(BODY.PEEK[4.2.2.2]<5.7>)")
    assert data[0][0].endswith(b"BODY[4.2.2.2]<5> {7}") and data[0][1] == b"4.2.2.2", data
    # parts that don't exist
    for section in ["5", "4.3", "1.1", "2.HEADER", "4.HEADER", "3.3", "4.2.2.3"]:
        assert body_section(m, u1, section) is None, section
    assert body_section(m, u2, "2.2") is None
    # BODYSTRUCTURE numbers the parts as BODY[section] finds them: sizes and line counts agree
    bs = fetch_line(m, u1, "(BODYSTRUCTURE)")
    assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 12 1 NIL NIL NIL NIL)' in bs, bs
    assert b'"MESSAGE" "RFC822" NIL NIL NIL "7BIT" 294 ("Tue, 2 Jan 2024 08:00:00 +0100" "part three"' in bs, bs
    assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 14 1 NIL NIL NIL NIL)' \
           b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "7BIT" 9 NIL NIL NIL NIL) "MIXED"' in bs, bs
    assert b'("IMAGE" "GIF" NIL "<gif@example.com>" NIL "BASE64" 20 NIL NIL NIL NIL)' in bs, bs
    assert b'"ALTERNATIVE" ("BOUNDARY" "alt") NIL NIL NIL)' in bs, bs
    # nothing read through PEEK was marked \Seen
    assert m.uid("SEARCH", None, "SEEN") == ("OK", [b""])
    m.logout()


def test_envelope_groups_missing_fields_and_raw_strings(imap):
    m = login(imap)
    m.select("INBOX")
    u1 = append(m, b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n"
                   b"To: undisclosed-recipients:;\r\n"
                   b"Cc: A Group: a@b.example, \"C \\\"Q\\\" D\" <c@d.example>;, solo@example.net\r\n"
                   b"Subject: =?utf-8?b?R3LDvMOfZQ==?= \"quoted\" back\\slash\r\n"
                   b"\r\nbody\r\n")
    env = fetch_line(m, u1, "(ENVELOPE)")
    assert env.endswith(
        b'ENVELOPE (NIL "=?utf-8?b?R3LDvMOfZQ==?= \\"quoted\\" back\\\\slash" '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.com")) '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.com")) '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "jorg" "example.com")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "A Group" NIL)(NIL NIL "a" "b.example")("C \\"Q\\" D" NIL "c" "d.example")'
        b'(NIL NIL NIL NIL)(NIL NIL "solo" "example.net")) NIL NIL NIL))'), env
    u2 = append(m, b"From: Ann <ann@example.com>\r\nSender:\r\nReply-To: Bob <bob@example.com>\r\n"
                   b"Date: Mon, 1 Jan 2024 23:30:00 -0800\r\nIn-Reply-To: <parent@example.com>\r\n"
                   b"Message-ID: <child@example.com>\r\nTo: nodomain\r\n\r\nx\r\n")
    env = fetch_line(m, u2, "(ENVELOPE)")
    assert env.endswith(
        b'ENVELOPE ("Mon, 1 Jan 2024 23:30:00 -0800" NIL (("Ann" NIL "ann" "example.com")) '
        b'(("Ann" NIL "ann" "example.com")) (("Bob" NIL "bob" "example.com")) '
        b'((NIL NIL "nodomain" "")) NIL NIL "<parent@example.com>" "<child@example.com>"))'), env
    u3 = append(m, "Subject: Grüße\r\nFrom: Jörg <j@example.com>\r\n\r\nx\r\n".encode())
    env = fetch_line(m, u3, "(ENVELOPE)")
    jorg = '(({5}\r\nJörg NIL "j" "example.com"))'
    # 8-bit header bytes go out untouched, as literals
    assert env.endswith(f"ENVELOPE (NIL {{7}}\r\nGrüße {jorg} {jorg} {jorg} NIL NIL NIL NIL NIL))".encode()), env
    m.logout()


def test_date_searches_around_midnight_and_timezones(imap):
    m = login(imap)
    m.select("INBOX")

    def msg(date_header):
        head = f"Date: {date_header}\r\n" if date_header else ""
        return (head + "Subject: dated\r\n\r\nx\r\n").encode()

    # internal dates: 31 Dec 23:59:59 UTC, 1 Jan 00:00:00 UTC, 1 Jan 23:30 -0800 (= 2 Jan UTC)
    a = append(m, msg("Mon, 1 Jan 2024 23:30:00 -0800"), date='"31-Dec-2023 23:59:59 +0000"')
    b = append(m, msg("Tue, 2 Jan 2024 00:30:00 +0900"), date='"01-Jan-2024 00:00:00 +0000"')
    c = append(m, msg(None), date='"01-Jan-2024 23:30:00 -0800"')
    d = append(m, msg("not a date"), date='"02-Jan-2024 00:00:00 +0000"')
    assert fetch_line(m, c, "(INTERNALDATE)").endswith(b'INTERNALDATE " 2-Jan-2024 07:30:00 +0000")')

    def uids(*key):
        typ, data = m.uid("SEARCH", None, *key)
        assert typ == "OK", data
        return sorted(int(x) for x in data[0].split())

    # BEFORE/ON/SINCE: the internal date's day, as stored (UTC)
    assert uids("ON", "31-Dec-2023") == [a]
    assert uids("ON", "1-Jan-2024") == [b]
    assert uids("ON", "2-Jan-2024") == [c, d]
    assert uids("BEFORE", "1-Jan-2024") == [a]
    assert uids("SINCE", "2-Jan-2024") == [c, d]
    assert uids("SINCE", "1-Jan-2024", "BEFORE", "2-Jan-2024") == [b]
    # SENT*: the Date: field's own day in its own timezone; no or bad Date: -> internal date
    assert uids("SENTON", "1-Jan-2024") == [a]
    assert uids("SENTON", "2-Jan-2024") == [b, c, d]
    assert uids("SENTBEFORE", "2-Jan-2024") == [a]
    assert uids("SENTSINCE", "2-Jan-2024") == [b, c, d]
    assert uids("SENTSINCE", "3-Jan-2024") == []
    assert uids("OR", "SENTON", "1-Jan-2024", "ON", "31-Dec-2023") == [a]
    m.logout()


def test_flag_keyword_and_recent_searches(imap):
    m = login(imap)
    one = append(m, b"Subject: one\r\n\r\nsmall\r\n", flags="(\\Seen $Label1)")
    two = append(m, b"Subject: two\r\nX-Empty:\r\n\r\n" + b"x" * 2000 + b"\r\n", flags="(\\Flagged Work)")
    three = append(m, b"Subject: three\r\n\r\nthird\r\n", flags="(\\Deleted \\Draft \\Answered)")
    m.select("INBOX")

    def uids(*key):
        typ, data = m.uid("SEARCH", None, *key)
        assert typ == "OK", data
        return sorted(int(x) for x in data[0].split())

    assert uids("KEYWORD", "$label1") == [one]
    assert uids("KEYWORD", "$LABEL1") == [one]
    assert uids("KEYWORD", "work") == [two]
    assert uids("UNKEYWORD", "Work") == [one, three]
    assert uids("KEYWORD", "NeverUsed") == []
    assert uids("UNKEYWORD", "NeverUsed") == [one, two, three]
    assert uids("SEEN") == [one] and uids("UNSEEN") == [two, three]
    assert uids("FLAGGED") == [two] and uids("UNFLAGGED") == [one, three]
    assert uids("DELETED") == [three] and uids("UNDELETED") == [one, two]
    assert uids("DRAFT") == [three] and uids("ANSWERED") == [three] and uids("UNANSWERED") == [one, two]
    assert uids("NOT", "OR", "SEEN", "FLAGGED") == [three]
    assert uids("OR", "(SEEN KEYWORD $Label1)", "NOT", "UID", f"{one}:{two}") == [one, three]
    assert uids("2:*") == [two, three]
    assert uids("UID", f"{two}:*") == [two, three]
    assert uids("HEADER", "X-Empty", '""') == [two]
    assert uids("LARGER", "1000") == [two]
    assert uids("LARGER", "4294967295") == []
    # a number past 32 bits is a clean BAD, and the session goes on
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        m.uid("SEARCH", None, "LARGER", "4294967296")
    assert uids("ALL") == [one, two, three]
    # this session selected first: all three are \Recent here (RFC 3501 2.3.2)
    assert uids("RECENT") == [one, two, three]
    assert uids("NEW") == [two, three]
    assert uids("OLD") == []
    other = login(imap)
    other.select("INBOX")
    typ, data = other.uid("SEARCH", None, "RECENT")
    assert (typ, data) == ("OK", [b""])
    typ, data = other.uid("SEARCH", None, "OLD")
    assert sorted(int(x) for x in data[0].split()) == [one, two, three]
    other.logout()
    m.logout()


def test_body_of_single_part_and_rfc822_in_rfc822_attachments(imap):
    nested = (CORPUS / "nested-single.eml").read_bytes()
    m = login(imap)
    m.select("INBOX")
    uid = append(m, nested)
    body = fetch_line(m, uid, "(BODY)")
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 123 (NIL "single-part attached" ' in body, body
    assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 55 2) 5)' in body, body
    # 3 is a message whose message is a message: 3.1 is that inner message, 3.1.1 its body
    assert b'"7BIT" 162 (NIL "carries a message" ' in body, body
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 67 (NIL "deepest" ' in body, body
    assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 13 1) 4) 8)' in body, body
    m.logout()
