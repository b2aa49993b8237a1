"""The incumbents the mail benchmarks compare against, set up privately on loopback high ports:
a Postfix instance (own config and queue directories) and a Dovecot instance (own base dir,
Maildir under a scratch directory). Nothing under /etc is changed and no system service is used.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_source(port, n, sessions, size, to, sender="sender@remote.example"):
    """Postfix's smtp-source: n messages of size bytes over sessions connections (-d: one
    session sends many); returns the seconds it took."""
    t = time.monotonic()
    r = subprocess.run(["smtp-source", "-d", "-s", str(sessions), "-m", str(n), "-l", str(size),
                        "-f", sender, "-t", to, f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source: {r.stderr[:500]}")
    return time.monotonic() - t


def smtp_sources(port, jobs, sender="sender@remote.example", timeout=3600, helo=None):
    """Several smtp-source processes at once, one per job `(to, count, message_file)`, each one
    session sending `count` pre-formatted messages (`-F`: the file is the whole message, header
    and body, LF line ends); returns the seconds until the last one finished."""
    t = time.monotonic()
    named = ["-M", helo] if helo else []
    procs = [subprocess.Popen(["smtp-source", "-d", "-s", "1", "-m", str(count), "-F", str(message_file),
                               *named, "-f", sender, "-t", to, f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for to, count, message_file in jobs if count]
    try:
        errors = []
        for p in procs:
            _, err = p.communicate(timeout=max(1, timeout - (time.monotonic() - t)))
            if p.returncode != 0:
                errors.append(err[:300])
        if errors:
            raise RuntimeError(f"smtp-source: {len(errors)} of {len(procs)} failed: {errors[0]}")
        return time.monotonic() - t
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Dovecot:
    """Dovecot with LMTP (and IMAP or POP3 for their benches) over Maildir, static users, password
    'password123'."""

    def __init__(self, work: Path, imap=False, passdb_hash=None, sieve=None, pop3=False):
        """`passdb_hash`: a `{SCHEME}hash` every user's password must match (a passwd-file);
        without it a static passdb accepts 'password123'. `sieve`: {"user@domain": script} turns
        on Pigeonhole (Debian package dovecot-sieve) for LMTP, each user filtered by their script
        (users not named get no filtering)."""
        self.passdb_hash = passdb_hash
        self.sieve = sieve
        self.dir = work / "dovecot"
        self.mail = self.dir / "mail"
        self.lmtp_port = free_port()
        self.imap_port = free_port() if imap else None
        self.imap = imap
        self.pop3_port = free_port() if pop3 else None

    def start(self):
        for d in ("run", "state", "mail"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.mail, "mail", "mail")
        listeners = f"""
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}""" if self.imap else ""
        if self.pop3_port:
            listeners += f"""
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service pop3 {{
  process_limit = 100
}}
pop3_uidl_format = %08Xu%08Xv"""
        protocols = "lmtp" + (" imap" if self.imap else "") + (" pop3" if self.pop3_port else "")
        if self.passdb_hash:
            users = self.dir / "users"
            users.write_text("".join(f"{u}@example.com:{self.passdb_hash}\n" for u in ("bench", "info")) +
                             "".join(f"bench{i}@example.com:{self.passdb_hash}\n" for i in range(100)))
            passdb = f"passdb {{\n  driver = passwd-file\n  args = {users}\n}}"
        else:
            passdb = "passdb {\n  driver = static\n  args = password=password123\n}"
        conf = f"""
