"""Build a demand-forecast artifact: backtest, fit at the data's end, precompute, register.

``build_forecast(registry, data)`` reads the rental reviews, counts weekly demand per item and
per category, runs the rolling-origin backtest (its figures go into the manifest and its
forecasts into ``backtest.npz`` for the deploy gate), fits the ridge and the seasonal naive on
every week, and writes the forecasts of the 8 weeks after the data's end with their intervals
(:mod:`lookalike.forecast.tables`). Promoting it is :func:`lookalike.lifecycle.promote`'s job.
Training side: the server never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalog.rental_store import RentalData
from lookalike.forecast.evaluation import (
    LEVELS,
    SERVED,
    Backtest,
    backtest,
    level_panels,
    summarise,
)
from lookalike.forecast.fit import (
    DISPERSION_ORIGINS,
    EPS,
    FEATURES,
    HORIZON,
    RIDGE_LAMBDA,
    SEASON,
    WINDOW,
    Fitted,
    GramCache,
    fit_level,
)
from lookalike.forecast.kind import ARTIFACT_NAME, TASK
from lookalike.forecast.quantiles import nb_quantile
from lookalike.forecast.series import WeeklyDemand, weekly_demand
from lookalike.forecast.tables import BACKTEST_FILE, METHOD_FILES, MODEL_FILE, SERIES_FILE
from lookalike.registry import Ref, Registry

__all__ = ["build_forecast", "register_forecast", "tables_of"]

HISTORY_WEEKS = 12
SHARE_WEEKS = 13


def tables_of(fitted: Fitted) -> dict[str, np.ndarray]:
    """The precomputed arrays of one method and level (see ``tables.TABLE_FIELDS``)."""
    mu, inv_k, cum_inv_k = fitted.mu, fitted.inv_k, fitted.cum_inv_k
    cmu = np.cumsum(mu, axis=-1)
    lower, upper, cum_lower, cum_upper = [], [], [], []
    for level in LEVELS:
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        lower.append(nb_quantile(mu, inv_k, lo_q))
        upper.append(nb_quantile(mu, inv_k, hi_q))
        cum_lower.append(nb_quantile(cmu, cum_inv_k, lo_q))
        # a total over more weeks never needs fewer units
        cum_upper.append(np.maximum.accumulate(nb_quantile(cmu, cum_inv_k, hi_q), axis=-1))
    return {
        "mu": mu,
        "lower": np.stack(lower, axis=1),
        "upper": np.stack(upper, axis=1),
        "cum_lower": np.stack(cum_lower, axis=1),
        "cum_upper": np.stack(cum_upper, axis=1),
        "inv_k": inv_k,
        "cum_inv_k": cum_inv_k,
    }


def _series_arrays(demand: WeeklyDemand) -> dict[str, np.ndarray]:
    own = demand.items[:, -SHARE_WEEKS:].sum(axis=1)
    cat = demand.cats[:, -SHARE_WEEKS:].sum(axis=1)[demand.item_category]
    return {
        "item_ids": demand.item_ids.astype(np.int64),
        "item_category": demand.item_category.astype(np.int32),
        "item_share": np.where(cat > 0, own / np.maximum(cat, 1.0), 0.0),
        "item_history": demand.items[:, -HISTORY_WEEKS:].astype(np.float32),
        "categories": demand.categories.astype(str),
        "category_history": demand.cats[:, -HISTORY_WEEKS:].astype(np.float32),
    }


def _backtest_arrays(bt: Backtest) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "origin_dates": bt.origin_dates.astype("datetime64[D]").astype(np.int64),
    }
    for name, lv in (("items", bt.items), ("categories", bt.categories)):
        out[f"{name}_ids"] = lv.ids.astype(np.int64) if name == "items" else lv.ids.astype(str)
        out[f"{name}_mu"] = lv.mu[SERVED].astype(np.float32)  # what ridge.npz serves
        out[f"{name}_y"] = lv.y.astype(np.float32)
        out[f"{name}_scale"] = lv.scale
        out[f"{name}_eligible"] = lv.eligible
    return out


def register_forecast(
    registry: Registry,
    demand: WeeklyDemand,
    fits: dict[str, dict],
    bt: Backtest,
    manifest: dict[str, Any],
    *,
    name: str = ARTIFACT_NAME,
    scale_ridge: float = 1.0,
) -> Ref:
    """Write the forecasts as the next version of ``name``.

    ``ridge.npz`` holds the served forecast: the ridge blended with TSB (``fits[level]
    ["combined"]``; the file keeps its name so that every reader and fallback step stays as it
    is). ``scale_ridge`` multiplies the served forecasts (served and backtested): only tests use
    it, to make a deliberately worse candidate that the metric gate must refuse.
    """
    figures = summarise(bt, demand)
    if scale_ridge != 1.0:
        for lv in (bt.items, bt.categories):
            lv.mu[SERVED] = lv.mu[SERVED] * scale_ridge
        for level in fits.values():
            level["combined"].mu = level["combined"].mu * scale_ridge
        figures = summarise(bt, demand)
    served_items, served_cats = figures["items"][SERVED], figures["categories"][SERVED]
    metrics = {
        "mase": served_items["mase"],
        "mase_categories": served_cats["mase"],
        "rel_mae": served_items["rel_mae"],
        "rel_mae_categories": served_cats["rel_mae"],
        "coverage80_items": served_items["coverage80"],
        "coverage90_items": served_items["coverage90"],
        "coverage80_categories": served_cats["coverage80"],
        "coverage90_categories": served_cats["coverage90"],
        "pit_coverage80_items": served_items["pit_coverage80"],
        "pit_coverage80_categories": served_cats["pit_coverage80"],
        "buy90_items": served_items["buy90"],
        "baseline_mase": figures["items"]["seasonal_naive"]["mase"],
        "baseline_mase_categories": figures["categories"]["seasonal_naive"]["mase"],
    }
    end = demand.end
    meta = {
        "horizon": HORIZON,
        "levels": list(LEVELS),
        "trained_until": str(end),
        "forecast_weeks": [str(end + np.timedelta64(1 + 7 * h, "D")) for h in range(HORIZON)],
        "history_weeks": [str(d) for d in demand.week_start[-HISTORY_WEEKS:]],
        "unit": "reviews per week (a lower bound on rentals)",
        "served": "ridge blended with TSB: w·ridge + (1 − w)·TSB, w per horizon fitted on the "
        "out-of-sample forecasts of the 52 origins before the training end (ridge.npz)",
        "ridge_weight_mean": {
            k: v["weights"].mean(axis=0).round(3).tolist() for k, v in fits.items()
        },
        "ridge": {
            "lambda": RIDGE_LAMBDA,
            "eps": EPS,
            "window_weeks": WINDOW,
            "features": list(FEATURES),
            "coefficients": {k: v["beta"].round(6).tolist() for k, v in fits.items()},
        },
        "dispersion": {
            k: {m: v[m].weekly_bands.round(6).tolist() for m in ("combined", "naive")}
            for k, v in fits.items()
        },
    }
    doc = {
        "task": TASK,
        "method": "ridge_tsb",
        "metrics": metrics,
        "evaluation": figures,
        **manifest,
    }
    with registry.create(name, doc) as writer:
        folder: Path = writer.path
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=1))
        np.savez_compressed(folder / SERIES_FILE, **_series_arrays(demand))
        for method, file in METHOD_FILES.items():
            arrays = {}
            for level, level_fits in fits.items():
                fitted = level_fits["combined" if method == "ridge" else method]
                for key, arr in tables_of(fitted).items():
                    arrays[f"{level}_{key}"] = arr.astype(np.float32)
            np.savez_compressed(folder / file, **arrays)
        np.savez_compressed(folder / BACKTEST_FILE, **_backtest_arrays(bt))
    return writer.ref


def fit_at_end(demand: WeeklyDemand) -> dict[str, dict]:
    """The served blend, the ridge and the seasonal naive fitted on every week, forecasting the
    8 weeks after the end (weights and dispersion from the 52 origins before it)."""
    items, cats = level_panels(demand)
    origin = demand.weeks - 1
    # the ridges refitted at the earliest calibration origin need a full window before it
    since = origin - WINDOW - 2 * HORIZON - DISPERSION_ORIGINS
    return {
        "items": fit_level(items, origin, GramCache(items, since=since)),
        "categories": fit_level(cats, origin, GramCache(cats, since=since)),
    }


def build_forecast(
    registry: Registry,
    data: Path | RentalData,
    *,
    limit: int | None = None,
    scale_ridge: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> Ref:
    """Backtest on ``data`` (a file of rental reviews, or reviews already read with their
    source), fit at the end and register a candidate."""
    if not isinstance(data, RentalData):
        data = RentalData.from_file(data, limit=limit)
    rentals = data.rentals
    demand = weekly_demand(rentals)
    if demand.weeks < SEASON * 2:
        from lookalike.core.errors import InvalidInput

        raise InvalidInput(
            f"{data.label} spans {demand.weeks} weeks: a yearly seasonal model needs at least "
            f"{SEASON * 2} weeks of reviews"
        )
    bt = backtest(demand, progress=progress)
    if progress:
        progress("fitting on every week")
    fits = fit_at_end(demand)
    manifest = {
        "data": {
            **data.source,
            "first": str(rentals.review_date.min()),
            "last": str(rentals.review_date.max()),
            "items": int(demand.item_ids.size),
            "categories": int(demand.categories.size),
            "weeks": demand.weeks,
        },
        "split": "rolling origins over the last year (refit at each); served: fitted on all",
        "short_history": (
            "seasonal naive: a target week with no week a year earlier in the series' history "
            "gets the mean of its last min(8, age) weeks"
        ),
    }
    return register_forecast(registry, demand, fits, bt, manifest, scale_ridge=scale_ridge)
