"""What the catalog hands out: plain frozen records, detached from the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["CatalogImage", "ImportReport", "Item", "Rejection"]


@dataclass(frozen=True, slots=True)
class CatalogImage:
    """One normalised catalog image.

    ``media`` is a file name inside the store's media folder (``CatalogStore.media_path``);
    ``sha256`` is the hash of the *source* bytes the image was imported from, and
    ``width``/``height`` are those of the stored, normalised JPEG (longest side at most 512).
    ``image_id`` is never reused, so a vector index keyed by it cannot point at the wrong image.
    """

    image_id: int
    item_id: str
    media: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Item:
    """One rentable catalog item with its images in catalog order."""

    item_id: str
    title: str
    category: str
    price: float
    available: bool
    url: str | None
    images: tuple[CatalogImage, ...]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row of an import file that was not imported, and why.

    ``line`` is the 1-based line of the file where the row starts (the CSV header is line 1).
    """

    line: int
    item_id: str | None
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What one ``CatalogStore.import_file`` call did.

    In strict mode, or when the batch failed, the ``items_*`` and ``images_added`` counts are 0
    and ``rejected`` still lists every bad row.
    """

    rows_read: int = 0
    items_added: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    images_added: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row of the file was accepted."""
        return not self.rejected
