"""The environment a process task starts with (river_runner/task_env.py)."""

from __future__ import annotations

import pytest

from river_runner.backends.base import TaskLaunch
from river_runner.task_account import resolve_task_account
from river_runner.task_env import check_task_env_names, task_environment


def test_a_task_gets_named_runner_variables_and_never_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/cuda/lib64")
    monkeypatch.setenv("JUPYTER_TOKEN", "server-secret")
    monkeypatch.setenv("SOME_RUNNER_SETTING", "x")
    launch = TaskLaunch(task_id=7, kind="command", command=["true"], gpus=[1])
    account = resolve_task_account(None)

    plain = task_environment(launch, account)
    assert "LD_LIBRARY_PATH" not in plain and "SOME_RUNNER_SETTING" not in plain
    assert plain["CUDA_VISIBLE_DEVICES"] == "1" and plain["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"

    passed = task_environment(launch, account, passed=("LD_LIBRARY_PATH", "JUPYTER_TOKEN"))
    assert passed["LD_LIBRARY_PATH"] == "/opt/cuda/lib64"
    assert "JUPYTER_TOKEN" not in passed
    assert "server-secret" not in "".join(passed.values())


@pytest.mark.parametrize("name", ["RIVER_JOIN_TOKEN", "JUPYTER_TOKEN", "A=B", "1X", ""])
def test_task_env_refuses_credentials_and_non_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_task_env_names([name])


def test_task_env_takes_plain_names() -> None:
    assert check_task_env_names(["LD_LIBRARY_PATH", "CUDA_HOME"]) == (
        "LD_LIBRARY_PATH",
        "CUDA_HOME",
    )
