"""`%river overlay`, `%river ip ...` and `--ip-token`: parsing and display, no server.
(They run against a real host in tests/netns/test_overlay_netns.py.)"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from river_magics.arguments import build_parser, parse_line
from river_magics.client import Client
from river_magics.common import submit_body
from river_magics.errors import RiverError
from river_magics.launch import task_options
from river_magics.overlay import overlay_bundle, reservations_bundle


def parse(text: str):  # noqa: ANN201
    return parse_line(build_parser(), text)


def test_ip_commands_parse() -> None:
    args = parse("ip reserve --node r1 --ttl 90 --ip 10.128.64.9")
    assert (args.command, args.ip_command) == ("ip", "reserve")
    assert (args.node, args.ttl, args.ip) == ("r1", 90.0, "10.128.64.9")
    assert parse("ip reserve").node is None
    assert parse("ip list --all").all is True
    assert parse("ip release rip_abc").key == "rip_abc"
    assert parse("overlay").command == "overlay"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ip reserve --ttl -5", "more than 0"),
        ("ip reserve --ttl soon", "number of seconds"),
        ("ip release", "ID|TOKEN"),
        ("ip", "ACTION"),
    ],
)
def test_ip_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse(text)


def test_ip_token_reaches_the_submission() -> None:
    args = parse("run --ip-token rip_xyz -- python3 -m worker")
    assert args.ip_token == "rip_xyz"
    options = task_options(args)
    assert options["ip_token"] == "rip_xyz"
    body, _ = submit_body(["python3", "-m", "worker"], ip_token=options["ip_token"])
    assert body["ip_token"] == "rip_xyz"
    body, _ = submit_body(["true"])
    assert "ip_token" not in body


def test_release_needs_an_id_or_a_token() -> None:
    client = Client("http://127.0.0.1:9")  # never reached: refused before any request
    with pytest.raises(RiverError, match="reservation id"):
        client.release_ip("10.128.64.9")
    client.close()


def test_overlay_display() -> None:
    off = overlay_bundle({"enabled": False})
    assert "overlay_enabled" in off["text/plain"]
    overview = {
        "enabled": True,
        "subnet": "10.128.0.0/12/6/14",
        "network": "10.128.0.0/12",
        "host_underlay_ip": "192.168.1.10",
        "mtu": 1450,
        "allocations": [
            {
                "node": "gpu1",
                "online": True,
                "index": 1,
                "vxlan_id": 101,
                "subnet": "10.128.64.0/18",
                "host_ip": "10.128.64.1",
                "workload_range": ["10.128.64.3", "10.128.127.254"],
                "underlay_ip": "192.168.1.11",
                "host_links": "up",
            }
        ],
    }
    text = overlay_bundle(overview)["text/plain"]
    assert "10.128.0.0/12/6/14" in text and "192.168.1.10" in text
    assert "gpu1" in text and "10.128.64.0/18" in text and "101" in text
    assert "10.128.64.3 - 10.128.127.254" in text
    assert "<table" in overlay_bundle(overview)["text/html"]
    empty = reservations_bundle([])
    assert "%river ip reserve" in empty["text/plain"]
    listed = reservations_bundle(
        [
            {
                "id": "3",
                "ip": "10.128.127.254",
                "node": "gpu1",
                "state": "in_use",
                "task_id": "123",
                "expires_at": 0,
                "owner": "alice",
            }
        ]
    )["text/plain"]
    assert "10.128.127.254" in listed and "in_use" in listed and "123" in listed
