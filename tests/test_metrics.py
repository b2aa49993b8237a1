"""`GET /api/v1/metrics`: Prometheus text (OpenMetrics) read back with the prometheus_client
parser, after real SMTP, IMAP and API traffic."""

import imaplib
import smtplib

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import assert_envelope
from mailutil import account, installed, message, ports

PASSWORD = "password123"


def scrape(w, token="admin"):
    r = w.request("GET", "/api/v1/metrics", token=token)
    assert r.status == 200, r
    assert r.header("content-type").startswith("application/openmetrics-text"), r.headers
    families = {f.name: f for f in text_string_to_metric_families(r.raw.decode())}
    return families


def value(families, name, **labels):
    for s in families[name].samples:
        if s.name.endswith("_total") or s.name == name or s.name.endswith("_count"):
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_metrics_count_smtp_imap_logins_deliveries_and_api_requests(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    _, imap, _ = ports(w)
    with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as c:
        c.sendmail("a@remote.example", ["info@example.com"], message("counted"))
        c.mail("a@remote.example")
        assert c.rcpt("nobody@elsewhere.example")[0] == 554
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=15)
    try:
        m.login("info@example.com", "wrong password")
    except imaplib.IMAP4.error:
        pass
    m.login("info@example.com", PASSWORD)
    m.select("INBOX")
    m.fetch("1", "(FLAGS)")
    m.logout()
    assert w.request("GET", "/api/v1/email/accounts").status == 200
    f = scrape(w)
    assert value(f, "wispd_smtp_messages", listener="mx", outcome="accepted") == 1
    assert value(f, "wispd_smtp_recipients_refused", reason="relay_denied") == 1
    assert value(f, "wispd_smtp_sessions", listener="mx") == 1
    assert value(f, "wispd_logins", protocol="imap", result="refused") == 1
    assert value(f, "wispd_logins", protocol="imap", result="accepted") == 1
    assert value(f, "wispd_imap_command_seconds", command="FETCH") == 1
    assert value(f, "wispd_delivery_batch_size") >= 1
    assert value(f, "wispd_api_requests", route="/api/v1/email/accounts", method="GET", status="200") == 1
    assert value(f, "wispd_queue_depth") == 0
    assert "wispd_firewall_list_entries" in f and "wispd_blocklist_entries" in f


def test_metrics_are_admin_only(make_wispd):
    w = make_wispd()
    r = w.request("POST", "/api/v1/tokens", body={"name": "u", "role": "user", "domains": ["example.com"]})
    user = r.json["data"]["token"]
    assert_envelope(w.request("GET", "/api/v1/metrics", token=user), 403, "FORBIDDEN")
    assert_envelope(w.request("GET", "/api/v1/metrics", token=None), 401, "UNAUTHORIZED")
    # unknown routes are counted without their raw path (bounded labels)
    for i in range(3):
        w.request("GET", f"/api/v1/nope/{i}")
    f = scrape(w)
    assert value(f, "wispd_api_requests", route="unmatched", status="404") == 3
    assert not any("nope" in str(s.labels) for s in f["wispd_api_requests"].samples)
