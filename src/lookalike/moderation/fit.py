"""Training the pre-filter: seed data, a stratified split, cached features, logistic regression.

Seed data (``../shared/data``-like folders): positives are ``street/`` photos with has_dress=1;
negatives are street photos without one, ``scenes/`` and ``clothing/`` photos of garments other
than Dress ("Not sure" is left out: some are dresses). Moderator decisions add rows
(approve = 1, reject = 0).

The split is stratified by (source, label) with a fixed seed: ``HOLDOUT`` of every stratum is
held out. On the rest, ``FOLDS``-fold cross-validation (:func:`fit_classifier_cv`) chooses the
L2 strength (by out-of-fold PR-AUC, among ``L2_GRID``) and the threshold (the highest one keeping
the target recall of the out-of-fold positives), and the classifier kept is fitted on all of it.
One validation part (``VALIDATION`` of the rest, until 2026-12-07: the model fitted on the
remaining part, its threshold chosen on 52 dresses) held the recall target less well on new
photos: over 13 seeds of the split (``benchmarks/prefilter_threshold.py``), held-out recall at
the chosen threshold 0.882 ± 0.051, under 0.85 in 4 seeds, against 0.902 ± 0.047 and 2 seeds
with the folds, at the same precision (0.341 / 0.338).

The solver is :func:`lookalike.embed.heads.fit_softmax` (numpy, deterministic) on two classes.
Each block is centred and scaled to total variance 1 (embedding blocks as a whole, detector and
caption blocks per column), so blocks of very different widths meet on equal terms.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.core.images import load_image_file
from lookalike.core.textfiles import csv_rows
from lookalike.embed.heads import fit_softmax
from lookalike.moderation.evaluation import average_precision, threshold_for_recall
from lookalike.moderation.features import Extractor, stack_blocks
from lookalike.moderation.prefilter import Classifier
from lookalike.registry import Ref, Registry, sha256_file

__all__ = [
    "HOLDOUT",
    "L2_GRID",
    "VALIDATION",
    "Sample",
    "SearchParts",
    "Split",
    "build_prefilter",
    "register_prefilter",
    "compare_feature_sets",
    "cached_blocks",
    "fit_classifier_cv",
    "fit_logistic",
    "label_folds",
    "labelled_folder",
    "seed_samples",
    "stratified_split",
]

HOLDOUT = 0.25
VALIDATION = 0.2
FOLDS = 5
SEED = 12
L2_GRID = (1e-3, 1e-2)
EMBED_BLOCKS = ("whole", "crop")
BATCH = 32


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    source: str  # street / scenes / clothing / decisions / a labelled folder's name
    caption: str | None = None


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices
    validation: np.ndarray
    holdout: np.ndarray

    @property
    def fitting(self) -> np.ndarray:
        """Every row that is not held out: what the cross-validated fit sees."""
        return np.sort(np.r_[self.train, self.validation]).astype(int)


def _rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a label CSV, which must have ``columns`` (others are ignored)."""
    rows = csv_rows(path)
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise InvalidInput(
            f"{path} needs columns {' and '.join(columns)}, has {sorted(k for k in rows[0] if k)}"
        )
    for i, r in enumerate(rows, start=2):
        if not r["file"].strip():
            raise InvalidInput(f"{path} line {i}: the file column is empty")
    return rows


_LABELS = {"0": 0, "1": 1, "no": 0, "yes": 1, "false": 0, "true": 1, "n": 0, "y": 1}


def labelled_folder(labels: Path, root: Path, source: str = "labelled") -> list[Sample]:
    """``labels``: a CSV with columns file, has_dress (others ignored); photos under ``root``."""
    out = []
    for i, r in enumerate(_rows(labels, ("file", "has_dress")), start=2):
        label = _LABELS.get(r["has_dress"].strip().lower())
        if label is None:
            raise InvalidInput(
                f"{labels} line {i}: has_dress must be 0 or 1 (or yes/no, true/false), "
                f"got {r['has_dress']!r}"
            )
        out.append(Sample(Path(root) / r["file"].strip(), label, source))
    return out


