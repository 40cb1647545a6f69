"""`%river vps ...` / `%river open` parsing, and the SSH command/config a VPS gets
(against a mock host: what is printed must be what works, see test_vps_access for real)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from IPython.core.error import UsageError

from river_magics import Client, RiverError
from river_magics.arguments import build_parser, parse_line
from river_magics.vps_apps import ssh_command, ssh_config, terminal_url


def parse(text: str) -> Any:
    return parse_line(build_parser(), text)


def test_vps_access_commands_parse() -> None:
    assert parse("vps ssh 12").vps_command == "ssh"
    assert parse("vps ssh-config 12").id == "12"
    jupyter = parse("vps jupyter 12 --port 9999")
    assert (jupyter.vps_command, jupyter.port) == ("jupyter", 9999)
    board = parse("vps tensorboard 12 --logdir /runs")
    assert (board.logdir, board.port) == ("/runs", 6006)
    snaps = parse("vps snapshots 12 --delete 2")
    assert (snaps.vps_command, snaps.delete) == ("snapshots", 2)
    opened = parse("open 12 8888 --absolute")
    assert (opened.command, opened.port, opened.absolute) == ("open", 8888, True)
    assert parse("vps create --ip-token rip_x --gen-key").ip_token == "rip_x"
    assert parse("vps terminal 12").vps_command == "terminal"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("vps tensorboard 12", "--logdir"),
        ("vps jupyter", "ID"),
        ("open 12", "PORT"),
        ("open 12 http", "invalid int"),
        ("vps snapshots 12 --delete two", "invalid int"),
    ],
)
def test_bad_vps_lines_are_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse(text)


@pytest.fixture
def client() -> Client:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"user": {"name": "alice", "role": "user"}})

    made = Client("http://river.lab:8888", "t")
    made._http = httpx.Client(transport=httpx.MockTransport(answer))
    return made


def test_ssh_command_and_config(client: Client) -> None:
    vps = {"id": "42", "ssh": "generate", "ssh_proxy_port": 8002}
    assert ssh_command(client, vps) == "ssh -p 8002 alice+42@river.lab"
    config = ssh_config(client, vps)
    assert config.splitlines()[:4] == [
        "Host river-vps-42",
        "    HostName river.lab",
        "    Port 8002",
        "    User alice+42",
    ]
    assert "IdentityFile" in config


def test_ssh_says_why_not(client: Client) -> None:
    with pytest.raises(RiverError, match="created without SSH"):
        ssh_command(client, {"id": "1", "ssh": "disabled", "ssh_proxy_port": None})
    with pytest.raises(RiverError, match="no SSH proxy"):
        ssh_command(client, {"id": "1", "ssh": "none", "ssh_proxy_port": None})


def test_terminal_link_opens_jupyterlab_with_the_vps(client: Client) -> None:
    # River's labextension turns `?river-terminal=ID` into a terminal tab (browser test).
    assert terminal_url(client, "12") == "http://river.lab:8888/lab?river-terminal=12"
    with pytest.raises(ValueError, match="must be a number"):
        terminal_url(client, "../tasks")
