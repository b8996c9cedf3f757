"""The served pre-filter: a linear classifier over :mod:`~lookalike.moderation.features` blocks.

An artifact folder ``models/post_prefilter/N/`` holds

=================  ==============================================================================
``classifier.npz``  ``w``, ``b``, ``centre``, ``scale``: p = σ(((x − centre) / scale)·w + b)
``backbone.onnx``   a copy of the search backbone it was trained on (checksummed in the manifest)
``detector.onnx``   a copy of the body-part detector (nudenet 3.0.8's ``best.onnx``)
``holdout.csv``     the held-out photos of its build (path, label): what the deploy gate measures
``holdout.npz``     their features as the build computed them (``x``, ``y``)
=================  ==============================================================================

and its manifest names the blocks, threshold, recall target, metrics and training data. Because
the backbone and detector travel inside it, promoting a new search model never changes what the
classifier reads.

:class:`Scorer` answers a batch of photos: score, the decision at the threshold, safety (an
exposed body part over ``UNSAFE_SCORE``) and the garment box to search the catalog with. Its
fallback, when the model cannot answer, is :class:`SendToHumans`: score 1.0 for every post, so
every safe-or-not post goes to the moderators and ``served_by`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import IntegrityError
from lookalike.moderation.features import Extractor, PostFeatures

__all__ = [
    "BACKBONE_FILE",
    "CLASSIFIER_FILE",
    "DETECTOR_FILE",
    "HOLDOUT_CSV",
    "HOLDOUT_NPZ",
    "UNSAFE_SCORE",
    "Classifier",
    "PostScore",
    "Scorer",
    "SendToHumans",
    "catalog_matches",
]

CLASSIFIER_FILE = "classifier.npz"
BACKBONE_FILE = "backbone.onnx"
DETECTOR_FILE = "detector.onnx"
HOLDOUT_CSV = "holdout.csv"
HOLDOUT_NPZ = "holdout.npz"
# An exposed breast / genitalia / buttocks / anus this sure makes a post unsafe. nudenet's own
# reporting threshold is 0.2; the pre-filter wants few false alarms on summer dresses.
UNSAFE_SCORE = 0.5


@dataclass(frozen=True)
class Classifier:
    """Logistic regression over the named feature ``blocks``, with its operating threshold."""

    blocks: tuple[str, ...]
    w: np.ndarray
    b: float
    centre: np.ndarray
    scale: np.ndarray
    threshold: float
    recall_target: float

    def __post_init__(self) -> None:
        d = len(self.w)
        if self.centre.shape != (d,) or self.scale.shape != (d,):
            raise IntegrityError(
                f"classifier arrays disagree: w {self.w.shape}, centre {self.centre.shape}, "
                f"scale {self.scale.shape}"
            )
        for name, arr in (("w", self.w), ("centre", self.centre), ("scale", self.scale)):
            if not np.all(np.isfinite(arr)):
                raise IntegrityError(f"classifier {name} has NaN or inf")
        if not np.isfinite(self.b) or not 0.0 <= self.threshold <= 1.0:
            raise IntegrityError(f"classifier bias {self.b} / threshold {self.threshold} invalid")

    @property
    def dim(self) -> int:
        return len(self.w)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(n,)`` of "a dress worn by a person" for feature rows ``(n, dim)``."""
        z = ((np.asarray(x, np.float64) - self.centre) / self.scale) @ self.w + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def save(self, path: Path) -> None:
        np.savez(
            path,
            w=self.w,
            b=np.array([self.b]),
            centre=self.centre,
            scale=self.scale,
            threshold=np.array([self.threshold]),
            recall_target=np.array([self.recall_target]),
            blocks=np.array(self.blocks),
        )

    @classmethod
    def load(cls, path: Path) -> Classifier:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    blocks=tuple(str(v) for v in z["blocks"]),
                    w=z["w"].astype(np.float64),
                    b=float(z["b"][0]),
                    centre=z["centre"].astype(np.float64),
                    scale=z["scale"].astype(np.float64),
                    threshold=float(z["threshold"][0]),
                    recall_target=float(z["recall_target"][0]),
                )
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise IntegrityError(f"cannot read the classifier {path}: {exc}") from exc


