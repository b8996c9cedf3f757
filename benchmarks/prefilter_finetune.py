"""Does fine-tuning the backbone lift the pre-filter? A 5-fold probe on the street photos.

    python benchmarks/prefilter_finetune.py --models models [--folds 5] [--epochs 8] [--json OUT]

The pre-filter's hard negatives are street photos of people in other clothes (every scene and
clothing photo already scores far below the dresses), so this probe uses the street photos only:
``../shared/data/street`` (``tags.csv`` has_dress). Folds are stratified by (has_dress, source)
with seed 0. In each fold, on the training photos only:

- **frozen whole / frozen crop**: a logistic regression (:func:`lookalike.embed.heads.fit_softmax`)
  on the ImageNet backbone's embedding of the whole photo / of the detector's shoulders-to-feet
  crop (the whole photo when no person is found) — what the served pre-filter reads today;
- **fine-tuned crop**: blocks ``--at``..15 and the head convolution of the same backbone trained
  with a linear dress head (class-balanced BCE, AdamW, one-cycle, horizontal flips), the stem's
  activations cached (:func:`lookalike.training.finetune.stem_runner`); scored by its own head
  (mean of the photo and its mirror) and by a logistic regression on its embedding.

Out-of-fold scores are pooled over the folds, then PR-AUC and precision at recall 0.90 are read
(:mod:`lookalike.moderation.evaluation`). Needs torch (the ``build`` extra); ``--models`` is a
models/ folder with a built default (``lookalike models build-default``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import write
from PIL import Image, ImageOps

from lookalike.embed.bodyparts import BodyPartDetector, garment_boxes
from lookalike.embed.heads import fit_softmax
from lookalike.embed.preprocess import PreprocessConfig
from lookalike.embed.regions import crop_box
from lookalike.embed.torch_model import load_torch_embedder
from lookalike.moderation.evaluation import average_precision, precision_at_recall
from lookalike.registry import Ref, Registry
from lookalike.training.finetune import Tail, stem_runner

SEED = 0
SHARED = Path(
    os.environ.get("LOOKALIKE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _folds(y: np.ndarray, strata: np.ndarray, k: int) -> list[np.ndarray]:
    """Test indices of ``k`` folds, each stratum dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(SEED)
    fold = np.zeros(len(y), int)
    for s in np.unique(strata):
        idx = rng.permutation(np.nonzero(strata == s)[0])
        fold[idx] = np.arange(len(idx)) % k
    return [np.nonzero(fold == f)[0] for f in range(k)]


def _logreg(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray) -> np.ndarray:
    w, b, classes = fit_softmax(x_tr, [str(v) for v in y_tr], l2=1e-3, steps=1500)
    logits = x_te @ w + b
    return logits[:, classes.index("1")] - logits[:, classes.index("0")]


def _crops(files: list[Path], detector: BodyPartDetector) -> list[Image.Image]:
    out = []
    for s in range(0, len(files), 32):
        imgs = [Image.open(f).convert("RGB") for f in files[s : s + 32]]
        for img, parts in zip(imgs, detector.detect(imgs), strict=True):
            full = next((g for g in garment_boxes(parts) if g.label == "full"), None)
            out.append(crop_box(img, full.box) if full is not None else img)
    return out


