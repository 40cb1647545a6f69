"""Time limits in the JupyterLab panel (issue #20): a running task with a limit shows what
it has left, and one that reached it ends as `timeout`, a terminal state with its own badge
(no Kill button), without reloading the page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from river_magics import Client
from tests.browser.test_labextension import expect, open_panel, shot
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lab(shared_lab: Cluster) -> Cluster:
    """The two-runner lab these modules share (tests/browser/conftest.py): this one adds no
    runner and ends its tasks."""
    return shared_lab


def test_panel_shows_time_left_then_the_timeout_state(page: Any, lab: Cluster) -> None:
    panel = open_panel(page)
    page.evaluate("window.__riverNoReload = 'same page'")
    with Client(lab.url, lab.token) as client:
        handle = client.submit(command=["sleep", "60"], name="limited", time_limit="8s")
    row = panel.locator(f'[data-section="tasks"] [data-task-id="{handle.id}"]')
    expect(row).to_have_attribute("data-state", "running", timeout=30_000)
    expect(row).to_contain_text(re.compile(r"\d+s left"))
    shot(page, "task-with-time-left")

    expect(row).to_have_attribute("data-state", "timeout", timeout=30_000)
    badge = row.locator(".jp-River-badge")
    expect(badge).to_have_text("timeout")
    expect(badge).to_have_class(re.compile(r"jp-River-state-timeout"))
    expect(row).not_to_contain_text("left")
    expect(row.locator('[data-action="kill"]')).to_have_count(0)
    assert "time limit of 8s reached" in (row.get_attribute("title") or "")
    assert page.evaluate("window.__riverNoReload") == "same page", "the page was reloaded"
    shot(page, "task-timeout")
