"""Containers, images, mounts and environments on the docker backend, tried as an attacker.

Attacks, each through public interfaces (REST as another user, a task's own code):
- a task overwrites an exported environment tarball in the shared dir, and a forged tarball
  whose manifest re-tags the default image lands there anyway (storage reachable otherwise);
- a task plants a symlink to / under an allowed mount prefix and a second task mounts it;
- a user runs another user's VPS snapshot (`river-vps/<id>:<n>`) or environment image;
- a user's environment exec hangs (a silent `sleep`) while other users need the host;
- a task forks as many processes as it can.

One host (JupyterLab server with River) and one docker runner on the real daemon serve the
module, with low limits set through the same flags an operator would use.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, DAEMON_PROBLEM, PYTHON_IMAGE, remove_containers

try:
    import docker
    import docker.errors
except ImportError:  # pragma: no cover - docker is a base dependency
    docker = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(bool(DAEMON_PROBLEM), reason=str(DAEMON_PROBLEM)),
]

RUN = uuid.uuid4().hex[:6]
NODE = f"sec-dock-{RUN}"
PIDS_LIMIT = 48
EXEC_LIMIT_S = 3


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    client = docker.from_env(version="auto")
    yield client
    client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, client: Any) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("containers")
    data = root / "data"
    data.mkdir()
    cluster = Cluster(
        root,
        extra_host_args=[
            f"--RiverHost.user_mount_prefixes={data}",
            f"--RiverHost.environment_exec_timeout={EXEC_LIMIT_S}",
            "--RiverHost.environment_max_per_user=1",
            "--RiverHost.environment_execs_per_user=1",
            "--RiverHost.environment_pids_limit=100",
        ],
    )
    shared = root / "host" / "shared"  # the host's default shared_dir
    shared.mkdir(parents=True)
    cluster.shared = shared  # type: ignore[attr-defined]
    cluster.data = data  # type: ignore[attr-defined]
    cluster.start_host()
    try:
        cluster.start_runner(
            NODE,
            "--backend",
            "docker",
            "--shared-dir",
            str(shared),
            "--default-image",
            PYTHON_IMAGE,
            "--pids-limit",
            str(PIDS_LIMIT),
            "--cpus",
            "0-1",
        )
        cluster.tokens = cluster.make_users("alice", "bob")  # type: ignore[attr-defined]
        yield cluster
    finally:
        cluster.close()
        remove_containers(client, NODE)


def alice(cluster: Cluster) -> dict[str, Any]:
    return as_user(cluster.tokens["alice"])  # type: ignore[attr-defined]


def bob(cluster: Cluster) -> dict[str, Any]:
    return as_user(cluster.tokens["bob"])  # type: ignore[attr-defined]


def run_task(cluster: Cluster, who: dict[str, Any], **body: Any) -> dict[str, Any]:
    """Submit as `who`, wait for the end; the task with its log lines."""
    response = cluster.request("POST", "/river/api/tasks", json=body, **who)
    assert response.status_code == 201, response.text
    task_id = response.json()["task"]["id"]
    done = cluster.wait_task(task_id, {"completed", "failed", "killed", "killed_oom"}, 90)
    lines = cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]
    done["lines"] = [line["text"] for line in lines]
    return done


def host_serves(cluster: Cluster) -> None:
    assert cluster.request("GET", "/river/api/nodes", **bob(cluster)).status_code == 200


@contextlib.contextmanager
def environment(cluster: Cluster, client: Any, name: str, who: dict[str, Any]) -> Iterator[None]:
    """An environment container (removed afterwards with its tarball and images)."""
    try:
        made = cluster.request(
            "POST", "/river/api/environments", json={"name": name, "image": PYTHON_IMAGE}, **who
        )
        assert made.status_code == 201, made.text
        yield
    finally:
        cluster.request("DELETE", f"/river/api/environments/{name}?tarball=1")  # as admin
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(f"river-env-{name}").remove(force=True)
        for image in client.images.list(name=f"river-env/{name}"):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)


def forged_tarball(client: Any, tags: list[str]) -> bytes:
    """`docker save` of the busybox image whose manifest claims `tags` (the attack)."""
    temporary = f"pytest-forge-{RUN}:latest"
    image = client.images.get(BUSYBOX_IMAGE)
    image.tag(temporary)
    image.reload()  # tags as the daemon knows them now
    try:
        saved = b"".join(image.save(named=temporary))
    finally:
        client.images.remove(temporary)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(saved)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            content = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(content or b"[]")
                manifest[0]["RepoTags"] = tags
                content = json.dumps(manifest).encode()
            elif member.name == "repositories":
                layer = next(iter(next(iter(json.loads(content or b"{}").values())).values()))
                content = json.dumps(
                    {t.rpartition(":")[0]: {t.rpartition(":")[2]: layer} for t in tags}
                ).encode()
            if content is not None:
                member.size = len(content)
                dst.addfile(member, io.BytesIO(content))
            else:
                dst.addfile(member)
    return out.getvalue()


# ---- 1. the shared directory ----------------------------------------------------------------


def test_task_cannot_replace_an_environment_and_a_forged_tarball_is_refused(
    cluster: Cluster, client: Any
) -> None:
    name = f"pytest-sec-{RUN}"
    shared: Path = cluster.shared  # type: ignore[attr-defined]
    tarball = shared / "environments" / f"{name}.tar"
    default_id = client.images.get(PYTHON_IMAGE).id
    with environment(cluster, client, name, alice(cluster)):
        exported = cluster.request(
            "POST", f"/river/api/environments/{name}/export", **alice(cluster)
        )
        assert exported.status_code == 200, exported.text
        real = hashlib.sha256(tarball.read_bytes()).hexdigest()
        assert exported.json()["environment"]["exported"]["sha256"] == real
        assert not tarball.with_suffix(".json").exists()  # the record is in the database
        # bob may not run his tasks in alice's environment.
        borrowed = cluster.request(
            "POST",
            "/river/api/tasks",
            json={"kind": "python", "script": "print(1)", "environment": name},
            **bob(cluster),
        )
        assert borrowed.status_code == 400, borrowed.text
        assert "usable by its owner only" in borrowed.json()["message"]

        # A task of bob's tries to replace alice's tarball with one it brought along.
        forged = forged_tarball(client, [f"{PYTHON_IMAGE}:latest", f"river-env/{name}:latest"])
        (shared / f"forged-{RUN}.tar").write_bytes(forged)  # what bob's task downloaded
        script = (
            "import os, shutil\n"
            f"target = '/shared/environments/{name}.tar'\n"
            f"for how, act in (('replace', lambda: os.replace('/shared/forged-{RUN}.tar', "
            "target)),\n"
            f"                 ('copy', lambda: shutil.copyfile('/shared/forged-{RUN}.tar', "
            "target)),\n"
            "                 ('plant', lambda: open('/shared/environments/x.tar', 'wb')),\n"
            "                 ('move-dir', lambda: os.rename('/shared/environments', "
            "'/shared/old'))):\n"
            "    try:\n"
            "        act()\n"
            "        print(how, 'done')\n"
            "    except OSError as exc:\n"
            "        print(how, 'refused', exc.errno)\n"
        )
        done = run_task(cluster, bob(cluster), kind="python", script=script, image=PYTHON_IMAGE)
        assert done["state"] == "completed", done
        assert not any(line.endswith(" done") for line in done["lines"]), done["lines"]
        assert hashlib.sha256(tarball.read_bytes()).hexdigest() == real
        assert not (shared / "environments" / "x.tar").exists()

        # Shared storage may be writable by other means (NFS from elsewhere): plant the
        # forgery directly. The runner must refuse it, and no image may change.
        tarball.write_bytes(forged)
        used = run_task(
            cluster,
            alice(cluster),
            kind="python",
            script="print('ran')",
            environment=name,
            target=NODE,
        )
        assert used["state"] == "failed", used
        assert "not the tarball its owner exported" in used["reason"], used["reason"]
        assert client.images.get(PYTHON_IMAGE).id == default_id
        assert not [
            t for i in client.images.list(name=f"river-env/{name}") for t in i.tags if ":d" in t
        ]
        (shared / f"forged-{RUN}.tar").unlink()
    host_serves(cluster)


# ---- 2. mount prefixes -------------------------------------------------------------------------


def test_symlink_under_an_allowed_prefix_does_not_reach_the_node(cluster: Cluster) -> None:
    data: Path = cluster.data  # type: ignore[attr-defined]
    link = data / f"root-{RUN}"
    try:
        # The first task may mount the prefix and plants a link to the node's root in it.
        planted = run_task(
            cluster,
            bob(cluster),
            kind="python",
            script=f"import os\nos.symlink('/', '/data/root-{RUN}')\nprint('planted')",
            mounts=[f"{data}:/data"],
        )
        assert planted["state"] == "completed" and planted["lines"] == ["planted"], planted
        assert link.is_symlink()

        # The second mounts the link (under the prefix as written) to read the node.
        escape = run_task(
            cluster,
            bob(cluster),
            kind="python",
            script="import os\nprint(sorted(os.listdir('/node')))",
            mounts=[f"{link}:/node:ro"],
        )
        assert escape["state"] == "failed", escape
        assert not escape["lines"], escape["lines"]  # it never ran
        reason = escape["reason"]
        assert "outside the paths users may mount" in reason and "resolves to /" in reason, reason
        host_serves(cluster)
    finally:
        link.unlink(missing_ok=True)


# ---- 3. River's image namespaces -----------------------------------------------------------------


def test_another_users_snapshot_and_environment_images_are_refused(cluster: Cluster) -> None:
    made = cluster.request("POST", "/river/api/vps", json={"cores": 1}, **alice(cluster))
    assert made.status_code == 201, made.text
    vps_id = made.json()["vps"]["id"]
    try:
        before = {t["id"] for t in cluster.get("/river/api/tasks")["tasks"]}
        for image in (
            f"river-vps/{vps_id}:1",
            f"docker.io/river-vps/{vps_id}:1",
            f"river-vps/{vps_id}@sha256:{'0' * 64}",
        ):
            refused = cluster.request(
                "POST",
                "/river/api/tasks",
                json={"kind": "python", "script": "print(1)", "image": image},
                **bob(cluster),
            )
            assert refused.status_code == 404, (image, refused.text)
            assert "usable by their owner only" in refused.json()["message"]
        as_env = cluster.request(
            "POST",
            "/river/api/tasks",
            json={"kind": "python", "script": "print(1)", "image": "river-env/anything:latest"},
            **bob(cluster),
        )
        assert as_env.status_code == 400 and "environment" in as_env.json()["message"]
        # bob's tasks never existed, let alone ran.
        assert {t["id"] for t in cluster.get("/river/api/tasks")["tasks"]} == before
        mine = cluster.request("GET", "/river/api/tasks", **bob(cluster)).json()["tasks"]
        assert not [t for t in mine if "river-" in json.dumps(t)], mine
        host_serves(cluster)
    finally:
        cluster.request("DELETE", f"/river/api/vps/{vps_id}", **alice(cluster))


# ---- 4. environments on the head node ----------------------------------------------------------


def test_environment_is_bounded_and_a_hanging_exec_blocks_nobody(
    cluster: Cluster, client: Any
) -> None:
    name, other = f"pytest-lim-{RUN}", f"pytest-lim2-{RUN}"
    base = "/river/api/environments"
    with environment(cluster, client, name, alice(cluster)):
        host_config = client.containers.get(f"river-env-{name}").attrs["HostConfig"]
        assert host_config["PidsLimit"] == 100
        assert host_config["NanoCpus"] == 2_000_000_000
        assert host_config["Memory"] == 4 << 30
        assert "ALL" in host_config["CapDrop"]
        assert "no-new-privileges:true" in host_config["SecurityOpt"]

        second = cluster.request(
            "POST", base, json={"name": other, "image": PYTHON_IMAGE}, **alice(cluster)
        )
        assert second.status_code == 409, second.text
        assert "environment_max_per_user" in second.json()["message"]

        too_long = cluster.request(
            "POST", f"{base}/{name}/exec", json={"command": "true", "timeout": 60}, **alice(cluster)
        )
        assert too_long.status_code == 400 and "environment_exec_timeout" in too_long.text

        # alice's exec prints nothing and never ends by itself.
        hanging: dict[str, Any] = {}

        def hang() -> None:
            started = time.monotonic()
            response = httpx.post(
                f"{cluster.url}{base}/{name}/exec",
                json={"command": ["sleep", "3600"]},
                timeout=60,
                **alice(cluster),
            )
            hanging.update(response=response, seconds=time.monotonic() - started)

        thread = threading.Thread(target=hang)
        thread.start()
        try:
            wait_for(  # `sleep 3600`: the container's own `sleep infinity` is there already
                lambda: any(
                    "sleep 3600" in " ".join(p)
                    for p in client.containers.get(f"river-env-{name}").top()["Processes"]
                ),
                10,
                what="alice's sleep to run",
            )
            # Meanwhile: a second exec of alice's is refused at once, bob is served at once.
            again = cluster.request(
                "POST", f"{base}/{name}/exec", json={"command": "true"}, **alice(cluster)
            )
            assert again.status_code == 429 and "environment_execs_per_user" in again.text, (again.text, hanging)
            started = time.monotonic()
            with environment(cluster, client, other, bob(cluster)):
                ran = cluster.request(
                    "POST", f"{base}/{other}/exec", json={"command": "echo hi"}, **bob(cluster)
                )
                assert ran.status_code == 200 and ran.json()["output"] == "hi\n", ran.text
                listed = cluster.request("GET", base, **bob(cluster))
                assert listed.status_code == 200
            assert "response" not in hanging  # all that while alice's exec was still on
            assert time.monotonic() - started < EXEC_LIMIT_S + 15
        finally:
            thread.join(60)
        response = hanging["response"]
        assert response.status_code == 504, response.text
        assert f"time limit of {EXEC_LIMIT_S}s" in response.json()["message"]
        assert hanging["seconds"] < EXEC_LIMIT_S + 10
        processes = client.containers.get(f"river-env-{name}").top()["Processes"] or []
        assert not [p for p in processes if "3600" in " ".join(p)], processes  # killed
    host_serves(cluster)


# ---- 5. pids limit -----------------------------------------------------------------------------


def test_fork_bomb_stops_at_the_pids_limit(cluster: Cluster) -> None:
    script = (
        "import os, signal, time\n"
        "children = []\n"
        "try:\n"
        "    for _ in range(300):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children.append(pid)\n"
        "except OSError as exc:\n"
        "    print('fork refused', exc.errno)\n"
        "print('forked', len(children))\n"
        "for pid in children:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "    os.waitpid(pid, 0)\n"
    )
    done = run_task(cluster, bob(cluster), kind="python", script=script, image=PYTHON_IMAGE)
    assert done["state"] == "completed", done
    assert done["lines"][0] == "fork refused 11", done["lines"]  # EAGAIN
    forked = int(done["lines"][-1].split()[1])
    assert 0 < forked < PIDS_LIMIT, done["lines"]
    host_serves(cluster)
