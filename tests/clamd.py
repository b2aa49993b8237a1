"""A private clamd (Debian's clamav-daemon) for tests: its own config and database directory in a
temp dir, a unix socket there (or a loopback TCP port), in the foreground in its own process
group, with one test signature for the EICAR test string (`Wispd.Test.EICAR`, an `.ndb` line) --
no freshclam, no network, nothing of the system's clamd but its binary."""

import os
import shutil
import signal
import socket
import subprocess
import time

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Wispd.Test.EICAR.UNOFFICIAL"  # clamd names signatures outside its own databases so


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clamd:
    def __init__(self, workdir, tcp=False, stream_max="10M", timeout=60):
        binary = shutil.which("clamd") or "/usr/sbin/clamd"
        assert os.path.exists(binary), "clamd is not installed (make deps-test installs clamav-daemon)"
        self.dir = str(workdir)
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        with open(os.path.join(self.dir, "db", "wispd-test.ndb"), "w") as f:
            f.write("Wispd.Test.EICAR:0:*:" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex() + "\n")
        lines = [
            "Foreground yes",
            f"DatabaseDirectory {self.dir}/db",
            f"LogFile {self.dir}/clamd.log",
            f"PidFile {self.dir}/clamd.pid",
            f"StreamMaxLength {stream_max}",
            "MaxThreads 4",
        ]
        if tcp:
            self.port = free_port()
            self.socket = f"127.0.0.1:{self.port}"
            lines += ["TCPSocket %d" % self.port, "TCPAddr 127.0.0.1"]
        else:
            self.socket = os.path.join(self.dir, "clamd.sock")
            lines.append(f"LocalSocket {self.socket}")
        if os.geteuid() == 0:
            lines.append("User root")
        conf = os.path.join(self.dir, "clamd.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while self.command(b"zPING\0") != b"PONG":
            if self.proc.poll() is not None or time.time() > deadline:
                log = self.log()
                self.close()
                raise RuntimeError(f"clamd did not start:\n{log[-3000:]}")
            time.sleep(0.2)

    def connect(self):
        if self.socket.startswith("/"):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(self.socket)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s

    def command(self, cmd):
        try:
            with self.connect() as s:
                s.sendall(cmd)
                return s.recv(4096).rstrip(b"\0")
        except OSError:
            return None

    def log(self):
        try:
            with open(os.path.join(self.dir, "clamd.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
