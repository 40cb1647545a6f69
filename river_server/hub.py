"""River as a JupyterHub service: the Hub's users are River's users (issue #18).

The Hub is trusted for *who* someone is; River stays the only place that decides what
they may do. Two ways in, both through the jupyterhub package's own client (HubOAuth), so
River never hand-writes OAuth or token checks:

- a browser goes through the Hub's OAuth (river_server/hub_handlers.py) and comes back
  with River's own login cookie, bound to a Hub account;
- a request with `Authorization: token T` that is not a River token is checked at the
  Hub's /hub/api/user (cached `cache_seconds`, so a revoked or expired Hub token stops
  working within that time). The token must carry `access:services!service=<name>`.

Accounts: a Hub user becomes a River user of the same name on first sight (origin "hub",
no password). The role comes from the Hub on every login and every (uncached) token check:
the admin flag, then the configured group -> role map (highest wins), else `user`. A Hub
identity never takes over a local account of the same name, nor a deleted account's name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from river_server import db
from river_server.auth import (
    ROLES,
    USER_NAME,
    RiverUser,
    _jupyter_user,
    name_was_retired,
    retired_name_message,
)

HUB_ORIGIN = "hub"
HUB_BINDING = "hub"


class HubIdentityError(Exception):
    """A Hub identity River refuses (with the status and a message that says why)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class HubSettings:
    """What River needs to trust a Hub (c.RiverHost.hub_* traits)."""

    api_url: str  # e.g. http://127.0.0.1:8081/hub/api (the Hub's internal API)
    api_token: str  # the service's token, from $JUPYTERHUB_API_TOKEN
    public_url: str  # the Hub as browsers reach it, e.g. https://hub.lab.example
    service_name: str = "river"
    cache_seconds: int = 30
    admin_role: str = "admin"
    group_roles: dict[str, str] = field(default_factory=dict)
    session_lifetime: float = 3600.0

    @property
    def access_scope(self) -> str:
        return f"access:services!service={self.service_name}"


def check_role_map(admin_role: str, group_roles: dict[str, str]) -> None:
    """Refuse at start a mapping to a role River does not have."""
    for where, role in [("hub_admin_role", admin_role), *group_roles.items()]:
        if role not in ROLES:
            raise ValueError(
                f"c.RiverHost.hub_group_roles / hub_admin_role: {where!r} maps to {role!r}; "
                f"a River role is one of {', '.join(ROLES)}"
            )


def role_for(model: dict[str, Any], admin_role: str, group_roles: dict[str, str]) -> str:
    """The River role of a Hub user model: the highest of what its admin flag and groups
    map to, `user` when nothing maps."""
    candidates = ["user"]
    if model.get("admin"):
        candidates.append(admin_role)
    for group in model.get("groups") or []:
        if group in group_roles:
            candidates.append(group_roles[group])
    return max(candidates, key=ROLES.index)


def hub_account(sessions: sessionmaker[Session], name: str, role: str) -> tuple[int, str, str]:
    """(id, name, role) of the River account of Hub user `name`, made on first sight and
    given `role`. Raises HubIdentityError for a name River cannot or must not use."""
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise HubIdentityError(
            403,
            f"the JupyterHub user name {name!r} is not a valid River user name (1 to 64 "
            "letters, digits and . _ @ -, starting with a letter or digit); ask the Hub's "
            "admin to rename the account",
        )
    for _ in range(2):  # a second try when a parallel first sight made the row first
        try:
            with sessions.begin() as session:
                user = session.scalar(select(db.User).where(db.User.name == name))
                if user is None:
                    if name_was_retired(session, name):
                        raise HubIdentityError(403, f"JupyterHub user refused: "
                                               f"{retired_name_message(name)}")
                    user = db.User(name=name, role=role, origin=HUB_ORIGIN)
                    session.add(user)
                    session.flush()
                elif user.origin != HUB_ORIGIN:
                    raise HubIdentityError(
                        403,
                        f"JupyterHub user {name!r} refused: River has a local account of that "
                        "name, which a Hub login never takes over. An admin renames one of the "
                        "two accounts (or deletes the local one, whose name is then retired)",
                    )
                elif user.role != role:
                    user.role = role
                return user.id, user.name, user.role
        except IntegrityError:
            continue
    raise HubIdentityError(409, f"the account {name!r} is being made; try again")


def current_account(sessions: sessionmaker[Session], name: str) -> tuple[int, str, str] | None:
    """(id, name, role) of an existing Hub account, read only (the common case of a token
    check: nothing to write)."""
    with sessions() as session:
        user = session.scalar(select(db.User).where(db.User.name == name))
        if user is None or user.origin != HUB_ORIGIN:
            return None
        return user.id, user.name, user.role


class HubIdentity:
    """The Hub as an identity source: token checks (cached) and the account they map to.
    Database work goes through the host's DbWork (`work.read` / `work.write`)."""

    def __init__(self, settings: HubSettings, sessions: sessionmaker[Session], work: Any,
                 base_url: str, redirect_uri: str) -> None:
        check_role_map(settings.admin_role, settings.group_roles)
        self.settings = settings
        self.sessions = sessions
        self.work = work
        public = urlparse(settings.public_url)
        api_path = urlparse(settings.api_url).path.rstrip("/")
        self.oauth = HubOAuth(
            api_token=settings.api_token,
            api_url=settings.api_url.rstrip("/"),
            hub_host=f"{public.scheme}://{public.netloc}",
            hub_prefix=api_path.removesuffix("/api") + "/",
            base_url=base_url,
            oauth_client_id=f"service-{settings.service_name}",
            oauth_redirect_uri=redirect_uri,
            access_scopes={settings.access_scope},
            cache_max_age=max(0, int(settings.cache_seconds)),
        )

    def has_access(self, model: dict[str, Any] | None) -> bool:
        """Whether the Hub's answer names a user whose token may use this service."""
        if not model or model.get("kind", "user") != "user" or not model.get("name"):
            return False
        return bool(self.oauth.check_scopes({self.settings.access_scope}, model))

    async def model_for_token(self, token: str, use_cache: bool = True) -> dict[str, Any] | None:
        """The Hub's user model for a token (None: not a Hub token, or one without access
        to River). Cached cache_seconds, answers 'no' included."""
        model = await self.oauth.user_for_token(token, use_cache=use_cache, sync=False)
        return model if self.has_access(model) else None

    async def user_for_model(self, model: dict[str, Any], binding: str = "") -> RiverUser:
        """The River user of a Hub user model (made or re-roled as needed)."""
        name = model["name"]
        role = role_for(model, self.settings.admin_role, self.settings.group_roles)
        found = await self.work.read(current_account, self.sessions, name)
        if found is None or found[2] != role:
            found = await self.work.write(hub_account, self.sessions, name, role)
        user_id, name, role = found
        return _jupyter_user(name, role, user_id, binding)

    async def user_for_token(self, token: str) -> RiverUser | None:
        """The River user a Hub token acts as; None when the Hub does not vouch for it."""
        model = await self.model_for_token(token)
        if model is None:
            return None
        return await self.user_for_model(model)

    def session_valid(self, issued: float) -> bool:
        """Hub logins are re-checked at the Hub every session_lifetime seconds, so a
        changed group (role) or a removed Hub user reaches River's sessions too."""
        return issued + self.settings.session_lifetime >= time.time()
