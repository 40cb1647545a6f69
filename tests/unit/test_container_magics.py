"""Container options and `%river env` in the magics and the client: parsing, usage errors, and
the request bodies the client sends (recorded by an httpx mock transport; no server)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from IPython.core.error import UsageError

from river_magics import Client, RiverError
from river_magics.arguments import build_parser, parse_line
from river_magics.environments import environments_bundle


def parse(text: str) -> Any:
    return parse_line(build_parser(), text)


def test_submit_and_run_take_container_options() -> None:
    args = parse(
        "submit --image python:3.12-slim --mount /data:/data:ro --mount /x:/y --privileged"
    )
    assert args.image == "python:3.12-slim" and args.environment is None
    assert args.mount == ["/data:/data:ro", "/x:/y:rw"] and args.privileged
    args = parse("run --environment torch -c 2 -- python -V")
    assert args.environment == "torch" and args.cmd == ["python", "-V"]
    assert parse("submit").mount == [] and not parse("submit").privileged


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("submit --image a --environment b", "not allowed with"),
        ("submit --mount data:/data", "absolute path"),
        ("submit --mount /a:/shared", "River's own mount"),
        ("submit --environment Torch", "environment name"),
        ("env create torch", "--image"),
        ("env exec torch", "needs a command"),
        ("env frobnicate torch", "invalid choice"),
        ("env delete", "NAME"),
    ],
)
def test_bad_container_arguments_are_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse(text)


def test_env_exec_keeps_the_shell_command_as_typed() -> None:
    args = parse("env exec torch -- pip install 'numpy<2' && echo ok > /tmp/x")
    assert args.env_command == "exec" and args.name == "torch"
    assert args.shell_command == "pip install 'numpy<2' && echo ok > /tmp/x"
    assert parse("env exec torch 'echo hi | wc -c'").shell_command == "echo hi | wc -c"
    assert parse("env delete torch --tarball").tarball


class Recorder:
    """An httpx transport that records requests and answers like the host would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if request.url.path.endswith("/tasks"):
            return httpx.Response(201, json={"task": {"id": "7", "state": "queued"}})
        if request.url.path.endswith("/exec"):
            return httpx.Response(200, json={"exit_code": 0, "output": "ok\n"})
        return httpx.Response(200, json={"environment": {"name": "torch"}, "environments": []})


@pytest.fixture
def recorded() -> tuple[Client, Recorder]:
    recorder = Recorder()
    client = Client("http://river.test", "t")
    client._http = httpx.Client(transport=httpx.MockTransport(recorder))
    return client, recorder


def test_client_sends_container_fields(recorded: tuple[Client, Recorder]) -> None:
    client, recorder = recorded
    client.submit(["true"], image="python:3.12-slim", mounts=["/data/:/in:ro"], privileged=True)
    client.submit(script="print(1)", environment="torch")
    (_, path, first), (_, _, second) = recorder.requests
    assert path == "/river/api/tasks"
    assert first["image"] == "python:3.12-slim" and first["privileged"] is True
    assert first["mounts"] == ["/data:/in:ro"]
    assert second["environment"] == "torch" and "image" not in second and "mounts" not in second
    with pytest.raises(ValueError, match="not both"):
        client.submit(["true"], image="a", environment="b")
    with pytest.raises(ValueError, match="absolute"):
        client.submit(["true"], mounts=["relative:/x"])
    assert len(recorder.requests) == 2  # bad input never reached the host


def test_client_environment_calls(recorded: tuple[Client, Recorder]) -> None:
    client, recorder = recorded
    client.create_environment("torch", "python:3.12-slim")
    assert client.exec_environment("torch", "pip list")["output"] == "ok\n"
    client.export_environment("torch")
    client.delete_environment("torch", tarball=True)
    client.environments()
    assert [(m, p) for m, p, _ in recorder.requests] == [
        ("POST", "/river/api/environments"),
        ("POST", "/river/api/environments/torch/exec"),
        ("POST", "/river/api/environments/torch/export"),
        ("DELETE", "/river/api/environments/torch"),
        ("GET", "/river/api/environments"),
    ]
    assert recorder.requests[0][2] == {"name": "torch", "image": "python:3.12-slim"}
    assert recorder.requests[1][2]["command"] == "pip list"
    with pytest.raises(RiverError, match="environment name"):
        client.export_environment("../etc")


def test_environment_table_has_a_text_fallback() -> None:
    bundle = environments_bundle(
        [
            {
                "name": "torch",
                "owner": "alice",
                "image": "python:3.12-slim",
                "state": "running",
                "container": "b8dffc077927",
                "exported": {"path": "/s/environments/torch.tar", "size": 120 << 20},
            }
        ]
    )
    assert "torch" in bundle["text/plain"] and "b8dffc077927 running" in bundle["text/plain"]
    assert "120M" in bundle["text/plain"]
    assert (
        "<table" in bundle["text/html"]
        and "<td style='text-align:left'>torch</td>" in (bundle["text/html"])
    )
    assert "no environments" in environments_bundle([])["text/plain"]
