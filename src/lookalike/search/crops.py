"""Which parts of a shopper's photo a search embeds, and how their results merge.

Modes (``SearchService(crops=...)``, ``lookalike eval retrieval --crop``):

``auto``     ``model``; with ``per_garment`` search, ``multi`` (measured on viton-dev: merging
             the whole photo and localiser boxes into one list costs recall, 0.45 vs 0.65
             Recall@1, so several crops are opt-in; see docs/search-quality.md)
``model``    the one region the model was trained on (its manifest's ``query_crop``)
``whole`` / ``upper`` / ``lower``   one fixed region
``garment``  the localiser's best garment box (``model`` when nothing is found)
``multi``    the whole photo plus each garment the localiser finds (upper, lower, full body);
             without a localiser, the whole photo plus the fixed ``upper`` and ``lower`` regions;
             with the body-part detector, each garment a person wears without the whole photo
             (a photo with no person: the whole photo alone)

With a localiser the whole photo is embedded in the same backbone pass that finds the garments;
the garment crops then go through the model in one batch. Results merge by the best score per
item, and each hit says which region matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookalike.core.errors import InvalidInput
from lookalike.embed import Embedder
from lookalike.embed.regions import FIXED_REGIONS, Box, crop_box

__all__ = [
    "CROP_MODES",
    "QueryCrop",
    "embed_box",
    "embed_query_crops",
    "merge_best",
    "resolve_mode",
]

CROP_MODES = ("auto", "model", "whole", "upper", "lower", "garment", "multi")
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class QueryCrop:
    """One region of the query photo: ``region`` ("whole", "upper", "full" ...), its box."""

    region: str
    box: Box
    score: float = 1.0  # the localiser's confidence for a garment box, 1 for fixed regions
    worn: bool = False  # a garment on a person (the detector found one): see embed_box


def _has_localizer(embedder: Embedder) -> bool:
    return getattr(embedder, "localizer", None) is not None


def _has_detector(embedder: Embedder) -> bool:
    return getattr(embedder, "detector", None) is not None


def resolve_mode(embedder: Embedder, mode: str) -> str:
    """The concrete mode ``mode`` means for this embedder (``auto`` and ``model`` resolved)."""
    if mode not in CROP_MODES:
        raise InvalidInput(f"unknown crop mode {mode!r}; choose one of {', '.join(CROP_MODES)}")
    if mode == "auto":
        mode = "model"
    if mode == "model":
        mode = str(getattr(embedder, "query_crop", "whole"))
        if mode not in FIXED_REGIONS and mode != "garment":
            mode = "whole"
    return mode


def embed_query_crops(
    embedder: Embedder, image: Image.Image, mode: str = "auto"
) -> tuple[list[QueryCrop], np.ndarray]:
    """Cut the crops ``mode`` asks for out of ``image`` and embed them as queries.

    Returns the crops and their ``(len(crops), dim)`` embeddings (``role="query"``).
    """
    mode = resolve_mode(embedder, mode)
    if mode in FIXED_REGIONS:
        box = FIXED_REGIONS[mode]
        vectors = embedder.embed([crop_box(image, box)], role="query")
        return [QueryCrop(mode, box)], vectors
    whole_vec: np.ndarray | None = None
    if _has_detector(embedder):
        return _detected_crops(embedder, image, mode)
    if _has_localizer(embedder):
        whole_vec, found = embedder.embed_and_locate([image], role="query")  # type: ignore[attr-defined]
        garments = [QueryCrop(g.label, g.box, g.score) for g in found[0]]
    else:
        garments = [QueryCrop(r, FIXED_REGIONS[r]) for r in ("upper", "lower")]
    if mode == "garment":
        if not garments or not (_has_localizer(embedder) or _has_detector(embedder)):
            fallback = resolve_mode(embedder, "model")
            alone = "whole" if fallback == "garment" else fallback  # a garment alone: as it is
            return embed_query_crops(embedder, image, alone)
        garments = garments[:1]
        crops: list[QueryCrop] = []
    else:
        crops = [QueryCrop("whole", WHOLE)]
    crops += garments
    todo = [c for c in crops if not (c.region == "whole" and whole_vec is not None)]
    cut = [crop_box(image, c.box) for c in todo]
    crop_vecs = embedder.embed(cut, role="query") if todo else np.zeros((0, 1), np.float32)
    rows: list[np.ndarray] = []
    it = iter(crop_vecs)
    for c in crops:
        rows.append(whole_vec[0] if c.region == "whole" and whole_vec is not None else next(it))
    return crops, np.stack(rows).astype(np.float32)


def _detected_crops(
    embedder: Embedder, image: Image.Image, mode: str
) -> tuple[list[QueryCrop], np.ndarray]:
    """``garment`` / ``multi`` with the body-part detector: the worn garments (``multi``: each
    one the detector places, the main one first), each embedded with the photo's context taken
    out (``LoadedEmbedder.embed_regions``); a photo with no person is embedded whole.

    ``multi`` leaves out the whole photo of a person: its row, uncorrected, points where every
    photo of a person points, and merged with the garments it took the first places of the
    list (viton-dev val R@10 0.010 with it, against 0.259 for the main garment alone).
    """
    found, person = embedder.locate_people([image])[0]  # type: ignore[attr-defined]
    if not found:  # a garment alone, or a person the detector could not place a garment on
        whole = embedder.embed([image], role="query", worn=person)  # type: ignore[call-arg]
        return [QueryCrop("whole", WHOLE, worn=person)], whole
    worn, rows = embedder.embed_worn(  # type: ignore[attr-defined]
        image, found, primary_only=mode == "garment"
    )
    crops = [QueryCrop(g.label, g.box, g.score, worn=True) for g in worn]
    return crops, rows.astype(np.float32)


def embed_box(embedder: Embedder, image: Image.Image, box: Box) -> tuple[np.ndarray, bool]:
    """The query row of the area ``box`` of ``image`` (a box a shopper drew, or a garment box),
    embedded as it is. When the model's category signature is for garments alone
    (``kind_on_worn`` false), its body-part detector says whether the photo shows a person: if
    so (:meth:`~lookalike.embed.runtime.LoadedEmbedder.locate_people`), the area is a worn
    garment's. Returns the ``(1, dim)`` row and whether it is worn."""
    area = crop_box(image, box)
    head = getattr(embedder, "head", None)
    if not _has_detector(embedder) or head is None or head.kind_on_worn or not head.uses_category:
        return embedder.embed([area], role="query"), False
    worn = embedder.locate_people([image])[0][1]  # type: ignore[attr-defined]
    return embedder.embed([area], role="query", worn=worn), worn  # type: ignore[call-arg]


def merge_best(
    per_crop: Sequence[Sequence[tuple[str, float, int]]], k: int
) -> list[tuple[str, float, int, int]]:
    """Merge ranked ``(item_id, score, image_id)`` lists: the best score per item wins.

    Returns ``(item_id, score, image_id, crop_index)`` sorted by score, at most ``k``.
    """
    best: dict[str, tuple[float, int, int]] = {}
    for ci, hits in enumerate(per_crop):
        for item_id, score, image_id in hits:
            if item_id not in best or score > best[item_id][0]:
                best[item_id] = (score, image_id, ci)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
    return [(item, s, img, ci) for item, (s, img, ci) in ranked]
