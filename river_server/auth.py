"""Who is calling: River users behind Jupyter's identity layer, and runner credentials.

Secrets are stored only as SHA3-512 digests (API tokens, invitation codes, runner
credentials) or bcrypt hashes (passwords); the clear value is shown once, when it is made.

- `RiverIdentityProvider` identifies requests: `Authorization: token T` with a River API
  token (or the Jupyter server token, which acts as the configured admin), or the login
  cookie that River's password login form sets.
- `RiverAuthorizer` keeps the host's own Jupyter powers (kernels, terminals, files) for
  admins: any other River user may open JupyterLab and use River, nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
from typing import Any

import bcrypt
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.auth.login import LoginFormHandler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tornado import web
from tornado.escape import url_escape
from tornado.httputil import url_concat
from traitlets import Type

from river_runner.protocol import same_secret
from river_server import db

ROLES = ("viewer", "user", "operator", "admin")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def hash_secret(secret: str) -> str:
    return hashlib.sha3_512(secret.encode()).hexdigest()


def new_secret(prefix: str = "rvr") -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def secrets_match(secret: str, digest: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), digest)


def role_at_least(role: str, minimum: str) -> bool:
    return ROLES.index(role) >= ROLES.index(minimum)


# ---- passwords ----------------------------------------------------------------------------


def _prehash(password: str) -> bytes:
    """bcrypt reads at most 72 bytes: hash first so long passphrases count in full."""
    return base64.b64encode(hashlib.sha256(password.encode()).digest())


def check_password_rules(password: Any) -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise ValueError(f"a password is a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    """bcrypt hash (random salt, cost 12) of the SHA-256 of the password."""
    check_password_rules(password)
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt()).decode()


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the user does not exist, so timing does not reveal user names.
    Made on first use, not at import: a cost-12 hash is ~0.25 s of CPU that every host
    start (and every test host) would otherwise pay."""
    return bcrypt.hashpw(b"river-no-such-user", bcrypt.gensalt()).decode()


def password_matches(password: str, hashed: str | None) -> bool:
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        return False
    try:
        ok = bcrypt.checkpw(_prehash(password), (hashed or _dummy_hash()).encode())
    except ValueError:
        return False
    return ok and hashed is not None


