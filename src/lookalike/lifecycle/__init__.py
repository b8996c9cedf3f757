"""Layer 2: the model lifecycle — kinds, checks, the one promote path, releases, fallbacks.

Every product (search today; moderation, recommendations, forecasting and pricing next) is a
:class:`Kind`: how to check, release, load and report its artifacts. Everything else — the check
runner with direction and tolerance, promote and rollback, production-else-previous loading, the
alias watcher and the fallback chains — is written once here. See docs/serving.md.
"""

from __future__ import annotations

from lookalike.lifecycle.checks import MetricGate, against_production
from lookalike.lifecycle.fallback import Chain, FallbackHook, Step, StepFailed, StepPools
from lookalike.lifecycle.kinds import Generation, Kind, KindRegistry, LoadContext, Release
from lookalike.lifecycle.promote import PromoteOutcome, RollbackOutcome, promote, rollback
from lookalike.lifecycle.serving import ProductSlot, release_metrics
from lookalike.lifecycle.single import (
    CheckStop,
    SingleModelKind,
    latency_check,
    load_failed,
    output_result,
    problems_of,
)

__all__ = [
    "Chain",
    "CheckStop",
    "FallbackHook",
    "Generation",
    "Kind",
    "KindRegistry",
    "LoadContext",
    "MetricGate",
    "ProductSlot",
    "PromoteOutcome",
    "Release",
    "RollbackOutcome",
    "SingleModelKind",
    "Step",
    "StepFailed",
    "StepPools",
    "against_production",
    "latency_check",
    "load_failed",
    "output_result",
    "problems_of",
    "promote",
    "release_metrics",
    "rollback",
]
