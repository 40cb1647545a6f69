"""Fixtures for the browser tests: a live JupyterLab River cluster and Debian's chromium.

Tests that use a browser page are skipped (with the reason) when the `playwright` package or
/usr/bin/chromium is missing: CI runs `.ci/setup-browser.sh` first. Playwright's own browser
download is never used. Each test leaves a screenshot in test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import REPO, Cluster
from tests.shared import register, shared

register("shared_lab")
register("history_lab")

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("RIVER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "browser"
ADMIN_PASSWORD = "browser-test-password"
BOB_PASSWORD = "bob-test-password"
PAGE_FIXTURES = {"page", "browser"}


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
        CHROMIUM
    ):
        return f"no chromium at {CHROMIUM}; run .ci/setup-browser.sh"
    return None


BROWSER_PROBLEM = _browser_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        if PAGE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)
            if BROWSER_PROBLEM:
                item.add_marker(pytest.mark.skip(reason=BROWSER_PROBLEM))


PREBUILT = REPO / "labextension" / "prebuilt"


@contextlib.contextmanager
def checkout_extension(root: Path) -> Iterator[None]:
    """JupyterLab started in this block loads this checkout's built extension
    (labextension/prebuilt, `jlpm build`) through JUPYTER_PATH, ahead of the copy installed
    in the environment; skips the test when it was not built."""
    if not (PREBUILT / "package.json").exists():
        pytest.skip("build the lab extension first: cd labextension && sh jlpm.sh build")
    (root / "jpath" / "labextensions").mkdir(parents=True, exist_ok=True)
    link = root / "jpath" / "labextensions" / "jupyter-river-labextension"
    if not link.is_symlink():
        link.symlink_to(PREBUILT)
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root / "jpath")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


def start_lab(
    stack: contextlib.ExitStack, root: Path, runners: tuple[str, ...], *host_args: str
) -> Cluster:
    """JupyterLab with the River host, one-core process runners, and a password for the
    admin so the browser logs in through River's login form (cookie auth); `stack` stops it."""
    cluster = Cluster(
        root, app="lab", extra_host_args=["--LabApp.expose_app_in_browser=True", *host_args]
    )
    stack.callback(cluster.close)
    cluster.start_host(timeout=120)
    for name in runners:
        cluster.start_runner(name, "--cpus", "0")
    response = cluster.request("PATCH", "/river/api/users/admin", json={"password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    return cluster


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """JupyterLab with the River host and two one-core runners (alpha, beta), this module's
    own: for modules that add runners (a node stays listed after its runner stops) or
    otherwise change what the others would see."""
    with contextlib.ExitStack() as stack:
        yield start_lab(stack, tmp_path_factory.mktemp("lab"), ("alpha", "beta"))


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The same lab as `lab`, one for all the modules that ask for it (tests/shared.py):
    each must leave it as it found it (its tasks ended, no runner added, no user created
    that another module creates)."""
    with shared(
        "shared_lab",
        lambda stack: start_lab(stack, tmp_path_factory.mktemp("lab"), ("alpha", "beta")),
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def history_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """JupyterLab with this checkout's extension, one runner (alpha), a history point per
    second and one finished task (so the usage chart has an hour of use): the panel's and
    the dashboard's charts both draw from it (tests/shared.py)."""

    def start(stack: contextlib.ExitStack) -> Cluster:
        root = tmp_path_factory.mktemp("history-lab")
        built = (PREBUILT / "package.json").exists()  # test_lab_charts skips without it
        with checkout_extension(root) if built else contextlib.nullcontext():
            cluster = start_lab(stack, root, ("alpha",), "--RiverHost.history_step=1")
        task = cluster.submit(command=["sleep", "1"])
        cluster.wait_task(task["id"], "completed")
        return cluster

    with shared("history_lab", start) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def bob_token(lab: Cluster) -> str:
    """An API token of a second River user, bob (role user)."""
    response = lab.request(
        "POST", "/river/api/users", json={"name": "bob", "role": "user", "password": BOB_PASSWORD}
    )
    assert response.status_code == 201, response.text
    response = lab.request("POST", "/river/api/tokens", json={"user": "bob", "label": "browser"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, lab: Cluster, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context logged in to JupyterLab as the River admin (login form, so
    the panel's requests and event streams carry the login cookie, not a token)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None
        ),
    )
    page.on(
        "requestfailed",
        lambda req: errors.append(f"request failed: {req.method} {req.url}: {req.failure}"),
    )
    try:
        page.goto(f"{lab.url}/login?next=%2Flab%3Freset", wait_until="domcontentloaded")
        page.fill("#username_input", "admin")
        page.fill("#password_input", ADMIN_PASSWORD)
        page.click("#login_submit")
        expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=90_000)
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own failure
            errors.append(f"screenshot failed: {exc}")
        (ARTIFACTS / f"{request.node.name}.console.txt").write_text("\n".join(errors))
        context.close()
