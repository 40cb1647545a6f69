"""The River admin page in JupyterLab (issue #21), in Chromium against a host that holds
`user` submissions for approval: an admin approves (and rejects, with a reason) pending
tasks, changes a role, revokes a token, creates an invitation whose copied link opens the
sign-up page (the invited person lands in the lab as themselves), sets a group quota and
sees the runners; a plain user has no admin entry anywhere and the host answers their admin
calls with 403; the pages render in the light and dark themes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import river_runner
from river_magics import Client
from tests.browser.conftest import ARTIFACTS, checkout_extension
from tests.browser.test_lab_forms import field, open_form, run_command
from tests.browser.test_labextension import expect, open_panel, shot
from tests.cluster import Cluster

pytestmark = pytest.mark.timeout(300)

PASSWORDS = {"admin": "admin-page-password", "ulla": "ulla-user-password"}


@pytest.fixture(scope="module")
def approval_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("admin-lab")
    with checkout_extension(root):  # this checkout's build, not the one installed
        yield from _approval_lab(root)


def _approval_lab(root: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        root,
        app="lab",
        extra_host_args=[
            "--LabApp.expose_app_in_browser=True",
            "--RiverHost.require_approval=True",
        ],
    )
    try:
        cluster.start_host(timeout=120)
        cluster.start_runner("gamma", "--cpus", "0")
        cluster.ok("PATCH", "/river/api/users/admin", json={"password": PASSWORDS["admin"]})
        cluster.ok(
            "POST",
            "/river/api/users",
            json={"name": "ulla", "role": "user", "password": PASSWORDS["ulla"]},
        )
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def ulla_token(approval_lab: Cluster) -> Iterator[str]:
    answer = approval_lab.ok("POST", "/river/api/tokens", json={"user": "ulla", "label": "t"})
    yield answer["token"]
    with contextlib.suppress(Exception):
        approval_lab.request("DELETE", f"/river/api/tokens/{answer['info']['id']}")


@contextlib.contextmanager
def logged_in(browser: Any, lab: Cluster, name: str, shot_name: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto(f"{lab.url}/login?next=%2Flab%3Freset", wait_until="domcontentloaded")
        page.fill("#username_input", name)
        page.fill("#password_input", PASSWORDS[name])
        page.click("#login_submit")
        expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{shot_name}.png"))
        context.close()


def join_with_link(browser: Any, url: str, name: str, password: str) -> None:
    """Open an invitation link in a fresh browser (no River session), fill the sign-up
    form and check the lab opens with the new user logged in."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.fill("#name_input", name)
        page.fill("#password_input", password)
        page.fill("#repeat_input", password + "-typo")
        page.click("#join_submit")
        expect(page.locator(".message.error")).to_contain_text("passwords differ")
        expect(page.locator("#name_input")).to_have_value(name)
        shot(page, "join-page-refused")
        page.fill("#password_input", password)
        page.fill("#repeat_input", password)
        page.click("#join_submit")
        expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
        open_panel(page)  # the panel's event stream is live on the new session's cookie
        me = page.evaluate("async () => (await (await fetch('/river/api/me')).json()).user")
        assert me["name"] == name and me["role"] == "viewer", me
        shot(page, "join-page-landed")
    finally:
        context.close()


def open_admin(page: Any) -> Any:
    run_command(page, "River admin")
    admin = page.locator("#river-admin")
    expect(admin).to_have_attribute("data-loaded", "true")
    return admin


def test_admin_approves_a_pending_task_and_it_runs(
    browser: Any, approval_lab: Cluster, ulla_token: str
) -> None:
    lab = approval_lab
    with Client(lab.url, ulla_token) as ulla:
        good = ulla.submit(command="echo approved-and-ran", name="needs-ok")
        bad = ulla.submit(command="echo never", name="not-ok")
    assert lab.task(good.id)["state"] == "pending_approval"
    with logged_in(browser, lab, "admin", "admin-approvals") as page:
        admin = open_admin(page)
        approvals = admin.locator('[data-admin="approvals"]')
        row = approvals.locator(f'[data-task-id="{good.id}"]')
        expect(row).to_contain_text("ulla")
        shot(page, "admin-approvals")
        row.get_by_label(f"Reason for {good.id}").fill("looks fine")
        row.locator('[data-action="approve"]').click()
        expect(row).to_have_count(0)
        task = lab.wait_task(good.id, "completed", timeout=60)
        assert task["exit_code"] == 0
        assert "approved-and-ran" in lab.request("GET", f"/river/api/tasks/{good.id}/logs").text

        other = approvals.locator(f'[data-task-id="{bad.id}"]')
        other.get_by_label(f"Reason for {bad.id}").fill("too big for today")
        other.locator('[data-action="reject"]').click()
        expect(other).to_have_count(0)
        rejected = lab.wait_task(bad.id, "killed", timeout=30)
        assert "too big for today" in (rejected.get("reason") or "")
        expect(approvals).to_contain_text("No task waits for approval.")