class LoginThrottle:
    """Slows password guessing: at most `limit` guesses for one name are checked within
    `window` seconds. Guesses still being checked count too, so N parallel requests cannot
    all slip past the count before the first failure is recorded."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()  # the SSH proxy calls this from its threads

    def configure(self, limit: int, window: float) -> None:
        self.limit, self.window = max(1, int(limit)), max(1.0, float(window))

    def _recent(self, name: str) -> list[float]:
        cutoff = time.monotonic() - self.window
        recent = [t for t in self._failures.get(name, []) if t > cutoff]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return recent

    def _wait(self, name: str) -> float:
        recent = self._recent(name)
        if len(recent) + self._in_flight.get(name, 0) < self.limit:
            return 0.0
        if len(recent) < self.limit:  # full of guesses still being checked
            return 1.0
        return max(1.0, recent[0] + self.window - time.monotonic())

    def blocked(self, name: str) -> float:
        """Seconds until `name` may try again (0: now)."""
        with self._lock:
            return self._wait(name)

    def begin(self, name: str) -> float:
        """Reserve one guess for `name`: 0 when it may be checked now (then call `end`),
        else the seconds to wait. Reserving and counting happen under one lock."""
        with self._lock:
            wait = self._wait(name)
            if not wait:
                self._in_flight[name] = self._in_flight.get(name, 0) + 1
                if len(self._in_flight) > 10_000:  # bounded memory under a spray of names
                    self._in_flight.pop(next(iter(self._in_flight)))
            return wait

    def end(self, name: str, ok: bool) -> None:
        """The guess `begin` reserved has been checked."""
        with self._lock:
            left = self._in_flight.get(name, 0) - 1
            if left > 0:
                self._in_flight[name] = left
            else:
                self._in_flight.pop(name, None)
            self._record(name, ok)

    def _record(self, name: str, ok: bool) -> None:
        if ok:
            self._failures.pop(name, None)
            return
        self._failures.setdefault(name, []).append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded memory under a spray of names
            self._failures.pop(next(iter(self._failures)))

    def failed(self, name: str) -> None:
        with self._lock:
            self._record(name, False)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._record(name, True)


LOGIN_THROTTLE = LoginThrottle()


def verify_login(sessions: sessionmaker[Session], name: str, password: str) -> db.User | None:
    """The user whose name and password these are, or None. Blocking (bcrypt, ~0.2 s):
    call it from a thread in request handlers."""
    with sessions() as session:
        user = session.scalar(select(db.User).where(db.User.name == name))
    # A JupyterHub account logs in through the Hub only (river_server/hub.py).
    hashed = user.password_hash if user is not None and user.origin != "hub" else None
    if password_matches(password, hashed):
        return user
    return None


# ---- users and tokens ---------------------------------------------------------------------


class RiverUser(User):
    """A Jupyter user that carries its River role, its user ID and what identified it
    (`binding`: "password", "token:<id>", "server", or "" for a header token), which is
    what a login cookie made for this user is bound to."""

    role: str = "user"
    user_id: int = 0
    binding: str = ""


def name_was_retired(session: Session, name: str) -> bool:
    """Whether `name` belonged to an account that was deleted (never to be reused)."""
    return session.get(db.RetiredUserName, name) is not None


def retired_name_message(name: str) -> str:
    return (
        f"the user name {name!r} was used before by an account that has been deleted; "
        "names are not reused (the old account's tasks and VPSes keep it): choose another name"
    )


def ensure_user(sessions: sessionmaker[Session], name: str, role: str) -> db.User:
    with sessions.begin() as session:
        user = session.scalar(select(db.User).where(db.User.name == name))
        if user is None:
            if name_was_retired(session, name):
                raise ValueError(retired_name_message(name))
            user = db.User(name=name, role=role)
            session.add(user)
            session.flush()
        return user


def create_token(
    sessions: sessionmaker[Session],
    user_name: str,
    label: str = "",
    expires_in: float | None = None,
) -> str:
    """Make an API token for a user; the clear token is returned once and never stored."""
    token = new_secret("rvt")
    with sessions.begin() as session:
        user = session.scalar(select(db.User).where(db.User.name == user_name))
        if user is None:
            raise KeyError(f"no user {user_name!r}")
        session.add(
            db.ApiToken(
                user_id=user.id,
                token_hash=hash_secret(token),
                label=label,
                expires_at=time.time() + expires_in if expires_in else None,
            )
        )
    return token


def token_is_active(row: db.ApiToken | None) -> bool:
    return not (row is None or row.revoked or (row.expires_at and row.expires_at < time.time()))


def active_token(session: Session, token: str) -> tuple[db.ApiToken, db.User] | None:
    """The token's row and user; None for unknown, revoked or expired tokens."""
    if not token.isascii():  # River's secrets are ASCII; anything else is not one of them
        return None
    row = session.scalar(select(db.ApiToken).where(db.ApiToken.token_hash == hash_secret(token)))
    if row is None or not token_is_active(row):
        return None
    user = session.get(db.User, row.user_id)
    return (row, user) if user is not None else None


def user_for_token(session: Session, token: str) -> db.User | None:
    """The token's user; None for unknown, revoked or expired tokens. Read from the DB on
    every request, so revoking a token takes effect at once."""
    found = active_token(session, token)
    return found[1] if found is not None else None


NON_ASCII_TOKEN = (
    "the token has characters that are not ASCII; River tokens are ASCII letters, digits, "
    "'-' and '_' (copy it again, without quotes or spaces)"
)


# ---- login sessions (the browser's cookie) ------------------------------------------------

