"""ARC (RFC 8617) against the real server: the MX verifies the chain a message arrives with and
records `arc=` in its Authentication-Results; mail it sends on (an external forwarder, a Sieve
redirect) leaves ARC-sealed with the forwarding domain's DKIM key, and an independent
verifier (dkimpy's arc_verify) validates the chain at the destination (an aiosmtpd sink), one
set for a first hop and a continued chain (i=2, cv=pass) after another ADMD's seal."""

import email
import re
import subprocess

import dkim
import pytest

from dnsserver import DnsServer
from mailutil import account, ports
from test_queue import Receiver, free_port, start

HOST = "mx.test.example"


def rsa_key(tmp_path, name):
    import base64
    key = tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "der"],
                         check=True, capture_output=True).stdout
    return key.read_bytes(), base64.b64encode(pub).decode()


@pytest.fixture
def arc(make_wispd, tmp_path):
    dns = DnsServer()
    private, public = rsa_key(tmp_path, "good")
    dns.txt["good.example"] = ["v=spf1 ip4:127.0.0.1 -all"]
    dns.txt["sel._domainkey.good.example"] = [f"v=DKIM1; k=rsa; p={public}"]
    dns.txt["_dmarc.good.example"] = ["v=DMARC1; p=none"]
    port = free_port()
    sink = Receiver(tmp_path / "dest", f"127.0.0.1:{port}").start()
    w = start(make_wispd, dns=dns, relay=f"127.0.0.1:{port}", verify_senders=True)
    key = w.request("POST", "/api/v1/email/dkim/example.com").json["data"]
    records = {
        b"sel._domainkey.good.example.": f"v=DKIM1; k=rsa; p={public}".encode(),
        f"{key['selector']}._domainkey.example.com.".encode(): key["dns_record"].encode(),
    }
    dns.txt[f"{key['selector']}._domainkey.example.com"] = [key["dns_record"]]

    def dnsfunc(name, timeout=5):
        return records.get(name)

    yield w, sink, private, dnsfunc
    sink.stop()
    dns.close()


def original(subject, to):
    return (f"From: Ann <ann@good.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@good.example>\r\n"
            "\r\nHello over two hops.\r\n").encode()


