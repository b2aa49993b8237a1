"""Network namespaces for firewall tests: a server namespace (where wispd and the test process
run) and a client namespace joined by a veth pair. The host namespace is never modified."""

import ctypes
import os
import subprocess
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*args, check=True, ns=None, timeout=30):
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class Pair:
    """srv <-> cli over veth; 10.231.<n>.1/.2 and fd00:231:<n>::1/::2."""

    def __init__(self, n):
        self.n = n
        self.srv = f"wsp-srv{n}"
        self.cli = f"wsp-cli{n}"
        self.srv4, self.cli4 = f"10.231.{n}.1", f"10.231.{n}.2"
        self.srv6, self.cli6 = f"fd00:231:{n}::1", f"fd00:231:{n}::2"
        self._home = None

    def create(self):
        for ns in (self.srv, self.cli):
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", ns=self.srv)
        sh("ip", "link", "set", "veth1", "netns", self.cli, ns=self.srv)
        for ns, dev, a4, a6 in ((self.srv, "veth0", self.srv4, self.srv6), (self.cli, "veth1", self.cli4, self.cli6)):
            sh("ip", "addr", "add", f"{a4}/24", "dev", dev, ns=ns)
            sh("ip", "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad", ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        return self

    def enter(self):
        """Moves this (main) thread into the server namespace; children inherit it."""
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        _setns(f"/run/netns/{self.srv}")

    def leave(self):
        if self._home is not None:
            if _libc.setns(self._home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
            os.close(self._home)
            self._home = None

    def destroy(self):
        for ns in (self.srv, self.cli):
            sh("ip", "netns", "del", ns, check=False)

    def can_connect(self, port, v6=False, timeout=1.0):
        """A real TCP connection from the client namespace to the server."""
        host = self.srv6 if v6 else self.srv4
        code = (
            "import socket,sys\n"
            f"s=socket.socket(socket.AF_INET6 if {v6} else socket.AF_INET)\n"
            f"s.settimeout({timeout})\n"
            f"try:\n s.connect(('{host}',{port})); s.sendall(b'ping'); print('ok')\n"
            "except Exception as e: print('fail', e)\n"
        )
        r = sh("python3", "-c", code, ns=self.cli, check=False)
        return r.stdout.startswith("ok")


def nft(*args):
    """nft in the current (server) namespace."""
    return sh("nft", *args, check=False)


def wait_until(pred, timeout=10.0, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
