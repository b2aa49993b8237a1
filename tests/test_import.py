"""`wispd import csf` against the real server: a CSF configuration (csf.conf with keys wispd
has and keys it doesn't, csf.allow and csf.deny with CSF's comments, `#do not delete`, an
advanced filter and an Include, csf.tempban with one live and one expired ban, csf.ignore,
csf.blocklists with CSF's commented-out defaults and one enabled list) comes over through the
API; a dry run changes nothing; a second run has nothing to do."""

import json
import subprocess
import time
from pathlib import Path

from conftest import WISPD_BIN

CSF_CONF = """\
###############################################################################
# SECTION:Initial Settings
###############################################################################
TESTING = "0"
TESTING_INTERVAL = "5"
AUTO_UPDATES = "1"
TCP_IN = "20,21,22,25,53,80,110,143,443,465,587,993,995"
TCP_OUT = "20,21,22,25,53,80,110,113,443,587,993,995"
UDP_IN = "20,21,53,80,443"
UDP_OUT = "20,21,53,113,123"
ICMP_IN = "1"
LF_SSHD = "7"
LF_TRIGGER = "0"
RESTRICT_SYSLOG = "0"
"""

ALLOW = """\
###############################################################################
# Copyright (C) 2006-2025 Jonathan Michaelson
###############################################################################
# The following IP addresses will be allowed through iptables.
192.0.2.10 # office - Tue Dec  1 10:00:00 2026
198.51.100.0/24 # monitoring
tcp|in|d=22|s=203.0.113.9
Include /etc/csf/csf.allow.extra
"""

DENY = """\
###############################################################################
# The following IP addresses will be blocked in iptables
###############################################################################
203.0.113.66 # lfd: (sshd) Failed SSH login from 203.0.113.66: 7 in the last 3600 secs - Mon Nov 30 12:00:00 2026
203.0.113.77 # manual ban #do not delete
"""

IGNORE = """\
# The following IP addresses will be ignored by lfd
127.0.0.1
192.0.2.0/28 # backups
"""

BLOCKLISTS = """\
# Spamhaus Don't Route Or Peer List (DROP)
#SPAMDROP|86400|0|https://www.spamhaus.org/drop/drop.txt
LOCALLIST|3600|100|file:///tmp/wispd-import-list.txt
"""


def csf_dir(tmp_path):
    d = tmp_path / "csf"
    d.mkdir()
    (d / "csf.conf").write_text(CSF_CONF)
    (d / "csf.allow").write_text(ALLOW)
    (d / "csf.deny").write_text(DENY)
    (d / "csf.ignore").write_text(IGNORE)
    (d / "csf.blocklists").write_text(BLOCKLISTS)
    now = int(time.time())
    (d / "csf.tempban").write_text(f"{now - 60}|203.0.113.88|22|in|3600|lfd temp ban\n"
                                   f"{now - 7200}|203.0.113.99|22|in|3600|expired\n")
    return d


