"""Choose the fine-tuning cut and epochs on a held-out part of viton-dev *train* (never val).

    python benchmarks/finetune_holdout.py --models models --at 15 --epochs 12
    python benchmarks/finetune_holdout.py --models models --at 13 --epochs 8

Splits viton-dev ``train`` by a hash of the item id (90% fit, 10% hold-out: the same split
``lookalike models train-embedding`` uses without an eval split), fine-tunes blocks ``at..15``
plus the head convolution and the two-tower head on the fit part, and after every epoch measures
Recall@1/10 on the hold-out (gallery: its own product photos), with and without the colour
signature. Prints one line per epoch and writes JSON. Stem activations are cached in
``--cache`` (keyed by the base backbone and the cut), so a second run starts at once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lookalike.core.metrics import rank_metrics
from lookalike.embed.cache import CropSpec, FeatureCache, backbone_key
from lookalike.embed.heads import ProjectionHead
from lookalike.embed.torch_model import load_torch_embedder
from lookalike.registry import Registry
from lookalike.search import read_pairs
from lookalike.training.candidate import PairSet, holdout
from lookalike.training.finetune import FinetuneConfig, Tail, finetune, stem_runner

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--base", default="effnet_lite0:1")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=Path("var/cache/features"))
    ap.add_argument("--at", type=int, default=15, help="first fine-tuned block (15: the last)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--colour-weight", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    registry = Registry(args.models, "model")
    ref = registry.resolve(args.base)
    model = load_torch_embedder(registry.path(ref) / "weights.pt")
    key = backbone_key(registry.manifest(ref), "fp32")
    work = args.cache / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    runner: list = []

    def run_stem(images: list) -> np.ndarray:
        if not runner:
            runner.append(stem_runner(model, args.at, onnx_dir=work))
        return runner[0](images)

    stem = FeatureCache(args.cache, f"{key}-stem{args.at}", run_stem)
    colour = FeatureCache(args.cache, key, lambda images: np.zeros((0, 0)))
    root = args.data / "viton-dev"
    rows = read_pairs(root / "pairs.csv", "train")
    train = PairSet(
        [root / p.person for p in rows], [root / p.product for p in rows], [p.item_id for p in rows]
    )
    fit, tune = holdout(train)
    up, flip, whole = CropSpec("upper"), CropSpec("upper", flip=True), CropSpec("whole")
    t0 = time.perf_counter()
    views = [stem.features(fit.queries, up), stem.features(fit.queries, flip)]
    catalog = stem.features(fit.catalog, whole)
    products = sorted({str(p) for p in tune.catalog})
    where = {p: i for i, p in enumerate(products)}
    gallery_paths = [Path(p) for p in products]
    g_stem, q_stem = stem.features(gallery_paths, whole), stem.features(tune.queries, up)
    g_col = colour.features(gallery_paths, whole, kind="colour")
    q_col = colour.features(tune.queries, up, kind="colour")
    relevant = np.asarray([where[str(p)] for p in tune.catalog])
    print(
        f"fit {len(fit)} pairs, hold-out {len(tune)}; stem rows in {time.perf_counter() - t0:.0f} s"
    )

    def monitor(tail: Tail, head: ProjectionHead) -> dict[str, float]:
        g, q = tail.features(g_stem), tail.features(q_stem)
        out = {}
        for w in (0.0, args.colour_weight):
            head.colour_weight = w
            recall, _, _ = rank_metrics(
                head.apply(q, "query", q_col), head.apply(g, "catalog", g_col), relevant
            )
            out[f"r1_colour{w}"], out[f"r10_colour{w}"] = recall["@1"], recall["@10"]
        return out

    cfg = FinetuneConfig(at=args.at, epochs=args.epochs, colour_weight=args.colour_weight)
    result = finetune(model, views, catalog, cfg, progress=print, monitor=monitor)
    doc = {
        "benchmark": "finetune_holdout",
        "base": str(ref),
        "fit_pairs": len(fit),
        "holdout_pairs": len(tune),
        "config": cfg.to_dict(),
        "train_seconds": result.seconds,
        "history": result.history,
    }
    out = args.out or Path(f"var/bench/finetune_holdout_at{args.at}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"trained in {result.seconds} s; wrote {out}")


if __name__ == "__main__":
    main()
