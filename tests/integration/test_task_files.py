"""`put` / `get`: files into and out of a running process task over the data plane
(issue #17, "Files"). Real host and runner processes, real tar streams, the real CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from river_magics import Client
from river_magics.errors import RiverError
from tests.cluster import Cluster, as_user, running_cluster, wait_for

A = "/river/api"
RIVER = [sys.executable, "-m", "river_runner.cli"]
# The task waits for the put's last file, then shows what arrived and runs the script.
WAITER = (
    "while [ ! -f inbox/zz_done ]; do sleep 0.05; done; "
    "cat inbox/hello.txt; ./inbox/run.sh; ln -s / escape; "
    "mkdir -p out/sub; echo result > out/a.txt; printf 'x' > out/sub/b; chmod 750 out/sub/b; "
    "echo ready; sleep 300"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("files"))
    with running_cluster(root, ("n1", "--cpus", "0")) as made:
        yield made


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> dict[str, str]:
    made = cluster.make_users("alice", "bob")
    made.update(cluster.make_users("vera", role="viewer"))
    return made


def _inbox(base: Path) -> Path:
    inbox = base / "inbox"
    inbox.mkdir()
    (inbox / "hello.txt").write_text("hello from the notebook\n")
    (inbox / "run.sh").write_text("#!/bin/sh\necho script ran\n")
    (inbox / "run.sh").chmod(0o755)
    (inbox / "zz_done").write_text("")
    return inbox


def _lines(client: Client, task: str) -> list[str]:
    return [line["text"] for line in client.logs(task)]


@pytest.fixture(scope="module")
def running(cluster: Cluster, tokens: dict[str, str]) -> Iterator[str]:
    with Client(cluster.url, tokens["alice"]) as client:
        handle = client.submit(["/bin/sh", "-c", WAITER])
        wait_for(lambda: handle.status == "running", 60, what="the task to run")
        yield handle.id
        handle.kill()


def test_a_directory_put_into_a_running_task_is_seen_by_it_and_comes_back_equal(
    cluster: Cluster, tokens: dict[str, str], running: str, tmp_path: Path
) -> None:
    inbox = _inbox(tmp_path)
    with Client(cluster.url, tokens["alice"]) as client:
        client.put(inbox, running, "inbox")
        wait_for(lambda: "ready" in _lines(client, running), 30, what="the task to see the files")
        lines = _lines(client, running)
        assert "hello from the notebook" in lines and "script ran" in lines
        back = client.get_file(running, "inbox", tmp_path / "back")
        assert Path(back["path"]) == tmp_path / "back"
        for name in ("hello.txt", "run.sh", "zz_done"):
            sent, came = inbox / name, tmp_path / "back" / name
            assert came.read_bytes() == sent.read_bytes()
            assert stat.S_IMODE(came.stat().st_mode) == stat.S_IMODE(sent.stat().st_mode)
        # What the task wrote itself, with its modes.
        client.get_file(running, "out", tmp_path)
    assert (tmp_path / "out" / "a.txt").read_text() == "result\n"
    assert stat.S_IMODE((tmp_path / "out" / "sub" / "b").stat().st_mode) == 0o750


@pytest.mark.parametrize(
    "path", ["../escaped.txt", "/tmp/river-put-escaped.txt", "escape/tmp/river-put-escaped.txt"]
)
def test_a_path_out_of_the_tasks_directory_is_refused_and_nothing_is_written(
    cluster: Cluster, tokens: dict[str, str], running: str, tmp_path: Path, path: str
) -> None:
    local = tmp_path / "escaped.txt"
    local.write_text("should not land")
    with Client(cluster.url, tokens["alice"]) as client:
        wait_for(lambda: "ready" in _lines(client, running), 60, what="the symlink to be planted")
        with pytest.raises(RiverError) as refused:
            client.put(local, running, path)
        assert refused.value.status == 400, refused.value
        assert "task's directory" in str(refused.value)
        with pytest.raises(RiverError) as out:
            client.get_file(running, "escape/etc/hostname", tmp_path / "got")
        assert out.value.status == 400
    assert not Path("/tmp/river-put-escaped.txt").exists()
    assert not (tmp_path / "got").exists()


def test_only_the_owner_copies_files_and_only_while_the_task_runs(
    cluster: Cluster, tokens: dict[str, str], running: str, tmp_path: Path
) -> None:
    local = tmp_path / "f.txt"
    local.write_text("x")
    with Client(cluster.url, tokens["bob"]) as bob:
        for call in (
            lambda: bob.put(local, running, "f.txt"),
            lambda: bob.get_file(running, "inbox", tmp_path / "b"),
        ):
            with pytest.raises(RiverError) as hidden:
                call()
            assert hidden.value.status == 404
    with httpx.Client(base_url=cluster.url, **as_user(tokens["vera"])) as vera:
        answer = vera.post(f"{A}/tasks/{running}/files/get", json={"path": "inbox"})
        assert answer.status_code == 403 and "user role" in answer.json()["message"]
    with Client(cluster.url, tokens["alice"]) as client:
        done = client.submit(["true"])  # queued behind `running` (one core), then killed
        done.kill()
        wait_for(lambda: done.status == "killed", 30, what="the task to end")
        with pytest.raises(RiverError) as over:
            client.put(local, done.id, "f.txt")
        assert over.value.status == 409 and "only while it runs" in str(over.value)


def test_river_put_and_get_in_the_shell(
    cluster: Cluster, tokens: dict[str, str], running: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RIVER_URL", "RIVER_TOKEN")}
    env.update(XDG_CONFIG_HOME=str(tmp_path), RIVER_URL=cluster.url, RIVER_TOKEN=tokens["alice"])
    local = tmp_path / "note.txt"
    local.write_text("via the shell\n")

    def river(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RIVER, *args], env=env, capture_output=True, text=True, timeout=90)

    put = river("put", str(local), f"{running}:shell/note.txt")
    assert put.returncode == 0, put.stderr
    got = river("get", f"{running}:shell/note.txt", str(tmp_path / "again.txt"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "again.txt").read_text() == "via the shell\n"
    for bad in (
        ["put", str(local)],
        ["put", str(local), "nocolon"],
        ["get", "x:y", "z"],
        ["put", str(tmp_path / "missing"), f"{running}:m"],
    ):
        result = river(*bad)
        assert result.returncode == 2, (bad, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_put_over_the_users_limit_is_refused_before_upload_naming_the_limit(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    root = Path(tmp_path_factory.mktemp("files-small"))
    with running_cluster(
        root, extra_host_args=[f"--RiverHost.data_user_max_bytes={1024**2}"]
    ) as small:
        token = small.make_users("carol")["carol"]
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(2 * 1024**2))
        with Client(small.url, token) as client, pytest.raises(RiverError) as refused:
            client.put(big, "123456789", "big.bin")
        assert refused.value.status == 413
        assert "data_user_max_bytes" in str(refused.value) and "1.0 MiB" in str(refused.value)
        log = (small.root / "host.log").read_text(errors="replace")
        assert "data plane: received blob" not in log


def test_put_and_get_magics_in_a_real_kernel_with_usage_errors(
    cluster: Cluster, tokens: dict[str, str], running: str, tmp_path: Path
) -> None:
    from tests.integration.test_notebook_experience import execute, notebook_of, text_of

    # Alice's running task (the node has one core: a task of the notebook's own would queue).
    (tmp_path / "in.txt").write_text("from the kernel\n")
    notebook = notebook_of(
        (
            "connect",
            f"%load_ext river_magics\n%river connect {cluster.url} --token {tokens['alice']}",
        ),
        ("put", f"%river put {tmp_path}/in.txt {running}:kept/in.txt"),
        ("get", f"%river get {running}:kept/in.txt {tmp_path}/out.txt"),
        ("one", f"%river put {tmp_path}/in.txt"),
        ("missing", f"%river put {tmp_path}/nothing {running}:x"),
        ("form", f"%river put {tmp_path}/in.txt no-colon-here"),
    )
    execute(notebook, cluster)
    assert "put " in text_of(notebook, "put"), text_of(notebook, "put")
    assert (tmp_path / "out.txt").read_text() == "from the kernel\n", text_of(notebook, "get")
    for cell, needle in (("one", "ID:PATH"), ("missing", "here to put"), ("form", "ID:PATH")):
        text = text_of(notebook, cell)
        assert "UsageError" in text and needle in text, text
        assert "Traceback (most recent call last)" not in text and "File " not in text, text
