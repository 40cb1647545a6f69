"""The OS account process-backend tasks run as.

A task is untrusted code. Run as the runner's own account it could read the runner's
credential (its data directory, /proc/<runner>/environ) and speak for the node; run as
root it would own the machine. So a runner running as root runs tasks as an unprivileged
account (`nobody` unless told otherwise), as Slurm runs jobs as the submitting user, and
never as root. A runner that is not root cannot change accounts: its tasks run as itself,
which is only fit for single-user setups (docs/security.md).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

DEFAULT_TASK_USER = "nobody"


class TaskAccountError(ValueError):
    """A --task-user this runner cannot honour."""


@dataclass(frozen=True)
class TaskAccount:
    name: str
    uid: int
    gid: int

    @property
    def switches(self) -> bool:
        """Whether tasks run as another account than the runner's (the supervisor drops
        to it just before exec)."""
        return self.uid != os.geteuid()


def resolve_task_account(requested: str | None) -> TaskAccount:
    """The account for --task-user REQUESTED (a name or a numeric uid)."""
    me = os.geteuid()
    if requested is None and me != 0:  # as itself (which may have no passwd entry)
        try:
            name = pwd.getpwuid(me).pw_name
        except KeyError:
            name = str(me)
        return TaskAccount(name, me, os.getegid())
    if requested is None:
        requested = DEFAULT_TASK_USER
    try:
        entry = pwd.getpwuid(int(requested)) if requested.isdigit() else pwd.getpwnam(requested)
    except (KeyError, OverflowError):
        raise TaskAccountError(
            f"--task-user {requested}: no such account on this machine; create it "
            "(e.g. useradd --system river-task) or name another"
        ) from None
    if entry.pw_uid == 0:
        raise TaskAccountError(
            "--task-user: tasks never run as root; name an unprivileged account "
            f"(default {DEFAULT_TASK_USER})"
        )
    if me != 0 and entry.pw_uid != me:
        raise TaskAccountError(
            f"--task-user {requested}: only a runner running as root can run tasks as "
            "another account; leave --task-user out to run them as this runner's user"
        )
    return TaskAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)
