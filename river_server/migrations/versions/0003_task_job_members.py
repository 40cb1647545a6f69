"""Members of multi-node jobs: tasks.job_id (indexed) and tasks.job_rank.

A job (issue #16) is N member tasks placed all-or-nothing; each member records its job and
its rank so that the scheduler can offer the members as one gang, the rendezvous can be
built in rank order, and a member that ends badly can end its siblings. Both columns are
nullable: every task submitted before this revision is a single task.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("job_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("job_rank", sa.Integer(), nullable=True))
        batch_op.create_index("ix_tasks_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_index("ix_tasks_job_id")
        batch_op.drop_column("job_rank")
        batch_op.drop_column("job_id")
