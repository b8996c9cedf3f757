"""The recommendations kind: one role, ``model``, a folder ``models/recommendations/N/``.

One kind holds both "you may also like" and the home carousels: they are fitted from the same
interactions in one pass, refreshed together every night and read the same arrays, so a
separate kind each would only let two halves of one model drift apart. Its manifest's ``task``
is ``recommendations``; it carries two gates, one per product surface.

An artifact holds the serving model (``model.json``, ``arrays.npz``: fitted on every rental and
event), ``static.json`` (the last fallback), and for the gate ``eval/`` (the same fit on the past
of the time split only) with ``holdout.json`` (each user's next rental in the later months).

Checks, in order (each recorded in the manifest):

===========  ==================================================================================
checksums    every file matches the manifest
load         the serving model and the ``eval/`` copy load (shapes, finite arrays)
output       an unknown user's page has carousels, each full and without repeats; an item's
             list is full, distinct and never the item itself; the static lists parse
metric       NDCG@10 of the next rental (similar items), ``eval/`` on ``holdout.json``, not worse
             than production's ``eval/`` on the same cases by more than ``TOLERANCE``
metric_home  hit rate@20 of the home page (users with a history), the same way
latency      one home page (a known user) + one item list, p95 ≤ ``LATENCY_P95_MS``
===========  ==================================================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from lookalike.core.errors import LookalikeError
from lookalike.lifecycle import LoadContext, MetricGate, Release
from lookalike.lifecycle.single import (
    SingleModelKind,
    latency_check,
    load_failed,
    output_result,
    problems_of,
)
from lookalike.recs.evaluation import evaluate_all
from lookalike.recs.home import build_page
from lookalike.recs.model import RecsModel, read_static
from lookalike.recs.served import BUILD_FIX, RecsGeneration, UnbuiltRecs
from lookalike.recs.similar import corental_items
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import (
    CheckResult,
)

__all__ = ["ARTIFACT_NAME", "EVAL_DIR", "HOLDOUT_FILE", "RECS_CHECKS", "TASK", "RecsKind"]

TASK = "recommendations"
ARTIFACT_NAME = "recommendations"
HOLDOUT_FILE = "holdout.json"
EVAL_DIR = "eval"
RECS_CHECKS = ("checksums", "load", "output", "metric", "metric_home", "latency")
TOLERANCE = 0.002  # absolute: NDCG@10 and hit rate@20 are around 0.01–0.02 on RTR
LATENCY_P95_MS = 20.0
LATENCY_RUNS = 30
GATES = (
    MetricGate("ndcg@10", higher_is_better=True, tolerance=TOLERANCE, check="metric"),
    MetricGate("home_hit@20", higher_is_better=True, tolerance=TOLERANCE, check="metric_home"),
)


def output_problems(model: RecsModel, k: int = 10) -> list[str]:
    problems = []
    for month in (1, 7):
        page = build_page(model, {}, month, k)
        if not page:
            problems.append(f"the popular layout of month {month} is empty")
        for c in page:
            ids = [s.item_id for s in c.items]
            if len(set(ids)) != len(ids):
                problems.append(f"carousel {c.id} repeats an item")
            if len(ids) < min(k, len(model.category_items.get(c.id.split(":", 1)[1], ids))):
                problems.append(f"carousel {c.id} has {len(ids)} items, expected {k}")
    want = min(k, len(model.items) - 1)
    for item_id in [str(i) for i in model.items[: min(5, len(model.items))]]:
        ids = [s.item_id for s in corental_items(model, item_id, k, 1)]
        if item_id in ids or len(set(ids)) != len(ids) or len(ids) < want:
            problems.append(f"the list of item {item_id} has {len(ids)} items, itself or repeats")
    return problems


class RecsKind(SingleModelKind):
    task: ClassVar[str] = TASK
    product: ClassVar[str] = "recs"
    artifact: ClassVar[str] = ARTIFACT_NAME
    build_fix: ClassVar[str] = BUILD_FIX
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {"model": RECS_CHECKS}

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        return GATES

    # -- checks ----------------------------------------------------------------------------------
    def check_steps(self, registry: Registry, ref: Ref, **options: Any) -> Iterator[CheckResult]:
        folder = registry.path(ref)
        try:
            model = RecsModel.load(folder)
            eval_model = RecsModel.load(folder / EVAL_DIR)
            read_static(folder)
            holdout = json.loads((folder / HOLDOUT_FILE).read_text())
        except (LookalikeError, OSError, ValueError) as exc:
            yield load_failed(exc)
            return
        yield CheckResult(
            "load",
            True,
            {"items": len(model.items), "users": len(model.users)},
            f"{len(model.items)} items, {len(model.users)} users, "
            f"{len(holdout['similar'])} held-out next rentals",
        )
        yield output_result(
            problems_of(lambda: output_problems(model), "answering"),
            {},
            "layouts and lists full",
        )
        yield from self._metrics(registry, ref, eval_model, holdout)
        yield self._latency(model)

    def _metrics(
        self, registry: Registry, ref: Ref, eval_model: RecsModel, holdout: dict[str, Any]
    ) -> list[CheckResult]:
        def figures(m: RecsModel) -> dict[str, float]:
            return evaluate_all(m, holdout["similar"], holdout["home"])["gated"]

        candidate = figures(eval_model)
        source = f"held-out next rentals ({holdout.get('split', '')})"
        production: dict[Ref, dict[str, float]] = {}  # evaluated once for both gates

        def production_figures(prod: Ref) -> dict[str, float]:
            if prod not in production:
                production[prod] = figures(RecsModel.load(registry.path(prod) / EVAL_DIR))
            return production[prod]

        return [
            self.metric_check(
                registry,
                ref,
                candidate[gate.metric],
                lambda prod, metric=gate.metric: production_figures(prod)[metric],
                source=source,
                gate=gate,
            )
            for gate in GATES
        ]

    def _latency(self, model: RecsModel) -> CheckResult:
        users = [str(u) for u in model.users[: LATENCY_RUNS + 2]] or ["unknown"]

        def answer(i: int) -> None:
            build_page(model, model.history(users[i % len(users)]), 1 + i % 12, 10)
            corental_items(model, str(model.items[i % len(model.items)]), 20, 1 + i % 12)

        return latency_check(
            answer, runs=LATENCY_RUNS, budget_ms=LATENCY_P95_MS, what="one page + one item list"
        )

    # -- releases --------------------------------------------------------------------------------
    def load(self, release: Release, context: LoadContext) -> RecsGeneration | UnbuiltRecs:
        if not release.members:
            return UnbuiltRecs(release)
        registry = self.registry("model")
        ref = release.members["model"]
        return RecsGeneration.load(release, context, registry.path(ref), registry.manifest(ref))

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        return [f"servers pick up {ref} within their alias reload: GET /v1/users/ID/home"]
