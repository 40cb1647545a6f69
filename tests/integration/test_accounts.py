"""Accounts end to end on a live host: secrets at rest, token revocation and expiry, browser
login, the host's Jupyter powers kept for admins, invitations, role rules, the admin CLI and
`%river login`'s client calls."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from river_magics import Client
from river_magics.errors import RiverError
from river_server import admin_cli
from tests.cluster import REPO, Cluster, running_cluster, wait_for

A = "/river/api"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("accounts")) as cluster:
        yield cluster


def admin(cluster: Cluster, method: str, path: str, **kw: Any) -> dict[str, Any]:
    return cluster.ok(method, f"{A}{path}", **kw)


def as_token(cluster: Cluster, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{cluster.url}{path}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
        **kw,
    )


def new_user(cluster: Cluster, name: str, role: str = "user", password: str | None = None) -> str:
    body: dict[str, Any] = {"name": name, "role": role}
    if password:
        body["password"] = password
    admin(cluster, "POST", "/users", json=body)
    return admin(cluster, "POST", "/tokens", json={"user": name})["token"]


def db_bytes(cluster: Cluster) -> bytes:
    """Everything the host's database holds: SQLite's main file and write-ahead log
    together, or (PostgreSQL) every row of every table as text."""
    if not cluster.db_url.startswith("sqlite"):
        engine = sqlalchemy.create_engine(cluster.db_url)
        try:
            with engine.connect() as db:
                tables = sqlalchemy.inspect(db).get_table_names()
                rows = [db.exec_driver_sql(f'select * from "{t}"').fetchall() for t in tables]
            return repr(rows).encode()
        finally:
            engine.dispose()
    base = cluster.root / "host" / "river.db"
    return b"".join(p.read_bytes() for p in (base, Path(f"{base}-wal")) if p.exists())


def test_tokens_passwords_and_codes_are_not_recoverable_from_the_db(host: Cluster) -> None:
    password = "correct-horse-battery-9"
    token = new_user(host, "vault", password=password)
    code = admin(host, "POST", "/invitations", json={"role": "viewer"})["code"]
    assert as_token(host, token, "GET", f"{A}/me").json()["user"]["name"] == "vault"

    stored = db_bytes(host)
    for secret in (password, token, code, token.split("_", 1)[1], code.split("_", 1)[1]):
        assert secret.encode() not in stored, "a secret is stored in clear"
    # What is stored: a SHA3-512 digest of the token and code, a bcrypt hash of the password.
    assert hashlib.sha3_512(token.encode()).hexdigest().encode() in stored
    assert hashlib.sha3_512(code.encode()).hexdigest().encode() in stored
    assert re.search(rb"\$2b\$12\$[./A-Za-z0-9]{53}", stored)


def test_a_revoked_token_fails_at_once_and_an_expired_one_too(host: Cluster) -> None:
    token = new_user(host, "revokee")
    second = admin(host, "POST", "/tokens", json={"user": "revokee", "label": "spare"})
    assert as_token(host, token, "GET", f"{A}/me").status_code == 200
    mine = as_token(host, token, "GET", f"{A}/tokens").json()["tokens"]
    assert {t["label"] for t in mine} == {"", "spare"} and all("hash" not in str(t) for t in mine)
    # Revoke the spare with the first token; the spare fails on the very next request.
    assert as_token(host, second["token"], "GET", f"{A}/me").status_code == 200
    revoked = as_token(host, token, "DELETE", f"{A}/tokens/{second['info']['id']}")
    assert revoked.status_code == 200 and revoked.json()["token"]["revoked"] is True
    assert as_token(host, second["token"], "GET", f"{A}/me").status_code == 403
    assert as_token(host, token, "GET", f"{A}/me").status_code == 200
    # A token can revoke itself, and then nothing works with it.
    own_id = next(t["id"] for t in mine if t["label"] == "")
    assert as_token(host, token, "DELETE", f"{A}/tokens/{own_id}").status_code == 200
    assert as_token(host, token, "GET", f"{A}/nodes").status_code == 403

    short = admin(host, "POST", "/tokens", json={"user": "revokee", "expires_in": 1})
    assert short["info"]["expires_at"] is not None
    wait_for(
        lambda: as_token(host, short["token"], "GET", f"{A}/me").status_code == 403,
        timeout=10,
        what="the 1 s token to expire",
    )


def test_browser_login_and_the_host_server_is_for_admins_only(host: Cluster) -> None:
    new_user(host, "browser", password="browser-pass-1")
    admin(host, "PATCH", "/users/admin", json={"password": "admin-pass-12"})
    for name, password, jupyter_code in (
        ("browser", "browser-pass-1", 403),
        ("admin", "admin-pass-12", 200),
    ):
        with httpx.Client(base_url=host.url, timeout=30) as browser:
            page = browser.get("/login?next=/lab")
            assert page.status_code == 200 and 'name="username"' in page.text
            xsrf = browser.cookies["_xsrf"]
            bad = browser.post(
                "/login", data={"username": name, "password": "wrong-password", "_xsrf": xsrf}
            )
            assert bad.status_code == 401 and "Invalid" in bad.text
            assert browser.get(f"{A}/me").status_code == 403
            good = browser.post(
                "/login?next=/lab",
                data={"username": name, "password": password, "_xsrf": xsrf},
                follow_redirects=False,
            )
            assert good.status_code == 302 and good.headers["location"] == "/lab"
            me = browser.get(f"{A}/me").json()["user"]
            assert me["name"] == name
            assert browser.get("/lab").status_code == 200  # JupyterLab itself opens for all
            headers = {"X-XSRFToken": xsrf}
            for method, path in (
                ("GET", "/api/contents"),
                ("GET", "/api/kernels"),
                ("GET", "/api/terminals"),
                ("GET", "/api/sessions"),
                ("GET", "/files/host.log"),
            ):
                got = browser.request(method, path, headers=headers).status_code
                assert got == jupyter_code, (name, method, path, got)
            if jupyter_code == 403:
                # Starting a kernel or a terminal is refused, and nothing is started.
                for path in ("/api/kernels", "/api/terminals"):
                    assert browser.post(path, headers=headers, json={}).status_code == 403
    kernels = host.request("GET", "/api/kernels").json()
    terminals = host.request("GET", "/api/terminals").json()
    assert kernels == [] and terminals == []


def test_api_login_trades_a_password_for_a_token_and_throttles_guessing(host: Cluster) -> None:
    new_user(host, "notebook", password="notebook-pass-1")
    client = Client(host.url, token="")
    try:
        token = client.login("notebook", "notebook-pass-1")
        with Client(host.url, token) as logged_in:
            assert logged_in.me()["name"] == "notebook"
        with pytest.raises(RiverError) as error:
            client.login("notebook", "nope-nope-nope")
        assert error.value.status == 401
    finally:
        client.close()
    for _ in range(4):  # with the failure above: 5 in a row
        response = httpx.post(
            f"{host.url}{A}/login", json={"username": "notebook", "password": "x" * 9}, timeout=30
        )
        assert response.status_code == 401
    blocked = httpx.post(
        f"{host.url}{A}/login",
        json={"username": "notebook", "password": "notebook-pass-1"},
        timeout=30,
    )
    assert blocked.status_code == 429 and "try again" in blocked.json()["message"]


def test_invitations_roles_and_uses(host: Cluster) -> None:
    operator = new_user(host, "op", role="operator")
    # Operators may invite viewers and users, not operators or admins.
    for role, code in (("user", 201), ("viewer", 201), ("operator", 403), ("admin", 403)):
        response = as_token(host, operator, "POST", f"{A}/invitations", json={"role": role})
        assert response.status_code == code, (role, response.text)
    invite = as_token(
        host, operator, "POST", f"{A}/invitations", json={"role": "user", "uses": 2}
    ).json()
    code = invite["code"]

    def redeem(name: str, the_code: str = code) -> httpx.Response:
        return httpx.post(
            f"{host.url}{A}/invitations/redeem",
            json={"code": the_code, "name": name, "password": f"{name}-password"},
            timeout=30,
        )

    first = redeem("newbie1")
    assert first.status_code == 201 and first.json()["user"]["role"] == "user"
    assert redeem("newbie1").status_code == 409  # the name is taken (the use is not spent)
    assert redeem("newbie2").status_code == 201
    assert redeem("newbie3").status_code == 403  # both uses spent
    assert redeem("newbie4", "rvi_not-a-code").status_code == 403
    listed = {i["id"]: i for i in admin(host, "GET", "/invitations")["invitations"]}
    assert listed[invite["invitation"]["id"]]["uses"] == 2
    assert listed[invite["invitation"]["id"]]["active"] is False
    # A revoked invitation and an expired one create nothing.
    other = as_token(host, operator, "POST", f"{A}/invitations", json={}).json()
    assert as_token(
        host, operator, "DELETE", f"{A}/invitations/{other['invitation']['id']}"
    ).json()["invitation"]["revoked"]
    assert redeem("newbie5", other["code"]).status_code == 403
    expiring = admin(host, "POST", "/invitations", json={"expires_in": 1})
    time.sleep(1.2)
    assert redeem("newbie6", expiring["code"]).status_code == 403
    # The invited user logs in with the password they chose.
    login = httpx.post(
        f"{host.url}{A}/login",
        json={"username": "newbie2", "password": "newbie2-password"},
        timeout=30,
    )
    assert login.status_code == 201 and login.json()["user"]["role"] == "user"


def test_role_rules_protect_accounts(host: Cluster) -> None:
    user = new_user(host, "plain", password="plain-password-1")
    # Users cannot raise their own role, read others, or change others' passwords.
    assert (
        as_token(host, user, "PATCH", f"{A}/users/plain", json={"role": "admin"}).status_code == 403
    )
    assert as_token(host, user, "GET", f"{A}/users/admin").status_code == 403
    assert (
        as_token(
            host, user, "PATCH", f"{A}/users/admin", json={"password": "hijacked-pass"}
        ).status_code
        == 403
    )
    # Changing one's own password needs the current one.
    wrong = as_token(
        host,
        user,
        "PATCH",
        f"{A}/users/plain",
        json={"password": "new-password-1", "current_password": "not-it"},
    )
    assert wrong.status_code == 403
    right = as_token(
        host,
        user,
        "PATCH",
        f"{A}/users/plain",
        json={"password": "new-password-1", "current_password": "plain-password-1"},
    )
    assert right.status_code == 200
    # Admins cannot demote or delete themselves, nor remove the last admin.
    assert host.request("PATCH", f"{A}/users/admin", json={"role": "user"}).status_code == 409
    assert host.request("DELETE", f"{A}/users/admin").status_code == 409
    # A role change takes effect on the next request, with the same token.
    assert as_token(host, user, "GET", f"{A}/users").status_code == 403
    admin(host, "PATCH", "/users/plain", json={"role": "operator"})
    assert as_token(host, user, "GET", f"{A}/users").status_code == 200
    # Deleting a user kills their tokens at once.
    admin(host, "DELETE", "/users/plain")
    assert as_token(host, user, "GET", f"{A}/me").status_code == 403
    # Bad input is a 400 with a message, never a 500.
    for body in (
        {"name": "bad name"},
        {"name": "x", "role": "king"},
        {"name": "y", "password": "short"},
    ):
        response = host.request("POST", f"{A}/users", json=body)
        assert response.status_code == 400 and response.json()["message"]


def db_args(cluster: Cluster) -> list[str]:
    """Where the account commands find the host's DB: its data dir (SQLite), or its URL."""
    if cluster.db_url.startswith("sqlite"):
        return ["--data-dir", str(cluster.root / "host")]
    return ["--db-url", cluster.db_url]


