"""Ports held by host-network jobs: job_ports (node, port) -> job, member task.

A job with `network: host` (issue #16) runs its members in their nodes' own network
stacks, so its rendezvous port must be free on every member's node and must not be handed
to a second host-mode job there while the first runs. The allocation is a row per member
node; the primary key (node, port) makes a double allocation impossible even for two
hosts racing on one PostgreSQL database.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_ports",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node", "port"),
    )
    op.create_index("ix_job_ports_job_id", "job_ports", ["job_id"], unique=False)
    op.create_index("ix_job_ports_task_id", "job_ports", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_ports_task_id", table_name="job_ports")
    op.drop_index("ix_job_ports_job_id", table_name="job_ports")
    op.drop_table("job_ports")
