"""Rate limits against the real server (`/email/ratelimit`): a group of 3 messages an hour
refuses its account's 4th with 451 4.7.0 saying when it resets, other accounts are unaffected,
local-only mail doesn't count unless the group says so, the window resets (a 4-second "hour"
from `[smtp] rate_window_seconds`), and the counters survive kill -9 and a restart. The MX's
per-network caps answer 421 4.7.0 for one /24 and not for another."""

import signal
import smtplib
import ssl
import time

import pytest

from conftest import assert_envelope
from mailutil import account, installed, ports, submission_ports

PASSWORD = "password123"
WINDOW = 4


@pytest.fixture
def mx(make_wispd):
    w, smtp = installed(make_wispd, rate_window_seconds=WINDOW)
    for u in ("alice", "bob", "carol"):
        account(w, u)
    return w, smtp


def submit(w, user, rcpts, subject="hi"):
    _, port = submission_ports(w)
    ctx = ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))
    raw = f"From: {user}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30) as c:
        c.login(user, PASSWORD)
        return c.sendmail(user, list(rcpts), raw)


def group(w, name):
    groups = w.request("GET", "/api/v1/email/ratelimit").json["data"]["groups"]
    return next(g for g in groups if g["name"] == name)


def test_a_group_refuses_past_its_limit_resets_and_survives_kill_9(mx):
    w, _ = mx
    data = w.request("GET", "/api/v1/email/ratelimit").json["data"]
    assert [g["name"] for g in data["groups"]] == ["default"]
    assert data["groups"][0]["messages_per_hour"] == 0 and data["hour_seconds"] == WINDOW
    r = w.request("POST", "/api/v1/email/ratelimit", body={"name": "Small", "messages_per_hour": 3})
    assert r.status == 201 and r.json["data"]["name"] == "small", r.json
    r = w.request("PUT", "/api/v1/email/ratelimit/small/members", body={"members": ["Alice@Example.com"]})
    assert r.status == 200 and r.json["data"]["members"] == ["alice@example.com"], r.json

    remote = ["someone@remote.test"]
    for i in range(3):
        assert submit(w, "alice@example.com", remote, f"m{i}") == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        submit(w, "alice@example.com", remote, "m3")
    code, text = e.value.recipients["someone@remote.test"]
    assert code == 451 and text.startswith(b"4.7.0 Rate limit reached: 3 messages per hour (group small)")
    assert b"resets in" in text
    # another account (default group, no limits) is not affected
    for i in range(5):
        assert submit(w, "bob@example.com", remote, f"b{i}") == {}
    # mail only to accounts here doesn't count in a group that doesn't count them
    assert submit(w, "alice@example.com", ["carol@example.com"], "local") == {}
    g = group(w, "small")
    assert g["messages_this_hour"] == 3 and g["limited_accounts"] == 1

    # kill -9 and restart: what was counted is still counted
    w.stop(sig=signal.SIGKILL)
    w.start()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        submit(w, "alice@example.com", remote, "after restart")
    assert group(w, "small")["messages_this_hour"] == 3

    # the window ends WINDOW seconds after its first message
    time.sleep(WINDOW + 0.5)
    assert submit(w, "alice@example.com", remote, "next window") == {}
    assert group(w, "small")["messages_this_hour"] == 1


def test_recipients_per_hour_local_counting_and_domain_members(mx):
    w, _ = mx
    r = w.request("POST", "/api/v1/email/ratelimit", body={
        "name": "team", "recipients_per_hour": 3, "count_local": True})
    assert r.status == 201, r.json
    r = w.request("PUT", "/api/v1/email/ratelimit/team/members", body={"members": ["example.com"]})
    assert r.status == 200, r.json
    # a domain member covers its accounts; local recipients count in this group
    assert submit(w, "carol@example.com", ["alice@example.com", "bob@example.com"]) == {}
    with smtplib.SMTP_SSL("127.0.0.1", submission_ports(w)[1], timeout=30,
                          context=ssl.create_default_context(cafile=str(w.data_dir / "tls" / "cert.pem"))) as c:
        c.login("carol@example.com", PASSWORD)
        c.mail("carol@example.com")
        assert c.rcpt("x@remote.test")[0] == 250
        code, text = c.rcpt("y@remote.test")
        assert code == 451 and b"3 recipients per hour" in text
        c.rset()
    # an account's own assignment wins over its domain's
    r = w.request("PUT", "/api/v1/email/ratelimit/default/members", body={"members": ["carol@example.com"]})
    assert r.status == 200, r.json
    assert submit(w, "carol@example.com", ["x@remote.test", "y@remote.test"]) == {}
    # deleting the group sends its members back to default (no limits)
    assert w.request("DELETE", "/api/v1/email/ratelimit/team").status == 200
    assert submit(w, "alice@example.com", ["a@remote.test", "b@remote.test", "c@remote.test", "d@remote.test"]) == {}


