"""Mailing lists against the real server: a members-only list with two local members (read
over IMAP) and two remote ones (an aiosmtpd destination behind `smtp.relay`); posts checked
against the policy, fanned out once with the List-* headers and VERP return paths; moderated
posts held and approved through the API; RFC 8058 one-click unsubscribe over HTTPS with curl;
a remote member disabled after three bounces; the From: rewrite for a DMARC p=reject author,
verified with dkimpy against the list domain's key; subscribe by mail with its confirmation
round trip; the archive; conflicts and other tenants' lists."""

import email
import re
import smtplib
import subprocess

import dkim
import pytest

from conftest import assert_envelope
from dnsserver import DnsServer
from netns import wait_until
from test_queue import Receiver, free_port, inbox, start, submit

LIST = "/api/v1/email/mailinglist/example.com"


@pytest.fixture
def lists(make_wispd, tmp_path):
    dns = DnsServer()
    dns.txt["_dmarc.strict.example"] = ["v=DMARC1; p=reject"]
    dns.txt["_dmarc.remote.example"] = ["v=DMARC1; p=none"]
    port = free_port()
    sink = Receiver(tmp_path / "dest", f"127.0.0.1:{port}", reject=["dead"]).start()
    w = start(make_wispd, dns=dns, relay=f"127.0.0.1:{port}", retry_seconds=1, max_retry_seconds=1)
    yield w, sink, dns
    sink.stop()
    dns.close()


def mx_port(w):
    from mailutil import ports
    return ports(w)[0]


def post(w, sender, to="team@example.com", subject="hello", author=None, extra=""):
    raw = (f"From: {author or sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@remote.example>\r\n"
           f"{extra}\r\nHello, list.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", mx_port(w), timeout=30) as c:
        c.ehlo("client.remote.example")
        c.sendmail(sender, [to], raw)
    return raw


def make_list(w, **body):
    body.setdefault("name", "team")
    body.setdefault("owner", "info@example.com")
    r = w.request("POST", LIST, body=body)
    assert r.status == 201, r
    return r.json["data"]


MEMBERS = ["info@example.com", "bob@example.com", "r1@remote.example", "r2@remote.example"]


def test_a_members_post_reaches_every_member_once_with_the_list_headers(lists):
    w, sink, _ = lists
    made = make_list(w, members=MEMBERS, subject_prefix="[team]", reply_to="list")
    assert (made["address"], made["members"], made["policy"]) == ("team@example.com", 4, "members")
    post(w, "r1@remote.example", subject="first post")
    got = sink.wait(2)
    assert sorted(r for m in got for r in m["rcpt_tos"]) == ["r1@remote.example", "r2@remote.example"]
    for m in got:
        # one transaction per member, each with its own VERP return path
        (rcpt,) = m["rcpt_tos"]
        user, host = rcpt.split("@")
        assert re.fullmatch(rf"team\+bounces-[0-9a-f]{{8}}-{user}={host}@example\.com", m["mail_from"]), m
        msg = email.message_from_string(m["data"])
        assert msg["List-Id"] == "<team.example.com>"
        assert msg["List-Post"] == "<mailto:team@example.com>"
        assert msg["Precedence"] == "list"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "mailto:team-unsubscribe@example.com" in msg["List-Unsubscribe"]
        assert "/api/v1/email/unsubscribe/" in msg["List-Unsubscribe"]
        assert msg["Subject"] == "[team] first post"
        assert msg["Reply-To"] == "<team@example.com>"
    links = {re.search(r"unsubscribe/([^>]+)>", m["data"]).group(1) for m in got}
    assert len(links) == 2, "each member has a link of its own"
    for user in ("info@example.com", "bob@example.com"):
        (m,) = inbox(w, user)
        assert m["List-Id"] == "<team.example.com>" and m["Subject"] == "[team] first post"
        assert m["Return-Path"] == "<team+bounces@example.com>"
    # not twice: nothing more arrives
    assert not wait_until(lambda: len(sink.messages()) > 2, timeout=2)
    # a non-member is refused at the end of DATA
    with pytest.raises(smtplib.SMTPDataError) as e:
        post(w, "stranger@remote.example", subject="spam")
    assert e.value.smtp_code == 550 and b"members only" in e.value.smtp_error
    # a member is known by From: too (a different envelope sender)
    post(w, "bounces@remote.example", author="r2@remote.example", subject="second")
    sink.wait(4)
    # the list's own mail coming back is a loop
    with pytest.raises(smtplib.SMTPDataError) as e:
        post(w, "r1@remote.example", subject="again", extra="List-Id: <team.example.com>\r\n")
    assert e.value.smtp_code == 554
    # automatic mail (an autoresponder's reply to the list) is taken and not distributed
    post(w, "r1@remote.example", subject="Out of office", extra="Auto-Submitted: auto-replied\r\n")
    assert not wait_until(lambda: len(sink.messages()) > 4, timeout=2)
    # a list takes a transaction of its own
    with smtplib.SMTP("127.0.0.1", mx_port(w), timeout=30) as c:
        c.ehlo("client.remote.example")
        c.mail("r1@remote.example")
        assert c.rcpt("info@example.com")[0] == 250
        assert c.rcpt("team@example.com")[0] == 452
    assert w.request("GET", f"{LIST}/team").json["data"]["posts"] == 2