def run(w, d, *extra):
    out = subprocess.run([WISPD_BIN, "import", "csf", "--from", str(d), "--data-dir", str(w.data_dir), *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    return out


def test_a_csf_setup_comes_over_once(wispd, tmp_path):
    d = csf_dir(tmp_path)
    before = wispd.request("GET", "/api/v1/csf/config").json["data"]
    dry = json.loads(run(wispd, d, "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["changed"], dry
    assert wispd.request("GET", "/api/v1/csf/config").json["data"] == before
    assert wispd.request("GET", "/api/v1/csf/whitelist").json["data"] == []

    first = json.loads(run(wispd, d, "--json").stdout)
    skipped = {s["item"].split(": ", 1)[-1]: s["reason"] for s in first["skipped"]}
    assert "AUTO_UPDATES" in skipped and "RESTRICT_SYSLOG" in skipped, first
    assert "advanced filters" in skipped["tcp|in|d=22|s=203.0.113.9"]
    assert "Include" in skipped["Include /etc/csf/csf.allow.extra"]
    cfg = wispd.request("GET", "/api/v1/csf/config").json["data"]
    assert cfg["LF_SSHD"] == "7" and cfg["TESTING"] == "0", cfg
    assert set(cfg["TCP_IN"].split(",")) >= {"22", "25", "587", "993"}
    assert {"127.0.0.1", "192.0.2.0/28"} <= set(cfg["LF_IGNORE"].replace(" ", "").split(","))
    allow = {e["ip"]: e["comment"] for e in wispd.request("GET", "/api/v1/csf/whitelist").json["data"]}
    assert set(allow) == {"192.0.2.10", "198.51.100.0/24"} or set(allow) == {"192.0.2.10/32", "198.51.100.0/24"}, allow
    assert any("office" in c for c in allow.values())
    deny = {e["ip"].removesuffix("/32"): e for e in wispd.request("GET", "/api/v1/csf/blacklist").json["data"]}
    assert set(deny) == {"203.0.113.66", "203.0.113.77", "203.0.113.88"}, deny
    assert "do not delete" in deny["203.0.113.77"]["comment"]
    assert deny["203.0.113.66"]["ttl"] == 0
    assert 3400 <= deny["203.0.113.88"]["ttl"] <= 3540, deny["203.0.113.88"]
    lists = {b["name"]: b for b in wispd.request("GET", "/api/v1/csf/blocklists").json["data"]}
    assert lists["locallist"]["interval"] == 3600 and lists["locallist"]["max"] == 100
    assert "spamdrop" not in lists

    second = run(wispd, d)
    assert "nothing to do" in second.stdout, second.stdout
    again = json.loads(run(wispd, d, "--json").stdout)
    assert again["changed"] == [] and again["unchanged"] >= 10, again


def test_import_needs_real_directories_and_works_on_a_stopped_server(wispd, tmp_path):
    """A --from that isn't there is an error; a data dir no server runs on is imported into
    through the same API served by the import itself, and the server started on it later has
    what came over."""
    out = subprocess.run([WISPD_BIN, "import", "csf", "--from", str(tmp_path / "nope"), "--data-dir", str(wispd.data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "not a directory" in out.stderr
    csf = tmp_path / "csf"
    csf.mkdir()
    (csf / "csf.deny").write_text("203.0.113.99 # from the old server\n")
    stopped = tmp_path / "stopped"
    out = subprocess.run([WISPD_BIN, "import", "all", "--from", str(csf), "--data-dir", str(stopped)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "203.0.113.99" in out.stdout, out
    assert "skipped: postfix: nothing of it in the --from directories" in out.stdout, out.stdout
    assert "skipped: dovecot: no passwd-file" in out.stdout, out.stdout
    assert (stopped / "admin.token").exists(), "the first start's token, as `wispd serve` makes it"
    from conftest import BASE_CONFIG, Wispd
    (tmp_path / "later").mkdir()
    w = Wispd(tmp_path / "later", BASE_CONFIG.format(rate=1000, firewall="false"))
    w.data_dir = stopped
    w.start()
    try:
        deny = w.request("GET", "/api/v1/csf/blacklist").json["data"]
        assert [e["ip"] for e in deny] == ["203.0.113.99"], deny
    finally:
        w.stop()


MAIN_CF = """\
# See /usr/share/postfix/main.cf.dist for a commented, more complete version
smtpd_banner = $myhostname ESMTP $mail_name
myhostname = mail.example.com
config_directory = {dir}
relayhost = [smtp.isp.example]:587
message_size_limit = 20480000
virtual_mailbox_domains = example.com, other.org
virtual_alias_maps = hash:$config_directory/virtual,
    regexp:$config_directory/virtual.regexp
"""

VIRTUAL = """\
# forwarders
sales@example.com       info@example.com
team@example.com        info@example.com, partner@remote.example
  helper@remote.example
chain@example.com       sales@example.com
@other.org              info@example.com
postmaster              root
local@example.com       localuser
"""


def test_postfix_virtual_aliases_become_forwarders_and_catch_alls(make_wispd, tmp_path):
    from mailutil import account, mail_config
    w = make_wispd(config=mail_config())
    assert w.request("POST", "/api/v1/email/install").status == 200
    account(w, "info")
    d = tmp_path / "postfix"
    d.mkdir()
    (d / "main.cf").write_text(MAIN_CF.format(dir=d))
    (d / "virtual").write_text(VIRTUAL)
    out = subprocess.run([WISPD_BIN, "import", "postfix", "--from", str(d), "--data-dir", str(w.data_dir), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)
    fwd = {(f["source"], f["destination"]) for f in w.request("GET", "/api/v1/email/forwarders").json["data"]}
    assert fwd == {("sales@example.com", "info@example.com"), ("team@example.com", "info@example.com"),
                   ("team@example.com", "partner@remote.example"), ("team@example.com", "helper@remote.example"),
                   ("chain@example.com", "sales@example.com")}, fwd
    c = w.request("GET", "/api/v1/email/catchall/other.org").json["data"]
    assert (c["enabled"], c["destination"]) == (True, "info@example.com"), c
    reasons = " | ".join(f'{s["item"]}: {s["reason"]}' for s in first["skipped"])
    for expected in ('relay = "smtp.isp.example:587"', "max_message_size", "regexp:", "postmaster", "localuser",
                     "virtual_mailbox_domains"):
        assert expected in reasons, reasons
    again = subprocess.run([WISPD_BIN, "import", "postfix", "--from", str(d), "--data-dir", str(w.data_dir)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


SCHEMES = ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID", "MD5-CRYPT", "SSHA512", "PLAIN"]


def test_dovecot_users_log_in_with_their_old_passwords(make_wispd, tmp_path):
    """A passwd-file with a user per scheme, each hash made by `doveadm pw`: after the import
    every user logs in over IMAP with the password they had (then again, once the hash has
    been replaced by Argon2id); a wrong password is refused; a second run has nothing to do."""
    import imaplib
    import shutil
    import pytest
    from mailutil import mail_config, ports
    from netns import wait_until
    assert shutil.which("doveadm"), "doveadm (dovecot-core, installed by make deps-test) is missing"
    w = make_wispd(config=mail_config())
    assert w.request("POST", "/api/v1/email/install").status == 200
    _, imap, _ = ports(w)
    lines = []
    for i, scheme in enumerate(SCHEMES):
        h = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", f"old-pass-{i}"],
                           capture_output=True, text=True, check=True).stdout.strip()
        lines.append(f"u{i}@example.com:{h}:1000:1000::/home/u{i}::userdb_quota_rule=*:storage={i + 1}M")
    lines.append("nodomain:{PLAIN}x:1000:1000::/home/x::")
    d = tmp_path / "dovecot"
    d.mkdir()
    (d / "users").write_text("# passwd-file\n" + "\n".join(lines) + "\n")
    out = subprocess.run([WISPD_BIN, "import", "dovecot", "--from", str(d), "--data-dir", str(w.data_dir), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["changed"]) == len(SCHEMES), report
    assert any("no domain" in s["reason"] for s in report["skipped"])
    accounts = {a["email"]: a for a in w.request("GET", "/api/v1/email/accounts").json["accounts"]}
    assert accounts["u2@example.com"]["quota_mb"] == 3
    for i in (0, 5):  # a wrong password is refused (two schemes: each failure delays the next)
        m = imaplib.IMAP4("127.0.0.1", imap, timeout=20)
        with pytest.raises(imaplib.IMAP4.error):
            m.login(f"u{i}@example.com", f"wrong-{i}")
    for i, scheme in enumerate(SCHEMES):
        m = imaplib.IMAP4("127.0.0.1", imap, timeout=20)
        assert m.login(f"u{i}@example.com", f"old-pass-{i}")[0] == "OK", scheme
        m.logout()
    assert wait_until(lambda: w.log().count("imported password hash replaced by Argon2id") == len(SCHEMES), timeout=30), w.log()[-3000:]
    for i, scheme in enumerate(SCHEMES):
        m = imaplib.IMAP4("127.0.0.1", imap, timeout=20)
        assert m.login(f"u{i}@example.com", f"old-pass-{i}")[0] == "OK", f"{scheme} after the rehash"
        m.logout()
    again = subprocess.run([WISPD_BIN, "import", "dovecot", "--from", str(d / "users"), "--data-dir", str(w.data_dir)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
    # a hash whose cost is over wispd's bound is refused at the import, not at a login
    r = w.request("POST", "/api/v1/email/accounts/import",
                  body={"domain": "example.com", "username": "slow",
                        "password_hash": "{SHA512-CRYPT}$6$rounds=999999999$salt$hash"})
    assert r.status == 400 and "rounds" in r.json["message"], r


class PrivateDovecot:
    """Dovecot with IMAP and LMTP on loopback ports, its users in a passwd-file (passdb and
    userdb, homes under the test's directory), Maildir++ at ~/Maildir: the layout a
    Postfix + Dovecot server has."""

    def __init__(self, root, users):
        import socket
        self.root = root
        self.users = users  # {address: passwd hash}

        def free():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]
        self.imap_port, self.lmtp_port = free(), free()

    def home(self, address):
        return self.root / "home" / address

    def start(self):
        import pwd
        import shutil
        mail = pwd.getpwnam("mail")
        for d in ("run", "state", "etc", "home"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for a in self.users:
            self.home(a).mkdir(parents=True, exist_ok=True)
            shutil.chown(self.home(a), "mail", "mail")
        (self.root / "etc" / "users").write_text("".join(
            f"{a}:{h}:{mail.pw_uid}:{mail.pw_gid}::{self.home(a)}::userdb_quota_rule=*:storage=100M\n"
            for a, h in self.users.items()))
        (self.root / "etc" / "dovecot.conf").write_text(f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {self.root}/dovecot.log
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {self.root}/etc/users
}}
userdb {{
  driver = passwd-file
  args = {self.root}/etc/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
""")
        subprocess.run(["dovecot", "-c", str(self.root / "etc" / "dovecot.conf")], check=True)
        from netns import wait_until
        import socket

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=1).close()
                return True
            except OSError:
                return False
        assert wait_until(up, timeout=20), (self.root / "dovecot.log").read_text() if (self.root / "dovecot.log").exists() else ""
        return self

    def stop(self):
        subprocess.run(["doveadm", "-c", str(self.root / "etc" / "dovecot.conf"), "stop"], capture_output=True, timeout=30)


def imap_view(host_port, user, password, sep_to="/"):
    """Everything an IMAP client sees of an account: {folder: (UIDVALIDITY, UIDNEXT,
    {uid: (flags, internaldate, body)})} and the subscriptions; folder names with `sep_to` as
    the hierarchy separator."""
    import imaplib
    import re
    m = imaplib.IMAP4(*host_port, timeout=30)
    m.login(user, password)

    def names(kind):
        typ, data = getattr(m, kind)('""', '"*"')
        assert typ == "OK", data
        out = []
        for line in data:
            if line is None:
                continue
            if isinstance(line, tuple):  # a literal name
                line = line[0] + line[1]
            line = line.decode()
            mm = re.match(r'\((?P<attrs>[^)]*)\) (?:"(?P<sep>.)"|NIL) (?P<name>.*)$', line)
            assert mm, line
            name = mm.group("name").strip('"')
            sep = mm.group("sep")
            if "\\Noselect" in mm.group("attrs") or "\\NonExistent" in mm.group("attrs"):
                continue
            out.append((name, name.replace(sep, sep_to) if sep else name))
        return out
    folders = {}
    for raw, name in names("list"):
        typ, _ = m.select(f'"{raw}"', readonly=True)
        assert typ == "OK", raw
        status = m.status(f'"{raw}"', "(UIDVALIDITY UIDNEXT)")[1][0].decode()
        validity = int(re.search(r"UIDVALIDITY (\d+)", status).group(1))
        uidnext = int(re.search(r"UIDNEXT (\d+)", status).group(1))
        messages = {}
        typ, data = m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        for item in data:
            if not isinstance(item, tuple):
                continue
            head = item[0].decode()
            uid = int(re.search(r"UID (\d+)", head).group(1))
            flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()) - {"\\Recent"}
            date = re.search(r'INTERNALDATE "([^"]+)"', head).group(1)
            messages[uid] = (flags, imaplib.Internaldate2tuple(f'INTERNALDATE "{date}"'.encode()), item[1])
        folders[name] = (validity, uidnext, messages)
    subscribed = {n for _, n in names("lsub")}
    m.logout()
    return folders, subscribed


def test_dovecot_maildir_comes_over_as_the_client_saw_it(make_wispd, tmp_path):
    """A real Dovecot fills a Maildir++ by LMTP delivery and IMAP actions (folders with
    non-ASCII names and a hierarchy, flags, keywords, an expunge that leaves a UID gap, an
    APPEND with its own date, subscriptions) and holds Sieve scripts; `wispd import dovecot`
    into a stopped wispd brings it over; an IMAP client then sees on wispd the same folders,
    UIDVALIDITY, UIDNEXT, UIDs, flags, internal dates and bodies byte for byte, and the same
    subscriptions; the users log in with their old passwords; the active script is the one
    `.dovecot.sieve` named. A second run, now through the running server, has nothing to do;
    after one more delivery to Dovecot, a third brings just that message, with its UID."""
    import imaplib
    import os
    import shutil
    import smtplib
    from mailutil import mail_config, ports
    for tool in ("dovecot", "doveadm"):
        assert shutil.which(tool), f"{tool} (dovecot-core/-imapd/-lmtpd, installed by make deps-test) is missing"
    pw = {}
    for a, scheme in (("alice@example.com", "SHA512-CRYPT"), ("bob@example.org", "BLF-CRYPT")):
        pw[a] = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", f"pass-{a}"],
                               capture_output=True, text=True, check=True).stdout.strip()
    import tempfile
    # Dovecot's auth and mail processes run as other users: a directory they can reach (pytest's
    # own is 0700 root)
    scratch = Path(tempfile.mkdtemp(prefix="wispd-dovecot-"))
    scratch.chmod(0o755)
    dove = PrivateDovecot(scratch, pw).start()
    try:
        lmtp = smtplib.LMTP("127.0.0.1", dove.lmtp_port, timeout=30)
        for i in range(12):
            body = (f"From: sender{i}@remote.example\r\nTo: alice@example.com\r\nSubject: note {i}\r\n"
                    f"Message-ID: <n{i}@remote.example>\r\n\r\nline one of {i}\r\n\r\n.dot line\r\n" + "x" * (i * 500) + "\r\n")
            lmtp.sendmail("sender@remote.example", ["alice@example.com"], body)
        for i in range(3):
            lmtp.sendmail("sender@remote.example", ["bob@example.org"], f"Subject: bob {i}\r\n\r\nhello {i}\r\n")
        lmtp.quit()
        m = imaplib.IMAP4("127.0.0.1", dove.imap_port, timeout=30)
        m.login("alice@example.com", "pass-alice@example.com")
        for folder in ("Archive", "Archive.2024", "&AMk-t&AOk-", "&ZeVnLIqe-", "Sent"):
            assert m.create(f'"{folder}"')[0] == "OK", folder
        for folder in ("Archive.2024", "&AMk-t&AOk-", "Sent"):
            assert m.subscribe(f'"{folder}"')[0] == "OK"
        m.select("INBOX")
        m.store("1:5", "+FLAGS", "(\\Seen)")
        m.store("2", "+FLAGS", "(\\Flagged)")
        m.store("3", "+FLAGS", "(\\Answered)")
        m.store("4:5", "+FLAGS", "($Label1 Important)")
        m.store("6", "+FLAGS", "(\\Draft \\Deleted)")
        m.store("8", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.copy("1:3", '"Archive.2024"')
        m.append('"&AMk-t&AOk-"', "(\\Seen $Work)", imaplib.Time2Internaldate(1_600_000_000),
                 b"Subject: appended\r\nFrom: alice@example.com\r\n\r\nappended body\r\n")
        m.logout()
        home = dove.home("alice@example.com")
        (home / "sieve").mkdir()
        (home / "sieve" / "main.sieve").write_text('require "fileinto";\nif header :contains "Subject" "note 1" { fileinto "Archive"; }\n')
        (home / "sieve" / "spare.sieve").write_text('keep;\n')
        os.symlink("sieve/main.sieve", home / ".dovecot.sieve")
        subprocess.run(["chown", "-R", "--no-dereference", "mail:mail", str(home / "sieve"), str(home / ".dovecot.sieve")], check=True)
        before = {a: imap_view(("127.0.0.1", dove.imap_port), a, f"pass-{a}") for a in pw}
        assert "Archive/2024" in before["alice@example.com"][0] and "&AMk-t&AOk-" in before["alice@example.com"][0]
        assert 8 not in before["alice@example.com"][0]["INBOX"][2], "the expunge leaves a UID gap"
        dove.stop()

        # into a stopped wispd: its data dir, no server running
        w = make_wispd(config=mail_config(), start=False)
        etc = dove.root / "etc"
        run = lambda *extra: subprocess.run([WISPD_BIN, "import", "dovecot", "--from", str(etc), "--config", str(w.config_path),  # noqa: E731
                                             "--data-dir", str(w.data_dir), "--json", "--batch-messages", "3", *extra],
                                             capture_output=True, text=True, timeout=300)
        dry = run("--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert not w.data_dir.exists(), "a dry run makes no data dir"
        assert "mailbox alice@example.com INBOX: 10 message(s)" in json.loads(dry.stdout)["changed"], dry.stdout
        out = run()
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert not report["skipped"], report
        assert any("mailbox alice@example.com INBOX: 10 message(s) (UIDs kept)" in c for c in report["changed"]), report
        w.start()
        assert w.request("POST", "/api/v1/email/install").status == 200
        _, imap, _ = ports(w)
        for a in pw:
            folders, subs = imap_view(("127.0.0.1", imap), a, f"pass-{a}")
            want, want_subs = before[a]
            for name, (validity, uidnext, messages) in want.items():
                assert name in folders, (a, name, list(folders))
                got = folders[name]
                assert (got[0], got[1]) == (validity, uidnext), (a, name)
                assert got[2].keys() == messages.keys(), (a, name)
                for uid, (flags, date, body) in messages.items():
                    assert got[2][uid][0] == flags, (a, name, uid)
                    assert got[2][uid][1] == date, (a, name, uid)
                    assert got[2][uid][2] == body, (a, name, uid)
            assert want_subs <= subs, (a, want_subs, subs)
        filters = w.request("GET", "/api/v1/email/filters/example.com/alice").json["data"]
        assert {s["name"]: s["active"] for s in filters["scripts"]} == {"main": True, "spare": False}, filters

        # again, through the running server: nothing to do
        again = run()
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["changed"] == [], again.stdout
        dry = run("--dry-run")
        assert dry.returncode == 0 and json.loads(dry.stdout)["changed"] == [], dry.stdout

        # one more delivery to Dovecot, then the import brings just that one, with its UID
        dove.start()
        lmtp = smtplib.LMTP("127.0.0.1", dove.lmtp_port, timeout=30)
        lmtp.sendmail("sender@remote.example", ["alice@example.com"], "Subject: late\r\n\r\nlate\r\n")
        lmtp.quit()
        late = imap_view(("127.0.0.1", dove.imap_port), "alice@example.com", "pass-alice@example.com")[0]["INBOX"]
        dove.stop()
        dry = run("--dry-run")
        assert json.loads(dry.stdout)["changed"] == ["mailbox alice@example.com INBOX: 1 message(s) (UIDs kept)"], dry.stdout
        third = run()
        assert third.returncode == 0, third.stderr
        changed = json.loads(third.stdout)["changed"]
        assert changed == ["mailbox alice@example.com INBOX: 1 message(s) (UIDs kept)"], changed
        now = imap_view(("127.0.0.1", imap), "alice@example.com", "pass-alice@example.com")[0]["INBOX"]
        assert (now[0], now[1]) == (late[0], late[1]) and now[2].keys() == late[2].keys()
    finally:
        dove.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_mailbox_import_endpoint_under_bad_input(make_wispd):
    """`POST /email/accounts/{id}/mailboxes/import` takes large bodies from an admin token only
    (everyone else is held to the 1 MiB every endpoint has, before anything is read); bad
    base64, UID 0, overflowing numbers, a non-flag, a bad name and a missing account get the
    envelope with the field named; a 3 MiB message comes over whole."""
    import base64
    import random
    from conftest import assert_envelope
    from mailutil import mail_config
    w = make_wispd(config=mail_config())
    assert w.request("POST", "/api/v1/email/install").status == 200
    acct = w.request("POST", "/api/v1/email/accounts",
                     body={"domain": "example.com", "username": "imp", "password": "a-long-password-1"}).json
    aid = (acct.get("data") or acct)["id"]
    user = w.request("POST", "/api/v1/tokens", body={"name": "panel", "role": "user", "domains": ["example.com"]}).json
    user_token = (user.get("data") or user)["token"]
    path = f"/api/v1/email/accounts/{aid}/mailboxes/import"
    big = b"Subject: big\r\n\r\n" + base64.b64encode(random.randbytes(2_300_000)).replace(b"=", b"") + b"\r\n"
    body = {"mailbox": "Old", "uidvalidity": 99, "uidnext": 5,
            "messages": [{"uid": 4, "flags": ["\\Seen", "Work"], "internal_date": 1_600_000_000,
                          "data": base64.b64encode(big).decode()}]}
    for token in (None, user_token):
        assert_envelope(w.request("POST", path, body=body, token=token), 413, "PAYLOAD_TOO_LARGE")
    small = {"mailbox": "Old", "messages": []}
    assert_envelope(w.request("POST", path, body=small, token=user_token), 403, "FORBIDDEN")
    assert_envelope(w.request("POST", path, body=small, token=None), 401, "UNAUTHORIZED")
    r = w.request("POST", path, body=body)
    assert r.status == 200, r
    assert r.json["data"] == {"mailbox": "Old", "created": True, "uids_kept": True, "uidvalidity": 99,
                              "imported": 1, "already": 0, "renumbered": 0}
    listed = w.request("GET", f"/api/v1/email/accounts/{aid}/messages?raw=true").json["data"]
    got = [m for m in listed if m["mailbox"] == "Old"]
    assert [(m["uid"], m["size"], set(m["flags"])) for m in got] == [(4, len(big), {"\\Seen", "Work"})]
    assert w.request("POST", path, body=body).json["data"]["already"] == 1, "a rerun imports nothing"
    one = lambda **m: {"mailbox": "Old", "messages": [{"uid": 9, "internal_date": 0, "data": "eA==", **m}]}  # noqa: E731
    for bad, field in ((one(data="not base64!"), "messages[0].data"),
                       (one(uid=4294967296), "messages[0].uid"),
                       (one(uid=-1), "messages[0].uid"),
                       (one(internal_date=2 ** 63), "messages[0].internal_date"),
                       ({"mailbox": "Old", "uidvalidity": 2 ** 32}, "uidvalidity")):
        r = w.request("POST", path, body=bad)
        assert_envelope(r, 400, "VALIDATION_ERROR")
        assert field in r.json["message"], (field, r.json)
    for bad, words in ((one(uid=0), "UIDs start at 1"),
                       (one(flags=["two words"]), "not an IMAP flag"),
                       (one(flags=["\\"]), "not an IMAP flag"),
                       (one(uid=0xff000000), "below"),
                       ({"mailbox": "a//b"}, "Invalid mailbox name"),
                       ({"mailbox": "Old", "uidnext": 0xffffffff}, "below"),
                       ({"mailbox": "Old", "special_use": "\\Sent\r\n* BYE"}, "special_use"),
                       ({"mailbox": "Old", "messages": [{"uid": 9, "internal_date": 0, "data": "eA=="}] * 2}, "given twice")):
        r = w.request("POST", path, body=bad)
        assert_envelope(r, 400, "VALIDATION_ERROR")
        assert words in r.json["message"], (words, r.json)
    assert_envelope(w.request("POST", "/api/v1/email/accounts/999/mailboxes/import", body=small), 404, "NOT_FOUND")
    # the larger limit is the import's alone
    assert_envelope(w.request("POST", "/api/v1/email/accounts", body={"domain": "x" * 2_000_000}), 413, "PAYLOAD_TOO_LARGE")


def test_a_users_maildir_cannot_make_the_import_read_other_files(tmp_path):
    """The import runs as root over a tree its user controls: a message file that is a link to a
    secret, a folder that is a link to another user's Maildir, a FIFO, a linked Sieve script
    are each skipped with the reason, and nothing of what they point at reaches the store;
    the rest comes over (a folder without a uidlist is numbered from 1)."""
    users = tmp_path / "etc"
    users.mkdir()
    home = tmp_path / "home" / "eve"
    other = tmp_path / "home" / "victim" / "Maildir"
    secret = tmp_path / "secret.txt"
    secret.write_text("Subject: root's secret\n\nTOP-SECRET-CONTENT\n")
    secret.chmod(0o600)
    for d in (home / "Maildir" / "cur", home / "Maildir" / "new", other / "cur", home / "sieve"):
        d.mkdir(parents=True)
    (other / "cur" / "1.M1.victim:2,S").write_text("Subject: victim's\n\nVICTIM-CONTENT\n")
    (home / "Maildir" / "cur" / "100.M1.host:2,S").write_text("Subject: mine\n\nmy own\n")
    os_ = __import__("os")
    os_.symlink(secret, home / "Maildir" / "cur" / "101.M2.host:2,S")
    os_.mkfifo(home / "Maildir" / "new" / "102.M3.host")
    os_.symlink(other, home / "Maildir" / ".Stolen")
    os_.symlink(secret, home / "sieve" / "leak.sieve")
    (home / "sieve" / "ok.sieve").write_text("keep;\n")
    # names: UTF-8 (a byte slice at 5 would cut é), a control character, a level left empty, and
    # two spellings of one mailbox
    for name in (".abcdé", ".bad\nname", ".a..b", ".Team", ".Team."):
        (home / "Maildir" / name / "cur").mkdir(parents=True)
    # a hard link to root's file (what a directory swapped for a link after the scan also
    # reaches): in a tree the mail user owns, a file of anyone else is not read
    subprocess.run(["chown", "-R", "--no-dereference", "mail:mail", str(tmp_path / "home")], check=True)
    os_.link(secret, home / "Maildir" / "cur" / "103.M4.host:2,S")
    (users / "users").write_text(f"eve@example.com:{{PLAIN}}eve-password-1:1000:1000::{home}::\n")
    data = tmp_path / "data"
    out = subprocess.run([WISPD_BIN, "import", "dovecot", "--from", str(users), "--data-dir", str(data), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    text = json.dumps(report)
    assert "TOP-SECRET" not in text and "VICTIM" not in text
    reasons = {s["item"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
    assert "not a regular file" in reasons["101.M2.host:2,S"], reasons
    assert "not a regular file" in reasons["102.M3.host"], reasons
    assert "owned by uid 0, not the mail's owner" in reasons["103.M4.host:2,S"], reasons
    assert "Invalid mailbox name" in reasons[".bad\nname"] and "Invalid mailbox name" in reasons[".a..b"], reasons
    assert "the same mailbox as" in reasons[".Team."], reasons
    assert "mailbox eve@example.com abcdé: created (empty)" in report["changed"], report
    assert "mailbox eve@example.com INBOX: 1 message(s) (new UIDVALIDITY)" in report["changed"], report
    assert not any("Stolen" in c for c in report["changed"]), report
    assert "sieve script eve@example.com ok" in report["changed"] and not any("leak" in c for c in report["changed"])
    listed = subprocess.run([WISPD_BIN, "messages", "eve@example.com", "--raw", "--json", "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    msgs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(m["mailbox"], m["uid"]) for m in msgs] == [("INBOX", 1)], msgs
    assert "my own" in msgs[0]["raw"] and "TOP-SECRET" not in listed.stdout and "VICTIM" not in listed.stdout


def test_an_import_into_a_running_server_waits_out_the_rate_limit(make_wispd, tmp_path):
    """Each batch is a request on the admin token: at `[api] rate_limit_per_minute = 60`, 70
    one-message batches meet the limit, and the import waits for as long as the 429's
    Retry-After says instead of giving up; every message arrives once."""
    users = tmp_path / "etc"
    users.mkdir()
    home = tmp_path / "home" / "rl"
    (home / "Maildir" / "cur").mkdir(parents=True)
    (home / "Maildir" / "dovecot-uidlist").write_text(
        "3 V1700000000 N71\n" + "".join(f"{i} :{i}.M{i}.host\n" for i in range(1, 71)))
    for i in range(1, 71):
        (home / "Maildir" / "cur" / f"{i}.M{i}.host:2,S").write_text(f"Subject: {i}\n\nbody {i}\n")
    (users / "users").write_text(f"rl@example.com:{{PLAIN}}rl-password-1:1000:1000::{home}::\n")
    w = make_wispd(rate=60)
    out = subprocess.run([WISPD_BIN, "import", "dovecot", "--from", str(users), "--data-dir", str(w.data_dir),
                          "--json", "--batch-messages", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "mailbox rl@example.com INBOX: 70 message(s) (UIDs kept)" in report["changed"], report
    assert not report["skipped"], report
