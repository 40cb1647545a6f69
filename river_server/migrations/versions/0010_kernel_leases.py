"""Kernel-bound tasks (issue #20): notebook kernels' leases and the tasks bound to them.

`kernel_leases` holds one row per live lease (its owner and when it lapses unless
renewed); `tasks.lease_id` binds a task to one (NULL: detached, every existing task).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-13
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kernel_leases",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kernel_leases_owner", "kernel_leases", ["owner"])
    op.create_index("ix_kernel_leases_expires_at", "kernel_leases", ["expires_at"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("lease_id", sa.BigInteger(), nullable=True))
        batch.create_index("ix_tasks_lease_id", ["lease_id"])


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_lease_id")
        batch.drop_column("lease_id")
    op.drop_index("ix_kernel_leases_expires_at", table_name="kernel_leases")
    op.drop_index("ix_kernel_leases_owner", table_name="kernel_leases")
    op.drop_table("kernel_leases")
