"""Pushed files for command tasks (issue #17, "Files"): `river run --push NAME=FILE -- CMD`
and `Client.submit(command, files={NAME: FILE})` send FILE over the data plane as a blob
that the runner places at NAME in the task's directory before the command starts. Real
host and runner processes (process backend), the real `river` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from river_magics import Client
from river_magics.errors import RiverError
from tests.cluster import Cluster, running_cluster

RIVER = [sys.executable, "-m", "river_runner.cli"]
TASK_MAX = 1024**2  # data_task_max_bytes here: 1 MiB


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("cmdpush"))
    with running_cluster(
        root,
        ("p1", "--cpus", "0"),
        extra_host_args=[f"--RiverHost.data_task_max_bytes={TASK_MAX}"],
    ) as made:
        yield made


@pytest.fixture(scope="module")
def token(cluster: Cluster) -> str:
    return cluster.make_users("pia")["pia"]


def _river(cluster: Cluster, token: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RIVER_URL", "RIVER_TOKEN")}
    env.update(XDG_CONFIG_HOME=str(home), RIVER_URL=cluster.url, RIVER_TOKEN=token)
    return subprocess.run([*RIVER, *args], env=env, capture_output=True, text=True, timeout=120)


def test_river_run_push_places_the_file_for_the_command(
    cluster: Cluster, token: str, tmp_path: Path
) -> None:
    local = tmp_path / "input.csv"
    local.write_text("a,b\n1,2\n")
    ran = _river(
        cluster,
        token,
        tmp_path,
        "run",
        "--push",
        f"data/in.csv={local}",
        "--",
        "/bin/sh",
        "-c",
        'cat data/in.csv && test "$RIVER_FILES_DIR/data/in.csv" -ef data/in.csv && echo same',
    )
    assert ran.returncode == 0, ran.stderr
    assert "a,b\n1,2\n" in ran.stdout and "same" in ran.stdout, ran.stdout
    log = (cluster.root / "host.log").read_text(errors="replace")
    assert f"({local.stat().st_size} bytes)" in log  # it went as a blob over the data plane


def test_client_submit_with_files_runs_a_command_that_reads_them(
    cluster: Cluster, token: str, tmp_path: Path
) -> None:
    (tmp_path / "one.txt").write_text("first file\n")
    with Client(cluster.url, token) as client:
        handle = client.submit(
            ["cat", "one.txt", "deep/two.txt"],
            files={"one.txt": tmp_path / "one.txt", "deep/two.txt": tmp_path / "one.txt"},
        )
        handle.wait(timeout=90)
        assert handle.status == "completed", handle.last
        lines = [line["text"] for line in client.logs(handle.id)]
    assert lines.count("first file") == 2, lines


def test_a_file_over_the_task_limit_is_refused_before_upload_naming_the_limit(
    cluster: Cluster, token: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(TASK_MAX + 1))
    with Client(cluster.url, token) as client, pytest.raises(RiverError) as refused:
        client.submit(["cat", "big.bin"], files={"big.bin": big})
    assert refused.value.status == 413
    assert "data_task_max_bytes" in str(refused.value) and "1.0 MiB" in str(refused.value)
    ran = _river(cluster, token, tmp_path, "run", "--push", f"big.bin={big}", "--", "true")
    assert ran.returncode != 0 and "data_task_max_bytes" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
    log = (cluster.root / "host.log").read_text(errors="replace")
    assert f"({big.stat().st_size} bytes)" not in log  # nothing of it was uploaded
    with Client(cluster.url, token) as client:
        assert not [t for t in client.tasks() if "big.bin" in str(t.get("command"))]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("../up.txt=F", "relative path without '..'"),
        ("/abs.txt=F", "relative path without '..'"),
        ("noequals", "NAME=FILE"),
        ("x=MISSING", "no file"),
    ],
)
def test_a_bad_push_is_a_one_line_usage_error(
    cluster: Cluster, token: str, tmp_path: Path, spec: str, says: str
) -> None:
    local = tmp_path / "f.txt"
    local.write_text("x")
    spec = spec.replace("=F", f"={local}").replace("MISSING", str(tmp_path / "missing"))
    ran = _river(cluster, token, tmp_path, "run", "--push", spec, "--", "true")
    assert ran.returncode == 2, (ran.returncode, ran.stderr)
    assert "Traceback" not in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    assert "--push" in ran.stderr and says in ran.stderr, ran.stderr
