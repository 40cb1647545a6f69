"""Idle culling's pure parts: the runner's CPU meter (percent of one core between two
beats, first beat silent, ended tasks forgotten) and the host's busy/idle rule."""

from __future__ import annotations

import os
import time

from river_runner.task_cpu import MAX_REPORTED, CpuMeter, tree_cpu_seconds
from river_server.idle_cull import IdlePolicy


def test_the_meter_reports_percent_of_one_core_from_the_second_reading() -> None:
    meter = CpuMeter()
    assert meter.percents({1: 10.0, 2: 5.0}, now=100.0) == {}
    assert meter.percents({1: 12.0, 2: 5.1}, now=102.0) == {"1": 100.0, "2": 5.0}
    # Task 2 ended: forgotten, so a reused id starts afresh.
    assert meter.percents({1: 12.0}, now=103.0) == {"1": 0.0}
    assert meter.percents({1: 12.0, 2: 50.0}, now=104.0) == {"1": 0.0}


def test_the_meter_skips_unknown_figures_and_stays_bounded() -> None:
    meter = CpuMeter()
    many = {i: 1.0 for i in range(MAX_REPORTED + 50)}
    meter.percents({**many, 9999: None}, now=1.0)
    assert len(meter.percents(many, now=2.0)) == MAX_REPORTED


def test_a_process_tree_counts_its_own_cpu() -> None:
    before = tree_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = tree_cpu_seconds(os.getpid())
    assert before is not None and after is not None and after - before >= 0.15
    assert tree_cpu_seconds(2**22 + 12345) is None  # no such process


def test_busy_when_cpu_or_any_gpu_is_over_its_threshold() -> None:
    policy = IdlePolicy(window=7200, cpu_threshold=5, gpu_threshold=10)
    assert policy.busy(4.9, []) is False
    assert policy.busy(5.0, []) is True
    assert policy.busy(1.0, [3.0, 50.0]) is True  # a GPU at work keeps it
    assert policy.busy(1.0, [3.0, None]) is False
    assert policy.busy(None, []) is None  # unknown: never judged idle
    assert policy.busy(None, [80.0]) is True
    assert policy.reason(False).startswith("idle for 2h (CPU under 5%)")
    assert "GPU under 10%" in policy.reason(True)
    assert not IdlePolicy().on


def test_river_tasks_shows_priority_and_requeues_only_where_set() -> None:
    from river_magics.display import tasks_bundle

    plain = {"id": "1", "name": "a", "owner": "o", "state": "running", "priority": 0}
    urgent = {"id": "2", "name": "b", "owner": "o", "state": "queued", "priority": 5}
    displaced = {**plain, "id": "3", "requeues": 2}
    assert "priority" not in tasks_bundle([plain])["text/plain"]
    text = tasks_bundle([plain, urgent, displaced])["text/plain"]
    assert "priority / requeues" in text
    assert "requeued 2x" in text
    lines = [line for line in text.splitlines() if line.strip().startswith("2 ")]
    assert lines and lines[0].rstrip().endswith("5"), text
