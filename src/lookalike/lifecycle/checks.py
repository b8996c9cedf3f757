"""The generic check: a candidate's metric against production's, with a direction and a tolerance.

Every kind declares its metric gates (:class:`MetricGate`): the metric's name, whether higher or
lower is better, how much worse than production a candidate may be (absolute), and optionally a
hard bound. :func:`against_production` turns the two figures into a
:class:`~lookalike.registry.checks.CheckResult` whose figures record all of it, so a manifest says
what its artifact was held to::

    MetricGate("recall@10", higher_is_better=True, tolerance=0.02)   # search
    MetricGate("mape", higher_is_better=False, tolerance=0.005)      # a price model
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lookalike.registry.checks import CheckResult

__all__ = ["MetricGate", "against_production", "recorded_metrics"]


@dataclass(frozen=True)
class MetricGate:
    metric: str
    higher_is_better: bool
    tolerance: float
    # A hard bound whatever production does: the floor (higher is better) or ceiling (lower).
    bound: float | None = None
    check: str = "metric"

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def worse_by(self, candidate: float, production: float) -> float:
        """How much worse ``candidate`` is than ``production`` (negative: better)."""
        return production - candidate if self.higher_is_better else candidate - production

    def out_of_bound(self, value: float) -> bool:
        if self.bound is None:
            return False
        return value < self.bound if self.higher_is_better else value > self.bound


def against_production(
    gate: MetricGate,
    candidate: float,
    production: float | None,
    *,
    production_ref: str | None = None,
    source: str = "",
    note: str | None = None,
) -> CheckResult:
    """Pass when ``candidate`` is within the bound and not worse than production by > tolerance.

    ``production`` None: nothing to compare with (first deploy, or production cannot be
    evaluated: ``note`` says why); only the bound applies.
    """
    figures: dict = {
        "metric": gate.metric,
        "direction": gate.direction,
        "candidate": candidate,
        "production": production,
        "tolerance": gate.tolerance,
        "bound": gate.bound,
    }
    if source:
        figures["source"] = source
    if production_ref is not None:
        figures["production_ref"] = production_ref
    label = f"{gate.metric} {candidate:.4g}"
    if not math.isfinite(candidate):
        return CheckResult(gate.check, False, figures, f"{gate.metric} is not finite ({candidate})")
    if gate.out_of_bound(candidate):
        side = "below the floor" if gate.higher_is_better else "above the ceiling"
        return CheckResult(gate.check, False, figures, f"{label} is {side} {gate.bound:g}")
    if production is None:
        why = note or "no production yet: nothing to compare with"
        return CheckResult(gate.check, True, figures, f"{label}; {why}")
    worse = gate.worse_by(candidate, production)
    figures["delta"] = round(candidate - production, 6)
    msg = (
        f"{label} vs production {production_ref or ''} {production:.4g}"
        f" ({gate.direction} is better{', ' + source if source else ''})"
    )
    if worse > gate.tolerance + 1e-12:
        return CheckResult(
            gate.check, False, figures, f"{msg}: worse by more than {gate.tolerance}"
        )
    return CheckResult(gate.check, True, figures, msg)


def recorded_metrics(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric the artifact's checks measured: its name, direction, value and source.

    A metric gate records ``metric``, ``direction`` and the ``candidate``'s value; an index's
    retrieval check records ``metric`` and the value under that name. Older manifests without
    check figures fall back to their evaluation's Recall@10.
    """
    results = (manifest.get("checks") or {}).get("results") or {}
    out = []
    for check, result in results.items():
        figures = (result or {}).get("figures") or {}
        name = figures.get("metric")
        value = figures.get("candidate", figures.get(name)) if isinstance(name, str) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(
                {
                    "check": check,
                    "metric": name,
                    "direction": figures.get("direction", "higher"),
                    "value": float(value),
                    "source": str(figures.get("source") or figures.get("method") or check),
                }
            )
    if not out:
        value = ((manifest.get("evaluation") or {}).get("recall") or {}).get("@10")
        if isinstance(value, int | float):
            out.append(
                {
                    "check": "evaluation",
                    "metric": "recall@10",
                    "direction": "higher",
                    "value": float(value),
                    "source": "evaluation",
                }
            )
    return out