def test_addresses_conflict_and_tokens_reach_only_their_domains(lists):
    w, _, _ = lists
    make_list(w)
    for name in ("info", "team", "team-subscribe"):
        assert_envelope(w.request("POST", LIST, body={"name": name, "owner": "info@example.com"}), 409, "CONFLICT")
    assert_envelope(w.request("POST", "/api/v1/email/accounts",
                              body={"domain": "example.com", "username": "team", "password": "password123"}),
                    409, "CONFLICT")
    assert_envelope(w.request("POST", "/api/v1/email/accounts",
                              body={"domain": "example.com", "username": "team-unsubscribe", "password": "password123"}),
                    409, "CONFLICT")
    assert_envelope(w.request("POST", "/api/v1/email/forwarders",
                              body={"source": "team@example.com", "destination": "info@example.com"}), 409, "CONFLICT")
    assert_envelope(w.request("POST", LIST, body={"owner": "info@example.com"}), 400, "VALIDATION_ERROR")
    assert_envelope(w.request("POST", LIST, body={"name": "x", "owner": "info@example.com", "policy": "open"}),
                    400, "VALIDATION_ERROR")
    assert_envelope(w.request("POST", LIST, body={"name": "x", "owner": "info@example.com", "members": ["nope"]}),
                    400, "VALIDATION_ERROR")
    # a list here can't be a member of a list here
    assert_envelope(w.request("POST", LIST, body={"name": "x", "owner": "info@example.com",
                                                  "members": ["team@example.com"]}), 400, "VALIDATION_ERROR")
    token = w.request("POST", "/api/v1/tokens",
                      body={"name": "other", "role": "user", "domains": ["other.org"]}).json["data"]["token"]
    assert_envelope(w.request("GET", LIST, token=token), 403, "FORBIDDEN")
    assert_envelope(w.request("GET", f"{LIST}/team", token=token), 403, "FORBIDDEN")
    assert_envelope(w.request("DELETE", f"{LIST}/team", token=token), 403, "FORBIDDEN")
    assert_envelope(w.request("POST", f"{LIST}/team/members", token=token, body={"address": "x@y.org"}),
                    403, "FORBIDDEN")
    assert w.request("GET", "/api/v1/email/mailinglist/other.org", token=token).json["data"] == []
    mine = w.request("POST", "/api/v1/tokens",
                     body={"name": "mine", "role": "user", "domains": ["example.com"]}).json["data"]["token"]
    assert [l["name"] for l in w.request("GET", LIST, token=mine).json["data"]] == ["team"]
    # members: one or many, idempotent
    r = w.request("POST", f"{LIST}/team/members", token=mine, body={"addresses": ["a@x.org", "B@X.org"]})
    assert r.json["data"] == {"changed": ["a@x.org", "b@x.org"], "members": 2}, r
    r = w.request("POST", f"{LIST}/team/members", body={"address": "a@x.org"})
    assert r.json["data"] == {"changed": [], "members": 2}
    r = w.request("DELETE", f"{LIST}/team/members", body={"address": "a@x.org"})
    assert r.json["data"] == {"changed": ["a@x.org"], "members": 1}
    assert w.request("DELETE", f"{LIST}/team/members", body={"address": "a@x.org"}).json["data"]["changed"] == []
    r = w.request("PUT", f"{LIST}/team", body={"policy": "announce", "subject_prefix": "[t]"})
    assert (r.json["data"]["policy"], r.json["data"]["subject_prefix"], r.json["data"]["members"]) == ("announce", "[t]", 1)
    assert_envelope(w.request("GET", f"{LIST}/nothing"), 404, "NOT_FOUND")
    assert w.request("DELETE", f"{LIST}/team").status == 200
    assert_envelope(w.request("GET", f"{LIST}/team"), 404, "NOT_FOUND")
    # the name is free again
    make_list(w)


