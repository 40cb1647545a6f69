"""users.origin: NULL (local) or "hub" (accounts made from a JupyterHub identity, issue #18).

A Hub identity becomes a River user of the same name on first sight; the column keeps such
accounts apart from local ones, so a Hub user can never take over a local account (nor a
password log in to a Hub account). Existing rows stay NULL: local.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("origin", sa.String(length=16), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("origin")
