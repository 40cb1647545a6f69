"""Each browser acts as its own user only (issue #13): a viewer and a plain user log in to
JupyterLab in Chromium with their passwords; the page carries no token (the admin's server
token used to be in its page config), every request the page makes goes without it, and
River's panel shows their own identity and their own tasks, never the admin's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from river_magics import Client
from tests.browser.conftest import ARTIFACTS
from tests.browser.test_labextension import expect, open_panel
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lab(shared_lab: Cluster) -> Cluster:
    """The two-runner lab these modules share (tests/browser/conftest.py): its users are
    its own (eve-viewer, uma-user), and no check here counts nodes or other tasks."""
    return shared_lab


PASSWORDS = {"eve-viewer": "eve-viewer-pass-1", "uma-user": "uma-user-pass-1"}


@pytest.fixture(scope="module")
def admin_task(lab: Cluster) -> Iterator[str]:
    """A finished task of the admin (finished: it is in no queue, only in 'My tasks')."""
    for name, role in (("eve-viewer", "viewer"), ("uma-user", "user")):
        response = lab.request(
            "POST",
            "/river/api/users",
            json={"name": name, "role": role, "password": PASSWORDS[name]},
        )
        assert response.status_code == 201, response.text
    with Client(lab.url, lab.token) as client:
        task = client.submit("echo admin was here", name="admins-task")
    lab.wait_task(task.id, "completed")
    yield task.id


def login_page(browser: Any, lab: Cluster, name: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    sent: list[str] = []  # every header and URL the page sends, to look for the token in
    page.on("request", lambda r: sent.append(f"{r.url} {r.headers}"))
    page.goto(f"{lab.url}/login?next=%2Flab%3Freset", wait_until="domcontentloaded")
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORDS[name])
    page.click("#login_submit")
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
    return context, page, sent


@pytest.mark.parametrize("name", ["eve-viewer", "uma-user"])
def test_a_users_jupyterlab_carries_and_sends_no_token_but_their_own(
    browser: Any, lab: Cluster, admin_task: str, name: str
) -> None:
    context, page, sent = login_page(browser, lab, name)
    try:
        html = page.content()
        assert lab.token not in html, "the admin's server token is in the page"
        config_token = page.evaluate(
            "() => JSON.parse(document.getElementById('jupyter-config-data').textContent).token"
        )
        assert config_token == ""
        panel = open_panel(page)
        # The panel's own calls identify this user, not the admin.
        who = page.evaluate(
            """async () => {
                const r = await fetch('/river/api/me', {credentials: 'same-origin'});
                return (await r.json()).user.name;
            }"""
        )
        assert who == name
        expect(panel.locator('[data-section="tasks"]')).to_be_visible()
        expect(panel.locator(f'[data-task-id="{admin_task}"]')).to_have_count(0)
        if name == "uma-user":
            with Client(lab.url, "") as anonymous:
                token = anonymous.login(name, PASSWORDS[name])
            with Client(lab.url, token) as own:
                mine = own.submit("echo mine", name="umas-task")
            row = panel.locator(f'[data-section="tasks"] [data-task-id="{mine.id}"]')
            expect(row).to_have_attribute("data-state", "completed", timeout=30_000)
            expect(panel.locator(f'[data-task-id="{admin_task}"]')).to_have_count(0)
        assert not [s for s in sent if lab.token in s], "the page sent the server token"
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"identity-{name}.png"))
        context.close()
