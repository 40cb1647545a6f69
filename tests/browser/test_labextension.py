"""The River JupyterLab extension in a real browser (Debian's chromium via Playwright),
against a live cluster: JupyterLab + River host + two runners on loopback.

Every wait is bounded (Playwright `expect` timeouts); each test leaves a screenshot in
test-artifacts/browser/. The page is never reloaded while a task changes state: the panel
must follow the host's event stream.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from river_magics import Client
from tests.cluster import REPO, Cluster, wait_for

# Its docker-runner tests add a node to the shared lab: the modules that count nodes go first.
pytestmark = [pytest.mark.timeout(300), pytest.mark.uses_up("shared_lab")]


@pytest.fixture(scope="module")
def lab(shared_lab: Cluster) -> Cluster:
    """The two-runner lab shared with test_lab_jobs.py, test_lab_time_limits.py and
    test_security_identity.py (tests/browser/conftest.py); this module runs last of them."""
    return shared_lab


ARTIFACTS = REPO / "test-artifacts" / "browser"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def open_panel(page: Any) -> Any:
    """Show the River side panel by clicking its tab in the left sidebar."""
    panel = page.locator("#river-panel")
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="river-panel"]')
    expect(tab).to_be_visible(timeout=30_000)
    if not panel.is_visible():
        tab.click()
    expect(panel).to_be_visible()
    expect(panel.locator("[data-connection]")).to_have_attribute(
        "data-connection", "live", timeout=30_000
    )
    return panel


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def remove_containers(runner_name: str) -> None:
    """Containers a docker runner of a test left (see tests/docker/conftest.py)."""
    import docker

    from tests.docker.conftest import remove_containers as remove

    client = docker.from_env(version="auto")
    try:
        remove(client, runner_name)
    finally:
        client.close()


def kill_quietly(cluster: Cluster, task_ids: list[str]) -> None:
    for task_id in task_ids:
        with contextlib.suppress(Exception):
            cluster.request("POST", f"/river/api/tasks/{task_id}/kill")
    for task_id in task_ids:
        with contextlib.suppress(Exception):
            cluster.wait_task(task_id, {"killed", "completed", "failed", "lost"}, timeout=20)


def test_panel_lists_both_runners(page: Any, lab: Cluster) -> None:
    panel = open_panel(page)
    cluster = panel.locator('[data-section="cluster"]')
    for name in ("alpha", "beta"):
        card = cluster.locator(f'[data-node="{name}"]')
        expect(card).to_have_attribute("data-state", "online")
        for bar in ("CPU", "Mem", "Cores"):
            expect(card.locator(f'[data-bar="{bar}"]')).to_be_visible()
    expect(cluster.locator("[data-node]")).to_have_count(2)
    expect(page.locator(".jp-River-status")).to_contain_text("River: 0 running · 0 queued")
    shot(page, "panel-two-runners")


def test_task_appears_runs_streams_logs_and_completes_live(
    page: Any, lab: Cluster, tmp_path: Path
) -> None:
    panel = open_panel(page)
    go = tmp_path / "go"
    script = (
        "import os, time\n"
        "print('hello from river', flush=True)\n"
        "deadline = time.time() + 120\n"
        f"while not os.path.exists({str(go)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('finished after the go signal', flush=True)\n"
    )
    page.evaluate("window.__riverNoReload = 'same page'")
    client = Client(lab.url, lab.token)
    handle = client.submit(script=script, name="browser-live")

    row = panel.locator(f'[data-section="tasks"] [data-task-id="{handle.id}"]')
    expect(row).to_have_attribute("data-state", "running", timeout=30_000)
    expect(row).to_contain_text("browser-live")
    status = page.locator(".jp-River-status")
    expect(status).to_have_attribute("data-running", "1")
    expect(status).to_contain_text("1 running")

    # Logs open in a main-area tab and stream while the task runs.
    row.locator('[data-action="logs"]').click()
    logs = page.locator(f"#river-logs-{handle.id}")
    expect(logs.locator(".jp-River-logText")).to_contain_text("hello from river")
    shot(page, "task-running-with-logs")

    go.touch()
    expect(row).to_have_attribute("data-state", "completed", timeout=30_000)
    expect(logs.locator(".jp-River-logText")).to_contain_text("finished after the go signal")
    expect(logs.locator(".jp-River-logStatus")).to_have_attribute("data-state", "completed")
    expect(status).to_have_attribute("data-running", "0")
    expect(row.locator('[data-action="kill"]')).to_have_count(0)
    assert page.evaluate("window.__riverNoReload") == "same page", "the page was reloaded"
    assert lab.task(handle.id)["state"] == "completed"
    shot(page, "task-completed")


def test_queue_shows_waiting_task_and_kill_from_panel_frees_its_place(
    page: Any, lab: Cluster, bob_token: str
) -> None:
    panel = open_panel(page)
    admin = Client(lab.url, lab.token)
    bob = Client(lab.url, bob_token)
    blockers = [admin.submit("sleep 300", name=f"blocker-{i}", cores=1) for i in range(2)]
    waiting = None
    try:
        for blocker in blockers:
            lab.wait_task(blocker.id, "running")
        waiting = bob.submit("echo bob was here", name="bob-waits", cores=1)
        queued = panel.locator(f'[data-section="queue"] [data-task-id="{waiting.id}"]')
        expect(queued).to_have_attribute("data-state", "queued")
        expect(queued).to_contain_text("bob")
        # Someone else's task: in the queue, not in my tasks, and without actions for me.
        expect(
            panel.locator(f'[data-section="tasks"] [data-task-id="{waiting.id}"]')
        ).to_have_count(0)
        expect(queued.locator("[data-action]")).to_have_count(0)
        expect(page.locator(".jp-River-status")).to_contain_text("2 running")
        for node in ("alpha", "beta"):  # held cores follow placements without a reload
            cores = panel.locator(f'[data-node="{node}"] [data-bar="Cores"]')
            expect(cores).to_contain_text("1/1 held", timeout=10_000)
        shot(page, "queue-with-bob")

        victim = panel.locator(f'[data-section="tasks"] [data-task-id="{blockers[0].id}"]')
        victim.locator('[data-action="kill"]').click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Kill task?")
        dialog.locator("button.jp-mod-accept").click()
        expect(victim).to_have_attribute("data-state", "killed", timeout=30_000)
        assert lab.task(blockers[0].id)["state"] == "killed"
        # Its core went to bob's task, which leaves the queue without a reload.
        expect(queued).to_have_count(0, timeout=30_000)
        lab.wait_task(waiting.id, {"running", "completed"})
        expect(page.locator(".jp-River-status")).to_contain_text("1 running")
        shot(page, "after-kill")
    finally:
        kill_quietly(lab, [b.id for b in blockers] + ([waiting.id] if waiting else []))


def test_dashboard_widget_renders_in_the_same_browser(page: Any, lab: Cluster) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext river_magics\n%river connect"),
        nbformat.v4.new_code_cell("%river dashboard"),
    ]
    response = lab.request(
        "PUT",
        "/api/contents/dashboard.ipynb",
        json={"type": "notebook", "format": "json", "content": notebook},
    )
    assert response.status_code in (200, 201), response.text

    # The River panel stays open beside the notebook: both views of one cluster.
    panel = open_panel(page)
    page.evaluate(
        "window.jupyterapp.commands.execute('docmanager:open', {path: 'dashboard.ipynb'})"
    )
    notebook_panel = page.locator(".jp-NotebookPanel")
    expect(notebook_panel).to_be_visible(timeout=60_000)
    expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=90_000
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    widgets = notebook_panel.locator(".jp-OutputArea-output .jupyter-widgets")
    expect(widgets.first).to_be_visible(timeout=90_000)
    output = notebook_panel.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
    for text in ("Nodes", "alpha", "beta"):
        expect(output).to_contain_text(text, timeout=60_000)
    expect(
        output.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
    ).to_have_count(0)
    expect(panel.locator('[data-node="alpha"]')).to_be_visible()
    shot(page, "dashboard-widget")
    with contextlib.suppress(Exception):
        for session in lab.get("/api/sessions"):
            lab.request("DELETE", f"/api/sessions/{session['id']}")


TERMINAL_TEXT_JS = """() => {
  const widget = window.jupyterapp.shell.currentWidget;
  const term = widget && widget.content && widget.content._term;
  if (!term) { return ''; }
  const buffer = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buffer.length; i++) {
    const line = buffer.getLine(i);
    if (line) { lines.push(line.translateToString(true)); }
  }
  return lines.join('\\n');
}"""


TERMINAL_SEND_JS = """(text) => {
  const widget = window.jupyterapp.shell.currentWidget;
  widget.content.session.send({ type: 'stdin', content: [text] });
}"""


def wait_terminal_text(page: Any, text: str, timeout: float = 30.0) -> str:
    """The current terminal tab's text once it holds `text` (AssertionError after timeout)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = page.evaluate(TERMINAL_TEXT_JS)
        if text in seen:
            return seen
        page.wait_for_timeout(200)
    raise AssertionError(f"no {text!r} in the terminal after {timeout}s: {seen!r}")


