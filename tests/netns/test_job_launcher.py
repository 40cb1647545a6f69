"""`--launcher torchrun --nproc-per-node K` on network-namespace machines (issue #16).

torch is not installed here (and must not be): the test puts a stand-in *module*
`torch/distributed/run.py` on the task's PYTHONPATH. `python -m torch.distributed.run ARGS`
is the interface torchrun presents, so what the stand-in records (its argv and the
rendezvous variables River set) is what a real torchrun would have been given. It then
runs the script it was handed, as torchrun's workers would, to show the path is the
member's own script.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.conftest import OverlayCluster
from tests.netns.test_jobs import cluster  # noqa: F401  (the module's machines)

STAND_IN = r"""
import json, os, runpy, sys
names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK",
         "RIVER_NODE_RANK", "RIVER_NUM_NODES", "RIVER_NPROC_PER_NODE")
print("launcher-argv " + json.dumps(sys.argv[1:]), flush=True)
print("launcher-env " + json.dumps({n: os.environ.get(n) for n in names}), flush=True)
script = sys.argv[-1]
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""

SCRIPT = "print('the member script ran', flush=True)\n"


@pytest.fixture
def stand_in() -> Iterator[str]:
    """A world-readable directory holding torch/distributed/run.py (the task's account is
    `nobody` under the root runner, so pytest's 0700 tmp_path would not do)."""
    root = Path(tempfile.mkdtemp(prefix="river-torchrun-"))
    try:
        package = root / "torch" / "distributed"
        package.mkdir(parents=True)
        (root / "torch" / "__init__.py").write_text("")
        (package / "__init__.py").write_text("")
        (package / "run.py").write_text(STAND_IN)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield str(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def launcher_records(lines: list[str]) -> tuple[list[str], dict[str, Any]]:
    argv = next(json.loads(x.split(" ", 1)[1]) for x in lines if x.startswith("launcher-argv "))
    env = next(json.loads(x.split(" ", 1)[1]) for x in lines if x.startswith("launcher-env "))
    return argv, env


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_two_node_job_runs_each_member_through_torchrun(
    cluster: OverlayCluster,  # noqa: F811
    stand_in: str,
) -> None:
    answer = cluster.api.request(
        "POST",
        "/river/api/tasks",
        json={
            "script": SCRIPT,
            "nodes": 2,
            # The machines' runners offer 1 core each: an admin's unpinned (0-core) member
            # may use the whole node, so 2 processes per member pass the bound.
            "cores": 0,
            "launcher": "torchrun",
            "nproc_per_node": 2,
            "env": {"PYTHONPATH": stand_in},
        },
    )
    assert answer.status_code == 201, answer.text
    members = answer.json()["members"]
    finished = [cluster.api.finished(m["id"], timeout=90) for m in members]
    logs = [cluster.api.task_lines(m["id"]) for m in members]
    assert [t["state"] for t in finished] == ["completed"] * 2, (finished, logs)
    assert finished[1]["job"]["launcher"] == {"name": "torchrun", "nproc_per_node": 2}
    master = finished[0]["job"]["master_addr"]
    assert master == finished[0]["overlay_ip"]
    for rank, lines in enumerate(logs):
        argv, env = launcher_records(lines)
        assert option(argv, "--nnodes") == "2", argv
        assert option(argv, "--nproc-per-node") == "2", argv
        assert option(argv, "--node-rank") == str(rank), argv
        assert option(argv, "--master-addr") == master, argv
        assert option(argv, "--master-port") == "29500", argv
        assert argv[-1].endswith("task.py") and os.path.isabs(argv[-1]), argv
        assert "the member script ran" in lines, lines
        # River sets the job-wide names; torchrun sets RANK and LOCAL_RANK per process.
        assert env["WORLD_SIZE"] == "4" and env["RIVER_NPROC_PER_NODE"] == "2", env
        assert env["RANK"] is None and env["LOCAL_RANK"] is None, env
        assert env["NODE_RANK"] == env["RIVER_NODE_RANK"] == str(rank), env
        assert env["MASTER_ADDR"] == master and env["MASTER_PORT"] == "29500", env


def test_shell_river_submit_launcher_torchrun(
    cluster: OverlayCluster,  # noqa: F811
    stand_in: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from tests.netns.conftest import ADMIN_TOKEN, HOST_PORT

    monkeypatch.setenv("RIVER_URL", f"http://{cluster.host.address}:{HOST_PORT}")
    monkeypatch.setenv("RIVER_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    script.chmod(script.stat().st_mode | stat.S_IROTH)
    done = cluster.host.python(
        "-m", "river_runner.cli", "submit", "--json", "--nodes", "2", "-c", "1",
        "--launcher", "torchrun", "--nproc-per-node", "1",
        "-e", f"PYTHONPATH={stand_in}", str(script),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    ended = [cluster.api.finished(r["id"], timeout=60) for r in records]
    assert [t["state"] for t in ended] == ["completed"] * 2, ended
    argv, env = launcher_records(cluster.api.task_lines(records[1]["id"]))
    assert option(argv, "--node-rank") == "1" and option(argv, "--nproc-per-node") == "1"
    assert env["WORLD_SIZE"] == "2", env


def test_bad_launcher_submissions_say_what_to_fix(cluster: OverlayCluster) -> None:  # noqa: F811
    script = {"script": "print(1)"}
    cases = [
        ({**script, "launcher": "torchrun"}, "add 'nodes'"),
        ({**script, "nodes": 2, "launcher": "mpirun"}, "launcher must be 'torchrun'"),
        ({**script, "nodes": 2, "nproc_per_node": 2}, "add launcher 'torchrun'"),
        ({**script, "nodes": 2, "launcher": "torchrun", "nproc_per_node": 0}, "at least 1"),
        ({**script, "nodes": 2, "launcher": "torchrun", "nproc_per_node": 3}, "the 2 cores"),
        (
            {**script, "nodes": 2, "launcher": "torchrun", "nproc_per_node": 2, "gpus": 1},
            "1 GPUs",
        ),
        ({"command": ["true"], "nodes": 2, "launcher": "torchrun"}, "wraps a Python script"),
    ]
    for body, message in cases:
        answer = cluster.api.request("POST", "/river/api/tasks", json={"cores": 2, **body})
        assert answer.status_code == 400, (body, answer.text)
        assert message in answer.text, (body, answer.text)
