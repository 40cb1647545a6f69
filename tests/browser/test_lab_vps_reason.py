"""The lab panel tells a VPS's owner why it stopped when they did not stop it (issue #20):
idle culling and time limits both stop through the normal stop path, and the stopped
VPS's row shows the reason (here a 3 s time limit: the same row code, no culling window
to configure on the shared lab host)."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import pytest

from tests.browser.test_labextension import expect, open_panel, remove_containers, shot
from tests.cluster import Cluster, wait_for


def test_a_stopped_vps_row_shows_why_it_stopped(page: Any, lab: Cluster) -> None:
    from tests.docker.conftest import BUSYBOX_IMAGE, DAEMON_PROBLEM

    if DAEMON_PROBLEM:
        pytest.skip(f"VPSes run on the docker backend: {DAEMON_PROBLEM}")
    runner = lab.start_runner("reasondock", "--backend", "docker", "--cpus", "0")
    created = lab.request(
        "POST",
        "/river/api/vps",
        json={"name": "reason-vps", "cores": 0, "image": BUSYBOX_IMAGE, "time_limit": "3s"},
    )
    assert created.status_code == 201, created.text
    vps = created.json()["vps"]
    try:
        wait_for(
            lambda: lab.get(f"/river/api/vps/{vps['id']}")["vps"]["state"] == "stopped",
            90,
            what="the VPS to stop at its limit",
        )
        panel = open_panel(page)
        card = panel.locator(f'[data-section="vps"] [data-vps-id="{vps["id"]}"]')
        expect(card).to_have_attribute("data-state", "stopped", timeout=30_000)
        expect(card.locator(".jp-River-vps-reason")).to_contain_text(
            "time limit of 3s reached", timeout=30_000
        )
        shot(page, "vps-stopped-reason")
    finally:
        with contextlib.suppress(Exception):
            lab.request("DELETE", f"/river/api/vps/{vps['id']}")
        runner.kill(signal.SIGTERM)
        remove_containers("reasondock")
