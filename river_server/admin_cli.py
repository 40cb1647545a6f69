"""`river user`, `river token`, `river invite`, `river group`: account administration on the
host's DB directly (run them on the head node, as the user that runs the host).

They open the same DB the host uses: `--db-url`, else `--data-dir`/river.db (default data dir
as for `river host`: RIVER_DATA_DIR or the Jupyter data dir + /river). Secrets (tokens,
invitation codes) are printed once and never stored in clear.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from river_server import db
from river_server.accounts import AccountError, Accounts
from river_server.auth import ROLES
from river_server.schema import SchemaError

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90', '30m', '12h', '7d', '2w' -> seconds."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a duration looks like 90, 30m, 12h, 7d or 2w, not {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def _default_data_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(os.environ.get("RIVER_DATA_DIR") or Path(jupyter_data_dir()) / "river")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--data-dir", type=Path, default=None, help="the host's data directory")
    parser.add_argument("--db-url", default=None, help="SQLAlchemy URL of the host's DB")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _accounts(args: argparse.Namespace) -> Accounts:
    url = args.db_url or os.environ.get("RIVER_DB_URL")
    if not url:
        data_dir = args.data_dir or _default_data_dir()
        path = data_dir / "river.db"
        if not path.exists():
            raise AccountError(
                404, f"no River DB at {path}: pass --data-dir (the host's) or --db-url"
            )
        url = f"sqlite:///{path}"
    try:
        engine = db.make_engine(url)
    except SchemaError as exc:
        raise AccountError(409, f"River DB: {exc}") from None
    return Accounts(db.make_sessionmaker(engine))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = [columns] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={'-' if v is None else v}" for k, v in value.items())
    return str(value)


def _read_password(args: argparse.Namespace) -> str | None:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if getattr(args, "password", False):
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise AccountError(400, "the passwords differ")
        return first
    return None


def _run(fn: Any, argv: list[str]) -> int:
    try:
        return fn(argv) or 0
    except AccountError as exc:
        print(f"river: {exc}", file=sys.stderr)
        return 1


# ---- river user ----------------------------------------------------------------------------


def user_command(argv: list[str]) -> int:
    return _run(_user, argv)


def _user(argv: list[str]) -> int:
    parser = _parser("river user", "Add, list and change River users.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="user")
    add.add_argument("--password", action="store_true", help="prompt for a password")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sub.add_parser("list", help="list users")
    role = sub.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    passwd = sub.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    quota = sub.add_parser("quota", help="limit a user's concurrent cores / GPUs (-1: none)")
    quota.add_argument("name")
    quota.add_argument("--cores", type=int)
    quota.add_argument("--gpus", type=int)
    remove = sub.add_parser("remove", help="delete a user and their tokens")
    remove.add_argument("name")
    # Shared options may come after the action too.
    for p in (add, role, passwd, quota, remove, sub.choices["list"]):
        p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
        p.add_argument("--db-url", default=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    accounts = _accounts(args)
    if args.action == "add":
        user = accounts.add_user(args.name, args.role, _read_password(args))
        print(json.dumps(user) if args.json else f"added {user['name']} ({user['role']})")
    elif args.action == "list":
        _print_rows(
            accounts.list_users(), ["name", "role", "has_password", "groups", "quota"], args.json
        )
    elif args.action == "role":
        user = accounts.set_role(args.name, args.role)
        print(json.dumps(user) if args.json else f"{user['name']} is now {user['role']}")
    elif args.action == "passwd":
        args.password = not args.password_stdin
        accounts.set_password(args.name, _read_password(args))
        print(f"password of {args.name} set")
    elif args.action == "quota":
        limits = {}
        if args.cores is not None:
            limits["max_cores"] = None if args.cores < 0 else args.cores
        if args.gpus is not None:
            limits["max_gpus"] = None if args.gpus < 0 else args.gpus
        user = accounts.set_user_quota(args.name, **limits)
        print(json.dumps(user) if args.json else f"{user['name']}: {_cell(user['quota'])}")
    elif args.action == "remove":
        accounts.delete_user(args.name)
        print(f"removed {args.name}")
    return 0


# ---- river token ---------------------------------------------------------------------------


def token_command(argv: list[str]) -> int:
    return _run(_token, argv)


def _token(argv: list[str]) -> int:
    parser = _parser("river token", "Create, list and revoke River API tokens.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="make a token for USER (printed once)")
    create.add_argument("user")
    create.add_argument("--label", default="")
    create.add_argument("--expires", type=parse_duration, help="e.g. 30d, 12h (default: never)")
    listing = sub.add_parser("list", help="list tokens (of USER, or everyone's)")
    listing.add_argument("user", nargs="?")
    revoke = sub.add_parser("revoke", help="revoke a token by ID; it fails at once")
    revoke.add_argument("id")
    for p in (create, listing, revoke):
        p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
        p.add_argument("--db-url", default=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    accounts = _accounts(args)
    if args.action == "create":
        token, info = accounts.create_token(args.user, args.label, args.expires)
        if args.json:
            print(json.dumps({"token": token, "info": info}))
        else:
            print(token)
            print(
                f"(token {info['id']} for {info['user']}, expires {_when(info['expires_at'])}; "
                "shown once: store it now)",
                file=sys.stderr,
            )
    elif args.action == "list":
        rows = accounts.list_tokens(args.user)
        for row in rows:
            row["expires"] = _when(row["expires_at"])
        _print_rows(rows, ["id", "user", "label", "expires", "active"], args.json)
    elif args.action == "revoke":
        info = accounts.revoke_token(args.id)
        print(json.dumps(info) if args.json else f"revoked token {info['id']} of {info['user']}")
    return 0


# ---- river invite --------------------------------------------------------------------------


def join_link(url: str, code: str) -> str:
    """The sign-up page's link for `code` (river_server/join_page.py); without the host's
    URL, a placeholder the admin fills in."""
    base = url.rstrip("/") if url else "<host URL>"
    return f"{base}/river/join?{urlencode({'code': code})}"


def invite_command(argv: list[str]) -> int:
    return _run(_invite, argv)


def _invite(argv: list[str]) -> int:
    parser = _parser(
        "river invite",
        "Make an invitation code: whoever has it creates an account with ROLE on the "
        "sign-up page URL/river/join?code=CODE (or POST /river/api/invitations/redeem "
        "{code, name, password}).",
    )
    parser.add_argument(
        "--url",
        default="",
        help="the host's URL as browsers reach it, to print the whole sign-up link",
    )
    parser.add_argument("--role", choices=ROLES, default="user")
    parser.add_argument("--uses", type=int, default=1, help="how many accounts it may create")
    parser.add_argument(
        "--expires", type=parse_duration, default=7 * 86400.0, help="e.g. 7d (default), 12h"
    )
    parser.add_argument("--by", default="admin", help="recorded as the inviter")
    parser.add_argument("--list", action="store_true", help="list invitations instead")
    parser.add_argument("--revoke", metavar="ID", help="revoke an invitation instead")
    args = parser.parse_args(argv)
    accounts = _accounts(args)
    if args.list:
        rows = accounts.list_invitations()
        for row in rows:
            row["expires"] = _when(row["expires_at"])
        _print_rows(
            rows, ["id", "role", "uses", "max_uses", "expires", "created_by", "active"], args.json
        )
        return 0
    if args.revoke:
        info = accounts.revoke_invitation(args.revoke)
        print(json.dumps(info) if args.json else f"revoked invitation {info['id']}")
        return 0
    code, info = accounts.create_invitation(args.by, "admin", args.role, args.uses, args.expires)
    link = join_link(args.url, code)
    if args.json:
        print(json.dumps({"code": code, "link": link, "invitation": info}))
    else:
        print(code)
        print(f"sign-up link: {link}", file=sys.stderr)
        print(
            f"(invitation {info['id']}: role {info['role']}, {info['max_uses']} use(s), expires "
            f"{_when(info['expires_at'])}; shown once)",
            file=sys.stderr,
        )
    return 0


# ---- river group ---------------------------------------------------------------------------


def group_command(argv: list[str]) -> int:
    return _run(_group, argv)


def _group(argv: list[str]) -> int:
    parser = _parser("river group", "Groups of users sharing a core/GPU quota.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="create a group")
    add.add_argument("name")
    add.add_argument("--cores", type=int)
    add.add_argument("--gpus", type=int)
    add.add_argument("--member", action="append", default=[])
    sub.add_parser("list", help="list groups")
    quota = sub.add_parser("quota", help="set a group's limits (-1: none)")
    quota.add_argument("name")
    quota.add_argument("--cores", type=int)
    quota.add_argument("--gpus", type=int)
    member = sub.add_parser("member", help="add (or --remove) a user")
    member.add_argument("name")
    member.add_argument("user")
    member.add_argument("--remove", action="store_true")
    remove = sub.add_parser("remove", help="delete a group")
    remove.add_argument("name")
    for p in (add, quota, member, remove, sub.choices["list"]):
        p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
        p.add_argument("--db-url", default=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    accounts = _accounts(args)

    def limit(value: int | None) -> int | None:
        return None if value is None or value < 0 else value

    if args.action == "add":
        group = accounts.create_group(args.name, limit(args.cores), limit(args.gpus), args.member)
    elif args.action == "list":
        _print_rows(accounts.list_groups(), ["name", "max_cores", "max_gpus", "members"], args.json)
        return 0
    elif args.action == "quota":
        limits = {}
        if args.cores is not None:
            limits["max_cores"] = limit(args.cores)
        if args.gpus is not None:
            limits["max_gpus"] = limit(args.gpus)
        group = accounts.update_group(args.name, **limits)
    elif args.action == "member":
        group = accounts.set_member(args.name, args.user, not args.remove)
    else:
        accounts.delete_group(args.name)
        print(f"removed group {args.name}")
        return 0
    if args.json:
        print(json.dumps(group))
    else:
        print(
            f"{group['name']}: cores {_cell(group['max_cores'])}, GPUs {_cell(group['max_gpus'])}, "
            f"members {_cell(group['members'])}"
        )
    return 0
