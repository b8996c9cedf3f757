"""Does the pre-filter's threshold keep its recall target on photos it never saw?

    python benchmarks/prefilter_threshold.py --home HOME [--data ../shared/data] [--seeds 13]
        [--json OUT]

HOME is a home where ``lookalike moderation train --data DATA`` has run (its feature cache in
``var/prefilter-cache`` is read; nothing is embedded here). For each seed of the stratified split
(``lookalike.moderation.fit.stratified_split``), the served feature blocks (garment crop +
caption) are fitted two ways and scored on that seed's held-out photos:

- **one validation part** (what ``moderation train`` did until 2026-12-07): fit on the training
  part for each L2, keep the best validation PR-AUC, take the threshold that keeps recall 0.90
  of the validation positives (about 52 dresses);
- **5-fold cross-validation** (:func:`lookalike.moderation.fit.fit_classifier_cv`, what it does
  now): L2 and threshold from out-of-fold scores over training + validation, then one fit on both.

Printed per method: mean and standard deviation over seeds of the held-out recall at the chosen
threshold (the target is 0.90), precision there, PR-AUC, precision at recall 0.90, and how many
seeds fell under recall 0.85. About a minute a seed on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from harness import write

from lookalike.moderation.evaluation import average_precision, figures, threshold_for_recall
from lookalike.moderation.features import stack_blocks
from lookalike.moderation.fit import (
    DEFAULT_BLOCKS,
    L2_GRID,
    fit_classifier_cv,
    fit_logistic,
    seed_samples,
    stratified_split,
)

TARGET = 0.9


def one_validation_part(feats, y, split, names):  # type: ignore[no-untyped-def]
    x_val = stack_blocks(feats, names)[split.validation]
    fitted = [fit_logistic(feats, y, split.train, names, l2, 500, TARGET) for l2 in L2_GRID]
    best = max(fitted, key=lambda c: average_precision(c.score(x_val), y[split.validation]))
    threshold = threshold_for_recall(best.score(x_val), y[split.validation], TARGET)
    return dataclasses.replace(best, threshold=threshold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    ap.add_argument("--seeds", type=int, default=13)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    samples = seed_samples(args.data)
    caches = sorted((args.home / "var" / "prefilter-cache").glob("*.npz"))
    if not caches:
        raise SystemExit(f"no feature cache under {args.home}: run `lookalike moderation train`")
    with np.load(caches[-1]) as z:
        feats = {k: z[k] for k in z.files}
    if len(next(iter(feats.values()))) != len(samples):
        raise SystemExit(f"{caches[-1]} holds another set of photos than {args.data}")
    y = np.array([s.label for s in samples])
    x = stack_blocks(feats, DEFAULT_BLOCKS)
    rows: dict[str, list[dict]] = {"one validation part": [], "5-fold cross-validation": []}
    for seed in range(args.seeds):
        split = stratified_split(samples, seed=seed)
        held = y[split.holdout]
        cv, _ = fit_classifier_cv(feats, y, split.fitting, DEFAULT_BLOCKS, seed=seed)
        for name, clf in (
            ("one validation part", one_validation_part(feats, y, split, DEFAULT_BLOCKS)),
            ("5-fold cross-validation", cv),
        ):
            f = figures(clf.score(x[split.holdout]), held, clf.threshold, TARGET)
            rows[name].append({"seed": seed, **{k: f[k] for k in ("recall", "precision",
                               "pr_auc", "precision_at_recall_0.9")}})  # fmt: skip
            print(f"seed {seed:2d} {name:24s} recall {f['recall']:.3f} "
                  f"precision {f['precision']:.3f}", flush=True)  # fmt: skip
    summary = {}
    print(f"\n{'method':24s} {'recall':>14s} {'precision':>9s} {'PR-AUC':>7s} {'P@R.9':>6s} <0.85")
    for name, runs in rows.items():
        r = np.array([run["recall"] for run in runs])
        summary[name] = {
            "recall_mean": float(r.mean()),
            "recall_sd": float(r.std()),
            "precision_mean": float(np.mean([run["precision"] for run in runs])),
            "pr_auc_mean": float(np.mean([run["pr_auc"] for run in runs])),
            "p_at_r90_mean": float(np.mean([run["precision_at_recall_0.9"] for run in runs])),
            "seeds_under_0.85": int((r < 0.85).sum()),
        }
        s = summary[name]
        print(f"{name:24s} {s['recall_mean']:.3f} ± {s['recall_sd']:.3f} "
              f"{s['precision_mean']:9.3f} {s['pr_auc_mean']:7.3f} {s['p_at_r90_mean']:6.3f} "
              f"{s['seeds_under_0.85']:5d}")  # fmt: skip
    if args.json:
        write(args.json, {"seeds": args.seeds, "summary": summary, "runs": rows})


if __name__ == "__main__":
    main()
