"""Tunnel framing of the port forwards (river_runner/wire/forwarding.py): the request head
passed on, the response head handed back, redirects kept under the proxy prefix."""

from __future__ import annotations

from river_runner.wire.forwarding import closing_head, prefixed_location, request_head


def test_request_head_drops_the_hop_headers_and_frames_the_body() -> None:
    headers = [
        ("Host", "river:8888"),
        ("Authorization", "river-runner s3cret"),
        ("Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "999"),
        ("X-Forwarded-Prefix", "/river/proxy/1/80"),
        ("Cookie", "app=1"),
    ]
    head = request_head("POST", "/form?x=1", headers, b"a=1", upgrade=False).decode()
    lines = head.split("\r\n")
    assert lines[0] == "POST /form?x=1 HTTP/1.1"
    assert "Authorization: river-runner s3cret" not in lines
    assert "Transfer-Encoding: chunked" not in lines and "Content-Length: 999" not in lines
    assert "Content-Length: 3" in lines
    assert "Connection: close" in lines and "Cookie: app=1" in lines
    assert head.endswith("\r\n\r\n")
    kept = request_head("GET", "/", headers, b"", upgrade=False, keep_authorization=True)
    assert b"Authorization: river-runner s3cret" in kept
    assert b"Content-Length" not in kept  # a GET without body says nothing of one
    assert b"Connection: Upgrade" in request_head("GET", "/ws", [], b"", upgrade=True)


def test_response_head_says_close_unless_it_switches_protocols() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n"
    )
    closed = closing_head(head).decode().split("\r\n")
    assert closed[:2] == ["HTTP/1.1 200 OK", "Content-Length: 5"]
    assert closed.count("Connection: close") == 1 and not any("keep-alive" in c for c in closed)
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert closing_head(switching) == switching


def test_redirects_stay_under_the_prefix() -> None:
    head = b"HTTP/1.1 302 Found\r\nLocation: /login?next=%2F\r\n\r\n"
    moved = closing_head(head, "/river/proxy/7/8080").decode()
    assert "Location: /river/proxy/7/8080/login?next=%2F" in moved
    assert "Location: /login" in closing_head(head).decode()  # no prefix: untouched
    prefix = "/river/proxy/absolute/7/8888"
    assert prefixed_location(f"{prefix}/lab", prefix) == f"{prefix}/lab"
    assert prefixed_location(prefix, prefix) == prefix
    assert prefixed_location("https://elsewhere/x", prefix) == "https://elsewhere/x"
    assert prefixed_location("//elsewhere/x", prefix) == "//elsewhere/x"
    assert prefixed_location("relative", prefix) == "relative"
    assert (
        prefixed_location("/river/proxy/absolute/70/x", prefix)
        == f"{prefix}/river/proxy/absolute/70/x"
    )


def test_the_apps_own_authorization_reaches_it_past_the_runner_hop() -> None:
    """A Hub server's token travels host → runner as X-River-App-Authorization (the hop's
    Authorization is the runner credential) and reaches the app as Authorization."""
    headers = [
        ("Authorization", "river-runner s3cret"),
        ("X-River-App-Authorization", "token hub-token"),
    ]
    to_runner = request_head("GET", "/", headers, b"", upgrade=False, keep_authorization=True)
    assert b"X-River-App-Authorization: token hub-token" in to_runner  # the host's hop
    to_app = request_head("GET", "/", headers, b"", upgrade=False).decode().split("\r\n")
    assert "Authorization: token hub-token" in to_app
    assert "Authorization: river-runner s3cret" not in to_app
    assert not any(line.lower().startswith("x-river-app-authorization") for line in to_app)