def test_admin_manages_users_tokens_invitations_groups_and_sees_runners(
    browser: Any, approval_lab: Cluster
) -> None:
    lab = approval_lab
    lab.ok("POST", "/river/api/users", json={"name": "tmp-user", "role": "user"})
    token = lab.ok("POST", "/river/api/tokens", json={"user": "tmp-user", "label": "revoke-me"})
    try:
        with logged_in(browser, lab, "admin", "admin-manage") as page:
            admin = open_admin(page)
            # Users and roles: the select changes the role on the host.
            users = admin.locator('[data-admin="users"]')
            users.get_by_label("Role of tmp-user").select_option("viewer")
            expect(users.get_by_label("Role of tmp-user")).to_have_value("viewer")
            assert lab.get("/river/api/users/tmp-user")["user"]["role"] == "viewer"

            # Tokens: revoke one; the host refuses it from then on.
            auth = {"Authorization": f"token {token['token']}"}
            assert httpx.get(f"{lab.url}/river/api/me", headers=auth).status_code == 200
            tokens = admin.locator('[data-admin="tokens"]')
            row = tokens.locator(f'[data-token-id="{token["info"]["id"]}"]')
            row.locator('[data-action="revoke-token"]').click()
            expect(row).to_have_attribute("data-active", "false")
            me = httpx.get(
                f"{lab.url}/river/api/me", headers={"Authorization": f"token {token['token']}"}
            )
            assert me.status_code in (401, 403), me.text

            # Invitations: the link shown (and copied) opens the sign-up page, where the
            # invited person makes their account and lands in the lab as that user.
            invitations = admin.locator('[data-admin="invitations"]')
            invitations.locator('[data-field="invite-role"]').select_option("viewer")
            invitations.locator('[data-action="create-invitation"]').click()
            link = invitations.locator("[data-link]")
            expect(link).to_be_visible()
            url = link.get_attribute("data-link") or ""
            assert url.startswith(f"{lab.url}/river/join?code=rvi_"), url
            join_with_link(browser, url, "invited-vi", "invited-password-1")
            assert lab.get("/river/api/users/invited-vi")["user"]["role"] == "viewer"

            # Groups and quotas.
            groups = admin.locator('[data-admin="groups"]')
            groups.locator('[data-field="group-name"]').fill("lab-group")
            groups.locator('[data-field="group-cores"]').fill("4")
            groups.locator('[data-action="create-group"]').click()
            group = groups.locator('[data-group="lab-group"]')
            expect(group).to_be_visible()
            group.get_by_label("Max cores of lab-group").fill("2")
            group.locator('[data-action="save-quota"]').click()
            expect(group.get_by_label("Max cores of lab-group")).to_have_value("2")
            assert lab.get("/river/api/groups/lab-group")["group"]["max_cores"] == 2
            # A refused action shows the host's message in its section.
            group.get_by_label("Add a member to lab-group").fill("nobody-here")
            group.locator('[data-action="add-member"]').click()
            expect(admin.locator('[data-error="groups"]')).to_contain_text("nobody-here")

            # Runners.
            node = admin.locator('[data-admin="nodes"] [data-node="gamma"]')
            expect(node).to_have_attribute("data-state", "online")
            expect(node).to_contain_text("process")
            # The runner's version, as it registered (the credential's age beside it).
            expect(node).to_contain_text(river_runner.__version__)
            shot(page, "admin-page-light")

            # Delete the user from the page.
            page.once("dialog", lambda dialog: dialog.accept())
            users.locator('[data-user="tmp-user"] [data-action="delete-user"]').click()
            expect(users.locator('[data-user="tmp-user"]')).to_have_count(0)
            assert lab.request("GET", "/river/api/users/tmp-user").status_code == 404
    finally:
        for path in (
            "/river/api/users/tmp-user",
            "/river/api/users/invited-vi",
            "/river/api/groups/lab-group",
        ):
            with contextlib.suppress(Exception):
                lab.request("DELETE", path)


FETCH_JS = """async ([method, path, body]) => {
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
  const init = {method, credentials: 'same-origin', headers: {'X-XSRFToken': xsrf}};
  if (body) { init.body = JSON.stringify(body); }
  return (await fetch(path, init)).status;
}"""


