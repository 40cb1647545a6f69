"""`river submit|run --push NAME=FILE --pull NAME[=FILE]` against a live cluster, the CLI
as a subprocess: files travel as the remote script's variables and come back as files, on
the client's own push/pull (river_magics/shell/payload_files.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.integration.test_shell_cli import assert_one_line_error, river


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A config directory of the test's own: no real `river login` is read."""
    path = tmp_path / "config"
    path.mkdir()
    return path


SCRIPT = """
import json
config = json.loads(settings)
report = f"{config['name']} saw {len(blob)} bytes"
stats = {"size": len(blob), "first": blob[:4]}
print(report)
"""


def test_run_pushes_files_and_pulls_results_back(
    solo_cluster: Cluster,
    home: Path,
    tmp_path: Path,
) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    (tmp_path / "settings.json").write_text(json.dumps({"name": "pushy"}))
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02\xff" * 1000)
    result = river(
        solo_cluster,
        home,
        "run",
        "--push",
        f"settings={tmp_path / 'settings.json'}",
        "--push",
        f"blob={tmp_path / 'blob.bin'}",
        "--pull",
        f"report={tmp_path / 'report.txt'}",
        "--pull",
        f"stats={tmp_path / 'stats.pickle'}",
        str(script),
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    # The task's stdout is its own: River's notes (pulled files, interpreter) go to stderr.
    assert result.stdout == "pushy saw 4000 bytes\n", result.stdout
    assert (tmp_path / "report.txt").read_text() == "pushy saw 4000 bytes"
    stats = pickle.loads((tmp_path / "stats.pickle").read_bytes())
    assert stats == {"size": 4000, "first": b"\x00\x01\x02\xff"}
    assert f"pulled report (text, 20 bytes) to {tmp_path / 'report.txt'}" in result.stderr


def test_submit_pushes_and_refuses_pull_and_bad_specs(
    solo_cluster: Cluster,
    home: Path,
    tmp_path: Path,
) -> None:
    script = tmp_path / "job.py"
    script.write_text("print(len(data))\n")
    (tmp_path / "data.txt").write_text("12345")
    submitted = river(
        solo_cluster,
        home,
        "submit",
        "--json",
        "--push",
        f"data={tmp_path / 'data.txt'}",
        str(script),
    )
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    done = solo_cluster.wait_task(task["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    lines = solo_cluster.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
    assert [line["text"] for line in lines if line["stream"] == "stdout"] == ["5"]

    refused = river(solo_cluster, home, "submit", "--pull", "y", str(script))
    assert "use `river run --pull" in assert_one_line_error(refused, 2)
    missing = river(solo_cluster, home, "run", "--push", "x=/nonexistent/file", str(script))
    assert "cannot read /nonexistent/file" in assert_one_line_error(missing, 2)
    malformed = river(solo_cluster, home, "run", "--push", "no-file", str(script))
    assert "--push takes NAME=FILE" in assert_one_line_error(malformed, 2)
    # Files may be pushed to a command (tests/integration/test_command_push.py); values
    # pulled back need a Python script.
    command = river(solo_cluster, home, "run", "--pull", "y", "--", "true")
    assert "Python SCRIPT" in assert_one_line_error(command, 2)
