"""The River panel's header says who it acts as: "NAME (ROLE)" from GET /river/api/me, read
when the panel opens and again after a 401 (the login ended; whoever logs in next may be
someone else). A name is shown as text, never as HTML.

The lab loads this checkout's built extension (labextension/prebuilt, `jlpm build`) through
JUPYTER_PATH (tests/browser/conftest.py's checkout_extension)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from river_server import db
from tests.browser.conftest import ARTIFACTS, checkout_extension, start_lab
from tests.browser.test_labextension import expect, open_panel
from tests.cluster import Cluster
from tests.integration.test_lab_bridge import SERVER_TOKEN, UserServer

pytestmark = pytest.mark.timeout(300)

USERS = {
    "eve-viewer": ("viewer", "eve-viewer-pass-1"),
    "uma-user": ("user", "uma-user-pass-1"),
    "hub-sam": ("user", "hub-sam-pass-1"),
}
# A name River's own forms refuse, as an account from elsewhere (an older River, a Hub's
# naming) may carry it: it must come out as these very characters.
HTML_NAME = '<b>sam</b><img src=x onerror="window.__riverXss=1">'


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """This module's own lab (it renames an account in the database), with this checkout's
    extension and no runner (the header needs none)."""
    root = tmp_path_factory.mktemp("identity")
    with contextlib.ExitStack() as stack:
        with checkout_extension(root):
            cluster = start_lab(stack, root, ())
        for name, (role, password) in USERS.items():
            response = cluster.request(
                "POST", "/river/api/users", json={"name": name, "role": role, "password": password}
            )
            assert response.status_code == 201, response.text
        yield cluster


def login(context: Any, lab: Cluster, name: str, password: str) -> Any:
    """A page of `context` logged in through River's login form, JupyterLab loaded."""
    page = context.new_page()
    page.goto(f"{lab.url}/login?next=%2Flab%3Freset", wait_until="domcontentloaded")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
    return page


@contextlib.contextmanager
def browser_context(browser: Any, shot: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(context.pages):
            page.screenshot(path=str(ARTIFACTS / f"{shot}-{i}.png"))
        context.close()


def header_identity(panel: Any) -> Any:
    """The line under the panel's title row that names who the panel acts as."""
    return panel.locator(".jp-River-header + .jp-River-me")


@pytest.mark.parametrize("name", ["eve-viewer", "uma-user"])
def test_the_header_shows_your_own_name_and_role(browser: Any, lab: Cluster, name: str) -> None:
    role, password = USERS[name]
    with browser_context(browser, f"identity-header-{name}") as context:
        panel = open_panel(login(context, lab, name, password))
        me = header_identity(panel)
        expect(me).to_have_attribute("data-user", name)
        expect(me).to_have_attribute("data-role", role)
        expect(me).to_have_text(f"Signed in as {name} ({role})")
        expect(me).to_have_attribute("title", f"Signed in as {name}, role {role}")


def test_a_name_with_html_is_shown_as_text(browser: Any, lab: Cluster) -> None:
    engine = db.make_engine(lab.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(db.User).where(db.User.name == "hub-sam").values(name=HTML_NAME)
            )
    finally:
        engine.dispose()
    with browser_context(browser, "identity-html-name") as context:
        page = login(context, lab, HTML_NAME, USERS["hub-sam"][1])
        panel = open_panel(page)
        me = header_identity(panel)
        expect(me).to_have_attribute("data-user", HTML_NAME)
        expect(me.locator(".jp-River-meName")).to_have_text(HTML_NAME)
        expect(me).to_have_text(f"Signed in as {HTML_NAME} (user)")
        expect(me.locator("b, img")).to_have_count(0)
        assert page.evaluate("() => window.__riverXss") is None


def test_after_a_401_the_header_shows_whoever_logs_in_next(browser: Any, lab: Cluster) -> None:
    with browser_context(browser, "identity-relogin") as context:
        page = login(context, lab, "eve-viewer", USERS["eve-viewer"][1])
        panel = open_panel(page)
        expect(header_identity(panel)).to_have_attribute("data-user", "eve-viewer")
        # Another tab logs out: the panel's next request answers 401.
        other = context.new_page()
        other.goto(f"{lab.url}/logout", wait_until="domcontentloaded")
        panel.locator('[data-action="refresh"]').click()
        expect(panel.locator(".jp-River-error")).to_contain_text("Signed out")
        expect(header_identity(panel)).to_have_count(0)
        other.close()
        # Someone else logs in (an admin switching browsers, a shared lab): the panel
        # retries by itself and now names them.
        login(context, lab, "uma-user", USERS["uma-user"][1])
        me = header_identity(panel)
        expect(me).to_have_attribute("data-user", "uma-user", timeout=45_000)
        expect(me).to_have_text("Signed in as uma-user (user)")
        expect(panel.locator(".jp-River-error")).to_have_count(0)


def test_in_a_hub_users_own_lab_the_header_shows_that_user(
    browser: Any, lab: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A user's own Jupyter (as the Hub spawns it) forwards /river/api/* as its user
    (river_magics/lab_bridge.py): the panel there names that user, with their groups."""
    root = tmp_path_factory.mktemp("user-server")
    token = lab.make_users("alice")["alice"]
    response = lab.request(
        "POST", "/river/api/groups", json={"name": "physics", "members": ["alice"]}
    )
    assert response.status_code == 201, response.text
    with checkout_extension(root):
        server = UserServer(root, lab.url, token)
    try:
        with browser_context(browser, "identity-user-server") as context:
            page = context.new_page()
            page.goto(f"{server.url}/lab?token={SERVER_TOKEN}", wait_until="domcontentloaded")
            expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
            me = header_identity(open_panel(page))
            expect(me).to_have_text("Signed in as alice (user)")
            expect(me).to_have_attribute("title", "Signed in as alice, role user; groups: physics")
    finally:
        server.close()