def signed(private, raw):
    return dkim.sign(raw, b"sel", b"good.example", private,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + raw


def send(w, raw, rcpt):
    import smtplib
    mx, _, _ = ports(w)
    with smtplib.SMTP(timeout=30, source_address=("127.0.0.1", 0)) as c:
        c.connect("127.0.0.1", mx)
        c.ehlo("mail.good.example")
        assert c.sendmail("ann@good.example", [rcpt], raw) == {}


def arc_headers(data):
    msg = email.message_from_bytes(data)
    return {name: msg.get_all(name) or [] for name in
            ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results")}


def tags(value):
    return dkim.util.parse_tag_value(re.sub(r"\s+", "", value).encode())


def test_forwarded_mail_is_sealed_and_verifies_at_the_destination(arc):
    w, sink, private, dnsfunc = arc
    r = w.request("POST", "/api/v1/email/forwarders",
                  body={"source": "sales@example.com", "destination": "boss@remote.example"})
    assert r.status == 201, r.json
    send(w, signed(private, original("forward me", "sales@example.com")), "sales@example.com")
    got = sink.wait(1)[0]
    data = got["data"].encode("latin-1")
    assert got["rcpt_tos"] == ["boss@remote.example"]
    sets = arc_headers(data)
    assert [len(v) for v in sets.values()] == [1, 1, 1], sets
    seal = tags(sets["ARC-Seal"][0])
    assert seal[b"i"] == b"1" and seal[b"cv"] == b"none" and seal[b"d"] == b"example.com", seal
    aar = sets["ARC-Authentication-Results"][0]
    assert aar.startswith(f"i=1; {HOST};"), aar
    for result in ("dkim=pass", "spf=pass", "dmarc=pass", "arc=none"):
        assert result in aar, aar
    cv, results, comment = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, (cv, results, comment)
    # the original signature still verifies too (the body and its headers are untouched)
    assert dkim.verify(data, dnsfunc=dnsfunc)
    # a message altered after the seal no longer verifies
    cv, _, _ = dkim.arc_verify(data.replace(b"Hello over two hops.", b"Hello over six hops."), dnsfunc=dnsfunc)
    assert cv == dkim.CV_Fail


def test_a_chain_from_another_admd_is_verified_recorded_and_continued(arc):
    w, sink, private, dnsfunc = arc
    w.request("POST", "/api/v1/email/forwarders",
              body={"source": "sales@example.com", "destination": "boss@remote.example"})
    account(w, "carol")
    # good.example's own server sealed it first (i=1), after its own checks
    raw = signed(private, original("two hops", "sales@example.com"))
    raw = b"Authentication-Results: relay.good.example; dkim=pass header.d=good.example\r\n" + raw
    first = dkim.arc_sign(raw, b"sel", b"good.example", private, b"relay.good.example",
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    raw = b"".join(first) + raw
    send(w, raw, "sales@example.com")
    data = sink.wait(1)[0]["data"].encode("latin-1")
    sets = arc_headers(data)
    assert [len(v) for v in sets.values()] == [2, 2, 2], sets
    ours = [tags(s) for s in sets["ARC-Seal"] if tags(s)[b"d"] == b"example.com"]
    assert len(ours) == 1 and ours[0][b"i"] == b"2" and ours[0][b"cv"] == b"pass", ours
    aar = [a for a in sets["ARC-Authentication-Results"] if a.startswith("i=2")][0]
    assert "arc=pass" in aar, aar
    cv, results, comment = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, (cv, results, comment)

    # what the MX recorded for a local recipient of the same chain: arc=pass
    send(w, raw, "carol@example.com")
    import imaplib
    _, imap, _ = ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login("carol@example.com", "password123")
    m.select("INBOX", readonly=True)
    _, d = m.fetch(b"1", "(BODY.PEEK[HEADER.FIELDS (AUTHENTICATION-RESULTS)])")
    m.logout()
    header = d[0][1].decode()
    assert f"Authentication-Results: {HOST};" in header and "arc=pass" in header, header


def test_a_broken_chain_is_sealed_as_failed(arc):
    w, sink, private, dnsfunc = arc
    w.request("POST", "/api/v1/email/forwarders",
              body={"source": "sales@example.com", "destination": "boss@remote.example"})
    raw = signed(private, original("broken", "sales@example.com"))
    raw = b"Authentication-Results: relay.good.example; dkim=pass header.d=good.example\r\n" + raw
    first = dkim.arc_sign(raw, b"sel", b"good.example", private, b"relay.good.example",
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    tampered = b"".join(first) + raw.replace(b"Subject: broken", b"Subject: broken!")
    send(w, tampered, "sales@example.com")
    data = sink.wait(1)[0]["data"].encode("latin-1")
    sets = arc_headers(data)
    # RFC 8617 5.1.2: a chain found broken gets one more set, with cv=fail, which ends it
    assert [len(v) for v in sets.values()] == [2, 2, 2], sets
    ours = [tags(s) for s in sets["ARC-Seal"] if tags(s)[b"d"] == b"example.com"]
    assert len(ours) == 1 and ours[0][b"i"] == b"2" and ours[0][b"cv"] == b"fail", ours
    aar = [a for a in sets["ARC-Authentication-Results"] if a.startswith("i=2")][0]
    assert "arc=fail" in aar, aar
    # dkimpy reads our cv=fail as the chain's end
    cv, results, comment = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv != dkim.CV_Pass and "ARC-Seal[2] reported failure" in comment, (cv, results, comment)


def test_sieve_redirect_is_sealed(arc):
    w, sink, private, dnsfunc = arc
    r = w.request("PUT", "/api/v1/email/filters/example.com/info",
                  body={"script": 'redirect "dave@elsewhere.test";', "name": "fwd", "active": True})
    assert r.status in (200, 201), r.json
    send(w, signed(private, original("redirect me", "info@example.com")), "info@example.com")
    got = sink.wait(1)[0]
    assert got["rcpt_tos"] == ["dave@elsewhere.test"]
    data = got["data"].encode("latin-1")
    assert not data.startswith(b"Return-Path:")
    sets = arc_headers(data)
    assert [len(v) for v in sets.values()] == [1, 1, 1], sets
    cv, results, comment = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, (cv, results, comment)
