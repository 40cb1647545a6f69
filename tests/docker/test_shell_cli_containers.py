"""`river env ...` and `river attach VPS` against a real cluster with the host's Docker
daemon and a docker runner; the CLI runs as a subprocess (`python -m river_runner.cli`,
as tests/integration/test_shell_cli.py does), `--json` output parsed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, containers_of, vps_cluster

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

RUN = uuid.uuid4().hex[:6]
NODE = f"clivps-{RUN}"
ENV_NAME = f"pytest-cli-env-{RUN}"
RIVER = [sys.executable, "-m", "river_runner.cli"]


def river(cluster: Cluster, token: str, home: Path, *args: str, stdin: str | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("RIVER_URL", "RIVER_TOKEN")}
    env.update(RIVER_URL=cluster.url, RIVER_TOKEN=token, XDG_CONFIG_HOME=str(home))
    return subprocess.run(
        [*RIVER, *args], input=stdin, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def vcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    with vps_cluster(tmp_path_factory.mktemp("clivps"), docker_client, NODE) as cluster:
        yield cluster


def test_env_actions_on_the_hosts_docker(
    tmp_path: Path, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = Cluster(tmp_path_factory.mktemp("clienv"))
    shared = cluster.root / "host" / "shared"  # the host's default shared_dir
    shared.mkdir(parents=True)
    cluster.start_host()
    token = cluster.token
    tarball = shared / "environments" / f"{ENV_NAME}.tar"
    try:
        created = river(
            cluster,
            token,
            tmp_path,
            "env",
            "create",
            ENV_NAME,
            "--image",
            BUSYBOX_IMAGE,
            "--json",
        )
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["name"] == ENV_NAME

        ran = river(
            cluster,
            token,
            tmp_path,
            "env",
            "exec",
            ENV_NAME,
            "--",
            "echo built > /marker && cat /marker && exit 3",
        )
        assert (ran.returncode, ran.stdout) == (3, "built\n"), ran  # the command's own code
        ran = river(
            cluster, token, tmp_path, "env", "exec", "--json", ENV_NAME, "--", "cat /marker"
        )
        answer = json.loads(ran.stdout)
        assert (answer["exit_code"], answer["output"]) == (0, "built\n"), ran

        shown = river(cluster, token, tmp_path, "env", "show", ENV_NAME, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["image"] == BUSYBOX_IMAGE

        exported = river(cluster, token, tmp_path, "env", "export", ENV_NAME, "--json")
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["exported"]["path"] == str(tarball)
        assert tarball.is_file()

        listed = river(cluster, token, tmp_path, "env", "list", "--json")
        assert [e["name"] for e in json.loads(listed.stdout)] == [ENV_NAME]

        deleted = river(cluster, token, tmp_path, "env", "delete", ENV_NAME, "--tarball", "--json")
        assert deleted.returncode == 0, deleted.stderr
        assert sorted(json.loads(deleted.stdout)["removed"]) == ["container", "tarball"]
        assert not tarball.exists()
        gone = river(cluster, token, tmp_path, "env", "show", ENV_NAME)
        assert gone.returncode == 1 and "Traceback" not in gone.stderr, gone
    finally:
        cluster.close()
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(f"river-env-{ENV_NAME}").remove(force=True)
        for image in docker_client.images.list(name=f"river-env/{ENV_NAME}"):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(tag)


def test_attach_by_vps_name_runs_hostname_in_the_vps(
    vcluster: Cluster, docker_client: Any, tmp_path: Path
) -> None:
    token = vcluster.make_users("kim", label="cli attach")["kim"]
    name = f"box-{RUN}"
    created = vcluster.ok(
        "POST", "/river/api/vps", json={"cores": 1, "name": name}, **as_user(token)
    )["vps"]
    try:

        def running() -> dict[str, Any] | None:
            found = vcluster.get(f"/river/api/vps/{created['id']}", **as_user(token))["vps"]
            return found if found["state"] == "running" else None

        first = wait_for(running, 90, what=f"VPS {created['id']} running")
        # A restart makes a new incarnation (a new task with the VPS's name): attach must
        # take the VPS's current one, not the first task the name or ID also matches.
        vcluster.ok("POST", f"/river/api/vps/{created['id']}/stop", **as_user(token))
        wait_for(
            lambda: (
                vcluster.get(f"/river/api/vps/{created['id']}", **as_user(token))["vps"]["state"]
                == "stopped"
            ),
            90,
            what="VPS stopped",
        )
        vcluster.ok("POST", f"/river/api/vps/{created['id']}/restart", **as_user(token))
        vps = wait_for(running, 90, what=f"VPS {created['id']} running again")
        assert vps["task_id"] != first["task_id"]
        container = next(
            c
            for c in containers_of(docker_client, NODE)
            if c.labels.get("river.task_id") == vps["task_id"]
        )
        hostname = container.attrs["Config"]["Hostname"]
        for ref in (name, created["id"][:14]):
            result = river(vcluster, token, tmp_path, "attach", ref, stdin="hostname\nexit\n")
            assert result.returncode == 0, result
            assert hostname in [line.strip() for line in result.stdout.splitlines()], result
        after = vcluster.get(f"/river/api/vps/{created['id']}", **as_user(token))["vps"]
        assert after["state"] == "running"  # leaving the shell leaves the VPS
    finally:
        vcluster.request("DELETE", f"/river/api/vps/{created['id']}", **as_user(token))
