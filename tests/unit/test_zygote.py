"""The supervisor fork server: supervisors forked by the zygote behave like exec'd ones
(environment, doorbell on stdout, output records, result), and a zygote that cannot start
makes `spawn` answer None (the process backend then execs), never raise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from river_runner import supervise
from river_runner.zygote_client import ZygoteClient


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_forked_supervisor_runs_the_task_with_its_env_and_rings(tmp_path: Path) -> None:
    client = ZygoteClient(sys.executable)
    bell_read, bell_write = os.pipe()
    try:
        pid = client.spawn(
            {
                "dir": str(tmp_path),
                "argv": ["/bin/sh", "-c", 'echo "hello $RIVER_ZYGOTE_TEST"; exit 3'],
                "memory": 0,
                "cpus": [],
                "env": {"PATH": os.environ["PATH"], "RIVER_ZYGOTE_TEST": "from-env"},
            },
            bell_write,
        )
        os.close(bell_write)
        assert isinstance(pid, int) and pid > 0
        assert pid != client._proc.pid  # a child of the zygote, not the zygote
        rang = _read_all(bell_read)  # EOF once the supervisor has exited
    finally:
        os.close(bell_read)
        client.close()
    assert rang  # the doorbell was rung for the output
    result = json.loads((tmp_path / supervise.RESULT_FILE).read_text())
    assert result["exit_code"] == 3 and not result["killed"]
    lines = (tmp_path / supervise.OUTPUT_FILE).read_text().splitlines(keepends=True)
    texts = [supervise.parse_record(line)[3] for line in lines if supervise.parse_record(line)]
    assert texts == ["hello from-env"]
    assert (tmp_path / supervise.PID_FILE).read_text() == str(pid)


def test_the_zygote_exits_when_the_runner_side_closes() -> None:
    client = ZygoteClient(sys.executable)
    read_end, write_end = os.pipe()
    try:
        client.spawn(
            {"dir": "/nonexistent", "argv": ["true"], "memory": 0, "cpus": [], "env": {}},
            write_end,
        )
    finally:
        os.close(write_end)
        os.close(read_end)
    proc = client._proc
    assert proc is not None and proc.poll() is None
    client.close()
    assert proc.poll() is not None


def test_no_zygote_means_none_not_an_error(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        broken = ZygoteClient(str(tmp_path / "no-python"))
        assert broken.spawn({"dir": str(tmp_path)}, write_end) is None
        assert ZygoteClient(sys.executable, use=False).spawn({}, write_end) is None
    finally:
        os.close(read_end)
        os.close(write_end)
