"""A runner speaks only for its own tasks, and a process task never holds a credential.

Attacks tried here, each through public interfaces:
- a second runner (its own credential, via the host's runner routes) appends log lines,
  a forged `--pull` result and a `completed` state to a task running on another node;
- a process task reads its runner's credential file, /proc/<runner>/environ and cmdline,
  its inherited environment and descriptors, and checks whether it is root;
- under `river up` (the embedded runner) any local user reads every /proc/*/cmdline
  looking for the join token or the runner's credential, and a task looks for the
  Jupyter server token (admin) in its environment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from river_magics.payload import decode_pulled, wrap_script
from river_runner.protocol import PULL_MARKER, runner_auth_header
from river_runner.task_env import PASSED_THROUGH
from tests.cluster import (
    JOIN_TOKEN,
    Cluster,
    _kill_leftover_tasks,
    as_user,
    start_river_up,
    wait_for,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tasks change accounts only as root")

# What a process task's environment may hold (docs/design-decisions.md), besides its spec's env.
TASK_VARIABLES = {
    *PASSED_THROUGH,
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "RIVER_TASK_ID",
    "RIVER_TASK_WORKDIR",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "PYTHONUNBUFFERED",
}

# Run by the task: everything a task could try to learn a credential from.
SNOOP = r"""
import json, os, sys
out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
def grab(label, path):
    try:
        with open(path, "rb") as handle:
            out[label] = handle.read().decode("latin-1")
    except OSError as exc:
        out[label] = f"refused: {exc.strerror}"
for label, path in TARGETS.items():
    grab(label, path)
