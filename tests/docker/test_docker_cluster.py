"""The docker backend through the whole cluster: a Jupyter host with River, runner processes
with `--backend docker` on the real daemon, and a real IPython kernel driving the magics.

One host and three runners serve the module (two docker runners sharing one --shared-dir, one
of them with a fake 1-GPU inventory, and a process runner). Runner names carry a random suffix,
so parallel sessions on the same daemon never touch each other's containers, and everything
labelled with them is removed at the end. Waits are bounded polls on observable state; tasks
that must stay alive while the test looks at them wait for a file in the shared directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from river_server import db
from river_server.auth import create_token, ensure_user
from tests.cluster import Cluster, wait_for
from tests.docker.conftest import PYTHON_IMAGE, remove_containers

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

RUN = uuid.uuid4().hex[:6]
DOCK = f"dock-{RUN}"  # docker runner
OTHER = f"dgpu-{RUN}"  # docker runner with one fake GPU, same shared dir
PROC = f"proc-{RUN}"  # process runner
ORPHAN = f"orph-{RUN}"  # docker runner that one test takes down for good
ENV_NAME = f"pytest-env-{RUN}"


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    # Offline after 10 missed 1 s beats: a runner restart (~2 s) never looks like a lost node.
    cluster = Cluster(
        tmp_path_factory.mktemp("docker"), heartbeat_interval=1.0, heartbeat_misses=10
    )
    shared = cluster.root / "host" / "shared"  # the host's default shared_dir
    shared.mkdir(parents=True)
    cluster.shared = shared  # type: ignore[attr-defined]
    common = ["--backend", "docker", "--shared-dir", str(shared), "--default-image", PYTHON_IMAGE]
    cluster.start_host()
    try:
        cluster.start_runner(DOCK, *common, "--cpus", "0-1")
        cluster.start_runner(OTHER, *common, "--cpus", "0-1", "--fake-gpus", "1")
        cluster.start_runner(PROC, "--backend", "process", "--cpus", "0")
        yield cluster
    finally:
        cluster.close()
        for name in (DOCK, OTHER, ORPHAN):
            remove_containers(docker_client, name)


class Kernel:
    """A real IPython kernel with river_magics loaded and connected to the cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.manager, self.client = start_new_kernel(
            kernel_name="python3", env={"RIVER_URL": cluster.url, "RIVER_TOKEN": cluster.token}
        )
        self.run("%load_ext river_magics\n%river connect")

    def start(self, code: str) -> str:
        return self.client.execute(code)

    def collect(
        self, msg_id: str, until: str | None = None, timeout: float = 60.0
    ) -> tuple[str, bool]:
        """Output of a cell so far: up to the text `until` (cell still running) or to the
        end of the cell. Returns (text, finished)."""
        deadline = time.monotonic() + timeout
        parts: list[str] = []
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"cell output did not {'show ' + repr(until) if until else 'end'}"
            message = self.client.get_iopub_msg(timeout=left)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                parts.append(content["text"])
            elif kind in ("display_data", "update_display_data", "execute_result"):
                parts.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                parts.append(f"{content['ename']}: {content['evalue']}\n")
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(parts), True
            if until is not None and until in "".join(parts):
                return "".join(parts), False

    def run(self, code: str, timeout: float = 60.0) -> str:
        text, _ = self.collect(self.start(code), timeout=timeout)
        return text

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(dcluster: Cluster) -> Iterator[Kernel]:
    k = Kernel(dcluster)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def user_tokens(dcluster: Cluster) -> dict[str, str]:
    """API tokens of two plain users (the cluster's own token acts as admin)."""
    engine = db.make_engine(dcluster.db_url)
    sessions = db.make_sessionmaker(engine)
    try:
        tokens = {}
        for name in ("carol", "dave"):
            ensure_user(sessions, name, "user")
            tokens[name] = create_token(sessions, name, label="docker cluster tests")
        return tokens
    finally:
        engine.dispose()


def as_user(token: str) -> dict[str, dict[str, str]]:
    return {"headers": {"Authorization": f"token {token}"}}


def task_id_in(text: str) -> str:
    ids = re.findall(r"task (\d+)", text)
    assert ids, f"no task id in the cell output: {text!r}"
    return ids[-1]


def task_containers(client: Any, task_id: str) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": f"river.task_id={task_id}"}, ignore_removed=True
    )


