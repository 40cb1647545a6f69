"""Priorities and preemption (issue #20): a task's priority and its requeue count.

`priority` orders the queue before fair share; `requeues` counts how often a preemptible
task was displaced and put back in the queue (its reason says by whom and why). NULL
in either (existing rows) reads as 0.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("requeues", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("requeues")
        batch.drop_column("priority")
