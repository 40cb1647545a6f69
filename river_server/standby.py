"""What a standby host refuses, and how (docs/design-decisions.md, "A standby host").

A standby serves the API's reads from the shared database. Anything that writes, every
runner route, event streams, WebSockets and the proxy need the leader (it alone schedules,
holds the runners' connections and publishes events), so they answer 503 with
`X-River-Leader: <url>`: a runner or client given several host URLs moves on at once.
Every River answer also says which this host is (`X-River-Role: leader|standby`).
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from river_runner.protocol import LEADER_HEADER, ROLE_HEADER

READS = frozenset({"GET", "HEAD", "OPTIONS"})


def refuse_if_standby(handler: web.RequestHandler, leader_only: bool = False) -> bool:
    """Answer 503 naming the leader when this host stands by and the request needs the
    leader (any method but a read, or any method of a `leader_only` route). True if it
    answered (the caller's prepare must then stop)."""
    river: Any = handler.settings.get("river")
    if river is None:
        return False
    leadership = river.leadership
    handler.set_header(ROLE_HEADER, "leader" if leadership.is_leader else "standby")
    if leadership.is_leader:
        return False
    if not leader_only and (handler.request.method or "GET").upper() in READS:
        return False
    leader = leadership.leader_url()
    where = f"the leader is {leader}" if leader else "no host leads right now; retry shortly"
    handler.set_status(503)
    if leader:
        handler.set_header(LEADER_HEADER, leader)
    handler.set_header("Retry-After", "1")
    handler.set_header("Content-Type", "application/json")
    handler.finish(
        json.dumps(
            {
                "message": f"this River host is a standby and serves reads only; {where}",
                "leader": leader or None,
            }
        )
    )
    return True
