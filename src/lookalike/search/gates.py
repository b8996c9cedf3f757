"""Deploy gates: the checks a model or an index must pass before it may become production.

``check_model(settings, "effnet_lite0:2")`` runs, in order, and reports every one (a check that
cannot run because an earlier one failed is reported as failed, with the reason):

==========  ===================================================================================
checksums   every file matches the manifest's sha256
load        it loads on the live runtime path (``settings.search.runtime``); records served_by
output      on the golden photos: shape ``(n, embedding_dim)``, float32, finite, L2 norm 1±1e-3
golden      golden queries find their item in the top 10 (Recall@10 >= ``golden_recall_min``)
metric      Recall@10 on the retrieval pairs (golden by default, or ``pairs``) is not below
            production's by more than ``tolerance``; both figures are recorded
latency     batch-1 embed p95 on the golden queries <= ``latency_p95_ms``
==========  ===================================================================================

``check_index(settings, "catalog:3")`` runs checksums, load, embedder (built with the production
model), count (vectors = catalog images - skipped), retrieval (golden queries through the index
when the golden items are in the catalog, else catalog images must find themselves top-1) and
latency (k=10 search p95). Thresholds live in ``Settings.gates``; each report is written into the
version's manifest under ``"checks"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.core.errors import LookalikeError, short_reason
from lookalike.core.images import load_image_file
from lookalike.core.metrics import rank_metrics
from lookalike.core.settings import Settings
from lookalike.embed import Embedder, load_embedder
from lookalike.lifecycle.checks import MetricGate, against_production
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import (
    CheckReport,
    CheckResult,
    check_checksums,
    latency_figures,
    record_report,
)
from lookalike.search.evaluation import embed_paths, evaluate_retrieval, read_pairs
from lookalike.search.golden import GoldenSet, default_golden_dir, load_golden
from lookalike.search.indexing import LoadedIndex, check_pair, load_registry_index

__all__ = ["MODEL_CHECKS", "INDEX_CHECKS", "check_index", "check_model", "pairs_recall"]

log = logging.getLogger("lookalike.search")

MODEL_CHECKS = ("checksums", "load", "output", "golden", "metric", "latency")
INDEX_CHECKS = ("checksums", "load", "embedder", "count", "retrieval", "latency")
NORM_TOL = 1e-3
WARMUP = 2


def _not_run(report: CheckReport, names: Sequence[str], why: str) -> CheckReport:
    for name in names:
        report.add(CheckResult(name, False, {}, f"not run: {why}"))
    return report


def _golden(settings: Settings, golden: GoldenSet | None) -> GoldenSet:
    return golden if golden is not None else load_golden(default_golden_dir(settings))


# -- models -----------------------------------------------------------------------------------
def _golden_embeddings(embedder: Embedder, golden: GoldenSet) -> tuple[np.ndarray, np.ndarray]:
    gallery = embed_paths(embedder, golden.gallery_paths)
    # golden queries stand for shoppers' photos: the query tower answers them in production
    queries = embed_paths(embedder, [q.query for q in golden.queries], role="query")
    return gallery, queries


def _output_check(gallery: np.ndarray, queries: np.ndarray, dim: int) -> CheckResult:
    out = np.concatenate([gallery, queries]) if len(queries) else gallery
    finite = bool(np.all(np.isfinite(out)))
    norms = np.linalg.norm(out, axis=1) if finite else np.array([np.nan])
    norm_err = float(np.max(np.abs(norms - 1.0))) if out.size else float("nan")
    figures = {
        "images": int(len(out)),
        "shape": [int(s) for s in out.shape],
        "dtype": str(out.dtype),
        "finite": finite,
        "max_norm_error": round(norm_err, 6) if finite else None,
        "expected_dim": dim,
    }
    problems = []
    if out.ndim != 2 or out.shape[1] != dim:
        problems.append(f"shape {tuple(out.shape)}, expected (n, {dim})")
    if out.dtype != np.float32:
        problems.append(f"dtype {out.dtype}, expected float32")
    if not finite:
        problems.append("output has NaN or inf")
    elif not norm_err <= NORM_TOL:
        problems.append(f"L2 norms off by up to {norm_err:.2e} (> {NORM_TOL})")
    if problems:
        return CheckResult("output", False, figures, "; ".join(problems))
    return CheckResult("output", True, figures, f"{len(out)} golden photos: finite unit vectors")


def _golden_recall(gallery: np.ndarray, queries: np.ndarray, golden: GoldenSet) -> dict:
    relevant = np.asarray(golden.relevant_rows())
    recall, mean_ap, ranks = rank_metrics(queries, gallery, relevant)
    misses = {q.item_id: int(r) for q, r in zip(golden.queries, ranks, strict=True) if r > 10}
    return {
        "recall": recall,
        "map": mean_ap,
        "queries": len(queries),
        "gallery": len(gallery),
        "misses": misses,
    }


def pairs_recall(
    embedder: Embedder,
    golden: GoldenSet,
    pairs: Path | None,
    root: Path | None,
    split: str | None = None,
) -> tuple[float, str]:
    """Recall@10 of ``embedder`` on a pairs CSV (under ``root``), or on the golden pairs."""
    if pairs is None:
        gallery, queries = _golden_embeddings(embedder, golden)
        return float(_golden_recall(gallery, queries, golden)["recall"]["@10"]), "golden"
    report = evaluate_retrieval(embedder, read_pairs(pairs, split), root or pairs.parent)
    return float(report.recall["@10"]), f"{pairs}" + (f" [{split}]" if split else "")


def _metric_check(
    settings: Settings,
    registry: Registry,
    ref: Ref,
    candidate: Embedder,
    golden: GoldenSet,
    golden_r10: float,
    pairs: Path | None,
    root: Path | None,
    split: str | None,
    gate: MetricGate,
) -> CheckResult:
    if pairs is None:
        cand, source = golden_r10, "golden"
    else:
        cand, source = pairs_recall(candidate, golden, pairs, root, split)
    try:
        prod_ref = registry.resolve(Ref(ref.name, "production"))
    except LookalikeError:
        return against_production(gate, cand, None, source=source)
    if prod_ref == ref:
        return against_production(
            gate, cand, cand, production_ref=str(prod_ref), source=source, note="itself"
        )
    try:
        prod = load_embedder(registry, prod_ref, runtime=settings.search.runtime)
        prod_r10, _ = pairs_recall(prod, golden, pairs, root, split)
    except Exception as exc:  # noqa: BLE001 - a broken production must not block its fix
        return against_production(
            gate,
            cand,
            None,
            production_ref=str(prod_ref),
            source=source,
            note=f"production {prod_ref} could not be evaluated: {short_reason(exc)}",
        )
    return against_production(gate, cand, prod_r10, production_ref=str(prod_ref), source=source)


def _latency(
    run: Callable[[int], object], n: int, budget: float, name: str, repeat: int = 1
) -> CheckResult:
    """Time ``run(i)`` for each of ``n`` inputs (``repeat`` rounds) after a short warm-up."""
    for i in range(min(WARMUP, n)):
        run(i)
    samples = []
    for _ in range(repeat):
        for i in range(n):
            start = time.perf_counter()
            run(i)
            samples.append((time.perf_counter() - start) * 1000.0)
    figures = {**latency_figures(samples), "budget_p95_ms": budget}
    p95 = figures.get("p95_ms", float("inf"))
    msg = f"p95 {p95:.1f} ms (budget {budget:g} ms)"
    return CheckResult(name, p95 <= budget, figures, msg if p95 <= budget else msg + ": too slow")


def check_model(
    settings: Settings,
    ref: Ref | str,
    *,
    golden: GoldenSet | None = None,
    pairs: Path | None = None,
    root: Path | None = None,
    split: str | None = None,
    record: bool = True,
    gate: MetricGate | None = None,
) -> CheckReport:
    """Run every model check on ``ref`` and (``record``) write the report into its manifest.

    ``pairs``/``root``/``split``: a retrieval-pairs CSV (see ``search.evaluation``) for the
    metric check instead of the golden pairs. ``gate``: the metric's direction and tolerance
    (default: Recall@10, higher is better, ``settings.gates.tolerance``). Raises NotFound when
    ``ref`` does not exist.
    """
    gate = gate or MetricGate("recall@10", True, settings.gates.tolerance)
    registry = Registry(settings.models_dir, "model")
    resolved = registry.resolve(Ref.parse(str(ref), default_version="latest"))
    report = CheckReport(str(resolved))
    gates = settings.gates
    report.add(check_checksums(registry, resolved))
    try:
        golden = _golden(settings, golden)
        embedder = load_embedder(registry, resolved, runtime=settings.search.runtime)
    except Exception as exc:  # noqa: BLE001 - whatever stops it loading is the finding
        report.add(
            CheckResult("load", False, {"runtime": settings.search.runtime}, short_reason(exc))
        )
        return _finish(
            registry, _not_run(report, MODEL_CHECKS[2:], "the model did not load"), record
        )
    info = embedder.info
    report.add(
        CheckResult(
            "load",
            True,
            {
                "runtime": settings.search.runtime,
                "served_by": info.served_by,
                "variant": info.variant,
                "dim": info.dim,
            },
            f"served by {info.served_by}",
        )
    )
    try:
        gallery, queries = _golden_embeddings(embedder, golden)
    except Exception as exc:  # noqa: BLE001
        report.add(
            CheckResult(
                "output", False, {}, f"embedding the golden photos failed: {short_reason(exc)}"
            )
        )
        return _finish(registry, _not_run(report, MODEL_CHECKS[3:], "no output"), record)
    output = report.add(_output_check(gallery, queries, info.dim))
    if not output.passed:
        return _finish(
            registry, _not_run(report, MODEL_CHECKS[3:], "the output check failed"), record
        )
    figures = _golden_recall(gallery, queries, golden)
    r10 = float(figures["recall"]["@10"])
    figures["min"] = gates.golden_recall_min
    ok = r10 >= gates.golden_recall_min
    report.add(
        CheckResult(
            "golden",
            ok,
            figures,
            f"golden Recall@10 {r10:.3f} (min {gates.golden_recall_min})"
            + ("" if ok else f"; missed {sorted(figures['misses'])}"),
        )
    )
    report.add(
        _metric_check(settings, registry, resolved, embedder, golden, r10, pairs, root, split, gate)
    )
    photos = [load_image_file(q.query) for q in golden.queries]
    report.add(
        _latency(
            lambda i: embedder.embed([photos[i]]), len(photos), gates.latency_p95_ms, "latency"
        )
    )
    return _finish(registry, report, record)


def _finish(registry: Registry, report: CheckReport, record: bool) -> CheckReport:
    if record and not record_report(registry, report):
        log.warning("could not write the check report into %s's manifest", report.ref)
    log.info(
        "checks of %s %s: %s",
        registry.kind,
        report.ref,
        "passed" if report.passed else "FAILED " + ", ".join(r.name for r in report.failed),
    )
    return report


# -- indexes ----------------------------------------------------------------------------------
def _count_check(loaded: LoadedIndex, catalog: CatalogStore) -> CheckResult:
    m = loaded.manifest
    skipped = len(m.get("skipped_images", []))
    images = catalog.count_images()
    figures = {
        "vectors": loaded.index.ntotal,
        "manifest_count": m.get("count"),
        "catalog_images": images,
        "skipped": skipped,
        "index_catalog_revision": m.get("catalog_revision"),
        "catalog_revision": catalog.revision(),
    }
    n = loaded.index.ntotal
    if n != m.get("count"):
        return CheckResult("count", False, figures, f"{n} vectors, the manifest says {m['count']}")
    if not images - skipped <= n <= images:
        return CheckResult(
            "count",
            False,
            figures,
            f"{n} vectors for {images} catalog images ({skipped} skipped) — rebuild with "
            "`lookalike index build` or `lookalike index update`",
        )
    return CheckResult("count", True, figures, f"{n} vectors for {images} catalog images")


def _embed_images(embedder: Embedder, images: list[Image.Image]) -> np.ndarray:
    return embedder.embed(images) if images else np.zeros((0, embedder.info.dim), np.float32)


def _retrieval_check(
    settings: Settings,
    loaded: LoadedIndex,
    catalog: CatalogStore,
    embedder: Embedder,
    golden: GoldenSet,
) -> tuple[CheckResult, np.ndarray]:
    """Golden queries through the index, or self-retrieval; returns the query vectors too."""
    gates = settings.gates
    present = catalog.get_items([q.item_id for q in golden.queries])
    usable = [q for q in golden.queries if q.item_id in present]
    if len(usable) >= max(1, len(golden.queries) // 2):
        vectors = _embed_images(embedder, [load_image_file(q.query) for q in usable])
        _, ids = loaded.index.search(vectors, 10)
        owners = catalog.item_ids_for_images(ids[ids >= 0].tolist())
        hits = [
            q.item_id in {owners.get(int(i)) for i in row}
            for q, row in zip(usable, ids, strict=True)
        ]
        rate = float(np.mean(hits))
        figures = {
            "metric": "recall@10",
            "direction": "higher",
            "method": "golden",
            "queries": len(usable),
            "recall@10": round(rate, 4),
            "min": gates.golden_recall_min,
            "misses": [q.item_id for q, h in zip(usable, hits, strict=True) if not h],
        }
        ok = rate >= gates.golden_recall_min
        msg = f"golden Recall@10 through the index {rate:.3f} (min {gates.golden_recall_min})"
        return CheckResult("retrieval", ok, figures, msg), vectors
    images = list(catalog.iter_images())
    rng = np.random.default_rng(0)
    take = min(gates.self_retrieval_sample, len(images))
    sample = [images[i] for i in sorted(rng.choice(len(images), take, replace=False))]
    vectors = _embed_images(embedder, [load_image_file(catalog.media_path(im)) for im in sample])
    hits = _self_hits(loaded, sample, vectors, {im.image_id: im.media for im in images})
    rate = float(np.mean(hits)) if hits else 0.0
    figures = {
        "metric": "self-retrieval top-1",
        "direction": "higher",
        "method": "self",
        "queries": take,
        "top1": round(rate, 4),
        "min": gates.self_retrieval_min,
        "golden_items_in_catalog": len(usable),
    }
    ok = bool(hits) and rate >= gates.self_retrieval_min
    msg = (
        f"golden items are not in this catalog; {take} catalog images find themselves "
        f"top-1 at {rate:.3f} (min {gates.self_retrieval_min})"
    )
    return CheckResult("retrieval", ok, figures, msg), vectors


def _self_hits(
    loaded: LoadedIndex, sample: list, vectors: np.ndarray, media: dict[int, str]
) -> list[bool]:
    """Does each sampled image find itself first? A byte-identical photo of another item (one
    photo for two colour variants) ties with it: finding that one first is a hit too."""
    if not len(sample):
        return []
    scores, ids = loaded.index.search(vectors, min(10, max(1, loaded.index.ntotal)))
    hits = []
    for im, row_scores, row in zip(sample, scores, ids, strict=True):
        best = row_scores[0]
        tied = {int(i) for s, i in zip(row_scores, row, strict=True) if i >= 0 and s >= best - 1e-5}
        same_photo = media.get(int(row[0])) == im.media
        hits.append(im.image_id in tied or same_photo)
    return hits


def check_index(
    settings: Settings,
    ref: Ref | str,
    *,
    model: str | None = None,
    golden: GoldenSet | None = None,
    record: bool = True,
) -> CheckReport:
    """Run every index check on ``ref`` against ``model`` (default: the production model).

    Raises NotFound when ``ref`` does not exist.
    """
    indexes = Registry(settings.index_dir, "index")
    models = Registry(settings.models_dir, "model")
    resolved = indexes.resolve(Ref.parse(str(ref), default_version="latest"))
    report = CheckReport(str(resolved))
    report.add(check_checksums(indexes, resolved))
    try:
        loaded = load_registry_index(indexes, resolved)
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError on a damaged file
        report.add(CheckResult("load", False, {}, short_reason(exc)))
        return _finish(
            indexes, _not_run(report, INDEX_CHECKS[2:], "the index did not load"), record
        )
    report.add(
        CheckResult(
            "load",
            True,
            {"factory": loaded.manifest.get("factory"), "vectors": loaded.index.ntotal},
            f"{loaded.manifest.get('factory')} with {loaded.index.ntotal} vectors",
        )
    )
    model_text = model or f"{settings.search.model_name}:production"
    try:
        model_ref = models.resolve(Ref.parse(model_text))
        check_pair(loaded, str(model_ref))
    except LookalikeError as exc:
        report.add(
            CheckResult(
                "embedder",
                False,
                {"index_embedder": loaded.embedder, "model": model_text},
                exc.message,
            )
        )
        return _finish(indexes, _not_run(report, INDEX_CHECKS[3:], "embedder mismatch"), record)
    report.add(
        CheckResult(
            "embedder",
            True,
            {"index_embedder": loaded.embedder, "model": str(model_ref)},
            f"built with {model_ref}, the model it will serve with",
        )
    )
    catalog = CatalogStore.for_settings(settings)
    try:
        report.add(_count_check(loaded, catalog))
        try:
            embedder = load_embedder(models, model_ref, runtime=settings.search.runtime)
            result, vectors = _retrieval_check(
                settings, loaded, catalog, embedder, _golden(settings, golden)
            )
        except Exception as exc:  # noqa: BLE001
            report.add(CheckResult("retrieval", False, {}, short_reason(exc)))
            return _finish(indexes, _not_run(report, ["latency"], "no query vectors"), record)
        report.add(result)
    finally:
        catalog.close()
    report.add(
        _latency(
            lambda i: loaded.index.search(vectors[i], 10),
            len(vectors),
            settings.gates.index_latency_p95_ms,
            "latency",
            repeat=5,  # searches are cheap: more samples make the p95 steadier
        )
    )
    return _finish(indexes, report, record)
