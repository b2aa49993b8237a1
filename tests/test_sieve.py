"""Sieve at delivery against the real server: scripts set through the API, mail in over SMTP
(smtplib), read back over IMAP (imaplib) or from the store; what scripts send (redirects,
rejection notices, vacation replies) leaves through the outbound queue to an aiosmtpd sink."""

import email
import imaplib
import smtplib
import threading
import time

import pytest

from mailutil import account, mail_config, ports, stored
from netns import wait_until
from test_queue import Receiver, free_port

PASSWORD = "password123"


def start(make_wispd, sink_port=None, **sieve):
    config = mail_config(**({"relay": f"127.0.0.1:{sink_port}", "retry_seconds": 1} if sink_port else {}))
    extra = "".join(f"{k} = {v}\n" for k, v in sieve.items())
    config = config.replace('[sieve]\nlisten = ["127.0.0.1:0"]\n', '[sieve]\nlisten = ["127.0.0.1:0"]\n' + extra)
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    account(w, "bob")
    return w


@pytest.fixture
def sink(tmp_path):
    r = Receiver(tmp_path / "sink", f"127.0.0.1:{free_port()}").start()
    yield r
    r.stop()


def script(w, source, user="info", name="main"):
    r = w.request("PUT", f"/api/v1/email/filters/example.com/{user}", body={"script": source, "name": name, "active": True})
    assert r.status in (200, 201), r
    return r


def send(w, msg, sender="carol@remote.test", to=("info@example.com",)):
    smtp, _, _ = ports(w)
    with smtplib.SMTP("127.0.0.1", smtp, timeout=15) as c:
        return c.sendmail(sender, list(to), msg)


