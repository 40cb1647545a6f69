"""The host_leader row: who leads, with a fencing epoch (issue #15, standby host).

Two hosts may share one PostgreSQL database; the one holding the advisory lock leads
(river_server/leadership.py). Each new leader bumps `epoch` in this one row in the same
transaction that records its id and public URL: standbys read the URL to tell clients and
runners where to go, and the scheduler checks the epoch inside its own transaction so that
a leader that lost its lock cannot place tasks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_leader",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("host_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=256), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("host_leader")
