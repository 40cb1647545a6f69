"""The runner's bulk legs of the data plane: one blob GET into a file, one file PUT.

Why not the runner's httpx.AsyncClient (docs/performance.md, "Runner legs on raw
sockets"): httpx reads the socket 64 KiB at a time, each read an h11 event through anyio
and asyncio in Python, ~16,000 per GiB, and its upload of a file goes through an async
generator reading on the event loop; on this 2-core machine those legs ran at ~100 MB/s
while the client's leg to the same host ran at ~500 MB/s. Here one worker thread per
transfer speaks HTTP/1.1 (h11 frames the request head and parses the response head) and
moves the body itself: a GET `recv_into`s 4 MiB buffers that a second thread hashes and
writes (river_runner/blobwrite.py `FileSink`), a PUT reads the file into one reused 4 MiB
buffer and `sendall`s it (see `send_file_body` for why not `socket.sendfile`).

TLS is verified as the runner's httpx client verifies it (`httpx.create_ssl_context`).
Unlike httpx, no proxy from the environment is used: the runner connects to its host
directly (docs/design-decisions.md).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import h11
import httpx

from river_runner.blobwrite import FileSink

HEAD_READ = 64 * 1024
SEND_CHUNK = 4 * 1024 * 1024
ERROR_BODY_MAX = 64 * 1024  # an error answer is a short JSON message; read no more


class BulkHTTPError(Exception):
    """The host answered `status` (>= 400) with `text`."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


class Transfer:
    """One request on its own connection; `cancel()` (from any thread) cuts it off."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme, self.hostname = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.headers = headers
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._cancelled = threading.Event()
        self.conn = h11.Connection(h11.CLIENT)

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.hostname, self.port), timeout=self.timeout)
        if self.scheme == "https":
            sock = httpx.create_ssl_context().wrap_socket(sock, server_hostname=self.hostname)
        self.sock = sock
        if self._cancelled.is_set():  # cancelled while connecting
            self.cancel()
        return sock

    def cancel(self) -> None:
        self._cancelled.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def send_head(self, method: str, extra: dict[str, str]) -> None:
        assert self.sock is not None
        fields = [("Host", self.host_header), *self.headers.items(), *extra.items()]
        self.sock.sendall(
            self.conn.send(h11.Request(method=method, target=self.target, headers=fields))
        )

    def read_response(self) -> h11.Response:
        """The response head (h11 keeps what body bytes came with it)."""
        assert self.sock is not None
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(HEAD_READ))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the host closed the connection before answering")

    def buffered_body(self, limit: int) -> tuple[bytes, bool]:
        """Body bytes h11 already holds (no socket read); whether the body ended."""
        pieces: list[bytes] = []
        held = 0
        while True:
            event = self.conn.next_event()
            if isinstance(event, h11.Data):
                pieces.append(bytes(event.data))
                held += len(event.data)
                if held > limit:
                    return b"".join(pieces), False
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return b"".join(pieces), True
            else:
                return b"".join(pieces), False

    def answer_text(self) -> str:
        """The (short) body of the answer: an error message, or the upload's JSON."""
        assert self.sock is not None
        got, ended = self.buffered_body(ERROR_BODY_MAX)
        body = bytearray(got)
        with contextlib.suppress(OSError, h11.RemoteProtocolError):
            while not ended and len(body) < ERROR_BODY_MAX:
                self.conn.receive_data(self.sock.recv(HEAD_READ))
                more, ended = self.buffered_body(ERROR_BODY_MAX)
                body += more
        return body.decode(errors="replace")[:2000]


def content_length(response: h11.Response) -> int | None:
    for name, value in response.headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def get_to_file(
    transfer: Transfer, path: Path, counted: list[int] | None = None
) -> tuple[str, int]:
    """GET the transfer's URL into a new file at `path`: (BLAKE3, bytes). Raises
    BulkHTTPError for an error answer, ConnectionError for a body cut short."""
    sock = transfer.connect()
    try:
        transfer.send_head("GET", {})
        transfer.conn.send(h11.EndOfMessage())
        response = transfer.read_response()
        if response.status_code >= 400:
            raise BulkHTTPError(response.status_code, transfer.answer_text())
        size = content_length(response)
        if size is None:
            raise ConnectionError("the host sent the blob without a Content-Length")
        first, _ = transfer.buffered_body(size)
        sink = FileSink(path, size)
        try:
            got = sink.fill_from(first, sock, size, counted)
            if got < size:
                raise ConnectionError(f"the host sent {got} of {size} bytes, then closed")
            return sink.finish(), size
        finally:
            sink.abort()
    finally:
        transfer.close()


def send_file_body(sock: socket.socket, path: Path, size: int) -> None:
    """`size` bytes of the file, read into one reused 4 MiB buffer and sent whole. Not
    `socket.sendfile`: measured in the round trip, the Jupyter host took a sendfile'd
    GiB 2-4x slower than the same bytes sent in 4 MiB writes (docs/performance.md)."""
    buffer = bytearray(SEND_CHUNK)
    view = memoryview(buffer)
    left = size
    with open(path, "rb", buffering=0) as source:
        while left:
            got = source.readinto(view[: min(SEND_CHUNK, left)])
            if not got:
                raise OSError(f"the file ended {left} bytes early")
            sock.sendall(view[:got])
            left -= got


def put_file(transfer: Transfer, path: Path, extra: dict[str, str]) -> tuple[int, str]:
    """PUT the file at `path` as the body: (status, the answer's text)."""
    size = path.stat().st_size
    sock = transfer.connect()
    try:
        transfer.send_head("PUT", {**extra, "Content-Length": str(size)})
        sent_error: OSError | None = None
        try:
            send_file_body(sock, path, size)
        except OSError as exc:  # refused from the headers (a bound): the answer says why
            sent_error = exc
        try:
            response = transfer.read_response()
        except (OSError, h11.RemoteProtocolError):
            if sent_error is not None:
                raise sent_error from None
            raise
        return response.status_code, transfer.answer_text()
    finally:
        transfer.close()


def url_with(base: str, path: str, params: dict[str, str] | None = None) -> str:
    return f"{base}{path}" + (f"?{urlencode(params)}" if params else "")