grab("parent_environ", f"/proc/{os.getppid()}/environ")
out["env"] = dict(os.environ)
out["fds"] = sorted(os.listdir("/proc/self/fd"))
print("SNOOP " + json.dumps(out))
"""


def _snoop_script(targets: dict[str, str]) -> str:
    return f"TARGETS = {targets!r}\n{SNOOP}"


def _lines(cluster: Cluster, task_id: str, **kwargs) -> list[dict]:
    return cluster.get(f"/river/api/tasks/{task_id}/logs", **kwargs)["lines"]


def _snooped(cluster: Cluster, task_id: str) -> dict:
    cluster.wait_task(task_id, {"completed", "failed"})
    text = "\n".join(line["text"] for line in _lines(cluster, task_id))
    assert "SNOOP " in text, text
    return json.loads(text.split("SNOOP ", 1)[1].splitlines()[0])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host for the module: each test starts runners of its own names and pins its
    tasks to them (a host start per test cost 10-15 s on CI's loaded cores)."""
    c = Cluster(tmp_path_factory.mktemp("trust"))
    c.start_host()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file path any account can see appear: the test opens it to let a task finish."""
    folder = Path(tempfile.mkdtemp(prefix="river-gate-"))
    folder.chmod(0o755)
    try:
        yield folder / "open"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- hole 1: a runner's reports are scoped to the tasks placed on it -----------------


def test_a_runner_cannot_write_another_runners_task(cluster: Cluster, gate: Path) -> None:
    cluster.start_runner("r1", "--cpus", "0")
    r2 = cluster.start_runner("r2", "--cpus", "0")
    alice = cluster.make_users("alice")["alice"]
    # The owner's task: prints, waits for the gate, then hands back y = 42 (--pull).
    source = (
        "import os, time\nprint('honest line')\n"
        f"deadline = time.time() + 60\nwhile not os.path.exists({str(gate)!r}) "
        "and time.time() < deadline:\n    time.sleep(0.05)\ny = 42\n"
    )
    response = httpx.post(
        f"{cluster.url}/river/api/tasks",
        json={"script": wrap_script(source, {}, ["y"]), "target": "r1"},
        timeout=30,
        **as_user(alice),
    )
    assert response.status_code == 201, response.text
    task_id = response.json()["task"]["id"]
    cluster.wait_task(task_id, "running")
    wait_for(lambda: _lines(cluster, task_id), 30, what="the task's first line")
    last = max(line["seq"] for line in _lines(cluster, task_id))

    # r2 (a real, registered runner) uses its own credential against r1's task.
    r2_auth = runner_auth_header((r2.data_dir / "credential").read_text().strip())
    forged = zlib.compress(pickle.dumps({"y": pickle.dumps("forged by r2")}))
    marker = f"{PULL_MARKER}1/1:{base64.b64encode(forged).decode()}"
    lines = [
        {"seq": seq, "stream": "stdout", "text": text, "ts": 0.0}
        for seq in range(last + 1, last + 6)
        for text in ("INJECTED by r2", marker)
    ]
    batch = [
        {"kind": "log", "task_id": task_id, "lines": lines},
        {"kind": "status", "task_id": task_id, "state": "completed", "exit_code": 0},
    ]
    answer = httpx.post(
        f"{cluster.url}/river/api/runner/events",
        json={"messages": batch},
        headers=r2_auth,
        timeout=30,
    )
    # Acknowledged (an honest runner's outbox must move on) but dropped, and counted.
    assert answer.status_code == 200, answer.text
    assert answer.json()["dropped"] == 2
    beat = httpx.post(
        f"{cluster.url}/river/api/runner/heartbeat",
        json={"metrics": {}, "running": {task_id: "running"}},
        headers=r2_auth,
        timeout=30,
    )
    assert beat.status_code == 200 and task_id in beat.json()["kill"]  # r2: stop it (yours? no)

    # A malformed batch is refused whole, saying what is wrong, and changes nothing.
    bad = httpx.post(
        f"{cluster.url}/river/api/runner/events",
        json={"messages": [{"kind": "log", "task_id": "x; drop", "lines": []}]},
        headers=r2_auth,
        timeout=30,
    )
    assert bad.status_code == 400 and "task_id" in bad.json()["message"]

    task = cluster.task(task_id)
    assert task["state"] == "running" and task["node"] == "r1"
    texts = [line["text"] for line in _lines(cluster, task_id)]
    assert not any("INJECTED" in t or "river-pull" in t for t in texts), texts
    blobs = cluster.get(f"/river/api/tasks/{task_id}/blobs", **as_user(alice))["blobs"]
    assert blobs == []

    # The honest task finishes; its owner's --pull result is its own.
    gate.touch()
    assert cluster.wait_task(task_id, {"completed", "failed"})["state"] == "completed"
    blob = httpx.get(
        f"{cluster.url}/river/api/tasks/{task_id}/blobs/river-pull", timeout=30, **as_user(alice)
    )
    assert blob.status_code == 200, blob.text
    assert decode_pulled(blob.content) == {"y": 42}
    assert cluster.get("/river/api/nodes")["nodes"]  # the host keeps serving


# ---- hole 2: a process task holds no credential and is not root ----------------------


@needs_root
def test_a_process_task_cannot_reach_its_runners_credential(cluster: Cluster) -> None:
    runner = cluster.start_runner(
        "r3", "--cpus", "0", env={"JUPYTER_TOKEN": "server-token-seen", "SECRET_X": "inherited"}
    )
    assert runner.process is not None
    credential_path = runner.data_dir / "credential"
    credential = credential_path.read_text().strip()
    targets = {
        "credential": str(credential_path),
        "runner_environ": f"/proc/{runner.process.pid}/environ",
        "runner_cmdline": f"/proc/{runner.process.pid}/cmdline",
        "data_dir": str(runner.data_dir),
    }
    task = cluster.submit(script=_snoop_script(targets), env={"MINE": "1"}, target="r3")
    seen = _snooped(cluster, task["id"])

    everything = json.dumps(seen)
    for secret in (credential, JOIN_TOKEN, "server-token-seen", "inherited"):
        assert secret not in everything, f"the task saw {secret!r}: {everything}"
    assert seen["credential"].startswith("refused")
    assert seen["runner_environ"].startswith("refused")
    assert 0 not in (seen["uid"], seen["euid"], seen["gid"]) and 0 not in seen["groups"]
    assert set(seen["env"]) <= TASK_VARIABLES | {"MINE"}, sorted(seen["env"])
    assert seen["env"]["MINE"] == "1" and seen["env"]["RIVER_TASK_ID"] == task["id"]
    assert len(seen["fds"]) <= 4, seen["fds"]  # stdin, stdout, stderr, listdir's own
    assert (credential_path.stat().st_mode & 0o077) == 0
    assert (runner.data_dir.stat().st_mode & 0o077) == 0


@needs_root
def test_a_task_user_of_root_is_refused(tmp_path: Path) -> None:
    """`--task-user root` would hand tasks the node: the runner will not start."""
    result = subprocess.run(
        [sys.executable, "-m", "river_runner.cli", "runner", "--host", "http://127.0.0.1:9"]
        + ["--backend", "process", "--task-user", "root", "--data-dir", str(tmp_path)],
        env={**os.environ, "RIVER_JOIN_TOKEN": "t"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "tasks never run as root" in result.stderr


# ---- hole 3: `river up` keeps tokens off command lines and out of tasks --------------


def _all_cmdlines() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                found[int(entry)] = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().decode("utf-8", "replace")
                )
    return found


def test_river_up_shows_no_token_in_ps_and_none_to_tasks(tmp_path: Path) -> None:
    up, cluster, data_dir = start_river_up(tmp_path)
    try:
        token = cluster.token
        join = (data_dir / "runner_token").read_text().strip()
        credential = (data_dir / "runners" / "local" / "credential").read_text().strip()

        task = cluster.submit(script=_snoop_script({}))
        seen = _snooped(cluster, task["id"])
        everything = json.dumps(seen)
        for secret in (token, join, credential):
            assert secret not in everything, f"the task saw a credential: {everything}"
        assert not {"JUPYTER_TOKEN", "RIVER_TOKEN"} & set(seen["env"])
        if os.geteuid() == 0:
            assert seen["uid"] != 0

        leaks = {
            pid: line for pid, line in _all_cmdlines().items() if join in line or credential in line
        }
        assert not leaks, f"a token is on a command line: {leaks}"
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(5)
        _kill_leftover_tasks(data_dir)


def test_a_runner_answers_a_non_ascii_credential_with_401_not_500(cluster: Cluster) -> None:
    """The runner's own API compares credentials as bytes: a header with non-ASCII
    characters is a wrong credential (401), not a crash of the comparison (500)."""
    runner = cluster.start_runner("r4", "--cpus", "0")
    for value in ("river-runner s\u00e9cret".encode(), "river-runner \u2603".encode()):
        response = httpx.post(
            f"http://127.0.0.1:{runner.port}/api/tasks/1/kill",
            headers={"Authorization": value},
            timeout=10,
        )
        assert response.status_code == 401, response.text
