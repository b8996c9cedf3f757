"""Layer 4: demand forecasting — weekly counts, intervals for counts, the artifact's tables.

Serving imports :mod:`~lookalike.forecast.tables`, :mod:`~lookalike.forecast.served` and
:mod:`~lookalike.forecast.kind` (numpy only); fitting, the backtest and the build live in
:mod:`~lookalike.forecast.fit`, :mod:`~lookalike.forecast.evaluation` and
:mod:`~lookalike.forecast.build` and are imported by the CLI. Counts are reviews per week, a
lower bound on rentals. See docs/forecast.md.
"""

from __future__ import annotations

from lookalike.forecast.quantiles import fit_dispersion, nb_quantile
from lookalike.forecast.series import WeeklyDemand, weekly_demand
from lookalike.forecast.tables import ForecastSeries, ForecastTable

__all__ = [
    "ForecastSeries",
    "ForecastTable",
    "WeeklyDemand",
    "fit_dispersion",
    "nb_quantile",
    "weekly_demand",
]