DEFAULT_SESSION_LIFETIME = 7 * 86400.0


def session_fingerprint(user: db.User, binding_key: str) -> str:
    """What a login cookie is bound to. It changes when the password is set or changed
    (a new bcrypt salt), the role changes, or the account is replaced, so each of these
    ends every session made before; `binding_key` ties it to the credential that made it."""
    material = f"{user.id}|{user.name}|{user.role}|{user.password_hash or ''}|{binding_key}"
    return hashlib.sha3_256(material.encode()).hexdigest()


def binding_key(
    session: Session, user: db.User, binding: str, server_token: str | None, admin_user: str
) -> str | None:
    """The current key of a session's binding, or None when the credential that made the
    session is gone (token revoked or expired, server token changed or not the admin)."""
    if binding == "password":
        return "password" if user.password_hash is not None and user.origin != "hub" else None
    if binding == "hub":  # a login through the Hub's OAuth (river_server/hub_handlers.py)
        return "hub" if user.origin == "hub" else None
    if binding == "server":
        if not server_token or user.name != admin_user:
            return None
        return f"server:{hash_secret(server_token)}"
    if binding.startswith("token:"):
        try:
            row = session.get(db.ApiToken, int(binding[6:]))
        except ValueError:
            return None
        if row is None or row.user_id != user.id or not token_is_active(row):
            return None
        return binding
    return None


# ---- the browser login page ---------------------------------------------------------------

# The look of River's own pages (this login form and the sign-up page, join_page.py).
PAGE_STYLE = """<style>
body { font-family: system-ui, sans-serif; background: #f4f6f8; }
form { max-width: 22em; margin: 12vh auto; padding: 2em; background: white;
        border-radius: 8px; box-shadow: 0 1px 4px #0002; }
label { display: block; margin-top: 1em; }
input[type=text], input[type=password] { width: 100%; padding: .4em; box-sizing: border-box; }
button { margin-top: 1.5em; padding: .5em 1.5em; }
.error { color: #b00020; margin-top: 1em; }
.hint { color: #555; font-size: 90%; margin-top: 1.5em; }
</style>"""

