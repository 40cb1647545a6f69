"""One user's process task cannot read, write or signal another user's, on the same node.

The attacker is user A (mallory) with a plain `user` account and a process task. User B
(bob) has a task running on the same root runner at the same time; it wrote a secret into
its own directory (HOME). Mallory's task, told bob's paths and pid (which `ps` and /proc
show any local process), tries to read the secret, list bob's directory, write a file
into it, append to the secret and send bob's task a signal. Each must be refused, while a
second task of bob's own reads the secret (tasks of one user may share) and each task still
runs the runner's Python (what must be shared is reachable).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, as_user, wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tasks change accounts only as root")

# Bob's task: a secret in its own directory, then wait (bounded) for the test's gate.
VICTIM = r"""
import json, os, time
secret = os.path.join(os.environ["HOME"], "secret.txt")
with open(secret, "w") as handle:
    handle.write("bob-secret")
print("VICTIM " + json.dumps({"home": os.environ["HOME"], "secret": secret,
                              "pid": os.getpid(), "uid": os.getuid(),
                              "mode": oct(os.stat(os.environ["HOME"]).st_mode & 0o777)}),
      flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(GATE) and time.monotonic() < deadline:
    time.sleep(0.05)
with open(secret) as handle:
    print("AFTER " + json.dumps({"secret": handle.read(),
                                 "listing": sorted(os.listdir(os.environ["HOME"]))}))
"""

# Mallory's task (and bob's second one): everything one local process could try.
ATTACK = r"""
import json, os, signal
out = {"uid": os.getuid(), "gid": os.getgid()}
def attempt(label, action):
    try:
        out[label] = ["done", action()]
    except OSError as exc:
        out[label] = ["refused", exc.strerror]
attempt("read", lambda: open(VICTIM["secret"]).read())
attempt("list", lambda: sorted(os.listdir(VICTIM["home"])))
def plant():
    with open(os.path.join(VICTIM["home"], f"planted-{WHO}.txt"), "w") as handle:
        handle.write(f"{WHO} was here")
    return "planted"
attempt("write", plant)
def append():
    with open(VICTIM["secret"], "a") as handle:
        handle.write(f" + {WHO}")
    return "appended"
attempt("append", append)
attempt("signal", lambda: os.kill(VICTIM["pid"], 0) or "signalled")
print("ATTACK " + json.dumps(out))
"""


@pytest.fixture
def gate() -> Iterator[Path]:
    """A file path any account can see appear: the test opens it to let bob's task end."""
    folder = Path(tempfile.mkdtemp(prefix="river-gate-"))
    folder.chmod(0o755)
    try:
        yield folder / "open"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _text(cluster: Cluster, task_id: str) -> str:
    lines = cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]
    return "\n".join(line["text"] for line in lines)


def _tagged(cluster: Cluster, task_id: str, tag: str) -> dict | None:
    text = _text(cluster, task_id)
    if f"{tag} " not in text:
        return None
    return json.loads(text.split(f"{tag} ", 1)[1].splitlines()[0])


def _submit(cluster: Cluster, token: str, script: str) -> str:
    response = cluster.request(
        "POST", "/river/api/tasks", json={"script": script, "cores": 1}, **as_user(token)
    )
    assert response.status_code == 201, response.text
    return response.json()["task"]["id"]


def _attack(cluster: Cluster, who: str, token: str, victim: dict) -> dict:
    task_id = _submit(cluster, token, f"WHO = {who!r}\nVICTIM = {victim!r}\n{ATTACK}")
    task = cluster.wait_task(task_id, {"completed", "failed"})
    assert task["state"] == "completed", _text(cluster, task_id)  # it ran the runner's Python
    found = _tagged(cluster, task_id, "ATTACK")
    assert found is not None, _text(cluster, task_id)
    return found


@needs_root
def test_one_users_task_cannot_touch_anothers_files_on_the_same_node(
    cluster: Cluster, gate: Path
) -> None:
    cluster.start_runner("r1")
    tokens = cluster.make_users("bob", "mallory")
    bob_task = _submit(cluster, tokens["bob"], f"GATE = {str(gate)!r}\n{VICTIM}")
    try:
        victim = wait_for(
            lambda: _tagged(cluster, bob_task, "VICTIM"), 30, what="bob's task to write"
        )
        seen = _attack(cluster, "mallory", tokens["mallory"], victim)
        assert seen["uid"] != victim["uid"] and 0 not in (seen["uid"], seen["gid"]), seen
        for attempt in ("read", "list", "write", "append", "signal"):
            assert seen[attempt][0] == "refused", (attempt, seen)
        assert victim["mode"] == "0o700", victim

        # Bob's own second task shares his account: it reaches his files.
        own = _attack(cluster, "bob", tokens["bob"], victim)
        assert own["uid"] == victim["uid"], own
        assert own["read"] == ["done", "bob-secret"], own
    finally:
        gate.touch()
    cluster.wait_task(bob_task, {"completed", "failed"})
    after = _tagged(cluster, bob_task, "AFTER")
    assert after is not None, _text(cluster, bob_task)
    assert "mallory" not in json.dumps(after), after  # nothing of mallory's in bob's directory


@needs_root
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--task-uid-range", "5-2"], "--task-uid-range 5-2: give 1000 <= FIRST < LAST"),
        (["--task-uid-range", "lots"], "--task-uid-range takes FIRST-LAST"),
        (["--task-uid-range", "0-99999"], "give 1000 <= FIRST"),  # root's uid would be in it
        (["--task-uid-range", "60000-70000"], "accounts of this machine use uids in it"),
        (["--task-user", "nobody", "--task-uid-range", "200000-299999"], "exclude each other"),
    ],
)
def test_a_uid_range_that_would_not_separate_users_is_refused(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """60000-70000 holds `nobody` (65534): tasks would run as an existing account."""
    result = subprocess.run(
        [sys.executable, "-m", "river_runner.cli", "runner", "--host", "http://127.0.0.1:9"]
        + ["--backend", "process", "--data-dir", str(tmp_path), *args],
        env={**os.environ, "RIVER_JOIN_TOKEN": "t"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert says in result.stderr, result.stderr
