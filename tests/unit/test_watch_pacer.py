"""The timing rules both clients' `watch` follow (river_magics.watching.WatchPacer)."""

from __future__ import annotations

import pytest

from river_magics.errors import RiverConnectionError, RiverError
from river_magics.watching import POLL_MAX, POLL_MIN, WatchPacer, WatchSet


def test_which_stream_failures_fall_back_to_polling() -> None:
    pacer = WatchPacer(None)
    assert pacer.stream_failed(RiverConnectionError("host away"))
    assert pacer.stream_failed(RiverError("busy", status=503)) and pacer.use_stream
    for status in (400, 401, 403):
        assert not pacer.stream_failed(RiverError("no", status=status))
    assert pacer.stream_failed(RiverError("no events route", status=404))
    assert not pacer.use_stream  # from now on only polls


def test_backoff_doubles_up_to_its_bound_and_resets_after_a_working_stream() -> None:
    pacer = WatchPacer(None)
    pauses = [pacer.next_pause() for _ in range(8)]
    assert pauses[0] == POLL_MIN and pauses[1] == 2 * POLL_MIN and max(pauses) == POLL_MAX
    watch = WatchSet(["1"], logs=False)
    pacer.open_stream(watch)
    assert not pacer.reopen_now(watch)  # never connected: poll first
    watch.events_for("hello", {})
    watch.reopen = True
    assert pacer.reopen_now(watch) and pacer.backoff == POLL_MIN


def test_the_deadline_bounds_pauses_and_stream_reads() -> None:
    pacer = WatchPacer(0.5)
    assert pacer.next_pause() <= 0.5
    watch = WatchSet(["7"], logs=True)
    read_timeout, refreshing = pacer.open_stream(watch)
    assert read_timeout <= 0.5 and not refreshing
    expired = WatchPacer(0.0)
    with pytest.raises(TimeoutError, match="task 7 is not finished yet"):
        expired.check_deadline(["7"])
    with pytest.raises(TimeoutError, match="2 tasks are not finished yet"):
        expired.check_deadline(["7", "8"])


def test_a_queue_only_watch_refreshes_with_the_short_timeout() -> None:
    watch = WatchSet(["1"], logs=False)
    watch.task({"id": "1", "state": "queued"})
    read_timeout, refreshing = WatchPacer(None).open_stream(watch)
    assert refreshing and read_timeout == 2.0
    running = WatchSet(["1"], logs=False)
    assert not running.should_reopen("task", refreshing=False)
    running.task({"id": "1", "state": "queued"})
    assert running.should_reopen("task", refreshing=False) and running.reopen
