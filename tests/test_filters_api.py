"""The filter surface of the API: /email/filters, /email/autoresponders, /email/vacation, with
an admin token and with user tokens bound to one domain; an autoresponder set through the API
answers real mail."""

import email
import smtplib
import time

from conftest import assert_envelope
from mailutil import account, mail_config, ports
from test_queue import Receiver, free_port

FILTERS = "/api/v1/email/filters"
SCRIPT = 'require "fileinto";\nif header :contains "Subject" "[list]" { fileinto "Lists"; }\n'


def start(make_wispd, relay=None):
    w = make_wispd(config=mail_config(**({"relay": relay, "retry_seconds": 1} if relay else {})))
    assert w.request("POST", "/api/v1/email/install").status == 200
    return w


def test_scripts_create_replace_get_delete(make_wispd):
    w = start(make_wispd)
    a = account(w, "info")
    r = w.request("POST", f"{FILTERS}/example.com/info", body={"script": SCRIPT})
    assert r.status == 201, r
    d = r.json["data"]
    assert (d["account"], d["domain"], d["account_id"], d["active"]) == ("info", "example.com", a["id"], "main")
    assert d["scripts"][0]["script"] == SCRIPT and d["scripts"][0]["size"] == len(SCRIPT)
    assert_envelope(w.request("POST", f"{FILTERS}/example.com/info", body={"script": SCRIPT}), 409, "CONFLICT")
    # A second script, stored inactive; then made active through PUT.
    r = w.request("PUT", f"{FILTERS}/example.com/info@example.com", body={"script": "keep;", "name": "plain", "active": False})
    assert r.status == 200 and r.json["data"]["active"] == "main", r
    r = w.request("PUT", f"{FILTERS}/example.com/info", body={"script": "keep;", "name": "plain", "active": True})
    assert r.json["data"]["active"] == "plain"
    assert [s["active"] for s in r.json["data"]["scripts"]] == [False, True], "one active script (main, plain)"
    # PUT without `active` keeps the state.
    r = w.request("PUT", f"{FILTERS}/example.com/info", body={"script": SCRIPT, "name": "main"})
    assert r.json["data"]["active"] == "plain"
    got = w.request("GET", f"{FILTERS}/example.com/info").json["data"]
    assert sorted(s["name"] for s in got["scripts"]) == ["main", "plain"]
    r = w.request("DELETE", f"{FILTERS}/example.com/info?name=main")
    assert r.status == 200 and r.json["data"]["deleted"] == ["main"], r
    assert_envelope(w.request("DELETE", f"{FILTERS}/example.com/info?name=main"), 404, "NOT_FOUND")
    r = w.request("DELETE", f"{FILTERS}/example.com/info")
    assert r.json["data"]["deleted"] == ["plain"]
    assert w.request("GET", f"{FILTERS}/example.com/info").json["data"] == {
        "domain": "example.com", "account": "info", "account_id": a["id"], "active": None, "scripts": []}
    assert_envelope(w.request("GET", f"{FILTERS}/example.com/nobody"), 404, "NOT_FOUND")
    assert_envelope(w.request("GET", f"{FILTERS}/example.com/info@other.org"), 400, "VALIDATION_ERROR")


def test_bad_scripts_get_a_clear_answer(make_wispd):
    w = start(make_wispd)
    account(w, "info")
    r = w.request("POST", f"{FILTERS}/example.com/info", body={"script": 'require "fileinto";\nif true {\n  fileinto "x"\n}\n'})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "line 4, column" in r.json["error"], r.json
    r = w.request("POST", f"{FILTERS}/example.com/info", body={"script": 'require "enotify";\nkeep;\n'})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "enotify" in r.json["error"] and "line 1" in r.json["error"]
    r = w.request("POST", f"{FILTERS}/example.com/info", body={"script": "# " + "x" * 70000 + "\nkeep;"})
    assert_envelope(r, 400, "VALIDATION_ERROR")
    assert "limit" in r.json["error"]
    assert_envelope(w.request("POST", f"{FILTERS}/example.com/info", body={"script": "keep;", "name": "a/b"}), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("POST", f"{FILTERS}/example.com/info", body={"name": "x"}), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("POST", f"{FILTERS}/example.com/info", body={"script": 7}), 400, "VALIDATION_ERROR")
    assert w.request("GET", f"{FILTERS}/example.com/info").json["data"]["scripts"] == [], "nothing stored"


