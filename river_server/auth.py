"""Who is calling: River users behind Jupyter's identity layer, and runner credentials.

Secrets are stored only as SHA3-512 digests (API tokens, runner credentials) or bcrypt
hashes (passwords); the clear value is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tornado import web

from river_server import db

ROLES = ("viewer", "user", "operator", "admin")


def hash_secret(secret: str) -> str:
    return hashlib.sha3_512(secret.encode()).hexdigest()


def new_secret(prefix: str = "rvr") -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def secrets_match(secret: str, digest: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), digest)


def role_at_least(role: str, minimum: str) -> bool:
    return ROLES.index(role) >= ROLES.index(minimum)


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
    row = session.scalar(select(db.ApiToken).where(db.ApiToken.token_hash == hash_secret(token)))
    if row is None or row.revoked or (row.expires_at and row.expires_at < time.time()):
        return None
    return session.get(db.User, row.user_id)


class RiverIdentityProvider(IdentityProvider):
    """Jupyter identity backed by River's user table.

    `Authorization: token T` with a River API token identifies that River user. The Jupyter
    server token (the embedded cluster's bootstrap secret) identifies the configured admin,
    so requests made with it have a stable owner instead of a random anonymous one.
    """

    def _river(self, handler: web.RequestHandler) -> Any | None:
        return handler.settings.get("river")

    async def get_user_token(self, handler: web.RequestHandler) -> User | None:
        river = self._river(handler)
        token = self.get_token(handler)
        if river is None or not token:
            return await super().get_user_token(handler)
        with river.sessions() as session:
            user = user_for_token(session, token)
            if user is not None:
                return _jupyter_user(user.name, user.role)
        server_token = getattr(handler, "token", None)
        if server_token and hmac.compare_digest(token, server_token):
            return _jupyter_user(river.config.admin_user, "admin")
        return None

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
