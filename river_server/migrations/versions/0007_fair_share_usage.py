"""Fair share (issue #20): per-user decayed usage, and how far each task has been charged.

`usage` holds one row per user: core- and GPU-seconds decayed to `at`. A task's
`usage_charged_at` says up to when its run is in its owner's row, so usage grows as tasks
run instead of being recomputed from every past task on each scheduling pass.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("core_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("usage_charged_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("usage_charged_at")
    op.drop_table("usage")
