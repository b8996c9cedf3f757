"""Fit the shipped default's kind classifier on more photos than the demo catalog holds.

    python scripts/fit_kind_classifier.py --home HOME [--clothing ../shared/data/clothing]

The garment-aware default (``lookalike models build-default``) appends the √p of a linear
softmax over the demo categories to catalog rows and to queries of a garment alone. Fitted on
the 430 demo photos alone (8–16 photos of each kind but dresses) it names the kind of 0.52–0.58
of held-out shopper photos. ``../shared/data/clothing`` (the dataset the demo photos come from;
its authors allow any use, commercial included) has about 160 photos of each kind: this script
fits the same softmax on the demo photos **plus the even rows** of its ``labels.csv`` whose label
is a demo category, reports the accuracy on the odd rows (never fitted on), and writes the
weights beside the demo catalog (``demo/catalog/kind_classifier.npz``, about 60 KB; no photo is
copied). ``build-default`` reads that file when it is there and its classes and width match
(:func:`lookalike.embed.garment_default.load_kind_classifier`).

``HOME`` holds a garment-aware default already built (its ``model_fp32.onnx`` and detector: the
features are computed exactly as ``build-default`` computes them, garment crop and all).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "catalog"


def main() -> None:
    from lookalike.embed.bodyparts import BodyPartDetector
    from lookalike.embed.build import _load_images, backbone_batch
    from lookalike.embed.garment_default import (
        MIN_PER_CATEGORY,
        _features,
        read_labelled,
        save_kind_classifier,
    )
    from lookalike.embed.heads import fit_softmax
    from lookalike.embed.preprocess import PreprocessConfig
    from lookalike.registry import Registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--model", default="effnet_lite0:production")
    ap.add_argument("--clothing", type=Path, default=REPO.parent / "shared" / "data" / "clothing")
    ap.add_argument("--out", type=Path, default=DEMO / "kind_classifier.npz")
    args = ap.parse_args()

    registry = Registry(args.home / "models", "model")
    ref = registry.resolve(args.model)
    folder = registry.path(ref)
    manifest = registry.manifest(ref)
    run = backbone_batch(folder / "model_fp32.onnx")
    cfg = PreprocessConfig.from_dict(manifest["preprocess"])
    detector = BodyPartDetector(folder / "detector.onnx")

    demo = read_labelled(DEMO / "items.csv")
    counts: dict[str, int] = {}
    for _, c in demo:
        counts[c] = counts.get(c, 0) + 1
    known = sorted(c for c, n in counts.items() if n >= MIN_PER_CATEGORY)
    demo = [(p, c) for p, c in demo if c in known]
    demo_files = {p.name for p, _ in demo}
    rows = list(csv.DictReader(open(args.clothing / "labels.csv", encoding="utf-8")))
    halves = [
        [
            (args.clothing / "images" / r["file"], r["label"])
            for r in rows[h::2]
            if r["file"] not in demo_files and r["label"] in known
        ]
        for h in (0, 1)
    ]

    def features(pairs: list[tuple[Path, str]]) -> np.ndarray:
        feats, _, _ = _features(run, cfg, detector, _load_images([p for p, _ in pairs]))
        return feats

    print(f"features of {len(demo)} demo photos and {sum(map(len, halves))} clothing photos")
    fit_rows = demo + halves[0]
    x = features(fit_rows)
    w, b, classes = fit_softmax(x, [c for _, c in fit_rows])
    held = features(halves[1])
    truth = np.asarray([c for _, c in halves[1]])
    accuracy = float(np.mean(np.asarray(classes)[(held @ w + b).argmax(axis=1)] == truth))
    demo_only = fit_softmax(x[: len(demo)], [c for _, c in demo])
    before = float(
        np.mean(np.asarray(demo_only[2])[(held @ demo_only[0] + demo_only[1]).argmax(1)] == truth)
    )
    figures = {
        "fitted_on": {
            "demo_photos": len(demo),
            "clothing_photos": len(halves[0]),
            "clothing_rows": "even rows of labels.csv, not demo photos, label a demo category",
        },
        "held_out": {"clothing_photos": len(halves[1]), "rows": "odd rows of labels.csv"},
        "held_out_accuracy": round(accuracy, 4),
        "held_out_accuracy_demo_photos_only": round(before, 4),
        "backbone": f"{ref} model_fp32.onnx ({manifest.get('source', {}).get('package', '?')})",
        "source": "alexeygrigorev/clothing-dataset: free to use for any purpose",
    }
    save_kind_classifier(args.out, w, b, classes, figures)
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
