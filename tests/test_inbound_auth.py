"""Sender checks at the MX against the real server: SPF, DKIM (signed by dkimpy), DMARC and
iprev answered by a DNS server on loopback; one Authentication-Results header (RFC 8601) for the
server's name, forged ones removed; DMARC p=reject refused with 550 5.7.1, p=quarantine filed
into Junk."""

import email
import imaplib
import smtplib
import subprocess

import dkim
import pytest

from dnsserver import DnsServer
from mailutil import account, mail_config, ports

PASSWORD = "password123"
HOST = "mx.test.example"


def rsa_key(tmp_path):
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "der"],
                         check=True, capture_output=True).stdout
    import base64
    return key.read_bytes(), base64.b64encode(pub).decode()


@pytest.fixture
def mx(make_wispd, tmp_path):
    dns = DnsServer()
    private, public = rsa_key(tmp_path)
    # good.example: SPF allows loopback, signs with DKIM, p=reject
    dns.txt["good.example"] = ["v=spf1 ip4:127.0.0.1 -all"]
    dns.txt["sel._domainkey.good.example"] = [f"v=DKIM1; k=rsa; p={public}"]
    dns.txt["_dmarc.good.example"] = ["v=DMARC1; p=reject"]
    # quarantine.example: SPF excludes loopback, p=quarantine
    dns.txt["quarantine.example"] = ["v=spf1 ip4:192.0.2.1 -all"]
    dns.txt["_dmarc.quarantine.example"] = ["v=DMARC1; p=quarantine"]
    # sampled.example: p=reject for none of its failing mail (pct=0): the next-lower policy
    dns.txt["sampled.example"] = ["v=spf1 ip4:192.0.2.1 -all"]
    dns.txt["_dmarc.sampled.example"] = ["v=DMARC1; p=reject; pct=0"]
    config = mail_config(verify_senders=True).replace(
        "[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    smtp, imap, _ = ports(w)
    yield w, smtp, imap, dns, private
    dns.stop() if hasattr(dns, "stop") else None


def message(frm, subject, extra=b""):
    return (f"From: Sender <{frm}>\r\nTo: info@example.com\r\nSubject: {subject}\r\n"
            f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@x>\r\n").encode() + \
        extra + b"\r\nHello there.\r\n"


def signed(private, raw):
    sig = dkim.sign(raw, b"sel", b"good.example", private,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + raw


def send(smtp, raw, sender):
    with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as c:
        c.ehlo("client.good.example")
        return c.sendmail(sender, ["info@example.com"], raw)


def fetch(imap, mailbox="INBOX"):
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login("info@example.com", PASSWORD)
    assert m.select(mailbox, readonly=True)[0] == "OK"
    _, ids = m.search(None, "ALL")
    out = []
    for i in ids[0].split():
        _, data = m.fetch(i, "(BODY.PEEK[])")
        out.append(email.message_from_bytes(data[0][1]))
    m.logout()
    return out


def test_signed_mail_from_a_permitted_address_passes_everything(mx):
    w, smtp, imap, dns, private = mx
    send(smtp, signed(private, message("a@good.example", "pass")), "a@good.example")
    [m] = fetch(imap)
    results = m.get_all("Authentication-Results")
    assert len(results) == 1, results
    r = " ".join(results[0].split())
    assert r.startswith(HOST + ";"), r
    for want in ("dkim=pass", "header.i=@good.example", "spf=pass", "smtp.mailfrom=a@good.example",
                 "dmarc=pass"):
        assert want in r, r
    # the header sits above the Received: wispd added
    raw = m.as_string()
    assert raw.index("Authentication-Results:") < raw.index("Received:")


def test_altered_mail_fails_dkim_and_dmarc_reject_refuses_it(mx):
    w, smtp, imap, dns, private = mx
    raw = signed(private, message("a@good.example", "altered")).replace(b"Hello there.", b"Hello thera.")
    # SPF still passes from loopback: DMARC passes through SPF alignment, the DKIM failure shows
    send(smtp, raw, "a@good.example")
    [m] = fetch(imap)
    r = " ".join(m["Authentication-Results"].split())
    # mail-auth reports a body hash mismatch as `neutral (body hash did not verify)`
    assert ("dkim=fail" in r or "dkim=neutral (body hash did not verify)" in r) and "dmarc=pass" in r, r
    # from a bounce address of another domain, nothing aligns: p=reject is enforced
    dns.txt["other.example"] = ["v=spf1 ip4:127.0.0.1 -all"]
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, raw, "bounce@other.example")
    assert e.value.smtp_code == 550 and b"5.7.1" in e.value.smtp_error, e.value
    assert b"good.example" in e.value.smtp_error
    assert len(fetch(imap)) == 1


def test_forged_results_for_this_server_are_removed(mx):
    w, smtp, imap, dns, private = mx
    forged = message("a@good.example", "forged",
                     extra=f"Authentication-Results: {HOST}; dkim=pass header.d=paypal.example\r\n"
                           "Authentication-Results: upstream.example; spf=pass\r\n".encode())
    send(smtp, signed(private, forged), "a@good.example")
    [m] = fetch(imap)
    results = [" ".join(r.split()) for r in m.get_all("Authentication-Results")]
    ours = [r for r in results if r.startswith(HOST)]
    assert len(ours) == 1 and "paypal" not in ours[0], results
    assert any(r.startswith("upstream.example") for r in results), results


def test_dmarc_quarantine_files_into_junk(mx):
    w, smtp, imap, dns, private = mx
    send(smtp, message("x@quarantine.example", "suspicious"), "x@quarantine.example")
    assert fetch(imap) == []
    [m] = fetch(imap, "Junk")
    r = " ".join(m["Authentication-Results"].split())
    assert "spf=fail" in r and "dmarc=fail" in r, r


def test_dmarc_pct_below_100_applies_the_next_lower_policy_to_the_rest(mx):
    w, smtp, imap, dns, private = mx
    # p=reject with pct=0: never refused, quarantined (Junk) instead
    assert send(smtp, message("x@sampled.example", "sampled"), "x@sampled.example") == {}
    assert fetch(imap) == []
    [m] = fetch(imap, "Junk")
    assert "dmarc=fail" in " ".join(m["Authentication-Results"].split())
    # p=quarantine with pct=0, found for a subdomain at its parent: delivered to the INBOX
    # (another domain: the resolver caches what it has seen)
    dns.txt["_dmarc.sampled2.example"] = ["v=DMARC1; p=quarantine; pct=0"]
    dns.txt["sub.sampled2.example"] = ["v=spf1 ip4:192.0.2.1 -all"]
    assert send(smtp, message("y@sub.sampled2.example", "sampled 2"), "y@sub.sampled2.example") == {}
    assert [x["Subject"] for x in fetch(imap)] == ["sampled 2"]

