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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from lookalike.core.errors import InvalidInput
from lookalike.core.metrics import Figures
from lookalike.core.metrics import figures as rank_figures
from lookalike.core.progress import Progress, logged
from lookalike.embed.cache import CropSpec, FeatureCache, backbone_key
from lookalike.embed.heads import ProjectionHead
from lookalike.embed.runtime import LoadedEmbedder, load_embedder
from lookalike.registry import Ref, Registry, sha256_file
from lookalike.training.head import TrainConfig, identity_head, train_head

if TYPE_CHECKING:
    from lookalike.training.finetune import FinetuneConfig

__all__ = ["PairSet", "TrainedCandidate", "evaluate_head", "holdout", "train_candidate"]

log = logging.getLogger("lookalike.training")
BASE_ONLY = {"files", "name", "version", "created_at", "kind", "build_seconds"}


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


def in_holdout(key: str, share: float) -> bool:
    """Whether ``key`` falls in the held-out ``share``: a hash, so stable across runs."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def holdout(pairs: PairSet, share: float = 0.1) -> tuple[PairSet, PairSet]:
    """Split training pairs into (fit, tune) by a hash of the item id: stable across runs."""
    keys = pairs.item_ids or [str(p) for p in pairs.catalog]
    tune = [i for i, k in enumerate(keys) if in_holdout(k, share)]
    chosen = set(tune)
    return pairs.subset([i for i in range(len(pairs)) if i not in chosen]), pairs.subset(tune)


class Features(Protocol):
    """Backbone (``kind="cnn"``) or colour rows of crops: a FeatureCache, or a fine-tuned tail."""

    def features(
        self, paths: Sequence[Path], crop: CropSpec | None = None, *, kind: str = "cnn"
    ) -> np.ndarray: ...


class TailFeatures:
    """Backbone rows through a fine-tuned tail (cached stem rows in, unit rows out).

    Colour rows do not depend on the backbone: they come from the base model's cache.
    """

    def __init__(self, stem: FeatureCache, tail: Any, colour: FeatureCache) -> None:
        self.stem, self.tail, self.colour = stem, tail, colour

    def features(
        self, paths: Sequence[Path], crop: CropSpec | None = None, *, kind: str = "cnn"
    ) -> np.ndarray:
        if kind == "colour":
            return self.colour.features(paths, crop, kind="colour")
        return np.asarray(self.tail.features(self.stem.features(paths, crop)), np.float32)


def _features(
    cache: Features, paths: Sequence[Path], crop: CropSpec, colour: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    feats = cache.features(paths, crop)
    return feats, (cache.features(paths, crop, kind="colour") if colour else None)


def evaluate_head(
    cache: Features,
    head: ProjectionHead | None,
    pairs: PairSet,
    *,
    distractors: Sequence[Path] = (),
    query_crops: Sequence[CropSpec] = (CropSpec("upper"),),
) -> Figures:
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
    return rank_figures(np.stack(views), gallery, relevant)


def base_cache(
    registry: Registry, base: str | Ref, cache_dir: Path
) -> tuple[LoadedEmbedder, FeatureCache, Ref]:
    """The base model's fp32 ONNX embedder and a feature cache keyed by its backbone file."""
    ref = registry.resolve(base)
    emb = load_embedder(registry, ref, runtime="onnx-cpu", variant="fp32")
    key = backbone_key(registry.manifest(ref), "fp32")
    return emb, FeatureCache(cache_dir, key, emb.embed_backbone), ref


@dataclass
class _Trained:
    """A trained head and what the candidate needs from the way it was trained."""

    head: ProjectionHead
    features: Features  # backbone rows as the candidate computes them (for its figures)
    files: dict[str, Path]  # registry-relative name -> file to copy
    manifest: dict[str, Any]  # keys that describe the backbone
    training: dict[str, Any]  # figures of the training run
    description: str


def _train_frozen(
    base_dir: Path,
    base_manifest: dict[str, Any],
    cache: FeatureCache,
    fit: PairSet,
    crops: list[CropSpec],
    cfg: TrainConfig,
    say: Progress,
) -> _Trained:
    say(f"backbone features of {len(fit)} pairs ({len(crops)} query views; cached after once)")
    t_feat = time.perf_counter()
    views = [cache.features(fit.queries, c) for c in crops]
    catalog = cache.features(fit.catalog, CropSpec("whole"))
    feature_seconds = round(time.perf_counter() - t_feat, 1)
    say(f"training a {cfg.kind} head ({cfg.epochs} epochs)")
    result = train_head(views, catalog, cfg, progress=say)
    say(f"trained in {result.seconds:.1f} s (loss {result.final_loss})")
    files = base_manifest.get("files", {})
    return _Trained(
        head=result.head,
        features=cache,
        files={rel: base_dir / rel for rel in files},
        manifest={"backbone_files": {rel: files[rel]["sha256"] for rel in files}},
        training={
            "config": cfg.to_dict(),
            "final_loss": result.final_loss,
            "temperature": result.temperature,
            "train_seconds": result.seconds,
            "feature_seconds": feature_seconds,
        },
        description=f"trained {cfg.kind} head on {len(fit)} pairs",
    )