def river_cli(cluster: Cluster, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run a `river` account command in this process (the entry point itself is checked once,
    in a subprocess, below); returns (status, stdout, stderr)."""
    commands = {
        "user": admin_cli.user_command,
        "token": admin_cli.token_command,
        "invite": admin_cli.invite_command,
    }
    capsys.readouterr()
    status = commands[args[0]]([*args[1:], *db_args(cluster)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_admin_cli_manages_users_tokens_and_invitations(
    host: Cluster, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commands are registered as `river` subcommands (entry points of the package).
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "river_runner.cli",
            "user",
            "list",
            *db_args(host),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert listed.returncode == 0 and re.search(r"^admin\s+admin", listed.stdout, re.M), listed

    monkeypatch.setattr("sys.stdin", io.StringIO("clio-password\n"))
    status, _, err = river_cli(
        host, capsys, "user", "add", "clio", "--role", "viewer", "--password-stdin"
    )
    assert status == 0, err
    _, out, _ = river_cli(host, capsys, "user", "list")
    assert re.search(r"^clio\s+viewer\s+True", out, re.M), out
    assert river_cli(host, capsys, "user", "role", "clio", "user")[0] == 0
    status, out, err = river_cli(
        host, capsys, "token", "create", "clio", "--label", "cli", "--expires", "1d"
    )
    assert status == 0, err
    token = out.strip()
    me = as_token(host, token, "GET", f"{A}/me").json()["user"]
    assert me == {**me, "name": "clio", "role": "user"}
    token_id = re.search(r"token (\d+) for clio", err).group(1)
    _, out, _ = river_cli(host, capsys, "token", "list", "clio")
    assert re.search(rf"^{token_id}\s+clio\s+cli\s", out, re.M), out
    assert river_cli(host, capsys, "token", "revoke", token_id)[0] == 0
    assert as_token(host, token, "GET", f"{A}/me").status_code == 403
    status, out, err = river_cli(
        host, capsys, "invite", "--role", "viewer", "--uses", "1", "--expires", "2h"
    )
    assert status == 0, err
    redeemed = httpx.post(
        f"{host.url}{A}/invitations/redeem",
        json={"code": out.strip(), "name": "cli-guest", "password": "guest-password"},
        timeout=30,
    )
    assert redeemed.status_code == 201 and redeemed.json()["user"]["role"] == "viewer"
    status, out, _ = river_cli(host, capsys, "user", "quota", "clio", "--gpus", "2")
    assert status == 0 and "max_gpus=2" in out
    # Mistakes are one clear line and a non-zero status.
    status, _, err = river_cli(host, capsys, "token", "create", "nobody")
    assert status == 1 and "no user 'nobody'" in err


def test_river_login_magic(
    host: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from river_magics.magics import RiverMagics

    new_user(host, "magician", password="magician-pass-1")
    magics = RiverMagics(shell=None)
    # Asked for the name (input) and the password (getpass), traded for a token.
    monkeypatch.setattr("builtins.input", lambda prompt="": "magician")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "magician-pass-1")
    magics.river(f"login {host.url}")
    assert "Logged in as magician (user)" in capsys.readouterr().out
    assert magics.client.me()["name"] == "magician"
    labels = [t["label"] for t in magics.client.tokens()]
    assert "notebook" in labels
    # --token: no prompt at all.
    monkeypatch.setattr("getpass.getpass", lambda prompt="": pytest.fail("prompted"))
    magics.river(f"login {host.url} --token {host.token}")
    assert "Logged in as admin (admin)" in capsys.readouterr().out
    magics.client.close()


def test_the_generic_proxy_of_jupyter_server_proxy_is_off(host: Cluster) -> None:
    """Its /proxy/<port> checks only login: any viewer could reach any port on the host."""
    token = new_user(host, "peeker", role="viewer")
    response = as_token(host, token, "GET", f"/proxy/{host.port}/api/status")
    assert response.status_code == 404
