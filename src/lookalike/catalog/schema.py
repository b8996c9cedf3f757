"""Database tables of the catalog (SQLAlchemy Core), prefixed ``catalog_`` so the catalog can
share one PostgreSQL database with other parts of the service."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

__all__ = ["images", "items", "metadata", "state"]

metadata = MetaData()

items = Table(
    "catalog_items",
    metadata,
    Column("item_id", String(64), primary_key=True),
    Column("title", String(300), nullable=False),
    Column("category", String(100), nullable=False, index=True),
    Column("price", Double, nullable=False),
    Column("available", Boolean, nullable=False, index=True),
    Column("url", String(2048), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

images = Table(
    "catalog_images",
    metadata,
    # SQLite only auto-increments an INTEGER primary key; AUTOINCREMENT stops it from reusing the
    # ids of deleted rows, so a stale vector index can never point at a different image.
    Column(
        "image_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column(
        "item_id",
        String(64),
        ForeignKey("catalog_items.item_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("position", Integer, nullable=False),
    Column("media", String(80), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    UniqueConstraint("item_id", "position", name="uq_catalog_images_item_position"),
    sqlite_autoincrement=True,
)

# Key/value counters; "revision" is bumped by every change so callers can cache filters.
state = Table(
    "catalog_state",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
