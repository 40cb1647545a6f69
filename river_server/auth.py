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
import hashlib
import hmac
import html
import re
import secrets
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
from traitlets import Type

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


# Checked against when the user does not exist, so timing does not reveal user names.
_DUMMY_HASH = bcrypt.hashpw(b"river-no-such-user", bcrypt.gensalt()).decode()


def password_matches(password: str, hashed: str | None) -> bool:
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        return False
    try:
        ok = bcrypt.checkpw(_prehash(password), (hashed or _DUMMY_HASH).encode())
    except ValueError:
        return False
    return ok and hashed is not None


class LoginThrottle:
    """Slows password guessing: after `limit` failures for one name within `window`
    seconds, that name is refused until the window has passed."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def _recent(self, name: str) -> list[float]:
        cutoff = time.monotonic() - self.window
        recent = [t for t in self._failures.get(name, []) if t > cutoff]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return recent

    def blocked(self, name: str) -> float:
        """Seconds until `name` may try again (0: now)."""
        recent = self._recent(name)
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, recent[0] + self.window - time.monotonic())

    def failed(self, name: str) -> None:
        self._failures.setdefault(name, []).append(time.monotonic())
        if len(self._failures) > 10_000:  # bounded memory under a spray of names
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)


LOGIN_THROTTLE = LoginThrottle()


def verify_login(sessions: sessionmaker[Session], name: str, password: str) -> db.User | None:
    """The user whose name and password these are, or None. Blocking (bcrypt, ~0.2 s):
    call it from a thread in request handlers."""
    with sessions() as session:
        user = session.scalar(select(db.User).where(db.User.name == name))
    hashed = user.password_hash if user is not None else None
    if password_matches(password, hashed):
        return user
    return None


# ---- users and tokens ---------------------------------------------------------------------


class RiverUser(User):
    """A Jupyter user that carries its River role."""

    role: str = "user"


def ensure_user(sessions: sessionmaker[Session], name: str, role: str) -> db.User:
    with sessions.begin() as session:
        user = session.scalar(select(db.User).where(db.User.name == name))
        if user is None:
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


def user_for_token(session: Session, token: str) -> db.User | None:
    """The token's user; None for unknown, revoked or expired tokens. Read from the DB on
    every request, so revoking a token takes effect at once."""
    row = session.scalar(select(db.ApiToken).where(db.ApiToken.token_hash == hash_secret(token)))
    if row is None or row.revoked or (row.expires_at and row.expires_at < time.time()):
        return None
    return session.get(db.User, row.user_id)


# ---- the browser login page ---------------------------------------------------------------

_LOGIN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>River: log in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f6f8; }}
form {{ max-width: 22em; margin: 12vh auto; padding: 2em; background: white;
        border-radius: 8px; box-shadow: 0 1px 4px #0002; }}
label {{ display: block; margin-top: 1em; }}
input[type=text], input[type=password] {{ width: 100%; padding: .4em; box-sizing: border-box; }}
button {{ margin-top: 1.5em; padding: .5em 1.5em; }}
.error {{ color: #b00020; margin-top: 1em; }}
.hint {{ color: #555; font-size: 90%; margin-top: 1.5em; }}
</style></head>
<body><form action="{action}" method="post" id="river-login">
<h2>River</h2>
{xsrf}
<label for="username_input">User name</label>
<input type="text" name="username" id="username_input" autocomplete="username" autofocus>
<label for="password_input">Password</label>
<input type="password" name="password" id="password_input" autocomplete="current-password">
<button type="submit" id="login_submit">Log in</button>
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
        self.write(
            _LOGIN_PAGE.format(
                action=html.escape(action, quote=True),
                xsrf=self.xsrf_form_html(),
                message=text,
            )
        )

    @allow_unauthenticated
    async def post(self) -> None:
        name = self.get_argument("username", default="").strip()
        password = self.get_argument("password", default="")
        provider = self.identity_provider
        wait = LOGIN_THROTTLE.blocked(name) if name else 0.0
        if wait:
            self.set_status(429)
            self._render({"error": f"Too many failed logins; try again in {wait:.0f} s"})
            return
        user = await asyncio.to_thread(provider.login_user, self, name, password)
        if user is None:
            if name:
                LOGIN_THROTTLE.failed(name)
            self.set_status(401)
            self._render({"error": "Invalid user name or password"})
            return
        if name:
            LOGIN_THROTTLE.succeeded(name)
        self.current_user = user
        self.log.info("River user %s logged in", user.username)
        provider.set_login_cookie(self, user)
        self._redirect_safe(self.get_argument("next", default=self.base_url))


class RiverIdentityProvider(IdentityProvider):
    """Jupyter identity backed by River's user table.

    `Authorization: token T` with a River API token identifies that River user. The Jupyter
    server token (the embedded cluster's bootstrap secret) identifies the configured admin,
    so requests made with it have a stable owner instead of a random anonymous one. Browsers
    log in with a River user name and password (RiverLoginHandler); the login cookie holds
    the user name and the role is read from the DB on every request, so a role change or a
    deleted account takes effect at once.
    """

    login_handler_class = Type(
        default_value=RiverLoginHandler,
        klass=web.RequestHandler,
        config=True,
        help="The login handler class to use.",
    )

    def _river(self, handler: web.RequestHandler) -> Any | None:
        return handler.settings.get("river")

    def get_token(self, handler: web.RequestHandler) -> str | None:
        """The Authorization header first, then `?token=` (Jupyter's order is the other
        way round). Behind /river/proxy/ the query's token belongs to the app in the VPS
        (its own Jupyter's), and River's credential travels in the header."""
        match = self.auth_header_pat.match(handler.request.headers.get("Authorization", ""))
        if match:
            return match.group(2)
        return handler.get_argument("token", "")

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
            user = user_for_token(session, token)
            if user is not None:
                return _jupyter_user(user.name, user.role)
        server_token = getattr(handler, "token", None) or self.token
        if server_token and hmac.compare_digest(token, server_token):
            return _jupyter_user(river.config.admin_user, "admin")
        return None

    def login_user(self, handler: web.RequestHandler, name: str, password: str) -> User | None:
        """Check a login form's fields (blocking: bcrypt). With a user name: that user's
        password. Without: the password field may hold an API token or the server token."""
        river = self._river(handler)
        if river is None:
            return None
        if not name:
            return self._user_for_any_token(river, handler, password) if password else None
        user = verify_login(river.sessions, name, password)
        return _jupyter_user(user.name, user.role) if user is not None else None

    def process_login_form(self, handler: web.RequestHandler) -> User | None:
        return self.login_user(
            handler,
            handler.get_argument("username", default="").strip(),
            handler.get_argument("password", default=""),
        )

    def get_user_cookie(self, handler: web.RequestHandler) -> Any:
        user = super().get_user_cookie(handler)
        river = self._river(handler)
        if river is None or user is None or isinstance(user, RiverUser):
            return user
        return self._with_role(river, user)

    def _with_role(self, river: Any, user: Any) -> Any:
        async def lookup() -> User | None:
            resolved = await user if hasattr(user, "__await__") else user
            if resolved is None:
                return None
            with river.sessions() as session:
                row = session.scalar(select(db.User).where(db.User.name == resolved.username))
            return _jupyter_user(row.name, row.role) if row else None

        return lookup()

    def user_to_cookie(self, user: User) -> str:
        return user.username

    def user_from_cookie(self, cookie_value: str) -> User | None:
        return User(username=cookie_value)


def _jupyter_user(name: str, role: str) -> RiverUser:
    user = RiverUser(username=name, name=name, display_name=name)
    user.role = role
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