@contextlib.contextmanager
def docker_vps(lab: Cluster, runner_name: str, vps_name: str, image: str) -> Iterator[dict]:
    """A VPS on a docker runner of the test's own (the panel tests count alpha and beta);
    both are gone afterwards. Skips where no daemon or image is."""
    from tests.docker.conftest import DAEMON_PROBLEM

    if DAEMON_PROBLEM:
        pytest.skip(f"VPSes run on the docker backend: {DAEMON_PROBLEM}")
    try:
        import docker

        docker.from_env(version="auto").images.get(image)
    except Exception:
        pytest.skip(f"test image {image!r} is missing; run .ci/build-images.sh")
    runner = lab.start_runner(runner_name, "--backend", "docker", "--cpus", "0")
    created = lab.request(
        "POST", "/river/api/vps", json={"name": vps_name, "cores": 0, "image": image}
    )
    assert created.status_code == 201, created.text
    vps = created.json()["vps"]
    try:
        yield vps
    finally:
        with contextlib.suppress(Exception):
            lab.request("DELETE", f"/river/api/vps/{vps['id']}")
        runner.kill(signal.SIGTERM)
        remove_containers(runner_name)


def run_in_terminal(page: Any, command: str, answer: str) -> None:
    """Type `command` into the terminal tab once its shell prompts; wait for `answer`."""
    # xterm draws on a canvas: read its buffer through the app (expose_app_in_browser).
    wait_terminal_text(page, "# ")  # the shell's prompt
    # What a keystroke sends: stdin on the tab's own terminal session. Sent through the
    # session, not a click on the canvas, so that a transient JupyterLab dialog (e.g. its
    # "Server Connection Error" on one failed poll) cannot swallow the keys.
    page.evaluate(TERMINAL_SEND_JS, f"{command}\r")
    wait_terminal_text(page, f"\n{answer}")


