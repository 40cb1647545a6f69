"""What the sync and async task handles and groups share: their views of what is known
(no request), and the rules that turn a finished task and its pull blob into results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from .common import WAITING
from .errors import RiverError
from .payload import PayloadError, decode_pulled


class HandleBase:
    """A submitted task: its ID, the last record seen of it, the names it sends back."""

    def __init__(self, id: str | int, task: dict[str, Any] | None, pull: Sequence[str]) -> None:
        self.id = str(id)
        self.last: dict[str, Any] | None = task  # the most recent record seen, if any
        self.pull = list(pull)  # names this task sends back (result())

    def __repr__(self) -> str:
        state = self.last.get("state") if self.last else None
        return f"<{type(self).__name__} {self.id}{' ' + state if state else ''}>"


Handle = TypeVar("Handle", bound=HandleBase)


class GroupBase(Generic[Handle]):
    """Several handles with labels (array indices or targets)."""

    def __init__(
        self,
        handles: Sequence[Handle],
        labels: Sequence[str] | None,
        array_id: str | None,
    ) -> None:
        self.handles = list(handles)
        self.labels = list(labels) if labels is not None else [h.id for h in self.handles]
        self.array_id = array_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.handles)}: {self.counts()}>"

    def __len__(self) -> int:
        return len(self.handles)

    def __iter__(self) -> Iterator[Handle]:
        return iter(self.handles)

    def __getitem__(self, label: str | int) -> Handle:
        """The handle for a label (array index or target), or by position for an int."""
        if isinstance(label, int) and str(label) not in self.labels:
            return self.handles[label]
        return self.handles[self.labels.index(str(label))]

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.handles]

    def label_of(self, id: str) -> str:
        return self.labels[self.ids.index(str(id))]

    def states(self) -> dict[str, str | None]:
        """label -> last known state (no request)."""
        return {
            label: (h.last or {}).get("state")
            for label, h in zip(self.labels, self.handles, strict=True)
        }

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.states().values():
            counts[state or "unknown"] = counts.get(state or "unknown", 0) + 1
        return counts

    def kill_order(self) -> list[Handle]:
        """Queued members first (newest first), then placed ones: a queued member killed
        after a running one could be placed on the freed cores in between and start for
        nothing."""
        waiting = [h for h in self.handles if (h.last or {}).get("state") in WAITING]
        return waiting[::-1] + [h for h in self.handles if h not in waiting][::-1]


def missing_pull_blob(task_id: str, exc: RiverError) -> None:
    """Fetching a task's pull blob failed: return if it simply has none (404), else raise
    (a 409 says which value could not be sent back)."""
    if exc.status == 409:
        raise PayloadError(f"task {task_id}: {exc.message}") from None
    if exc.status != 404:
        raise exc


def pulled_values(handle: HandleBase, final: dict[str, Any], blob: bytes | None) -> dict[str, Any]:
    """The variables a finished task sent back, or the error that says why there are none."""
    if final.get("state") != "completed":
        from .display import status_text

        raise RiverError(f"task {handle.id} {status_text(final)}: it has no results")
    if blob is None:
        if handle.pull:
            raise PayloadError(f"task {handle.id} completed but sent no values back")
        return {}
    return decode_pulled(blob)
