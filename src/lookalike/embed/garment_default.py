"""The shipped default's garment-aware head, fitted at build time on the bundled demo photos only.

Nothing trained on research-only data ships, so the default is the ImageNet backbone plus what
the bundled, freely licensed demo catalog (``demo/catalog``: photos with categories) and a
shippable detector can give:

1. **where** — the body-part detector (:mod:`lookalike.embed.bodyparts`) cuts a shopper's photo
   of a person to the worn garment (a garment alone is embedded whole). Catalog photos are
   embedded whole: cut and context-corrected the same way, the catalog's photos of models all
   shared one direction and became hubs (R@10 0.067 against 0.27 on viton-dev val);
2. **centring and context** (the hubness fix) — ImageNet features of clothing photos all point
   the same way (every cosine is 0.4–0.7), so a few catalog items that sit nearest the common
   direction top every query. Subtracting the mean feature of the demo photos removes that
   shared direction; a worn garment's crop also loses :data:`CONTEXT_WEIGHT` of its whole
   photo's centred row (skin, hair, the street), which a catalog photo does not have;
3. **colour** — a 64-bin HSV histogram of the garment crop, appended with ``colour_weight``;
4. **kind** — a linear softmax over the demo categories on the backbone features. It decides
   whether a person wears a full-length garment (search the full box) or separates (the top
   first), and it is appended as the square roots of its probabilities with
   ``category_weight`` (see :mod:`lookalike.embed.heads`) so items of the query's kind score
   higher — on catalog rows and on queries of a garment alone only: fitted on flat demo photos,
   it misreads worn garments, whose query rows carry no signature (see :data:`CATEGORY_WEIGHT`).

The weights (:data:`COLOUR_WEIGHT`, :data:`CATEGORY_WEIGHT`, :data:`CONTEXT_WEIGHT`) were chosen
in probes over cached features of viton-dev val and street photos — the sets they are reported
on, so the figures in docs/search-quality.md are optimistic for unseen data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import InvalidInput
from lookalike.core.progress import Progress
from lookalike.embed.bodyparts import BodyPartDetector, garment_boxes
from lookalike.embed.heads import ProjectionHead, Tower, fit_softmax, l2_normalise
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.regions import colour_histogram, crop_box

__all__ = [
    "CATEGORY_WEIGHT",
    "COLOUR_WEIGHT",
    "KIND_CLASSIFIER_FILE",
    "GarmentHeadFit",
    "KindClassifier",
    "fit_garment_head",
    "load_kind_classifier",
    "save_kind_classifier",
]

COLOUR_WEIGHT = 0.5
# The kind signature, for photos of a garment alone. The classifier, fitted on flat demo photos,
# reads most worn garments as dresses (221 of 264 street photos of separates): on worn queries it
# sent 95% of street queries of separates to dresses, so worn query rows carry none
# (``kind_on_worn`` false) and rank as without it. On held-out flat clothing photos (the 1,286
# of ../shared/data/clothing that are not demo photos, of a demo category) the right kind came
# first for 0.40 / 0.35 of each half at 0, 0.46 / 0.46 at 0.75, the best on the first half
# (0.25: 0.42, 0.5: 0.45, 1.0: 0.46, 1.5: 0.44; docs/search-quality.md).
CATEGORY_WEIGHT = 0.75
# A worn garment's row minus this share of its photo's (centred) row: see
# LoadedEmbedder.embed_regions. 0.9 on viton-dev train-like probes; 0 turns it off.
CONTEXT_WEIGHT = 0.9
# Kinds that run from the shoulders to the legs: for these the full-length box is the garment.
FULL_BODY = ("Dress", "Body", "Jumpsuit", "Romper")
COLOUR_BINS = 4
MIN_PER_CATEGORY = 3  # rarer categories are left out of the classifier (too few to learn)
# Weights of the kind classifier fitted on more photos than the demo catalog holds, beside its
# items.csv (scripts/fit_kind_classifier.py); a build uses them when they fit (see below).
KIND_CLASSIFIER_FILE = "kind_classifier.npz"
# ... and when they name the build's own demo photos this well. They were fitted on them and
# name 0.92 of them; another backbone's features would give near chance (1 in 11), so the bar
# sits well below 0.92, where a float's worth of difference between machines cannot reach.
KIND_CLASSIFIER_MIN_DEMO_ACCURACY = 0.8


@dataclass
class KindClassifier:
    """A softmax ``w (in, C)``, ``b (C,)`` over ``classes`` and what its file says of its fit."""

    w: np.ndarray
    b: np.ndarray
    classes: tuple[str, ...]
    figures: dict[str, Any]


def save_kind_classifier(
    path: Path, w: np.ndarray, b: np.ndarray, classes: Sequence[str], figures: dict[str, Any]
) -> None:
    """Write a kind classifier file (npz: ``w``, ``b``, ``meta`` JSON with classes, figures)."""
    import io
    import json

    meta = json.dumps({"classes": list(classes), "figures": figures})
    buf = io.BytesIO()
    np.savez(buf, w=np.asarray(w, np.float32), b=np.asarray(b, np.float32), meta=np.asarray(meta))
    Path(path).write_bytes(buf.getvalue())


def load_kind_classifier(path: Path) -> KindClassifier:
    """Read :func:`save_kind_classifier`'s file; ``InvalidInput`` naming what is wrong."""
    import json

    try:
        with np.load(path, allow_pickle=False) as data:
            w, b = np.asarray(data["w"], np.float32), np.asarray(data["b"], np.float32)
            meta = json.loads(str(data["meta"]))
        classes = tuple(str(c) for c in meta["classes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: not a kind classifier file ({exc})") from exc
    if w.ndim != 2 or w.shape[1] != len(classes) or b.shape != (len(classes),):
        raise InvalidInput(f"{path}: weights {w.shape} do not fit {len(classes)} classes")
    return KindClassifier(w, b, classes, dict(meta.get("figures") or {}))


@dataclass
class GarmentHeadFit:
    """The fitted head and the figures the manifest records about its fit."""

    head: ProjectionHead
    figures: dict[str, Any]
    score_labels: dict[str, float]
    score_labels_worn: dict[str, float]


def _features(
    run: Any, cfg: PreprocessConfig, detector: BodyPartDetector, images: Sequence[Image.Image]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Backbone rows and colour rows of each photo's garment crop; how many had a person."""
    crops, people = [], 0
    for img, found in zip(images, (garment_boxes(p) for p in detector.detect(images)), strict=True):
        people += bool(found)
        crops.append(crop_box(img, found[0].box) if found else img)
    feats = []
    for start in range(0, len(crops), 32):
        feats.append(np.asarray(run(preprocess_batch(crops[start : start + 32], cfg)), np.float32))
    colour = np.stack([colour_histogram(c, COLOUR_BINS) for c in crops])
    return l2_normalise(np.concatenate(feats)), colour, people


def _score_labels(
    vectors: np.ndarray, labels: Sequence[str], queries: np.ndarray | None = None
) -> dict[str, float]:
    """Plain-language thresholds from pairs of demo photos (no shopper data needed).

    ``Similar``: scored above 90% of pairs of *different* kinds of garment; ``Close``: above 99%
    of them; ``Very close``: above 99% of pairs of the same kind (nearly the same garment).
    ``queries`` (default ``vectors``): the same photos as query rows of another kind (worn rows,
    without the category signature), scored against the catalog ``vectors``.
    """
    sims = (vectors if queries is None else queries) @ vectors.T
    lab = np.asarray(labels)
    same = lab[:, None] == lab[None, :]
    upper = np.triu(np.ones_like(same), k=1).astype(bool)
    other, alike = sims[upper & ~same], sims[upper & same]
    if not len(other) or not len(alike):
        return {}
    return {
        "Very close": round(float(np.quantile(alike, 0.99)), 4),
        "Close": round(float(np.quantile(other, 0.99)), 4),
        "Similar": round(float(np.quantile(other, 0.90)), 4),
    }


def fit_garment_head(
    run: Any,
    cfg: PreprocessConfig,
    detector: BodyPartDetector,
    labelled: Sequence[tuple[Image.Image, str]],
    say: Progress,
    *,
    colour_weight: float = COLOUR_WEIGHT,
    category_weight: float = CATEGORY_WEIGHT,
    classifier: KindClassifier | None = None,
) -> GarmentHeadFit:
    """Fit the default head on ``labelled`` (photo, category) pairs; ``run`` is the backbone's
    batch function ``(n, 3, S, S) -> (n, D)``.

    ``classifier`` (:func:`load_kind_classifier`, fitted on more photos of the same kinds) is
    the kind classifier when it has the classes the labelled photos have, their width, and names
    at least :data:`KIND_CLASSIFIER_MIN_DEMO_ACCURACY` of them right; otherwise one is fitted on
    the labelled photos alone. The figures say which, and why."""
    if len(labelled) < 20:
        raise InvalidInput(
            f"the default head needs at least 20 labelled photos, got {len(labelled)}"
        )
    images = [im for im, _ in labelled]
    cats = [c for _, c in labelled]
    say(f"finding garments and embedding {len(images)} labelled demo photos")
    feats, colour, people = _features(run, cfg, detector, images)
    counts = {c: cats.count(c) for c in sorted(set(cats))}
    kept = [i for i, c in enumerate(cats) if counts[c] >= MIN_PER_CATEGORY]
    say(f"{people} of {len(images)} photos show a person; categories {counts}")
    kept_cats = [cats[i] for i in kept]
    kinds, source = _kind_classifier(feats[kept], kept_cats, classifier)
    w, b, classes = kinds.w, kinds.b, kinds.classes
    say(f"kind classifier: {source}")
    mean = feats.mean(axis=0).astype(np.float32)
    head = ProjectionHead(
        Tower([], centre=mean),
        Tower([], centre=mean.copy()),
        kind="garment-default",
        colour_weight=colour_weight,
        colour_bins=COLOUR_BINS,
        category=(w, b),
        categories=classes,
        category_weight=category_weight,
        extra={
            "context_weight": CONTEXT_WEIGHT,
            "full_body": [c for c in classes if c in FULL_BODY],
            "kind_on_worn": False,
        },
    )
    vectors = head.apply(feats, "catalog", colour)
    worn_rows = head.apply(feats, "query", colour, worn=True)
    pred = np.asarray(classes)[head.category_probabilities(feats[kept]).argmax(axis=1)]
    train_acc = float(np.mean(pred == np.asarray([cats[i] for i in kept])))
    figures = {
        "photos": len(images),
        "with_person": people,
        "categories": counts,
        "category_train_accuracy": round(train_acc, 4),
        "colour_weight": colour_weight,
        "category_weight": category_weight,
        "category_classifier": source,
        "category_classifier_figures": kinds.figures,
        "centred_on": "mean backbone feature of the labelled demo photos",
    }
    say(f"category head: {len(classes)} classes, train accuracy {train_acc:.3f}")
    return GarmentHeadFit(
        head, figures, _score_labels(vectors, cats), _score_labels(vectors, cats, worn_rows)
    )


def _kind_classifier(
    feats: np.ndarray, cats: Sequence[str], shipped: KindClassifier | None
) -> tuple[KindClassifier, str]:
    """The shipped classifier when it fits these photos (see :func:`fit_garment_head`), else
    one fitted on them; with a line that says which."""
    classes = tuple(sorted(set(cats)))
    why = "no shipped classifier"
    if shipped is not None:
        if shipped.classes != classes:
            why = (
                f"the shipped classifier's classes {list(shipped.classes)} are not {list(classes)}"
            )
        elif shipped.w.shape[0] != feats.shape[1]:
            why = (
                f"the shipped classifier reads {shipped.w.shape[0]} features, not {feats.shape[1]}"
            )
        else:
            pred = np.asarray(classes)[(feats @ shipped.w + shipped.b).argmax(axis=1)]
            acc = float(np.mean(pred == np.asarray(cats)))
            if acc >= KIND_CLASSIFIER_MIN_DEMO_ACCURACY:
                n = shipped.figures.get("fitted_on", {}).get("clothing_photos", "?")
                return shipped, (
                    f"shipped {KIND_CLASSIFIER_FILE} (demo photos + {n} clothing photos; "
                    f"{acc:.3f} on the demo photos)"
                )
            bar = KIND_CLASSIFIER_MIN_DEMO_ACCURACY
            why = f"the shipped classifier names {acc:.3f} of the demo photos (< {bar})"
    w, b, fitted = fit_softmax(feats, list(cats))
    figures = {"fitted_on": {"labelled_photos": len(cats)}}
    return KindClassifier(
        w, b, fitted, figures
    ), f"fitted on the {len(cats)} labelled photos ({why})"


def read_labelled(csv_path: Path) -> list[tuple[Path, str]]:
    """(image path, category) rows of a catalog CSV with ``image`` and ``category`` columns."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        if r.get("image") and r.get("category"):
            out.append((csv_path.parent / r["image"], r["category"].strip()))
    return out
