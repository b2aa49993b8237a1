"""Mail accounts, forwarders and catch-alls through the API of the real server."""

import pytest

from conftest import assert_envelope

ACCOUNT_KEYS = {"id", "domain", "username", "email", "quota_mb", "used_bytes", "enabled", "created_at"}


def create(w, domain="example.com", username="info", password="S3cure•pass", quota_mb=1024, token="admin"):
    return w.request("POST", "/api/v1/email/accounts", token=token,
                     body={"domain": domain, "username": username, "password": password, "quota_mb": quota_mb})


def test_empty_listing_has_the_seed_shape(wispd):
    r = wispd.request("GET", "/api/v1/email/accounts")
    assert r.status == 200 and r.json == {"accounts": None, "total": 0}


@pytest.mark.parametrize("body,message", [
    (None, "Domain is required"),
    ({"username": "info", "password": "longenough"}, "Domain is required"),
    ({"domain": "example.com"}, "Username is required"),
    ({"domain": "example.com", "username": "info"}, "Password is required"),
    ({"domain": "not a domain", "username": "info", "password": "longenough"}, 'Invalid domain: "not a domain"'),
    ({"domain": "example.com", "username": "a..b", "password": "longenough"}, None),
    ({"domain": "example.com", "username": "info", "password": "short"}, "Password must be 8 to 256 characters"),
    ({"domain": "example.com", "username": "info", "password": "longenough", "quota_mb": -1}, None),
])
def test_account_validation(wispd, body, message):
    assert_envelope(wispd.request("POST", "/api/v1/email/accounts", body=body), 400, "VALIDATION_ERROR", message)


def test_account_lifecycle(wispd):
    r = create(wispd, domain="Example.COM", username="Info")
    assert r.status == 201, r
    a = r.json["data"]
    assert set(a) == ACCOUNT_KEYS
    assert (a["email"], a["quota_mb"], a["used_bytes"], a["enabled"]) == ("info@example.com", 1024, 0, True)
    assert "password" not in r.raw.decode() and "argon2" not in r.raw.decode()
    assert_envelope(create(wispd, username="INFO"), 409, "CONFLICT", "The account info@example.com already exists")
    listing = wispd.request("GET", "/api/v1/email/accounts").json
    assert listing["total"] == 1 and listing["accounts"][0]["id"] == a["id"]
    assert wispd.request("GET", f"/api/v1/email/accounts/{a['id']}").json["data"] == a
    r = wispd.request("PUT", f"/api/v1/email/accounts/{a['id']}", body={"password": "n3w-password", "quota_mb": 2048})
    assert r.status == 200 and r.json["data"]["quota_mb"] == 2048
    assert_envelope(wispd.request("PUT", f"/api/v1/email/accounts/{a['id']}", body={"password": "x"}), 400, "VALIDATION_ERROR")
    r = wispd.request("POST", f"/api/v1/email/accounts/{a['id']}/toggle")
    assert r.status == 200 and r.json["data"]["enabled"] is False
    assert wispd.request("POST", f"/api/v1/email/accounts/{a['id']}/toggle").json["data"]["enabled"] is True
    assert wispd.request("DELETE", f"/api/v1/email/accounts/{a['id']}").status == 200
    assert_envelope(wispd.request("GET", f"/api/v1/email/accounts/{a['id']}"), 404, "NOT_FOUND")
    assert_envelope(wispd.request("GET", "/api/v1/email/accounts/abc"), 404, "NOT_FOUND")


