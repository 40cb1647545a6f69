"""The client's download of a data-plane body (pulled values, `get` archives) at socket speed.

Why not httpx's `iter_raw` (docs/performance.md, "The client's download on a raw socket"):
httpcore reads 64 KiB `bytes` per recv, httpx joins them into chunks, and each chunk is
copied again into the result: three copies and ~16,000 Python-level steps per GiB. Here
the request is built by the client's own httpx client (`build_request`: the same token,
cookies and user agent), h11 frames its head and parses the answer's head, and the body is
`recv_into`'d straight into ONE buffer of the Content-Length's size: an anonymous mmap (its
pages are faulted in as the bytes land, not zeroed up front as a bytearray's are).

An error answer (>= 400) is read whole and returned as an `httpx.Response`, so callers'
error messages are the same as before. A KeyboardInterrupt (or `Download.cancel()` from
another thread: the async client's cancellation) closes the socket; nothing is left open.
TLS (`https://`) is verified with `httpx.create_ssl_context()`, as the client's httpx client
does by default. When the environment names a proxy for the host, `direct()` is False and
the client keeps its httpx path (a proxy's CONNECT and auth are httpx's job, not ours).
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import threading
import urllib.request
from typing import Protocol
from urllib.parse import urlsplit

import h11
import httpx

HEAD_READ = 64 * 1024
RECV_CHUNK = 4 * 1024 * 1024  # a progress update (and an interrupt check) per 4 MiB


class Progressed(Protocol):
    """What a download reports to (river_magics/progress.py `Progress`)."""

    total: int

    def add(self, size: int) -> None: ...


def direct(url: str) -> bool:
    """Whether `url` can be fetched on a plain socket: http(s), no proxy from the environment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return True
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(parts.hostname, proxies))


def body_buffer(size: int) -> memoryview:
    """A writable buffer of `size` bytes whose pages are not touched until written.

    Private anonymous memory (Python's default for `mmap(-1, ...)` is shared, i.e. shmem).
    No MADV_HUGEPAGE: measured on this VM it took a GiB in 0.25 s when huge pages were at
    hand but 2-4 s when the kernel compacted memory to make them (docs/performance.md).
    """
    if size == 0:
        return memoryview(bytearray())
    if hasattr(mmap, "MAP_PRIVATE"):  # POSIX; Windows has no flags and maps privately
        return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    return memoryview(mmap.mmap(-1, size))


class Download:
    """One GET on its own connection, its body into one buffer; `cancel()` from any thread."""

    def __init__(self, request: httpx.Request, timeout: httpx.Timeout) -> None:
        self.request = request
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.conn = h11.Connection(h11.CLIENT)
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Cut the connection: a blocked receive returns at once (the caller then fails)."""
        self._cancelled.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def run(self, progress: Progressed) -> tuple[httpx.Response, memoryview]:
        """(the answer, its body): the body empty and the answer's content read for >= 400.
        Socket failures are raised as httpx's transport errors, as the httpx path raises."""
        try:
            self._connect()
            self._send_head()
            head = self._read_head()
            if head.status_code >= 400 or self.request.method == "HEAD":
                return self._response(head, self._small_body()), memoryview(bytearray())
            return self._response(head, b""), self._body(head, progress)
        except TimeoutError as exc:
            timeout: type[httpx.TimeoutException] = httpx.ReadTimeout
            if self.sock is None:
                timeout = httpx.ConnectTimeout
            raise timeout(str(exc) or "timed out", request=self.request) from None
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=self.request) from None
        except OSError as exc:
            if self._cancelled.is_set():
                raise httpx.ReadError("the download was cancelled", request=self.request) from None
            failed: type[httpx.TransportError] = httpx.ReadError
            if self.sock is None:
                failed = httpx.ConnectError
            raise failed(str(exc), request=self.request) from None
        finally:
            if self.sock is not None:
                self.sock.close()

    # -- steps ----------------------------------------------------------------------------

    def _connect(self) -> None:
        url = self.request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        sock = socket.create_connection((url.host, port), timeout=self.timeout.connect)
        try:
            if url.scheme == "https":
                sock = httpx.create_ssl_context().wrap_socket(sock, server_hostname=url.host)
            sock.settimeout(self.timeout.read)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        if self._cancelled.is_set():  # cancelled while connecting
            self.cancel()

    def _send_head(self) -> None:
        assert self.sock is not None
        # The body is taken as it comes (no decoding step): ask for it unencoded.
        fields = [(k, v) for k, v in self.request.headers.items() if k != "accept-encoding"]
        fields.append(("Accept-Encoding", "identity"))
        target = self.request.url.raw_path.decode("ascii")
        head = h11.Request(method=self.request.method, target=target, headers=fields)
        self.sock.sendall(self.conn.send(head))
        self.conn.send(h11.EndOfMessage())

    def _receive(self) -> None:
        assert self.sock is not None
        self.conn.receive_data(self.sock.recv(HEAD_READ))

    def _read_head(self) -> h11.Response:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self._receive()
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError(
                    "the host closed the connection before answering", request=self.request
                )

    def _small_body(self) -> bytes:
        """The whole body through h11 (an error message, or a body without a length)."""
        pieces = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self._receive()
            elif isinstance(event, h11.Data):
                pieces += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return bytes(pieces)

    def _body(self, head: h11.Response, progress: Progressed) -> memoryview:
        size = _content_length(head)
        if size is None:  # chunked or until close: rare for a blob; h11 frames it
            data = self._small_body()
            progress.add(len(data))
            return memoryview(bytearray(data))
        progress.total = size
        view = body_buffer(size)
        at = 0
        while at < size:  # what h11 already holds (came with the head)
            event = self.conn.next_event()
            if not isinstance(event, h11.Data):
                break
            view[at : at + len(event.data)] = event.data
            at += len(event.data)
        progress.add(at)
        assert self.sock is not None
        while at < size:
            got = self.sock.recv_into(view[at : min(at + RECV_CHUNK, size)])
            if not got:
                raise httpx.RemoteProtocolError(
                    f"the host sent {at} of {size} bytes, then closed", request=self.request
                )
            at += got
            progress.add(got)
        return view

    def _response(self, head: h11.Response, content: bytes) -> httpx.Response:
        return httpx.Response(
            head.status_code,
            headers=[(bytes(k), bytes(v)) for k, v in head.headers],
            content=content,
            request=self.request,
            extensions={"reason_phrase": bytes(head.reason), "http_version": b"HTTP/1.1"},
        )


def _content_length(head: h11.Response) -> int | None:
    for name, value in head.headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None
