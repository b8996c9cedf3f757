"""Offline retrieval evaluation: shopper photos against a gallery of catalog photos.

``pairs.csv`` has columns item_id, person (query photo), product (catalog photo) and optionally
split; paths are relative to a root folder. Every product photo (plus optional distractor photos)
forms the gallery; each person photo is a query whose one relevant answer is its own product.
Recall@K is the share of queries whose product ranks in the top K; with one relevant answer per
query, average precision is 1/rank, so mAP is the mean reciprocal rank
(:func:`lookalike.core.metrics.rank_metrics`, the one implementation).

About a fifth of viton pairs have a product photo byte-identical to another gallery photo; a tie
with that twin is a coin flip in search. ``recall_dedup`` (same keys as ``recall``) counts such a
twin (same sha256 of the file bytes) as found; ``pairs_with_twin`` says how many pairs have one.

Queries are cut and embedded as search does (:mod:`lookalike.search.crops`, ``crop`` mode,
``role="query"``); with several crops a gallery photo scores its best crop. Gallery photos are
embedded whole with ``role="catalog"``. A ``cache`` (backbone features on disk) makes repeated
runs of fixed-region modes take seconds.

A photo that is missing or does not decode (a typo in the CSV, a truncated download, a text file
named ``.jpg``) is skipped with its reason before any embedding, not a failed run: its pairs (or
the distractor) leave the evaluation and the report says how many and why (``skipped``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.core.images import photo_problem, read_named_photo
from lookalike.core.metrics import duplicate_groups, hub_share, rank_metrics
from lookalike.core.progress import Progress, relabelled
from lookalike.core.textfiles import csv_rows
from lookalike.embed import Embedder
from lookalike.embed.cache import CropSpec, FeatureCache
from lookalike.embed.heads import Role
from lookalike.embed.regions import FIXED_REGIONS
from lookalike.registry import sha256_file
from lookalike.search.crops import embed_query_crops, resolve_mode

__all__ = [
    "Pair",
    "RetrievalReport",
    "drop_unreadable",
    "embed_paths",
    "evaluate_retrieval",
    "read_pairs",
]


@dataclass(frozen=True)
class Pair:
    item_id: str
    person: str
    product: str
    split: str | None = None


@dataclass
class RetrievalReport:
    model: str
    served_by: str
    queries: int
    gallery: int
    distractors: int
    recall: dict[str, float]
    map: float
    seconds: float
    # Duplicate-aware: a byte-identical twin of the true product counts as found.
    recall_dedup: dict[str, float] = field(default_factory=dict)
    pairs_with_twin: int = 0
    # Photos left out because they are missing or do not decode, with the pairs they took along.
    skipped: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_pairs(path: Path, split: str | None = None) -> list[Pair]:
    rows = csv_rows(path)
    missing = {"item_id", "person", "product"} - set(rows[0] if rows else [])
    if rows and missing:
        raise InvalidInput(f"{path}: missing columns {sorted(missing)}")
    pairs = []
    for line, r in enumerate(rows, start=2):
        empty = [c for c in ("person", "product") if not r[c].strip()]
        if empty:
            raise InvalidInput(f"{path} line {line}: {' and '.join(empty)} is empty")
        pairs.append(Pair(r["item_id"], r["person"], r["product"], r.get("split") or None))
    if split is not None:
        if not any(p.split for p in pairs):
            raise InvalidInput(f"{path} has no split column, so --split {split} cannot filter it")
        wanted = split.strip().casefold()  # `Val`, `val ` and `val` are one split
        pairs = [p for p in pairs if (p.split or "").strip().casefold() == wanted]
    if not pairs:
        raise InvalidInput(f"{path}: no pairs" + (f" in split {split!r}" if split else ""))
    return pairs


def drop_unreadable(
    pairs: Sequence[Pair], root: Path, distractors: Sequence[Path] = ()
) -> tuple[list[Pair], list[Path], dict[str, object]]:
    """The pairs and distractors whose photos all decode, and what was left out and why."""
    paths = sorted({root / p.person for p in pairs} | {root / p.product for p in pairs})
    paths += sorted(set(distractors) - set(paths))
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip(paths, pool.map(photo_problem, paths), strict=True))
    problems = {path: why for path, why in found.items() if why}
    kept = [p for p in pairs if not {root / p.person, root / p.product} & problems.keys()]
    extra = [d for d in distractors if d not in problems]
    reasons = [problems[path] for path in paths if path in problems]
    if pairs and not kept:
        raise InvalidInput(
            f"no pair has readable photos ({len(reasons)} photos skipped; first: {reasons[0]})"
        )
    skipped = {
        "photos": len(reasons),
        "pairs": len(pairs) - len(kept),
        "distractors": len(distractors) - len(extra),
        "reasons": reasons[:20],
    }
    return kept, extra, skipped


def embed_paths(
    embedder: Embedder,
    paths: Sequence[Path],
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
    role: Role = "catalog",
) -> np.ndarray:
    """Embed image files in order (decoded in two threads while the model runs).

    ``role="query"`` for shopper photos when the model has separate towers.
    """
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images = list(pool.map(read_named_photo, chunk))
            out.append(embedder.embed(images, role=role))
            if progress:
                progress("embedding", start + len(chunk), len(paths))
    if not out:
        return np.zeros((0, embedder.info.dim), np.float32)
    return np.concatenate(out).astype(np.float32)


def _query_rows(
    embedder: Embedder, paths: Sequence[Path], mode: str, progress: Progress | None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Embeddings of every crop of every query photo, the query each row belongs to, and how
    often each region was used."""
    rows: list[np.ndarray] = []
    owner: list[int] = []
    regions: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(paths), 32):
            chunk = paths[start : start + 32]
            for i, image in enumerate(pool.map(read_named_photo, chunk)):
                crops, vectors = embed_query_crops(embedder, image, mode)
                rows.append(vectors)
                owner.extend([start + i] * len(crops))
                for c in crops:
                    regions[c.region] = regions.get(c.region, 0) + 1
            if progress:
                progress("embedding", start + len(chunk), len(paths))
    return np.concatenate(rows).astype(np.float32), np.asarray(owner), regions