def test_a_moderated_lists_outsider_post_is_held_then_approved(lists):
    w, sink, _ = lists
    make_list(w, members=["bob@example.com"], policy="moderated")
    post(w, "outsider@remote.example", subject="please approve")
    held = w.request("GET", f"{LIST}/team/held").json["data"]
    assert [(h["author"], h["subject"]) for h in held] == [("outsider@remote.example", "please approve")]
    assert inbox(w, "bob@example.com") == []
    # the owner is told
    (notice,) = inbox(w, "info@example.com")
    assert "held" in notice["Subject"]
    r = w.request("POST", f"{LIST}/team/held/{held[0]['id']}", body={"action": "approve"})
    assert r.status == 200 and r.json["data"]["outcome"] == "approved", r
    (m,) = inbox(w, "bob@example.com")
    assert m["Subject"] == "please approve" and m["List-Id"] == "<team.example.com>"
    assert w.request("GET", f"{LIST}/team/held").json["data"] == []
    assert_envelope(w.request("POST", f"{LIST}/team/held/{held[0]['id']}", body={"action": "approve"}),
                    404, "NOT_FOUND")
    post(w, "outsider@remote.example", subject="second try")
    (h,) = w.request("GET", f"{LIST}/team/held").json["data"]
    assert_envelope(w.request("POST", f"{LIST}/team/held/{h['id']}", body={"action": "maybe"}), 400, "VALIDATION_ERROR")
    assert w.request("POST", f"{LIST}/team/held/{h['id']}", body={"action": "reject"}).json["data"]["outcome"] == "rejected"
    assert len(inbox(w, "bob@example.com")) == 1
    # a member's post goes straight out
    post(w, "bob@example.com", subject="from a member")
    assert len(inbox(w, "bob@example.com")) == 2


def test_announce_lists_take_only_the_proven_owner(lists):
    w, _, _ = lists
    make_list(w, members=["bob@example.com"], policy="announce")
    # the owner's address in From: alone is no proof (anyone can write it)
    with pytest.raises(smtplib.SMTPDataError) as e:
        post(w, "info@example.com", subject="forged")
    assert e.value.smtp_code == 550
    # through authenticated submission it is
    submit(w, ["team@example.com"], subject="announcement")
    (m,) = inbox(w, "bob@example.com")
    assert m["Subject"] == "announcement" and m["List-Post"] == "NO"


