"""The fit kind: one role, ``model``, a folder ``models/fit/N/`` in the model registry.

An artifact holds ``fit_model.json`` + ``fit_arrays.npz`` (:class:`~lookalike.recs.fit.FitModel`)
and ``holdout.npz``: the later months' reviews of its build (the shopper's measurements, the
item, the size, the label), on which the deploy gate measures it. Its manifest's ``task`` is
``fit-prediction`` and ``metrics`` its figures on those months.

Checks, in order (each recorded in the manifest):

=========  ====================================================================================
checksums  every file matches the manifest
load       the model loads (shapes, finite weights)
output     on the held-out reviews: finite probabilities summing to 1
metric     macro-F1 on the held-out reviews (higher is better), not worse than production's on
           the same reviews by more than ``TOLERANCE``
latency    one shopper × every size of an item, p95 ≤ ``LATENCY_P95_MS``
=========  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.core.errors import IntegrityError, LookalikeError
from lookalike.lifecycle import LoadContext, MetricGate, Release
from lookalike.lifecycle.single import (
    CheckStop,
    SingleModelKind,
    latency_check,
    load_failed,
    output_result,
    problems_of,
)
from lookalike.recs.fit import FitModel, FitQuery, fit_figures
from lookalike.recs.fit_served import BUILD_FIX, FitGeneration, UnbuiltFit, check_probabilities
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckResult

__all__ = [
    "ARTIFACT_NAME",
    "FIT_CHECKS",
    "HOLDOUT_FILE",
    "TASK",
    "FitKind",
    "holdout_figures",
    "read_holdout",
    "write_holdout",
]

TASK = "fit-prediction"
ARTIFACT_NAME = "fit"
HOLDOUT_FILE = "holdout.npz"
FIT_CHECKS = ("checksums", "load", "output", "metric", "latency")
TOLERANCE = 0.01  # macro-F1, absolute
LATENCY_P95_MS = 20.0
LATENCY_RUNS = 30
_COLUMNS = ("size", "height", "weight", "bust", "cup", "usual_size")


def write_holdout(path: Path, item_ids: np.ndarray, q: FitQuery, y: np.ndarray) -> None:
    """The held-out rows, independent of any model's item numbering (items by id)."""
    np.savez(
        path,
        item_id=np.asarray(item_ids).astype(str),
        body_type=q.body_type.astype(str),
        y=y.astype(np.int64),
        **{c: getattr(q, c) for c in _COLUMNS},
    )


def read_holdout(path: Path, model: FitModel) -> tuple[FitQuery, np.ndarray]:
    """The held-out rows as a query of ``model`` (its item numbering) and their labels."""
    try:
        with np.load(path, allow_pickle=False) as z:
            cols = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"held-out reviews {path.name} are unreadable: {exc}") from exc
    missing = {"item_id", "body_type", "y", *_COLUMNS} - set(cols)
    if missing:
        raise IntegrityError(f"held-out reviews lack {', '.join(sorted(missing))}")
    index = model.stats.index()
    n = len(cols["y"])
    q = FitQuery(
        item=np.array([index.get(str(v), -1) for v in cols["item_id"]], dtype=np.int64),
        body_type=cols["body_type"].astype(object),
        loo=np.full(n, -1, dtype=np.int64),
        **{c: cols[c].astype(np.float64) for c in _COLUMNS},
    )
    return q, cols["y"].astype(np.int64)


def holdout_figures(model: FitModel, q: FitQuery, y: np.ndarray) -> dict[str, Any]:
    proba = model.predict_proba(q)
    return fit_figures(y, model.decide(proba), proba)


class FitKind(SingleModelKind):
    task: ClassVar[str] = TASK
    product: ClassVar[str] = "fit"
    artifact: ClassVar[str] = ARTIFACT_NAME
    build_fix: ClassVar[str] = BUILD_FIX
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {"model": FIT_CHECKS}

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        return (MetricGate("macro_f1", higher_is_better=True, tolerance=TOLERANCE),)

    # -- checks ----------------------------------------------------------------------------------
    def check_steps(self, registry: Registry, ref: Ref, **options: Any) -> Iterator[CheckResult]:
        folder = registry.path(ref)
        try:
            model = FitModel.load(folder)
        except (LookalikeError, OSError, ValueError, KeyError) as exc:
            yield load_failed(exc)
            return
        yield CheckResult(
            "load",
            True,
            {"items": len(model.stats.ids), "features": len(model.feature_names)},
            f"{len(model.stats.ids)} items, {len(model.feature_names)} features",
        )
        holdout_path = Path(options.get("holdout") or folder / HOLDOUT_FILE)
        try:
            q, y = read_holdout(holdout_path, model)
        except LookalikeError as exc:
            result = CheckResult("output", False, {}, exc.message)
            raise CheckStop("no held-out reviews to measure on", result) from exc
        yield output_result(
            problems_of(lambda: check_probabilities(model.predict_proba(q)), "predicting"),
            {"reviews": len(y)},
            f"{len(y)} held-out reviews: finite shares summing to 1",
        )
        yield self._metric(registry, ref, model, holdout_path)
        yield self._latency(model)

    def _metric(self, registry: Registry, ref: Ref, model: FitModel, holdout: Path) -> CheckResult:
        def macro_f1(m: FitModel) -> float:
            q, y = read_holdout(holdout, m)
            return float(holdout_figures(m, q, y)["macro_f1"])

        return self.metric_check(
            registry,
            ref,
            macro_f1(model),
            lambda prod: macro_f1(FitModel.load(registry.path(prod))),
            source="held-out months" if holdout.name == HOLDOUT_FILE else str(holdout),
        )

    def _latency(self, model: FitModel) -> CheckResult:
        from lookalike.recs.fit_served import FitAsk, ModelEngine
        from lookalike.recs.likeme import Shopper

        engine = ModelEngine(model)
        busiest = np.argsort(-model.stats.counts.sum(axis=1))[:LATENCY_RUNS]
        shopper = Shopper(height_in=65.0, weight_lbs=135.0, bust_size_num=34.0, size=8)
        order = list(busiest[:2]) + list(busiest)
        return latency_check(
            lambda k: engine.answer(FitAsk(shopper, str(model.stats.ids[order[k]]))),
            runs=len(busiest),
            budget_ms=LATENCY_P95_MS,
            what="one shopper × every size",
        )

    # -- releases --------------------------------------------------------------------------------
    def load(self, release: Release, context: LoadContext) -> FitGeneration | UnbuiltFit:
        if not release.members:
            return UnbuiltFit(release)
        registry = self.registry("model")
        ref = release.members["model"]
        return FitGeneration.load(release, context, registry.path(ref), registry.manifest(ref))

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        return [f"servers pick up {ref} within their alias reload: POST /v1/fit"]