def wait_until_released(path: Path) -> str:
    """Python lines for a task that waits (bounded) until the test creates `path`."""
    return (
        "import os, time\n"
        f"go = {str(path)!r}\n"
        "deadline = time.time() + 60\n"
        "while not os.path.exists(go) and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
    )


def in_shared(cluster: Cluster, name: str) -> tuple[Path, Path]:
    """A file in the shared dir: (path on this machine, path inside a container)."""
    return cluster.shared / name, Path("/shared") / name  # type: ignore[attr-defined]


# ---- tests --------------------------------------------------------------------------------


def test_cell_runs_in_a_container_streams_and_leaves_nothing(
    dcluster: Cluster, kernel: Kernel, docker_client: Any
) -> None:
    host_go, container_go = in_shared(dcluster, f"go-{uuid.uuid4().hex[:8]}")
    msg_id = kernel.start(
        f"%%river submit --image {PYTHON_IMAGE} -t {DOCK}\n"
        "import os, sys\n"
        "print('in-container', os.path.exists('/.dockerenv'), sys.version_info[0], flush=True)\n"
        + wait_until_released(container_go)
        + "print('released', os.path.exists(go))\n"
    )
    # The first line reaches the cell while the task still runs (it waits for us).
    early, finished = kernel.collect(msg_id, until="in-container True 3")
    assert not finished
    task_id = task_id_in(early)
    task = dcluster.task(task_id)
    assert task["state"] == "running" and task["node"] == DOCK, task
    [container] = task_containers(docker_client, task_id)
    assert container.attrs["Config"]["Image"] == PYTHON_IMAGE
    host_go.touch()
    rest, finished = kernel.collect(msg_id)
    assert finished
    assert "released True" in rest and "completed (exit 0)" in rest, early + rest
    wait_for(lambda: not task_containers(docker_client, task_id), 10, what="container removed")

    # A failing cell: its output, then its real exit status; the container is gone too.
    text = kernel.run(
        f"%%river submit --image {PYTHON_IMAGE}\nimport sys\nprint('partial')\nsys.exit(3)"
    )
    assert "partial" in text and "failed (exit 3)" in text, text
    failed = dcluster.task(task_id_in(text))
    assert failed["state"] == "failed" and failed["exit_code"] == 3
    assert failed["node"] in (DOCK, OTHER)  # never the process runner
    wait_for(lambda: not task_containers(docker_client, failed["id"]), 10, what="cleanup")


def test_one_core_is_pinned_in_the_container_cgroup(dcluster: Cluster, kernel: Kernel) -> None:
    text = kernel.run(
        f"%%river submit --image {PYTHON_IMAGE} -c 1 -t {DOCK}\n"
        "import os\n"
        "for path in ('/sys/fs/cgroup/cpuset/cpuset.cpus', '/sys/fs/cgroup/cpuset.cpus.effective'):\n"
        "    if os.path.exists(path):\n"
        "        print('cpuset=' + open(path).read().strip())\n"
        "        break\n"
        "print('affinity=' + ','.join(map(str, sorted(os.sched_getaffinity(0)))))\n"
    )
    task = dcluster.task(task_id_in(text))
    assert task["state"] == "completed", text
    assert len(task["cpus"]) == 1
    cpu = str(task["cpus"][0])
    assert f"cpuset={cpu}\n" in text, text  # the cgroup itself, not only the affinity
    assert f"affinity={cpu}\n" in text, text


def test_memory_hog_is_killed_oom(dcluster: Cluster, kernel: Kernel) -> None:
    text = kernel.run(
        f"%%river submit --image {PYTHON_IMAGE} -m 64M -t {DOCK}\n"
        "print('allocating', flush=True)\n"
        "hog = []\n"
        "while True:\n"
        "    hog.append(b'x' * (8 << 20))\n"
    )
    task = dcluster.task(task_id_in(text))
    assert task["state"] == "killed_oom", task
    assert task["memory"] == 64 << 20
    assert "allocating" in text and "out of memory" in text, text


def test_container_tasks_only_go_to_docker_nodes(dcluster: Cluster) -> None:
    # The process runner is the best fit by cores (1 free vs 2), yet image tasks skip it.
    tasks = [dcluster.submit(command=["true"], image=PYTHON_IMAGE, cores=1) for _ in range(3)]
    for task in tasks:
        done = dcluster.wait_task(task["id"], {"completed", "failed"}, timeout=60)
        assert done["state"] == "completed" and done["node"] in (DOCK, OTHER), done
    # Aimed at the process runner, it is refused up front with the reason.
    response = dcluster.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["true"], "image": PYTHON_IMAGE, "target": PROC},
    )
    assert response.status_code == 400 and "docker backend" in response.json()["message"]