def _cached_rows(
    embedder: Embedder, cache: FeatureCache, paths: Sequence[Path], crop: CropSpec, role: Role
) -> np.ndarray:
    """Backbone rows from ``cache``, finished by the embedder's head (if it has one)."""
    feats = cache.features(paths, crop)
    head = getattr(embedder, "head", None)
    if head is None:
        return feats
    colour = cache.features(paths, crop, kind="colour") if head.uses_colour else None
    if colour is not None and colour.shape[1] != head.colour_bins**3:
        raise InvalidInput("the feature cache's colour histograms do not fit this head")
    return head.apply(feats, role, colour)


def _file_digests(paths: Sequence[Path]) -> list[str]:
    """sha256 of each file's bytes (read in two threads: thousands of small photos)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(sha256_file, paths))


def evaluate_retrieval(
    embedder: Embedder,
    pairs: Sequence[Pair],
    root: Path,
    *,
    distractors: Sequence[Path] = (),
    progress: Progress | None = None,
    crop: str = "auto",
    cache: FeatureCache | None = None,
) -> RetrievalReport:
    """Recall@1/5/10/20 (strict and duplicate-aware) and mAP of ``pairs`` (module docstring).

    ``crop`` is a search crop mode (``auto``: as search does for this model). ``cache`` must
    hold features of this embedder's backbone; it is used for the gallery and for fixed-region
    query modes (localiser crops differ per photo and are always computed).
    """
    started = time.perf_counter()
    mode = resolve_mode(embedder, crop)
    pairs, distractors, skipped = drop_unreadable(pairs, root, distractors)
    products = sorted({p.product for p in pairs})
    row = {name: i for i, name in enumerate(products)}
    gallery_paths = [root / p for p in products] + list(distractors)
    query_paths = [root / p.person for p in pairs]
    total = len(gallery_paths) + len(query_paths)

    def step(offset: int) -> Progress | None:  # gallery, then queries: one count over both
        return relabelled(progress, offset=offset, total=total)

    owner = None
    regions = {mode: len(query_paths)}
    if cache is not None:
        gallery = _cached_rows(embedder, cache, gallery_paths, CropSpec("whole"), "catalog")
    else:
        gallery = embed_paths(embedder, gallery_paths, progress=step(0))
    if cache is not None and mode in FIXED_REGIONS:
        queries = _cached_rows(embedder, cache, query_paths, CropSpec(mode), "query")
    else:
        queries, owner, regions = _query_rows(embedder, query_paths, mode, step(len(gallery_paths)))
    relevant = np.asarray([row[p.product] for p in pairs])
    recall, mean_ap, _ = rank_metrics(queries, gallery, relevant, owner=owner)
    groups = duplicate_groups(_file_digests(gallery_paths))
    recall_dedup, _, _ = rank_metrics(queries, gallery, relevant, owner=owner, groups=groups)
    group_size = np.bincount(groups, minlength=len(groups))
    return RetrievalReport(
        model=embedder.info.ref,
        served_by=embedder.info.served_by,
        queries=len(pairs),
        gallery=len(gallery_paths),
        distractors=len(distractors),
        recall=recall,
        map=mean_ap,
        seconds=round(time.perf_counter() - started, 1),
        recall_dedup=recall_dedup,
        pairs_with_twin=int((group_size[groups[relevant]] > 1).sum()),
        skipped=skipped,
        extra={
            "crop": mode,
            "regions": regions,
            "cached": cache is not None,
            "hubness": hub_share(queries, gallery, owner),
        },
    )
