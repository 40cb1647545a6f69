"""The task view (issue #21): clicking a task in the panel opens its tab with the state
timeline, facts, live output, blobs and Kill/Requeue; a job's view lists its members; a
plain user's usage chart names only them.

The lab loads this checkout's built extension (labextension/prebuilt, `jlpm build`) through
JUPYTER_PATH (tests/browser/conftest.py's checkout_extension)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, BOB_PASSWORD, checkout_extension, start_lab
from tests.browser.test_labextension import expect, kill_quietly, open_panel, shot
from tests.cluster import Cluster

TICKER = "echo started; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """This module's own lab (it creates bob, whom test_labextension.py's bob_token creates
    too), with this checkout's extension."""
    root = tmp_path_factory.mktemp("taskview")
    with contextlib.ExitStack() as stack:
        with checkout_extension(root):
            cluster = start_lab(stack, root, ("alpha", "beta"))
        yield cluster


def _view(page: Any, task_id: str) -> Any:
    view = page.locator(f'.jp-River-taskView[data-task-id="{task_id}"]')
    expect(view).to_be_visible(timeout=30_000)
    return view


def test_a_running_task_streams_and_kill_ends_it_on_the_timeline(page: Any, lab: Cluster) -> None:
    panel = open_panel(page)
    task = lab.submit(command=["sh", "-c", TICKER], name="ticker")
    try:
        row = panel.locator('[data-section="tasks"]').locator(
            f'.jp-River-task[data-task-id="{task["id"]}"]'
        )
        expect(row).to_have_attribute("data-state", "running", timeout=30_000)
        row.locator(".jp-River-name").click()
        view = _view(page, task["id"])
        timeline = view.locator(".jp-River-timeline")
        expect(timeline.locator('[data-state="queued"]')).to_have_count(1)
        expect(timeline.locator('[data-state="running"]')).to_have_count(1)
        expect(view.locator('[data-fact="node"]')).to_contain_text(lab.task(task["id"])["node"])
        log = view.locator(".jp-River-logText")
        expect(log).to_contain_text("started")
        expect(log).to_contain_text("tick 5", timeout=30_000)  # streams in, live
        shot(page, "task-view-running")
        # Clicking the row again reuses the tab.
        row.locator(".jp-River-name").click()
        expect(page.locator(f'.jp-River-taskView[data-task-id="{task["id"]}"]')).to_have_count(1)

        view.locator('[data-action="kill"]').click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Kill task?")
        dialog.locator("button.jp-mod-accept").click()
        expect(timeline.locator('[data-state="killed"]')).to_have_count(1, timeout=30_000)
        expect(view.locator('[data-action="kill"]')).to_have_count(0)
        assert lab.task(task["id"])["state"] == "killed"
        shot(page, "task-view-killed")
    finally:
        kill_quietly(lab, [task["id"]])