def test_two_tasks_on_gpu_0_never_overlap(dcluster: Cluster, docker_client: Any) -> None:
    host_go, container_go = in_shared(dcluster, f"gpu-{uuid.uuid4().hex[:8]}")
    first = dcluster.submit(
        kind="python",
        script=wait_until_released(container_go) + "print('gpu', os.environ['RIVER_GPUS'])\n",
        image=PYTHON_IMAGE,
        target=f"{OTHER}::0",
    )
    dcluster.wait_task(first["id"], "running", timeout=30)
    second = dcluster.submit(
        kind="python",
        script="import os\nprint('gpu', os.environ['RIVER_GPUS'])\n",
        image=PYTHON_IMAGE,
        target=f"{OTHER}::0",
    )
    # The second waits for the GPU, not for anything else, and has no container yet.
    queued = wait_for(
        lambda: (t := dcluster.task(second["id"]))["state"] == "queued" and t["wait_reason"] and t,
        10,
        what="the second task's wait reason",
    )
    assert "GPU 0" in queued["wait_reason"], queued
    assert not task_containers(docker_client, second["id"])
    # The first container carries the device request (recorded in a label: no NVIDIA runtime
    # here) and the matching NVIDIA/CUDA variables.
    [container] = task_containers(docker_client, first["id"])
    requests_ = json.loads(container.labels["river.gpus"])
    assert [r["DeviceIDs"] for r in requests_] == [["0"]]
    assert requests_[0]["Capabilities"] == [["gpu"]]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "0" and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert dcluster.task(second["id"])["state"] == "queued"
    host_go.touch()
    done_first = dcluster.wait_task(first["id"], "completed", timeout=30)
    done_second = dcluster.wait_task(second["id"], "completed", timeout=30)
    assert done_first["gpus"] == done_second["gpus"] == [0]
    assert done_second["started_at"] >= done_first["finished_at"]


def test_pause_resume_kill_a_container_task(dcluster: Cluster, docker_client: Any) -> None:
    task = dcluster.submit(
        kind="python",
        script="import time\nwhile True:\n    time.sleep(0.05)\n",
        image=PYTHON_IMAGE,
        target=DOCK,
    )
    dcluster.wait_task(task["id"], "running", timeout=30)
    path = f"/river/api/tasks/{task['id']}"
    [container] = task_containers(docker_client, task["id"])
    assert dcluster.request("POST", f"{path}/pause").status_code == 200
    dcluster.wait_task(task["id"], "paused", timeout=10)
    container.reload()
    assert container.status == "paused"
    assert dcluster.request("POST", f"{path}/resume").status_code == 200
    dcluster.wait_task(task["id"], "running", timeout=10)
    container.reload()
    assert container.status == "running"
    assert dcluster.request("POST", f"{path}/kill").status_code == 200
    killed = dcluster.wait_task(task["id"], "killed", timeout=15)
    assert killed["finished_at"] is not None
    wait_for(lambda: not task_containers(docker_client, task["id"]), 10, what="cleanup")


