"""A receiving SMTP server for queue tests (aiosmtpd), run as its own process so it can live in
another network namespace and be stopped and started like a real destination. Every accepted
message is written to --dir as <n>.json: envelope, data, whether the session used TLS."""

import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, directory, reject, defer):
        self.directory, self.reject, self.defer = directory, reject, defer
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if any(r in address for r in self.reject):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if any(d in address for d in self.defer):
            return "451 4.3.0 <%s>: Temporary lookup failure" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("latin-1"),
            "tls": session.ssl is not None,
            "helo": session.host_name,
            "peer": session.peer[0],
            "session": "%s:%s" % tuple(session.peer[:2]),  # one per connection
        }
        tmp = os.path.join(self.directory, f".{self.n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.directory, f"{self.n:04}.json"))
        return "250 2.0.0 Ok: queued as R%d" % self.n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--defer", action="append", default=[])
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    kwargs = {}
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*a.tls)
        kwargs = {"tls_context": ctx, "require_starttls": False}
    handler = Handler(a.dir, a.reject, a.defer)
    c = Controller(handler, hostname=host, port=int(port), server_hostname="dest.test", **kwargs)
    c.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin or kills us
    finally:
        c.stop()


if __name__ == "__main__":
    main()
