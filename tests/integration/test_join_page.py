"""The sign-up page an invitation link opens (river_server/join_page.py), on a live host:
the form, the refusals that re-render it with a 4xx and the typed name, and a good code
that makes the account, logs it in with the login cookie and cannot be used again."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from river_server import admin_cli
from tests.cluster import Cluster

A = "/river/api"
XSRF_FIELD = re.compile(r'<input type="hidden" name="_xsrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("join")))
    cluster.start_host()
    try:
        yield cluster
    finally:
        cluster.close()


def invite(host: Cluster, role: str = "user") -> tuple[str, int]:
    """A new one-use invitation: (its code, its ID)."""
    made = host.ok("POST", f"{A}/invitations", json={"role": role})
    return made["code"], made["invitation"]["id"]


def open_form(browser: httpx.Client, host: Cluster, code: str) -> tuple[str, str]:
    """GET the page as a browser would; (page, the XSRF form value)."""
    page = browser.get(f"{host.url}/river/join", params={"code": code})
    assert page.status_code == 200, page.text
    found = XSRF_FIELD.search(page.text)
    assert found, page.text
    return page.text, html.unescape(found.group(1))


def submit(browser: httpx.Client, host: Cluster, code: str, xsrf: str, **fields: str):
    data = {"_xsrf": xsrf, "code": code, **fields}
    return browser.post(f"{host.url}/river/join", data=data)


def message(page: str) -> str:
    found = re.search(r'<div class="message error">(.*?)</div>', page)
    return html.unescape(found.group(1)) if found else ""


def test_the_form_renders_with_xsrf_and_says_nothing_about_the_invitation(host: Cluster) -> None:
    code, _ = invite(host, "viewer")
    with httpx.Client(timeout=30) as browser:
        page, xsrf = open_form(browser, host, code)
        assert xsrf and 'name="repeat"' in page and 'name="name"' in page
        assert f'name="code" value="{code}"' in page
        # A valid and an unknown code show the same page: no role, no inviter.
        other, other_xsrf = open_form(browser, host, "rvi_not-a-code")
        assert page.replace(code, "C").replace(xsrf, "X") == other.replace(
            "rvi_not-a-code", "C"
        ).replace(other_xsrf, "X")
        assert "viewer" not in page and "admin" not in page
        # Markup in the code is escaped, never rendered.
        hostile, _ = open_form(browser, host, '"><script>alert(1)</script>')
        assert "<script>alert" not in hostile and "&lt;script&gt;" in hostile
        # No code at all: a 400 that says what to do.
        bare = browser.get(f"{host.url}/river/join")
        assert bare.status_code == 400 and "open the whole link" in message(bare.text)


def test_refusals_re_render_the_form_with_the_message_and_the_typed_name(host: Cluster) -> None:
    code, number = invite(host)
    with httpx.Client(timeout=30) as browser:
        _, xsrf = open_form(browser, host, code)
        # Without the XSRF field the POST is refused before anything is made.
        no_xsrf = browser.post(
            f"{host.url}/river/join",
            data={"code": code, "name": "jo", "password": "pw-123456", "repeat": "pw-123456"},
        )
        assert no_xsrf.status_code == 403
        bad = submit(
            browser,
            host,
            "rvi_wrong",
            xsrf,
            name="jo-typed",
            password="good-pass-1",
            repeat="good-pass-1",
        )
        assert bad.status_code == 403, bad.text
        assert "unknown, used up, expired or revoked" in message(bad.text)
        assert 'value="jo-typed"' in bad.text
        differ = submit(
            browser,
            host,
            code,
            xsrf,
            name="jo-typed",
            password="good-pass-1",
            repeat="good-pass-2",
        )
        assert differ.status_code == 400 and "passwords differ" in message(differ.text)
        assert 'value="jo-typed"' in differ.text and f'value="{code}"' in differ.text
        weak = submit(browser, host, code, xsrf, name="jo-typed", password="x", repeat="x")
        assert weak.status_code == 400 and "password" in message(weak.text)
        taken = submit(
            browser, host, code, xsrf, name="admin", password="good-pass-1", repeat="good-pass-1"
        )
        assert taken.status_code == 409 and "already exists" in message(taken.text)
        # None of these logged anyone in, used the code or made an account.
        assert not [c for c in browser.cookies if c.startswith("username-")]
        assert browser.get(f"{host.url}{A}/me").status_code == 403
    assert host.request("GET", f"{A}/users/jo-typed").status_code == 404
    listed = host.get(f"{A}/invitations")["invitations"]
    assert next(i for i in listed if i["id"] == number)["uses"] == 0


def test_a_good_code_makes_the_user_logs_them_in_and_is_used_up(host: Cluster) -> None:
    code, _ = invite(host, "viewer")
    with httpx.Client(timeout=30) as browser:
        _, xsrf = open_form(browser, host, code)
        made = submit(
            browser,
            host,
            code,
            xsrf,
            name="joiner",
            password="joiner-pass-1",
            repeat="joiner-pass-1",
        )
        assert made.status_code == 302, made.text
        assert made.headers["Location"].endswith("/lab")
        # The login cookie opens the API as the new user, with the invitation's role.
        me = browser.get(f"{host.url}{A}/me")
        assert me.status_code == 200, me.text
        assert me.json()["user"] == {**me.json()["user"], "name": "joiner", "role": "viewer"}
    with httpx.Client(timeout=30) as browser:
        _, xsrf = open_form(browser, host, code)
        again = submit(
            browser,
            host,
            code,
            xsrf,
            name="joiner-2",
            password="joiner-pass-1",
            repeat="joiner-pass-1",
        )
        assert again.status_code == 403 and "used up" in message(again.text)
        assert 'value="joiner-2"' in again.text
        assert browser.get(f"{host.url}{A}/me").status_code == 403
    assert host.request("GET", f"{A}/users/joiner-2").status_code == 404


def test_river_invite_prints_the_sign_up_link(host: Cluster, capsys: pytest.CaptureFixture) -> None:
    args = ["--data-dir", str(host.root / "host"), "--url", f"{host.url}/"]
    capsys.readouterr()
    assert admin_cli.invite_command([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["link"] == f"{host.url}/river/join?code={printed['code']}"
    with httpx.Client(timeout=30) as browser:
        page, _ = open_form(browser, host, printed["code"])
        assert "river-join" in page
    assert admin_cli.invite_command(args) == 0
    out = capsys.readouterr()
    assert f"sign-up link: {host.url}/river/join?code={out.out.strip()}" in out.err
