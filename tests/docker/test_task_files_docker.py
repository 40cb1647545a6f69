"""`put` / `get` with containers (issue #17, "Files"): a directory goes into a running
docker VPS and a running docker task, a command inside sees it with its modes, and comes
back equal. Inside a container PATH may be anywhere in the container's own filesystem (it
is the owner's); a symlink planted in it cannot lead to the runner's filesystem, because
dockerd resolves PATH within the container's root. Another user hears 404.
Real dockerd, real host and docker runner; the files are checked with `docker exec`."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from river_magics import Client
from river_magics.errors import RiverError
from tests.cluster import Cluster, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, containers_of, remove_containers

NODE = f"files-{uuid.uuid4().hex[:6]}"
MODES = {"tool.sh": 0o755, "secret.txt": 0o640, "sub/data.bin": 0o600}


@pytest.fixture(scope="module")
def fcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("files-docker"), heartbeat_interval=1.0)
    cluster.start_host()
    try:
        cluster.start_runner(
            NODE, "--backend", "docker", "--default-image", BUSYBOX_IMAGE, "--cpus", "0-1"
        )
        yield cluster
    finally:
        cluster.close()
        remove_containers(docker_client, NODE)


@pytest.fixture(scope="module")
def tokens(fcluster: Cluster) -> dict[str, str]:
    return fcluster.make_users("gina", "hugo", label="file copy tests")


@pytest.fixture(scope="module")
def targets(fcluster: Cluster, tokens: dict[str, str]) -> Iterator[dict[str, str]]:
    """Gina's running VPS and running docker task: {"vps": VPS ID, "task": task ID}."""
    with Client(fcluster.url, tokens["gina"]) as client:
        vps = client.vps_create(image=BUSYBOX_IMAGE, cores=1, memory="64M", name="files")
        handle = client.submit(["/bin/sh", "-c", "sleep 600"], image=BUSYBOX_IMAGE, cores=1)

        def vps_running() -> dict[str, Any] | None:
            found = [v for v in client.vps_list() if v["id"] == vps["id"]]
            return found[0] if found and found[0]["state"] == "running" else None

        wait_for(vps_running, 90, what="the VPS to run")
        wait_for(lambda: handle.status == "running", 90, what="the docker task to run")
        yield {"vps": vps["id"], "task": handle.id}
        handle.kill()
        client.vps_delete(vps["id"])


