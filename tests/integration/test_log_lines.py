"""Log lines end to end on the process backend (the embedded default): a task that draws a
tqdm progress bar and writes bytes that are not UTF-8 keeps every line through the API, the
Python client (`.logs()`, `.stream()`) and a `%%river submit` cell, and the cell shows the
bar's final state once, as a terminal would (river_runner.loglines)."""

from __future__ import annotations

from typing import Any

from river_magics import Client
from river_runner.loglines import MAX_LINE_BYTES
from tests.cluster import Cluster
from tests.integration.test_notebook_experience import execute, notebook_of, text_of
from tests.log_program import BAR_TOTAL, EXPECTED, LONG, PROGRAM, bar, joined


def _shape(lines: list[dict[str, Any]]) -> list[tuple[int, str, str, bool]]:
    return [(ln["seq"], ln["stream"], ln["text"], bool(ln.get("continued"))) for ln in lines]


def test_every_line_through_the_api_and_the_client(solo_cluster: Cluster) -> None:
    client = Client(solo_cluster.url, solo_cluster.token)
    handle = client.submit(script=PROGRAM, name="progress-bar")
    streamed = list(handle.stream(timeout=60))
    assert handle.wait(timeout=30)["state"] == "completed"

    api = solo_cluster.get(f"/river/api/tasks/{handle.id}/logs")["lines"]
    assert [line["seq"] for line in api] == list(range(1, len(api) + 1))
    assert joined(api) == EXPECTED
    # Long lines travel as marked chunks of at most 64 KiB, never as one huge line.
    assert all(len(line["text"].encode()) <= MAX_LINE_BYTES for line in api)
    chunked = [line for line in api if line.get("continued")]
    assert {line["stream"] for line in chunked} == {"stdout", "stderr"}
    # The client sees exactly what the API has, whether it reads or follows.
    assert _shape(handle.logs()) == _shape(api)
    assert _shape(streamed) == _shape(api)


def test_a_cell_shows_the_final_state_of_a_progress_bar(solo_cluster: Cluster) -> None:
    notebook = notebook_of(
        ("connect", "%load_ext river_magics\n%river connect"),
        ("bar", "%%river submit --name cell-bar\n" + PROGRAM),
    )
    execute(notebook, solo_cluster)
    cell = next(c for c in notebook.cells if c.id == "bar")
    stderr = "".join(o.text for o in cell.outputs if o.get("name") == "stderr")
    stdout = "".join(o.text for o in cell.outputs if o.get("name") == "stdout")
    # River's note of which Python ran the cell is an output of its own: stdout is the
    # task's alone.
    notes = [o for o in cell.outputs if o.get("metadata", {}).get("river", {}).get("note")]
    assert len(notes) == 1 and notes[0].data["text/plain"].startswith("river: ran with ")
    assert "ran with" not in stdout
    # The bar's ~100 KB of redraws (two chunks on the wire) show as its last state, once.
    assert stderr.split("\n") == [bar(BAR_TOTAL), "err after", ""], stderr[:500]
    assert "\r" not in stderr
    assert stdout.split("\n")[: len(EXPECTED["stdout"]) - 2] == EXPECTED["stdout"][:-2]
    assert LONG + "\ndone\n" in stdout  # the 100,000-character line whole, then the next
    assert "completed (exit 0)" in text_of(notebook, "bar")
