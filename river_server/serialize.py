"""JSON shapes of tasks and nodes as the API publishes them (see docs/api.md)."""

from __future__ import annotations

from typing import Any

from river_server import db


def _job_json(task: db.Task) -> dict[str, Any] | None:
    """A member's place in its job (spec["job"] less the member list), or None."""
    job = (task.spec or {}).get("job")
    if not job:
        return None
    keys = ("id", "rank", "size", "network", "master_addr", "master_port", "launcher")
    return {k: job[k] for k in keys if k in job}


def task_json(
    task: db.Task, queue_position: int | None = None, wait_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": str(task.id),
        "name": task.name,
        "owner": task.owner,
        "kind": task.kind,
        "state": task.state,
        "request": task.request,
        "node": task.node,
        "cpus": task.cpus or [],
        "gpus": task.gpus or [],
        "memory": task.memory,
        "array": (task.spec or {}).get("array"),  # {id, index, size, limit} or None
        "job": _job_json(task),
        "overlay_ip": (task.spec or {}).get("overlay_ip"),  # reserved with ip_token, or None
        "exit_code": task.exit_code,
        "reason": task.reason,
        "queue_position": queue_position,
        "wait_reason": wait_reason,
        "submitted_at": task.submitted_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        # Seconds from started_at; clients show what is left (river_server/time_limits.py).
        "time_limit": (task.spec or {}).get("time_limit"),
    }


def task_detail_json(task: db.Task, **queue: Any) -> dict[str, Any]:
    """The full record, spec included; only for those allowed to see the task's insides."""
    return {**task_json(task, **queue), "spec": task.spec}


def node_json(node: db.Node, free: dict[str, Any], online: bool) -> dict[str, Any]:
    return {
        "name": node.name,
        "url": node.url,
        "state": "online" if online else "offline",
        "backend": node.backend,
        "cores": len(node.cpus or []),
        "cpus": node.cpus or [],
        "memory": node.memory,
        "numa": node.numa or [],
        "gpus": node.gpus or [],
        "free": free,
        "metrics": node.metrics or {},
        "last_seen": node.last_seen,
        "registered_at": node.registered_at,
    }
