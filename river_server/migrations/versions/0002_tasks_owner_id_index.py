"""Index tasks on (owner, id) instead of owner alone.

Every per-user list (`GET /river/api/tasks` for a user, the side panel, `river tasks`) is
WHERE owner = ? ORDER BY id DESC with a page bound: with (owner, id) the database walks the
index backwards and stops after a page, where the owner-only index made it fetch and sort
all of that user's tasks, which grow without end. The composite index also serves every
owner-only lookup, so the old one goes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.create_index("ix_tasks_owner_id", ["owner", "id"], unique=False)
        batch_op.drop_index("ix_tasks_owner")


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.create_index("ix_tasks_owner", ["owner"], unique=False)
        batch_op.drop_index("ix_tasks_owner_id")
