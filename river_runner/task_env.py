"""The environment a process-backend task starts with: built from nothing, not inherited.

The runner's environment is not the task's to see: under `river up` the runner is a child of
the Jupyter server, whose environment holds the server token (an admin credential), and a
runner started by hand may hold its join token. So a task gets only the variables listed
here (docs/design-decisions.md), plus what its spec's `env` asks for.
"""

from __future__ import annotations

import os
import pwd
from typing import TYPE_CHECKING

from river_runner.gpu import process_gpu_environment
from river_runner.task_account import TaskAccount

if TYPE_CHECKING:
    from river_runner.backends.base import TaskLaunch

# Taken from the runner's environment when set: they say how to find programs and how to
# format text, nothing about who the runner is.
PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Never passed, whatever `river runner --task-env` names: they are credentials.
CREDENTIALS = frozenset(
    {"RIVER_JOIN_TOKEN", "RIVER_RUNNER_TOKEN", "RIVER_TOKEN", "JUPYTER_TOKEN", "JUPYTER_PASSWORD"}
)


def check_task_env_names(names: list[str]) -> tuple[str, ...]:
    """Names given to `--task-env`: plain variable names, and no credential."""
    for name in names:
        if not name.replace("_", "a").isalnum() or name[:1].isdigit():
            raise ValueError(f"--task-env takes a variable name, not {name!r}")
        if name in CREDENTIALS:
            raise ValueError(f"--task-env {name}: credentials are never passed to tasks")
    return tuple(names)


def _home_of(account: TaskAccount) -> str:
    if not account.switches and os.environ.get("HOME"):
        return os.environ["HOME"]
    try:
        return pwd.getpwuid(account.uid).pw_dir
    except KeyError:
        return "/"


def task_environment(
    launch: TaskLaunch,
    account: TaskAccount,
    scratch: str | None = None,
    passed: tuple[str, ...] = (),
) -> dict[str, str]:
    """Variables for `launch` run as `account`. `scratch`: the task's own
    directory when it runs as another account; it becomes HOME and TMPDIR (the account's
    home, e.g. nobody's /nonexistent, is rarely usable). `passed`: more names to take from
    the runner's environment (`river runner --task-env`)."""
    names = [*PASSED_THROUGH, *(n for n in passed if n not in CREDENTIALS)]
    env = {name: os.environ[name] for name in names if os.environ.get(name)}
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = scratch or _home_of(account)
    env["USER"] = env["LOGNAME"] = account.name
    tmpdir = scratch or os.environ.get("TMPDIR")
    if tmpdir:
        env["TMPDIR"] = tmpdir
    env.update({k: str(v) for k, v in launch.env.items()})
    env["RIVER_TASK_ID"] = str(launch.task_id)
    env.update(process_gpu_environment(launch.gpus))  # CUDA_VISIBLE_DEVICES, device order
    env["PYTHONUNBUFFERED"] = "1"
    if launch.workdir:
        env["RIVER_TASK_WORKDIR"] = launch.workdir
    return env
