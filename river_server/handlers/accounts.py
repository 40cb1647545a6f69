"""REST routes for accounts: me, users, tokens, invitations, groups (quotas), login, task
approval, and the OpenAPI document (see docs/api.md and river_server/openapi.py).

Who may do what:
- anyone: redeem an invitation, exchange a user name and password for a token, read the
  OpenAPI document;
- every user (viewers too): read `me`, make, list and revoke their own tokens, change their
  own password;
- operators: list users, groups and invitations; invite viewers and users; approve or
  reject tasks waiting in pending_approval;
- admins: create and delete users, change roles, quotas and groups, invite any role, see
  and revoke anyone's tokens.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from tornado import web

from river_runner.protocol import TaskState
from river_runner.wire.queries import IdPage, NamePage, TokenList
from river_runner.wire.requests import (
    EmptyBody,
    GroupCreate,
    GroupUpdate,
    InvitationCreate,
    InvitationRedeem,
    LoginRequest,
    TaskDecision,
    TokenCreate,
    UserCreate,
    UserUpdate,
)
from river_server import db
from river_server.accounts import AccountError, Accounts
from river_server.auth import LOGIN_THROTTLE, role_at_least, verify_login
from river_server.handlers.base import RiverAPIHandler
from river_server.openapi import openapi_document
from river_server.paging import page_of, page_request


class AccountsHandler(RiverAPIHandler):
    @property
    def accounts(self) -> Accounts:
        accounts = self.settings.get("river_accounts")
        if accounts is None:
            accounts = self.settings["river_accounts"] = Accounts(self.river.sessions)
        return accounts

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an Accounts method off the event loop (bcrypt blocks); map its errors."""
        try:
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except AccountError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None

    def is_self_or(self, name: str, role: str) -> None:
        """Allow the caller on their own account, or with `role`; otherwise 403."""
        if name != self.username:
            self.require_role(role)


class MeHandler(AccountsHandler):
    @web.authenticated
    async def get(self) -> None:
        try:
            user = await self.call(self.accounts.get_user, self.username)
        except web.HTTPError:
            # Identified but not in the user table (cannot happen with River's provider).
            user = {"name": self.username, "role": self.role, "groups": [], "quota": {}}
        self.write_json({"user": user})


class UsersHandler(AccountsHandler):
    bodies = {"post": UserCreate}
    queries = {"get": NamePage}

    @web.authenticated
    async def get(self) -> None:
        self.require_role("operator")
        page = page_request(self.query(NamePage))
        items = await self.call(self.accounts.list_users)
        items, following = page_of(items, page, "name")
        self.write_json({"users": items, "next": following})

    @web.authenticated
    async def post(self) -> None:
        self.require_role("admin")
        body = self.body(UserCreate).fields_set()
        user = await self.call(
            self.accounts.add_user, body.get("name"), body.get("role", "user"), body.get("password")
        )
        limits = {k: body[k] for k in ("max_cores", "max_gpus") if k in body}
        if limits:
            user = await self.call(self.accounts.set_user_quota, user["name"], **limits)
        self.write_json({"user": user}, status=201)


class UserHandler(AccountsHandler):
    bodies = {"patch": UserUpdate}

    @web.authenticated
    async def get(self, name: str) -> None:
        self.is_self_or(name, "operator")
        self.write_json({"user": await self.call(self.accounts.get_user, name)})

    @web.authenticated
    async def patch(self, name: str) -> None:
        """role / max_cores / max_gpus: admins. password: yourself (with current_password),
        or an admin for anyone."""
        body = self.body(UserUpdate).fields_set()
        admin = role_at_least(self.role, "admin")
        if any(k in body for k in ("role", "max_cores", "max_gpus")) and not admin:
            raise web.HTTPError(
                403, f"changing roles and quotas needs the admin role; you are {self.role}"
            )
        if "password" in body and not admin and name != self.username:
            raise web.HTTPError(403, "you may change only your own password")
        await self.call(self.accounts.get_user, name)  # 404 before any change
        if "role" in body:
            if name == self.username and body["role"] != self.role:
                raise web.HTTPError(409, "you cannot change your own role; ask another admin")
            await self.call(self.accounts.set_role, name, body["role"])
        limits = {k: body[k] for k in ("max_cores", "max_gpus") if k in body}
        if limits:
            await self.call(self.accounts.set_user_quota, name, **limits)
            self.river.dispatcher.wake()  # a raised quota may let waiting tasks start
        if "password" in body:
            await self.call(
                self.accounts.set_password,
                name,
                body["password"],
                current=body.get("current_password"),
                check_current=name == self.username,
            )
        self.write_json({"user": await self.call(self.accounts.get_user, name)})

    @web.authenticated
    async def delete(self, name: str) -> None:
        self.require_role("admin")
        if name == self.username:
            raise web.HTTPError(409, "you cannot delete your own account")
        await self.call(self.accounts.delete_user, name)
        ended = await self.river.tasks.end_all_of(name, f"owner {name} deleted by {self.username}")
        self.write_json({"deleted": name, "tasks_ended": ended})