def test_the_mx_caps_messages_and_connections_per_network(mx):
    w, smtp = mx
    r = w.request("PUT", "/api/v1/email/ratelimit/inbound", body={"connections_per_minute": 0, "messages_per_minute": 3})
    assert r.status == 200 and r.json["data"] == {"connections_per_minute": 0, "messages_per_minute": 3}
    msg = b"From: x@remote.test\r\nTo: alice@example.com\r\nSubject: in\r\n\r\nhi\r\n"
    with smtplib.SMTP(timeout=15, source_address=("127.0.0.7", 0)) as c:
        c.connect("127.0.0.1", smtp)
        for _ in range(3):
            assert c.sendmail("x@remote.test", ["alice@example.com"], msg) == {}
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPServerDisconnected)) as e:
            c.sendmail("x@remote.test", ["alice@example.com"], msg)
    if isinstance(e.value, smtplib.SMTPSenderRefused):
        assert e.value.smtp_code == 421 and e.value.smtp_error.startswith(b"4.7.0 Too many messages")
    # the same /24 from another address is the same network; another /24 is not
    with smtplib.SMTP(timeout=15, source_address=("127.0.0.8", 0)) as c:
        c.connect("127.0.0.1", smtp)
        code, _ = c.ehlo("x")
        assert c.mail("x@remote.test")[0] == 421
    with smtplib.SMTP(timeout=15, source_address=("127.0.1.8", 0)) as c:
        c.connect("127.0.0.1", smtp)
        assert c.sendmail("x@remote.test", ["alice@example.com"], msg) == {}

    r = w.request("PUT", "/api/v1/email/ratelimit/inbound", body={"connections_per_minute": 2, "messages_per_minute": 0})
    assert r.status == 200
    for _ in range(2):
        with smtplib.SMTP(timeout=15, source_address=("127.0.2.9", 0)) as c:
            c.connect("127.0.0.1", smtp)
            assert c.noop()[0] == 250
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", smtp, timeout=15, source_address=("127.0.2.10", 0))
    assert e.value.smtp_code == 421
    # submission is not the MX: no network cap there
    assert submit(w, "alice@example.com", ["bob@example.com"]) == {}


def test_groups_are_validated_and_admin_only(mx):
    w, _ = mx
    assert w.request("POST", "/api/v1/email/ratelimit", body={"name": "g1", "messages_per_hour": 1}).status == 201
    assert_envelope(w.request("POST", "/api/v1/email/ratelimit", body={"name": "g1"}), 409, "CONFLICT")
    bad_posts = [{}, {"name": ""}, {"name": "has space"}, {"name": "x" * 65}, {"name": "inbound"},
                 {"name": "g2", "messages_per_hour": -1}, {"name": "g2", "messages_per_hour": 2 ** 64},
                 {"name": "g2", "messages_per_day": 10_000_001}, {"name": "g2", "bogus": 1},
                 {"name": "g2", "count_local": "yes"}]
    for body in bad_posts:
        r = w.request("POST", "/api/v1/email/ratelimit", body=body)
        assert r.status == 400 and r.json["code"] == "VALIDATION_ERROR", (body, r.json)
    limits = {"messages_per_hour": 1, "recipients_per_hour": 0, "messages_per_day": 0}
    assert_envelope(w.request("PUT", "/api/v1/email/ratelimit/nope", body=limits), 404, "NOT_FOUND")
    for missing in ("messages_per_hour", "recipients_per_hour", "messages_per_day"):
        body = {k: v for k, v in limits.items() if k != missing}
        assert_envelope(w.request("PUT", "/api/v1/email/ratelimit/g1", body=body), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("PUT", "/api/v1/email/ratelimit/g1"), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("PUT", "/api/v1/email/ratelimit/g1", body={**limits, "name": "other"}), 400,
                    "VALIDATION_ERROR")
    assert w.request("PUT", "/api/v1/email/ratelimit/default",
                     body={"messages_per_hour": 0, "recipients_per_hour": 0, "messages_per_day": 100}).status == 200
    assert_envelope(w.request("DELETE", "/api/v1/email/ratelimit/default"), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("DELETE", "/api/v1/email/ratelimit/nope"), 404, "NOT_FOUND")
    for members in (["nobody@example.com"], ["unknown.test"], ["a b"], ["@example.com"], "alice@example.com"):
        r = w.request("PUT", "/api/v1/email/ratelimit/g1/members", body={"members": members})
        assert r.status == 400, (members, r.json)
    assert_envelope(w.request("PUT", "/api/v1/email/ratelimit/nope/members", body={"members": []}), 404, "NOT_FOUND")
    for body in ({"messages_per_minute": 1}, {}, {"connections_per_minute": 0, "messages_per_minute": 2 ** 64}):
        assert_envelope(w.request("PUT", "/api/v1/email/ratelimit/inbound", body=body), 400, "VALIDATION_ERROR")
    r = w.request("POST", "/api/v1/tokens", body={"name": "u", "role": "user", "domains": ["example.com"]})
    user = r.json["data"]["token"]
    for method, path in (("GET", "/api/v1/email/ratelimit"), ("POST", "/api/v1/email/ratelimit"),
                         ("PUT", "/api/v1/email/ratelimit/g1"), ("DELETE", "/api/v1/email/ratelimit/g1"),
                         ("PUT", "/api/v1/email/ratelimit/g1/members"), ("PUT", "/api/v1/email/ratelimit/inbound")):
        assert_envelope(w.request(method, path, body={} if method in ("POST", "PUT") else None, token=user),
                        403, "FORBIDDEN")
    # the store kept the valid changes
    g = group(w, "default")
    assert g["messages_per_day"] == 100
