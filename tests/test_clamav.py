"""Virus scanning against a real, private clamd (`/email/clamav`): the EICAR test string as a
base64 attachment is refused with 554 5.7.1 naming the signature on the MX and on submission,
a clean message passes with `X-Virus-Status: Clean` and a Sieve `virustest` sees it; in
quarantine mode the virus is held (durably: kill -9 keeps it), listed, read, released into the
INBOX or deleted; clamd stopped gives 451 4.3.0 (tempfail) or an accepted, marked message
(accept); oversize messages follow their policy, clamd's own size limit included."""

import base64
import email
import imaplib
import signal
import smtplib
import ssl

import pytest

from clamd import EICAR, SIGNATURE, Clamd
from conftest import assert_envelope
from mailutil import account, installed, ports, submission_ports

PASSWORD = "password123"


def infected(subject="invoice", frm="mallory@remote.test", to="info@example.com"):
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            "Please see the attachment.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"invoice.com\"\r\n\r\n"
            + base64.b64encode(EICAR).decode() + "\r\n--b--\r\n").encode()


def clean(subject="hello", frm="carol@remote.test", to="info@example.com", size=0):
    text = f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nJust text.\r\n"
    if size:
        text += ("x" * 998 + "\r\n") * (size // 1000)
    return text.encode()


def send(smtp, raw, sender="carol@remote.test", rcpts=("info@example.com",)):
    with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as c:
        return c.sendmail(sender, list(rcpts), raw)


def submit(w, raw, user="bob@example.com", rcpts=("info@example.com",)):
    _, port = submission_ports(w)
    ctx = ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))
    with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30) as c:
        c.login(user, PASSWORD)
        return c.sendmail(user, list(rcpts), raw)


def inbox(w, user="info@example.com", mailbox="INBOX"):
    _, imap, _ = ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    m.login(user, PASSWORD)
    out = []
    if m.select(f'"{mailbox}"', readonly=True)[0] == "OK":
        _, ids = m.search(None, "ALL")
        for i in ids[0].split():
            _, data = m.fetch(i, "(BODY.PEEK[])")
            out.append(email.message_from_bytes(data[0][1]))
    m.logout()
    return out


def configure(w, **body):
    r = w.request("PUT", "/api/v1/email/clamav", body={"enabled": True, **body})
    assert r.status == 200, r.json
    return r.json["data"]


@pytest.fixture
def clamd(tmp_path):
    c = Clamd(tmp_path / "clamd", stream_max="1M")
    yield c
    c.close()


@pytest.fixture
def mx(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    account(w, "bob")
    return w, smtp


def test_eicar_is_refused_naming_it_clean_mail_passes_and_sieve_sees_the_scan(mx, clamd):
    w, smtp = mx
    off = w.request("GET", "/api/v1/email/clamav").json["data"]
    assert off["enabled"] is False and off["socket"] == "/run/clamav/clamd.ctl" and off["running"] is False
    # scanning off: nothing is scanned, nothing marked
    send(smtp, clean("before"))
    assert "X-Virus-Status" not in inbox(w)[0]
    data = configure(w, socket=clamd.socket)
    assert data["installed"] is True and data["running"] is True
    assert data["version"].startswith("ClamAV ")
    status = w.request("GET", "/api/v1/email/status").json
    assert status["clamav_installed"] is True and status["clamav_running"] is True
    r = w.request("PUT", "/api/v1/email/filters/example.com/info", body={
        "name": "scan", "active": True,
        "script": 'require ["virustest", "fileinto", "mailbox", "relational", "comparator-i;ascii-numeric"];\r\n'
                  'if virustest :value "eq" :comparator "i;ascii-numeric" "1" { fileinto :create "Scanned"; }\r\n'})
    assert r.status in (200, 201), r.json

    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, infected())
    assert e.value.smtp_code == 554
    assert e.value.smtp_error == f"5.7.1 Virus found: {SIGNATURE}".encode()
    # an authenticated account is scanned too
    with pytest.raises(smtplib.SMTPDataError) as e:
        submit(w, infected(frm="bob@example.com"))
    assert e.value.smtp_code == 554 and SIGNATURE.encode() in e.value.smtp_error
    # the session goes on after a refusal
    with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as c:
        with pytest.raises(smtplib.SMTPDataError):
            c.sendmail("carol@remote.test", ["info@example.com"], infected("again"))
        assert c.sendmail("carol@remote.test", ["info@example.com"], clean("after")) == {}
    # a status from outside doesn't survive: the server's own is the only one
    forged = b"X-Virus-Status: Infected (made up)\r\nX-Virus-Scanned: elsewhere\r\n" + clean("forged")
    assert send(smtp, forged) == {}

    got = inbox(w, mailbox="Scanned")
    assert [m["Subject"] for m in got] == ["after", "forged"]
    assert [m.get_all("X-Virus-Status") for m in got] == [["Clean"], ["Clean"]]
    assert got[1]["X-Virus-Scanned"] is None
    assert [m["Subject"] for m in inbox(w)] == ["before"]
    data = w.request("GET", "/api/v1/email/clamav").json["data"]
    assert data["infected"] == 3 and data["scanned"] == 5 and data["errors"] == 0


