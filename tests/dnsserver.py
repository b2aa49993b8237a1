"""A tiny authoritative DNS server on loopback UDP for tests: answers TXT, MX and A from dicts
the test changes as it goes. A name with no records at all is NXDOMAIN; a name with records of
other types answers with none (NODATA)."""

import socket
import struct
import threading


def _name(data, off):
    labels = []
    while data[off]:
        n = data[off]
        labels.append(data[off + 1:off + 1 + n].decode().lower())
        off += 1 + n
    return ".".join(labels), off + 1


class DnsServer:
    def __init__(self, soa=False, port=0):
        """`soa`: negative answers carry an SOA (as real servers' do), so resolvers cache them
        (benches; tests change records as they go and want no negative caching). `port`: 53
        where a peer can only ask the system resolver (inside a namespace of its own)."""
        self.soa = soa
        self.txt = {}  # name -> [str]
        self.mx = {}  # name -> [(preference, host)]
        self.a = {}  # name -> [ipv4]
        self.ptr = {}  # name (x.x.x.x.in-addr.arpa) -> [host]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.queries = []
        # names ending with one of these get no answer at all (a DNS server timing out)
        self.silent = ()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _answer(self, data):
        (qid, flags, qd, _an, _ns, _ar) = struct.unpack("!6H", data[:12])
        name, off = _name(data, 12)
        qtype, qclass = struct.unpack("!2H", data[off:off + 4])
        question = data[12:off + 4]
        self.queries.append((name, qtype))
        if self.silent and name.endswith(tuple(self.silent)):
            return None
        known = name in self.txt or name in self.mx or name in self.a or name in self.ptr
        rdatas = []
        if qtype == 16:
            for value in self.txt.get(name, []):
                raw = value.encode()
                rdatas.append(b"".join(bytes([len(raw[i:i + 255])]) + raw[i:i + 255] for i in range(0, len(raw), 255)))
        elif qtype == 15:
            for pref, host in self.mx.get(name, []):
                labels = b"".join(bytes([len(x)]) + x.encode() for x in host.strip(".").split(".") if x)
                rdatas.append(struct.pack("!H", pref) + labels + b"\0")
        elif qtype == 12:
            for host in self.ptr.get(name, []):
                rdatas.append(b"".join(bytes([len(x)]) + x.encode() for x in host.strip(".").split(".") if x) + b"\0")
        elif qtype == 1:
            for ip in self.a.get(name, []):
                rdatas.append(socket.inet_aton(ip))
        rcode = 0 if known else 3
        answers = b""
        for rdata in rdatas:
            answers += b"\xc0\x0c" + struct.pack("!2HIH", qtype, 1, 60, len(rdata)) + rdata
        authority = b""
        if self.soa and not rdatas:
            labels = name.split(".")[-2:] if name.count(".") else [name]
            apex = b"".join(bytes([len(x)]) + x.encode() for x in labels if x) + b"\0"
            rdata = (b"\x02ns" + apex) + (b"\x04host" + apex) + struct.pack("!5I", 1, 3600, 600, 86400, 300)
            authority = apex + struct.pack("!2HIH", 6, 1, 300, len(rdata)) + rdata
        header = struct.pack("!6H", qid, 0x8400 | rcode | (flags & 0x0100), 1, len(rdatas),
                             1 if authority else 0, 0)
        return header + question + answers + authority

    def _serve(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(4096)
                answer = self._answer(data)
                if answer is not None:
                    self.sock.sendto(answer, addr)
            except OSError:
                return
            except Exception:  # a malformed query: no answer, like a real server might
                continue

    def close(self):
        self._stop = True
        self.sock.close()