def test_a_completed_task_opens_by_keyboard_and_requeue_runs_it_again(
    page: Any, lab: Cluster
) -> None:
    panel = open_panel(page)
    task = lab.submit(command=["sh", "-c", "echo finished-output"], name="once")
    lab.wait_task(task["id"], "completed")
    lab.ok("PUT", f"/river/api/tasks/{task['id']}/blobs/notes.txt", content=b"12345")
    row = panel.locator('[data-section="tasks"]').locator(
        f'.jp-River-task[data-task-id="{task["id"]}"]'
    )
    expect(row).to_have_attribute("data-state", "completed", timeout=30_000)
    row.focus()
    page.keyboard.press("Enter")
    view = _view(page, task["id"])
    expect(view.locator('[data-fact="exit"]')).to_have_text("0")
    expect(view.locator(".jp-River-timeline [data-state='completed']")).to_have_count(1)
    expect(view.locator(".jp-River-logText")).to_contain_text("finished-output")
    expect(view.locator('[data-blob="notes.txt"]')).to_contain_text("5B")
    shot(page, "task-view-completed")

    # Dark theme: the view takes its colours from JupyterLab's variables.
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
    colours = view.evaluate(
        "el => [getComputedStyle(el).backgroundColor, getComputedStyle(document.body)"
        ".getPropertyValue('--jp-layout-color1').trim()]"
    )
    shot(page, "task-view-dark")
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Light'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=60_000)
    assert colours[1] and colours[0] != "rgb(255, 255, 255)", colours

    before = {t["id"] for t in lab.get("/river/api/tasks")["tasks"]}
    view.locator('[data-action="requeue"]').click()
    fresh = page.locator(".jp-River-taskView:visible")
    expect(fresh).not_to_have_attribute("data-task-id", task["id"], timeout=30_000)
    new_id = fresh.get_attribute("data-task-id")
    assert new_id and new_id not in before, new_id
    lab.wait_task(new_id, "completed")
    again = lab.task(new_id)
    assert again["name"] == "once" and again["owner"] == "admin"
    expect(fresh.locator(".jp-River-logText")).to_contain_text("finished-output", timeout=30_000)
    expect(fresh.locator('[data-fact="exit"]')).to_have_text("0", timeout=30_000)


def test_a_jobs_view_shows_its_members_each_opening_its_own(page: Any, lab: Cluster) -> None:
    panel = open_panel(page)
    answer = lab.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["sleep", "600"], "nodes": 2, "network": "host", "name": "pair"},
    )
    assert answer.status_code == 201, answer.text
    ids = [m["id"] for m in answer.json()["members"]]
    job_id = answer.json()["members"][0]["job"]["id"]
    try:
        row = panel.locator('[data-section="tasks"]').locator(f'[data-job-id="{job_id}"]')
        expect(row).to_have_attribute("data-state", "running", timeout=30_000)
        row.locator(".jp-River-name").click()
        view = _view(page, ids[0])
        members = view.locator("button.jp-River-member")
        expect(members).to_have_count(2)
        for rank, task_id in enumerate(ids):
            member = members.nth(rank)
            expect(member).to_have_attribute("data-task-id", task_id)
            expect(member).to_contain_text(f"rank {rank}")
            expect(member).to_contain_text(lab.task(task_id)["node"])
        shot(page, "task-view-job")
        members.nth(1).click()
        second = _view(page, ids[1])
        expect(second.locator("button.jp-River-member")).to_have_count(2)
        expect(second.locator('button.jp-River-member[aria-current="true"]')).to_have_attribute(
            "data-task-id", ids[1]
        )
    finally:
        kill_quietly(lab, ids)


def test_a_plain_users_usage_chart_names_only_them(browser: Any, lab: Cluster) -> None:
    done = lab.submit(command=["sleep", "1"])  # the admin's usage, which bob must not see
    response = lab.request(
        "POST", "/river/api/users", json={"name": "bob", "role": "user", "password": BOB_PASSWORD}
    )
    assert response.status_code == 201, response.text
    token = lab.ok("POST", "/river/api/tokens", json={"user": "bob", "label": "view"})["token"]
    mine = lab.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["sleep", "1"]},
        headers={"Authorization": f"token {token}"},
    )
    assert mine.status_code == 201, mine.text
    lab.wait_task(done["id"], "completed")
    lab.wait_task(mine.json()["task"]["id"], "completed")
    everyone = lab.get("/river/api/usage/history")["usage"]["users"]
    assert {"admin", "bob"} <= {u["user"] for u in everyone}

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{lab.url}/login?next=%2Flab%3Freset", wait_until="domcontentloaded")
        page.fill("#username_input", "bob")
        page.fill("#password_input", BOB_PASSWORD)
        page.click("#login_submit")
        expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
        open_panel(page)
        chart = page.locator('.jp-River-chart[data-chart="usage"]')
        expect(chart).to_have_attribute("data-users", "bob", timeout=60_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "usage-chart-plain-user.png"))
    finally:
        context.close()