class TokensHandler(AccountsHandler):
    bodies = {"post": TokenCreate}
    queries = {"get": TokenList}

    @web.authenticated
    async def get(self) -> None:
        """Your tokens; admins: `?user=NAME` for someone's, `?all=1` for everyone's."""
        params = self.query(TokenList)
        who = params.user
        every = params.all
        if (who is not None and who != self.username) or every:
            self.require_role("admin")
        user = None if every else (who or self.username)
        page = page_request(params)
        items = await self.call(self.accounts.list_tokens, user)
        items, following = page_of(items, page, "id")
        self.write_json({"tokens": items, "next": following})

    @web.authenticated
    async def post(self) -> None:
        """A new token (shown once in the answer). Admins may make one for another user."""
        body = self.body(TokenCreate).fields_set()
        user = body.get("user") or self.username
        if user != self.username:
            self.require_role("admin")
        if not isinstance(user, str):
            raise web.HTTPError(400, "'user' must be a user name")
        token, info = await self.call(
            self.accounts.create_token, user, body.get("label"), body.get("expires_in")
        )
        self.write_json({"token": token, "info": info}, status=201)


class TokenHandler(AccountsHandler):
    @web.authenticated
    async def delete(self, token_id: str) -> None:
        owner = None if role_at_least(self.role, "admin") else self.username
        info = await self.call(self.accounts.revoke_token, token_id, owner)
        self.write_json({"token": info})


class InvitationsHandler(AccountsHandler):
    bodies = {"post": InvitationCreate}
    queries = {"get": IdPage}

    @web.authenticated
    async def get(self) -> None:
        self.require_role("operator")
        page = page_request(self.query(IdPage))
        items = await self.call(self.accounts.list_invitations)
        items, following = page_of(items, page, "id")
        self.write_json({"invitations": items, "next": following})

    @web.authenticated
    async def post(self) -> None:
        self.require_role("operator")
        body = self.body(InvitationCreate).fields_set()
        code, info = await self.call(
            self.accounts.create_invitation,
            self.username,
            self.role,
            body.get("role", "user"),
            body.get("uses", 1),
            body.get("expires_in", 7 * 86400),
        )
        self.write_json({"code": code, "invitation": info}, status=201)


class InvitationHandler(AccountsHandler):
    @web.authenticated
    async def delete(self, invitation_id: str) -> None:
        self.require_role("operator")
        info = await self.call(
            self.accounts.revoke_invitation, invitation_id, self.username, self.role
        )
        self.write_json({"invitation": info})


class RedeemHandler(AccountsHandler):
    """Create an account with an invitation code (no login needed: the code is the key)."""

    bodies = {"post": InvitationRedeem}

    def check_xsrf_cookie(self) -> None:
        """The request carries its own secret (the code) and sets no session: no XSRF risk."""

    @allow_unauthenticated
    async def post(self) -> None:
        body = self.body(InvitationRedeem).fields_set()
        user = await self.call(
            self.accounts.redeem, body.get("code"), body.get("name"), body.get("password")
        )
        self.write_json({"user": user}, status=201)


