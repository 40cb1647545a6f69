"""Which Python runs a python task on the process backend (issue #14): a venv by its
directory or its bin/python, a node's named environment, a missing one failing at once,
the magic's default (the kernel's own interpreter) with its fallback, and the note that
says which interpreter ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from tests.cluster import Cluster

MARKER = "import river_marker, sys; print(river_marker.WHERE, sys.executable)"
VERSION = ".".join(str(p) for p in sys.version_info[:3])


def make_venv(directory: Path, where: str) -> Path:
    """A real venv (no pip) with a module `river_marker` only it can import."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    site = directory / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (site / "site-packages" / "river_marker.py").write_text(f"WHERE = {where!r}\n")
    return directory


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    c = Cluster(tmp_path_factory.mktemp("python"))  # its root is reachable by task accounts
    venv = make_venv(c.root / "venvs" / "lab", "lab-venv")
    c.start_host()
    try:
        c.start_runner("py", "--cpus", "0", "--python-env", f"lab={venv}")
        yield c, venv
    finally:
        c.close()


def _notes(c: Cluster, task_id: str) -> list[str]:
    lines = c.get(f"/river/api/tasks/{task_id}/logs")["lines"]
    return [line["text"] for line in lines if line["stream"] == "river"]


def _stdout(c: Cluster, task_id: str) -> str:
    lines = c.get(f"/river/api/tasks/{task_id}/logs")["lines"]
    return "\n".join(line["text"] for line in lines if line["stream"] == "stdout")


@pytest.mark.parametrize("form", ["directory", "interpreter", "name"])
def test_a_task_runs_with_the_venv_it_names(cluster: tuple[Cluster, Path], form: str) -> None:
    c, venv = cluster
    python = {"directory": str(venv), "interpreter": str(venv / "bin/python"), "name": "lab"}
    task = c.submit(script=MARKER, python=python[form])
    done = c.wait_task(task["id"], {"completed", "failed"})
    assert done["state"] == "completed", (done, _stdout(c, task["id"]))
    assert _stdout(c, task["id"]) == f"lab-venv {venv / 'bin/python'}"
    assert _notes(c, task["id"]) == [f"ran with {venv / 'bin/python'} (Python {VERSION})"]


def test_without_python_the_runners_own_runs_as_before(cluster: tuple[Cluster, Path]) -> None:
    c, _ = cluster
    task = c.submit(script=MARKER)
    done = c.wait_task(task["id"], {"completed", "failed"})
    assert done["state"] == "failed"  # River's venv has no river_marker
    assert _notes(c, task["id"]) == []


@pytest.mark.parametrize(
    ("python", "reason"),
    [
        ("/nonexistent/venv", "/nonexistent/venv does not exist on this node"),
        ("elsewhere", "python environment 'elsewhere' is not offered by this node (offered: lab"),
        ("/etc", "/etc is a directory without bin/python"),
    ],
)
def test_a_missing_interpreter_fails_the_task_at_once(
    cluster: tuple[Cluster, Path], python: str, reason: str
) -> None:
    c, _ = cluster
    started = time.monotonic()
    task = c.submit(script="print('never')", python=python)
    done = c.wait_task(task["id"], {"failed", "completed"}, timeout=15)
    assert time.monotonic() - started < 10
    assert done["state"] == "failed", done
    assert reason in (done.get("reason") or ""), done


def test_the_fallback_runs_the_runners_own_and_says_so(cluster: tuple[Cluster, Path]) -> None:
    c, _ = cluster
    task = c.submit(
        script="import sys; print(sys.version_info[0])",
        python="/nonexistent/bin/python",
        python_fallback=True,
    )
    done = c.wait_task(task["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    (note,) = _notes(c, task["id"])
    assert note.startswith(f"ran with {sys.executable} (Python {VERSION}), not ")
    assert "/nonexistent/bin/python does not exist on this node" in note


@pytest.mark.skipif(os.geteuid() != 0, reason="tasks change account only under a root runner")
def test_an_interpreter_the_task_account_cannot_run_fails_with_the_reason(
    cluster: tuple[Cluster, Path],
) -> None:
    c, _ = cluster
    private = c.root / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    venv = private / "venv"
    if not venv.exists():
        make_venv(venv, "private")
    task = c.submit(script="print('never')", python=str(venv))
    done = c.wait_task(task["id"], {"failed", "completed"}, timeout=15)
    assert done["state"] == "failed", done
    # The admin's own uid under a root runner (river_runner/task_account.py, --task-uid-range)
    assert "cannot be run by the task account 'river-user-" in done["reason"], done


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"script": "1", "python": "venvs/lab"}, "'python' must be an absolute path"),
        ({"script": "1", "python": 3}, "'python' must be an absolute path"),
        ({"command": ["true"], "python": "/usr/bin/python3"}, "python (script) tasks"),
        ({"script": "1", "python": "lab", "image": "busybox"}, "runs the container's python"),
        ({"script": "1", "python": "lab", "python_fallback": "yes"}, "'python_fallback'"),
    ],
)
def test_bad_python_requests_are_400_saying_what_to_fix(
    cluster: tuple[Cluster, Path], body: dict, says: str
) -> None:
    c, _ = cluster
    response = c.request("POST", "/river/api/tasks", json=body)
    assert response.status_code == 400, response.text
    assert says in response.json()["message"], response.text


def test_the_magic_runs_the_cell_with_the_kernels_interpreter(
    cluster: tuple[Cluster, Path], tmp_path: Path
) -> None:
    """A kernel running in the lab's venv: its cells run with that venv on the node (a
    shared filesystem), and the cell says which interpreter ran."""
    c, venv = cluster
    # The kernel needs ipykernel and River's client: the lab venv sees River's packages.
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "river-kernel.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    spec_dir = tmp_path / "kernels" / "lab"
    spec_dir.mkdir(parents=True)
    argv = [str(venv / "bin/python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "lab", "language": "python"})
    )
    manager = KernelManager(
        kernel_name="lab",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            f"%load_ext river_magics\n%river connect {c.url} --token {c.token}"
        ),
        nbformat.v4.new_code_cell(f"%%river submit\n{MARKER}", id="default"),
        nbformat.v4.new_code_cell(
            "%%river submit --python /nonexistent/venv\nprint('never')", id="explicit"
        ),
    ]
    NotebookClient(notebook, timeout=120, km=manager, allow_errors=True).execute()
    outputs = {
        cell.get("id"): "".join(
            o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs
        )
        for cell in notebook.cells
    }
    interpreter = venv / "bin/python"
    assert f"river: ran with {interpreter} (Python {VERSION})" in outputs["default"], outputs
    # The note is an output of its own (marked as River's), not a line of the task's stdout.
    cell = next(c for c in notebook.cells if c.get("id") == "default")
    notes = [o for o in cell.outputs if o.get("metadata", {}).get("river", {}).get("note")]
    assert [o["data"]["text/plain"] for o in notes] == [
        f"river: ran with {interpreter} (Python {VERSION})"
    ], cell.outputs
    stdout = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
    assert "ran with" not in stdout and stdout.startswith("lab-venv "), stdout
    assert f"lab-venv {interpreter}" in outputs["default"], outputs
    assert "/nonexistent/venv does not exist on this node" in outputs["explicit"], outputs
    assert "never" not in outputs["explicit"].replace("print('never')", "")