def test_vps_terminal_opens_a_terminal_tab_into_the_container(page: Any, lab: Cluster) -> None:
    from tests.docker.conftest import BUSYBOX_IMAGE

    with docker_vps(lab, "vpsdock", "browser-vps", BUSYBOX_IMAGE) as vps:
        panel = open_panel(page)
        card = panel.locator(f'[data-section="vps"] [data-vps-id="{vps["id"]}"]')
        expect(card).to_have_attribute("data-state", "running", timeout=120_000)
        hostname = lab.get(f"/river/api/vps/{vps['id']}")["vps"].get("hostname")
        assert hostname == f"vps-{vps['id']}"
        card.locator('[data-action="terminal"]').click()
        expect(page.locator(".jp-Terminal")).to_be_visible(timeout=30_000)
        run_in_terminal(page, "hostname", hostname)
        shot(page, "vps-terminal")


def test_terminal_link_opens_jupyterlab_with_a_terminal_into_the_vps(
    page: Any, lab: Cluster
) -> None:
    """The link `%river vps terminal` and the dashboard's VPS card show,
    `/lab?river-terminal=ID`, opens JupyterLab with a terminal tab into that VPS."""
    from tests.docker.conftest import BUSYBOX_IMAGE

    with docker_vps(lab, "linkdock", "link-vps", BUSYBOX_IMAGE) as vps:
        wait_for(
            lambda: lab.get(f"/river/api/vps/{vps['id']}")["vps"]["state"] == "running",
            120,
            what="the VPS to run",
        )
        before = {t["name"] for t in lab.get("/api/terminals")}
        page.goto(f"{lab.url}/lab?river-terminal={vps['id']}", wait_until="domcontentloaded")
        expect(page.locator(".jp-Terminal")).to_be_visible(timeout=60_000)
        assert len({t["name"] for t in lab.get("/api/terminals")} - before) == 1
        run_in_terminal(page, "hostname", f"vps-{vps['id']}")
        shot(page, "vps-terminal-link")


