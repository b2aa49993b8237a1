"""A private rspamd (Debian's) for tests: its own config in a temp dir, one normal worker on a
loopback port, no controller or proxy, DNS sent to the test's loopback server, rspamd's test
GTUBE patterns on (XJS… reject, YJS… add header, ZJS… rewrite subject, AJS… no action). It
runs in its own process group and is killed with it; nothing of the system's rspamd is used
but its stock rules."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

GTUBE_TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
REJECT = "X" + GTUBE_TAIL
ADD_HEADER = "Y" + GTUBE_TAIL
REWRITE_SUBJECT = "Z" + GTUBE_TAIL
NO_ACTION = "A" + GTUBE_TAIL

CONFIG = """\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    enable_test_patterns = true;
    dns {{ nameserver = ["127.0.0.1:{dns}"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "notice"; }}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rspamd:
    def __init__(self, workdir, dns_port, timeout=120):
        binary = shutil.which("rspamd")
        assert binary, "rspamd is not installed (make deps-test installs it)"
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = os.path.join(workdir, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(CONFIG.format(dns=dns_port, port=self.port))
        args = [binary, "-f", "-c", conf]
        if os.geteuid() == 0:
            args += ["-i", "-u", "root", "-g", "root"]
        for var in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"):
            args.append(f"--var={var}={workdir}")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                log = self.log()
                self.close()
                raise RuntimeError(f"rspamd did not start:\n{log[-3000:]}")
            time.sleep(0.5)

    def log(self):
        try:
            with open(os.path.join(self.dir, "rspamd.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
