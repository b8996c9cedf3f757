"""Rentals: reviews of rentals (user, item, fit, measurements, occasion, rating, date) imported
from a Rent-the-Runway-shaped file or warehouse, and shopper events (viewed, hearted, rented).

``rentals`` is unique on (user_id, item_id, review_date, size), so importing the same file
twice adds nothing; a size that is not known is stored as -1 (not NULL) so that such rows are
de-duplicated too. Ids are text, like the catalog's, whatever the source used. ``batch`` names
the import that wrote a row (``lookalike fit import`` prints it). ``shopper_events`` is the
append-only log that the recommendations fold in (``recs/events.py``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
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
        "rentals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("fit", sa.String(8), nullable=False, server_default=""),
        sa.Column("size", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("weight_lbs", sa.Float, nullable=True),
        sa.Column("height_in", sa.Float, nullable=True),
        sa.Column("bust_size_num", sa.Float, nullable=True),
        sa.Column("bust_size_letter", sa.String(16), nullable=False, server_default=""),
        sa.Column("body_type", sa.String(32), nullable=False, server_default=""),
        sa.Column("age", sa.Float, nullable=True),
        sa.Column("category", sa.String(64), nullable=False, server_default=""),
        sa.Column("rented_for", sa.String(64), nullable=False, server_default=""),
        sa.Column("rating", sa.Float, nullable=True),
        sa.Column("review_date", sa.Date, nullable=False),
        sa.Column("source", sa.String(300), nullable=False, server_default=""),
        sa.Column("batch", sa.String(64), nullable=False, server_default=""),
        sa.UniqueConstraint(
            "user_id", "item_id", "review_date", "size", name="uq_rentals_user_item_date_size"
        ),
    )
    op.create_index("ix_rentals_item_date", "rentals", ["item_id", "review_date"])
    op.create_index("ix_rentals_user_id", "rentals", ["user_id"])
    op.create_index("ix_rentals_batch", "rentals", ["batch"])
    op.create_table(
        "shopper_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "event IN ('viewed', 'hearted', 'rented')", name="ck_shopper_events_event"
        ),
    )
    op.create_index("ix_shopper_events_user_at", "shopper_events", ["user_id", "at"])
    op.create_index("ix_shopper_events_at", "shopper_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_shopper_events_at", table_name="shopper_events")
    op.drop_index("ix_shopper_events_user_at", table_name="shopper_events")
    op.drop_table("shopper_events")
    op.drop_index("ix_rentals_batch", table_name="rentals")
    op.drop_index("ix_rentals_user_id", table_name="rentals")
    op.drop_index("ix_rentals_item_date", table_name="rentals")
    op.drop_table("rentals")
