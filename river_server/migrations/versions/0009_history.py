"""Metrics and usage history (issue #21): `node_history` and `usage_history`.

`node_history` holds each node's fine points and the coarse buckets older ones are averaged
into; `usage_history` each user's undecayed core- and GPU-seconds per clock hour. Both are
bounded by the leader's compaction (river_server/history.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=True),
        sa.Column("memory", sa.Float(), nullable=True),
        sa.Column("gpus", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_node_history_node_at", "node_history", ["node", "at"])
    op.create_table(
        "usage_history",
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.Float(), nullable=False),
        sa.Column("core_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user", "hour"),
    )


def downgrade() -> None:
    op.drop_table("usage_history")
    op.drop_index("ix_node_history_node_at", table_name="node_history")
    op.drop_table("node_history")
