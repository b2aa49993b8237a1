"""The admin commands against a running server: `wispd status`, `queue`, `ban`, `messages`,
with text for people and `--json` for scripts, through the API with DATA_DIR/admin.token."""

import json
import smtplib
import subprocess

from conftest import assert_envelope, WISPD_BIN
from mailutil import account, installed, message


def wispd_cmd(w, *args, check=True):
    out = subprocess.run([WISPD_BIN, *args, "--config", str(w.config_path), "--data-dir", str(w.data_dir)],
                         capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_admin_commands_talk_to_the_running_server(make_wispd):
    w, smtp = installed(make_wispd)
    account(w, "info")
    with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as c:
        c.sendmail("a@remote.example", ["info@example.com"], message("via the cli", msgid="cli-1@remote.example"))

    status = json.loads(wispd_cmd(w, "status", "--json").stdout)
    assert status["email"]["installed"] is True and status["queue"]["messages"] == 0
    text = wispd_cmd(w, "status").stdout
    assert "mail stack installed: yes" in text and "outbound queue:       0 message(s)" in text

    assert wispd_cmd(w, "queue").stdout.strip() == "the outbound queue is empty"
    assert wispd_cmd(w, "queue", "--json").stdout == ""

    banned = json.loads(wispd_cmd(w, "ban", "192.0.2.7", "--ttl", "600", "--json").stdout)
    assert banned["data"]["ip"] == "192.0.2.7" and banned["data"]["ttl"] == 600
    assert wispd_cmd(w, "ban", "198.51.100.0/24").stdout.strip() == "banned 198.51.100.0/24 permanently"
    listed = w.request("GET", "/api/v1/csf/blacklist").json["data"]
    assert {e["ip"] for e in listed} == {"192.0.2.7", "198.51.100.0/24"}
    refused = wispd_cmd(w, "ban", "0.0.0.0/1", check=False)
    assert refused.returncode == 1 and "wispd answered 400" in refused.stderr, refused.stderr

    # messages: through the API while the server holds the store
    lines = wispd_cmd(w, "messages", "info@example.com", "--json").stdout.splitlines()
    assert [json.loads(x)["subject"] for x in lines] == ["via the cli"]
    assert "INBOX/1" in wispd_cmd(w, "messages", "info@example.com").stdout
    lines = wispd_cmd(w, "messages", "info@example.com", "--json", "--raw").stdout.splitlines()
    assert "Message-ID: <cli-1@remote.example>" in json.loads(lines[0])["raw"]
    bad = w.request("GET", "/api/v1/email/accounts/1/messages?raw=maybe")
    assert_envelope(bad, 400, "VALIDATION_ERROR")

    # a stopped server: the admin commands say so, messages reads the store
    assert w.stop()[0] == 0
    gone = wispd_cmd(w, "status", check=False)
    assert gone.returncode == 1 and "no running wispd" in gone.stderr, gone.stderr
    lines = wispd_cmd(w, "messages", "info@example.com", "--json", "--raw").stdout.splitlines()
    assert "Message-ID: <cli-1@remote.example>" in json.loads(lines[0])["raw"]


def test_help_describes_every_command():
    top = subprocess.run([WISPD_BIN, "--help"], capture_output=True, text=True).stdout
    for cmd in ("serve", "status", "queue", "ban", "messages", "check-config"):
        assert cmd in top, top
    ban = subprocess.run([WISPD_BIN, "ban", "--help"], capture_output=True, text=True).stdout
    assert "--ttl <S>" in ban and "--force" in ban and "--json" in ban and "--data-dir <DIR>" in ban