def test_one_click_unsubscribe_over_https(lists):
    w, sink, _ = lists
    make_list(w, members=["r1@remote.example", "info@example.com"])
    post(w, "r1@remote.example", subject="to unsubscribe from")
    (m,) = sink.wait(1)
    header = email.message_from_string(m["data"])["List-Unsubscribe"]
    url = re.search(r"<(https://[^>]+)>", header.replace("\r\n", "").replace("\n", "")).group(1)
    # local members share one stored copy: theirs has the mailto only
    (local,) = inbox(w, "info@example.com")
    assert local["List-Unsubscribe"] == "<mailto:team-unsubscribe@example.com>"
    host, port = re.match(r"https://([^:/]+):(\d+)/", url).groups()
    assert host == "mx.test.example" and int(port) == w.port
    curl = ["curl", "-sS", "--cacert", str(w.data_dir / "tls" / "cert.pem"),
            "--resolve", f"{host}:{port}:127.0.0.1", "-w", "\n%{http_code}"]
    out = subprocess.run(curl + [url], capture_output=True, text=True, timeout=20).stdout
    assert out.endswith("200") and '"subscribed":true' in out, out
    # a GET never unsubscribes
    assert "r1@remote.example" in [x["address"] for x in w.request("GET", f"{LIST}/team/members").json["data"]]
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    out = subprocess.run(curl + ["-X", "POST", "-d", "List-Unsubscribe=One-Click", tampered],
                         capture_output=True, text=True, timeout=20).stdout
    assert out.endswith("404") and '"NOT_FOUND"' in out, out
    out = subprocess.run(curl + ["-X", "POST", "-d", "List-Unsubscribe=One-Click", url],
                         capture_output=True, text=True, timeout=20).stdout
    assert out.endswith("200") and '"subscribed":false' in out, out
    assert [x["address"] for x in w.request("GET", f"{LIST}/team/members").json["data"]] == ["info@example.com"]
    # only `unsubscribe/TOKEN` is open: anything else under it still needs a token
    for path in ("/api/v1/email/unsubscribe/", "/api/v1/email/unsubscribe/a/b"):
        out = subprocess.run(curl + [f"https://{host}:{port}{path}"], capture_output=True, text=True, timeout=20).stdout
        assert out.endswith("401"), (path, out)


def test_a_remote_member_that_bounces_three_times_is_disabled(lists):
    w, sink, _ = lists
    make_list(w, members=["r1@remote.example", "dead@remote.example"], policy="anyone")
    for i in range(3):
        post(w, "someone@remote.example", subject=f"post {i}")
        sink.wait(i + 1)

        def bounced(n=i + 1):
            ms = {x["address"]: x for x in w.request("GET", f"{LIST}/team/members").json["data"]}
            return ms["dead@remote.example"]["bounces"] == n
        assert wait_until(bounced, timeout=20), w.request("GET", f"{LIST}/team/members").json
    ms = {x["address"]: x for x in w.request("GET", f"{LIST}/team/members").json["data"]}
    assert ms["dead@remote.example"]["enabled"] is False
    assert ms["r1@remote.example"] == {**ms["r1@remote.example"], "enabled": True, "bounces": 0}
    # no DSN went anywhere: the bounce is the list's
    assert all(m["rcpt_tos"] == ["r1@remote.example"] for m in sink.messages())
    # a disabled member gets nothing more
    post(w, "someone@remote.example", subject="post 3")
    sink.wait(4)
    assert w.request("GET", "/api/v1/email/queue").json["data"] == []
    # a bounce that arrives later at the VERP address (a DSN) counts for the member it names;
    # one at a made-up VERP address (anyone could write one) does not
    verp = sink.messages()[0]["mail_from"]
    assert re.fullmatch(r"team\+bounces-[0-9a-f]{8}-r1=remote\.example@example\.com", verp), verp
    forged = re.sub(r"bounces-[0-9a-f]{8}-", "bounces-00000000-", verp)
    dsn = (b"From: MAILER-DAEMON@remote.example\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nmailbox gone\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.example\r\n\r\n"
           b"Final-Recipient: rfc822; r1@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--\r\n")
    away = b"From: r1@remote.example\r\nAuto-Submitted: auto-replied\r\nSubject: Away\r\n\r\nOn holiday.\r\n"
    with smtplib.SMTP("127.0.0.1", mx_port(w), timeout=30) as c:
        c.ehlo("mx.remote.example")
        c.sendmail("", [forged], dsn)
        # an out-of-office reply to the return path, and a DSN at the plain bounce address
        # naming the member: neither is a bounce of the member's
        c.sendmail("", [verp], away)
        c.sendmail("", ["team+bounces@example.com"], dsn)
        c.sendmail("", [verp], dsn)
    ms = {x["address"]: x for x in w.request("GET", f"{LIST}/team/members").json["data"]}
    assert ms["r1@remote.example"]["bounces"] == 1
    # adding a disabled member again enables it
    r = w.request("POST", f"{LIST}/team/members", body={"address": "dead@remote.example"})
    assert r.json["data"]["changed"] == ["dead@remote.example"]