@dataclass
class PostScore:
    """The pre-filter's answer for one post.

    ``match_row`` is the backbone row of what the catalog match embeds (the garment box's
    crop, the whole photo without one) and ``backbone`` the search model file that computed it
    (model ref, variant): :func:`catalog_matches` reuses the row instead of embedding again.
    ``nothing_worn`` is the key of the detector that found no worn garment and no sign of a
    person in the photo (None otherwise): a search model with that detector embeds such a photo
    whole, as a garment alone.
    """

    score: float
    passed: bool  # score ≥ threshold
    safe: bool
    exposure: dict[str, float] = field(default_factory=dict)
    garment_box: tuple[float, float, float, float] | None = None
    match_row: np.ndarray | None = field(default=None, repr=False, compare=False)
    backbone: tuple[str, str] | None = None
    nothing_worn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "passed": self.passed,
            "safe": self.safe,
            "exposure": self.exposure,
            "garment_box": list(self.garment_box) if self.garment_box else None,
        }


def _answers(
    feats: PostFeatures,
    scores: np.ndarray,
    threshold: float,
    backbone: tuple[str, str] | None = None,
) -> list[PostScore]:
    out = []
    for i, s in enumerate(scores):
        exp = feats.exposure[i] if feats.exposure else {}
        full = (
            next((g for g in feats.garments[i] if g.label == "full"), None)
            if feats.garments
            else None
        )
        out.append(
            PostScore(
                float(s),
                bool(s >= threshold),
                not any(v >= UNSAFE_SCORE for v in exp.values()),
                exp,
                full.box if full is not None else None,
                feats.match_rows[i] if feats.match_rows is not None else None,
                backbone,
                feats.detector if feats.people and not feats.people[i] else None,
            )
        )
    return out


class Scorer:
    """A loaded artifact: its extractor (backbone + detector copies) and classifier."""

    def __init__(self, folder: Path, manifest: dict[str, Any], version: str) -> None:
        self.folder = Path(folder)
        self.version = version
        self.classifier = Classifier.load(self.folder / CLASSIFIER_FILE)
        self.extractor = Extractor(
            self.folder / BACKBONE_FILE,
            manifest["preprocess"],
            self.folder / DETECTOR_FILE,
            label=f"post_prefilter:{version}",
        )
        self.threshold = self.classifier.threshold
        source = manifest.get("backbone") or {}
        # the search model file the backbone was copied from (its rows stand in for a search's)
        self.backbone = (
            (str(source["from"]), str(source["variant"]))
            if source.get("from") and source.get("variant")
            else None
        )

    @property
    def served_by(self) -> str:
        return "prefilter-logreg"

    def features(
        self, images: Sequence[Image.Image], captions: Sequence[str | None] | None = None
    ) -> PostFeatures:
        return self.extractor.extract(images, captions, self.classifier.blocks)

    def score(
        self, images: Sequence[Image.Image], captions: Sequence[str | None] | None = None
    ) -> list[PostScore]:
        return self.answer(self.features(images, captions))

    def answer(self, feats: PostFeatures) -> list[PostScore]:
        """The answers for a batch's :meth:`features` (the classifier and the safety check)."""
        scores = self.classifier.score(feats.matrix(self.classifier.blocks))
        if not np.all(np.isfinite(scores)):
            raise IntegrityError("the classifier gave a non-finite score")
        return _answers(feats, scores, self.threshold, self.backbone)


@dataclass
class SendToHumans:
    """The last fallback: every post scores 1.0 and goes to the moderators, unchecked."""

    version: str
    threshold: float = 0.5
    served_by: str = "send-to-humans"

    def score(
        self, images: Sequence[Image.Image], captions: Sequence[str | None] | None = None
    ) -> list[PostScore]:
        return [PostScore(1.0, True, True, {}, None) for _ in images]


# -- the queue: score a batch of posts ------------------------------------------------------------
UNCERTAIN_SHARE = 0.1  # of the enqueued posts, this share is ranked by closeness to the threshold
UNCERTAIN_BAND = 0.15  # ... when its score is within this of the threshold
MATCHES = 3


