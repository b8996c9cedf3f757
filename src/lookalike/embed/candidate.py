"""Train a fashion head on consumer-to-shop pairs and register it as a candidate model version.

The candidate is a new version of a model name in the registry (by default the same name as the
production model, so ``lookalike models promote`` / ``rollback`` and the server's
``name:production`` work unchanged). It is self-contained: the backbone files are copied from
the base version (artifacts are immutable, so a copy is never stale), ``head.npz`` is added, and
the manifest records the base, the head, the query crop, the training data (file sha256, split,
counts), the time taken and the figures. It is never promoted here: promotion goes through the
checks (``lookalike models promote``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.embed.cache import CropSpec, FeatureCache, backbone_key
from lookalike.embed.heads import ProjectionHead
from lookalike.embed.runtime import LoadedEmbedder, load_embedder
from lookalike.embed.train import TrainConfig, identity_head, retrieval_figures, train_head
from lookalike.registry import Ref, Registry

__all__ = ["PairSet", "TrainedCandidate", "evaluate_head", "holdout", "train_candidate"]

log = logging.getLogger("lookalike.embed")
Progress = Callable[[str], None]
_BASE_ONLY = {"files", "name", "version", "created_at", "kind", "build_seconds"}


@dataclass
class PairSet:
    """Shopper photos and the catalog photo of the same item, row by row."""

    queries: list[Path]
    catalog: list[Path]
    item_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.queries) != len(self.catalog):
            raise InvalidInput("a pair set needs one catalog photo per query photo")

    def __len__(self) -> int:
        return len(self.queries)

    def subset(self, rows: Sequence[int]) -> PairSet:
        ids = [self.item_ids[i] for i in rows] if self.item_ids else []
        return PairSet([self.queries[i] for i in rows], [self.catalog[i] for i in rows], ids)


@dataclass
class TrainedCandidate:
    ref: Ref
    manifest: dict[str, Any]


def holdout(pairs: PairSet, share: float = 0.1) -> tuple[PairSet, PairSet]:
    """Split training pairs into (fit, tune) by a hash of the item id: stable across runs."""
    keys = pairs.item_ids or [str(p) for p in pairs.catalog]
    tune = [
        i
        for i, k in enumerate(keys)
        if int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share
    ]
    chosen = set(tune)
    return pairs.subset([i for i in range(len(pairs)) if i not in chosen]), pairs.subset(tune)


def _features(
    cache: FeatureCache, paths: Sequence[Path], crop: CropSpec, colour: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    feats = cache.features(paths, crop)
    return feats, (cache.features(paths, crop, kind="colour") if colour else None)


def evaluate_head(
    cache: FeatureCache,
    head: ProjectionHead | None,
    pairs: PairSet,
    *,
    distractors: Sequence[Path] = (),
    query_crops: Sequence[CropSpec] = (CropSpec("upper"),),
) -> dict[str, float]:
    """Recall@K/mAP of ``head`` (None: raw backbone) on ``pairs`` with cached features.

    The gallery is every distinct catalog photo of ``pairs`` plus ``distractors``; with several
    ``query_crops`` an item scores its best crop (as multi-crop search does).
    """
    products = sorted({str(p) for p in pairs.catalog})
    row = {p: i for i, p in enumerate(products)}
    gallery_paths = [Path(p) for p in products] + list(distractors)
    colour = bool(head and head.uses_colour)
    g, g_col = _features(cache, gallery_paths, CropSpec("whole"), colour)
    gallery = head.apply(g, "catalog", g_col) if head else g
    views = []
    for crop in query_crops:
        q, q_col = _features(cache, pairs.queries, crop, colour)
        views.append(head.apply(q, "query", q_col) if head else q)
    relevant = np.asarray([row[str(p)] for p in pairs.catalog])
    return retrieval_figures(np.stack(views), gallery, relevant)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def base_cache(
    registry: Registry, base: str | Ref, cache_dir: Path
) -> tuple[LoadedEmbedder, FeatureCache, Ref]:
    """The base model's fp32 ONNX embedder and a feature cache keyed by its backbone file."""
    ref = registry.resolve(base)
    emb = load_embedder(registry, ref, runtime="onnx-cpu", variant="fp32")
    key = backbone_key(registry.manifest(ref), "fp32")
    return emb, FeatureCache(cache_dir, key, emb.embed_backbone), ref


