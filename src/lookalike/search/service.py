"""The query path: image → embedding → nearest catalog images → items, with versions attached."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore, Item
from lookalike.core.errors import NotFound
from lookalike.core.images import load_image_file
from lookalike.embed import Embedder
from lookalike.search.indexing import LoadedIndex

__all__ = ["Hit", "SearchResult", "SearchService"]


@dataclass(frozen=True)
class Hit:
    item: Item
    score: float
    image_id: int


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    model_version: str
    index_version: str
    served_by: str
    took_ms: float


class _CatalogView:
    """image id → item id and filter id-sets, rebuilt when the catalog's revision changes.

    The revision is read at most every ``ttl`` seconds, so a catalog change (an item rented
    out, a new item) is visible to search within that time without a query per request.
    """

    def __init__(self, catalog: CatalogStore, ttl: float = 1.0) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self._lock = threading.Lock()
        self._checked = 0.0
        self._revision = -1
        self._image_item: dict[int, str] = {}
        self._filters: dict[tuple[str | None, bool | None], np.ndarray] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.ttl:
            return
        with self._lock:
            self._checked = now
            revision = self.catalog.revision()
            if revision != self._revision:
                self._image_item = {img.image_id: img.item_id for img in self.catalog.iter_images()}
                self._filters = {}
                self._revision = revision

    def item_of(self, image_id: int) -> str | None:
        self._refresh()
        return self._image_item.get(image_id)

    def allowed(self, category: str | None, available: bool | None) -> np.ndarray | None:
        if category is None and available is None:
            return None
        self._refresh()
        key = (category, available)
        found = self._filters.get(key)
        if found is None:
            found = self.catalog.image_ids_matching(category=category, available=available)
            self._filters[key] = found
        return found


class SearchService:
    """Answers searches with one embedder and one index; stateless apart from caches."""

    def __init__(self, catalog: CatalogStore, embedder: Embedder, index: LoadedIndex) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.index = index
        self.view = _CatalogView(catalog)

    @property
    def versions(self) -> dict[str, str]:
        return {
            "model_version": self.embedder.info.ref,
            "index_version": str(self.index.ref),
            "served_by": self.embedder.info.served_by,
        }

    def search_image(
        self,
        image: Image.Image,
        *,
        k: int = 20,
        category: str | None = None,
        available: bool | None = None,
    ) -> SearchResult:
        started = time.perf_counter()
        vector = self.embedder.embed([image])[0]
        hits = self.search_vector(vector, k=k, category=category, available=available)
        return self._result(hits, started)

    def similar(
        self,
        item_id: str,
        *,
        k: int = 20,
        category: str | None = None,
        available: bool | None = None,
    ) -> SearchResult:
        """Items that look like ``item_id`` (its best-matching image), the item itself excluded."""
        started = time.perf_counter()
        item = self.catalog.get_item(item_id)
        if not item.images:
            raise NotFound(f"item {item_id!r} has no images to compare")
        image = load_image_file(self.catalog.media_path(item.images[0]))
        vector = self.embedder.embed([image])[0]
        hits = self.search_vector(
            vector, k=k, category=category, available=available, exclude=(item_id,)
        )
        return self._result(hits, started)

    def search_vector(
        self,
        vector: np.ndarray,
        *,
        k: int,
        category: str | None = None,
        available: bool | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Hit]:
        """Top ``k`` items: an item's score is the best score among its images."""
        allowed = self.view.allowed(category, available)
        if allowed is not None and len(allowed) == 0:
            return []
        index = self.index.index
        total = index.ntotal if allowed is None else min(index.ntotal, len(allowed))
        fetch = min(total, max(3 * k, k + 10))
        query = vector.reshape(1, -1).astype(np.float32)
        while True:
            scores, ids = index.search(query, max(fetch, 1), allowed=allowed)
            best: dict[str, tuple[float, int]] = {}
            for score, image_id in zip(scores[0], ids[0], strict=True):
                if image_id < 0:
                    continue
                item_id = self.view.item_of(int(image_id))
                if item_id is None or item_id in exclude or item_id in best:
                    continue  # results are sorted: the first image seen is the item's best
                best[item_id] = (float(score), int(image_id))
            if len(best) >= k or fetch >= total:
                break
            fetch = min(total, fetch * 4)
        top = list(best.items())[:k]
        items = self.catalog.get_items([item_id for item_id, _ in top])
        return [
            Hit(items[item_id], score, image_id)
            for item_id, (score, image_id) in top
            if item_id in items
        ]

    def _result(self, hits: list[Hit], started: float) -> SearchResult:
        v = self.versions
        return SearchResult(
            hits,
            v["model_version"],
            v["index_version"],
            v["served_by"],
            round((time.perf_counter() - started) * 1000, 2),
        )
