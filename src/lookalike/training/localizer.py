"""Train the garment localiser from per-pixel masks and add it to a model as a new version.

Needs torch and onnx (the ``build`` extra). The backbone stays frozen: its feature maps of the
masked photos are computed once (cached), then a per-cell softmax is fitted to the share of
each garment class in each cell (soft cross-entropy), in the shared loop
(:mod:`lookalike.training.loop`). Figures: on a 15% hash-held-out part of
the photos, the mean IoU of each garment's predicted box with the box of its mask pixels, and
the share of garments found at IoU ≥ 0.5.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import InvalidInput
from lookalike.core.progress import Progress, logged
from lookalike.embed.cache import FeatureCache, backbone_key
from lookalike.embed.localize import (
    CLASSES,
    FMAP_OUTPUT,
    GARMENT_GROUPS,
    LocalizerHead,
    add_fmap_output,
    mask_targets,
)
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.regions import box_iou
from lookalike.embed.runtime import onnx_session
from lookalike.registry import Registry
from lookalike.training.candidate import BASE_ONLY, TrainedCandidate, in_holdout

__all__ = ["fit_localizer", "train_localizer_candidate"]

log = logging.getLogger("lookalike.training")


def _read_street(data: Path) -> tuple[list[Path], list[Path], list[str]]:
    labels_file, masks = data / "labels.txt", data / "masks"
    if not labels_file.is_file() or not masks.is_dir():
        raise InvalidInput(f"{data} needs labels.txt and masks/ (per-pixel garment labels)")
    labels = labels_file.read_text(encoding="utf-8").split()
    mask_paths = sorted(masks.glob("*.png"))
    images = []
    for m in mask_paths:
        options = (data / "images" / f"{m.stem}{s}" for s in (".jpg", ".png"))
        found = [p for p in options if p.exists()]
        if not found:
            raise InvalidInput(f"mask {m.name} has no photo in {data / 'images'}")
        images.append(found[0])
    if len(images) < 8:
        raise InvalidInput(f"{data}: need at least 8 masked photos, found {len(images)}")
    return images, mask_paths, labels


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)


def fit_localizer(
    fmaps: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int = 60,
    lr: float = 0.01,
    seed: int = 0,
    progress: Progress | None = None,
) -> LocalizerHead:
    """Fit the per-cell softmax: ``fmaps (n, C, H, W)``, ``targets (n, K, H, W)`` class shares."""
    import torch

    from lookalike.training.loop import Batch, Passes, run_epochs

    torch.manual_seed(seed)
    c = fmaps.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(fmaps.transpose(0, 2, 3, 1).reshape(-1, c)))
    k = len(CLASSES)
    y = torch.from_numpy(np.ascontiguousarray(targets.transpose(0, 2, 3, 1).reshape(-1, k)))
    lin = torch.nn.Linear(c, len(CLASSES))
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=1e-4)

    def loss_of(batch: Batch) -> torch.Tensor:  # soft cross-entropy of each cell
        logp = torch.log_softmax(lin(x[batch.rows]), dim=1)
        return -(y[batch.rows] * logp).sum(dim=1).mean()

    run_epochs(
        loss_of,
        Passes(epochs, batch_size=4096, seed=seed),
        rows=len(x),
        modules=[lin],
        optimizer=opt,
        drop_last=False,  # cells, not pairs: every one counts
        report_every=20,
        progress=progress or logged(log, "train-localizer"),
    )
    w = lin.weight.detach().numpy().T.copy()
    return LocalizerHead(w, lin.bias.detach().numpy().copy())


def train_localizer_candidate(
    registry: Registry,
    data: Path,
    *,
    model: str = "effnet_lite0:production",
    name: str | None = None,
    epochs: int = 60,
    cache_dir: Path = Path("var/cache/features"),
    progress: Progress | None = None,
) -> TrainedCandidate:
    """Train a localiser on ``data`` (street/) and write ``model`` plus it as a new version."""
    say = progress or logged(log, "train-localizer")
    started = time.perf_counter()
    ref = registry.resolve(model)
    manifest = registry.manifest(ref)
    src_dir = registry.path(ref)
    variants: dict[str, str] = dict(manifest.get("variants", {}))
    if "fp32" not in variants:
        raise InvalidInput(f"model {ref} has no fp32 ONNX file to add a feature-map output to")
    images, mask_paths, labels = _read_street(Path(data))
    cfg = PreprocessConfig.from_dict(manifest.get("preprocess", {}))
    with tempfile.TemporaryDirectory(prefix="lookalike-loc-") as tmp:
        work = Path(tmp)
        with_fmap = {v: work / f"{Path(rel).stem}_fmap.onnx" for v, rel in variants.items()}
        for v, rel in variants.items():
            add_fmap_output(src_dir / rel, with_fmap[v])
        sess = onnx_session(with_fmap["fp32"], ["CPUExecutionProvider"])

        def run(batch: list[Image.Image]) -> np.ndarray:
            out = sess.run([FMAP_OUTPUT], {"pixels": preprocess_batch(batch, cfg)})[0]
            return out.reshape(len(batch), -1).astype(np.float16).astype(np.float32)

        key = backbone_key(manifest, "fp32") + "-fmap"
        cache = FeatureCache(cache_dir, key, run, batch_size=32)
        say(f"feature maps of {len(images)} masked photos (cached after once)")
        t_feat = time.perf_counter()
        flat = cache.features(images)
        cells = int(round(np.sqrt(flat.shape[1] / manifest.get("backbone_dim", 1280))))
        fmaps = flat.reshape(len(images), -1, cells, cells)
        feature_seconds = round(time.perf_counter() - t_feat, 1)
        masks = [np.asarray(Image.open(m)) for m in mask_paths]
        sizes = [(m.shape[1], m.shape[0]) for m in masks]
        targets = mask_targets(masks, sizes, labels, cfg.size, cells)
        held = [in_holdout(p.stem, 0.15) for p in images]
        fit_rows = [i for i, h in enumerate(held) if not h]
        test_rows = [i for i, h in enumerate(held) if h]
        say(f"fitting a per-cell softmax on {len(fit_rows)} photos × {cells * cells} cells")
        t_fit = time.perf_counter()
        head = fit_localizer(fmaps[fit_rows], targets[fit_rows], epochs=epochs, progress=say)
        fit_seconds = round(time.perf_counter() - t_fit, 1)
        figures = _box_figures(head, fmaps[test_rows], [masks[i] for i in test_rows], labels, cfg)
        say(f"held-out ({len(test_rows)} photos): {figures}")
        loc_path = work / "localizer.npz"
        head.save(loc_path)
        out_manifest = {k: v for k, v in manifest.items() if k not in BASE_ONLY}
        out_manifest["variants"] = {v: f"{Path(rel).stem}_fmap.onnx" for v, rel in variants.items()}
        out_manifest["fmap_output"] = FMAP_OUTPUT
        # Same weights, one more output: cached features of the old files stay valid.
        out_manifest["feature_keys"] = {v: backbone_key(manifest, v) for v in variants}
        out_manifest["localizer"] = {
            "file": "localizer.npz",
            "classes": list(CLASSES),
            "trained_on": str(data),
            "photos": len(images),
            "held_out_photos": len(test_rows),
            "epochs": epochs,
            "feature_seconds": feature_seconds,
            "train_seconds": fit_seconds,
            "figures": figures,
        }
        out_manifest["base_model"] = manifest.get("base_model", str(ref))
        out_manifest["description"] = (
            f"{manifest.get('description', str(ref))}; + garment localiser"
        )
        copy = [r for r in manifest.get("files", {}) if r not in set(variants.values())]
        with registry.create(name or ref.name, out_manifest) as writer:
            for rel in copy:
                (writer.path / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src_dir / rel, writer.path / rel)
            for path in with_fmap.values():
                shutil.copy2(path, writer.path / path.name)
            shutil.copy2(loc_path, writer.path / "localizer.npz")
            writer.manifest["localizer"]["total_seconds"] = round(time.perf_counter() - started, 1)
    say(f"registered {writer.ref} (not promoted)")
    return TrainedCandidate(writer.ref, writer.manifest)


def _box_figures(
    head: LocalizerHead,
    fmaps: np.ndarray,
    masks: list[np.ndarray],
    labels: list[str],
    cfg: PreprocessConfig,
) -> dict[str, Any]:
    """Mean box IoU per garment present, and the share found with IoU ≥ 0.5."""
    lookup = {name: k for k, g in enumerate(CLASSES[1:], start=1) for name in GARMENT_GROUPS[g]}
    ious: list[float] = []
    probs = head.probabilities(fmaps)
    for p, mask in zip(probs, masks, strict=True):
        h, w = mask.shape
        found = {g.label: g.box for g in head.boxes(p, (w, h), cfg.size)}
        classes = np.zeros_like(mask, dtype=np.int64)
        for i, name in enumerate(labels):
            if name in lookup:
                classes[mask == i] = lookup[name]
        for k, label in enumerate(CLASSES[1:], start=1):
            truth = _box_of(classes == k)
            if truth is None or (classes == k).mean() < 0.01:
                continue
            ious.append(box_iou(found[label], truth) if label in found else 0.0)
    arr = np.asarray(ious) if ious else np.zeros(1)
    return {
        "garments": len(ious),
        "mean_iou": round(float(arr.mean()), 4),
        "found_at_iou_0.5": round(float((arr >= 0.5).mean()), 4),
    }
