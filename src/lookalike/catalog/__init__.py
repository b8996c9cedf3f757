"""The catalog: rentable items, their images and availability (layer 2).

``CatalogStore`` keeps items in SQLite (default) or PostgreSQL and normalised image copies in a
media folder; ``import_file`` loads a CSV or JSONL catalog with per-row validation.
"""

from __future__ import annotations

from .media import MEDIA_JPEG_QUALITY, MEDIA_MAX_SIDE, MEDIA_MIN_SIDE
from .records import CatalogImage, ImportReport, Item, Rejection
from .rows import ITEM_ID_PATTERN
from .store import CatalogStore

__all__ = [
    "ITEM_ID_PATTERN",
    "MEDIA_JPEG_QUALITY",
    "MEDIA_MAX_SIDE",
    "MEDIA_MIN_SIDE",
    "CatalogImage",
    "CatalogStore",
    "ImportReport",
    "Item",
    "Rejection",
]