def test_a_dmarc_reject_authors_post_is_rewritten_and_signed_by_the_list(lists):
    w, sink, dns = lists
    key = w.request("POST", "/api/v1/email/dkim/example.com").json["data"]
    make_list(w, members=["r1@remote.example", "ann@strict.example"])
    post(w, "ann@strict.example", author="Ann Author <ann@strict.example>", subject="strict")
    (m,) = [x for x in sink.wait(2) if x["rcpt_tos"] == ["r1@remote.example"]]
    msg = email.message_from_string(m["data"])
    assert msg["From"] == '"Ann Author via team" <team@example.com>', msg["From"]
    assert msg["Reply-To"] == "<ann@strict.example>"
    records = {f"{key['selector']}._domainkey.example.com.".encode(): key["dns_record"].encode()}
    data = m["data"].encode("latin-1")
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: records.get(name)), data[:600]
    assert b"d=example.com" in data.split(b"DKIM-Signature:", 1)[1][:400]
    # an author whose domain doesn't ask for DMARC enforcement keeps its From:
    post(w, "r1@remote.example", author="R One <r1@remote.example>", subject="relaxed")
    got = sink.wait(4)
    relaxed = [m for m in (email.message_from_string(x["data"]) for x in got) if m["Subject"] == "relaxed"]
    assert len(relaxed) == 2 and all(x["From"] == "R One <r1@remote.example>" for x in relaxed)


def test_subscribe_and_unsubscribe_by_mail_with_confirmation(lists):
    w, sink, _ = lists
    make_list(w, members=["info@example.com"])
    post(w, "newbie@remote.example", to="team-subscribe@example.com", subject="subscribe")
    (conf,) = sink.wait(1)
    assert conf["rcpt_tos"] == ["newbie@remote.example"]
    msg = email.message_from_string(conf["data"])
    confirm = re.search(r"<(team-confirm\+[0-9a-f]+@example\.com)>", msg["Reply-To"]).group(1)
    assert "newbie@remote.example" not in [x["address"] for x in w.request("GET", f"{LIST}/team/members").json["data"]]
    # a made-up token is refused
    with pytest.raises(smtplib.SMTPDataError):
        post(w, "newbie@remote.example", to="team-confirm+0123456789abcdef@example.com", subject="Re: confirm")
    post(w, "newbie@remote.example", to=confirm, subject="Re: confirm")
    members = [x["address"] for x in w.request("GET", f"{LIST}/team/members").json["data"]]
    assert "newbie@remote.example" in members
    welcome = sink.wait(2)[-1]
    assert "Welcome" in email.message_from_string(welcome["data"])["Subject"]
    # used once
    with pytest.raises(smtplib.SMTPDataError):
        post(w, "newbie@remote.example", to=confirm, subject="Re: confirm")
    post(w, "newbie@remote.example", to="team-unsubscribe@example.com", subject="unsubscribe")
    conf = sink.wait(3)[-1]
    confirm = re.search(r"<(team-confirm\+[0-9a-f]+@example\.com)>", email.message_from_string(conf["data"])["Reply-To"]).group(1)
    post(w, "newbie@remote.example", to=confirm, subject="Re: confirm")
    assert [x["address"] for x in w.request("GET", f"{LIST}/team/members").json["data"]] == ["info@example.com"]


