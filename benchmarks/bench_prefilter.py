"""Pre-filter scoring throughput (posts/s): detector + backbone + classifier + catalog match.

    python benchmarks/bench_prefilter.py                  # temp home: demo catalog, demo model
    python benchmarks/bench_prefilter.py --home H --photos DIR --posts 128 --batch 32 --runs 5

What one post costs in ``lookalike moderation score`` (the store's reads and writes aside): the
body-part detector (garment box + nudity check, one pass), the backbone on the whole photo and on
the garment crop, the logistic regression, and the top-3 catalog search of the garment crop.
Without ``--home`` a temporary LOOKALIKE_HOME gets the plain ImageNet backbone, the demo catalog
imported and indexed, and a pre-filter fitted on demo photos (the same library calls as the
CLI); a ``--home`` with a promoted ``post_prefilter`` and search index is used as it is.
Photos: ``--photos`` (default ../shared/data/street/images, real street photos). Prints a table
(median and p95 of posts/s over the runs, each stage's share) and writes JSON.

``--answers FILE`` times nothing: it writes every post's answer (score, safety, enqueue, garment
box, detector parts, catalog matches) to FILE, or, when FILE exists, compares with it (scores and
boxes within 1e-5, the same matches in the same order) and exits 1 on a difference — run it
before and after a change that should only make scoring faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.catalog import CatalogStore
from lookalike.core.images import load_image_file
from lookalike.core.settings import Settings
from lookalike.lifecycle import LoadContext, ProductSlot, StepPools, promote
from lookalike.moderation.kind import PrefilterKind
from lookalike.moderation.prefilter import catalog_matches, score_posts
from lookalike.registry import Registry
from lookalike.search.kind import SearchKind

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "catalog"
SHARED = Path(os.environ.get("LOOKALIKE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _demo_home(home: Path) -> None:
    """Plain backbone + demo catalog index + a pre-filter fitted on demo photos, promoted."""
    import csv

    from lookalike.embed import load_embedder
    from lookalike.embed.build import build_default
    from lookalike.moderation.fit import Sample, build_prefilter
    from lookalike.search import build_index

    settings = Settings(home=home)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    models = Registry(settings.models_dir, "model")
    photos = sorted((DEMO / "images").glob("*.jpg"))
    ref = build_default(models, calibration_images=photos, latency_runs=10)
    assert promote(SearchKind(settings), "model", ref).promoted
    store = CatalogStore(settings.db_url, settings.media_dir)
    store.create_schema()
    assert store.import_file(DEMO / "items.csv", DEMO).ok
    embedder = load_embedder(models, "effnet_lite0:production")
    index = build_index(store, embedder, Registry(settings.index_dir, "index"))
    assert promote(SearchKind(settings), "index", index).promoted
    store.close()
    with (DEMO / "items.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    samples = [Sample(DEMO / r["image"], int(r["category"] == "Dress"), "demo") for r in rows]
    pre, _ = build_prefilter(models, samples, backbone=ref, data={"seed": "demo catalog"})
    assert promote(PrefilterKind(settings), "model", pre).promoted


class _Post:
    def __init__(self, i: int) -> None:
        self.post_id = f"bench-{i}"
        self.caption = "my new #dress #ootd"


def _timed(fn, *args, **kwargs):  # noqa: ANN001, ANN202 - a tiny stopwatch
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_once(prefilter, search, images, batch: int) -> dict[str, float]:  # noqa: ANN001
    """One pass over ``images``: seconds per stage (the stages split a real scoring call)."""
    scorer = prefilter.scorer
    stages = {"detector": 0.0, "backbone": 0.0, "classifier": 0.0, "catalog match": 0.0}
    total = 0.0
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        posts = [_Post(start + i) for i in range(len(chunk))]
        t0 = time.perf_counter()
        records, _ = score_posts(prefilter, posts, chunk, search=search)
        total += time.perf_counter() - t0
        assert len(records) == len(chunk)
        # the same batch again, stage by stage, for the shares (extract = detector + backbone)
        ex = scorer.extractor
        _, t_detect = _timed(ex.detector.detect, chunk)
        captions = [p.caption for p in posts]
        feats, t_extract = _timed(ex.extract, chunk, captions, scorer.classifier.blocks)
        stages["detector"] += t_detect
        stages["backbone"] += max(t_extract - t_detect, 0.0)
        answers, t = _timed(scorer.answer, feats)
        stages["classifier"] += t
        if search is not None:
            _, t = _timed(catalog_matches, search, chunk, answers)
            stages["catalog match"] += t
    return {"total_s": total, **stages}


def answers_check(prefilter, search, images, names: list[str], path: Path) -> None:  # noqa: ANN001
    """Write each post's answer to ``path`` (absent) or compare with the answers there: a code
    change that should not change results is run once before and once after it."""
    rows = []
    for start in range(0, len(images), 16):
        chunk = images[start : start + 16]
        posts = [_Post(start + i) for i in range(len(chunk))]
        records, _ = score_posts(prefilter, posts, chunk, search=search)
        parts = prefilter.scorer.extractor.detector.detect(chunk)
        answers = prefilter.scorer.score(chunk, [p.caption for p in posts])
        for i, (r, a) in enumerate(zip(records, answers, strict=True)):
            rows.append({"photo": names[start + i], "score": r.score, "safe": r.safe,
                         "enqueue": r.enqueue, "box": a.garment_box, "matches": r.matches,
                         "parts": [[p.label, p.score, *p.box] for p in parts[i]]})  # fmt: skip
    if not path.exists():
        path.write_text(json.dumps(rows))
        print(f"{len(rows)} answers written to {path}: run again after the change to compare")
        return
    before = json.loads(path.read_text())
    differ = [
        b["photo"]
        for b, a in zip(before, rows, strict=True)
        if b["photo"] != a["photo"] or not _same_answer(b, a)
    ]
    print(f"{len(rows)} posts compared with {path}: {len(differ)} differ {differ[:10]}")
    if differ:
        sys.exit(1)


def _same_answer(b: dict, a: dict, tol: float = 1e-5) -> bool:
    def close(x: list, y: list) -> bool:
        return len(x) == len(y) and bool(np.allclose(x, y, atol=tol))

    same_parts = len(b["parts"]) == len(a["parts"]) and all(
        p[0] == q[0] and close(p[1:], q[1:]) for p, q in zip(b["parts"], a["parts"], strict=True)
    )
    return (
        abs(b["score"] - a["score"]) <= tol
        and (b["safe"], b["enqueue"]) == (a["safe"], a["enqueue"])
        and (b["box"] is None) == (a["box"] is None)
        and (b["box"] is None or close(b["box"], a["box"]))
        and [m[0] for m in b["matches"]] == [m[0] for m in a["matches"]]
        and close([m[1] for m in b["matches"]], [m[1] for m in a["matches"]])
        and same_parts
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--photos", type=Path, default=SHARED / "street" / "images")
    ap.add_argument("--posts", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path("artifacts/bench_prefilter.json"))
    ap.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="no timing: write the posts' answers here, or compare them with the ones there",
    )
    args = ap.parse_args()
    photos = sorted(args.photos.glob("*.jpg"))[: args.posts] if args.photos.is_dir() else []
    if not photos:
        photos = sorted((DEMO / "images").glob("*.jpg"))[: args.posts]
        print(f"{args.photos} is absent: timing demo catalog photos instead", file=sys.stderr)
    images = [load_image_file(p) for p in photos]
    with tempfile.TemporaryDirectory(prefix="bench-prefilter-") as tmp:
        home = args.home or Path(tmp)
        if args.home is None:
            _demo_home(home)
        settings = Settings(home=home)
        catalog = CatalogStore(settings.db_url, settings.media_dir)
        pools = StepPools(2)
        context = LoadContext(settings, pools, shared={"catalog": catalog})
        prefilter = ProductSlot(PrefilterKind(settings), context).load().generation
        search_slot = ProductSlot(SearchKind(settings), context).load()
        search = search_slot.generation if search_slot.ready else None
        assert prefilter is not None and prefilter.scorer is not None, "no pre-filter loads"
        if args.answers is not None:
            answers_check(prefilter, search, images, [p.name for p in photos], args.answers)
            catalog.close()
            pools.close()
            return
        run_once(prefilter, search, images[: args.batch], args.batch)  # warm-up
        runs = []
        for r in range(args.runs):
            t0 = time.perf_counter()
            stages = run_once(prefilter, search, images, args.batch)
            runs.append({"run": r + 1, "posts": len(images),
                         "posts_per_s": round(len(images) / stages["total_s"], 2),
                         **{k: round(v, 4) for k, v in stages.items()},
                         "wall_s": round(time.perf_counter() - t0, 2)})  # fmt: skip
        catalog.close()
        pools.close()
    rates = [r["posts_per_s"] for r in runs]
    stage_names = ("detector", "backbone", "classifier", "catalog match")
    spent = {k: float(np.median([r[k] for r in runs])) for k in stage_names}
    share = {k: round(v / max(sum(spent.values()), 1e-9), 3) for k, v in spent.items()}
    summary = {
        "posts_per_s_median": round(statistics.median(rates), 2),
        "posts_per_s_p95_low": round(float(np.percentile(rates, 5)), 2),
        "ms_per_post_median": round(1000 / statistics.median(rates), 2),
        "ms_per_post_p95": round(1000 / float(np.percentile(rates, 5)), 2),
        "stage_share": share,
        "target_posts_per_s": 100,
        "batch": args.batch,
        "photos": str(args.photos),
        "search": search is not None,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
    }
    print(f"{'run':>4} {'posts/s':>9} {'detector s':>11} {'backbone s':>11} "
          f"{'classifier s':>13} {'match s':>8}")  # fmt: skip
    for r in runs:
        print(
            f"{r['run']:>4} {r['posts_per_s']:>9.2f} {r['detector']:>11.3f} "
            f"{r['backbone']:>11.3f} {r['classifier']:>13.4f} {r['catalog match']:>8.3f}"
        )
    print(
        f"median {summary['posts_per_s_median']} posts/s ({summary['ms_per_post_median']} ms/post),"
        f" p95 {summary['ms_per_post_p95']} ms/post; shares {share}; target 100 posts/s"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
