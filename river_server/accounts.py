"""Users, API tokens, invitations, groups and quotas: the rules, on the DB alone.

Both the REST handlers and the `river user|token|invite` commands (which open the host's
DB directly) go through this class, so the rules are the same from either side. Methods
that hash passwords block for ~0.2 s (bcrypt): handlers call them from a thread.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from river_server import db
from river_server.auth import (
    ROLES,
    check_password_rules,
    check_user_name,
    hash_password,
    hash_secret,
    name_was_retired,
    new_secret,
    password_matches,
    retired_name_message,
    role_at_least,
)

MAX_LABEL = 128
MAX_TOKEN_SECONDS = 10 * 365 * 86400
MAX_INVITE_USES = 10_000


class AccountError(Exception):
    """A request about accounts that can not be honoured; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _check_role(role: Any) -> str:
    if role not in ROLES:
        raise AccountError(400, f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def _check_name(name: Any, what: str = "user") -> str:
    try:
        return check_user_name(name)
    except ValueError as exc:
        raise AccountError(400, str(exc).replace("a user name", f"a {what} name")) from None


def _check_password(password: Any) -> str:
    try:
        return check_password_rules(password)
    except ValueError as exc:
        raise AccountError(400, str(exc)) from None


def _optional_count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise AccountError(400, f"'{field}' must be a whole number from 0 to 1000000, or null")
    return value


def _seconds(value: Any, field: str, maximum: float = MAX_TOKEN_SECONDS) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= maximum:
        raise AccountError(400, f"'{field}' must be a number of seconds from 1 to {maximum:.0f}")
    return float(value)


def _label(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_LABEL:
        raise AccountError(400, f"'label' must be a string of at most {MAX_LABEL} characters")
    return value


def token_json(row: db.ApiToken, user_name: str) -> dict[str, Any]:
    now = time.time()
    return {
        "id": str(row.id),
        "user": user_name,
        "label": row.label,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked": bool(row.revoked),
        "active": not row.revoked and not (row.expires_at and row.expires_at < now),
    }


def _invitation_open(row: db.Invitation) -> bool:
    return (
        not row.revoked
        and row.uses < row.max_uses
        and not (row.expires_at and row.expires_at < time.time())
    )


def invitation_json(row: db.Invitation) -> dict[str, Any]:
    now = time.time()
    return {
        "id": str(row.id),
        "role": row.role,
        "max_uses": row.max_uses,
        "uses": row.uses,
        "expires_at": row.expires_at,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "revoked": bool(row.revoked),
        "active": not row.revoked
        and row.uses < row.max_uses
        and not (row.expires_at and row.expires_at < now),
    }


class Accounts:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # ---- users ----------------------------------------------------------------------
    def _user(self, session: Session, name: str) -> db.User:
        user = session.scalar(select(db.User).where(db.User.name == name))
        if user is None:
            raise AccountError(404, f"no user {name!r}")
        return user

    def _user_json(self, session: Session, user: db.User) -> dict[str, Any]:
        groups = session.scalars(
            select(db.Group.name)
            .join(db.GroupMember, db.GroupMember.group_id == db.Group.id)
            .where(db.GroupMember.user_id == user.id)
            .order_by(db.Group.name)
        ).all()
        quota = session.get(db.UserQuota, user.id)
        return {
            "name": user.name,
            "role": user.role,
            "has_password": user.password_hash is not None,
            "created_at": user.created_at,
            "groups": list(groups),
            "quota": {
                "max_cores": quota.max_cores if quota else None,
                "max_gpus": quota.max_gpus if quota else None,
            },
        }

    def list_users(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            users = session.scalars(select(db.User).order_by(db.User.name)).all()
            return [self._user_json(session, u) for u in users]

    def get_user(self, name: str) -> dict[str, Any]:
        with self.sessions() as session:
            return self._user_json(session, self._user(session, name))

    def add_user(self, name: Any, role: Any = "user", password: Any = None) -> dict[str, Any]:
        name = _check_name(name)
        role = _check_role(role)
        hashed = hash_password(_check_password(password)) if password is not None else None
        with self.sessions.begin() as session:
            self._name_is_free(session, name, f"user {name!r} already exists")
            user = db.User(name=name, role=role, password_hash=hashed)
            session.add(user)
            try:
                session.flush()
            except IntegrityError:  # made at the same moment by another request
                raise AccountError(409, f"user {name!r} already exists") from None
            return self._user_json(session, user)

    def _name_is_free(self, session: Session, name: str, taken: str) -> None:
        if name_was_retired(session, name):
            raise AccountError(409, retired_name_message(name))
        if session.scalar(select(db.User.id).where(db.User.name == name)) is not None:
            raise AccountError(409, taken)

    def set_role(self, name: str, role: Any) -> dict[str, Any]:
        role = _check_role(role)
        with self.sessions.begin() as session:
            user = self._user(session, name)
            if user.role == "admin" and role != "admin":
                self._keep_an_admin(session, user)
            user.role = role
            return self._user_json(session, user)

    def _keep_an_admin(self, session: Session, leaving: db.User) -> None:
        admins = session.scalar(
            select(func.count()).select_from(db.User).where(db.User.role == "admin")
        )
        if admins <= 1:
            raise AccountError(409, f"{leaving.name!r} is the last admin; make another admin first")

    def set_password(
        self, name: str, password: Any, current: str | None = None, check_current: bool = False
    ) -> None:
        """Set a user's password; with check_current, `current` must match the old one."""
        password = _check_password(password)
        with self.sessions() as session:
            user = self._user(session, name)
            old = user.password_hash
            if user.origin == "hub":
                raise AccountError(
                    409,
                    f"{name!r} is a JupyterHub account: it logs in through the Hub, which "
                    "keeps its password; set it there",
                )
        # Someone with no password yet (e.g. the bootstrap admin) sets one without it.
        if check_current and old is not None and not password_matches(current or "", old):
            raise AccountError(403, "current_password does not match")
        hashed = hash_password(password)
        with self.sessions.begin() as session:
            self._user(session, name).password_hash = hashed

    def clear_password(self, name: str) -> None:
        with self.sessions.begin() as session:
            self._user(session, name).password_hash = None

    def delete_user(self, name: str) -> None:
        """Remove a user and their tokens (their tasks keep the owner name as history).
        The name is retired: a later account may not take it, and with it the old one's
        tasks, VPSes and SSH access. Their login sessions end (the user ID is gone)."""
        with self.sessions.begin() as session:
            user = self._user(session, name)
            if user.role == "admin":
                self._keep_an_admin(session, user)
            session.merge(
                db.RetiredUserName(name=user.name, user_id=user.id, retired_at=time.time())
            )
            session.execute(delete(db.ApiToken).where(db.ApiToken.user_id == user.id))
            session.execute(delete(db.GroupMember).where(db.GroupMember.user_id == user.id))
            session.execute(delete(db.UserQuota).where(db.UserQuota.user_id == user.id))
            session.delete(user)

    def set_user_quota(self, name: str, **limits: Any) -> dict[str, Any]:
        """limits: max_cores / max_gpus (None: unlimited); fields not given stay as they are."""
        with self.sessions.begin() as session:
            user = self._user(session, name)
            quota = session.get(db.UserQuota, user.id) or db.UserQuota(user_id=user.id)
            for field in ("max_cores", "max_gpus"):
                if field in limits:
                    setattr(quota, field, _optional_count(limits[field], field))
            if quota.max_cores is None and quota.max_gpus is None:
                if session.get(db.UserQuota, user.id) is not None:
                    session.delete(quota)
            else:
                session.add(quota)
            session.flush()
            return self._user_json(session, user)

    # ---- tokens ---------------------------------------------------------------------
    def create_token(
        self, user_name: str, label: Any = "", expires_in: Any = None
    ) -> tuple[str, dict[str, Any]]:
        """A new API token: (the clear token, shown once; its public record)."""
        label = _label(label)
        seconds = _seconds(expires_in, "expires_in")
        token = new_secret("rvt")
        with self.sessions.begin() as session:
            user = self._user(session, user_name)
            row = db.ApiToken(
                user_id=user.id,
                token_hash=hash_secret(token),
                label=label,
                created_at=time.time(),
                expires_at=time.time() + seconds if seconds else None,
            )
            session.add(row)
            session.flush()
            return token, token_json(row, user.name)

    def list_tokens(self, user_name: str | None = None) -> list[dict[str, Any]]:
        with self.sessions() as session:
            query = (
                select(db.ApiToken, db.User.name)
                .join(db.User, db.User.id == db.ApiToken.user_id)
                .order_by(db.ApiToken.id)
            )
            if user_name is not None:
                query = query.where(db.User.name == self._user(session, user_name).name)
            return [token_json(row, name) for row, name in session.execute(query).all()]

    def revoke_token(self, token_id: Any, owner: str | None = None) -> dict[str, Any]:
        """Revoke by ID; with `owner`, only that user's token (others look unknown: 404)."""
        try:
            number = int(token_id)
        except (TypeError, ValueError):
            raise AccountError(400, f"a token ID is a number, not {token_id!r}") from None
        with self.sessions.begin() as session:
            row = session.get(db.ApiToken, number) if 0 < number < 2**63 else None
            user = session.get(db.User, row.user_id) if row is not None else None
            if row is None or user is None or (owner is not None and user.name != owner):
                raise AccountError(404, f"no token {token_id}")
            row.revoked = True
            return token_json(row, user.name)

    # ---- invitations ----------------------------------------------------------------
    def create_invitation(
        self,
        created_by: str,
        creator_role: str,
        role: Any = "user",
        uses: Any = 1,
        expires_in: Any = 7 * 86400,
    ) -> tuple[str, dict[str, Any]]:
        """(clear code, shown once; record). Operators may invite at most `user`."""
        role = _check_role(role)
        if not role_at_least(creator_role, "operator"):
            raise AccountError(403, f"inviting needs the operator role; you are {creator_role}")
        if creator_role != "admin" and role_at_least(role, "operator"):
            raise AccountError(
                403, f"an operator may invite viewers and users, not {role}s; ask an admin"
            )
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_INVITE_USES:
            raise AccountError(400, f"'uses' must be a whole number from 1 to {MAX_INVITE_USES}")
        seconds = _seconds(expires_in, "expires_in")
        code = new_secret("rvi")
        with self.sessions.begin() as session:
            row = db.Invitation(
                code_hash=hash_secret(code),
                role=role,
                max_uses=uses,
                uses=0,
                expires_at=time.time() + seconds if seconds else None,
                created_by=created_by,
                created_at=time.time(),
            )
            session.add(row)
            session.flush()
            return code, invitation_json(row)

    def list_invitations(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(db.Invitation).order_by(db.Invitation.id)).all()
            return [invitation_json(r) for r in rows]

    def revoke_invitation(
        self, invitation_id: Any, by: str | None = None, by_role: str = "admin"
    ) -> dict[str, Any]:
        """Revoke; an operator may revoke only invitations they made."""
        try:
            number = int(invitation_id)
        except (TypeError, ValueError):
            raise AccountError(
                400, f"an invitation ID is a number, not {invitation_id!r}"
            ) from None
        with self.sessions.begin() as session:
            row = session.get(db.Invitation, number) if 0 < number < 2**63 else None
            if row is None:
                raise AccountError(404, f"no invitation {invitation_id}")
            if by_role != "admin" and row.created_by != by:
                raise AccountError(403, "an operator may revoke only invitations they made")
            row.revoked = True
            return invitation_json(row)

    def redeem(self, code: Any, name: Any, password: Any) -> dict[str, Any]:
        """Create the account an invitation code allows (one use of the code).

        The code is checked before the password is hashed (a wrong code costs no bcrypt),
        and the use is taken by one conditional UPDATE as the transaction's first statement,
        so parallel redemptions of a one-use code make one account, never two."""
        if not isinstance(code, str) or not code:
            raise AccountError(400, "'code' (the invitation code) is required")
        name = _check_name(name)
        password = _check_password(password)
        refused = AccountError(403, "this invitation code is unknown, used up, expired or revoked")
        if not code.isascii():
            raise refused
        with self.sessions() as session:
            row = session.scalar(
                select(db.Invitation).where(db.Invitation.code_hash == hash_secret(code))
            )
            if row is None or not _invitation_open(row):
                raise refused
            self._name_is_free(session, name, f"user {name!r} already exists; choose another name")
            invitation_id, role = row.id, row.role
        hashed = hash_password(password)
        with self.sessions.begin() as session:
            taken = session.execute(
                update(db.Invitation)
                .where(
                    db.Invitation.id == invitation_id,
                    db.Invitation.revoked.is_(False),
                    db.Invitation.uses < db.Invitation.max_uses,
                    or_(
                        db.Invitation.expires_at.is_(None), db.Invitation.expires_at >= time.time()
                    ),
                )
                .values(uses=db.Invitation.uses + 1)
            )
            if taken.rowcount != 1:
                raise refused
            self._name_is_free(session, name, f"user {name!r} already exists; choose another name")
            user = db.User(name=name, role=role, password_hash=hashed)
            session.add(user)
            try:
                session.flush()
            except IntegrityError:  # the same name redeemed at the same moment
                raise AccountError(
                    409, f"user {name!r} already exists; choose another name"
                ) from None
            return self._user_json(session, user)

    # ---- groups ---------------------------------------------------------------------
    def _group(self, session: Session, name: str) -> db.Group:
        group = session.scalar(select(db.Group).where(db.Group.name == name))
        if group is None:
            raise AccountError(404, f"no group {name!r}")
        return group

    def _group_json(self, session: Session, group: db.Group) -> dict[str, Any]:
        members = session.scalars(
            select(db.User.name)
            .join(db.GroupMember, db.GroupMember.user_id == db.User.id)
            .where(db.GroupMember.group_id == group.id)
            .order_by(db.User.name)
        ).all()
        return {
            "name": group.name,
            "max_cores": group.max_cores,
            "max_gpus": group.max_gpus,
            "members": list(members),
            "created_at": group.created_at,
        }

    def list_groups(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            groups = session.scalars(select(db.Group).order_by(db.Group.name)).all()
            return [self._group_json(session, g) for g in groups]

    def get_group(self, name: str) -> dict[str, Any]:
        with self.sessions() as session:
            return self._group_json(session, self._group(session, name))

    def create_group(
        self, name: Any, max_cores: Any = None, max_gpus: Any = None, members: Any = ()
    ) -> dict[str, Any]:
        name = _check_name(name, "group")
        if not isinstance(members, (list, tuple)) or not all(isinstance(m, str) for m in members):
            raise AccountError(400, "'members' must be a list of user names")
        with self.sessions.begin() as session:
            if session.scalar(select(db.Group.id).where(db.Group.name == name)) is not None:
                raise AccountError(409, f"group {name!r} already exists")
            group = db.Group(
                name=name,
                max_cores=_optional_count(max_cores, "max_cores"),
                max_gpus=_optional_count(max_gpus, "max_gpus"),
                created_at=time.time(),
            )
            session.add(group)
            session.flush()
            for member in dict.fromkeys(members):
                session.add(
                    db.GroupMember(group_id=group.id, user_id=self._user(session, member).id)
                )
            session.flush()
            return self._group_json(session, group)

    def update_group(self, name: str, **limits: Any) -> dict[str, Any]:
        with self.sessions.begin() as session:
            group = self._group(session, name)
            for field in ("max_cores", "max_gpus"):
                if field in limits:
                    setattr(group, field, _optional_count(limits[field], field))
            return self._group_json(session, group)

    def delete_group(self, name: str) -> None:
        with self.sessions.begin() as session:
            group = self._group(session, name)
            session.execute(delete(db.GroupMember).where(db.GroupMember.group_id == group.id))
            session.delete(group)

    def set_member(self, group_name: str, user_name: str, member: bool) -> dict[str, Any]:
        with self.sessions.begin() as session:
            group = self._group(session, group_name)
            user = self._user(session, user_name)
            row = session.get(db.GroupMember, (group.id, user.id))
            if member and row is None:
                session.add(db.GroupMember(group_id=group.id, user_id=user.id))
            elif not member and row is not None:
                session.delete(row)
            session.flush()
            return self._group_json(session, group)