def test_runner_sigkill_and_restart_keeps_tasks_and_real_status(
    dcluster: Cluster, docker_client: Any
) -> None:
    stamp = uuid.uuid4().hex[:8]
    host_go_a, container_go_a = in_shared(dcluster, f"restart-a-{stamp}")
    host_go_b, container_go_b = in_shared(dcluster, f"restart-b-{stamp}")

    def waiting(go: Path, code: int) -> str:
        return (
            "print('before', flush=True)\n"
            + wait_until_released(go)
            + f"print('after')\nraise SystemExit({code})\n"
        )

    a = dcluster.submit(
        kind="python", script=waiting(container_go_a, 7), image=PYTHON_IMAGE, target=DOCK
    )
    b = dcluster.submit(
        kind="python", script=waiting(container_go_b, 4), image=PYTHON_IMAGE, target=DOCK
    )
    for task in (a, b):
        dcluster.wait_task(task["id"], "running", timeout=30)
        wait_for(
            lambda t=task: dcluster.get(f"/river/api/tasks/{t['id']}/logs")["lines"],
            10,
            what="the first line",
        )
    runner = dcluster.runners[DOCK]
    runner.kill(signal.SIGKILL)
    # With no runner watching: both containers live on; b finishes meanwhile.
    [container_a] = task_containers(docker_client, a["id"])
    [container_b] = task_containers(docker_client, b["id"])
    host_go_b.touch()
    wait_for(
        lambda: container_b.reload() or container_b.status == "exited",
        30,
        what="b's container to exit",
    )
    container_a.reload()
    assert container_a.status == "running"
    dcluster.start_runner(DOCK)  # same name, port and data dir; adopts by label
    done_b = dcluster.wait_task(b["id"], {"completed", "failed", "lost"}, timeout=30)
    assert (done_b["state"], done_b["exit_code"]) == ("failed", 4), done_b
    assert dcluster.task(a["id"])["state"] == "running"
    host_go_a.touch()
    done_a = dcluster.wait_task(a["id"], {"completed", "failed", "lost"}, timeout=30)
    assert (done_a["state"], done_a["exit_code"]) == ("failed", 7), done_a
    for task in (a, b):  # every line once, in order, across the restart
        lines = dcluster.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
        assert [(line["seq"], line["text"]) for line in lines] == [(1, "before"), (2, "after")]
        wait_for(lambda t=task: not task_containers(docker_client, t["id"]), 10, what="cleanup")


def test_environment_exported_and_used_on_another_runner(
    dcluster: Cluster, kernel: Kernel, docker_client: Any
) -> None:
    tarball = dcluster.shared / "environments" / f"{ENV_NAME}.tar"  # type: ignore[attr-defined]
    repository = f"river-env/{ENV_NAME}"

    def loaded_tags() -> set[str]:
        return {
            tag
            for image in docker_client.images.list(name=repository)
            for tag in image.tags
            if tag.startswith(repository + ":d")
        }

    def digest_tag() -> str:
        """The runner tags what it loaded with the export's sha256 (recorded by the host)."""
        return f"{repository}:d{hashlib.sha256(tarball.read_bytes()).hexdigest()}"

    def forget_host_image() -> None:
        """Runners on other machines have no copy of what the host committed: drop it."""
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{repository}:latest")

    def use_env() -> str:
        text = kernel.run(
            f"%%river submit --environment {ENV_NAME} -t {OTHER}\n"
            "print('marker=' + open('/opt/marker').read().strip())\n",
            timeout=120,
        )
        assert "completed (exit 0)" in text, text
        return text

    try:
        text = kernel.run(f"%river env create {ENV_NAME} --image {PYTHON_IMAGE}")
        assert f"environment {ENV_NAME} running" in text, text
        text = kernel.run(f"%river env exec {ENV_NAME} -- echo v1 > /opt/marker && echo built")
        assert "built" in text, text
        text = kernel.run(f"%river env export {ENV_NAME}", timeout=120)
        assert str(tarball) in text and tarball.is_file(), text
        forget_host_image()
        assert "marker=v1" in use_env()
        first_tag = digest_tag()
        assert loaded_tags() == {first_tag}  # loaded from the tarball by the runner

        # A newer export is loaded again by the next task that names it.
        kernel.run(f"%river env exec {ENV_NAME} -- echo v2 > /opt/marker")
        kernel.run(f"%river env export {ENV_NAME}", timeout=120)
        forget_host_image()
        assert "marker=v2" in use_env()
        assert loaded_tags() == {digest_tag()} != {first_tag}

        listing = kernel.run("%river env list")
        assert ENV_NAME in listing and "running" in listing, listing
        text = kernel.run(f"%river env delete {ENV_NAME} --tarball")
        assert "removed container and tarball" in text, text
        assert not tarball.exists()
        assert not docker_client.containers.list(
            all=True, filters={"name": f"river-env-{ENV_NAME}"}
        )
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(f"river-env-{ENV_NAME}").remove(force=True)
        for image in docker_client.images.list(name=repository):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(tag)


