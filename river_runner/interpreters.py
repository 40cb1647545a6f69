"""Which Python runs a python task on the process backend.

The runner's own interpreter is River's venv, which holds none of a lab's packages. A task
may name another (`python`): an interpreter's path, a venv or conda environment's directory
(its bin/python), or a name the node's operator configured (`river runner --python-env
NAME=PATH`). The answer is checked before the task starts, as the task's account, so a
typo or an interpreter that account cannot run fails the task at once with the reason
instead of a traceback later. `%%river submit` sends the kernel's own interpreter with
`python_fallback`: on a node without that path (no shared filesystem) the runner's own
runs instead, and the note the task's log gets says so.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from river_runner.protocol import INTERPRETER_NOTE_PREFIX as NOTE_PREFIX
from river_runner.task_account import TaskAccount
from river_runner.wire.fields import PYTHON_ENV_NAME

PROBE_TIMEOUT_S = 15.0
# Prints the version; -I -S: nothing of the environment or site-packages can break it.
PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3])"


class InterpreterError(ValueError):
    """A `python` this node cannot honour; the message says what to fix."""


def interpreter_in(path: Path) -> Path:
    """The interpreter `path` names: the file itself, or bin/python inside a venv or conda
    environment's directory."""
    if path.is_dir():
        for candidate in ("bin/python", "bin/python3"):
            if (path / candidate).is_file():
                return path / candidate
        raise InterpreterError(
            f"{path} is a directory without bin/python: not a venv or conda environment"
        )
    if not path.exists():
        raise InterpreterError(f"{path} does not exist on this node")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise InterpreterError(f"{path} is not an executable file")
    return path


def parse_python_envs(items: list[str]) -> dict[str, str]:
    """`--python-env NAME=PATH` options, each checked now: an operator's typo is an error at
    start-up, not a failed task later."""
    envs: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not PYTHON_ENV_NAME.match(name) or not path.startswith("/"):
            raise InterpreterError(
                f"--python-env takes NAME=/absolute/path (a venv, conda environment or "
                f"interpreter), not {item!r}"
            )
        envs[name] = str(interpreter_in(Path(path)))
    return envs


@dataclass(frozen=True)
class Interpreter:
    """The interpreter a task runs with, and the note its log gets about it."""

    path: str
    note: str


class Interpreters:
    """Resolves a task's `python` on this node (paths, --python-env names, fallback)."""

    def __init__(self, default: str, envs: dict[str, str], account: TaskAccount) -> None:
        self.default = default
        self.envs = envs
        self.account = account
        self._versions: dict[tuple[str, int, int, int], str] = {}  # (path, inode, mtime, uid)

    def locate(self, requested: str) -> Path:
        """The interpreter a path or an environment's name stands for on this node."""
        if not requested.startswith("/"):
            if requested not in self.envs:
                offered = ", ".join(sorted(self.envs)) or "none"
                raise InterpreterError(
                    f"python environment {requested!r} is not offered by this node "
                    f"(offered: {offered}; river runner --python-env NAME=PATH)"
                )
            return Path(self.envs[requested])
        return interpreter_in(Path(requested))

    async def choose(
        self, requested: str | None, fallback: bool, account: TaskAccount | None = None
    ) -> Interpreter:
        """The interpreter for a task asking for `requested`; raises InterpreterError when
        it cannot run here (unless `fallback`: then the runner's own, and the note says why)."""
        if not requested:
            return Interpreter(self.default, self._ran_with(self.default, _own_version()))
        try:
            path = self.locate(requested)
            version = await self.version(path, account)
        except InterpreterError as exc:
            if not fallback:
                raise InterpreterError(f"python {requested!r}: {exc}") from None
            note = self._ran_with(self.default, _own_version())
            return Interpreter(self.default, f"{note}, not {requested}: {exc}")
        return Interpreter(str(path), self._ran_with(str(path), version))

    async def version(self, path: Path, account: TaskAccount | None = None) -> str:
        """The interpreter's version, asked of it as the task's account (so one that account
        cannot run fails here, with the reason); cached per uid while the file is unchanged."""
        account = account or self.account
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_mtime_ns, account.uid)
        if key in self._versions:
            return self._versions[key]
        drop = {}
        if account.switches:
            drop = {"user": account.uid, "group": account.gid, "extra_groups": []}
        try:
            proc = await asyncio.create_subprocess_exec(
                str(path),
                "-I",
                "-S",
                "-c",
                PROBE,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                **drop,  # type: ignore[arg-type]
            )
            out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
        except PermissionError:
            raise InterpreterError(self._cannot_run(path, "permission denied", account)) from None
        except OSError as exc:
            raise InterpreterError(
                self._cannot_run(path, exc.strerror or str(exc), account)
            ) from None
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise InterpreterError(
                f"{path} did not answer within {PROBE_TIMEOUT_S:.0f} s: is it a python?"
            ) from None
        version = out.decode(errors="replace").strip()
        if proc.returncode != 0 or not version[:1].isdigit():
            detail = (err or out).decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise InterpreterError(self._cannot_run(path, detail[0] or "not a python", account))
        self._versions[key] = version
        return version

    def _cannot_run(self, path: Path, why: str, account: TaskAccount) -> str:
        who = f"the task account {account.name!r}" if account.switches else "tasks"
        return (
            f"{path} cannot be run by {who} ({why}); every directory down to it must be "
            "searchable (o+x) and the file executable by that account"
        )

    @staticmethod
    def _ran_with(path: str, version: str) -> str:
        return f"{NOTE_PREFIX}{path} (Python {version})"


def _own_version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])
