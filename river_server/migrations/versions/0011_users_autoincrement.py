"""users.id never reused on SQLite: the table is rebuilt with AUTOINCREMENT.

Without AUTOINCREMENT SQLite gives a new row max(rowid)+1, so deleting the newest user
and making another hands the new account the deleted one's id; per-user task accounts
(uids) derive from that number, so the new user would own the deleted user's files on
every runner. AUTOINCREMENT keeps the highest id ever used in sqlite_sequence instead.
PostgreSQL's sequences never hand a number out twice: nothing to do there.

The rebuild (batch mode: copy into a new table, drop, rename) runs with SQLite's foreign
keys off (river_server/schema.py), or dropping `users` would cascade into group_members
and user_quotas.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _rebuild_users(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "users", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild_users(True)


def downgrade() -> None:
    _rebuild_users(False)
