"""The query path: image → crops → embeddings → nearest catalog images → items, with versions.

A shopper's photo is searched with the crops chosen by ``crops`` (see
:mod:`lookalike.search.crops`): one region, or several (whole photo, garment boxes) whose
results merge by the best score per item; each hit says which region matched and its box.
``per_garment=True`` also returns each garment's own results. A ``box`` drawn by the shopper
replaces the crops: that area alone is embedded, as it is.

The path is written once, as two phases: **embed** (crops → query vectors) and **lookup**
(vectors → index → catalog rows). :meth:`SearchService.search_image` and
:meth:`SearchService.similar` run each phase through a :class:`Phases` runner: by default on
this service directly; in the server on the search generation's fallback chains
(:mod:`lookalike.search.served`), so production and tests run the same code.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore, Item
from lookalike.core.errors import LookalikeError, NotFound, Unavailable
from lookalike.core.images import load_image_file
from lookalike.embed import Embedder
from lookalike.embed.regions import FIXED_REGIONS, crop_box
from lookalike.search.crops import (
    QueryCrop,
    embed_box,
    embed_query_crops,
    merge_best,
    resolve_mode,
)
from lookalike.search.indexing import LoadedIndex

__all__ = ["CatalogView", "GarmentGroup", "Hit", "Phases", "SearchResult", "SearchService"]

Box = tuple[float, float, float, float]
T = TypeVar("T")
log = logging.getLogger("lookalike.search")


@dataclass(frozen=True)
class Hit:
    """One item found; ``region`` is the part of the query photo that matched it ("whole",
    "upper", "lower", "full"), ``box`` that region as normalised (x0, y0, x1, y1), None for the
    whole photo (and for catalog-to-catalog ``similar``)."""

    item: Item
    score: float
    image_id: int
    region: str = "whole"
    box: Box | None = None
    worn: bool = False  # the region is a garment on a person (its score is on that scale)


@dataclass(frozen=True)
class GarmentGroup:
    """The results of one region of the query photo (``search_image(per_garment=True)``)."""

    region: str
    box: Box | None
    score: float  # the localiser's confidence in the region (1.0 for fixed regions)
    hits: list[Hit]


@dataclass(frozen=True)
class SearchResult:
    """What answered and what it found; ``fallback`` names the steps skipped (None: none)."""

    hits: list[Hit]
    model_version: str
    index_version: str
    served_by: str
    took_ms: float
    groups: list[GarmentGroup] = field(default_factory=list)
    crop_mode: str = "whole"
    fallback: str | None = None


class Phases(Protocol):
    """Runs a phase of the query path: ``fn(service)`` on some service, returning
    (its result, the service that answered, reasons for the steps skipped before it)."""

    def embed(self, fn: Callable[[SearchService], T]) -> tuple[T, SearchService, list[str]]: ...

    def lookup(self, fn: Callable[[SearchService], T]) -> tuple[T, SearchService, list[str]]: ...


class _Direct:
    """Each phase on one service, no fallback (tools, evaluation, tests of one engine)."""

    def __init__(self, service: SearchService) -> None:
        self.service = service

    def embed(self, fn: Callable[[SearchService], T]) -> tuple[T, SearchService, list[str]]:
        return fn(self.service), self.service, []

    lookup = embed


def _finite(vector: np.ndarray) -> np.ndarray:
    # The load check caught NaN at start; this catches an engine that goes bad later.
    if not np.all(np.isfinite(vector)):
        raise ValueError("embedding is not finite (NaN or inf)")
    return vector


@dataclass(frozen=True)
class _Snapshot:
    """The catalog as of one revision: swapped whole, so a reader never sees half of two."""

    revision: int
    image_item: dict[int, str]
    ids: frozenset[int]
    items: dict[str, Item]  # every item that has an image (only those can be found)


_EMPTY = _Snapshot(-1, {}, frozenset(), {})


class CatalogView:
    """The catalog rows search answers with, in memory: image id → item id, every item with an
    image, and filter id-sets; rebuilt when the catalog's revision changes.

    The revision is read at most every ``ttl`` seconds, so a catalog change (an item rented
    out, a new item, an import) is visible to search within that time, and a search reads no
    database row. While the database is unreachable search keeps answering from the rows it
    holds (logged once, and again when the database is back); only a view that never read the
    catalog fails. One view per catalog store (:func:`_view_of`): the services of a generation
    (primary, fallbacks) and the next generation share it.
    """

    def __init__(self, catalog: CatalogStore, ttl: float = 1.0) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self._lock = threading.Lock()
        self._checked = 0.0
        self._snap = _EMPTY
        self._filters: dict[tuple[str | None, bool | None], np.ndarray] = {}
        self._unreachable = False

    def _refresh(self) -> _Snapshot:
        now = time.monotonic()
        if now - self._checked < self.ttl:
            return self._snap
        with self._lock:
            if now - self._checked < self.ttl:  # another thread refreshed while this one waited
                return self._snap
            try:
                revision = self.catalog.revision()
                if revision != self._snap.revision:
                    image_item = {i.image_id: i.item_id for i in self.catalog.iter_images()}
                    rows = self.catalog.get_items(list(dict.fromkeys(image_item.values())))
                    self._filters = {}
                    self._snap = _Snapshot(revision, image_item, frozenset(image_item), rows)
            except Unavailable as exc:
                if self._snap is _EMPTY:
                    raise
                if not self._unreachable:
                    log.warning(
                        "catalog unreachable: search answers from the rows of revision %d "
                        "until it is back (%s)", self._snap.revision, exc.message,
                    )  # fmt: skip
                self._unreachable = True
            else:
                if self._unreachable:
                    log.info("catalog reachable again at revision %d", self._snap.revision)
                self._unreachable = False
            self._checked = now
            return self._snap

    def load(self) -> None:
        """Read the catalog now (with a generation's load), so no request pays for it."""
        self._checked = 0.0
        self._refresh()

    @property
    def stale_note(self) -> str | None:
        """What an answer from these rows must say while the database is unreachable."""
        if not self._unreachable:
            return None
        return (
            f"catalog database unreachable: items as of catalog revision {self._snap.revision} "
            "(availability and prices may have changed since)"
        )

    @property
    def holds_rows(self) -> bool:
        """Whether it has read the catalog at least once (so it answers without the database)."""
        return self._snap is not _EMPTY

    def revision(self) -> int:
        """The catalog revision this view reflects (read from the store at most every ``ttl``)."""
        return self._refresh().revision

    def items(self, ids: Sequence[str]) -> dict[str, Item]:
        """Items by id from memory; ids unknown to the view (no image, or gone) are absent."""
        rows = self._refresh().items
        return {i: rows[i] for i in ids if i in rows}

    def item(self, item_id: str) -> Item | None:
        """One item from memory, or None (no image, gone, or not seen yet)."""
        return self._refresh().items.get(item_id)

    def categories(self) -> list[tuple[str, int]]:
        """``(category, item count)`` of the items in memory, most first (as the store's)."""
        counts = Counter(item.category for item in self._refresh().items.values())
        return sorted(counts.items(), key=lambda r: (-r[1], r[0]))

    def image_ids(self) -> frozenset[int]:
        """The catalog's image ids as of :meth:`revision` (what an index should hold)."""
        return self._refresh().ids

    def image_items(self) -> dict[int, str]:
        """image id → item id, as of :meth:`revision` (read it once per lookup)."""
        return self._refresh().image_item

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


_VIEWS: weakref.WeakKeyDictionary[CatalogStore, CatalogView] = weakref.WeakKeyDictionary()
_VIEWS_LOCK = threading.Lock()


def _view_of(catalog: CatalogStore) -> CatalogView:
    """The one in-memory view of ``catalog`` (made on first use, freed with the store)."""
    with _VIEWS_LOCK:
        view = _VIEWS.get(catalog)
        if view is None:
            view = _VIEWS[catalog] = CatalogView(catalog)
        return view


class SearchService:
    """Answers searches with one embedder and one index; stateless apart from caches.

    ``crops`` is the default crop mode of :meth:`search_image` (``auto``: the region the model
    was trained on; several crops when ``per_garment`` is asked for).
    """

    def __init__(
        self,
        catalog: CatalogStore,
        embedder: Embedder,
        index: LoadedIndex,
        *,
        crops: str = "auto",
    ) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.index = index
        self.view = _view_of(catalog)
        resolve_mode(embedder, crops)  # refuse an unknown mode now, not on the first search
        self.crops = crops
        try:
            self.view.load()  # with the generation, not on its first request
        except LookalikeError as exc:  # database down: the first search that needs it says so
            log.warning("catalog rows not loaded yet: %s", exc.message)

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
        per_garment: bool = False,
        crops: str | None = None,
        box: Box | None = None,
        phases: Phases | None = None,
    ) -> SearchResult:
        """Items that look like the garment(s) in a shopper's ``image``.

        ``crops`` overrides the service's crop mode for this call. With ``per_garment`` the
        result's ``groups`` hold each region's own top ``k`` (garments first, best first), and
        mode ``auto`` becomes ``multi``. ``box`` (normalised x0, y0, x1, y1, drawn by the
        shopper) replaces the crops: that area is embedded as it is, region ``"box"``.
        ``phases`` runs the embed and lookup phases (default: on this service).
        """
        started = time.perf_counter()
        run = phases or _Direct(self)
        wanted = crops or self.crops
        # Per-garment results need the garments: "auto" then means several crops.
        mode = resolve_mode(self.embedder, "multi" if per_garment and wanted == "auto" else wanted)

        def embed(s: SearchService) -> tuple[list[QueryCrop], np.ndarray]:
            if box is not None:
                vectors, worn = embed_box(s.embedder, image, box)
                return [QueryCrop("box", box, worn=worn)], _finite(vectors)
            regions, vectors = s.query_vectors(image, mode)
            return regions, _finite(vectors)

        (regions, vectors), by, why_embed = run.embed(embed)
        (hits, groups), at, why_index = run.lookup(
            lambda s: s.search_crops(
                regions,
                vectors,
                k=k,
                category=category,
                available=available,
                per_garment=per_garment,
            )
        )
        used = "multi" if len(regions) > 1 else regions[0].region if regions else "whole"
        return self._result(hits, started, by, at, why_embed + why_index, groups, used)

    def query_vectors(
        self, image: Image.Image, crops: str | None = None
    ) -> tuple[list[QueryCrop], np.ndarray]:
        """The embedding step of :meth:`search_image`: its crops and their query vectors."""
        return embed_query_crops(self.embedder, image, crops or self.crops)

    def search_rows(
        self,
        images: Sequence[Image.Image],
        boxes: Sequence[Box | None],
        rows: np.ndarray,
        *,
        backbone: tuple[str, str],
        unworn: Sequence[str | None] | None = None,
        k: int = 20,
        phases: Phases | None = None,
    ) -> list[SearchResult | None]:
        """:meth:`search_image` ``(images[i], k=k, box=boxes[i])`` for a batch of photos whose
        backbone rows were computed already, with one index lookup for the batch.

        ``rows[i]`` is the unit backbone row of ``images[i]`` cut to ``boxes[i]`` (the whole
        photo for None), computed on ONNX Runtime CPU by the model file ``backbone`` names:
        (model ref, variant), e.g. ``("effnet_lite0:3", "int8")``. This service's head turns
        them into query vectors, so no photo is preprocessed or embedded again. An entry is
        None where the rows cannot stand for this service's own embedding (another model,
        variant or engine; a photo without a box that this model's crop mode cuts itself; a
        non-finite row): search that photo with :meth:`search_image`.

        A box is taken to be a garment worn by a person (the detector's garment box, as
        :func:`~lookalike.search.crops.embed_box` reads a box on a photo with someone in it).
        ``unworn[i]``, for a photo without a box, is the key of the body-part detector that found
        no worn garment in it (:attr:`~lookalike.embed.bodyparts.BodyPartDetector.key`): when it
        is this model's own detector, a garment or multi-crop search would embed the photo
        whole, so ``rows[i]`` (the whole photo's row) stands in for that too.
        """
        started = time.perf_counter()
        out: list[SearchResult | None] = [None] * len(images)
        info = self.embedder.info
        project = getattr(self.embedder, "project", None)
        ref, variant = backbone
        same = (info.ref, info.variant, info.served_by) == (
            ref,
            variant,
            f"onnxruntime-cpu:{variant}",
        )
        if not same or project is None:
            return out
        mode = resolve_mode(self.embedder, self.crops)
        detector = getattr(self.embedder, "detector", None)
        own = detector.key if detector is not None and mode not in FIXED_REGIONS else None
        todo: list[tuple[int, QueryCrop]] = []
        for i, box in enumerate(boxes):
            if box is not None:
                todo.append((i, QueryCrop("box", box, worn=True)))
            elif mode == "whole" or (own is not None and unworn and unworn[i] == own):
                # what query_vectors cuts then: the photo as it is
                todo.append((i, QueryCrop("whole", FIXED_REGIONS["whole"])))
        todo = [(i, c) for i, c in todo if np.all(np.isfinite(rows[i]))]
        if not todo:
            return out
        crops = [crop_box(images[i], c.box) for i, c in todo]
        vectors = np.empty((len(todo), info.dim), np.float32)
        for worn in (False, True):  # a box here is the garment a detector found on a person
            part = [j for j, (_, c) in enumerate(todo) if c.worn == worn]
            if part:
                picked = np.asarray(rows[[todo[j][0] for j in part]])
                vectors[part] = project(picked, "query", [crops[j] for j in part], worn=worn)
        vectors = _finite(vectors)
        regions = [c for _, c in todo]
        each, at, why = (phases or _Direct(self)).lookup(
            lambda s: s._hits_each(regions, vectors, k=k)
        )
        for (i, region), hits in zip(todo, each, strict=True):
            out[i] = self._result(
                hits, started, self, at, why, crop_mode=region.region, served_by="backbone-rows"
            )
        return out

    def _hits_each(
        self, regions: Sequence[QueryCrop], vectors: np.ndarray, *, k: int
    ) -> list[list[Hit]]:
        """:meth:`search_crops` of each region alone (one query vector each), in one lookup."""
        out = []
        for region, ranked in zip(regions, self._ranked_many(vectors, k=k), strict=True):
            merged = merge_best([ranked], k)
            items = self.view.items([item_id for item_id, *_ in merged])
            out.append(
                [
                    self._hit(items[item_id], score, image_id, region)
                    for item_id, score, image_id, _ in merged
                    if item_id in items
                ]
            )
        return out

    def search_crops(
        self,
        regions: Sequence[QueryCrop],
        vectors: np.ndarray,
        *,
        k: int,
        category: str | None = None,
        available: bool | None = None,
        per_garment: bool = False,
    ) -> tuple[list[Hit], list[GarmentGroup]]:
        """The index step of :meth:`search_image`: one lookup per crop, merged by best score.

        Returns the merged hits and, with ``per_garment``, each region's own hits.
        """
        ranked = [self._ranked(v, k=k, category=category, available=available) for v in vectors]
        merged = merge_best(ranked, k)
        items = self.view.items([item_id for item_id, *_ in merged])
        hits = [
            self._hit(items[item_id], score, image_id, regions[ci])
            for item_id, score, image_id, ci in merged
            if item_id in items
        ]
        groups: list[GarmentGroup] = []
        if per_garment:
            garments = [i for i, r in enumerate(regions) if r.region != "whole"] or [0]
            for i in garments:
                own = self.view.items([item_id for item_id, *_ in ranked[i]])
                group_hits = [
                    self._hit(own[item_id], score, image_id, regions[i])
                    for item_id, score, image_id in ranked[i]
                    if item_id in own
                ]
                r = regions[i]
                box = None if r.region == "whole" else r.box
                groups.append(GarmentGroup(r.region, box, r.score, group_hits))
        return hits, groups

    @staticmethod
    def _hit(item: Item, score: float, image_id: int, region: QueryCrop) -> Hit:
        box = None if region.region == "whole" else region.box
        return Hit(item, score, image_id, region.region, box, region.worn)

    def item_image(self, item_id: str) -> Image.Image:
        """The photo that stands for ``item_id`` in similar-item searches (its first image)."""
        item = self.view.item(item_id)
        if item is None:  # not in memory: the store says NotFound, or gives an imageless item
            item = self.catalog.get_item(item_id)
        if not item.images:
            raise NotFound(f"item {item_id!r} has no images to compare")
        return load_image_file(self.catalog.media_path(item.images[0]))

    def similar(
        self,
        item_id: str,
        *,
        k: int = 20,
        category: str | None = None,
        available: bool | None = None,
        phases: Phases | None = None,
    ) -> SearchResult:
        """Items that look like ``item_id`` (its first image), the item itself excluded;
        ``NotFound`` (404) for an unknown item.

        The item's vector is read back from the index when its first image is in it (the index
        was built with this embedder: no decode, no CNN pass; ``served_by`` says
        ``index-vector``); otherwise its photo is embedded as a query would be.
        """
        started = time.perf_counter()
        run = phases or _Direct(self)
        stored = self._stored_vector(item_id)
        if stored is not None:
            vector, by, why_embed, path = stored, self, [], "index-vector"
        else:
            image = self.item_image(item_id)
            vector, by, why_embed = run.embed(lambda s: _finite(s.embedder.embed([image])[0]))
            path = None
        hits, at, why_index = run.lookup(
            lambda s: s.search_vector(
                vector, k=k, category=category, available=available, exclude=(item_id,)
            )
        )
        return self._result(hits, started, by, at, why_embed + why_index, served_by=path)

    def _stored_vector(self, item_id: str) -> np.ndarray | None:
        """The index's vector of ``item_id``'s first image, or None (not in memory, not
        indexed, or unreadable: the caller embeds the photo instead)."""
        item = self.view.item(item_id)
        if item is None or not item.images:
            return None
        ids = np.array([item.images[0].image_id], dtype=np.int64)
        try:
            if not self.index.index.contains(ids)[0]:
                return None
            vector = np.asarray(self.index.index.reconstruct(ids)[0], dtype=np.float32)
        except Exception:  # noqa: BLE001 - any index trouble: embed the photo as before
            log.warning("similar: no stored vector for item %s; embedding its photo", item_id)
            return None
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            return None
        return vector / norm  # a compressed index gives back an approximation

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
        top = self._ranked(vector, k=k, category=category, available=available, exclude=exclude)
        items = self.view.items([item_id for item_id, _, _ in top])
        return [
            Hit(items[item_id], score, image_id)
            for item_id, score, image_id in top
            if item_id in items
        ]

    def _ranked(
        self,
        vector: np.ndarray,
        *,
        k: int,
        category: str | None = None,
        available: bool | None = None,
        exclude: Sequence[str] = (),
    ) -> list[tuple[str, float, int]]:
        """Top ``k`` ``(item_id, score, image_id)``, best image per item, without catalog rows."""
        return self._ranked_many(
            vector.reshape(1, -1), k=k, category=category, available=available, exclude=exclude
        )[0]

    def _ranked_many(
        self,
        vectors: np.ndarray,
        *,
        k: int,
        category: str | None = None,
        available: bool | None = None,
        exclude: Sequence[str] = (),
    ) -> list[list[tuple[str, float, int]]]:
        """:meth:`_ranked` of each row of ``vectors`` ``(m, dim)``, in one index search (a row
        that finds fewer than ``k`` items is searched again, deeper, on its own)."""
        queries = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        out: list[list[tuple[str, float, int]]] = [[] for _ in queries]
        allowed = self.view.allowed(category, available)
        if allowed is not None and len(allowed) == 0:
            return out
        index = self.index.index
        total = index.ntotal if allowed is None else min(index.ntotal, len(allowed))
        fetch = min(total, max(3 * k, k + 10))
        image_item = self.view.image_items()  # one snapshot for the whole lookup
        todo = list(range(len(queries)))
        while todo:
            scores, ids = index.search(queries[todo], max(fetch, 1), allowed=allowed)
            short = []
            for row, qi in enumerate(todo):
                best: dict[str, tuple[float, int]] = {}
                for score, image_id in zip(scores[row], ids[row], strict=True):
                    if image_id < 0:
                        continue
                    item_id = image_item.get(int(image_id))
                    if item_id is None or item_id in exclude or item_id in best:
                        continue  # results are sorted: the first image seen is the item's best
                    best[item_id] = (float(score), int(image_id))
                out[qi] = [(item_id, s, image_id) for item_id, (s, image_id) in best.items()][:k]
                if len(best) < k and fetch < total:
                    short.append(qi)
            todo = short
            fetch = min(total, fetch * 4)
        return out

    def _result(
        self,
        hits: list[Hit],
        started: float,
        by: SearchService,
        at: SearchService,
        why: list[str],
        groups: list[GarmentGroup] | None = None,
        crop_mode: str = "whole",
        served_by: str | None = None,
    ) -> SearchResult:
        # The model version is this service's even when a fallback runtime of the same model
        # answered (``served_by`` says which); a fallback index answers with its own version.
        return SearchResult(
            hits,
            self.embedder.info.ref,
            str(at.index.ref),
            served_by or by.embedder.info.served_by,
            round((time.perf_counter() - started) * 1000, 2),
            groups or [],
            crop_mode,
            "; ".join(why) or None,
        )
