"""The sign-up page an invitation link opens: `/river/join?code=CODE` (docs/accounts.md).

An invitation's link used to point at the JSON redeem API, which a browser cannot use. This
page is the browser's way in, so it is public (route_policy.py) and server-rendered like the
login form (same look, XSRF form field, every value html-escaped). Its POST redeems through
the same service call as `POST /river/api/invitations/redeem` (Accounts.redeem: the same
checks, messages and statuses), then logs the new user in with the login form's own cookie
and sends them to the lab. It says nothing about an invitation beyond what redeem says:
whether the code works, never who made it or for which role.
"""

from __future__ import annotations

import asyncio
import functools
import html
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from river_server import db
from river_server.accounts import AccountError, Accounts
from river_server.auth import PAGE_STYLE, RiverUser, _jupyter_user

JOIN_ROUTE = r"/river/join"

_JOIN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>River: join</title>
{style}</head>
<body><form action="{action}" method="post" id="river-join">
<h2>River: make your account</h2>
{xsrf}
<input type="hidden" name="code" value="{code}">
<label for="name_input">User name</label>
<input type="text" name="name" id="name_input" value="{name}" autocomplete="username" autofocus>
<label for="password_input">Password</label>
<input type="password" name="password" id="password_input" autocomplete="new-password">
<label for="repeat_input">Repeat the password</label>
<input type="password" name="repeat" id="repeat_input" autocomplete="new-password">
<button type="submit" id="join_submit">Make account and log in</button>
{message}
<p class="hint">This invitation link makes one River account; once it is made you are
logged in to JupyterLab.</p>
</form></body></html>
"""

NO_CODE = "This link has no invitation code; open the whole link you were sent."
MISMATCH = "The two passwords differ; type the same password twice."


def _identity(sessions: sessionmaker[Session], name: str) -> RiverUser | None:
    """The new account as the login form would identify it (a password login)."""
    with sessions() as session:
        user = session.scalar(select(db.User).where(db.User.name == name))
    if user is None:
        return None
    return _jupyter_user(user.name, user.role, user.id, "password")


class JoinPageHandler(JupyterHandler):
    """GET shows the form; POST makes the account and logs it in."""

    @property
    def accounts(self) -> Accounts:
        # The same service object the API's RedeemHandler uses (handlers/accounts.py).
        accounts = self.settings.get("river_accounts")
        if accounts is None:
            accounts = self.settings["river_accounts"] = Accounts(self.settings["river"].sessions)
        return accounts

    def _render(self, code: str, name: str = "", error: str = "") -> None:
        message = f'<div class="message error">{html.escape(error)}</div>' if error else ""
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")  # the code is in the page
        self.finish(
            _JOIN_PAGE.format(
                style=PAGE_STYLE,
                action=html.escape(f"{self.base_url}river/join", quote=True),
                xsrf=self.xsrf_form_html(),
                code=html.escape(code, quote=True),
                name=html.escape(name, quote=True),
                message=message,
            )
        )

    def _refuse(self, status: int, code: str, name: str, error: str) -> None:
        self.set_status(status)
        self._render(code, name, error)

    @allow_unauthenticated
    def get(self) -> None:
        code = self.get_argument("code", default="").strip()
        if not code:
            self._refuse(400, "", "", NO_CODE)
            return
        self._render(code)

    @allow_unauthenticated
    async def post(self) -> None:
        code = self.get_argument("code", default="").strip()
        name = self.get_argument("name", default="").strip()
        password = self.get_argument("password", default="")
        if not code:
            self._refuse(400, "", name, NO_CODE)
            return
        if password != self.get_argument("repeat", default=""):
            self._refuse(400, code, name, MISMATCH)
            return
        try:
            await asyncio.to_thread(functools.partial(self.accounts.redeem, code, name, password))
        except AccountError as exc:
            self._refuse(exc.status, code, name, str(exc))
            return
        user: Any = await asyncio.to_thread(_identity, self.settings["river"].sessions, name)
        if user is None:  # deleted in the instant since it was made
            self._refuse(409, code, name, f"user {name!r} was removed; ask for a new link")
            return
        self.current_user = user
        self.log.info("River user %s joined with an invitation", name)
        self.identity_provider.set_login_cookie(self, user)
        self.redirect(f"{self.base_url}lab")


def handlers() -> list[tuple[str, type]]:
    return [(JOIN_ROUTE, JoinPageHandler)]
