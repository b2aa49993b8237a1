"""DKIM key API against the real server; the record checked through a DNS server on loopback."""

import base64

import pytest

from conftest import assert_envelope
from dnsserver import DnsServer

DKIM_KEYS = {"domain", "selector", "algorithm", "public_key", "dns_name", "dns_record", "created_at"}


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.close()


@pytest.fixture
def w(make_wispd, dns):
    from mailutil import MAIL_CONFIG
    config = MAIL_CONFIG.format(smtp="127.0.0.1:0", smtp_extra="", imap_listen='["127.0.0.1:0"]', imap_extra="",
                              pop3_listen='["127.0.0.1:0"]')
    config = config.replace("[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    return make_wispd(config=config)


def test_keys_are_generated_listed_without_private_halves_and_deleted(w):
    r = w.request("POST", "/api/v1/email/dkim/Example.COM")
    assert r.status == 201, r
    k = r.json["data"]
    assert set(k) == DKIM_KEYS
    assert (k["domain"], k["selector"], k["algorithm"]) == ("example.com", "wispd", "rsa-sha256")
    assert k["dns_name"] == "wispd._domainkey.example.com"
    assert k["dns_record"] == f"v=DKIM1; k=rsa; p={k['public_key']}"
    assert len(base64.b64decode(k["public_key"])) == 294, "a 2048-bit RSA SubjectPublicKeyInfo"
    r = w.request("POST", "/api/v1/email/dkim/example.org", body={"selector": "s2026", "algorithm": "ed25519-sha256"})
    assert r.status == 201, r
    e = r.json["data"]
    assert e["dns_record"].startswith("v=DKIM1; k=ed25519; p=") and len(base64.b64decode(e["public_key"])) == 32
    listed = w.request("GET", "/api/v1/email/dkim").json
    assert listed["success"] is True and [x["domain"] for x in listed["data"]] == ["example.com", "example.org"]
    assert all(set(x) == DKIM_KEYS for x in listed["data"])
    assert "PRIVATE" not in str(listed) and "private" not in str(listed)
    # a new key for a domain replaces the old one (rotation)
    again = w.request("POST", "/api/v1/email/dkim/example.com", body={"selector": "next"}).json["data"]
    assert again["public_key"] != k["public_key"] and again["selector"] == "next"
    assert w.request("DELETE", "/api/v1/email/dkim/example.org").status == 200
    assert_envelope(w.request("DELETE", "/api/v1/email/dkim/example.org"), 404, "NOT_FOUND")
    assert [x["domain"] for x in w.request("GET", "/api/v1/email/dkim").json["data"]] == ["example.com"]


@pytest.mark.parametrize("body,message", [
    ({"algorithm": "rsa-sha1"}, 'Invalid algorithm: "rsa-sha1" (rsa-sha256 or ed25519-sha256)'),
    ({"selector": "bad_selector"}, None),
    ({"selector": 5}, None),
])
def test_bad_requests_are_validation_errors(w, body, message):
    assert_envelope(w.request("POST", "/api/v1/email/dkim/example.com", body=body), 400, "VALIDATION_ERROR", message)


def test_user_tokens_reach_only_their_domains(w):
    t = w.request("POST", "/api/v1/tokens", body={"name": "u", "role": "user", "domains": ["example.com"]}).json["data"]["token"]
    assert w.request("POST", "/api/v1/email/dkim/example.com", token=t, body={"algorithm": "ed25519-sha256"}).status == 201
    assert_envelope(w.request("POST", "/api/v1/email/dkim/other.org", token=t), 403, "FORBIDDEN")
    w.request("POST", "/api/v1/email/dkim/other.org", body={"algorithm": "ed25519-sha256"})
    assert [x["domain"] for x in w.request("GET", "/api/v1/email/dkim", token=t).json["data"]] == ["example.com"]
    assert_envelope(w.request("GET", "/api/v1/email/dkim/other.org/verify", token=t), 403, "FORBIDDEN")


def test_verify_looks_the_record_up_in_dns(w, dns):
    k = w.request("POST", "/api/v1/email/dkim/example.com", body={"algorithm": "ed25519-sha256"}).json["data"]
    v = w.request("GET", "/api/v1/email/dkim/example.com/verify").json["data"]
    assert (v["found"], v["matches"], v["dns_name"]) == (False, False, "wispd._domainkey.example.com"), v
    assert v["expected"] == k["dns_record"] and v["error"]
    dns.txt["wispd._domainkey.example.com"] = ["v=DKIM1; k=ed25519; p=AAAAstale"]
    v = w.request("GET", "/api/v1/email/dkim/example.com/verify").json["data"]
    assert (v["found"], v["matches"], v["record"]) == (True, False, "v=DKIM1; k=ed25519; p=AAAAstale"), v
    dns.txt["wispd._domainkey.example.com"] = [k["dns_record"]]
    v = w.request("GET", "/api/v1/email/dkim/example.com/verify").json["data"]
    assert (v["found"], v["matches"]) == (True, True), v
    # a 2048-bit RSA record is longer than one TXT string: split, and still matched
    r = w.request("POST", "/api/v1/email/dkim/example.com", body={"selector": "big"}).json["data"]
    dns.txt["big._domainkey.example.com"] = [r["dns_record"]]
    v = w.request("GET", "/api/v1/email/dkim/example.com/verify").json["data"]
    assert (v["found"], v["matches"]) == (True, True), v
    assert_envelope(w.request("GET", "/api/v1/email/dkim/nokey.example/verify"), 404, "NOT_FOUND")
