"""The OS account process-backend tasks run as.

A task is untrusted code. Run as the runner's own account it could read the runner's
credential (its data directory, /proc/<runner>/environ) and speak for the node; run as
root it would own the machine. So a runner running as root runs tasks as an unprivileged
account, and never as root. Users do not trust each other (docs/security.md), so by
default each River user's tasks get a uid of their own, as Slurm runs jobs as the
submitting user: `base + N` from `--task-uid-range` (default 200000-299999), where N is the
user's number that the host sends in the launch (its account id: nothing a user chooses).
No /etc/passwd entry is needed; the scratch directory is HOME. `--task-user NAME` instead
runs every task as one named account (`nobody`, say), which does not separate users. A
runner that is not root cannot change accounts: its tasks run as itself, which is only fit
for single-user setups.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

DEFAULT_TASK_USER = "nobody"
DEFAULT_UID_RANGE = "200000-299999"


class TaskAccountError(ValueError):
    """A --task-user this runner cannot honour."""


@dataclass(frozen=True)
class UidRange:
    """The uids (and equal gids) a root runner gives users' tasks: `first + N` for user N;
    `first` itself is nobody's (the range's owner, e.g. of the shared data cache)."""

    first: int
    last: int


@dataclass(frozen=True)
class TaskAccount:
    name: str
    uid: int
    gid: int
    per_user: UidRange | None = None  # set: each user's tasks run as their own uid

    def for_user(self, number: int | None) -> TaskAccount:
        """The account of user NUMBER's tasks: their own uid under a per-user runner, else
        this one. A per-user runner refuses a launch without a number (fail closed: sharing
        an account would let users read each other's files)."""
        if self.per_user is None:
            return self
        if number is None:
            raise TaskAccountError(
                "the host sent no user number with this task, and this runner runs each "
                "user's tasks under their own uid (--task-uid-range): upgrade the host, or "
                "run the runner with --task-user NAME"
            )
        uid = self.per_user.first + int(number)
        if number < 1 or uid > self.per_user.last:
            raise TaskAccountError(
                f"user number {number} does not fit --task-uid-range "
                f"{self.per_user.first}-{self.per_user.last}: give the runner a wider range"
            )
        return TaskAccount(f"river-user-{number}", uid, uid)

    @property
    def switches(self) -> bool:
        """Whether tasks run as another account than the runner's (the supervisor drops
        to it just before exec)."""
        return self.uid != os.geteuid()


def parse_uid_range(text: str) -> UidRange:
    """`FIRST-LAST` (`--task-uid-range`): unprivileged uids no account of this machine has."""
    first_text, dash, last_text = text.partition("-")
    if not dash or not first_text.isdigit() or not last_text.isdigit():
        raise TaskAccountError(
            f"--task-uid-range takes FIRST-LAST (e.g. 200000-299999), not {text!r}"
        )
    first, last = int(first_text), int(last_text)
    if first < 1000 or last <= first or last >= 2**31 - 1:
        raise TaskAccountError(
            f"--task-uid-range {text}: give 1000 <= FIRST < LAST < 2147483647, above the "
            "machine's own accounts (e.g. 200000-299999)"
        )
    taken = sorted(e.pw_name for e in pwd.getpwall() if first <= e.pw_uid <= last)
    if taken:
        raise TaskAccountError(
            f"--task-uid-range {text}: accounts of this machine use uids in it "
            f"({', '.join(taken[:5])}); tasks would run as them: choose a free range"
        )
    return UidRange(first, last)


def resolve_task_account(requested: str | None, uid_range: str | None = None) -> TaskAccount:
    """The account for --task-user REQUESTED (a name or a numeric uid), or under a root
    runner without one, per-user accounts from --task-uid-range UID_RANGE."""
    me = os.geteuid()
    if requested is not None and uid_range is not None:
        raise TaskAccountError(
            "--task-user and --task-uid-range exclude each other: one shared account, or "
            "one uid per user"
        )
    if me == 0 and requested is None:
        per_user = parse_uid_range(uid_range or DEFAULT_UID_RANGE)
        return TaskAccount("river-tasks", per_user.first, per_user.first, per_user)
    if uid_range is not None:
        raise TaskAccountError(
            "--task-uid-range: only a runner running as root can run tasks under other "
            "uids; leave it out to run them as this runner's user"
        )
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
