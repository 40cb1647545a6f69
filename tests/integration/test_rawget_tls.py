"""The raw-socket download over TLS (river_magics/rawget.py): verified like httpx verifies.

A real TLS server on loopback (the standard library's, with a self-signed certificate for
127.0.0.1 made here): a multi-MiB body arrives whole through the wrapped socket when the
certificate is trusted (SSL_CERT_FILE, which httpx's default context honours too), and the
download refuses an untrusted one with httpx's connection error.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from river_magics.core import UPLOAD_TIMEOUT
from river_magics.rawget import Download

BODY = os.urandom(6 * 1024 * 1024)


class Counted:
    total = 0

    def add(self, size: int) -> None:
        pass


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Blob(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        if self.headers.get("Authorization") != "token t0k":
            body = b'{"message": "log in first"}'
            self.send_response(403)
        else:
            body = BODY
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/river/api/data/ab", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _get(url: str, token: str) -> tuple[httpx.Response, memoryview]:
    with httpx.Client(headers={"Authorization": f"token {token}"}, verify=False) as http:
        request = http.build_request("GET", url)
    return Download(request, UPLOAD_TIMEOUT).run(Counted())


def test_a_trusted_certificate_brings_the_body_whole(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    response, body = _get(url, "t0k")
    assert response.status_code == 200
    assert body.tobytes() == BODY
    refused, empty = _get(url, "wrong")
    assert refused.status_code == 403 and len(empty) == 0
    assert refused.json() == {"message": "log in first"}


def test_an_untrusted_certificate_is_refused(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(url, "t0k")
