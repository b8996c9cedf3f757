"""The price kind: one role, ``model``, a folder ``models/rental_price/N/`` in the model registry.

An artifact holds ``model.json`` + ``arrays.npz`` (:class:`~lookalike.price.model.PriceModel`)
and ``holdout.csv``: the held-out dresses of its build, on which the deploy gate measures it.
Its manifest's ``task`` is ``price-suggestion`` and ``metrics`` its held-out figures.

Checks, in order (each recorded in the manifest):

=========  ====================================================================================
checksums  every file matches the manifest
load       the model loads (shapes, finite arrays)
output     on the held-out dresses: finite prices, none below the floor, intervals contain them
metric     MAPE on the held-out dresses (``holdout`` option: another CSV of the same columns)
           not worse than production's on the same dresses by more than ``TOLERANCE``
latency    one dress priced with its 5 neighbours, p95 ≤ ``LATENCY_P95_MS``
=========  ====================================================================================
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.core.errors import InvalidInput, LookalikeError, NotFound, short_reason
from lookalike.lifecycle import Kind, LoadContext, MetricGate, Release, against_production
from lookalike.price.listings import Listings, read_listings
from lookalike.price.model import PriceModel
from lookalike.price.served import BUILD_FIX, PriceGeneration, UnbuiltPrice, check_output
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import (
    CheckReport,
    CheckResult,
    check_checksums,
    latency_figures,
    record_report,
)

__all__ = [
    "ARTIFACT_NAME",
    "HOLDOUT_FILE",
    "PRICE_CHECKS",
    "TASK",
    "PriceKind",
    "holdout_mape",
]

TASK = "price-suggestion"
ARTIFACT_NAME = "rental_price"
HOLDOUT_FILE = "holdout.csv"
PRICE_CHECKS = ("checksums", "load", "output", "metric", "latency")
TOLERANCE = 0.005  # MAPE, absolute: half a percentage point
LATENCY_P95_MS = 20.0
LATENCY_RUNS = 30


def holdout_mape(model: PriceModel, holdout: Listings) -> float:
    out = model.suggest(holdout)
    return float(np.mean(np.abs(out.price - holdout.rent) / holdout.rent))


class PriceKind(Kind):
    task: ClassVar[str] = TASK
    product: ClassVar[str] = "price"
    roles: ClassVar[tuple[str, ...]] = ("model",)
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {"model": PRICE_CHECKS}

    def registry(self, role: str) -> Registry:
        if role != "model":
            raise InvalidInput(f"price has no role {role!r} (roles: model)")
        return Registry(self.settings.models_dir, "model")

    def artifact_name(self, role: str) -> str:
        return ARTIFACT_NAME

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        return (MetricGate("mape", higher_is_better=False, tolerance=TOLERANCE),)

    # -- checks ----------------------------------------------------------------------------------
    def check(self, role: str, ref: Ref, **options: Any) -> CheckReport:
        registry = self.registry(role)
        resolved = registry.resolve(Ref.parse(str(ref), default_version="latest"))
        report = CheckReport(str(resolved))
        report.add(check_checksums(registry, resolved))
        folder = registry.path(resolved)
        try:
            model = PriceModel.load(folder)
        except LookalikeError as exc:
            report.add(CheckResult("load", False, {}, exc.message))
            return self._finish(registry, report, "the model did not load")
        report.add(
            CheckResult(
                "load",
                True,
                {
                    "method": model.method,
                    "features": len(model.space.names),
                    "neighbours": len(model.train_brand),
                    "floor": model.floor,
                },
                f"{model.method} over {len(model.space.names)} features, floor ${model.floor:g}",
            )
        )
        holdout_path = options.get("holdout") or folder / HOLDOUT_FILE
        try:
            holdout, _ = read_listings(Path(holdout_path))
        except LookalikeError as exc:
            report.add(CheckResult("output", False, {}, f"held-out dresses: {exc.message}"))
            return self._finish(registry, report, "no held-out dresses to measure on")
        try:
            problems = check_output(model, holdout)
        except Exception as exc:  # noqa: BLE001 - a model that raises fails its output check
            problems = [f"pricing the held-out dresses failed: {short_reason(exc)}"]
        report.add(
            CheckResult(
                "output",
                not problems,
                {"dresses": len(holdout)},
                "; ".join(problems)
                or f"{len(holdout)} held-out dresses: finite, floored, each inside its interval",
            )
        )
        if problems:
            return self._finish(registry, report, "the output check failed")
        report.add(self._metric(registry, resolved, model, holdout, str(holdout_path)))
        report.add(self._latency(model, holdout))
        record_report(registry, report)
        return report

    def _finish(self, registry: Registry, report: CheckReport, why: str) -> CheckReport:
        done = {r.name for r in report.results}
        for name in PRICE_CHECKS:
            if name not in done:
                report.add(CheckResult(name, False, {}, f"not run: {why}"))
        record_report(registry, report)
        return report

    def _metric(
        self, registry: Registry, ref: Ref, model: PriceModel, holdout: Listings, source: str
    ) -> CheckResult:
        gate = self.metric_gates("model")[0]
        candidate = holdout_mape(model, holdout)
        label = "held-out dresses" if source.endswith(HOLDOUT_FILE) else source
        try:
            prod_ref = registry.resolve(Ref(ref.name, "production"))
        except LookalikeError:
            return against_production(gate, candidate, None, source=label)
        if prod_ref == ref:
            return against_production(
                gate,
                candidate,
                candidate,
                production_ref=str(prod_ref),
                source=label,
                note="itself",
            )
        try:
            production = holdout_mape(PriceModel.load(registry.path(prod_ref)), holdout)
        except Exception as exc:  # noqa: BLE001 - a broken production must not block its fix
            return against_production(
                gate,
                candidate,
                None,
                production_ref=str(prod_ref),
                source=label,
                note=f"production {prod_ref} could not be evaluated: {short_reason(exc)}",
            )
        return against_production(
            gate, candidate, production, production_ref=str(prod_ref), source=label
        )

    def _latency(self, model: PriceModel, holdout: Listings) -> CheckResult:
        samples = []
        n = min(LATENCY_RUNS, len(holdout))
        for i in range(n + 2):
            one = holdout.take([i % len(holdout)])
            start = time.perf_counter()
            model.suggest(one)
            model.similar(one, 5)
            if i >= 2:  # warm-up
                samples.append((time.perf_counter() - start) * 1000.0)
        figures = {**latency_figures(samples), "budget_p95_ms": LATENCY_P95_MS}
        p95 = figures.get("p95_ms", float("inf"))
        msg = f"p95 {p95:.2f} ms for one dress (budget {LATENCY_P95_MS:g} ms)"
        ok = p95 <= LATENCY_P95_MS
        return CheckResult("latency", ok, figures, msg if ok else msg + ": too slow")

    # -- releases --------------------------------------------------------------------------------
    def release(self, alias: str) -> Release:
        registry = self.registry("model")
        try:
            ref = registry.resolve(Ref(ARTIFACT_NAME, alias))
        except NotFound:
            if (
                alias == "production"
                and not registry.aliases(ARTIFACT_NAME)
                and not registry.alias_problems(ARTIFACT_NAME)
            ):
                # never promoted: an optional product that is simply not built yet
                return Release(
                    self.product, alias, {}, (f"no price model yet — run `{BUILD_FIX}`",)
                )
            raise
        return Release(self.product, alias, {"model": ref})

    def load(self, release: Release, context: LoadContext) -> PriceGeneration | UnbuiltPrice:
        if not release.members:
            return UnbuiltPrice(release)
        registry = self.registry("model")
        ref = release.members["model"]
        return PriceGeneration.load(release, context, registry.path(ref), registry.manifest(ref))

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        return [f"servers pick up {ref} within their alias reload: POST /v1/price"]
