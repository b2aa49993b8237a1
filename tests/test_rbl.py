"""DNSBL checks at the MX against the real server (`/email/rbl`): zones answered by a DNS
server on loopback, the client's source address chosen by binding the client socket to
127.0.0.2 (all of 127.0.0.0/8 is local on Linux). A listing in a `reject` zone refuses
recipients with `554 5.7.1` naming the zone and its TXT, but postmaster is still reachable;
Spamhaus-style `127.255.255.x` error answers and DNS timeouts are not listings, and a
silent DNS server does not hold the session past the lookup's bound."""

import smtplib
import time

import pytest

from conftest import assert_envelope
from dnsserver import DnsServer
from mailutil import account, mail_config, ports, stored


@pytest.fixture
def mx(make_wispd):
    dns = DnsServer()
    dns.a["2.0.0.127.bl.test"] = ["127.0.0.2"]
    dns.txt["2.0.0.127.bl.test"] = ["Listed for testing, see https://bl.test/127.0.0.2"]
    dns.a["2.0.0.127.err.test"] = ["127.255.255.254"]  # "your resolver is refused"
    dns.a["2.0.0.127.score.test"] = ["127.0.0.10"]
    dns.silent = ("slow.test",)
    config = mail_config().replace(
        "[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    smtp, _, _ = ports(w)
    yield w, smtp, dns
    dns.close()


def configure(w, zones, allowlist=(), enabled=True):
    r = w.request("PUT", "/api/v1/email/rbl",
                  body={"enabled": enabled, "zones": zones, "allowlist": list(allowlist)})
    assert r.status == 200, r.json
    return r.json["data"]


def client(smtp, source="127.0.0.2"):
    c = smtplib.SMTP(timeout=30, source_address=(source, 0))
    c.connect("127.0.0.1", smtp)
    c.ehlo("client.example")
    c.mail("a@remote.example")
    return c


def test_a_listed_client_is_refused_at_rcpt_except_for_postmaster(mx):
    w, smtp, dns = mx
    data = configure(w, [{"zone": "bl.test", "action": "reject"},
                         {"zone": "err.test", "action": "reject"},
                         {"zone": "score.test", "action": "score", "score": 2.5}])
    assert [z["zone"] for z in data["zones"]] == ["bl.test", "err.test", "score.test"]
    c = client(smtp)
    code, msg = c.rcpt("info@example.com")
    assert code == 554 and msg.startswith(b"5.7.1"), (code, msg)
    assert b"[127.0.0.2] blocked using bl.test: Listed for testing" in msg, msg
    # postmaster stays reachable (RFC 5321 4.5.1)
    assert c.rcpt("postmaster@example.com")[0] == 250
    c.quit()
    # the same address from 127.0.0.1: not listed anywhere
    c = client(smtp, "127.0.0.1")
    assert c.rcpt("info@example.com")[0] == 250
    c.quit()
    hits = {z["zone"]: z["hits"] for z in w.request("GET", "/api/v1/email/rbl").json["data"]["zones"]}
    # the error answer (127.255.255.254) is not a listing; the score zone lists but doesn't refuse
    assert hits == {"bl.test": 1, "err.test": 0, "score.test": 1}, hits


def test_allowlist_disabled_and_a_silent_dns_server(mx):
    w, smtp, dns = mx
    configure(w, [{"zone": "bl.test", "action": "reject"}], allowlist=["127.0.0.0/30"])
    c = client(smtp)
    assert c.rcpt("info@example.com")[0] == 250
    c.quit()
    configure(w, [{"zone": "bl.test", "action": "reject"}], enabled=False)
    c = client(smtp)
    assert c.rcpt("info@example.com")[0] == 250
    c.quit()
    # a zone whose server never answers: a failure, not a listing, within the lookup's bound
    configure(w, [{"zone": "slow.test", "action": "reject"}])
    t = time.monotonic()
    c = client(smtp)
    assert c.rcpt("info@example.com")[0] == 250
    assert c.data(b"Subject: through\r\n\r\nhi\r\n")[0] == 250
    c.quit()
    assert time.monotonic() - t < 10, "the session waited past the DNSBL bound"
    assert any((m.get("subject") or "") == "through" for m in stored(w, "info@example.com"))


def test_bad_configurations_are_validation_errors(mx):
    w, smtp, dns = mx
    for body in (
        {"enabled": True, "zones": [{"zone": "nodots", "action": "reject"}]},
        {"enabled": True, "zones": [{"zone": "a.example", "action": "drop"}]},
        {"enabled": True, "zones": [{"zone": "a.example", "action": "score", "score": 1e300}]},
        {"enabled": True, "allowlist": ["10.0.0.0/99"]},
        {"enabled": True, "zones": [{"zone": f"z{i}.example", "action": "score"} for i in range(21)]},
        {"zones": []},
        {"enabled": True, "bogus": 1},
    ):
        assert_envelope(w.request("PUT", "/api/v1/email/rbl", body=body), 400, "VALIDATION_ERROR")
    # user tokens can't see or change it
    token = w.request("POST", "/api/v1/tokens",
                      body={"name": "u", "role": "user", "domains": ["example.com"]}).json["data"]["token"]
    assert_envelope(w.request("GET", "/api/v1/email/rbl", token=token), 403, "FORBIDDEN")
    assert_envelope(w.request("PUT", "/api/v1/email/rbl", token=token, body={"enabled": False}), 403, "FORBIDDEN")


def test_a_zones_txt_cannot_inject_into_the_smtp_reply(mx):
    """The listing's TXT comes from whoever runs the zone: CR, LF and control bytes in it must
    not end the reply line (a forged `250` after it) and it is bounded."""
    w, smtp, dns = mx
    dns.txt["2.0.0.127.bl.test"] = ["bad\r\n250 2.1.5 Ok\r\n\x00" + "x" * 5000]
    configure(w, [{"zone": "bl.test", "action": "reject"}])
    c = client(smtp)
    code, msg = c.rcpt("info@example.com")
    assert code == 554 and b"\r" not in msg and b"\n" not in msg and b"\x00" not in msg, msg
    assert len(msg) < 400, len(msg)
    # the session is still in step: the next command gets its own answer
    assert c.rcpt("postmaster@example.com")[0] == 250
    assert c.noop()[0] == 250
    c.quit()