def _sampled(post_id: str, share: float) -> bool:
    import hashlib

    h = int(hashlib.sha256(f"uncertain:{post_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < share


def priority(post_id: str, score: float, threshold: float, share: float = UNCERTAIN_SHARE) -> float:
    """Queue order, higher first: the score; a ``share`` of the posts near the threshold
    (chosen by a hash of the post id, so re-scoring keeps the choice) rank as if they were sure,
    ``1 - |score - threshold|``, so moderators see some of the model's hardest cases early —
    the decisions that teach the next model most."""
    if abs(score - threshold) <= UNCERTAIN_BAND and _sampled(post_id, share):
        return round(1.0 - abs(score - threshold), 6)
    return round(score, 6)


def score_posts(
    prefilter: Any,
    posts: Sequence[Any],
    images: Sequence[Image.Image],
    *,
    search: Any = None,
    duplicate_of: Any = None,
) -> tuple[list[Any], dict[str, Any]]:
    """The store's :class:`~lookalike.moderation.posts.PostScore` records of one batch.

    ``prefilter`` is a loaded pre-filter generation (its chain falls back to sending everything
    to the humans); ``search`` a search generation (top-3 catalog matches of the garment box,
    none without it); ``duplicate_of(post_id)`` the store's near-duplicate lookup. Unsafe posts
    (an exposed part ≥ ``UNSAFE_SCORE``) never enter the queue: they are stored as scored with
    ``safe = False``. Returns (records, what served: model_version, served_by, fallback).
    """
    from lookalike.moderation.posts import PostScore as Record

    answers, served_by, reasons = prefilter.score(images, [p.caption for p in posts])
    fell_back = served_by == "send-to-humans"
    threshold = prefilter.threshold if not fell_back else 0.0
    version = "send-to-humans" if fell_back else prefilter.version
    found, search_version = catalog_matches(search, images, answers)
    records = []
    for post, a, matches in zip(posts, answers, found, strict=True):
        enqueue = a.passed and a.safe
        records.append(
            Record(
                post_id=post.post_id,
                score=a.score,
                safe=a.safe,
                exposure=max(a.exposure.values(), default=0.0),
                matches=matches,
                duplicate_of=duplicate_of(post.post_id) if duplicate_of else None,
                classifier_version=version,
                model_version=search_version,
                enqueue=enqueue,
                priority=priority(post.post_id, a.score, threshold) if enqueue else 0.0,
            )
        )
    served = {"model_version": prefilter.version, "served_by": served_by,
              "fallback": "; ".join(reasons) or None}  # fmt: skip
    return records, served


def catalog_matches(
    search: Any, images: Sequence[Image.Image], answers: Sequence[PostScore]
) -> tuple[list[list[tuple[str, float]]], str]:
    """Each post's top-3 catalog items ``(item_id, score)`` and the search model version ("" and
    no matches without ``search``, a search generation).

    What ``search_image(image, k=3, box=garment_box)`` finds. When the pre-filter's backbone is
    the search model's own file, its rows of the garment crops stand in for the search's
    embedding (:meth:`~lookalike.search.service.SearchService.search_rows`: no second decode,
    preprocess or CNN pass, one index search for the batch), and so do the rows of photos in
    which the search model's own detector found no one; other posts are searched as usual.
    """
    if search is None:
        return [[] for _ in images], ""
    service = search.service
    results: list[Any] = [None] * len(images)
    backbones = {a.backbone for a in answers}
    if answers and all(a.match_row is not None for a in answers) and len(backbones) == 1:
        backbone = backbones.pop()
        if backbone is not None:
            rows = np.stack([a.match_row for a in answers if a.match_row is not None])
            boxes = [a.garment_box for a in answers]
            unworn = [a.nothing_worn for a in answers]
            results = service.search_rows(
                images, boxes, rows, backbone=backbone, unworn=unworn, k=MATCHES, phases=search
            )
    found, version = [], ""
    for image, a, result in zip(images, answers, results, strict=True):
        if result is None:
            result = service.search_image(image, k=MATCHES, box=a.garment_box, phases=search)
        found.append([(h.item.item_id, float(h.score)) for h in result.hits[:MATCHES]])
        version = result.model_version
    return found, version
