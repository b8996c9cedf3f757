"""Search-quality ablation on viton-dev: which part of the pipeline buys how much recall.

Every row is measured on viton-dev ``val`` (1,500 shopper photos) against a gallery of their
1,500 product photos plus ../shared/data/products (3,000 distractors). Hyperparameters (head
kind, epochs, colour weight) are chosen on a 10% hash-held-out part of ``train``; ``val`` is
only ever used for the reported figures. Backbone features are cached on disk (first run:
minutes; later runs: seconds).

    python benchmarks/bench_quality.py --models /tmp/lkhome/models --out var/bench/quality.json
    python benchmarks/bench_quality.py --models models --latency effnet_lite0:3 \
        --out var/bench/quality_latency.json

Prints a table and writes JSON (figures, training seconds, chosen settings).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lookalike.core.metrics import Figures, figures
from lookalike.embed.cache import CropSpec
from lookalike.embed.heads import ProjectionHead, Tower
from lookalike.registry import Registry
from lookalike.search import read_pairs
from lookalike.training.candidate import PairSet, base_cache, evaluate_head, holdout
from lookalike.training.head import TrainConfig, train_head

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pair_set(root: Path, split: str) -> PairSet:
    chosen = read_pairs(root / "pairs.csv", split)
    return PairSet(
        [root / p.person for p in chosen],
        [root / p.product for p in chosen],
        [p.item_id for p in chosen],
    )


def colour_only(cache, pairs: PairSet, distractors: list[Path]) -> Figures:
    products = sorted({str(p) for p in pairs.catalog})
    row = {p: i for i, p in enumerate(products)}
    gallery = cache.features([Path(p) for p in products] + distractors, CropSpec(), kind="colour")
    queries = cache.features(pairs.queries, CropSpec("upper"), kind="colour")
    relevant = np.asarray([row[str(p)] for p in pairs.catalog])
    return figures(queries, gallery, relevant)


def fit(
    cache, pairs: PairSet, cfg: TrainConfig, views: list[CropSpec]
) -> tuple[ProjectionHead, float]:
    q = [cache.features(pairs.queries, v) for v in views]
    c = cache.features(pairs.catalog, CropSpec())
    result = train_head(q, c, cfg, progress=lambda *_report: None)
    return result.head, result.seconds


def with_colour(head: ProjectionHead, weight: float) -> ProjectionHead:
    return ProjectionHead(
        Tower(head.query.layers, head.query.skip),
        Tower(head.catalog.layers, head.catalog.skip),
        kind=head.kind,
        colour_weight=weight,
        colour_bins=4,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--base", default="effnet_lite0:production")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=Path("var/cache/features"))
    ap.add_argument("--out", type=Path, default=Path("var/bench/quality.json"))
    ap.add_argument("--quick", action="store_true", help="skip the slower MLP/augmented rows")
    ap.add_argument(
        "--latency", metavar="MODEL", help="only measure single- vs multi-crop query latency"
    )
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if args.latency:
        latency(args)
        return

    root = args.data / "viton-dev"
    distractors = sorted((args.data / "products").rglob("*.jpg"))
    _, cache, base_ref = base_cache(Registry(args.models, "model"), args.base, args.cache)
    train, val = pair_set(root, "train"), pair_set(root, "val")
    fit_part, tune_part = holdout(train)
    upper, flip = CropSpec("upper"), CropSpec("upper", flip=True)
    rows: list[dict] = []

    def add(name: str, measured: Figures, **info: object) -> None:
        rows.append({"row": name, **measured, **info})
        r = measured["recall"]
        print(
            f"{name:<44} R@1 {r['@1']:.3f}  R@5 {r['@5']:.3f}  "
            f"R@10 {r['@10']:.3f}  R@20 {r['@20']:.3f}  mAP {measured['map']:.3f}  {info}",
            flush=True,
        )

    t0 = time.perf_counter()
    add("ImageNet features, upper crop", evaluate_head(cache, None, val, distractors=distractors))
    add("colour histogram only (4x4x4 HSV)", colour_only(cache, val, distractors))
    if not args.quick:
        add(
            "ImageNet features, whole photo",
            evaluate_head(cache, None, val, distractors=distractors, query_crops=[CropSpec()]),
        )

    # -- choose settings on the train hold-out (never on val) -----------------------------
    candidates = {
        "linear": (TrainConfig(kind="linear", epochs=40), [upper]),
        "linear+flip": (TrainConfig(kind="linear", epochs=40), [upper, flip]),
    }
    if not args.quick:
        candidates["mlp+flip"] = (TrainConfig(kind="mlp", epochs=40), [upper, flip])
    tune: dict[str, dict] = {}
    for name, (cfg, views) in candidates.items():
        head, secs = fit(cache, fit_part, cfg, views)
        tune[name] = evaluate_head(cache, head, tune_part, query_crops=[upper])
        print(f"  [train hold-out] {name:<16} {tune[name]}  ({secs:.1f} s)", flush=True)

    # -- the reported rows: train on all of train, measure on val ---------------------------
    heads: dict[str, ProjectionHead] = {}
    for name, (cfg, views) in candidates.items():
        head, secs = fit(cache, train, cfg, views)
        heads[name] = head
        add(
            f"{name} two-tower head",
            evaluate_head(cache, head, val, distractors=distractors),
            train_s=secs,
        )
    best = max(tune, key=lambda n: (tune[n]["recall"]["@1"], tune[n]["recall"]["@10"]))
    print(f"  best on the train hold-out: {best}", flush=True)

    # colour: weight chosen on the hold-out with a head fitted without it
    cfg, views = candidates[best]
    held_head, _ = fit(cache, fit_part, cfg, views)
    weights = {w: evaluate_head(cache, with_colour(held_head, w), tune_part) for w in (0.25, 0.5)}
    for w, fig in weights.items():
        print(f"  [train hold-out] colour weight {w}: {fig}", flush=True)
    w_best = max(weights, key=lambda w: weights[w]["recall"]["@1"])
    keep_colour = weights[w_best]["recall"]["@1"] > tune[best]["recall"]["@1"]
    add(
        f"{best} + colour (w={w_best})",
        evaluate_head(cache, with_colour(heads[best], w_best), val, distractors=distractors),
        kept=keep_colour,
    )
    final = with_colour(heads[best], w_best) if keep_colour else heads[best]
    multi = [CropSpec("whole"), upper, CropSpec("lower")]
    add(
        f"{best}{' + colour' if keep_colour else ''}, multi-crop (whole+upper+lower)",
        evaluate_head(cache, final, val, distractors=distractors, query_crops=multi),
    )
    doc = {
        "base": str(base_ref),
        "queries": len(val),
        "gallery": len(set(map(str, val.catalog))) + len(distractors),
        "train_pairs": len(train),
        "holdout": {"fit": len(fit_part), "tune": len(tune_part), "figures": tune},
        "chosen": {"head": best, "colour_weight": w_best if keep_colour else 0.0},
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")


def latency(args: argparse.Namespace) -> None:
    """Median/p95 of one query's embedding cost: one crop vs the multi-crop modes."""
    from PIL import Image

    from lookalike.embed import load_embedder
    from lookalike.embed.measure import latency_ms
    from lookalike.search.crops import embed_query_crops

    emb = load_embedder(Registry(args.models, "model"), args.latency, runtime="onnx-cpu")
    photos = sorted((args.data / "viton-dev" / "person").glob("*.jpg"))[:8]
    images = [Image.open(p).convert("RGB") for p in photos]
    modes = ["model", "multi"] + (["garment"] if emb.localizer is not None else [])
    out = {"model": emb.info.ref, "served_by": emb.info.served_by, "modes": {}}
    for mode in modes:
        state = {"i": 0}

        def one(mode: str = mode, state: dict = state) -> None:
            embed_query_crops(emb, images[state["i"] % len(images)], mode)
            state["i"] += 1

        crops = len(embed_query_crops(emb, images[0], mode)[0])
        figures = latency_ms(one, runs=args.runs, warmup=3)
        out["modes"][mode] = {"crops": crops, **figures}
        print(
            f"{mode:<8} crops {crops}  median {figures['median_ms']:.1f} ms  "
            f"p95 {figures['p95_ms']:.1f} ms",
            flush=True,
        )
    path = args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