class LoginHandler(AccountsHandler):
    """Exchange a user name and password for a new API token (e.g. `%river login`)."""

    bodies = {"post": LoginRequest}

    def check_xsrf_cookie(self) -> None:
        """Password in, token out, no cookie set: nothing a cross-site form could abuse."""

    @allow_unauthenticated
    async def post(self) -> None:
        body = self.body(LoginRequest).fields_set()
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name:
            raise web.HTTPError(400, "send 'username' and 'password' (strings)")
        wait = LOGIN_THROTTLE.begin(name)  # counts this guess while it is being checked
        if wait:
            raise web.HTTPError(
                429, f"too many failed logins for {name!r}; try again in {wait:.0f} s"
            )
        user = None
        try:
            user = await asyncio.to_thread(verify_login, self.river.sessions, name, password)
        finally:
            LOGIN_THROTTLE.end(name, user is not None)
        if user is None:
            raise web.HTTPError(401, "unknown user name or wrong password")
        token, info = await self.call(
            self.accounts.create_token,
            user.name,
            body.get("label") or "login",
            body.get("expires_in"),
        )
        self.write_json(
            {
                "token": token,
                "info": info,
                "user": await self.call(self.accounts.get_user, user.name),
            },
            status=201,
        )


class GroupsHandler(AccountsHandler):
    bodies = {"post": GroupCreate}
    queries = {"get": NamePage}

    @web.authenticated
    async def get(self) -> None:
        self.require_role("operator")
        page = page_request(self.query(NamePage))
        items = await self.call(self.accounts.list_groups)
        items, following = page_of(items, page, "name")
        self.write_json({"groups": items, "next": following})

    @web.authenticated
    async def post(self) -> None:
        self.require_role("admin")
        body = self.body(GroupCreate).fields_set()
        group = await self.call(
            self.accounts.create_group,
            body.get("name"),
            body.get("max_cores"),
            body.get("max_gpus"),
            body.get("members") or [],
        )
        self.river.dispatcher.wake()
        self.write_json({"group": group}, status=201)


class GroupHandler(AccountsHandler):
    bodies = {"patch": GroupUpdate}

    @web.authenticated
    async def get(self, name: str) -> None:
        self.require_role("operator")
        self.write_json({"group": await self.call(self.accounts.get_group, name)})

    @web.authenticated
    async def patch(self, name: str) -> None:
        self.require_role("admin")
        body = self.body(GroupUpdate).fields_set()
        group = await self.call(self.accounts.update_group, name, **body)
        self.river.dispatcher.wake()  # a raised quota may let waiting tasks start
        self.write_json({"group": group})

    @web.authenticated
    async def delete(self, name: str) -> None:
        self.require_role("admin")
        await self.call(self.accounts.delete_group, name)
        self.river.dispatcher.wake()
        self.write_json({"deleted": name})


class GroupMemberHandler(AccountsHandler):
    bodies = {"put": EmptyBody}

    @web.authenticated
    async def put(self, name: str, user: str) -> None:
        self.require_role("admin")
        self.body(EmptyBody)
        group = await self.call(self.accounts.set_member, name, user, True)
        self.river.dispatcher.wake()
        self.write_json({"group": group})

    @web.authenticated
    async def delete(self, name: str, user: str) -> None:
        self.require_role("admin")
        group = await self.call(self.accounts.set_member, name, user, False)
        self.river.dispatcher.wake()
        self.write_json({"group": group})


class TaskApprovalHandler(RiverAPIHandler):
    """approve: pending_approval -> queued; reject: -> killed with the reason."""

    bodies = {"post": TaskDecision}

    @web.authenticated
    def post(self, task_id: str, decision: str) -> None:
        self.require_role("operator")
        reason = self.body(TaskDecision).reason or ""
        task = self.load_task(task_id)
        tasks = self.river.tasks
        with self.river.sessions() as session:
            fresh = session.get(db.Task, task.id)
            if fresh is None or fresh.state != TaskState.PENDING_APPROVAL.value:
                state = fresh.state if fresh is not None else "gone"
                raise web.HTTPError(
                    409, f"task {task_id} is {state}; only pending_approval tasks are decided"
                )
            why = f": {reason}" if reason else ""
            if decision == "approve":
                tasks.transition(
                    session, fresh, TaskState.QUEUED, f"approved by {self.username}{why}"
                )
            else:
                tasks.transition(
                    session, fresh, TaskState.KILLED, f"rejected by {self.username}{why}"
                )
            tasks.commit_and_publish(session, [fresh])
        self.write_json({"task": tasks.to_json(fresh)})


class OpenAPIHandler(RiverAPIHandler):
    @allow_unauthenticated
    def get(self) -> None:
        self.write_json(openapi_document(self.base_url))