def test_jupyter_button_starts_jupyter_in_a_vps_and_the_launcher_opens_it(
    page: Any, lab: Cluster
) -> None:
    """The VPS card's "Jupyter" button starts Jupyter in the VPS (POST .../apps) and opens
    it, through the proxy, with the browser's own login; then the launcher has "Jupyter on
    <vps>", which opens the same page."""
    with docker_vps(lab, "appdock", "jvps", "river-test-vps") as vps:
        panel = open_panel(page)
        card = panel.locator(f'[data-section="vps"] [data-vps-id="{vps["id"]}"]')
        expect(card).to_have_attribute("data-state", "running", timeout=120_000)
        with page.context.expect_page(timeout=30_000) as opened:
            card.locator('[data-action="start-jupyter"]').click()
        popup = opened.value
        prefix = f"{lab.url}/river/proxy/absolute/{vps['id']}/8888/"
        popup.wait_for_url(f"{prefix}**", timeout=90_000)
        entry = lab.get(f"/river/api/vps/{vps['id']}")["vps"]["ports"][0]
        assert popup.url.startswith(f"{lab.url}/{entry['path']}".split("?")[0])
        # The popup's cookies are the River login's: the proxy lets it through to the app.
        status = popup.request.get(f"{lab.url}/{entry['ready_path']}")
        assert status.status == 200 and "kernels" in status.json()
        popup.close()
        # Started, it is a port of the VPS: a button on the card and a launcher entry.
        expect(card.locator('[data-action="open-port"]', has_text="jupyter")).to_be_visible()
        expect(card.locator('[data-action="start-jupyter"]')).to_have_count(0)
        page.evaluate("() => void window.jupyterapp.commands.execute('launcher:create')")
        in_launcher = page.locator(".jp-LauncherCard:visible", has_text="Jupyter on jvps").first
        expect(in_launcher).to_be_visible(timeout=30_000)
        with page.context.expect_page(timeout=30_000) as again:
            in_launcher.click()
        again.value.wait_for_url(f"{prefix}**", timeout=30_000)
        shot(page, "vps-jupyter-launcher")
        again.value.close()


def test_runner_going_offline_and_back_shows_without_reload(page: Any, lab: Cluster) -> None:
    panel = open_panel(page)
    card = panel.locator('[data-section="cluster"] [data-node="beta"]')
    expect(card).to_have_attribute("data-state", "online")
    lab.runners["beta"].kill(signal.SIGKILL)
    try:
        # Offline after heartbeat_misses x heartbeat_interval (3 s here), pushed as an event.
        expect(card).to_have_attribute("data-state", "offline", timeout=30_000)
        shot(page, "runner-offline")
    finally:
        lab.start_runner("beta")
    expect(card).to_have_attribute("data-state", "online", timeout=30_000)
