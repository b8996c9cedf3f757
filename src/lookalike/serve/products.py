"""The products this server (and the CLI) serves: one model kind each, registered here.

A new product adds its kind to :func:`default_kinds` (plus its trainer and its router); the
lifecycle — checks, promote, rollback, releases, reload, fallbacks, /health, /metrics — is shared.
"""

from __future__ import annotations

from lookalike.core.settings import Settings
from lookalike.forecast.kind import ForecastKind
from lookalike.lifecycle import KindRegistry
from lookalike.moderation.kind import PrefilterKind
from lookalike.price.kind import PriceKind
from lookalike.recs.fit_kind import FitKind
from lookalike.recs.kind import RecsKind
from lookalike.search.kind import SearchKind

__all__ = ["default_kinds"]


def default_kinds(settings: Settings) -> KindRegistry:
    kinds = KindRegistry()
    kinds.register(SearchKind(settings))
    kinds.register(PriceKind(settings))
    kinds.register(RecsKind(settings))
    kinds.register(FitKind(settings))
    kinds.register(ForecastKind(settings))
    kinds.register(PrefilterKind(settings))
    return kinds