def _tree(base: Path) -> Path:
    top = base / "payload"
    (top / "sub").mkdir(parents=True)
    (top / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    (top / "secret.txt").write_text("only mine\n")
    (top / "sub" / "data.bin").write_bytes(bytes(range(256)) * 64)
    for name, mode in MODES.items():
        (top / name).chmod(mode)
    return top


def _container(client: Any, task_id: str) -> Any:
    found = [c for c in containers_of(client, NODE) if c.labels.get("river.task_id") == task_id]
    assert found, f"no container for task {task_id}"
    return found[0]


def _sh(container: Any, script: str) -> str:
    result = container.exec_run(["/bin/sh", "-c", script])
    assert result.exit_code == 0, result.output
    return str(result.output.decode())


def test_a_docker_command_task_reads_its_pushed_file(
    fcluster: Cluster, tokens: dict[str, str], tmp_path: Path
) -> None:
    """`files=` on a container task: the blob is mounted at NAME under the working dir.
    First in the module: it needs a core before the VPS and the task below hold both."""
    (tmp_path / "in.txt").write_text("pushed into a container\n")
    with Client(fcluster.url, tokens["gina"]) as client:
        handle = client.submit(
            ["/bin/sh", "-c", "cat sub/in.txt; echo dir=$RIVER_FILES_DIR"],
            image=BUSYBOX_IMAGE,
            cores=1,
            files={"sub/in.txt": tmp_path / "in.txt"},
        )
        handle.wait(timeout=90)
        lines = [line["text"] for line in client.logs(handle.id)]
        assert handle.status == "completed", (handle.last, lines)
    assert "pushed into a container" in lines, lines


@pytest.mark.parametrize("kind", ["vps", "task"])
def test_a_directory_goes_into_a_container_with_its_modes_and_comes_back_equal(
    fcluster: Cluster,
    tokens: dict[str, str],
    targets: dict[str, str],
    docker_client: Any,
    tmp_path: Path,
    kind: str,
) -> None:
    top = _tree(tmp_path)
    ident = targets[kind]
    with Client(fcluster.url, tokens["gina"]) as client:
        placed = client.put(top, ident, "/srv/in/payload")
        assert placed["path"] == "/srv/in/payload"
        container = _container(docker_client, _task_of(client, kind, ident))
        seen = _sh(container, "cd /srv/in/payload && ./tool.sh && stat -c '%a %n' * sub/*")
        assert "tool ran" in seen
        for name, mode in MODES.items():
            assert f"{mode:o} {name}" in seen, seen
        assert _sh(container, "cat /srv/in/payload/secret.txt") == "only mine\n"
        back = client.get_file(ident, "/srv/in/payload", tmp_path / "back")
    assert Path(back["path"]) == tmp_path / "back"
    for name, mode in MODES.items():
        came = tmp_path / "back" / name
        assert came.read_bytes() == (top / name).read_bytes()
        assert stat.S_IMODE(came.stat().st_mode) == mode


def _task_of(client: Client, kind: str, ident: str) -> str:
    """The task ID that labels the container (a VPS's current incarnation)."""
    if kind == "task":
        return ident
    vps = [v for v in client.vps_list() if v["id"] == ident][0]
    return str(vps["task_id"])


@pytest.mark.parametrize("kind", ["vps", "task"])
def test_a_symlink_in_the_container_cannot_lead_to_the_runners_filesystem(
    fcluster: Cluster,
    tokens: dict[str, str],
    targets: dict[str, str],
    docker_client: Any,
    tmp_path: Path,
    kind: str,
) -> None:
    """The container plants links to a directory of the runner's machine; a put through
    them lands inside the container (dockerd resolves PATH in the container's root), and a
    get through them reads the container's files, never the machine's."""
    outside = tmp_path / "runner-side"
    outside.mkdir()
    (outside / "host-only.txt").write_text("the runner's machine\n")
    ident = targets[kind]
    local = tmp_path / "note.txt"
    local.write_text("stays in the container\n")
    with Client(fcluster.url, tokens["gina"]) as client:
        container = _container(docker_client, _task_of(client, kind, ident))
        # The same path exists in the container too: the link resolves to the container's.
        _sh(container, f"mkdir -p /links {outside} && ln -sfn {outside} /links/out")
        _sh(container, "ln -sfn / /links/r")
        client.put(local, ident, "/links/out/note.txt")
        client.put(local, ident, "/links/r/../../../../note.txt")
        assert not (outside / "note.txt").exists()  # nothing on the runner's machine
        assert _sh(container, f"cat {outside}/note.txt /note.txt") == (
            "stays in the container\n" * 2
        )
        with pytest.raises(RiverError) as absent:
            client.get_file(ident, "/links/out/host-only.txt", tmp_path / "got.txt")
        assert absent.value.status == 404, absent.value
    assert not (tmp_path / "got.txt").exists()


def test_another_user_gets_404_for_the_vps_and_the_task(
    fcluster: Cluster, tokens: dict[str, str], targets: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "x.txt"
    local.write_text("x")
    with Client(fcluster.url, tokens["hugo"]) as hugo:
        for ident in (targets["vps"], targets["task"]):
            with pytest.raises(RiverError) as hidden:
                hugo.put(local, ident, "/tmp/x.txt")
            assert hidden.value.status == 404, hidden.value
            with pytest.raises(RiverError) as hidden:
                hugo.get_file(ident, "/etc/hostname", tmp_path / "h")
            assert hidden.value.status == 404, hidden.value
    assert not (tmp_path / "h").exists()
