"""Submission (587 STARTTLS + AUTH, 465 implicit TLS) against the real server with smtplib."""

import smtplib
import ssl
import time

import pytest

from mailutil import account, installed, stored, submission_ports

PASSWORD = "password123"


@pytest.fixture
def sub(make_wispd):
    w, mx = installed(make_wispd)
    account(w, "info")
    account(w, "bob")
    port, ports_tls = submission_ports(w)
    ctx = ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))
    return w, port, ports_tls, ctx


def test_587_needs_starttls_then_auth_then_an_owned_sender(sub):
    w, port, _, ctx = sub
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as c:
        code, text = c.ehlo("laptop.example")
        assert b"STARTTLS" in text and b"AUTH" not in text
        assert c.docmd("AUTH PLAIN AGluZm9AZXhhbXBsZS5jb20AcGFzc3dvcmQxMjM=") == (
            530, b"5.7.0 Must issue a STARTTLS command first")
        assert c.mail("info@example.com") == (530, b"5.7.0 Authentication required")
        c.starttls(context=ctx)
        code, text = c.ehlo("laptop.example")
        assert b"AUTH PLAIN LOGIN" in text and b"STARTTLS" not in text
        assert c.mail("info@example.com") == (530, b"5.7.0 Authentication required")
        t0 = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login("info@example.com", "wrong password")
        assert e.value.smtp_code == 535 and e.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        assert time.monotonic() - t0 >= 1.0, "a failed AUTH is delayed"
        assert c.login("info@example.com", PASSWORD) == (235, b"2.7.0 Authentication successful")
        assert c.mail("bob@example.com") == (
            553, b"5.7.1 <bob@example.com>: Sender address rejected: not owned by info@example.com")
        assert c.mail("<>")[0] == 553
        assert c.mail("info+news@example.com") == (250, b"2.1.0 Ok")
        assert c.rcpt("someone@elsewhere.example") == (250, b"2.1.5 Ok")
        assert c.rcpt("bob@example.com") == (250, b"2.1.5 Ok")
        spoofed = b"From: bob@example.com\r\nTo: bob@example.com\r\nSubject: spoof\r\n\r\nx\r\n"
        assert c.data(spoofed) == (553, b"5.7.1 From: <bob@example.com> rejected: not owned by info@example.com")
        good = b"From: Info <info@example.com>\r\nTo: bob@example.com\r\nSubject: hello bob\r\n\r\nhi\r\n"
        assert c.sendmail("info@example.com", ["bob@example.com"], good) == {}
    assert w.stop()[0] == 0
    msgs = stored(w, "bob@example.com", raw=True)
    assert [m["subject"] for m in msgs] == ["hello bob"]
    assert "with ESMTPSA id" in msgs[0]["raw"] and "(using TLSv1.3 with cipher" in msgs[0]["raw"]


def test_465_implicit_tls_with_auth_login_and_disabled_accounts(sub):
    w, _, port_tls, ctx = sub
    with smtplib.SMTP_SSL("127.0.0.1", port_tls, context=ctx, timeout=15) as c:
        code, text = c.ehlo("laptop.example")
        assert b"AUTH PLAIN LOGIN" in text
        c.user, c.password = "info@example.com", PASSWORD
        assert c.auth("LOGIN", c.auth_login, initial_response_ok=False) == (235, b"2.7.0 Authentication successful")
        own = b"From: info@example.com\r\nTo: bob@example.com\r\nSubject: over 465\r\n\r\nhi\r\n"
        assert c.sendmail("info@example.com", ["bob@example.com"], own) == {}
    bob = [a for a in w.request("GET", "/api/v1/email/accounts").json["accounts"] if a["username"] == "bob"][0]
    w.request("POST", f"/api/v1/email/accounts/{bob['id']}/toggle")
    with smtplib.SMTP_SSL("127.0.0.1", port_tls, context=ctx, timeout=15) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("bob@example.com", PASSWORD)
    assert w.stop()[0] == 0
    assert [m["subject"] for m in stored(w, "bob@example.com")] == ["over 465"]
