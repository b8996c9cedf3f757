"""The demand-forecast kind: one role, ``model``, a folder ``models/demand_forecast/N/``.

An artifact holds the forecasts made at its training end (a lookup when served) and its
rolling-origin backtest (``backtest.npz``), on which the deploy gate measures it
(:mod:`lookalike.forecast.tables`). Its manifest's ``task`` is ``demand-forecast``.

Checks, in order (each recorded in the manifest):

=================  ================================================================================
checksums          every file matches the manifest
load               model.json and series.npz read; ridge and naive tables load
output             ridge and naive: right shapes, finite, non-negative, lower ≤ upper, cumulative
                   upper bounds non-decreasing
metric             item MASE of the backtest, not worse than production's on the same (origin,
                   item) cells by more than ``TOLERANCE`` (lower is better)
metric_categories  the same for the categories
latency            one item and one category answer, p95 ≤ ``LATENCY_P95_MS``
=================  ================================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.core.errors import InvalidInput, LookalikeError, short_reason
from lookalike.forecast.served import BUILD_FIX, ForecastGeneration, UnbuiltForecast
from lookalike.forecast.tables import (
    BACKTEST_FILE,
    METHOD_FILES,
    ForecastSeries,
    ForecastTable,
    read_meta,
)
from lookalike.lifecycle import (
    CheckStop,
    LoadContext,
    MetricGate,
    Release,
    SingleModelKind,
    StepPools,
    latency_check,
    load_failed,
    output_result,
)
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckResult

__all__ = [
    "ARTIFACT_NAME",
    "FORECAST_CHECKS",
    "TASK",
    "ForecastKind",
    "backtest_mase",
]

TASK = "demand-forecast"
ARTIFACT_NAME = "demand_forecast"
FORECAST_CHECKS = ("checksums", "load", "output", "metric", "metric_categories", "latency")
TOLERANCE = 0.02  # MASE, absolute
LATENCY_P95_MS = 20.0
LATENCY_RUNS = 30
GATES = (
    MetricGate("mase", higher_is_better=False, tolerance=TOLERANCE, check="metric"),
    MetricGate(
        "mase_categories", higher_is_better=False, tolerance=TOLERANCE, check="metric_categories"
    ),
)
LEVEL_OF_GATE = {"metric": "items", "metric_categories": "categories"}


def _read_backtest(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / BACKTEST_FILE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def backtest_mase(
    candidate: dict[str, np.ndarray], level: str, forecasts: dict[str, np.ndarray] | None = None
) -> float:
    """Mean per-series MASE of ``forecasts``' ridge on ``candidate``'s backtest cells.

    ``forecasts`` None: the candidate's own. Otherwise (production) only the (origin, series)
    cells both backtests hold are scored, with the candidate's actuals and scales; raises
    ``InvalidInput`` when they share none.
    """
    y = candidate[f"{level}_y"].astype(np.float64)
    scale = candidate[f"{level}_scale"]
    eligible = candidate[f"{level}_eligible"].astype(bool)
    if forecasts is None:
        mu = candidate[f"{level}_mu"].astype(np.float64)
    else:
        mu = np.full(y.shape, np.nan)
        o_pos = {int(d): j for j, d in enumerate(forecasts["origin_dates"])}
        s_pos = {str(s): j for j, s in enumerate(forecasts[f"{level}_ids"])}
        c_dates, c_ids = candidate["origin_dates"], candidate[f"{level}_ids"]
        oi = [(j, o_pos[int(d)]) for j, d in enumerate(c_dates) if int(d) in o_pos]
        si = [(j, s_pos[str(s)]) for j, s in enumerate(c_ids) if str(s) in s_pos]
        if not oi or not si:
            raise InvalidInput("the two backtests share no origin week and series")
        cj, pj = (np.array(v) for v in zip(*oi, strict=True))
        cs, ps = (np.array(v) for v in zip(*si, strict=True))
        mu[np.ix_(cj, cs)] = forecasts[f"{level}_mu"][np.ix_(pj, ps)]
        eligible = eligible & np.isfinite(mu[..., 0])
    err = np.abs(mu - y) / np.where(scale > 0, scale, 1.0)[..., None]
    w = eligible[..., None] & np.isfinite(err)
    count = w.sum(axis=(0, 2))
    per_series = np.where(w, err, 0.0).sum(axis=(0, 2)) / np.maximum(count, 1)
    scored = count > 0
    return float(per_series[scored].mean()) if scored.any() else float("nan")


class ForecastKind(SingleModelKind):
    task: ClassVar[str] = TASK
    product: ClassVar[str] = "forecast"
    artifact: ClassVar[str] = ARTIFACT_NAME
    build_fix: ClassVar[str] = BUILD_FIX
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {"model": FORECAST_CHECKS}

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        return GATES

    # -- checks ----------------------------------------------------------------------------------
    def check_steps(self, registry: Registry, ref: Ref, **options: Any) -> Iterator[CheckResult]:
        folder = registry.path(ref)
        try:
            meta = read_meta(folder)
            series = ForecastSeries.load(folder)
        except LookalikeError as exc:
            raise CheckStop("the forecast did not load", load_failed(exc)) from exc
        sizes = {"items": series.item_ids.size, "categories": series.categories.size}
        problems = []
        for method, file in METHOD_FILES.items():
            try:
                ForecastTable.load_all(folder / file, sizes, int(meta["horizon"]),
                                       len(meta["levels"]))  # fmt: skip
            except LookalikeError as exc:
                problems.append(f"{method}: {exc.message}")
        yield CheckResult(
            "load",
            True,
            {**sizes, "trained_until": meta["trained_until"]},
            f"{sizes['items']} items, {sizes['categories']} categories, "
            f"trained until {meta['trained_until']}",
        )
        yield output_result(
            problems,
            {"methods": list(METHOD_FILES)},
            "ridge and naive: finite, non-negative, lower ≤ upper, cumulative bounds grow",
        )
        try:
            candidate = _read_backtest(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckStop(f"{BACKTEST_FILE} cannot be read: {short_reason(exc)}") from exc
        for gate in GATES:
            level = LEVEL_OF_GATE[gate.check]
            yield self.metric_check(
                registry,
                ref,
                backtest_mase(candidate, level),
                lambda prod, level=level: backtest_mase(
                    candidate, level, _read_backtest(registry.path(prod))
                ),
                source=f"rolling-origin backtest ({level})",
                gate=gate,
            )
        yield self._latency(registry, ref, folder)

    def _latency(self, registry: Registry, ref: Ref, folder: Path) -> CheckResult:
        release = Release(self.product, "candidate", {"model": ref})
        pools = StepPools(2)
        try:
            generation = ForecastGeneration.load(
                release, LoadContext(self.settings, pools), folder, registry.manifest(ref)
            )
            items = list(generation.series.item_index)[:LATENCY_RUNS] or ["0"]
            cats = list(generation.series.category_index) or ["unknown"]
            level = generation.levels[0]

            def answer(i: int) -> None:
                generation.forecast(generation.query("items", items[i % len(items)], 8, level))
                generation.forecast(generation.query("categories", cats[i % len(cats)], 8, level))

            return latency_check(
                answer, runs=LATENCY_RUNS, budget_ms=LATENCY_P95_MS, what="one item + one category"
            )
        except LookalikeError as exc:
            return CheckResult("latency", False, {}, f"could not answer: {exc.message}")
        finally:
            pools.close()

    # -- releases --------------------------------------------------------------------------------
    def load(self, release: Release, context: LoadContext) -> ForecastGeneration | UnbuiltForecast:
        if not release.members:
            return UnbuiltForecast(release)
        registry = self.registry("model")
        ref = release.members["model"]
        return ForecastGeneration.load(release, context, registry.path(ref), registry.manifest(ref))

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        return [f"servers pick up {ref} within their alias reload: GET /v1/forecast/items/{{id}}"]
