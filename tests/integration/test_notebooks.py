"""Notebooks executed headlessly (nbclient, real kernels) against a live cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.cluster import REPO, Cluster


def execute(path: Path, cluster: Cluster, allow_errors: bool = False) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("RIVER_URL", "RIVER_TOKEN")}
    os.environ.update(RIVER_URL=cluster.url, RIVER_TOKEN=cluster.token)
    try:
        NotebookClient(
            notebook, timeout=120, kernel_name="python3", allow_errors=allow_errors
        ).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def cell_text(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    cell = next(c for c in notebook.cells if c.get("id") == cell_id)
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def test_quickstart_shows_the_remote_result(solo_cluster: Cluster) -> None:
    notebook = execute(REPO / "notebooks" / "quickstart.ipynb", solo_cluster)
    submitted = cell_text(notebook, "submit")
    assert "sum = 45" in submitted and "completed (exit 0)" in submitted
    assert "river-cli-ok" in cell_text(notebook, "run")
    assert "solo" in cell_text(notebook, "nodes")
    assert "completed ['42']" in cell_text(notebook, "api")


def test_a_failing_remote_cell_reports_its_exit_status(
    solo_cluster: Cluster, tmp_path: Path
) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext river_magics\n%river connect", id="connect"),
        nbformat.v4.new_code_cell(
            "%%river submit\nimport sys\nprint('partial')\nsys.exit(3)", id="fails"
        ),
        nbformat.v4.new_code_cell("%river run -t nowhere -- true", id="bad-target"),
        nbformat.v4.new_code_cell("%river run -c -1 -- true", id="bad-cores"),
    ]
    path = tmp_path / "failing.ipynb"
    nbformat.write(notebook, path)
    executed = execute(path, solo_cluster, allow_errors=True)
    # A failed task is a result, not a notebook error: its output and exit status show.
    failed = cell_text(executed, "fails")
    assert "partial" in failed and "failed (exit 3)" in failed
    assert not [o for o in executed.cells[1].outputs if o.output_type == "error"]
    # Bad input is a one-line usage error, never a traceback.
    for cell_id, fragment in (("bad-target", "unknown node"), ("bad-cores", "cores")):
        text = cell_text(executed, cell_id)
        assert text.startswith("UsageError:") and fragment in text, text
        assert "Traceback" not in text


def test_river_up_check_runs_the_quickstart() -> None:
    """The README's main job: an embedded cluster drives the quickstart notebook."""
    result = subprocess.run(
        [sys.executable, "-m", "river_runner.cli", "up", "--check", "notebooks/quickstart.ipynb"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ran without errors" in result.stdout


def test_river_up_check_fails_on_a_broken_notebook(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext river_magics\n%river connect\n%river status 1")
    ]
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    result = subprocess.run(
        [sys.executable, "-m", "river_runner.cli", "up", "--check", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1
    assert "no task 1" in result.stderr
