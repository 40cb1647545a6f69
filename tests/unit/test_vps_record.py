"""The next run's image and node of a VPS, chosen once for a user's restart and a
preempted VPS's requeue (river_server/vps_record.py)."""

from __future__ import annotations

from river_server.vps_record import newest_snapshot

RECORD = {"snapshots": ["river-vps/7:1", "river-vps/7:2"], "snapshot_node": "node-a"}


def test_the_newest_snapshot_on_the_node_that_holds_it() -> None:
    assert newest_snapshot(RECORD, None) == ("river-vps/7:2", "node-a")


def test_a_given_target_is_kept() -> None:
    assert newest_snapshot(RECORD, "node-a:1::0") == ("river-vps/7:2", "node-a:1::0")


def test_no_snapshot_no_choice() -> None:
    assert newest_snapshot({"snapshots": [], "snapshot_node": "node-a"}, None) is None
    assert newest_snapshot({}, "node-b") is None
