"""The app launch plans the host runs in a VPS: the proxy prefix becomes the app's base
URL (under the Jupyter server's own base URL), and bad requests say what to fix."""

from __future__ import annotations

import pytest

from river_runner.spec import SpecError
from river_server.vps_apps import plan


@pytest.mark.parametrize("base_url", ["/", "/hub/user/alice/"])
def test_jupyter_serves_under_the_absolute_proxy_prefix(base_url: str) -> None:
    launch = plan({"app": "jupyter"}, "42", base_url)
    prefix = f"{base_url}river/proxy/absolute/42/8888/"
    script = launch.command[-1]
    assert f"--ServerApp.base_url={prefix}" in script and "--port=8888" in script
    token = launch.path.rpartition("token=")[2]
    assert f"--IdentityProvider.token={token}" in script and len(token) >= 24
    # Paths are relative to the server's base URL (the client joins them to its URL).
    assert launch.path == f"river/proxy/absolute/42/8888/?token={token}"
    assert launch.ready_path == f"river/proxy/absolute/42/8888/api/status?token={token}"
    assert plan({"app": "jupyter"}, "42", base_url).path != launch.path  # a new token each time


def test_tensorboard_gets_its_path_prefix_and_logdir_quoted() -> None:
    launch = plan({"app": "tensorboard", "logdir": "/runs/my run", "port": 6007}, "7", "/")
    script = launch.command[-1]
    assert "--path_prefix /river/proxy/absolute/7/6007 " in script
    assert "--logdir '/runs/my run'" in script and "--port 6007" in script
    assert launch.path == "river/proxy/absolute/7/6007/"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"app": "vnc"}, "app must be one of"),
        ({"app": "tensorboard"}, "needs 'logdir'"),
        ({"app": "jupyter", "port": 0}, "port must be"),
        ({"app": "jupyter", "port": True}, "port must be"),
    ],
)
def test_bad_requests(body: dict, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        plan(body, "1", "/")