base_dir = {self.dir}/run
state_dir = {self.dir}/state
protocols = {protocols}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_mechanisms = plain login
log_path = {self.dir}/dovecot.log
mail_location = maildir:{self.mail}/%d/%n
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
{passdb}
userdb {{
  driver = static
  args = uid=mail gid=mail home={self.mail}/%d/%n
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
service imap {{
  process_limit = 100
}}
{listeners}
"""
        if self.sieve:
            if not Path("/usr/lib/dovecot/modules/lib90_sieve_plugin.so").exists():
                raise RuntimeError("Pigeonhole is missing: apt-get install dovecot-sieve")
            scripts = self.dir / "sieve"
            for address, script in self.sieve.items():
                user, domain = address.split("@")
                (scripts / domain).mkdir(parents=True, exist_ok=True)
                (scripts / domain / f"{user}.sieve").write_text(script)
            for d in (scripts, *scripts.iterdir()):  # writable: Pigeonhole caches the compiled .svbin
                shutil.chown(d, "mail", "mail")
            conf += f"""
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:{scripts}/%d/%n.sieve
}}
"""
        (self.dir / "dovecot.conf").write_text(conf)
        subprocess.run(["dovecot", "-c", str(self.dir / "dovecot.conf")], check=True)
        wait_port(self.lmtp_port)
        if self.imap:
            wait_port(self.imap_port)
        if self.pop3_port:
            wait_port(self.pop3_port)
        return self

    def delivered(self, domain, user, folder="INBOX"):
        """Messages in one folder (Maildir++: INBOX is the root, folder X is `.X`)."""
        root = self.mail / domain / user
        if folder != "INBOX":
            root = root / ("." + folder.replace("/", "."))
        return sum(len(os.listdir(d)) for d in (root / "new", root / "cur") if d.exists())

    def folders(self, domain, user):
        """{folder: messages} over every folder of the user that exists (INBOX always)."""
        root = self.mail / domain / user
        names = ["INBOX"]
        if root.exists():
            names += sorted(e.name[1:] for e in os.scandir(root) if e.is_dir() and e.name.startswith(".")
                            and (root / e.name / "cur").exists())
        return {f: self.delivered(domain, user, f) for f in names}

    def stop(self):
        subprocess.run(["doveadm", "-c", str(self.dir / "dovecot.conf"), "stop"], capture_output=True)


class Postfix:
    """A private Postfix instance: smtpd on a loopback high port, mail for `domain` handed to
    Dovecot over LMTP. With `checks`: the inbound-trust setup an operator runs today —
    postscreen in front (DNSBL `dnsbl` enforced, loopback not exempt), the SPF policy service
    (postfix-policyd-spf-python, HELO and MAIL FROM `Fail` refused) and the given milters
    (OpenDKIM verifying, OpenDMARC enforcing), all over the system resolver."""

    def __init__(self, work: Path, domain: str, lmtp_port: int, relayhost: str = "",
                 checks=False, dnsbl="", milters=(), name="postfix", extra=""):
        self.dir = work / name
        self.port = free_port()
        self.domain = domain
        self.lmtp_port = lmtp_port
        self.relayhost = relayhost  # "host:port": other domains go there (relay bench)
        self.checks, self.dnsbl, self.milters = checks, dnsbl, list(milters)
        self.extra = extra  # more main.cf (the list bench's virtual alias)

    def start(self):
        etc, spool, data = self.dir / "etc", self.dir / "spool", self.dir / "data"
        for d in (etc, spool, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix")
        main = f"""
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.example
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = {self.domain}
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}
lmtp_destination_concurrency_limit = 20
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
maillog_file_prefixes = {self.dir}
maillog_file = {self.dir}/maillog
message_size_limit = 52428800
"""
        if self.relayhost:
            host, port = self.relayhost.rsplit(":", 1)
            main += f"relayhost = [{host}]:{port}\ndefault_destination_concurrency_limit = 20\n"
        if self.checks:
            spf_conf = self.dir / "policyd-spf.conf"
            spf_conf.write_text(
                "debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n"
                "PermError_reject = False\nTempError_Defer = False\n"
                # the stock config skips loopback: here loopback is the Internet
                "skip_addresses = 192.0.2.1/32\n"
                "Header_Type = AR\nAuthserv_Id = postfix.bench.example\n")
            os.chmod(spf_conf, 0o644)
            main += (
                "postscreen_access_list =\n"  # loopback gets no pass: every test runs
                f"postscreen_dnsbl_sites = {self.dnsbl}\n"
                "postscreen_dnsbl_action = enforce\n"
                "postscreen_dnsbl_threshold = 1\n"
                "postscreen_greet_wait = 1s\n"
                "postscreen_cache_map = btree:$data_directory/postscreen_cache\n"
                "smtpd_recipient_restrictions = reject_unauth_destination, "
                "check_policy_service unix:private/policyd-spf\n"
                "policyd-spf_time_limit = 3600\n"
                f"smtpd_milters = {', '.join(self.milters)}\n"
                "non_smtpd_milters =\n"
                "milter_default_action = tempfail\n"
                "milter_protocol = 6\n")
        main += self.extra
        (etc / "main.cf").write_text(main)
        master = []
        for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
            parts = line.split()
            if parts and not line.startswith(("#", " ", "\t")) and len(parts) >= 8:
                if parts[0] == "smtp" and parts[1] == "inet":
                    parts[0] = f"127.0.0.1:{self.port}"
                    if self.checks:
                        parts[6:] = ["1", "postscreen"]
                parts[4] = "n"  # no chroot: the private queue lives outside /var/spool
                line = "  ".join(parts)
            master.append(line)
        master.append("postlog   unix-dgram n  -       n       -       1       postlogd")
        if self.checks:
            master += [
                "smtpd     pass  -       -       n       -       -       smtpd",
                "dnsblog   unix  -       -       n       -       0       dnsblog",
                "tlsproxy  unix  -       -       n       -       0       tlsproxy",
                "policyd-spf  unix  -    n       n       -       0       spawn",
                f"  user=policyd-spf argv=/usr/bin/policyd-spf {self.dir / 'policyd-spf.conf'}",
            ]
        (etc / "master.cf").write_text("\n".join(master) + "\n")
        subprocess.run(["postfix", "-c", str(etc), "set-permissions"], capture_output=True)
        r = subprocess.run(["postfix", "-c", str(etc), "start"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start: {r.stderr}")
        wait_port(self.port)
        return self

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.dir / "etc"), "stop"], capture_output=True)


class Milter:
    """A milter in the foreground on a loopback port, its config in a scratch directory."""

    def __init__(self, work: Path, name: str):
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.socket = f"inet:127.0.0.1:{self.port}"
        self.proc = None

    def run(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start: {self.proc.stderr.read()[:500]}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _not_loopback(path: Path):
    """A host list naming no loopback address (OpenDKIM's InternalHosts and OpenDMARC's
    IgnoreHosts default to 127.0.0.1, which would exempt the benchmark's client)."""
    path.write_text("192.0.2.1\n")
    os.chmod(path, 0o644)
    return path


class OpenDkim(Milter):
    """OpenDKIM verifying (Mode v), adding Authentication-Results, over `nameserver`."""

    def __init__(self, work: Path, nameserver="127.0.0.1"):
        super().__init__(work, "opendkim")
        self.nameserver = nameserver

    def start(self):
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            f"Mode v\nSocket inet:{self.port}@127.0.0.1\nSyslog no\nUserID opendkim\n"
            f"Nameservers {self.nameserver}\nAlwaysAddARHeader yes\n"
            "AuthservID postfix.bench.example\n"
            f"InternalHosts {_not_loopback(self.dir / 'internal')}\n")
        return self.run(["opendkim", "-f", "-x", str(conf)])


class OpenDmarc(Milter):
    """OpenDMARC enforcing `p=reject`, reading OpenDKIM's results and checking SPF itself."""

    def __init__(self, work: Path):
        super().__init__(work, "opendmarc")

    def start(self):
        conf = self.dir / "opendmarc.conf"
        conf.write_text(
            f"Socket inet:{self.port}@127.0.0.1\nSyslog false\nUserID opendmarc\n"
            "AuthservID postfix.bench.example\nTrustedAuthservIDs postfix.bench.example\n"
            "RejectFailures true\nSPFSelfValidate true\nFailureReports false\n"
            f"IgnoreHosts {_not_loopback(self.dir / 'ignore')}\n")
        return self.run(["opendmarc", "-f", "-c", str(conf)])