def test_user_tokens_reach_only_their_domains(make_wispd):
    w = start(make_wispd)
    mine = account(w, "a", domain="mine.org")
    theirs = account(w, "b", domain="theirs.org")
    token = w.request("POST", "/api/v1/tokens", body={"name": "panel", "role": "user", "domains": ["mine.org"]}).json["data"]["token"]
    assert w.request("PUT", f"{FILTERS}/mine.org/a", body={"script": "keep;"}, token=token).status == 200
    for method, body in [("GET", None), ("PUT", {"script": "discard;"}), ("DELETE", None)]:
        assert_envelope(w.request(method, f"{FILTERS}/theirs.org/b", body=body, token=token), 403, "FORBIDDEN")
    # Naming another domain's account through its address in my domain's path doesn't work either.
    assert_envelope(w.request("GET", f"{FILTERS}/mine.org/b@theirs.org", token=token), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("GET", f"/api/v1/email/autoresponders/{theirs['id']}", token=token), 404, "NOT_FOUND")
    assert_envelope(w.request("PUT", f"/api/v1/email/autoresponders/{theirs['id']}", token=token,
                              body={"enabled": True, "subject": "x", "body": "y", "interval_days": 1}), 404, "NOT_FOUND")
    assert_envelope(w.request("GET", "/api/v1/email/vacation/theirs.org", token=token), 403, "FORBIDDEN")
    assert w.request("GET", f"/api/v1/email/autoresponders/{mine['id']}", token=token).status == 200
    # The other domain's filters were not touched.
    assert w.request("GET", f"{FILTERS}/theirs.org/b").json["data"]["scripts"] == []


def test_autoresponder_validation_and_the_vacation_listing(make_wispd):
    w = start(make_wispd)
    a = account(w, "info")
    b = account(w, "bob")
    path = f"/api/v1/email/autoresponders/{a['id']}"
    r = w.request("GET", path)
    assert r.json["data"] == {"account_id": a["id"], "email": "info@example.com", "enabled": False, "subject": "",
                              "body": "", "from": "", "start": None, "end": None, "interval_days": 1}
    ok = {"enabled": True, "subject": "Out of office", "body": "Back on Monday.", "interval_days": 2}
    for bad in [{"from": "ceo@example.com"}, {"start": "tomorrow"}, {"start": "2026-12-20", "end": "2026-12-19"},
                {"subject": "x" * 257}, {"subject": "a\r\nBcc: x@y"}, {"interval_days": -1}, {"interval_days": 366},
                {"interval_days": 2**64}, {"body": "x" * (65 * 1024)}, {"enabled": None}]:
        assert_envelope(w.request("PUT", path, body={**ok, **bad}), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("PUT", "/api/v1/email/autoresponders/999", body=ok), 404, "NOT_FOUND")
    r = w.request("PUT", path, body={**ok, "from": "info+away@example.com", "start": "2026-01-01", "end": "2099-01-01T00:00:00Z"})
    assert r.status == 200, r
    assert r.json["data"]["start"] == "2026-01-01T00:00:00+00:00" and r.json["data"]["end"] == "2099-01-01T00:00:00+00:00"
    assert w.request("GET", path).json["data"]["subject"] == "Out of office"
    w.request("PUT", f"{FILTERS}/example.com/bob", body={"script": 'require "vacation";\nvacation "Away.";\n'})
    listing = w.request("GET", "/api/v1/email/vacation/example.com").json["data"]
    assert [(v["email"], v["source"]) for v in listing] == [("info@example.com", "autoresponder"), ("bob@example.com", "sieve")]
    assert listing[0]["subject"] == "Out of office" and listing[1]["subject"] is None
    # Turned off, or outside its window: not listed.
    w.request("PUT", path, body={**ok, "start": "2090-01-01"})
    assert [v["email"] for v in w.request("GET", "/api/v1/email/vacation/example.com").json["data"]] == ["bob@example.com"]
    assert b["id"] != a["id"]


def test_an_autoresponder_answers_mail_once(make_wispd, tmp_path):
    sink = Receiver(tmp_path / "sink", f"127.0.0.1:{free_port()}").start()
    try:
        w = start(make_wispd, relay=sink.listen)
        a = account(w, "info")
        r = w.request("PUT", f"/api/v1/email/autoresponders/{a['id']}",
                      body={"enabled": True, "subject": "Out of office", "body": "Back on Monday.", "interval_days": 1})
        assert r.status == 200, r
        smtp, _, _ = ports(w)
        for subject in ("one", "two"):
            msg = (f"From: carol@remote.test\r\nTo: info@example.com\r\nSubject: {subject}\r\n"
                   f"Message-ID: <{subject}@remote.test>\r\n\r\nHi.\r\n").encode()
            with smtplib.SMTP("127.0.0.1", smtp, timeout=15) as c:
                c.sendmail("carol@remote.test", ["info@example.com"], msg)
        got = sink.wait(1)
        time.sleep(2)
        assert len(sink.messages()) == 1, "one reply per sender per interval"
        reply = email.message_from_string(got[0]["data"])
        assert got[0]["rcpt_tos"] == ["carol@remote.test"]
        assert reply["Subject"] == "Out of office" and reply["Auto-Submitted"] == "auto-replied"
        assert reply["In-Reply-To"] == "<one@remote.test>"
        assert "Back on Monday." in reply.get_payload()
        q = w.request("GET", "/api/v1/email/queue").json["data"]
        assert q == [], q
    finally:
        sink.stop()