def mail(subject, sender="carol@remote.test", to="info@example.com", headers="", body="Hello.\r\n", msgid=None):
    msgid = msgid or f"{subject.replace(' ', '.')}.{time.monotonic_ns()}@remote.test"
    return (f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
            f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n{headers}\r\n{body}").encode()


def folder(w, name, user="info@example.com"):
    """(flags, message) of every message in the mailbox, over IMAP (the stored flags: not the
    session's \\Recent)."""
    _, imap, _ = ports(w)
    m = imaplib.IMAP4("127.0.0.1", imap, timeout=10)
    m.login(user, PASSWORD)
    typ, _ = m.select(f'"{name}"', readonly=True)
    assert typ == "OK", f"no mailbox {name}"
    _, ids = m.search(None, "ALL")
    out = []
    for i in ids[0].split():
        _, data = m.fetch(i, "(FLAGS BODY.PEEK[])")
        flags = imaplib.ParseFlags(data[0][0])
        out.append(([f.decode() for f in flags if f != b"\\Recent"], email.message_from_bytes(data[0][1])))
    m.logout()
    return out


def test_fileinto_creates_the_folder_with_flags_and_others_stay_in_inbox(make_wispd):
    w = start(make_wispd)
    script(w, r'''require ["fileinto", "mailbox", "imap4flags", "envelope", "subaddress", "body", "relational"];
if header :contains "Subject" "invoice" {
    addflag ["$Invoice", "\\Flagged"];
    fileinto :create "Finance/Invoices";
    stop;
}
if allof (envelope :detail "to" "news", body :contains "unsubscribe") {
    fileinto :create :flags "\\Answered" "News";
    stop;
}
if header :value "gt" :comparator "i;ascii-numeric" "X-Priority" "3" { setflag "\\Seen"; }
''')
    send(w, mail("Your invoice 42"))
    send(w, mail("Weekly", body="To unsubscribe click here.\r\n"), to=("info+news@example.com",))
    send(w, mail("Plain", headers="X-Priority: 5\r\n"))
    inv = folder(w, "Finance/Invoices")
    assert [m["Subject"] for _, m in inv] == ["Your invoice 42"]
    assert "\\Flagged" in inv[0][0] and "$Invoice" in inv[0][0], inv[0][0]
    news = folder(w, "News")
    assert [m["Subject"] for _, m in news] == ["Weekly"]
    assert news[0][0] == ["\\Answered"], "`:flags` replaces the variable's flags (RFC 5232)"
    inbox = folder(w, "INBOX")
    assert [m["Subject"] for _, m in inbox] == ["Plain"]
    assert "\\Seen" in inbox[0][0]
    # Another account without a script gets its mail in INBOX as before.
    send(w, mail("For bob", to="bob@example.com"), to=("bob@example.com",))
    assert [m["Subject"] for _, m in folder(w, "INBOX", "bob@example.com")] == ["For bob"]


def test_discard_reject_and_ereject(make_wispd, sink):
    w = start(make_wispd, sink.listen.rsplit(":", 1)[1])
    script(w, '''require ["reject", "ereject"];
if header :is "Subject" "drop" { discard; stop; }
if header :is "Subject" "refuse" { reject "I do not take such mail."; stop; }
if header :is "Subject" "refuse now" { ereject "Not at this address."; stop; }
''')
    assert send(w, mail("drop")) == {}
    assert send(w, mail("refuse")) == {}
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(w, mail("refuse now"))
    assert e.value.smtp_code == 550 and b"Not at this address." in e.value.smtp_error
    assert send(w, mail("keep me")) == {}
    assert [m["Subject"] for _, m in folder(w, "INBOX")] == ["keep me"]
    # The sender of the rejected one hears about it: a DSN through the queue, null sender.
    got = sink.wait(1)
    assert len(got) == 1, got
    dsn = got[0]
    assert dsn["mail_from"] in ("", "<>") and dsn["rcpt_tos"] == ["carol@remote.test"]
    assert "I do not take such mail." in dsn["data"] and "5.7.1" in dsn["data"]
    # ereject with a recipient whose filter accepts it: delivered there, a notice for the other.
    script(w, 'require "ereject"; ereject "No thanks.";', user="bob")
    assert send(w, mail("shared"), to=("info@example.com", "bob@example.com")) == {}
    assert "shared" in [m["Subject"] for _, m in folder(w, "INBOX")]
    assert folder(w, "INBOX", "bob@example.com") == []
    assert "No thanks." in sink.wait(2)[1]["data"]


def test_redirect_goes_out_with_srs_and_copy_keeps_it(make_wispd, sink):
    w = start(make_wispd, sink.listen.rsplit(":", 1)[1])
    script(w, '''require ["copy", "editheader"];
addheader "X-Redirected-By" "wispd sieve";
if header :contains "Subject" "copy" { redirect :copy "dave@elsewhere.test"; }
else { redirect "erin@elsewhere.test"; }
''')
    assert send(w, mail("copy this")) == {}
    assert send(w, mail("move this")) == {}
    got = sink.wait(2)
    by_rcpt = {g["rcpt_tos"][0]: g for g in got}
    for rcpt in ("dave@elsewhere.test", "erin@elsewhere.test"):
        g = by_rcpt[rcpt]
        assert g["mail_from"].startswith("SRS0=") and g["mail_from"].endswith("@example.com"), g["mail_from"]
        assert "carol=remote.test" in g["mail_from"].lower() or "remote.test" in g["mail_from"].lower()
        assert "X-Redirected-By: wispd sieve" in g["data"]
        assert not g["data"].startswith("Return-Path:")
    inbox = folder(w, "INBOX")
    assert [m["Subject"] for _, m in inbox] == ["copy this"], "only the :copy one is kept"
    assert inbox[0][1]["X-Redirected-By"] == "wispd sieve", "the kept copy is the edited one"


def test_vacation_replies_once_per_period_never_to_lists_bulk_or_null_sender(make_wispd, sink):
    w = start(make_wispd, sink.listen.rsplit(":", 1)[1])
    script(w, '''require ["vacation", "vacation-seconds"];
vacation :seconds 3600 :subject "Away until Monday" "I am away; back on Monday.";
''')
    send(w, mail("first"))
    send(w, mail("second"))  # same sender within the period: no second reply
    send(w, mail("list post", headers="List-Id: <team.remote.test>\r\n"), sender="team@remote.test")
    send(w, mail("bulk", headers="Precedence: bulk\r\n"), sender="news@remote.test")
    send(w, mail("junk", headers="Precedence: junk\r\n"), sender="promo@remote.test")
    send(w, mail("auto", headers="Auto-Submitted: auto-replied\r\n"), sender="robot@remote.test")
    send(w, mail("bounce"), sender="")
    send(w, mail("not to me", to="everyone@remote.test"), sender="frank@remote.test")
    send(w, mail("other sender"), sender="gina@remote.test")
    got = sink.wait(2)
    time.sleep(2)  # anything more would have been queued with the messages
    got = sink.messages()
    assert sorted(g["rcpt_tos"][0] for g in got) == ["carol@remote.test", "gina@remote.test"], got
    for g in got:
        reply = email.message_from_string(g["data"])
        assert g["mail_from"] in ("", "<>")
        assert reply["Auto-Submitted"] == "auto-replied"
        assert reply["Subject"] == "Away until Monday"
        assert reply["From"] == "<info@example.com>" or "info@example.com" in reply["From"]
        assert reply["In-Reply-To"].startswith("<")
    assert len(folder(w, "INBOX")) == 9, "vacation keeps every message"
    # The period is kept in the store: after a restart carol still gets no second reply.
    w.stop()
    w.start()
    send(w, mail("third"))
    time.sleep(2)
    assert len(sink.messages()) == 2


def test_include_and_a_failing_script_still_delivers_to_inbox(make_wispd):
    w = start(make_wispd, cpu_limit=200)
    r = w.request("PUT", "/api/v1/email/filters/example.com/info",
                  body={"script": 'require ["fileinto", "mailbox"]; if header :contains "Subject" "list" { fileinto :create "Lists"; }',
                        "name": "lists", "active": False})
    assert r.status in (200, 201), r
    script(w, 'require ["include", "fileinto", "mailbox"];\ninclude :personal "lists";\n'
              'if header :contains "Subject" "misc" { fileinto :create "Misc"; }\n')
    send(w, mail("a list message"))
    send(w, mail("misc thing"))
    assert {m["Subject"] for _, m in folder(w, "Lists")} == {"a list message"}
    assert {m["Subject"] for _, m in folder(w, "Misc")} == {"misc thing"}
    # A script that runs out of CPU (200 instructions) delivers to INBOX and is logged.
    heavy = 'require "fileinto";\n' + "".join(
        f'if header :contains "X-Test-{i}" "never" {{ fileinto "Never"; }}\n' for i in range(400))
    script(w, heavy)
    assert send(w, mail("heavy")) == {}
    assert [m["Subject"] for _, m in folder(w, "INBOX")] == ["heavy"]
    assert wait_until(lambda: "CPU limit reached" in w.log(), timeout=5), w.log()[-2000:]
    r = w.request("GET", "/api/v1/metrics")
    assert r.status == 200
    assert 'wispd_sieve_runs_total{result="error"} 1' in r.raw.decode()


def test_kill_9_while_filtering_loses_nothing_acknowledged(make_wispd):
    w = start(make_wispd)
    script(w, 'require ["fileinto", "mailbox"];\n'
              'if header :contains "Subject" "even" { fileinto :create "Even"; } else { keep; }\n')
    smtp, _, _ = ports(w)
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def sender(n):
        i = 0
        try:
            with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as c:
                while not stop.is_set():
                    mid = f"{n}.{i}@load.test"
                    subject = "even" if i % 2 == 0 else "odd"
                    i += 1
                    c.sendmail("carol@remote.test", ["info@example.com"], mail(subject, msgid=mid))
                    with lock:
                        acked.append((f"<{mid}>", subject))
        except (smtplib.SMTPException, OSError):
            return

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.proc.kill()
    w.proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    with lock:
        acknowledged = dict(acked)
    assert len(acknowledged) >= 200
    where = {m["message_id"]: m["mailbox"] for m in stored(w, "info@example.com")}
    lost = [mid for mid in acknowledged if mid not in where]
    assert not lost, f"lost: {lost[:5]}"
    for mid, subject in acknowledged.items():
        assert where[mid] == ("Even" if subject == "even" else "INBOX"), (mid, where[mid])