_LOGIN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>River: log in</title>
{style}</head>
<body><form action="{action}" method="post" id="river-login">
<h2>River</h2>
{xsrf}
<label for="username_input">User name</label>
<input type="text" name="username" id="username_input" autocomplete="username" autofocus>
<label for="password_input">Password</label>
<input type="password" name="password" id="password_input" autocomplete="current-password">
<button type="submit" id="login_submit">Log in</button>
{hub}
{message}
<p class="hint">Leave the user name empty to log in with an API token or the server token
in the password field.</p>
</form></body></html>
"""


class RiverLoginHandler(LoginFormHandler):
    """Password login against River's user table (user name + password), or an API token /
    the server token in the password field with no user name. bcrypt runs off the event
    loop, and repeated failures for one name are throttled."""

    def _render(self, message: dict[str, str] | None = None) -> None:
        next_url = self.get_argument("next", default=self.base_url)
        action = f"{self.base_url}login?next={url_escape(next_url)}"
        text = ""
        if message:
            text = "".join(
                f'<div class="message {html.escape(k)}">{html.escape(v)}</div>'
                for k, v in message.items()
            )
        hub = ""
        if self.settings.get("river_hub") is not None:  # River is a JupyterHub service
            hub_url = url_concat(f"{self.base_url}river/hub/login", {"next": next_url})
            hub = (
                f'<p><a id="hub_login" href="{html.escape(hub_url, quote=True)}">'
                "Log in with JupyterHub</a></p>"
            )
        self.write(
            _LOGIN_PAGE.format(
                action=html.escape(action, quote=True),
                style=PAGE_STYLE,
                xsrf=self.xsrf_form_html(),
                hub=hub,
                message=text,
            )
        )

    @allow_unauthenticated
    async def post(self) -> None:
        name = self.get_argument("username", default="").strip()
        password = self.get_argument("password", default="")
        provider = self.identity_provider
        if not name and password and not password.isascii():
            self.set_status(401)
            self._render({"error": f"Not logged in: {NON_ASCII_TOKEN}"})
            return
        wait = LOGIN_THROTTLE.begin(name) if name else 0.0
        if wait:
            self.set_status(429)
            self._render({"error": f"Too many failed logins; try again in {wait:.0f} s"})
            return
        user = None
        try:
            user = await asyncio.to_thread(provider.login_user, self, name, password)
        finally:
            if name:
                LOGIN_THROTTLE.end(name, user is not None)
        if user is None:
            self.set_status(401)
            self._render({"error": "Invalid user name or password"})
            return
        self.current_user = user
        self.log.info("River user %s logged in", user.username)
        provider.set_login_cookie(self, user)
        self._redirect_safe(self.get_argument("next", default=self.base_url))


class RiverIdentityProvider(IdentityProvider):
    """Jupyter identity backed by River's user table.

    `Authorization: token T` with a River API token identifies that River user. The Jupyter
    server token (the embedded cluster's bootstrap secret) identifies the configured admin,
    so requests made with it have a stable owner instead of a random anonymous one. Browsers
    log in with a River user name and password (RiverLoginHandler), or open a link with
    `?token=` (`river up` prints one for the admin).

    Sessions: only a browser login (the form, or `?token=` in a URL) sets a login cookie; a
    request with an `Authorization` header never does, so a script's token leaves nothing
    behind. The cookie holds the user's ID, how they logged in (password, token ID, server
    token), a fingerprint of the account (password hash, role) and when it was made; all of
    it is checked against the DB on every request, so changing the password or the role,
    deleting the user, revoking the token the session came from, or restarting `river up`
    with a new server token ends the session at once. Sessions last
    `c.RiverHost.session_lifetime` seconds.
    """

    login_handler_class = Type(
        default_value=RiverLoginHandler,
        klass=web.RequestHandler,
        config=True,
        help="The login handler class to use.",
    )

    def _river(self, handler: web.RequestHandler) -> Any | None:
        return handler.settings.get("river")

    def _server_token(self, handler: web.RequestHandler) -> str:
        return getattr(handler, "token", None) or self.token or ""

    def _lifetime(self, river: Any) -> float:
        return float(getattr(river.config, "session_lifetime", DEFAULT_SESSION_LIFETIME))

    def presented_token(self, handler: web.RequestHandler) -> tuple[str, str]:
        """(token, "header" | "query" | ""). The Authorization header first, then `?token=`
        (Jupyter's order is the other way round). Behind /river/proxy/ the query's token
        belongs to the app in the VPS (its own Jupyter's), and River's credential travels in
        the header."""
        match = self.auth_header_pat.match(handler.request.headers.get("Authorization", ""))
        if match:
            return match.group(2).strip(), "header"
        token = handler.get_argument("token", "")
        return (token, "query") if token else ("", "")

    def get_token(self, handler: web.RequestHandler) -> str | None:
        return self.presented_token(handler)[0]

    async def get_user(self, handler: web.RequestHandler) -> User | None:  # type: ignore[override]
        river = self._river(handler)
        if river is None:
            return await super()._get_user(handler)
        current = getattr(handler, "_jupyter_current_user", None)
        if current:
            return current
        token, source = self.presented_token(handler)
        if token and not token.isascii():
            # The reason phrase too: some extensions' pages cannot render an error body.
            raise web.HTTPError(
                401, f"Not logged in: {NON_ASCII_TOKEN}", reason="Token Is Not ASCII"
            )
        if token:
            # On a DB reader: every API request passes here (river_server/dbwork.py).
            user = await river.db.read(self._user_for_any_token, river, handler, token)
            if user is None and handler.settings.get("river_hub") is not None:
                user = await self._user_for_hub_token(handler.settings["river_hub"], token)
            if user is not None:
                handler._token_authenticated = True  # type: ignore[attr-defined]
                if source == "query":
                    # A link such as `river up`'s /lab?token=...: the browser that opened
                    # it keeps a session bound to that token (revoking it ends the session).
                    self.set_login_cookie(handler, user)
                return user
        user = self._user_from_cookie(river, handler)
        if user is None and handler.get_cookie(self.get_cookie_name(handler)) is not None:
            self.clear_login_cookie(handler)
        return user

    async def get_user_token(self, handler: web.RequestHandler) -> User | None:
        river = self._river(handler)
        token = self.get_token(handler)
        if river is None or not token:
            return await super().get_user_token(handler)
        return self._user_for_any_token(river, handler, token)

    def _user_for_any_token(
        self, river: Any, handler: web.RequestHandler, token: str
    ) -> RiverUser | None:
        with river.sessions() as session:
            found = active_token(session, token)
            if found is not None:
                row, user = found
                return _jupyter_user(user.name, user.role, user.id, f"token:{row.id}")
            server_token = self._server_token(handler)
            if server_token and same_secret(token, server_token):
                admin = session.scalar(
                    select(db.User).where(db.User.name == river.config.admin_user)
                )
                if admin is None:
                    self.log.error(
                        "the server token acts as %r, which is not a River user",
                        river.config.admin_user,
                    )
                    return None
                return _jupyter_user(admin.name, admin.role, admin.id, "server")
        return None

    async def _user_for_hub_token(self, hub: Any, token: str) -> RiverUser | None:
        """A token River does not know, checked at the JupyterHub (river_server/hub.py);
        the Hub user it names acts here (their account made on first sight)."""
        from river_server.hub import HubIdentityError

        try:
            return await hub.user_for_token(token)
        except HubIdentityError as exc:
            raise web.HTTPError(exc.status, exc.message, reason="JupyterHub User Refused") from None
        except web.HTTPError as exc:  # HubAuth's own: the Hub did not answer as it should
            self.log.error("River: checking a token at the JupyterHub failed: %s", exc)
            raise web.HTTPError(
                503,
                "the JupyterHub that vouches for this token did not answer; try again later",
                reason="JupyterHub Unavailable",
            ) from None

    def login_user(self, handler: web.RequestHandler, name: str, password: str) -> User | None:
        """Check a login form's fields (blocking: bcrypt). With a user name: that user's
        password. Without: the password field may hold an API token or the server token."""
        river = self._river(handler)
        if river is None:
            return None
        if not name:
            return self._user_for_any_token(river, handler, password) if password else None
        user = verify_login(river.sessions, name, password)
        if user is None:
            return None
        return _jupyter_user(user.name, user.role, user.id, "password")

    def process_login_form(self, handler: web.RequestHandler) -> User | None:
        return self.login_user(
            handler,
            handler.get_argument("username", default="").strip(),
            handler.get_argument("password", default=""),
        )

    # ---- the login cookie -------------------------------------------------------------
    def set_login_cookie(self, handler: web.RequestHandler, user: User) -> None:
        """A session bound to the credential that identified `user`; nothing for a user
        that has no binding (e.g. identified by an Authorization header)."""
        river = self._river(handler)
        if river is None:
            super().set_login_cookie(handler, user)
            return
        binding = getattr(user, "binding", "")
        if not isinstance(user, RiverUser) or not binding or binding == "header":
            return
        with river.sessions() as session:
            row = session.get(db.User, user.user_id)
            key = (
                binding_key(
                    session, row, binding, self._server_token(handler), river.config.admin_user
                )
                if row is not None
                else None
            )
        if row is None or key is None:
            return
        value = json.dumps(
            {"uid": row.id, "b": binding, "fp": session_fingerprint(row, key), "iat": time.time()}
        )
        options = dict(self.cookie_options)
        options.setdefault("httponly", True)
        options.setdefault("samesite", "Lax")
        secure = self.secure_cookie
        if secure is None:
            secure = handler.request.protocol == "https"
        if secure:
            options.setdefault("secure", True)
        options.setdefault("path", handler.base_url)  # type: ignore[attr-defined]
        options["expires_days"] = self._lifetime(river) / 86400
        handler.set_secure_cookie(self.get_cookie_name(handler), value, **options)

    def _user_from_cookie(self, river: Any, handler: web.RequestHandler) -> RiverUser | None:
        lifetime = self._lifetime(river)
        raw = handler.get_secure_cookie(
            self.get_cookie_name(handler),
            **{"max_age_days": lifetime / 86400 + 1, **self.get_secure_cookie_kwargs},
        )
        if not raw:
            return None
        try:
            data = json.loads(raw)
            uid, binding, fingerprint = int(data["uid"]), str(data["b"]), str(data["fp"])
            issued = float(data["iat"])
        except (ValueError, KeyError, TypeError):
            return None  # e.g. a cookie of an older River (it held only the user name)
        now = time.time()
        if not issued <= now + 60 or issued + lifetime < now:
            return None
        with river.sessions() as session:
            row = session.get(db.User, uid)
            if row is None:
                return None
            key = binding_key(
                session, row, binding, self._server_token(handler), river.config.admin_user
            )
            if key is None or not hmac.compare_digest(
                fingerprint.encode(), session_fingerprint(row, key).encode()
            ):
                return None
        if binding == "hub":
            hub = handler.settings.get("river_hub")
            if hub is None or not hub.session_valid(issued):
                return None  # log in through the Hub again: the role is re-read there
        return _jupyter_user(row.name, row.role, row.id, binding)

    def get_user_cookie(self, handler: web.RequestHandler) -> Any:
        river = self._river(handler)
        if river is None:
            return super().get_user_cookie(handler)
        return self._user_from_cookie(river, handler)


def _jupyter_user(name: str, role: str, user_id: int = 0, binding: str = "") -> RiverUser:
    user = RiverUser(username=name, name=name, display_name=name)
    user.role = role
    user.user_id = user_id
    user.binding = binding
    return user


def user_role(user: Any) -> str:
    return getattr(user, "role", "user") if user is not None else "viewer"


# ---- what the host's own Jupyter server lets River users do -------------------------------

# Resources of the host's Jupyter server that run code or touch its files: admins only.
ADMIN_ONLY_RESOURCES = frozenset(
    {"kernels", "terminals", "contents", "files", "sessions", "nbconvert", "server"}
)
# Of the rest, non-admins may read, and only write where that is harmless.
WRITABLE_BY_ANYONE = frozenset({"csp"})


class RiverAuthorizer(Authorizer):
    """Kernels, terminals, file access (and shutdown) on the host server are for River
    admins; other users may load JupyterLab and read its settings, and do everything else
    through River's API, which checks roles and ownership itself."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        role = user_role(user) if isinstance(user, RiverUser) else None
        if role is None:
            # A user River does not know (e.g. an identity provider other than River's):
            # refuse everything rather than guess.
            return False
        if role == "admin":
            return True
        if resource == "terminals" and self._owns_vps_terminal(handler, user):
            return True
        if resource in ADMIN_ONLY_RESOURCES:
            return False
        return action == "read" or resource in WRITABLE_BY_ANYONE

    @staticmethod
    def _owns_vps_terminal(handler: Any, user: RiverUser) -> bool:
        """A terminal the host made into the user's VPS (POST /river/api/vps/{id}/terminal):
        its owner may read, use and close that one terminal; listing and creating terminals
        stay admin-only."""
        river = getattr(handler, "settings", {}).get("river")
        args = getattr(handler, "path_args", None) or []
        if river is None or not args:
            return False
        return river.vps.terminal_owner(str(args[0])) == user.username


USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_user_name(name: Any) -> str:
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise ValueError(
            "a user name is 1 to 64 letters, digits and . _ @ -, starting with a letter or digit"
        )
    return name
