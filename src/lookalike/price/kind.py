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

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookalike.core.errors import LookalikeError
from lookalike.lifecycle import LoadContext, MetricGate, Release
from lookalike.lifecycle.single import (
    CheckStop,
    SingleModelKind,
    latency_check,
    load_failed,
    output_result,
    problems_of,
)
from lookalike.price.listings import Listings, read_listings
from lookalike.price.model import PriceModel
from lookalike.price.served import BUILD_FIX, PriceGeneration, UnbuiltPrice, check_output
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckResult

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


class PriceKind(SingleModelKind):
    task: ClassVar[str] = TASK
    product: ClassVar[str] = "price"
    artifact: ClassVar[str] = ARTIFACT_NAME
    build_fix: ClassVar[str] = BUILD_FIX
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {"model": PRICE_CHECKS}

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        return (MetricGate("mape", higher_is_better=False, tolerance=TOLERANCE),)

    # -- checks ----------------------------------------------------------------------------------
    def check_steps(self, registry: Registry, ref: Ref, **options: Any) -> Iterator[CheckResult]:
        folder = registry.path(ref)
        try:
            model = PriceModel.load(folder)
        except LookalikeError as exc:
            yield load_failed(exc)
            return
        yield CheckResult(
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
        holdout_path = options.get("holdout") or folder / HOLDOUT_FILE
        try:
            holdout, _ = read_listings(Path(holdout_path))
        except LookalikeError as exc:
            result = CheckResult("output", False, {}, f"held-out dresses: {exc.message}")
            raise CheckStop("no held-out dresses to measure on", result) from exc
        yield output_result(
            problems_of(lambda: check_output(model, holdout), "pricing the held-out dresses"),
            {"dresses": len(holdout)},
            f"{len(holdout)} held-out dresses: finite, floored, each inside its interval",
        )
        yield self._metric(registry, ref, model, holdout, str(holdout_path))
        yield self._latency(model, holdout)

    def _metric(
        self, registry: Registry, ref: Ref, model: PriceModel, holdout: Listings, source: str
    ) -> CheckResult:
        return self.metric_check(
            registry,
            ref,
            holdout_mape(model, holdout),
            lambda prod: holdout_mape(PriceModel.load(registry.path(prod)), holdout),
            source="held-out dresses" if source.endswith(HOLDOUT_FILE) else source,
        )

    def _latency(self, model: PriceModel, holdout: Listings) -> CheckResult:
        def answer(i: int) -> None:
            one = holdout.take([i % len(holdout)])
            model.suggest(one)
            model.similar(one, 5)

        return latency_check(
            answer, runs=min(LATENCY_RUNS, len(holdout)), budget_ms=LATENCY_P95_MS,
            what="one dress",
        )  # fmt: skip

    # -- releases --------------------------------------------------------------------------------
    def load(self, release: Release, context: LoadContext) -> PriceGeneration | UnbuiltPrice:
        if not release.members:
            return UnbuiltPrice(release)
        registry = self.registry("model")
        ref = release.members["model"]
        return PriceGeneration.load(release, context, registry.path(ref), registry.manifest(ref))

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        return [f"servers pick up {ref} within their alias reload: POST /v1/price"]