def test_container_of_a_task_lost_meanwhile_is_removed(
    dcluster: Cluster, docker_client: Any
) -> None:
    """Runner down past the offline limit: its task is `lost`, and the container it finds
    on restart is killed and removed when the host says the task is over."""
    runner = dcluster.start_runner(
        ORPHAN, "--backend", "docker", "--cpus", "0", "--default-image", PYTHON_IMAGE
    )
    task = dcluster.submit(
        kind="python",
        script="import time\ntime.sleep(120)\n",
        image=PYTHON_IMAGE,
        target=ORPHAN,
    )
    dcluster.wait_task(task["id"], "running", timeout=30)
    runner.kill(signal.SIGKILL)
    lost = dcluster.wait_task(task["id"], "lost", timeout=30)  # 10 missed 1 s beats
    [container] = task_containers(docker_client, task["id"])
    assert container.status == "running"  # nobody watched it meanwhile
    dcluster.start_runner(ORPHAN)
    wait_for(
        lambda: not task_containers(docker_client, task["id"]),
        30,
        what="the orphaned container to be removed",
    )
    assert dcluster.task(task["id"])["state"] == "lost"  # a late report changes nothing
    assert dcluster.task(task["id"])["finished_at"] == lost["finished_at"]


def _privileged_runs(client: Any) -> bool:
    """Whether this daemon can start privileged containers at all (not in every sandbox)."""
    container = client.containers.create("river-test-busybox", ["true"], privileged=True)
    try:
        container.start()
        return True
    except docker.errors.DockerException:
        return False
    finally:
        container.remove(force=True)


def test_mounts_and_privileged_reach_the_container(
    dcluster: Cluster, tmp_path: Path, docker_client: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("from the node\n")
    script = (
        "print(open('/data/input.txt').read().strip())\n"
        "try:\n"
        "    open('/data/out', 'w')\n"
        "except OSError as exc:\n"
        "    print('read-only', exc.errno)\n"
        "cap = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]\n"
        "print('caps', int(cap, 16))\n"
    )
    body = {"kind": "python", "script": script, "image": PYTHON_IMAGE}
    plain = dcluster.submit(**body, mounts=[f"{data}:/data:ro"])
    done = dcluster.wait_task(plain["id"], {"completed", "failed"}, timeout=60)
    assert done["state"] == "completed", done["reason"]
    lines = [x["text"] for x in dcluster.get(f"/river/api/tasks/{plain['id']}/logs")["lines"]]
    assert lines[:2] == ["from the node", "read-only 30"]  # EROFS: mounted read-only
    assert not (data / "out").exists()
    plain_caps = int(lines[2].split()[1])

    privileged = dcluster.submit(**body, privileged=True)  # the cluster token acts as admin
    done = dcluster.wait_task(privileged["id"], {"completed", "failed"}, timeout=60)
    if _privileged_runs(docker_client):
        assert done["state"] == "completed", done["reason"]
        logs = dcluster.get(f"/river/api/tasks/{privileged['id']}/logs")["lines"]
        assert int(logs[-1]["text"].split()[1]) > plain_caps
    else:  # this sandbox's daemon refuses privileged containers: the flag reached it
        assert done["state"] == "failed" and "docker could not start" in done["reason"], done


def test_environment_belongs_to_its_owner(
    dcluster: Cluster, user_tokens: dict[str, str], docker_client: Any
) -> None:
    name = f"pytest-own-{RUN}"
    base = "/river/api/environments"
    carol, dave = as_user(user_tokens["carol"]), as_user(user_tokens["dave"])
    try:
        created = dcluster.request(
            "POST", base, json={"name": name, "image": PYTHON_IMAGE}, **carol
        )
        assert created.status_code == 201, created.text
        assert created.json()["environment"]["owner"] == "carol"
        again = dcluster.request("POST", base, json={"name": name, "image": PYTHON_IMAGE}, **dave)
        assert again.status_code == 409
        listed = dcluster.request("GET", base, **dave).json()["environments"]
        assert name in [e["name"] for e in listed]  # everyone sees it
        exec_body = {"command": ["sh", "-c", "echo $((6 * 7)); exit 3"]}
        for action, body in (("exec", exec_body), ("export", None)):
            refused = dcluster.request("POST", f"{base}/{name}/{action}", json=body, **dave)
            assert refused.status_code == 403 and "carol" in refused.json()["message"]
        assert dcluster.request("DELETE", f"{base}/{name}", **dave).status_code == 403
        ran = dcluster.request("POST", f"{base}/{name}/exec", json=exec_body, **carol).json()
        assert (ran["output"], ran["exit_code"]) == ("42\n", 3)
        # An operator (here the admin) may remove anyone's.
        removed = dcluster.request("DELETE", f"{base}/{name}")
        assert removed.json()["removed"] == ["container"]
        assert dcluster.request("GET", f"{base}/{name}").status_code == 404
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(f"river-env-{name}").remove(force=True)
