"""Pure parts of the notebook experience: push/pull payloads, array specs and throttling,
the host's pull-marker diversion, and the watch bookkeeping. No server needed."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from river_magics.arguments import HelpShown, build_parser, parse_line
from river_magics.common import parse_array, submit_body
from river_magics.errors import RiverError
from river_magics.payload import PayloadError, decode_pulled, pickle_values, wrap_script
from river_magics.watching import NO_REPLAY, WatchSet
from river_runner.protocol import PULL_ERROR_MARKER, PULL_MARKER
from river_runner.spec import SpecError
from river_server.arrays import array_env, throttle
from river_server.arrays import parse_array as host_parse_array
from river_server.blobs import BlobError, BlobStore
from river_server.logstore import LogStore


def run_remote(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )


def pulled_from(stdout: str) -> bytes:
    parts = [line.split(":", 2)[2] for line in stdout.splitlines() if line.startswith(PULL_MARKER)]
    return base64.b64decode("".join(parts))


# ---- push / pull ---------------------------------------------------------------------------


def test_wrapped_cell_round_trips_a_dict_and_an_array() -> None:
    pushed = pickle_values({"config": {"scale": 3}, "data": np.arange(6.0)})
    source = "doubled = data * config['scale']\nsummary = {'n': len(data), 'sum': float(doubled.sum())}\nprint('ok')\n"
    result = run_remote(wrap_script(source, pushed, ["doubled", "summary"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok\n")
    values = decode_pulled(pulled_from(result.stdout))
    np.testing.assert_array_equal(values["doubled"], np.arange(6.0) * 3)
    assert values["summary"] == {"n": 6, "sum": 45.0}


def test_large_pull_is_split_into_parts() -> None:
    result = run_remote(wrap_script("import os\nblob = os.urandom(100_000)\n", {}, ["blob"]))
    markers = [line for line in result.stdout.splitlines() if line.startswith(PULL_MARKER)]
    assert len(markers) > 5 and all(len(line) < 20_000 for line in markers)
    assert len(decode_pulled(pulled_from(result.stdout))["blob"]) == 100_000


def test_unpicklable_push_is_refused_naming_the_variable() -> None:
    with pytest.raises(PayloadError, match=r"cannot push 'lock'.*lock.*cannot be pickled"):
        pickle_values({"fine": 1, "lock": threading.Lock()})
    with pytest.raises(PayloadError, match="at most 1 MiB"):
        pickle_values({"big": np.random.default_rng(0).random(300_000)}, limit=2**20)


def test_remote_pull_errors_name_the_variable_and_fail_the_task() -> None:
    missing = run_remote(wrap_script("x = 1\n", {}, ["y"]))
    assert missing.returncode == 1
    assert "cannot pull 'y': the cell did not define y" in missing.stderr
    assert PULL_ERROR_MARKER + "cannot pull 'y'" in missing.stdout
    unpicklable = run_remote(wrap_script("import threading\nx = threading.Lock()\n", {}, ["x"]))
    assert unpicklable.returncode == 1 and "cannot pull 'x'" in unpicklable.stderr


def test_an_exception_in_the_cell_shows_the_cells_own_traceback_and_pulls_nothing() -> None:
    result = run_remote(wrap_script("a = 1\nb = a / 0\n", {}, ["a"]))
    assert result.returncode == 1
    assert 'File "<river cell>", line 2' in result.stderr and "b = a / 0" in result.stderr
    assert "_river_run" not in result.stderr and PULL_MARKER not in result.stdout


def test_submit_body_checks_push_and_pull() -> None:
    with pytest.raises(RiverError, match="Python cells"):
        submit_body("echo hi", pull=["x"])
    with pytest.raises(PayloadError, match="not a variable name"):
        submit_body(script="x=1", pull=["x-y"])
    body, pull = submit_body(script="y = x", push={"x": 1}, pull=["y"])
    assert pull == ["y"] and "_river_run" in body["script"] and body["kind"] == "python"


# ---- arrays --------------------------------------------------------------------------------


def test_array_specs() -> None:
    assert parse_array("0-31%4") == (list(range(32)), 4)
    assert parse_array("1,3,8-10") == ([1, 3, 8, 9, 10], None)
    assert parse_array("0-10:5") == ([0, 5, 10], None)
    assert parse_array([2, 4]) == ([2, 4], None)
    for bad, message in (
        ("5-1", "empty range"),
        ("0-3%0", "at least 1"),
        ("1,1", "twice"),
        ("a-b", "bad array"),
        ("0-20000", "at most"),
    ):
        with pytest.raises(RiverError, match=message):
            parse_array(bad)


def test_host_validates_the_array_field() -> None:
    assert host_parse_array({}) is None
    field = host_parse_array({"array": {"id": "abc", "index": 3, "size": 8, "limit": 2}})
    assert field == {"id": "abc", "index": 3, "size": 8, "limit": 2}
    assert array_env(field)["RIVER_ARRAY_INDEX"] == "3"
    for bad in ({"id": "a b", "index": 0}, {"id": "a"}, {"id": "a", "index": -1}, [1]):
        with pytest.raises(SpecError):
            host_parse_array({"array": bad})


def _task(id: int, owner: str = "ann", array: str | None = "a", limit: int | None = 2):
    spec = {"array": {"id": array, "index": id, "limit": limit}} if array else {}
    return SimpleNamespace(id=id, owner=owner, spec=spec)


def test_throttle_keeps_each_array_within_its_limit() -> None:
    queued = [_task(i) for i in range(5)] + [_task(10, array=None), _task(11, owner="bob")]
    eligible, held = throttle(queued, Counter({("ann", "a"): 1}))
    # One member of ann's array already runs: one more may go; bob's array "a" is separate.
    assert [t.id for t in eligible] == [0, 10, 11]
    assert sorted(held) == [1, 2, 3, 4] and "limit" in held[1]
    unlimited = [_task(i, limit=None) for i in range(4)]
    assert len(throttle(unlimited, Counter())[0]) == 4


# ---- the host's blob store and pull diversion ----------------------------------------------


def test_pull_markers_leave_the_log_and_become_a_blob(tmp_path: Path) -> None:
    logs, blobs = LogStore(tmp_path / "logs"), BlobStore(tmp_path / "blobs", 10_000)
    data = base64.b64encode(b"hello world").decode()
    lines = [
        {"seq": 1, "stream": "stdout", "text": "before", "ts": 1.0},
        {"seq": 2, "stream": "stdout", "text": f"partial{PULL_MARKER}1/2:{data[:8]}", "ts": 1.0},
        {"seq": 3, "stream": "stdout", "text": f"{PULL_MARKER}2/2:{data[8:]}", "ts": 1.0},
    ]
    fresh = blobs.append_log(logs, 7, lines)
    assert [(x["stream"], x["text"][:7]) for x in fresh] == [
        ("stdout", "before"),
        ("stdout", "partial"),
        ("river", "[river]"),
    ]
    assert blobs.get(7, "river-pull") == b"hello world"
    # A re-sent batch appends nothing twice.
    assert blobs.append_log(logs, 7, lines) == []
    assert blobs.get(7, "river-pull") == b"hello world"
    assert all("river-pull:" not in x["text"] for x in logs.read(7))


def test_pull_errors_and_limits_are_kept_for_the_client(tmp_path: Path) -> None:
    logs, blobs = LogStore(tmp_path / "logs"), BlobStore(tmp_path / "blobs", 10)
    blobs.append_log(logs, 1, [{"seq": 1, "text": f"{PULL_ERROR_MARKER}cannot pull 'y'"}])
    with pytest.raises(BlobError, match="cannot pull 'y'") as error:
        blobs.get(1, "river-pull")
    assert error.value.status == 409
    big = base64.b64encode(b"x" * 100).decode()
    blobs.append_log(logs, 2, [{"seq": 1, "text": f"{PULL_MARKER}1/1:{big}"}])
    with pytest.raises(BlobError, match="blob_max_bytes"):
        blobs.get(2, "river-pull")
    with pytest.raises(BlobError, match="at most 10 bytes") as error:
        blobs.put(3, "data", b"y" * 11)
    assert error.value.status == 413


# ---- watch bookkeeping ---------------------------------------------------------------------


def test_watch_set_passes_each_line_once_and_ends_after_the_terminal_record() -> None:
    watch = WatchSet(["1", "2"], logs=True)
    assert watch.log({"task_id": "1", "seq": 1, "text": "a"})
    assert watch.log({"task_id": "1", "seq": 1, "text": "a"}) is None  # replayed
    assert watch.log({"task_id": "3", "seq": 1}) is None  # not ours
    assert watch.lines("2", [{"seq": 1}, {"seq": 2}]) == [
        {"task_id": "2", "seq": 1},
        {"task_id": "2", "seq": 2},
    ]
    assert watch.stream_since() == 1
    watch.task({"id": "1", "state": "queued"})
    watch.task({"id": "2", "state": "queued"})
    assert watch.all_waiting()
    assert watch.task({"id": "1", "state": "queued"}) is None  # no change, not repeated
    assert watch.tail_needed("task", {"task": {"id": "1", "state": "completed"}}) == "1"
    assert watch.tail_needed("task", {"task": {"id": "1", "state": "running"}}) is None
    assert watch.task({"id": "1", "state": "completed"})
    assert watch.pending == ["2"] and not watch.done
    watch.task({"id": "2", "state": "killed"})
    assert watch.done and WatchSet(["1"], logs=False).stream_since() == NO_REPLAY


# ---- the magic's new options (no server: a request would fail with "cannot reach") ---------


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RIVER_URL", f"http://127.0.0.1:{port}")
    shell = InteractiveShell.instance()
    from river_magics import load_ipython_extension

    load_ipython_extension(shell)
    yield shell


def test_push_problems_are_usage_errors_before_any_request(ip: InteractiveShell) -> None:
    ip.user_ns.update(lock=threading.Lock(), fine=1)
    with pytest.raises(UsageError, match="cannot push 'missing': no variable named missing"):
        ip.run_cell_magic("river", "submit --push fine,missing", "print(1)")
    with pytest.raises(UsageError, match="cannot push 'lock': this lock cannot be pickled"):
        ip.run_cell_magic("river", "submit --push fine,lock", "print(1)")
    with pytest.raises(UsageError, match="cannot reach"):  # a good push does send
        ip.run_cell_magic("river", "submit --push fine", "print(1)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("submit --push 1x", "not a variable name"),
        ("submit --pull a,b-c", "not a variable name"),
        ("submit --array 5-1", "empty range"),
        ("submit --array 0-3%0", "at least 1"),
        ("submit --array 0-3 -t a -t b", "either --array or several -t"),
        ("run --array x -- true", "bad array"),
        ("submit -t a -t 'b c'", "target"),
        ("dashboard --refresh 0", "more than 0"),
        ("run --pull x -- true", "unrecognized arguments: --pull"),
    ],
)
def test_new_options_refuse_bad_values(ip: InteractiveShell, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        if line.startswith("submit"):
            ip.run_cell_magic("river", line, "print(1)")
        else:
            ip.run_line_magic("river", line)


def test_new_options_parse() -> None:
    args = parse_line(build_parser(), "submit --push a,b --push c --pull d -t n1 -t n2 --name x")
    assert (args.push, args.pull, args.targets, args.target) == (
        ["a", "b", "c"],
        ["d"],
        ["n1", "n2"],
        None,
    )
    assert parse_line(build_parser(), "submit --array 0-31%4").array == "0-31%4"
    assert parse_line(build_parser(), "dashboard").refresh == 5.0


def test_dashboard_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HelpShown):
        parse_line(build_parser(), "dashboard --help")
    assert "--refresh" in capsys.readouterr().out