def _train_finetuned(
    base_dir: Path,
    base_manifest: dict[str, Any],
    cache: FeatureCache,
    cache_dir: Path,
    fit: PairSet,
    crops: list[CropSpec],
    cfg: FinetuneConfig,
    work: Path,
    say: Progress,
) -> _Trained:
    from lookalike.core.images import load_image_file
    from lookalike.embed.build import export_variants
    from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
    from lookalike.embed.torch_model import load_torch_embedder
    from lookalike.training.finetune import Tail, finetune, stem_runner

    weights = base_manifest.get("torch_weights")
    if not weights or not (base_dir / weights).is_file():
        raise InvalidInput("fine-tuning needs the base model's torch weights (weights.pt)")
    model = load_torch_embedder(base_dir / weights)
    pre = PreprocessConfig.from_dict(base_manifest.get("preprocess", {}))
    runner: list[Callable[[list[Image.Image]], np.ndarray]] = []

    def run_stem(images: list[Image.Image]) -> np.ndarray:
        if not runner:  # exported on first use: a warm cache never pays for it
            runner.append(stem_runner(model, cfg.at, pre, onnx_dir=work))
        return runner[0](images)

    # Keyed by the base backbone and the cut: the stem's weights never change.
    stem = FeatureCache(cache_dir, f"{cache.root.name}-stem{cfg.at}", run_stem)
    say(f"stem activations (blocks < {cfg.at}) of {len(fit)} pairs, cached after once")
    t_feat = time.perf_counter()
    views = [stem.features(fit.queries, c) for c in crops]
    catalog = stem.features(fit.catalog, CropSpec("whole"))
    feature_seconds = round(time.perf_counter() - t_feat, 1)
    trained_blocks = len(model._blocks) - cfg.at
    say(f"fine-tuning the last {trained_blocks} block(s) and the head ({cfg.epochs} epochs)")
    result = finetune(model, views, catalog, cfg, progress=say)
    say(f"fine-tuned in {result.seconds:.1f} s (loss {result.final_loss})")

    step = max(1, len(fit) // 100)
    calib = [load_image_file(p) for p in fit.catalog[::step][:100]]
    calib += [crops[0].apply(load_image_file(p)) for p in fit.queries[::step][:100]]
    exported = export_variants(model, preprocess_batch(calib, pre), work, say)
    tail = Tail(model, cfg.at, pre.size)
    return _Trained(
        head=result.head,
        features=TailFeatures(stem, tail, cache),
        files=exported.files,
        manifest={
            **exported.manifest,
            "finetune": {"from_block": cfg.at, "blocks": trained_blocks, "head_conv": True},
        },
        training={
            "config": cfg.to_dict(),
            "final_loss": result.final_loss,
            "temperature": result.temperature,
            "history": result.history,
            "train_seconds": result.seconds,
            "feature_seconds": feature_seconds,
        },
        description=(
            f"fine-tuned last {trained_blocks} block(s) + {cfg.kind} head on {len(fit)} pairs"
        ),
    )


def train_candidate(
    registry: Registry,
    train: PairSet,
    *,
    base: str | Ref = "effnet_lite0:production",
    name: str | None = None,
    cfg: TrainConfig | None = None,
    finetune: FinetuneConfig | None = None,
    query_crop: str = "upper",
    augment: bool = True,
    evaluate: PairSet | None = None,
    eval_label: str = "val",
    distractors: Sequence[Path] = (),
    cache_dir: Path = Path("var/cache/features"),
    training_data: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainedCandidate:
    """Train a head on ``train`` and write it, with its backbone, as a new version.

    With ``finetune`` the backbone's last blocks train with the head (torch, CPU is fine) and
    the candidate carries its own re-exported ONNX files; otherwise the backbone is the base's,
    frozen and copied. ``augment`` adds the mirrored query crop as a second view. ``evaluate``
    (held-out pairs, e.g. viton-dev ``val``) and ``distractors`` give the manifest's figures;
    without them the figures are measured on a 10% hash-held-out part of ``train`` that
    training does not see. ``training_data`` (pairs file, split ...) is copied into the manifest.
    """
    say = progress or logged(log, "train-embedding")
    cfg = cfg or TrainConfig()
    started = time.perf_counter()
    _, cache, base_ref = base_cache(registry, base, cache_dir)
    base_manifest = registry.manifest(base_ref)
    if base_manifest.get("head"):
        raise InvalidInput(f"base model {base_ref} already has a head: train from a backbone")
    fit, tune = (train, None) if evaluate is not None else holdout(train)
    crops = [CropSpec(query_crop)] + ([CropSpec(query_crop, flip=True)] if augment else [])
    base_dir = registry.path(base_ref)
    with tempfile.TemporaryDirectory(prefix="lookalike-head-") as tmp:
        work = Path(tmp)
        if finetune is None:
            trained = _train_frozen(base_dir, base_manifest, cache, fit, crops, cfg, say)
        else:
            trained = _train_finetuned(
                base_dir, base_manifest, cache, cache_dir, fit, crops, finetune, work, say
            )
        head = trained.head
        held = evaluate if evaluate is not None else tune
        label = eval_label if evaluate is not None else "train-holdout"
        figures: dict[str, Any] = {}
        if held is not None and len(held):
            say(f"measuring on {len(held)} {label} pairs + {len(distractors)} distractors")
            qc = (CropSpec(query_crop),)
            figures[label] = evaluate_head(
                trained.features, head, held, distractors=distractors, query_crops=qc
            )
            untrained = identity_head(head.in_dim, head.query.out_dim, cfg.seed)
            figures[f"{label}_untrained_head"] = evaluate_head(
                cache, untrained, held, distractors=distractors, query_crops=qc
            )
            figures["queries"], figures["gallery"] = (
                len(held),
                len({str(p) for p in held.catalog}) + len(distractors),
            )
            say(f"{label}: {figures[label]}")

        # A fine-tuned backbone invalidates what was computed from the base's: its feature
        # keys and any localiser trained on its feature map.
        dropped = {"feature_keys", "localizer"} if finetune is not None else set()
        manifest = {
            k: v for k, v in base_manifest.items() if k not in BASE_ONLY and k not in dropped
        }
        manifest.update(trained.manifest)
        manifest.update(
            {
                "task": "image-embedding",
                "embedding_dim": head.out_dim,
                "backbone_dim": head.in_dim,
                "head": {
                    "file": "head.npz",
                    "kind": head.kind,
                    "out_dim": head.out_dim,
                    "tower_dim": head.query.out_dim,
                    "colour_weight": head.colour_weight,
                    "colour_bins": head.colour_bins,
                    "roles": ["query", "catalog"],
                },
                "query_crop": query_crop,
                "base_model": str(base_ref),
                "training": {
                    **(training_data or {}),
                    "pairs": len(train),
                    "fit_pairs": len(fit),
                    "held_out_pairs": len(held) if held is not None else 0,
                    "query_views": [c.key for c in crops],
                    "loss": "symmetric InfoNCE",
                    **trained.training,
                },
                "figures": figures,
                "description": f"{trained.description} over {base_ref}",
            }
        )
        head_path = work / "head.npz"
        head.save(head_path)
        manifest["head"]["sha256"] = sha256_file(head_path)
        target = name or base_ref.name
        with registry.create(target, manifest) as writer:
            for rel, src in {**trained.files, "head.npz": head_path}.items():
                dest = writer.path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
            writer.manifest["training"]["total_seconds"] = round(time.perf_counter() - started, 1)
    manifest = writer.manifest
    # The figure that decides int8 is the held-out recall, whatever the build's proxy chose.
    if held is not None and len(held) and "int8" in manifest.get("variants", {}):
        choice = _int8_by_recall(
            registry, writer.ref, cache_dir, head, held, distractors, query_crop, figures[label]
        )
        say(f"int8 on {label}: {choice['int8_retrieval']['reason']}")
        registry.update_manifest(writer.ref, **choice)
        manifest = registry.manifest(writer.ref)
    say(f"registered {writer.ref} (not promoted: `lookalike models promote {writer.ref}`)")
    return TrainedCandidate(writer.ref, manifest)


def _int8_by_recall(
    registry: Registry,
    ref: Ref,
    cache_dir: Path,
    head: ProjectionHead,
    held: PairSet,
    distractors: Sequence[Path],
    query_crop: str,
    fp32: Figures,
) -> dict[str, Any]:
    """Serve int8 when it keeps the candidate's retrieval recall on the held-out pairs, else fp32.

    The build's rule (int8 keeps 90% of fp32's nearest neighbours among a few hundred photos)
    is a proxy; with held-out pairs the figure that matters can be measured directly: int8
    is chosen when its Recall@1 and Recall@10 are within ``INT8_MAX_RECALL_DROP`` of fp32's.
    """
    from lookalike.embed.build import INT8_MAX_RECALL_DROP

    emb = load_embedder(registry, ref, runtime="onnx-cpu", variant="int8")
    cache8 = FeatureCache(
        cache_dir, backbone_key(registry.manifest(ref), "int8"), emb.embed_backbone
    )
    int8 = evaluate_head(
        cache8, head, held, distractors=distractors, query_crops=(CropSpec(query_crop),)
    )
    r32, r8 = fp32["recall"], int8["recall"]
    drops = {k: round(r32[k] - r8[k], 4) for k in ("@1", "@10")}
    keeps = all(d <= INT8_MAX_RECALL_DROP for d in drops.values())
    reason = (
        f"int8 {'keeps' if keeps else 'loses'} the held-out recall: "
        f"R@1 {r8['@1']:.3f} vs fp32 {r32['@1']:.3f}, "
        f"R@10 {r8['@10']:.3f} vs {r32['@10']:.3f} "
        f"(allowed drop {INT8_MAX_RECALL_DROP})"
    )
    out: dict[str, Any] = {"int8_retrieval": {"figures": int8, "drop": drops, "reason": reason}}
    out.update(default_variant="int8" if keeps else "fp32", reason=reason)
    return out