def _finetune(model, at, stems, y, tr, epochs, fold):  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(SEED + fold)
    tail = Tail(copy.deepcopy(model), at)
    head = nn.Linear(1280, 1)
    opt = torch.optim.AdamW(
        [
            {"params": tail.parameters(), "lr": 3e-4, "weight_decay": 1e-2},
            {"params": head.parameters(), "lr": 2e-3, "weight_decay": 1e-3},
        ]
    )
    batch = 64
    steps = epochs * int(np.ceil(len(tr) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[3e-4, 2e-3], total_steps=steps, pct_start=0.15
    )
    pos_weight = torch.tensor(float((y[tr] == 0).sum() / max((y[tr] == 1).sum(), 1)))
    rng = np.random.default_rng(SEED + fold)
    for _ in range(epochs):
        tail.train()
        order = rng.permutation(tr)
        for s in range(0, len(order), batch):
            b = order[s : s + batch]
            flip = rng.integers(0, 2, len(b))
            e = tail(torch.from_numpy(stems[b, flip].astype(np.float32)))
            target = torch.from_numpy(y[b].astype(np.float32))
            loss = F.binary_cross_entropy_with_logits(
                head(e * 10).squeeze(1), target, pos_weight=pos_weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    tail.eval()

    def score(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb = tail.features(stems[idx, 0])
        with torch.inference_mode():
            both = [head(torch.from_numpy(tail.features(stems[idx, f])) * 10) for f in (0, 1)]
        return emb, (sum(both) / 2).squeeze(1).numpy()

    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--at", type=int, default=11, help="first fine-tuned block (of 16)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    registry = Registry(args.models, "model")
    ref = registry.resolve(Ref.parse("effnet_lite0"))
    folder = registry.path(ref)
    manifest = json.loads((folder / "manifest.json").read_text())
    cfg = PreprocessConfig(**manifest["preprocess"])
    street = args.data / "street"
    with open(street / "tags.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    files = [street / "images" / r["file"] for r in rows]
    y = np.array([int(r["has_dress"]) for r in rows])
    strata = y * 2 + np.array([r["source"] == "pixel-level" for r in rows])

    t0 = time.perf_counter()
    model = load_torch_embedder(folder / "weights.pt")
    work = Path(tempfile.mkdtemp(prefix="prefilter-ft-"))
    run = stem_runner(model, args.at, cfg, onnx_dir=work)  # onnxruntime: ~5x torch's speed
    crops = _crops(files, BodyPartDetector(folder / manifest["detector"]["file"]))
    whole_tail = Tail(model, args.at)
    stems = np.stack(
        [
            np.concatenate([run(crops[s : s + 32]) for s in range(0, len(crops), 32)]),
            np.concatenate(
                [
                    run([ImageOps.mirror(c) for c in crops[s : s + 32]])
                    for s in range(0, len(crops), 32)
                ]
            ),
        ],
        axis=1,
    )
    frozen_crop = whole_tail.features(stems[:, 0])
    whole = []
    for s in range(0, len(files), 32):
        imgs = [Image.open(f).convert("RGB") for f in files[s : s + 32]]
        whole.append(whole_tail.features(run(imgs)))
    frozen_whole = np.concatenate(whole)
    print(f"features of {len(files)} photos in {time.perf_counter() - t0:.0f} s", flush=True)

    oof = {k: np.zeros(len(y)) for k in ("frozen whole", "frozen crop", "ft crop (head)",
                                         "ft crop (logreg)")}  # fmt: skip
    test_folds = _folds(y, strata, args.folds)
    for i, te in enumerate(test_folds):
        t = time.perf_counter()
        tr = np.setdiff1d(np.arange(len(y)), te)
        oof["frozen whole"][te] = _logreg(frozen_whole[tr], y[tr], frozen_whole[te])
        oof["frozen crop"][te] = _logreg(frozen_crop[tr], y[tr], frozen_crop[te])
        score = _finetune(model, args.at, stems, y, tr, args.epochs, i)
        emb_tr, _ = score(tr)
        emb_te, head_te = score(te)
        oof["ft crop (head)"][te] = head_te
        oof["ft crop (logreg)"][te] = _logreg(emb_tr, y[tr], emb_te)
        done = np.concatenate(test_folds[: i + 1])
        so_far = "  ".join(
            f"{k} {average_precision(v[done], y[done]):.3f}/"
            f"{precision_at_recall(v[done], y[done], 0.9):.3f}"
            for k, v in oof.items()
        )
        print(
            f"fold {i + 1}/{args.folds} ({time.perf_counter() - t:.0f} s), PR-AUC/P@R0.9 so far: "
            f"{so_far}",
            flush=True,
        )

    rows_out = {
        k: {
            "pr_auc": round(average_precision(s, y), 4),
            "precision_at_recall_0.9": round(precision_at_recall(s, y, 0.9), 4),
        }
        for k, s in oof.items()
    }
    print(f"\n{len(y)} street photos ({int(y.sum())} with a dress), {args.folds} folds")
    print(f"{'features':<20} {'PR-AUC':>7} {'P@R0.9':>7}")
    for k, r in rows_out.items():
        print(f"{k:<20} {r['pr_auc']:>7.3f} {r['precision_at_recall_0.9']:>7.3f}")
    if args.json:
        settings = {"folds": args.folds, "epochs": args.epochs, "at": args.at, "seed": SEED}
        write(args.json, {"settings": settings, "rows": rows_out, "model": str(ref)})


if __name__ == "__main__":
    main()