def train_candidate(
    registry: Registry,
    train: PairSet,
    *,
    base: str | Ref = "effnet_lite0:production",
    name: str | None = None,
    cfg: TrainConfig | None = None,
    query_crop: str = "upper",
    augment: bool = True,
    evaluate: PairSet | None = None,
    eval_label: str = "val",
    distractors: Sequence[Path] = (),
    cache_dir: Path = Path("var/cache/features"),
    training_data: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainedCandidate:
    """Train a head on ``train`` and write it, with the base's backbone, as a new version.

    ``augment`` adds the mirrored query crop as a second view. ``evaluate`` (held-out pairs,
    e.g. viton-dev ``val``) and ``distractors`` give the manifest's figures; without them the
    figures are measured on a 10% hash-held-out part of ``train`` that training does not see.
    ``training_data`` (pairs file, split, licence note ...) is copied into the manifest.
    """
    say = progress or (lambda msg: log.info("train-embedding: %s", msg))
    cfg = cfg or TrainConfig()
    started = time.perf_counter()
    _, cache, base_ref = base_cache(registry, base, cache_dir)
    base_manifest = registry.manifest(base_ref)
    if base_manifest.get("head"):
        raise InvalidInput(f"base model {base_ref} already has a head: train from a backbone")
    fit, tune = (train, None) if evaluate is not None else holdout(train)
    crops = [CropSpec(query_crop)] + ([CropSpec(query_crop, flip=True)] if augment else [])
    say(f"backbone features of {len(fit)} pairs ({len(crops)} query views; cached after once)")
    t_feat = time.perf_counter()
    views = [cache.features(fit.queries, c) for c in crops]
    catalog = cache.features(fit.catalog, CropSpec("whole"))
    if cfg.colour_weight > 0:  # computed now so the figures below do not pay for it
        cache.features(fit.queries, crops[0], kind="colour")
    feature_seconds = round(time.perf_counter() - t_feat, 1)
    say(f"training a {cfg.kind} head ({cfg.epochs} epochs)")
    result = train_head(views, catalog, cfg, progress=say)
    say(f"trained in {result.seconds:.1f} s (loss {result.final_loss})")

    held = evaluate if evaluate is not None else tune
    label = eval_label if evaluate is not None else "train-holdout"
    figures: dict[str, Any] = {}
    if held is not None and len(held):
        say(f"measuring on {len(held)} {label} pairs + {len(distractors)} distractors")
        qc = (CropSpec(query_crop),)
        figures[label] = evaluate_head(
            cache, result.head, held, distractors=distractors, query_crops=qc
        )
        untrained = identity_head(result.head.in_dim, cfg.dim, cfg.seed)
        figures[f"{label}_untrained_head"] = evaluate_head(
            cache, untrained, held, distractors=distractors, query_crops=qc
        )
        figures["queries"], figures["gallery"] = (
            len(held),
            len({str(p) for p in held.catalog}) + len(distractors),
        )
        say(f"{label}: {figures[label]}")

    manifest = {k: v for k, v in base_manifest.items() if k not in _BASE_ONLY}
    manifest.update(
        {
            "task": "image-embedding",
            "embedding_dim": result.head.out_dim,
            "backbone_dim": result.head.in_dim,
            "head": {
                "file": "head.npz",
                "kind": cfg.kind,
                "out_dim": result.head.out_dim,
                "tower_dim": cfg.dim,
                "colour_weight": cfg.colour_weight,
                "colour_bins": cfg.colour_bins,
                "roles": ["query", "catalog"],
            },
            "query_crop": query_crop,
            "base_model": str(base_ref),
            "backbone_files": {
                rel: base_manifest["files"][rel]["sha256"] for rel in base_manifest.get("files", {})
            },
            "training": {
                **(training_data or {}),
                "pairs": len(train),
                "fit_pairs": len(fit),
                "held_out_pairs": len(held) if held is not None else 0,
                "query_views": [c.key for c in crops],
                "config": cfg.to_dict(),
                "loss": "symmetric InfoNCE",
                "final_loss": result.final_loss,
                "temperature": result.temperature,
                "train_seconds": result.seconds,
                "feature_seconds": feature_seconds,
            },
            "figures": figures,
            "description": f"trained {cfg.kind} head on {len(fit)} pairs over {base_ref}",
        }
    )
    target = name or base_ref.name
    with tempfile.TemporaryDirectory(prefix="lookalike-head-") as tmp:
        head_path = Path(tmp) / "head.npz"
        result.head.save(head_path)
        manifest["head"]["sha256"] = _sha256(head_path)
        with registry.create(target, manifest) as writer:
            base_dir = registry.path(base_ref)
            for rel in base_manifest.get("files", {}):
                dest = writer.path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(base_dir / rel, dest)
            shutil.copy2(head_path, writer.path / "head.npz")
            writer.manifest["training"]["total_seconds"] = round(time.perf_counter() - started, 1)
    say(f"registered {writer.ref} (not promoted: `lookalike models promote {writer.ref}`)")
    return TrainedCandidate(writer.ref, writer.manifest)
