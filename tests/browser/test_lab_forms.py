"""The River forms in JupyterLab (issue #21), driven in Chromium as a user would: open a form
from the command palette, fill it with the keyboard, submit with Enter, and follow the result
(a task's logs, a VPS's terminal). A bad value shows the host's own 400 message next to the
field it names, and the form keeps everything typed."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import pytest

from tests.browser.test_labextension import (
    expect,
    kill_quietly,
    open_panel,
    remove_containers,
    run_in_terminal,
    shot,
)
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


def run_command(page: Any, label: str) -> None:
    """Open the command palette (what Ctrl+Shift+C and View > Activate Command Palette run;
    the command, not the keystroke, which the lab can drop while it moves focus at start-up),
    type `label` into it and press Enter."""
    page.evaluate("() => window.jupyterapp.restored")
    search = page.locator(".lm-CommandPalette-input")
    for _ in range(3):  # a palette opened while the lab still settles can close again
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:activate-command-palette')"
        )
        with contextlib.suppress(AssertionError):
            expect(search).to_be_visible(timeout=5_000)
            break
    expect(search).to_be_visible()
    search.fill(label)
    item = page.locator(".lm-CommandPalette-item", has_text=label).first
    expect(item).to_be_visible()
    page.keyboard.press("Enter")


def open_form(page: Any, label: str, form_id: str) -> Any:
    run_command(page, label)
    form = page.locator(f'[data-river-form="{form_id}"]')
    expect(form).to_be_visible()
    return form


def field(form: Any, name: str) -> Any:
    return form.locator(f'[data-field="{name}"]')


def task_ids(lab: Cluster, name: str) -> list[str]:
    return [t["id"] for t in lab.get("/river/api/tasks")["tasks"] if t.get("name") == name]


def test_submit_form_runs_a_command_and_its_logs_show_the_output(page: Any, lab: Cluster) -> None:
    open_panel(page)
    form = open_form(page, "Submit a River task", "river-submit-form")
    # Labels name every control (what a screen reader reads, and how the test finds them).
    expect(form.get_by_label("Command")).to_be_visible()
    field(form, "mode").select_option("command")
    field(form, "command").fill("echo hello-from-the-form; echo second line")
    field(form, "name").fill("form-task")
    field(form, "memory").fill("64M")
    field(form, "time_limit").fill("5m")
    shot(page, "form-submit-filled")
    field(form, "command").press("Enter")  # Enter submits

    result = form.locator('[data-result="ok"]')
    expect(result).to_contain_text("Submitted task")
    ids = task_ids(lab, "form-task")
    assert len(ids) == 1, ids
    task = lab.wait_task(ids[0], "completed", timeout=60)
    assert task["time_limit"] == 300
    assert task["memory"] == 64 * 1024 * 1024
    form.locator('[data-action="logs"]').click()
    logs = page.locator(f"#river-logs-{ids[0]}")
    expect(logs).to_be_visible()
    expect(logs).to_contain_text("hello-from-the-form")
    expect(logs).to_contain_text("second line")
    shot(page, "form-submit-logs")


def test_bad_memory_shows_the_hosts_message_by_the_field_and_keeps_the_values(
    page: Any, lab: Cluster
) -> None:
    form = open_form(page, "Submit a River task", "river-submit-form")
    field(form, "mode").select_option("command")
    field(form, "command").fill("echo never-runs")
    field(form, "name").fill("bad-memory")
    field(form, "cores").fill("1")
    field(form, "memory").fill("lots")
    field(form, "time_limit").fill("90m")
    field(form, "memory").press("Enter")

    error = form.locator('[data-error="memory"]')
    expect(error).to_contain_text("memory must be a size like 512M or 8G")
    expect(field(form, "memory")).to_have_attribute("aria-invalid", "true")
    expect(field(form, "memory")).to_be_focused()
    for name, value in (
        ("command", "echo never-runs"),
        ("name", "bad-memory"),
        ("memory", "lots"),
        ("time_limit", "90m"),
    ):
        expect(field(form, name)).to_have_value(value)
    assert task_ids(lab, "bad-memory") == [], "a refused request stored a task"
    shot(page, "form-submit-error")

    # A bad time limit: the host's message lands by that field; the memory one is cleared.
    field(form, "memory").fill("64M")
    field(form, "time_limit").fill("soon")
    field(form, "time_limit").press("Enter")
    expect(form.locator('[data-error="time_limit"]')).to_contain_text("soon")
    expect(error).to_have_text("")

    # Escape closes the form.
    field(form, "name").press("Escape")
    expect(form).to_have_count(0)


def test_submit_form_runs_the_current_notebook_cell(page: Any, lab: Cluster) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell("print('cell says', 6 * 7)"))
    created = lab.request(
        "PUT",
        "/api/contents/form-cell.ipynb",
        json={"type": "notebook", "format": "json", "content": notebook},
    )
    assert created.status_code in (200, 201), created.text
    try:
        page.evaluate(
            "() => window.jupyterapp.commands.execute('docmanager:open', "
            "{path: 'form-cell.ipynb', factory: 'Notebook', kernel: {name: 'python3'}})"
        )
        expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible()
        page.locator(".jp-Notebook .jp-Cell").first.click()
        form = open_form(page, "Submit a River task", "river-submit-form")
        expect(field(form, "mode")).to_have_value("cell")
        expect(field(form, "script")).to_have_value("print('cell says', 6 * 7)")
        field(form, "name").fill("form-cell")
        field(form, "name").press("Enter")
        expect(form.locator('[data-result="ok"]')).to_contain_text("Submitted task")
        ids = task_ids(lab, "form-cell")
        assert len(ids) == 1, ids
        lab.wait_task(ids[0], "completed", timeout=60)
        form.locator('[data-action="logs"]').click()
        expect(page.locator(f"#river-logs-{ids[0]}")).to_contain_text("cell says 42")
        shot(page, "form-submit-cell")
    finally:
        with contextlib.suppress(Exception):
            page.evaluate("() => window.jupyterapp.commands.execute('running:close-all')")
        for session in lab.get("/api/sessions"):
            lab.request("DELETE", f"/api/sessions/{session['id']}")
        lab.request("DELETE", "/api/contents/form-cell.ipynb")


def test_array_count_submits_that_many_members(page: Any, lab: Cluster) -> None:
    form = open_form(page, "Submit a River task", "river-submit-form")
    field(form, "mode").select_option("command")
    field(form, "command").fill("echo member $RIVER_ARRAY_INDEX")
    field(form, "name").fill("form-array")
    field(form, "array").fill("3")
    field(form, "array_limit").fill("1")
    field(form, "array").press("Enter")
    expect(form.locator('[data-result="ok"]')).to_contain_text("Submitted 3 tasks")
    ids = task_ids(lab, "form-array")
    try:
        assert len(ids) == 3, ids
        members = [lab.wait_task(i, "completed", timeout=60) for i in ids]
        assert sorted(m["array"]["index"] for m in members) == [0, 1, 2]
        assert {m["array"]["limit"] for m in members} == {1}
    finally:
        kill_quietly(lab, ids)


def test_vps_form_creates_a_container_and_opens_its_terminal(page: Any, lab: Cluster) -> None:
    from tests.docker.conftest import BUSYBOX_IMAGE, DAEMON_PROBLEM

    if DAEMON_PROBLEM:
        pytest.skip(f"VPSes run on the docker backend: {DAEMON_PROBLEM}")
    runner = lab.start_runner("formdock", "--backend", "docker", "--cpus", "0")
    created: list[str] = []
    try:
        panel = open_panel(page)
        form = open_form(page, "Create a River VPS", "river-vps-form")
        # No node reports vm.ok here: only a container is offered.
        expect(field(form, "kind").locator("option")).to_have_count(1)
        field(form, "name").fill("form-vps")
        field(form, "image").fill(BUSYBOX_IMAGE)
        field(form, "cores").fill("0")
        field(form, "target").fill("formdock")
        field(form, "memory").fill("lots")
        field(form, "memory").press("Enter")
        expect(form.locator('[data-error="memory"]')).to_contain_text("memory must be a size")
        expect(field(form, "image")).to_have_value(BUSYBOX_IMAGE)
        field(form, "memory").fill("256M")
        field(form, "memory").press("Enter")
        expect(form.locator('[data-result="ok"]')).to_contain_text("Created VPS form-vps")
        vps = next(v for v in lab.get("/river/api/vps")["vps"] if v["name"] == "form-vps")
        created.append(vps["id"])
        assert vps["node"] in (None, "formdock")
        card = panel.locator(f'[data-section="vps"] [data-vps-id="{vps["id"]}"]')
        expect(card).to_have_attribute("data-state", "running", timeout=120_000)
        shot(page, "form-vps-created")
        form.locator('[data-action="terminal"]').click()
        expect(page.locator(".jp-Terminal")).to_be_visible(timeout=30_000)
        run_in_terminal(page, "hostname", f"vps-{vps['id']}")
        shot(page, "form-vps-terminal")
    finally:
        for vps_id in created:
            with contextlib.suppress(Exception):
                lab.request("DELETE", f"/river/api/vps/{vps_id}")
        with contextlib.suppress(Exception):
            for terminal in lab.get("/api/terminals"):
                lab.request("DELETE", f"/api/terminals/{terminal['name']}")
        runner.kill(signal.SIGTERM)
        remove_containers("formdock")


def test_environment_form_shows_the_hosts_refusal_by_the_name(page: Any, lab: Cluster) -> None:
    form = open_form(page, "Create or export a River environment", "river-environment-form")
    field(form, "name").fill("Not A Name!")
    field(form, "image").fill("python:3.12-slim")
    field(form, "image").press("Enter")
    # Refused before any docker work: the name's rule, by the name field.
    expect(form.locator('[data-error="name"]')).not_to_have_text("")
    expect(field(form, "name")).to_have_value("Not A Name!")
    expect(field(form, "image")).to_have_value("python:3.12-slim")
    shot(page, "form-environment-error")