def test_quarantine_holds_the_virus_durably_then_releases_or_deletes_it(mx, clamd):
    w, smtp = mx
    configure(w, socket=clamd.socket, action="quarantine")
    # accepted like any message: the sender learns nothing
    assert send(smtp, infected("held 1"), rcpts=("info@example.com", "bob@example.com")) == {}
    assert send(smtp, infected("held 2")) == {}
    assert inbox(w) == []
    # acknowledged means durable: kill -9, then it is still there
    w.stop(sig=signal.SIGKILL)
    w.start()
    smtp, _, _ = ports(w)
    q = w.request("GET", "/api/v1/email/clamav/quarantine").json["data"]
    assert q["total"] == 2
    newest, oldest = q["messages"]
    assert oldest["subject"] == "held 1" and oldest["signature"] == SIGNATURE
    assert oldest["recipients"] == ["info@example.com", "bob@example.com"]
    assert oldest["from"] == "carol@remote.test" and oldest["source"] == "mx"
    one = w.request("GET", f"/api/v1/email/clamav/quarantine/{oldest['id']}").json["data"]
    assert "Subject: held 1" in one["headers"] and "Received: from" in one["headers"]
    assert w.request("GET", "/api/v1/email/clamav").json["data"]["quarantined"] == 2

    r = w.request("POST", f"/api/v1/email/clamav/quarantine/{oldest['id']}/release")
    assert r.status == 200 and r.json["data"]["status"] == "released", r.json
    for user in ("info@example.com", "bob@example.com"):
        got = inbox(w, user=user)
        assert [m["Subject"] for m in got] == ["held 1"]
        assert got[0]["X-Virus-Status"].startswith(f"Infected ({SIGNATURE}); released")
    # released once: it is gone from the quarantine, a second release is 404
    assert_envelope(w.request("POST", f"/api/v1/email/clamav/quarantine/{oldest['id']}/release"), 404, "NOT_FOUND")
    r = w.request("DELETE", f"/api/v1/email/clamav/quarantine/{newest['id']}")
    assert r.status == 200 and r.json["data"]["status"] == "deleted"
    assert w.request("GET", "/api/v1/email/clamav/quarantine").json["data"]["total"] == 0
    assert_envelope(w.request("GET", f"/api/v1/email/clamav/quarantine/{newest['id']}"), 404, "NOT_FOUND")
    for bad in ("x", "-1", "18446744073709551616"):
        assert_envelope(w.request("DELETE", f"/api/v1/email/clamav/quarantine/{bad}"), 404, "NOT_FOUND")
    assert [m["Subject"] for m in inbox(w)] == ["held 1"]


def test_clamd_down_tempfails_or_accepts_and_oversize_follows_its_policy(mx, clamd, tmp_path):
    w, smtp = mx
    configure(w, socket=clamd.socket, max_size_mb=25)
    # larger than clamd's StreamMaxLength (1M here): clamd says so, oversize policy (accept)
    assert send(smtp, clean("big", size=1_500_000)) == {}
    big = inbox(w)[0]
    assert big["X-Virus-Status"].startswith("Unscanned")
    configure(w, socket=clamd.socket, max_size_mb=1, oversize="reject")
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, clean("big 2", size=1_500_000))
    assert e.value.smtp_code == 552 and e.value.smtp_error.startswith(b"5.3.4")

    configure(w, socket=clamd.socket, on_error="tempfail")
    clamd.close()
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, clean("while down"))
    assert e.value.smtp_code == 451 and e.value.smtp_error.startswith(b"4.3.0")
    data = w.request("GET", "/api/v1/email/clamav").json["data"]
    assert data["running"] is False and data["errors"] == 1 and data["last_error"]
    configure(w, socket=clamd.socket, on_error="accept")
    assert send(smtp, clean("accepted unscanned")) == {}
    got = inbox(w)
    assert [m["Subject"] for m in got] == ["big", "accepted unscanned"]
    assert got[1]["X-Virus-Status"] == "Unscanned (scanner unavailable)"
    # clamd on TCP comes back: scanning resumes there
    tcp = Clamd(tmp_path / "clamd-tcp", tcp=True)
    try:
        configure(w, socket=tcp.socket)
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(smtp, infected("over tcp"))
        assert e.value.smtp_code == 554
    finally:
        tcp.close()


def test_settings_are_validated_and_admin_only(mx):
    w, _ = mx
    for body in ({}, {"enabled": "yes"}, {"enabled": True, "socket": "relative"},
                 {"enabled": True, "socket": "localhost:3310"}, {"enabled": True, "action": "drop"},
                 {"enabled": True, "on_error": "ignore"}, {"enabled": True, "max_size_mb": 0},
                 {"enabled": True, "max_size_mb": 2 ** 64}, {"enabled": True, "timeout_seconds": -1},
                 {"enabled": True, "quarantine_days": 0}, {"enabled": True, "bogus": 1},
                 {"enabled": True, "socket": "/x\n/y"}):
        r = w.request("PUT", "/api/v1/email/clamav", body=body)
        assert r.status == 400, (body, r.json)
        assert r.json["success"] is False and r.json["code"] == "VALIDATION_ERROR"
    assert w.request("GET", "/api/v1/email/clamav").json["data"]["enabled"] is False
    r = w.request("POST", "/api/v1/tokens", body={"name": "u", "role": "user", "domains": ["example.com"]})
    user = r.json["data"]["token"]
    for method, path in (("GET", "/api/v1/email/clamav"), ("PUT", "/api/v1/email/clamav"),
                         ("GET", "/api/v1/email/clamav/quarantine"),
                         ("POST", "/api/v1/email/clamav/quarantine/1/release")):
        assert_envelope(w.request(method, path, body={"enabled": False} if method == "PUT" else None,
                                  token=user), 403, "FORBIDDEN")
