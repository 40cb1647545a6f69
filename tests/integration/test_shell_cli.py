"""The `river` shell command against a live cluster, run as a subprocess.

It runs `python -m river_runner.cli`: the same `main` the installed `river` console script
calls (pyproject.toml `[project.scripts]`), with this checkout on PYTHONPATH. The user
commands are found through river_runner/cli.py's built-in table when the installed
metadata predates them, so the test exercises the code of this checkout.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, wait_for

RIVER = [sys.executable, "-m", "river_runner.cli"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A config directory of the test's own, so no real `river login` is read or written."""
    path = tmp_path / "config"
    path.mkdir()
    return path


def river_env(cluster: Cluster | None, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RIVER_URL", "RIVER_TOKEN")}
    env["XDG_CONFIG_HOME"] = str(home)
    if cluster is not None:
        env.update(RIVER_URL=cluster.url, RIVER_TOKEN=cluster.token)
    return env


def river(
    cluster: Cluster | None, home: Path, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RIVER, *args],
        env=river_env(cluster, home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def submit_json(cluster: Cluster, home: Path, *args: str) -> dict[str, Any]:
    result = river(cluster, home, "submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def shortest_unique_prefix(task_id: str, others: list[str]) -> str:
    for size in range(1, len(task_id) + 1):
        prefix = task_id[:size]
        if not any(o.startswith(prefix) for o in others if o != task_id):
            return prefix
    raise AssertionError("no unique prefix")


def test_run_streams_the_output_and_exits_with_the_tasks_code(
    solo_cluster: Cluster, home: Path
) -> None:
    ok = river(solo_cluster, home, "run", "--", "sh", "-c", "echo one; echo two >&2; echo three")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["one", "three"]
    assert "two" in ok.stderr.splitlines()

    failing = river(solo_cluster, home, "run", "--shell", "--", "echo before; exit 3")
    assert failing.returncode == 3, failing.stderr
    assert failing.stdout.splitlines() == ["before"]
    assert "exit 3" in failing.stderr


def test_run_a_script_file(solo_cluster: Cluster, home: Path, tmp_path: Path) -> None:
    shell_script = tmp_path / "job.sh"
    shell_script.write_text('#!/bin/sh\necho "args: $1 $2"\nexit 4\n')
    result = river(solo_cluster, home, "run", str(shell_script), "a", "b")
    assert result.returncode == 4, result.stderr
    assert result.stdout.splitlines() == ["args: a b"]
    python_script = tmp_path / "job.py"
    python_script.write_text("import sys\nprint('from python', sys.version_info[0])\n")
    result = river(solo_cluster, home, "run", str(python_script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from python 3"]


def test_submit_json_and_a_name_as_the_id(solo_cluster: Cluster, home: Path) -> None:
    task = submit_json(solo_cluster, home, "--name", "cli-named", "--", "echo", "named output")
    assert task["name"] == "cli-named" and task["id"].isdigit()
    solo_cluster.wait_task(task["id"], "completed")

    status = river(solo_cluster, home, "status", "cli-named", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["id"] == task["id"]
    logs = river(solo_cluster, home, "logs", "cli-named")
    assert logs.returncode == 0 and logs.stdout.splitlines() == ["named output"], logs.stderr

    listed = river(solo_cluster, home, "tasks", "--json", "--state", "completed")
    assert listed.returncode == 0, listed.stderr
    tasks = json.loads(listed.stdout)
    assert task["id"] in [t["id"] for t in tasks]
    assert {t["state"] for t in tasks} == {"completed"}
    table = river(solo_cluster, home, "tasks")
    assert table.returncode == 0 and task["id"] in table.stdout and "cli-named" in table.stdout

    nodes = river(solo_cluster, home, "nodes", "--json")
    assert nodes.returncode == 0 and [n["name"] for n in json.loads(nodes.stdout)] == ["solo"]


def test_kill_by_a_unique_prefix(solo_cluster: Cluster, home: Path) -> None:
    task = submit_json(solo_cluster, home, "--", "sleep", "120")
    solo_cluster.wait_task(task["id"], "running")
    everyone = [t["id"] for t in solo_cluster.get("/river/api/tasks?all=1")["tasks"]]
    prefix = shortest_unique_prefix(task["id"], everyone)
    assert len(prefix) < len(task["id"])

    result = river(solo_cluster, home, "kill", prefix)
    assert result.returncode == 0, result.stderr
    assert task["id"] in result.stdout
    solo_cluster.wait_task(task["id"], "killed")


def test_an_ambiguous_prefix_is_refused_with_the_candidates(
    solo_cluster: Cluster, home: Path
) -> None:
    first = submit_json(solo_cluster, home, "--name", "twin-a", "--", "true")
    second = submit_json(solo_cluster, home, "--name", "twin-b", "--", "true")
    for task in (first, second):
        solo_cluster.wait_task(task["id"], "completed")
    common = os.path.commonprefix([first["id"], second["id"]])
    assert common

    line = assert_one_line_error(river(solo_cluster, home, "status", common), 1)
    assert first["id"] in line and second["id"] in line and "longer" in line

    missing = assert_one_line_error(river(solo_cluster, home, "logs", "no-such-task"), 1)
    assert "no task" in missing and "no-such-task" in missing


def test_usage_errors_are_one_line_without_a_traceback(solo_cluster: Cluster, home: Path) -> None:
    line = assert_one_line_error(river(solo_cluster, home, "submit", "-m", "lots", "--", "t"), 2)
    assert "--memory" in line and "lots" in line
    line = assert_one_line_error(river(solo_cluster, home, "run"), 2)
    assert "-- hostname" in line
    line = assert_one_line_error(river(solo_cluster, home, "tasks", "--bogus"), 2)
    assert "--bogus" in line
    line = assert_one_line_error(river(None, home, "tasks"), 1)
    assert "river login" in line


def test_login_writes_a_private_config_the_next_command_uses(
    solo_cluster: Cluster, home: Path
) -> None:
    refused = river(None, home, "login", solo_cluster.url, "--token", "wrong-token")
    assert_one_line_error(refused, 1)
    assert not (home / "river" / "config.json").exists()

    result = river(None, home, "login", solo_cluster.url, "--token", solo_cluster.token)
    assert result.returncode == 0, result.stderr
    path = home / "river" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": solo_cluster.url, "token": solo_cluster.token}

    nodes = river(None, home, "nodes", "--json")  # no RIVER_URL / RIVER_TOKEN
    assert nodes.returncode == 0, nodes.stderr
    assert [n["name"] for n in json.loads(nodes.stdout)] == ["solo"]


def test_ctrl_c_kills_the_running_task(solo_cluster: Cluster, home: Path) -> None:
    process = subprocess.Popen(
        [*RIVER, "run", "--name", "cli-interrupted", "--shell", "--", "echo up; sleep 120"],
        env=river_env(solo_cluster, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "up\n"  # the task runs and streams
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "killed" in err
    task = wait_for(
        lambda: next(
            t
            for t in solo_cluster.get("/river/api/tasks")["tasks"]
            if t.get("name") == "cli-interrupted"
        ),
        10,
        what="the interrupted task",
    )
    solo_cluster.wait_task(task["id"], "killed", timeout=10)


def test_the_magics_take_a_prefix_or_a_name_too(solo_cluster: Cluster, home: Path) -> None:
    """The resolver is shared: `%river kill NAME` and `%river status PREFIX` in a kernel."""
    from jupyter_client.manager import start_new_kernel

    task = submit_json(solo_cluster, home, "--name", "magic-target", "--", "sleep", "120")
    solo_cluster.wait_task(task["id"], "running")
    everyone = [t["id"] for t in solo_cluster.get("/river/api/tasks?all=1")["tasks"]]
    prefix = shortest_unique_prefix(task["id"], everyone)
    manager, kernel = start_new_kernel(kernel_name="python3", env=river_env(solo_cluster, home))
    outputs: list[str] = []

    def collect(message: dict) -> None:
        content = message["content"]
        if message["msg_type"] == "stream":
            outputs.append(content["text"])
        elif message["msg_type"] in ("display_data", "execute_result", "error"):
            outputs.append(str(content.get("data", {}).get("text/plain", content)))

    try:
        kernel.execute_interactive(
            f"%load_ext river_magics\n%river status {prefix}", timeout=30, output_hook=collect
        )
        assert task["id"] in "".join(outputs) and "magic-target" in "".join(outputs)
        kernel.execute_interactive("%river kill magic-target", timeout=30, output_hook=collect)
        solo_cluster.wait_task(task["id"], "killed")
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