def seed_samples(data: Path) -> list[Sample]:
    """The seed set from a ``../shared/data``-like folder (street, scenes, clothing)."""
    data = Path(data)
    if not data.is_dir():
        raise InvalidInput(
            f"{data} is not a folder: pass --data a folder laid out like ../shared/data "
            "(street/tags.csv, scenes/labels.csv, clothing/labels.csv and their images/)"
        )
    out = labelled_folder(data / "street" / "tags.csv", data / "street" / "images", "street")
    for r in _rows(data / "scenes" / "labels.csv", ("file",)):
        out.append(Sample(data / "scenes" / "images" / r["file"].strip(), 0, "scenes"))
    for r in _rows(data / "clothing" / "labels.csv", ("file", "label")):
        if r["label"] not in ("Dress", "Not sure"):
            out.append(Sample(data / "clothing" / "images" / r["file"].strip(), 0, "clothing"))
    return out


def stratified_split(
    samples: Sequence[Sample],
    *,
    holdout: float = HOLDOUT,
    validation: float = VALIDATION,
    seed: int = SEED,
) -> Split:
    """Per (source, label) stratum: ``holdout`` held out, ``validation`` of the rest validates."""
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(samples):
        strata.setdefault((s.source, s.label), []).append(i)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "holdout": []}
    for key in sorted(strata):
        idx = np.array(strata[key])
        rng.shuffle(idx)
        n_hold = int(round(len(idx) * holdout))
        n_val = int(round((len(idx) - n_hold) * validation))
        parts["holdout"] += idx[:n_hold].tolist()
        parts["validation"] += idx[n_hold : n_hold + n_val].tolist()
        parts["train"] += idx[n_hold + n_val :].tolist()
    return Split(
        *(np.array(sorted(parts[k]), dtype=int) for k in ("train", "validation", "holdout"))
    )


def cached_blocks(
    extractor: Extractor,
    samples: Sequence[Sample],
    cache: Path | None,
    key: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """All feature blocks of ``samples`` (cached in ``cache/<key>-<digest>.npz`` when given).

    ``key`` names the extractor (its backbone + detector checksums): a cache never mixes two.
    """
    digest = hashlib.sha256(
        "\n".join(f"{s.path}|{s.caption or ''}" for s in samples).encode()
    ).hexdigest()[:16]
    path = Path(cache) / f"{key}-{digest}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    chunks: list[dict[str, np.ndarray]] = []
    for start in range(0, len(samples), BATCH):
        batch = samples[start : start + BATCH]
        images = [load_image_file(s.path) for s in batch]
        chunks.append(extractor.extract(images, [s.caption for s in batch]).blocks)
        if progress:
            progress(min(start + BATCH, len(samples)), len(samples))
    blocks = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **blocks)
    return blocks


def _normaliser(blocks: dict[str, np.ndarray], names: Sequence[str]) -> tuple[np.ndarray, ...]:
    centres, scales = [], []
    for name in names:
        x = np.asarray(blocks[name], np.float64)
        mu = x.mean(axis=0)
        if name in EMBED_BLOCKS:
            total = float(np.sqrt(((x - mu) ** 2).sum(axis=1).mean()))
            sd = np.full(x.shape[1], max(total, 1e-6))
        else:
            sd = x.std(axis=0)
            sd = np.where(sd > 1e-6, sd, 1.0) * np.sqrt(x.shape[1])
        centres.append(mu)
        scales.append(sd)
    return np.concatenate(centres), np.concatenate(scales)


def _fit(x: np.ndarray, y: np.ndarray, l2: float, steps: int) -> tuple[np.ndarray, float]:
    w, b, classes = fit_softmax(x, [str(v) for v in y], l2=l2, steps=steps)
    if classes != ("0", "1"):
        raise InvalidInput(f"training needs both labels 0 and 1, got {classes}")
    return (w[:, 1] - w[:, 0]).astype(np.float64), float(b[1] - b[0])


