"""In-process publish/subscribe of task, log and node events for streaming clients.

Each subscriber gets its own bounded queue; a subscriber too slow to keep up is dropped
(its stream ends and the client reconnects with `since=`) rather than slowing the host.
Subscriber queues belong to the event loop: a publish from a DB worker thread is handed to
the loop (river_server/dbwork.py), in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from river_server.dbwork import DbWork

Event = tuple[str, dict[str, Any]]
QUEUE_LIMIT = 10_000


@dataclass(eq=False)
class Subscription:
    accepts: Callable[[str, dict[str, Any]], bool]
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False


class EventBus:
    def __init__(self, work: DbWork | None = None) -> None:
        self._subscribers: set[Subscription] = set()
        self._work = work

    def subscribe(self, accepts: Callable[[str, dict[str, Any]], bool]) -> Subscription:
        subscription = Subscription(accepts)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        if self._work is not None and not self._work.on_loop():
            self._work.call_on_loop(self._deliver, kind, data)
            return
        self._deliver(kind, data)

    def _deliver(self, kind: str, data: dict[str, Any]) -> None:
        for subscription in list(self._subscribers):
            if not subscription.accepts(kind, data):
                continue
            try:
                subscription.queue.put_nowait((kind, data))
            except asyncio.QueueFull:
                subscription.overflowed = True
                self._subscribers.discard(subscription)
                # Make room for the end-of-stream marker so the reader wakes and closes.
                subscription.queue.get_nowait()
                subscription.queue.put_nowait(None)

    def __len__(self) -> int:
        return len(self._subscribers)
