"""Fixtures that start the real wispd binary on loopback and talk to it with real clients."""

import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
import http.client
from pathlib import Path

import pytest

WISPD_BIN = os.environ.get(
    "WISPD_BIN", str(Path(__file__).resolve().parent.parent / "target" / "debug" / "wispd")
)

READY = re.compile(r"wispd ready api=(https?)://([0-9.]+):(\d+)")

BASE_CONFIG = """
hostname = "mail.test.example"
[api]
listen = "127.0.0.1:0"
rate_limit_per_minute = {rate}
[smtp]
listen = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
[imap]
listen = ["127.0.0.1:0"]
imaps = ["127.0.0.1:0"]
[pop3]
listen = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
[sieve]
listen = ["127.0.0.1:0"]
[firewall]
enabled = {firewall}
"""


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return f"<{self.status} {self.raw[:300]!r}>"


class Wispd:
    """One running wispd process with its own data dir and config."""

    def __init__(self, workdir: Path, config_text: str, extra_args=()):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_path = workdir / "wispd.toml"
        self.config_path.write_text(config_text)
        self.extra_args = list(extra_args)
        self.env = {}
        self.proc = None
        self.lines = []
        self.times = []  # perf_counter when each line of `lines` was read

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout=20):
        self.lines = []
        self.times = []
        self.proc = subprocess.Popen(
            [WISPD_BIN, "serve", "--config", str(self.config_path), "--data-dir", str(self.data_dir), *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), **self.env},
        )
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.times.append(time.perf_counter())
                self.lines.append(line)
                m = READY.search(line)
                if m:
                    self.scheme, self.host, self.port = m.group(1), m.group(2), int(m.group(3))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("wispd did not become ready:\n" + "".join(self.lines))
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends `sig` and returns (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - t0

    def log(self):
        return "".join(self.lines)

    # -- clients -------------------------------------------------------------------------------
    @property
    def admin_token(self):
        return (self.data_dir / "admin.token").read_text().strip()

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "cert.pem"))
        return ctx

    def connection(self, timeout=10):
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, context=self.ssl_context(), timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, token="admin", headers=None, raw=None, conn=None):
        """Sends one request. `token="admin"` uses the bootstrap token, None sends none."""
        hdrs = dict(headers or {})
        if token == "admin":
            token = self.admin_token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
        finally:
            if own:
                conn.close()


@pytest.fixture
def make_wispd(tmp_path):
    """Factory: make_wispd(rate=1000, config=None) -> started Wispd; all are stopped at teardown."""
    started = []

    def make(rate=1000, config=None, start=True, name="w", firewall=False):
        workdir = tmp_path / f"{name}{len(started)}"
        workdir.mkdir()
        # Outside a test network namespace the firewall must never touch the host's nftables.
        if config is not None and not firewall and "[firewall]" not in config:
            config += "\n[firewall]\nenabled = false\n"
        text = config if config is not None else BASE_CONFIG.format(rate=rate, firewall=str(firewall).lower())
        w = Wispd(workdir, text)
        started.append(w)
        return w.start() if start else w

    yield make
    for w in started:
        if w.proc and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


@pytest.fixture
def wispd(make_wispd):
    return make_wispd()


ENVELOPE_KEYS = {"success", "code", "error", "message", "status"}


def assert_envelope(resp, status, code, message=None):
    assert resp.status == status, resp
    assert resp.header("content-type", ) is not None and resp.header("content-type").startswith("application/json"), resp
    assert resp.json is not None, resp
    assert set(resp.json) == ENVELOPE_KEYS, resp.json
    assert resp.json["success"] is False
    assert resp.json["code"] == code, resp.json
    assert resp.json["status"] == status, resp.json
    assert resp.json["error"] == resp.json["message"], resp.json
    if message is not None:
        assert resp.json["message"] == message, resp.json
