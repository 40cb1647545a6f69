"""`--preemptible` on `%river vps create` and `river vps create` (one parser, issue #20):
the request body the host gets carries `preemptible: true` only when asked for."""

from __future__ import annotations

from river_magics.arguments import build_parser, parse_line
from river_magics.vps import _create_body


def body_of(line: str) -> dict:
    return _create_body(parse_line(build_parser(), line))


def test_vps_create_preemptible_reaches_the_request_body() -> None:
    assert body_of("vps create --image busybox --preemptible")["preemptible"] is True
    assert "preemptible" not in body_of("vps create --image busybox")
