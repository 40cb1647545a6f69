"""The dashboard hears of a task twice: from the event stream and from periodic listings.

A listing asked for before an event arrived can carry the state that event replaced; it
must not win (the tour notebook once saw `completed -> running`).
"""

from __future__ import annotations

import time

from river_magics.client import Client
from river_widgets import Dashboard


def _dashboard() -> Dashboard:
    # start=False: nothing is asked of the (absent) host.
    return Dashboard(Client("http://127.0.0.1:9", token="unused"), start=False)


def test_a_listing_older_than_an_event_does_not_undo_it() -> None:
    dashboard = _dashboard()
    asked_at = time.monotonic()  # the refresh thread asks for the list...
    dashboard._apply_tasks([{"id": "7", "state": "completed"}])  # ...the event lands...
    dashboard._apply_tasks([{"id": "7", "state": "running"}], as_of=asked_at)  # ...then the list
    assert dashboard.tasks["7"]["state"] == "completed"
    assert dashboard.transitions["7"] == ["completed"]


def test_a_listing_asked_for_after_the_event_is_applied() -> None:
    dashboard = _dashboard()
    dashboard._apply_tasks([{"id": "7", "state": "running"}])
    asked_at = time.monotonic()
    dashboard._apply_tasks([{"id": "7", "state": "paused"}], as_of=asked_at)
    assert dashboard.tasks["7"]["state"] == "paused"
    assert dashboard.transitions["7"] == ["running", "paused"]
