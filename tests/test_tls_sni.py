"""Per-listener certificates and SNI on the mail listeners, against the real server: each
handshake gets the certificate of the name the client asks for (exact or `*.domain`), else the
listener's own (`[imap] tls_cert`), else the API's (self-signed here). Certificates are made
with openssl; what the server presents is compared byte for byte."""

import smtplib
import socket
import ssl
import subprocess

import pytest

from mailutil import mail_config, ports, submission_ports
from test_pop3 import pop3s_port


def make_cert(d, name, cn):
    key, pem, der = d / f"{name}.key", d / f"{name}.pem", d / f"{name}.der"
    san = ",".join(f"DNS:{n}" for n in cn.split(","))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn.split(',')[0]}", "-addext",
                    f"subjectAltName={san}", "-keyout", str(key), "-out", str(pem)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "der", "-out", str(der)],
                   check=True, capture_output=True)
    return pem, key, der.read_bytes()


def presented(port, server_name, starttls=None):
    """The DER certificate the server presents to a client asking for `server_name`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if starttls == "imap":
        # by hand: imaplib would send its host as SNI
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"a STARTTLS\r\n")
            assert f.readline().startswith(b"a OK")
            with ctx.wrap_socket(s, server_hostname=server_name) as t:
                return t.getpeercert(binary_form=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=server_name) as t:
            return t.getpeercert(binary_form=True)


@pytest.fixture
def sni(make_wispd, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    a = make_cert(d, "a", "a.example,mail.a.example")
    wild = make_cert(d, "wild", "*.b.example")
    imap = make_cert(d, "imap", "imap-default.example")
    config = mail_config(imap={"tls_cert": str(imap[0]), "tls_key": str(imap[1])}) + f"""
[[tls.certificates]]
names = ["a.example", "mail.a.example"]
cert = "{a[0]}"
key = "{a[1]}"

[[tls.certificates]]
names = ["*.b.example"]
cert = "{wild[0]}"
key = "{wild[1]}"
"""
    w = make_wispd(config=config)
    assert w.request("POST", "/api/v1/email/install").status == 200
    api_default = ssl.PEM_cert_to_DER_cert((w.data_dir / "tls" / "cert.pem").read_text())
    return w, {"a": a[2], "wild": wild[2], "imap": imap[2], "api": api_default}


def test_each_mail_listener_answers_sni_then_falls_back_to_its_own_certificate(sni):
    w, der = sni
    smtp, imap, imaps = ports(w)
    submission, submissions = submission_ports(w)
    pop3s = pop3s_port(w)
    assert presented(imaps, "a.example") == der["a"]
    assert presented(imaps, "MAIL.A.EXAMPLE") == der["a"]  # names are case-insensitive
    assert presented(imaps, "x.b.example") == der["wild"]
    assert presented(imaps, "y.x.b.example") == der["imap"]  # a wildcard covers one label
    assert presented(imaps, "b.example") == der["imap"]
    assert presented(imaps, "unknown.example") == der["imap"]
    assert presented(imaps, None) == der["imap"]  # no SNI: the listener's own
    assert presented(imap, "a.example", starttls="imap") == der["a"]
    assert presented(imap, None, starttls="imap") == der["imap"]
    # POP3S and submissions have no certificate of their own here: the API's is theirs
    assert presented(pop3s, "x.b.example") == der["wild"]
    assert presented(pop3s, "unknown.example") == der["api"]
    assert presented(submissions, "a.example") == der["a"]
    assert presented(submissions, None) == der["api"]
    # STARTTLS on submission: smtplib sends the host it connected to as SNI
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", submission, timeout=10) as c:
        c._host = "mail.a.example"
        c.starttls(context=ctx)
        assert c.sock.getpeercert(binary_form=True) == der["a"]


def test_bad_certificate_config_is_refused_at_start_naming_the_key(make_wispd, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    a = make_cert(d, "a", "a.example")
    b = make_cert(d, "b", "b.example")
    # a key that isn't the certificate's
    config = mail_config() + f"""
[[tls.certificates]]
names = ["a.example"]
cert = "{a[0]}"
key = "{b[1]}"
"""
    w = make_wispd(config=config, start=False)
    with pytest.raises(RuntimeError) as e:
        w.start(timeout=10)
    assert "tls" in str(e.value) and "do not form a usable pair" in str(e.value), e.value
    # the same name twice, a bad name, a missing key: all reported at once
    config = mail_config(imap={"tls_cert": str(a[0])}) + f"""
[[tls.certificates]]
names = ["a.example", "bad name"]
cert = "{a[0]}"
key = "{a[1]}"
[[tls.certificates]]
names = ["A.example"]
cert = "{b[0]}"
key = "{b[1]}"
"""
    w = make_wispd(config=config, start=False)
    with pytest.raises(RuntimeError) as e:
        w.start(timeout=10)
    text = str(e.value)
    assert "`imap.tls_key`: required when `imap.tls_cert` is set" in text, text
    assert "\"bad name\" is not a host name" in text, text
    assert "\"a.example\" is already served by another certificate" in text, text