def test_the_archive_keeps_posts(lists):
    w, _, _ = lists
    make_list(w, members=["bob@example.com"], archive=True, policy="anyone")
    post(w, "someone@remote.example", subject="kept")
    (a,) = w.request("GET", f"{LIST}/team/archive").json["data"]
    assert (a["number"], a["subject"], a["author"]) == (1, "kept", "someone@remote.example")
    r = w.request("GET", f"{LIST}/team/archive/1")
    assert r.status == 200 and r.header("content-type") == "message/rfc822"
    assert b"List-Id: <team.example.com>" in r.raw and b"Hello, list." in r.raw
    assert_envelope(w.request("GET", f"{LIST}/team/archive/2"), 404, "NOT_FOUND")


def test_what_the_poster_writes_cannot_inject_headers_or_reach_other_lists(lists):
    w, sink, _ = lists
    make_list(w, members=["r1@remote.example", "bob@example.com"], policy="anyone", subject_prefix="[team]")
    # an encoded CR LF in the display name of a DMARC p=reject author: the rewritten From: is
    # one line, no header is made of it
    evil = "=?utf-8?q?Eve=0D=0ABcc=3A_victim=40elsewhere=2Eexample?= <eve@strict.example>"
    post(w, "eve@strict.example", author=evil, subject="inject")
    (m,) = sink.wait(1)
    msg = email.message_from_string(m["data"])
    assert msg["Bcc"] is None and "Bcc" not in msg.keys(), m["data"][:800]
    assert msg["From"].startswith('"Eve') and msg["From"].count('"') == 2  # stays inside the phrase
    assert msg["From"].endswith("<team@example.com>") and "\n" not in msg["From"]
    assert msg["Reply-To"] == "<eve@strict.example>"
    # an address that is no plain address is not copied into Reply-To
    post(w, "x@remote.example", author='"odd" <"a\\"b"@strict.example>', subject="odd")
    odd = email.message_from_string(sink.wait(2)[-1]["data"])
    assert odd["Reply-To"] is None or "\"" not in odd["Reply-To"]
    # another domain's list, its held posts and archive are out of a user token's reach
    w.request("POST", "/api/v1/email/accounts",
              body={"domain": "other.org", "username": "own", "password": "password123"})
    r = w.request("POST", "/api/v1/email/mailinglist/other.org",
                  body={"name": "priv", "owner": "own@other.org", "policy": "moderated", "archive": True})
    assert r.status == 201, r
    post(w, "outsider@remote.example", to="priv@other.org", subject="secret")
    (h,) = w.request("GET", "/api/v1/email/mailinglist/other.org/priv/held").json["data"]
    mine = w.request("POST", "/api/v1/tokens",
                     body={"name": "mine", "role": "user", "domains": ["example.com"]}).json["data"]["token"]
    assert_envelope(w.request("POST", f"{LIST}/team/held/{h['id']}", token=mine, body={"action": "approve"}),
                    404, "NOT_FOUND")
    assert_envelope(w.request("GET", "/api/v1/email/mailinglist/other.org/priv/held", token=mine), 403, "FORBIDDEN")
    assert_envelope(w.request("GET", "/api/v1/email/mailinglist/other.org/priv/archive/1", token=mine),
                    403, "FORBIDDEN")
    assert_envelope(w.request("GET", f"{LIST}/priv", token=mine), 404, "NOT_FOUND")
    assert len(w.request("GET", "/api/v1/email/mailinglist/other.org/priv/held").json["data"]) == 1
    # overflowing numbers are a 404, not a panic
    assert_envelope(w.request("POST", f"{LIST}/team/held/99999999999999999999999", body={"action": "reject"}),
                    404, "NOT_FOUND")
    assert_envelope(w.request("PUT", f"{LIST}/team", body={"bounce_limit": 4294967296}), 400, "VALIDATION_ERROR")


