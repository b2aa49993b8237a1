"""Spam scoring and greylisting at the MX against the real server (`/email/spam`): DNS answered
on loopback (SPF, DKIM signed by dkimpy, a DNSBL `score` zone), clients on 127.0.0.x source
addresses. Scored mail carries `X-Spam-Status`/`X-Spam-Score` (forged ones removed); over
`junk_score` it is in Junk over IMAP, over `reject_score` it is refused with 550 5.7.1, and a
Sieve `spamtest` sees the score. Greylisting answers 451 4.7.1 until the delay has passed,
keeps what passed across a restart, and lets an authenticated, known domain straight in."""

import email
import imaplib
import re
import smtplib
import subprocess
import time

import dkim
import pytest

from conftest import assert_envelope
from dnsserver import DnsServer
from mailutil import account, mail_config, ports

PASSWORD = "password123"


def rsa_key(tmp_path):
    import base64
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "der"],
                         check=True, capture_output=True).stdout
    return key.read_bytes(), base64.b64encode(pub).decode()


@pytest.fixture
def mx(make_wispd, tmp_path):
    dns = DnsServer()
    private, public = rsa_key(tmp_path)
    dns.txt["good.example"] = ["v=spf1 ip4:127.0.0.0/8 -all"]
    dns.txt["sel._domainkey.good.example"] = [f"v=DKIM1; k=rsa; p={public}"]
    dns.txt["_dmarc.good.example"] = ["v=DMARC1; p=none"]
    dns.a["3.0.0.127.score.test"] = ["127.0.0.2"]
    # (reverse DNS of 127.0.0.x is answered by the resolver itself: `localhost`, which is
    # 127.0.0.1 only, so iprev passes for 127.0.0.1 and fails for the other sources)
    config = mail_config(verify_senders=True).replace(
        "[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    account(w, "sales")
    smtp, imap, _ = ports(w)
    yield w, smtp, imap, private
    dns.close()


def message(frm, subject, extra=b"", to="info@example.com", dated=True):
    head = f"From: Sender <{frm}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
    if dated:
        head += f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n"
    return head.encode() + extra + b"\r\nHello there.\r\n"


def signed(private, raw):
    return dkim.sign(raw, b"sel", b"good.example", private,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + raw


def send(smtp, raw, sender, rcpts=("info@example.com",), source="127.0.0.1", helo="mail.good.example"):
    with smtplib.SMTP(timeout=30, source_address=(source, 0)) as c:
        c.connect("127.0.0.1", smtp)
        c.ehlo(helo)
        return c.sendmail(sender, list(rcpts), raw)


def fetch(imap, mailbox="INBOX", user="info@example.com"):
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login(user, PASSWORD)
    typ, _ = m.select(f'"{mailbox}"', readonly=True)
    out = []
    if typ == "OK":
        _, ids = m.search(None, "ALL")
        for i in ids[0].split():
            _, data = m.fetch(i, "(BODY.PEEK[])")
            out.append(email.message_from_bytes(data[0][1]))
    m.logout()
    return out


def unfold(value):
    return re.sub(r"\r?\n[ \t]+", "", value)


def configure(w, **body):
    r = w.request("PUT", "/api/v1/email/spam", body=body)
    assert r.status == 200, r.json
    return r.json["data"]


def test_scores_mark_file_into_junk_refuse_and_reach_sieve_spamtest(mx):
    w, smtp, imap, private = mx
    r = w.request("PUT", "/api/v1/email/rbl",
                  body={"enabled": True, "zones": [{"zone": "score.test", "action": "score", "score": 2.5}]})
    assert r.status == 200, r.json
    data = configure(w, enabled=True, junk_score=4, reject_score=12, denylist=["@bad.example"],
                     rules=[{"name": "SUBJ_WATCHES", "header": "Subject", "contains": "Cheap Watches",
                             "score": 3}])
    assert data["junk_score"] == 4 and data["rules"][0]["name"] == "SUBJ_WATCHES"
    names = {r["name"]: r for r in data["builtin_rules"]}
    assert {"SPF_FAIL", "DKIM_INVALID", "DMARC_FAIL", "MISSING_DATE", "HELO_BARE_IP", "DENYLISTED"} <= set(names)

    # authenticated, well-formed: INBOX, X-Spam-Status: No
    send(smtp, signed(private, message("ann@good.example", "clean")), "ann@good.example")
    # a listed client (2.5) without reverse DNS (1) with a matching subject (3) and a forged
    # verdict: Junk, Yes
    forged = b"X-Spam-Status: No, score=-50 tests=none\r\nX-Spam-Flag: NO\r\n"
    send(smtp, message("ann@good.example", "cheap watches today", forged), "ann@good.example",
         source="127.0.0.3")
    inbox, junk = fetch(imap), fetch(imap, "Junk")
    assert [m["Subject"] for m in inbox] == ["clean"]
    assert inbox[0]["X-Spam-Status"].startswith("No, score=0.0 required=4.0 tests=none"), inbox[0]["X-Spam-Status"]
    assert inbox[0]["X-Spam-Score"] == "0.0"
    assert [m["Subject"] for m in junk] == ["cheap watches today"]
    j = junk[0]
    assert j.get_all("X-Spam-Status") == [j["X-Spam-Status"]], "the forged header is gone"
    # folded as SpamAssassin folds it, within 78 characters a line
    assert "\n\t" in j["X-Spam-Status"]
    assert unfold(j["X-Spam-Status"]) == "Yes, score=6.5 required=4.0 tests=RDNS_NONE,RCVD_IN_SCORE_TEST,SUBJ_WATCHES"
    assert j.get_all("X-Spam-Flag") == ["YES"]

    # over reject_score: refused at the end of DATA, nothing stored
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, message("x@bad.example", "denied"), "x@bad.example")
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.1"), e.value
    assert b"DENYLISTED" in e.value.smtp_error

    # the recipient's Sieve script sees the score through spamtest and overrides Junk
    script = ('require ["spamtest", "relational", "comparator-i;ascii-numeric", "fileinto", "mailbox"];\n'
              'if spamtest :value "ge" :comparator "i;ascii-numeric" "4" { fileinto :create "Spamtest"; stop; }\n')
    r = w.request("PUT", "/api/v1/email/filters/example.com/info",
                  body={"script": script, "name": "spam", "active": True})
    assert r.status in (200, 201), r.json
    send(smtp, message("ann@good.example", "cheap watches again"), "ann@good.example", source="127.0.0.3")
    send(smtp, signed(private, message("ann@good.example", "clean again")), "ann@good.example")
    assert [m["Subject"] for m in fetch(imap, "Spamtest")] == ["cheap watches again"]
    assert [m["Subject"] for m in fetch(imap)] == ["clean", "clean again"]

    stats = w.request("GET", "/api/v1/email/spam").json["data"]["stats"]
    assert stats["scored"] == 5 and stats["junked"] == 2 and stats["rejected"] == 1, stats


def test_header_sanity_rules_score_and_can_be_turned_off(mx):
    w, smtp, imap, _ = mx
    configure(w, enabled=True, junk_score=3, reject_score=20, scores={"HELO_BARE_IP": 0})
    # no Date, no Message-ID, HELO not a domain: 1 + 1 + 1 = 3 -> Junk
    send(smtp, message("ann@good.example", "bare", dated=False), "ann@good.example", helo="localhost")
    # a bare IP HELO is turned off: only the missing headers count (2) -> INBOX
    send(smtp, message("ann@good.example", "bare ip", dated=False), "ann@good.example", helo="127.0.0.1")
    junk, inbox = fetch(imap, "Junk"), fetch(imap)
    assert [m["Subject"] for m in junk] == ["bare"]
    assert "HELO_NOT_FQDN" in junk[0]["X-Spam-Status"] and "MISSING_MID" in junk[0]["X-Spam-Status"]
    assert [m["Subject"] for m in inbox] == ["bare ip"]
    assert "HELO_BARE_IP" not in inbox[0]["X-Spam-Status"], inbox[0]["X-Spam-Status"]


def test_greylisting_defers_new_triplets_until_the_delay_passes(mx):
    w, smtp, imap, private = mx
    configure(w, enabled=False, greylisting={"enabled": True, "delay": 2}, allowlist=["friend@ok.example"])
    raw = message("x@other.example", "grey")
    for _ in range(2):  # first sight, then a retry that comes too early
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(smtp, raw, "x@other.example")
        assert e.value.smtp_code == 451 and e.value.smtp_error.startswith(b"4.7.1"), e.value
        assert b"Greylisted" in e.value.smtp_error
    time.sleep(2.3)
    send(smtp, raw, "x@other.example")
    # the same triplet passes at once from now on, also from another address of the /24
    send(smtp, message("x@other.example", "grey 2"), "x@other.example", source="127.0.0.9")
    # a new recipient is a new triplet; an allowlisted sender is never delayed
    with pytest.raises(smtplib.SMTPDataError):
        send(smtp, message("x@other.example", "grey 3", to="sales@example.com"), "x@other.example",
             rcpts=["sales@example.com"])
    send(smtp, message("friend@ok.example", "friend"), "friend@ok.example")
    assert [m["Subject"] for m in fetch(imap)] == ["grey", "grey 2", "friend"]
    data = w.request("GET", "/api/v1/email/spam").json["data"]
    assert data["stats"]["greylisted"] == 3 and data["stats"]["greylist_entries"] == 2, data["stats"]

    # what passed outlives a restart (the triplets are in the store)
    w.stop()
    w.start()
    smtp2, imap2, _ = ports(w)
    send(smtp2, message("x@other.example", "after restart"), "x@other.example")
    assert [m["Subject"] for m in fetch(imap2)][-1] == "after restart"


def test_a_known_domain_that_authenticates_skips_greylisting(mx):
    w, smtp, imap, private = mx
    configure(w, enabled=False, greylisting={"enabled": True, "delay": 1})
    first = signed(private, message("ann@good.example", "first"))
    with pytest.raises(smtplib.SMTPDataError):
        send(smtp, first, "ann@good.example")
    time.sleep(1.3)
    send(smtp, first, "ann@good.example")
    # good.example authenticated (SPF and DKIM) and passed: its other senders, to other
    # recipients, are not delayed; an unauthenticated sender claiming it still is
    send(smtp, signed(private, message("bob@good.example", "bob", to="sales@example.com")),
         "bob@good.example", rcpts=["sales@example.com"])
    assert [m["Subject"] for m in fetch(imap, user="sales@example.com")] == ["bob"]
    with pytest.raises(smtplib.SMTPDataError):
        send(smtp, message("eve@elsewhere.example", "eve"), "eve@elsewhere.example")


def test_the_configuration_is_validated_and_admin_only(mx):
    w, _, _, _ = mx
    for body in [{}, {"enabled": True, "engine": "spamassassin"}, {"enabled": True, "junk_score": 30},
                 {"enabled": True, "engine": "rspamd", "url": "https://127.0.0.1:11333"},
                 {"enabled": True, "greylisting": {"enabled": True, "delay": 1e30}},
                 {"enabled": True, "greylisting": {"enabled": True, "window": 5}},
                 {"enabled": True, "allowlist": ["not an address"]},
                 {"enabled": True, "scores": {"x y": 1}},
                 {"enabled": True, "rules": [{"name": "SPF_FAIL", "header": "Subject", "contains": "a", "score": 1}]},
                 {"enabled": True, "rules": [{"name": "A", "header": "Subject", "contains": "x" * 201, "score": 1}]},
                 {"enabled": True, "reject_score": float("inf")},
                 {"enabled": True, "bogus": 1}]:
        r = w.request("PUT", "/api/v1/email/spam", body=body)
        assert r.status in (400, 422), (body, r.status, r.json)
        assert "error" in r.json, r.json
    # still the defaults
    data = w.request("GET", "/api/v1/email/spam").json["data"]
    assert data["enabled"] is False and data["engine"] == "builtin" and data["junk_score"] == 5
    token = w.request("POST", "/api/v1/tokens",
                      body={"name": "u", "role": "user", "domains": ["example.com"]}).json["data"]["token"]
    assert_envelope(w.request("GET", "/api/v1/email/spam", token=token), 403, "FORBIDDEN")
    assert_envelope(w.request("PUT", "/api/v1/email/spam", token=token, body={"enabled": False}), 403, "FORBIDDEN")
