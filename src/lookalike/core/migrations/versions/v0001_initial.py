"""Every table that existed before migrations: catalog, feedback events, API keys.

Until this revision each store made its own tables with ``metadata.create_all``, so a database
in use may hold any subset of them. A table that already exists is left as it is (that is how
such a database is adopted); only the missing ones are created, then Alembic records the
revision. The definitions are written out here, not imported: a migration must keep meaning
what it meant when it was written, whatever the live table definitions become.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _catalog_items() -> None:
    op.create_table(
        "catalog_items",
        sa.Column("item_id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("price", sa.Double, nullable=False),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("url", sa.String(2048), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_catalog_items_category", "catalog_items", ["category"])
    op.create_index("ix_catalog_items_available", "catalog_items", ["available"])


def _catalog_images() -> None:
    op.create_table(
        "catalog_images",
        # AUTOINCREMENT on SQLite: ids of deleted rows are never reused, so a stale vector
        # index cannot point at a different image.
        sa.Column(
            "image_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "item_id",
            sa.String(64),
            sa.ForeignKey("catalog_items.item_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("media", sa.String(80), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.UniqueConstraint("item_id", "position", name="uq_catalog_images_item_position"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_catalog_images_item_id", "catalog_images", ["item_id"])
    op.create_index("ix_catalog_images_sha256", "catalog_images", ["sha256"])


def _catalog_state() -> None:
    op.create_table(
        "catalog_state",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def _search_events() -> None:
    op.create_table(
        "search_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("query_item_id", sa.String(64), nullable=True),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("client_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_search_events_request_id", "search_events", ["request_id"])
    op.create_index("ix_search_events_received_at", "search_events", ["received_at"])


def _api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


# In dependency order: catalog_images refers to catalog_items.
_TABLES: tuple[tuple[str, Callable[[], None]], ...] = (
    ("catalog_items", _catalog_items),
    ("catalog_images", _catalog_images),
    ("catalog_state", _catalog_state),
    ("search_events", _search_events),
    ("api_keys", _api_keys),
)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in _TABLES:
        if name not in existing:
            create()


def downgrade() -> None:
    for name, _ in reversed(_TABLES):
        op.drop_table(name)
