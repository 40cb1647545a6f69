"""Fixtures for the docker backend tests.

The whole directory is skipped (with the reason) when no Docker daemon answers or the local
test images are missing: CI runs `.ci/setup-docker.sh` and `.ci/build-images.sh` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.shared import register, shared

try:
    import docker
    import docker.errors
except ImportError:  # pragma: no cover - docker is a base dependency
    docker = None  # type: ignore[assignment]

HERE = Path(__file__).parent
PYTHON_IMAGE = "river-test-python"
BUSYBOX_IMAGE = "river-test-busybox"
VPS_IMAGE = "river-test-vps"  # sshd and python: VPS tests


def _daemon_problem() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if docker is None:
        return "the docker SDK is not installed"
    try:
        client = docker.from_env(version="auto", timeout=5)
        client.ping()
    except Exception as exc:  # any failure means: no usable daemon
        return f"no Docker daemon answers ({exc}); run .ci/setup-docker.sh"
    try:
        for image in (PYTHON_IMAGE, BUSYBOX_IMAGE):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                return f"test image {image!r} is missing; run .ci/build-images.sh"
    finally:
        client.close()
    return None


DAEMON_PROBLEM = _daemon_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)
            if DAEMON_PROBLEM:
                item.add_marker(pytest.mark.skip(reason=DAEMON_PROBLEM))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker.from_env(version="auto")
    yield client
    client.close()


def containers_of(client: Any, runner_name: str) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": f"river.runner={runner_name}"}, ignore_removed=True
    )


def remove_containers(client: Any, runner_name: str) -> None:
    """Remove whatever containers a test's runner left (it may be stopped between
    reporting a task's end and removing its container)."""
    for container in containers_of(client, runner_name):
        # APIError covers NotFound and 409 "removal already in progress" (the backend
        # removes a container just after reporting its end).
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)


@contextlib.contextmanager
def vps_cluster(root: Path, client: Any, node: str) -> Iterator[Cluster]:
    """A host and one docker runner `node` on cores 0-1 whose default image is the VPS
    test image (skips where it is not built); the runner's containers go afterwards."""
    try:
        client.images.get(VPS_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"test image {VPS_IMAGE!r} is missing; run .ci/build-images.sh")
    cluster = Cluster(root, heartbeat_interval=1.0)
    cluster.start_host()
    try:
        cluster.start_runner(
            node, "--backend", "docker", "--default-image", VPS_IMAGE, "--cpus", "0-1"
        )
        yield cluster
    finally:
        cluster.close()
        remove_containers(client, node)


def remove_vps_images(client: Any, node: str, vps_ids: list[str]) -> None:
    """Remove the snapshot images of these VPSes, and any image the runner `node` labelled
    (a snapshot untagged while a container still ran from it stays behind untagged)."""
    for vps_id in vps_ids:
        for image in client.images.list(name=f"river-vps/{vps_id}"):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag, force=True)
    for image in client.images.list(all=True, filters={"label": f"river.runner={node}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


@contextlib.contextmanager
def snapshot_vps_cluster(
    cluster: Cluster, client: Any, node: str, *runner_args: str
) -> Iterator[Cluster]:
    """Start `cluster`'s host and one docker runner `node` on cores 0-1; the tests record
    the VPSes they create in `cluster.created_vps`, whose containers and snapshot images
    go afterwards."""
    cluster.start_host()
    created: list[str] = []
    cluster.created_vps = created  # type: ignore[attr-defined]
    try:
        cluster.start_runner(node, "--backend", "docker", *runner_args, "--cpus", "0-1")
        yield cluster
    finally:
        cluster.close()
        remove_containers(client, node)
        remove_vps_images(client, node, created)


# One host with a docker runner (the python image by default, cores 0-1, one fake GPU) and
# a one-core process runner, shared by the docker modules that need no more (tests/shared.py;
# docs/testing.md): each host start costs 10-15 s on CI's loaded cores.
DOCKER_PAIR = register("docker_pair")
# Named by the pytest process, not a random suffix: pytest imports this conftest under a
# name of its own besides the tests' `tests.docker.conftest`, and both must agree.
PAIR_DOCK, PAIR_PROC = f"pair-d-{os.getpid()}", f"pair-p-{os.getpid()}"


@pytest.fixture(scope="module")
def docker_pair(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    """The shared pair's cluster: its users pin their tasks to PAIR_DOCK or PAIR_PROC and
    leave nothing running (a module that does not is marked uses_up("docker_pair"))."""

    def start(stack: contextlib.ExitStack) -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("docker-pair"), heartbeat_interval=1.0)
        stack.callback(remove_containers, docker_client, PAIR_DOCK)
        stack.callback(cluster.close)
        cluster.start_host()
        cluster.start_runner(
            PAIR_DOCK, "--backend", "docker", "--default-image", PYTHON_IMAGE,
            "--cpus", "0-1", "--fake-gpus", "1",
        )  # fmt: skip
        cluster.start_runner(PAIR_PROC, "--backend", "process", "--cpus", "0")
        return cluster

    with shared(DOCKER_PAIR, start) as cluster:
        yield cluster


@pytest.fixture
def runner_name(docker_client: Any) -> Iterator[str]:
    """A runner name of its own per test; whatever it leaves behind is removed."""
    name = f"pytest-{uuid.uuid4().hex[:10]}"
    yield name
    remove_containers(docker_client, name)


@pytest.fixture
def make_backend(
    docker_client: Any, runner_name: str, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """Build DockerBackends for this test's runner name; closes them all at teardown."""
    from river_runner.backends.docker import DockerBackend

    made: list[DockerBackend] = []

    def make(**kwargs: Any) -> DockerBackend:
        kwargs.setdefault("runner_name", runner_name)
        kwargs.setdefault("work_root", tmp_path / "work")
        kwargs.setdefault("client", docker_client)
        backend = DockerBackend(**kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        asyncio.run(backend.close())
