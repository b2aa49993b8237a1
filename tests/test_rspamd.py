"""The rspamd backend of `/email/spam` against a real rspamd (Debian's) started privately by the
test (tests/rspamd.py): its `reject` is a 550 5.7.1 at the end of DATA, `add header` and
`rewrite subject` file into Junk with rspamd's score in `X-Spam-Status`, `no action` delivers
to INBOX; when rspamd can't be reached the message is accepted or deferred by `on_failure`,
never dropped."""

import smtplib

import pytest

from dnsserver import DnsServer
from mailutil import account, mail_config, ports
from rspamd import ADD_HEADER, NO_ACTION, REJECT, REWRITE_SUBJECT, Rspamd, free_port
from test_spam import configure, fetch, send


def mail(subject, body):
    return (f"From: Ann <ann@good.example>\r\nTo: info@example.com\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@good.example>\r\n"
            f"\r\n{body}\r\n").encode()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    dns = DnsServer()
    r = Rspamd(str(tmp_path_factory.mktemp("rspamd")), dns.port)
    yield r
    r.close()
    dns.close()


@pytest.fixture
def mx(make_wispd, rspamd):
    dns = DnsServer()
    config = mail_config().replace(
        "[firewall]", f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[firewall]')
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    smtp, imap, _ = ports(w)
    yield w, smtp, imap
    dns.close()


def test_rspamd_actions_decide_delivery(mx, rspamd):
    w, smtp, imap = mx
    data = configure(w, enabled=True, engine="rspamd", url=rspamd.url)
    assert data["engine"] == "rspamd" and data["url"] == rspamd.url

    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, mail("gtube", REJECT), "ann@good.example")
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.1"), e.value
    assert b"GTUBE" in e.value.smtp_error, e.value.smtp_error

    send(smtp, mail("add header", ADD_HEADER), "ann@good.example")
    send(smtp, mail("rewrite subject", REWRITE_SUBJECT), "ann@good.example")
    send(smtp, mail("ham", NO_ACTION), "ann@good.example")
    send(smtp, mail("plain", "Hello, nothing special here."), "ann@good.example")

    junk, inbox = fetch(imap, "Junk"), fetch(imap)
    assert sorted(m["Subject"] for m in junk) == ["add header", "rewrite subject"]
    for m in junk:
        assert m["X-Spam-Status"].startswith("Yes, score="), m["X-Spam-Status"]
        assert "GTUBE" in m["X-Spam-Status"] and m["X-Spam-Flag"] == "YES"
        float(m["X-Spam-Score"])
    assert [m["Subject"] for m in inbox] == ["ham", "plain"]
    for m in inbox:
        assert m["X-Spam-Status"].startswith("No, score="), m["X-Spam-Status"]
        assert m["X-Spam-Flag"] is None

    stats = w.request("GET", "/api/v1/email/spam").json["data"]["stats"]
    assert stats["scored"] == 5 and stats["rejected"] == 1 and stats["junked"] == 2, stats
    assert stats["failures"] == 0, stats


def test_rspamd_unreachable_accepts_or_defers_by_policy(mx):
    w, smtp, imap = mx
    dead = f"http://127.0.0.1:{free_port()}"
    configure(w, enabled=True, engine="rspamd", url=dead, on_failure="accept")
    send(smtp, mail("accepted", REJECT), "ann@good.example")
    inbox = fetch(imap)
    assert [m["Subject"] for m in inbox] == ["accepted"]
    assert inbox[0]["X-Spam-Status"] is None, "an unscored message claims no score"

    configure(w, enabled=True, engine="rspamd", url=dead, on_failure="defer")
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(smtp, mail("deferred", REJECT), "ann@good.example")
    assert e.value.smtp_code == 451 and e.value.smtp_error.startswith(b"4."), e.value
    assert [m["Subject"] for m in fetch(imap)] == ["accepted"]
    stats = w.request("GET", "/api/v1/email/spam").json["data"]["stats"]
    assert stats["failures"] == 2 and stats["scored"] == 0, stats