def test_a_plain_user_sees_no_admin_page_and_the_host_refuses_its_calls(
    browser: Any, approval_lab: Cluster, ulla_token: str
) -> None:
    lab = approval_lab
    with Client(lab.url, ulla_token) as ulla:
        pending = ulla.submit(command="echo mine", name="ullas-own")
    try:
        with logged_in(browser, lab, "ulla", "admin-as-user") as page:
            page.evaluate("() => window.jupyterapp.restored")
            page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
            expect(page.locator(".jp-LauncherCard", has_text="Submit task")).to_be_visible()
            # The forms are there for a user; the admin page is not, anywhere.
            assert page.evaluate("() => window.jupyterapp.commands.hasCommand('river:submit-form')")
            assert not page.evaluate("() => window.jupyterapp.commands.hasCommand('river:admin')")
            expect(page.locator(".jp-LauncherCard", has_text="Admin")).to_have_count(0)
            page.evaluate(
                "() => window.jupyterapp.commands.execute('apputils:activate-command-palette')"
            )
            search = page.locator(".lm-CommandPalette-input")
            expect(search).to_be_focused()
            search.fill("River admin")
            expect(page.locator(".lm-CommandPalette-item", has_text="River admin")).to_have_count(0)
            page.keyboard.press("Escape")
            # Their browser session's calls to the admin routes: 403 (or 404).
            for method, path, body in (
                ("GET", "/river/api/users", None),
                ("PATCH", "/river/api/users/ulla", {"role": "admin"}),
                ("DELETE", "/river/api/users/admin", None),
                ("GET", "/river/api/tokens?all=1", None),
                ("GET", "/river/api/invitations", None),
                ("POST", "/river/api/invitations", {"role": "admin"}),
                ("GET", "/river/api/groups", None),
                ("POST", f"/river/api/tasks/{pending.id}/approve", {}),
            ):
                status = page.evaluate(FETCH_JS, [method, path, body])
                assert status in (403, 404), f"{method} {path} answered {status}"
            assert lab.get("/river/api/users/ulla")["user"]["role"] == "user"
            assert lab.task(pending.id)["state"] == "pending_approval"
    finally:
        lab.request("POST", f"/river/api/tasks/{pending.id}/reject", json={"reason": "cleanup"})


def background(page: Any, selector: str) -> str:
    return page.evaluate(
        "(s) => getComputedStyle(document.querySelector(s)).backgroundColor", selector
    )


def test_admin_page_and_forms_follow_the_light_and_dark_themes(
    browser: Any, approval_lab: Cluster
) -> None:
    lab = approval_lab
    with logged_in(browser, lab, "admin", "admin-themes") as page:
        theme = page.evaluate(
            "() => document.body.dataset.jpThemeName || document.body.dataset.jpThemeLight"
        )
        try:
            open_admin(page)
            light = background(page, "#river-admin")
            expected = page.evaluate(
                "() => getComputedStyle(document.body).getPropertyValue('--jp-layout-color1')"
            )
            assert light == "rgb(255, 255, 255)" or "fff" in expected.lower(), (light, expected)
            shot(page, "admin-light")
            form = open_form(page, "Create a River VPS", "river-vps-form")
            field(form, "memory").fill("lots")
            field(form, "memory").press("Enter")
            expect(form.locator('[data-error="memory"]')).not_to_have_text("")
            shot(page, "form-vps-light")
            light_error = page.evaluate(
                "() => getComputedStyle(document.querySelector('[data-error=\"memory\"]')).color"
            )

            page.evaluate(
                "() => window.jupyterapp.commands.execute('apputils:change-theme', "
                "{theme: 'JupyterLab Dark'})"
            )
            expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false")
            # The dark stylesheet arrives after the attribute flips: wait until the form's
            # background is the theme's layout colour (and no longer the light one).
            layout_js = (
                "(() => { const d = document.createElement('div');"
                " d.style.background = 'var(--jp-layout-color1)'; document.body.append(d);"
                " const c = getComputedStyle(d).backgroundColor; d.remove(); return c; })()"
            )
            page.wait_for_function(
                "(old) => { const bg = getComputedStyle("
                "document.querySelector('#river-vps-form')).backgroundColor;"
                f" return bg !== old && bg === {layout_js}; }}",
                arg=light,
            )
            dark = background(page, "#river-vps-form")
            layout = page.evaluate(f"() => {layout_js}")
            assert dark == layout != light, (dark, layout, light)
            dark_error = page.evaluate(
                "() => getComputedStyle(document.querySelector('[data-error=\"memory\"]')).color"
            )
            assert dark_error != light_error
            shot(page, "form-vps-dark")
            run_command(page, "River admin")
            assert background(page, "#river-admin") == layout
            shot(page, "admin-dark")
        finally:
            page.evaluate(
                "() => window.jupyterapp.commands.execute('apputils:change-theme', "
                "{theme: 'JupyterLab Light'})"
            )
            expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "true")
            del theme