def test_user_token_reaches_only_its_domains(wispd):
    mine = create(wispd, domain="mine.org", username="a").json["data"]
    theirs = create(wispd, domain="theirs.org", username="b").json["data"]
    token = wispd.request("POST", "/api/v1/tokens", body={"name": "panel", "role": "user", "domains": ["mine.org"]}).json["data"]["token"]
    listing = wispd.request("GET", "/api/v1/email/accounts", token=token).json
    assert listing["total"] == 1 and listing["accounts"][0]["email"] == "a@mine.org"
    assert_envelope(create(wispd, domain="theirs.org", username="c", token=token), 403, "FORBIDDEN")
    assert create(wispd, domain="mine.org", username="c", token=token).status == 201
    for method, path in [("GET", f"/api/v1/email/accounts/{theirs['id']}"), ("DELETE", f"/api/v1/email/accounts/{theirs['id']}"),
                         ("POST", f"/api/v1/email/accounts/{theirs['id']}/toggle")]:
        assert_envelope(wispd.request(method, path, token=token), 404, "NOT_FOUND")
    assert wispd.request("GET", f"/api/v1/email/accounts/{mine['id']}", token=token).status == 200
    assert_envelope(wispd.request("GET", "/api/v1/email/catchall/theirs.org", token=token), 403, "FORBIDDEN")
    assert_envelope(wispd.request("POST", "/api/v1/email/forwarders", token=token,
                                  body={"source": "x@mine.org", "destination": "b@theirs.org"}), 403, "FORBIDDEN")
    # admin-only groups stay closed to user tokens
    assert_envelope(wispd.request("GET", "/api/v1/csf/status", token=token), 403, "FORBIDDEN")


def test_forwarders_and_catchall(wispd):
    create(wispd, username="a")
    create(wispd, username="b")
    r = wispd.request("POST", "/api/v1/email/forwarders", body={"source": "sales@example.com", "destination": "a@example.com"})
    assert r.status == 201 and set(r.json["data"]) == {"id", "source", "destination", "created_at"}
    fid = r.json["data"]["id"]
    assert wispd.request("POST", "/api/v1/email/forwarders", body={"source": "sales@example.com", "destination": "b@example.com"}).status == 201
    assert wispd.request("POST", "/api/v1/email/forwarders", body={"source": "a@example.com", "destination": "b@example.com"}).status == 201
    r = wispd.request("POST", "/api/v1/email/forwarders", body={"source": "b@example.com", "destination": "a@example.com"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "loop" in r.json["message"]
    r = wispd.request("POST", "/api/v1/email/forwarders", body={"source": "x@example.com", "destination": "nobody@example.com"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "neither an account nor a forwarder" in r.json["message"]
    # other domains are fine: they go out through the queue
    r = wispd.request("POST", "/api/v1/email/forwarders", body={"source": "x@example.com", "destination": "y@gmail.com"})
    assert r.status == 201 and r.json["data"]["destination"] == "y@gmail.com"
    assert wispd.request("DELETE", f"/api/v1/email/forwarders/{r.json['data']['id']}").status == 200
    assert_envelope(wispd.request("POST", "/api/v1/email/forwarders", body={}), 400, "VALIDATION_ERROR", "Source is required")
    assert len(wispd.request("GET", "/api/v1/email/forwarders").json["data"]) == 3
    assert wispd.request("DELETE", f"/api/v1/email/forwarders/{fid}").status == 200
    assert_envelope(wispd.request("DELETE", f"/api/v1/email/forwarders/{fid}"), 404, "NOT_FOUND")

    r = wispd.request("GET", "/api/v1/email/catchall/Example.com")
    assert r.json["data"] == {"domain": "example.com", "enabled": False, "destination": ""}
    r = wispd.request("PUT", "/api/v1/email/catchall/example.com", body={"enabled": True, "destination": "a@example.com"})
    assert r.status == 200 and r.json["data"] == {"domain": "example.com", "enabled": True, "destination": "a@example.com"}
    assert_envelope(wispd.request("PUT", "/api/v1/email/catchall/example.com", body={"enabled": True}), 400, "VALIDATION_ERROR")
    r = wispd.request("PUT", "/api/v1/email/catchall/example.com", body={"enabled": True, "destination": "z@elsewhere.net"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert wispd.request("GET", "/api/v1/email/catchall/example.com").json["data"]["destination"] == "a@example.com"


def test_accounts_survive_restart(make_wispd):
    w = make_wispd()
    a = create(w).json["data"]
    assert w.stop()[0] == 0
    w.start()
    assert w.request("GET", f"/api/v1/email/accounts/{a['id']}").json["data"]["email"] == "info@example.com"
