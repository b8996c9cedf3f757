"""API keys get a role: ``extension`` (every key made before this), ``moderator`` or ``admin``.

The role decides which route classes a key may call (``serve/access.py``). Existing keys keep
working as extension keys through the column's server default. A database whose ``api_keys``
table already has the column (made from the live table definition) is left as it is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _has_role(bind: sa.Connection) -> bool:
    return any(c["name"] == "role" for c in sa.inspect(bind).get_columns("api_keys"))


def upgrade() -> None:
    if _has_role(op.get_bind()):
        return
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("role", sa.String(16), nullable=False, server_default="extension")
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("role")