def fit_logistic(
    blocks: dict[str, np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    names: Sequence[str],
    l2: float,
    steps: int,
    recall_target: float,
) -> Classifier:
    """A classifier fitted on the ``train`` rows (blocks normalised on them), threshold 0.5."""
    sub = {n: np.asarray(blocks[n])[train] for n in names}
    centre, scale = _normaliser(sub, names)
    x = (stack_blocks(sub, names).astype(np.float64) - centre) / scale
    w, b = _fit(x, y[train], l2, steps)
    return Classifier(tuple(names), w, b, centre, scale, 0.5, recall_target)


def label_folds(labels: np.ndarray, rows: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """``rows`` dealt into ``folds`` parts, each label's rows spread evenly (seeded shuffle)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for label in np.unique(labels[rows]):
        idx = rows[labels[rows] == label].copy()
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            parts[j % folds].append(int(i))
    return [np.array(sorted(p), dtype=int) for p in parts]


def fit_classifier_cv(
    blocks: dict[str, np.ndarray],
    labels: np.ndarray,
    rows: np.ndarray,
    names: Sequence[str],
    *,
    recall_target: float = 0.9,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 500,
    folds: int = FOLDS,
    seed: int = SEED,
) -> tuple[Classifier, dict[str, float]]:
    """L2 and threshold from out-of-fold scores over all of ``rows``, then one fit on them.

    Each of ``folds`` parts is scored by a classifier fitted on the others; the L2 strength with
    the best out-of-fold PR-AUC is kept, the threshold is the highest that keeps
    ``recall_target`` of the out-of-fold positives, and the served classifier is fitted on every
    row with that L2 (cross-fitting, as scikit-learn's ``TunedThresholdClassifierCV`` with
    ``refit``). On the seed data this holds the recall target on held-out photos better than one
    validation part (the module docstring; docs/moderation.md).
    """
    y = np.asarray(labels, int)
    rows = np.asarray(rows, int)
    x = stack_blocks(blocks, names)
    parts = label_folds(y, rows, folds, seed)
    if min(int(y[p].sum()) for p in parts) == 0:
        raise InvalidInput(
            f"too few positives for {folds}-fold selection: {int(y[rows].sum())} in {len(rows)}"
        )
    out_of_fold = {l2: np.zeros(len(y)) for l2 in l2_grid}
    for part in parts:
        train = np.setdiff1d(rows, part)
        for l2 in l2_grid:
            clf = fit_logistic(blocks, y, train, names, l2, steps, recall_target)
            out_of_fold[l2][part] = clf.score(x[part])
    aps = {l2: average_precision(out_of_fold[l2][rows], y[rows]) for l2 in l2_grid}
    l2 = max(l2_grid, key=lambda v: aps[v])
    threshold = threshold_for_recall(out_of_fold[l2][rows], y[rows], recall_target)
    clf = dataclasses.replace(
        fit_logistic(blocks, y, rows, names, l2, steps, recall_target), threshold=threshold
    )
    return clf, {"l2": l2, "cv_pr_auc": round(aps[l2], 4), "threshold": threshold, "folds": folds}


# -- experiments and the artifact -----------------------------------------------------------------
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "whole photo (baseline)": ("whole",),
    "garment crop": ("crop",),
    "detector evidence": ("parts",),
    "whole + crop": ("whole", "crop"),
    "whole + crop + detector": ("whole", "crop", "parts"),
    "whole + crop + detector + caption": ("whole", "crop", "parts", "caption"),
}
# The garment crop had the best validation PR-AUC on the seed data (0.495 vs 0.408 for the whole
# photo and 0.488 for whole + crop + detector); the caption block is all zeros there and learns
# only from moderator decisions, which have captions.
DEFAULT_BLOCKS = ("crop", "caption")


def holdout_rows(
    clf: Classifier,
    blocks: dict[str, np.ndarray],
    y: np.ndarray,
    holdout: np.ndarray,
    sources: Sequence[str],
) -> dict[str, dict]:
    """The held-out figures at the classifier's threshold: all photos, and street photos only."""
    from lookalike.moderation.evaluation import figures

    scores = clf.score(stack_blocks(blocks, clf.blocks)[holdout])
    src = np.asarray(sources)[holdout]
    out = {"all": figures(scores, y[holdout], clf.threshold, clf.recall_target)}
    street = src == "street"
    if street.any() and len(set(y[holdout][street].tolist())) == 2:
        out["street"] = figures(
            scores[street], y[holdout][street], clf.threshold, clf.recall_target
        )
    return out


def compare_feature_sets(
    blocks: dict[str, np.ndarray],
    samples: Sequence[Sample],
    split: Split,
    sets: dict[str, tuple[str, ...]] = FEATURE_SETS,
    *,
    recall_target: float = 0.9,
) -> list[dict]:
    """One row per feature set: L2 and threshold by cross-validation, figures on held-out."""
    y = np.array([s.label for s in samples])
    sources = [s.source for s in samples]
    rows = []
    for name, names in sets.items():
        clf, choice = fit_classifier_cv(
            blocks, y, split.fitting, names, recall_target=recall_target
        )
        rows.append({"features": name, "blocks": list(names), **choice,
                     **holdout_rows(clf, blocks, y, split.holdout, sources)})  # fmt: skip
    return rows


@dataclass(frozen=True)
class SearchParts:
    """What a pre-filter reads through, taken from a search model: its default ONNX variant,
    preprocess constants, and the body-part detector that model searches with (the packaged
    320 px one when the model has none), so both products see a post's garment the same way."""

    onnx: Path
    preprocess: dict
    variant: str
    detector: Path
    detector_input: int

    def extractor(self) -> Extractor:
        return Extractor(self.onnx, self.preprocess, self.detector)

    def cache_key(self) -> str:
        """Names the features these files give: a cache never mixes two extractors (nor the
        detector's square input with the narrower ones it runs portraits on since)."""
        from lookalike.embed.bodyparts import CANVAS

        return f"{sha256_file(self.onnx)[:12]}-{sha256_file(self.detector)[:12]}-{CANVAS}"


def search_backbone(registry: Registry, ref: Ref) -> SearchParts:
    """The parts of search model ``ref`` (``effnet_lite0:production``) a pre-filter reads."""
    from lookalike.embed.bodyparts import INPUT_SIZE, packaged_detector

    resolved = registry.resolve(ref)
    manifest = registry.manifest(resolved)
    variant = manifest.get("default_variant", "fp32")
    folder = registry.path(resolved)
    own = manifest.get("detector")
    detector = folder / own["file"] if own else packaged_detector()
    size = int(own.get("input", INPUT_SIZE)) if own else INPUT_SIZE
    return SearchParts(folder / manifest["variants"][variant], manifest["preprocess"], variant,
                       detector, size)  # fmt: skip


def build_prefilter(
    registry: Registry,
    samples: Sequence[Sample],
    *,
    backbone: Ref,
    blocks: Sequence[str] = DEFAULT_BLOCKS,
    recall_target: float = 0.9,
    cache: Path | None = None,
    data: dict | None = None,
    seed: int = SEED,
    progress: Callable[[int, int], None] | None = None,
    extra_holdout: Sequence[Sample] = (),
) -> tuple[Ref, dict]:
    """Embed, split, fit, evaluate and register ``post_prefilter:N`` (not promoted).

    ``backbone`` is a search model (``effnet_lite0:production``): its ONNX file and its detector
    (:func:`search_backbone`) are copied into the artifact. ``extra_holdout`` (held-out
    moderator decisions) is evaluated too and kept in ``holdout.csv`` with the seed's held-out
    photos.
    """
    parts = search_backbone(registry, backbone)
    everything = list(samples) + list(extra_holdout)
    feats = cached_blocks(parts.extractor(), everything, cache, parts.cache_key(), progress)
    seed_n = len(samples)
    y = np.array([s.label for s in everything])
    split = stratified_split(samples, seed=seed)
    clf, choice = fit_classifier_cv(
        feats, y, split.fitting, blocks, recall_target=recall_target, seed=seed
    )
    sources = [s.source for s in everything]
    metrics = holdout_rows(clf, feats, y, split.holdout, sources)
    extra = np.arange(seed_n, len(everything))
    if len(extra) and len(set(y[extra].tolist())) == 2:
        from lookalike.moderation.evaluation import figures

        scores = clf.score(stack_blocks(feats, clf.blocks)[extra])
        metrics["decisions"] = figures(scores, y[extra], clf.threshold, recall_target)
    held = np.r_[split.holdout, extra].astype(int)
    counts = {}
    for part, idx in (("fitting", split.fitting), ("holdout", held)):
        counts[part] = {"photos": int(len(idx)), "positives": int(y[idx].sum())}
    manifest = {
        "backbone": {"from": str(registry.resolve(backbone)), "variant": parts.variant},
        "selection": choice,
        "metrics": metrics,
        "split": f"stratified by (source, label), seed {seed}: {HOLDOUT:.0%} held out, "
        f"{FOLDS}-fold cross-validation on the rest (L2 and threshold), then one fit on it",
        "data": {**(data or {}), "counts": counts,
                 "sources": sorted({s.source for s in everything})},
    }  # fmt: skip
    held_blocks = {k: v[held] for k, v in feats.items()}
    ref = register_prefilter(
        registry, clf, parts, held_blocks, [everything[i] for i in held],
        manifest,
    )  # fmt: skip
    return ref, metrics


def register_prefilter(
    registry: Registry,
    clf: Classifier,
    parts: SearchParts,
    holdout_blocks: dict[str, np.ndarray],
    holdout: Sequence[Sample],
    manifest: dict,
) -> Ref:
    """Write ``post_prefilter:N``: the classifier, copies of its backbone and detector, and its
    held-out photos (paths + labels, and their features as computed here)."""
    from lookalike.moderation.kind import ARTIFACT_NAME, TASK
    from lookalike.moderation.prefilter import (
        BACKBONE_FILE,
        CLASSIFIER_FILE,
        DETECTOR_FILE,
        HOLDOUT_CSV,
        HOLDOUT_NPZ,
    )

    doc = {
        "task": TASK,
        "model": "logistic regression (numpy, lookalike.embed.heads.fit_softmax)",
        "blocks": list(clf.blocks),
        "threshold": clf.threshold,
        "recall_target": clf.recall_target,
        "preprocess": parts.preprocess,
        "detector": {
            "package": "nudenet",
            "file": "best.onnx",
            "licence": "MIT",
            "input": parts.detector_input,
        },
        **manifest,
    }
    y = np.array([s.label for s in holdout], int)
    with registry.create(ARTIFACT_NAME, doc) as writer:
        shutil.copy2(parts.onnx, writer.path / BACKBONE_FILE)
        shutil.copy2(parts.detector, writer.path / DETECTOR_FILE)
        clf.save(writer.path / CLASSIFIER_FILE)
        np.savez(writer.path / HOLDOUT_NPZ, y=y, **holdout_blocks)
        with (writer.path / HOLDOUT_CSV).open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["path", "label", "source"])
            for s in holdout:
                out.writerow([str(s.path), s.label, s.source])
    return writer.ref


def split_decisions(settings: object, *, holdout: float = HOLDOUT, seed: int = SEED) -> tuple[
    list[Sample], list[Sample]
]:  # fmt: skip
    """Moderator decisions so far as samples (approve = 1, reject = 0), split train / held-out
    by a seeded hash of the post id (so a decision stays on its side as more arrive)."""
    from lookalike.moderation.store import ModerationStore

    store = ModerationStore.from_settings(settings)
    train: list[Sample] = []
    held: list[Sample] = []
    for d in store.decisions():
        action = getattr(d, "action", None)
        path = getattr(d, "image_path", None)
        if action not in ("approve", "reject") or not path or not Path(path).is_file():
            continue
        s = Sample(Path(path), int(action == "approve"), "decisions", getattr(d, "caption", None))
        h = int(hashlib.sha256(f"{seed}:{d.post_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if h < holdout else train).append(s)
    return train, held