def test_floods_of_requests_and_a_big_post_stay_bounded(lists):
    """200 subscribe requests from 200 senders at once, then a 20 MB post to 40 remote members:
    the requests are taken (one confirmation each), the post goes to each member once, and the
    server's peak memory grows by far less than a copy per member would take."""
    from concurrent.futures import ThreadPoolExecutor
    from test_hardening import rss_kib
    w, sink, _ = lists
    remote = [f"m{i}@remote.example" for i in range(40)]
    make_list(w, members=remote, policy="anyone")
    base = rss_kib(w, "VmHWM")

    def ask(i):
        post(w, f"asker{i}@remote.example", to="team-subscribe@example.com", subject=f"sub {i}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(ask, range(200)))
    confirmations = sink.wait(200, timeout=60)
    assert sorted(m["rcpt_tos"][0] for m in confirmations) == sorted(f"asker{i}@remote.example" for i in range(200))
    big = "x" * 998 + "\r\n"
    raw = (b"From: someone@remote.example\r\nTo: team@example.com\r\nSubject: big\r\n\r\n"
           + (big * (20 * 1024 * 1024 // len(big))).encode())
    with smtplib.SMTP("127.0.0.1", mx_port(w), timeout=60) as c:
        c.sendmail("someone@remote.example", ["team@example.com"], raw)
    got = sink.wait(240, timeout=120)
    bigs = [m for m in got if "Subject: big" in m["data"][:4000]]
    assert sorted(m["rcpt_tos"][0] for m in bigs) == sorted(remote)
    grown_mb = (rss_kib(w, "VmHWM") - base) / 1024
    print(f"peak RSS grew {grown_mb:.0f} MB for a 20 MB post to 40 members")
    # a copy per member would be 800 MB; the post, its queue entry and a few in flight are not
    assert grown_mb < 300, grown_mb
    members = w.request("GET", f"{LIST}/team/members").json["data"]
    assert len(members) == 40  # nobody joined without confirming


def test_an_acknowledged_post_survives_kill_9(make_wispd, tmp_path):
    """The 250 for a post means every member's copy is committed: killed (-9) at once, with the
    destination down, the local copies are there after the restart and the remote members get
    theirs once the destination is up, each with its own VERP return path."""
    import signal
    port = free_port()
    w = start(make_wispd, relay=f"127.0.0.1:{port}", retry_seconds=1, max_retry_seconds=1)
    make_list(w, members=["bob@example.com", "r1@remote.example", "r2@remote.example"], policy="anyone")
    post(w, "someone@remote.example", subject="durable")
    assert w.stop(signal.SIGKILL)[0] == -signal.SIGKILL
    w.start()
    (m,) = inbox(w, "bob@example.com")
    assert m["Subject"] == "durable"
    (q,) = w.request("GET", "/api/v1/email/queue").json["data"]
    assert q["source"] == "list" and sorted(r["address"] for r in q["recipients"]) == ["r1@remote.example", "r2@remote.example"]
    dest = Receiver(tmp_path / "dest", f"127.0.0.1:{port}").start()
    try:
        got = dest.wait(2, timeout=30)
        assert sorted(x["rcpt_tos"][0] for x in got) == ["r1@remote.example", "r2@remote.example"]
        assert all(x["mail_from"].startswith("team+bounces-") for x in got)
        assert wait_until(lambda: w.request("GET", "/api/v1/email/queue").json["data"] == [], timeout=20)
    finally:
        dest.stop()
