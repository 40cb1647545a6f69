"""SQLAlchemy models and engine. SQLite by default; any SQLAlchemy URL (PostgreSQL) works."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    # SQLite would otherwise reuse a deleted user's id, and with it their task uid
    # (migration 0011).
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    password_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # None: a local account (password, invitation, CLI); "hub": made on first sight of a
    # JupyterHub identity (river_server/hub.py). A Hub account never logs in with a
    # password, and a Hub identity never takes over a local account of the same name.
    origin: Mapped[str | None] = mapped_column(String(16), nullable=True)


class RetiredUserName(Base):
    """The name of a deleted account. Tasks, VPSes and SSH access are recorded by owner
    name, so a name is never given to a new account: it would inherit all of them."""

    __tablename__ = "retired_user_names"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    retired_at: Mapped[float] = mapped_column(Float, default=time.time)


class ApiToken(Base):
    """An API token; only its SHA3-512 digest is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Invitation(Base):
    """A code that lets someone create an account with `role`; only its digest is stored."""

    __tablename__ = "invitations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    max_uses: Mapped[int] = mapped_column(Integer, default=1)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Group(Base):
    """A set of users sharing a quota (max concurrent cores / GPUs of all members together)."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    max_cores: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class UserQuota(Base):
    """Per-user limits on concurrent cores / GPUs (None: unlimited)."""

    __tablename__ = "user_quotas"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    max_cores: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Node(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(256))
    credential_hash: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="offline")
    backend: Mapped[str] = mapped_column(String(16), default="process")
    cpus: Mapped[list] = mapped_column(JSON, default=list)
    numa: Mapped[list] = mapped_column(JSON, default=list)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    gpus: Mapped[list] = mapped_column(JSON, default=list)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    registered_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_seen: Mapped[float] = mapped_column(Float, default=time.time)


class Task(Base):
    __tablename__ = "tasks"
    # Per-user lists page by id, newest first (WHERE owner = ? ORDER BY id DESC): one
    # composite index serves them without a sort, and owner-only lookups too (revision 0002).
    __table_args__ = (Index("ix_tasks_owner_id", "owner", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(256), default="")
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict] = mapped_column(JSON)  # command/script/env/workdir/image...
    request: Mapped[dict] = mapped_column(JSON)  # ResourceRequest.to_json()
    state: Mapped[str] = mapped_column(String(20), index=True)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    cpus: Mapped[list] = mapped_column(JSON, default=list)
    gpus: Mapped[list] = mapped_column(JSON, default=list)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[float] = mapped_column(Float, default=time.time)
    assigned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # A member of a multi-node job (river_server/jobs.py): the job's id and this member's
    # rank; both None for a single task.
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    job_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Fair share: up to when this task's run was added to its owner's usage (usage.py).
    usage_charged_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Priorities and preemption (revision 0008): higher goes first; how many times the task
    # was displaced and put back in the queue (river_server/preemption.py).
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: 0
    requeues: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: 0
    # Kernel-bound (revision 0009): the notebook kernel's lease; killed when it lapses
    # (river_server/leases.py). None: detached, the default.
    lease_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class KernelLease(Base):
    """A notebook kernel's lease (river_server/leases.py): renewed by the kernel while it
    lives; when it lapses (or is released) the tasks bound to it are killed."""

    __tablename__ = "kernel_leases"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    created_at: Mapped[float] = mapped_column(Float)


class UsageRecord(Base):
    """A user's decayed core- and GPU-seconds as of `at` (river_server/fairshare.py)."""

    __tablename__ = "usage"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    core_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[float] = mapped_column(Float, default=0.0)


class NodeHistory(Base):
    """A node's metrics at one time, fine or averaged into a coarse bucket (history.py)."""

    __tablename__ = "node_history"
    __table_args__ = (Index("ix_node_history_node_at", "node", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    tier: Mapped[int] = mapped_column(Integer)  # 0: fine, 1: coarse
    at: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer, default=1)  # heartbeats averaged here
    cpu: Mapped[float | None] = mapped_column(Float, nullable=True)  # percent
    memory: Mapped[float | None] = mapped_column(Float, nullable=True)  # percent
    gpus: Mapped[list] = mapped_column(JSON, default=list)  # [[util %, memory %], ...]


class UsageHour(Base):
    """A user's undecayed core- and GPU-seconds in one clock hour (history.py)."""

    __tablename__ = "usage_history"
    user: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[float] = mapped_column(Float, primary_key=True)  # start, unix seconds
    core_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class JobPort(Base):
    """A port a host-network job holds on one node (river_server/job_ports.py): one row per
    member, so two host-mode jobs on a node never get the same port. A row counts while
    its task is unfinished; rows of finished tasks are deleted at the next allocation."""

    __tablename__ = "job_ports"
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    task_id: Mapped[int] = mapped_column(BigInteger, index=True)


class TaskTransition(Base):
    """Audit trail: every state a task went through, in order."""

    __tablename__ = "task_transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, index=True)
    state: Mapped[str] = mapped_column(String(20))
    at: Mapped[float] = mapped_column(Float, default=time.time)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class HostLeader(Base):
    """Which host leads (river_server/leadership.py): one row, id 1, rewritten by each new
    leader. `epoch` is the fencing token (a pass that writes checks it is still its own);
    `url` is what standbys name in X-River-Leader."""

    __tablename__ = "host_leader"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    host_id: Mapped[str] = mapped_column(String(64), default="")
    url: Mapped[str] = mapped_column(String(256), default="")
    since: Mapped[float] = mapped_column(Float, default=time.time)


class EnvironmentExport(Base):
    """An exported environment tarball: who owns it and its sha256. Runners load only a
    tarball with this digest, so what lies in the shared dir is never trusted by itself."""

    __tablename__ = "environment_exports"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the tarball, hex
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    image: Mapped[str | None] = mapped_column(String(256), nullable=True)  # the base image
    image_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    exported_at: Mapped[float] = mapped_column(Float, default=time.time)
    exported_by: Mapped[str] = mapped_column(String(64), default="")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes with WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, upgrade: bool = False, log: logging.Logger | None = None) -> Engine:
    """An engine on a database at this code's schema revision (river_server/schema.py:
    created, stamped or upgraded there; `upgrade` allows upgrading a PostgreSQL one)."""
    from river_server import schema

    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        schema.prepare(engine, upgrade=upgrade, log=log)
    except BaseException:
        engine.dispose()
        raise
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def newest_task_id(session: Session) -> int | None:
    return session.scalar(select(Task.id).order_by(Task.id.desc()).limit(1))


def newest_vps_task(session: Session, vps_id: int) -> Task | None:
    """A VPS's newest incarnation, deleted or not. Here, not in the VPS service, because the
    image check of every submission asks it too (and the VPS service submits tasks)."""
    return session.scalars(
        select(Task)
        .where(Task.kind == "vps", Task.spec[("vps", "id")].as_string() == str(vps_id))
        .order_by(Task.id.desc())
        .limit(1)
    ).first()
