"""The lab panel shows a multi-node job as one row with its members (issue #16), in
Debian's chromium against a live JupyterLab + River host + two process runners.

The lab fixture's runners have no overlay, so the job runs with `network: host` (each
member in its node's own stack, a port from c.RiverHost.job_port_range); that mode is for
operators and above, and the fixture's browser user and API token are the admin's.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.test_labextension import expect, kill_quietly, open_panel, shot
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lab(shared_lab: Cluster) -> Cluster:
    """The two-runner lab these modules share (tests/browser/conftest.py): this one adds no
    runner and ends its tasks."""
    return shared_lab


def test_job_is_one_row_with_its_members_and_kill_ends_the_job(page: Any, lab: Cluster) -> None:
    panel = open_panel(page)
    answer = lab.request(
        "POST",
        "/river/api/tasks",
        json={
            "command": ["sleep", "600"],
            "nodes": 2,
            "cores": 1,
            "network": "host",
            "name": "browser-job",
        },
    )
    assert answer.status_code == 201, answer.text
    members = answer.json()["members"]
    ids = [m["id"] for m in members]
    job_id = members[0]["job"]["id"]
    try:
        tasks = panel.locator('[data-section="tasks"]')
        row = tasks.locator(f'[data-job-id="{job_id}"]')
        expect(row).to_have_attribute("data-state", "running", timeout=30_000)
        expect(tasks.locator("[data-job-id]")).to_have_count(1)
        expect(row.locator(".jp-River-name")).to_have_text(f"job {job_id} (2 of 2)")
        # The members are inside the job's row, not rows of their own.
        expect(tasks.locator(".jp-River-task[data-task-id]")).to_have_count(0)
        expect(row.locator(".jp-River-member")).to_have_count(0)

        row.locator('[data-action="toggle-members"]').click()
        member_rows = row.locator(".jp-River-member")
        expect(member_rows).to_have_count(2)
        nodes = {lab.task(i)["node"] for i in ids}
        assert nodes == {"alpha", "beta"}
        for rank, task_id in enumerate(ids):
            member = row.locator(f'.jp-River-member[data-task-id="{task_id}"]')
            expect(member).to_have_attribute("data-rank", str(rank))
            expect(member).to_have_attribute("data-state", "running")
            expect(member).to_contain_text(f"rank {rank}")
            expect(member).to_contain_text(lab.task(task_id)["node"])
        shot(page, "job-row-with-members")

        row.locator('[data-action="kill"]').click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Kill job?")
        expect(dialog).to_contain_text(f"job {job_id}")
        dialog.locator("button.jp-mod-accept").click()
        expect(row).to_have_attribute("data-state", "killed", timeout=30_000)
        for task_id in ids:
            expect(row.locator(f'.jp-River-member[data-task-id="{task_id}"]')).to_have_attribute(
                "data-state", "killed", timeout=30_000
            )
            assert lab.wait_task(task_id, {"killed"}, timeout=30)["state"] == "killed"
        expect(row.locator('[data-action="kill"]')).to_have_count(0)
        shot(page, "job-killed")
    finally:
        kill_quietly(lab, ids)
