"""The files of a forecast artifact, and reading them (numpy only: the serving side).

A ``demand_forecast:N`` folder holds forecasts made at its training end, so serving is a
lookup:

================  =================================================================================
``model.json``    horizon, interval levels, training end, forecast weeks, the fitted coefficients
                  and dispersion tables (for the record), the history weeks' first day
``series.npz``    item ids, each item's category and share of it, categories, the last 12 weeks
``ridge.npz``     per level (``items_``/``categories_``): mean ``mu`` (n, 8), weekly ``lower``/
                  ``upper`` (n, levels, 8), cumulative ``cum_lower``/``cum_upper`` (n, levels, 8)
                  of weeks 1..H, and the negative-binomial ``inv_k``/``cum_inv_k`` (n, 8)
``naive.npz``     the same for the seasonal naive (the first fallback)
``backtest.npz``  the ridge's rolling-origin forecasts, actuals, MASE scales (the deploy gate)
================  =================================================================================

Counts are reviews per week: a lower bound on rentals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import IntegrityError

__all__ = [
    "BACKTEST_FILE",
    "LEVEL_NAMES",
    "METHOD_FILES",
    "MODEL_FILE",
    "SERIES_FILE",
    "ForecastSeries",
    "ForecastTable",
    "read_meta",
]

MODEL_FILE = "model.json"
SERIES_FILE = "series.npz"
METHOD_FILES = {"ridge": "ridge.npz", "naive": "naive.npz"}
BACKTEST_FILE = "backtest.npz"
LEVEL_NAMES = ("items", "categories")
TABLE_FIELDS = ("mu", "lower", "upper", "cum_lower", "cum_upper", "inv_k", "cum_inv_k")


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / MODEL_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{folder / MODEL_FILE} cannot be read: {exc}") from exc
    for key in ("horizon", "levels", "trained_until", "forecast_weeks", "history_weeks"):
        if key not in meta:
            raise IntegrityError(f"{folder / MODEL_FILE} has no {key!r}")
    return meta


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise IntegrityError(f"{path} cannot be read: {exc}") from exc


@dataclass(frozen=True)
class ForecastSeries:
    """Which series exist, and their recent history (what every step of the chain shares)."""

    item_ids: np.ndarray
    item_category: np.ndarray
    item_share: np.ndarray
    item_history: np.ndarray
    categories: np.ndarray
    category_history: np.ndarray
    item_index: dict[str, int]
    category_index: dict[str, int]

    @classmethod
    def load(cls, folder: Path) -> ForecastSeries:
        z = _npz(folder / SERIES_FILE)
        try:
            ids = z["item_ids"].astype(np.int64)
            cats = z["categories"].astype(str)
            series = cls(
                item_ids=ids,
                item_category=z["item_category"].astype(np.int64),
                item_share=z["item_share"].astype(np.float64),
                item_history=z["item_history"].astype(np.float64),
                categories=cats,
                category_history=z["category_history"].astype(np.float64),
                item_index={str(int(i)): n for n, i in enumerate(ids)},
                category_index={str(c): n for n, c in enumerate(cats)},
            )
        except KeyError as exc:
            raise IntegrityError(f"{folder / SERIES_FILE} lacks {exc}") from exc
        n, c = series.item_ids.size, series.categories.size
        if (
            series.item_category.shape != (n,)
            or series.item_history.shape[0] != n
            or series.category_history.shape[0] != c
            or (n and (series.item_category.min() < 0 or series.item_category.max() >= c))
        ):
            raise IntegrityError(f"{folder / SERIES_FILE}: shapes do not match")
        return series


@dataclass(frozen=True)
class ForecastTable:
    """One method's precomputed forecasts for one level: arrays of :data:`TABLE_FIELDS`."""

    mu: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    cum_lower: np.ndarray
    cum_upper: np.ndarray
    inv_k: np.ndarray
    cum_inv_k: np.ndarray

    @classmethod
    def load_all(cls, path: Path, sizes: dict[str, int], horizon: int, levels: int) -> dict:
        """{level name: table}; raises IntegrityError naming what is wrong."""
        z = _npz(path)
        out = {}
        for level in LEVEL_NAMES:
            try:
                table = cls(**{f: z[f"{level}_{f}"].astype(np.float64) for f in TABLE_FIELDS})
            except KeyError as exc:
                raise IntegrityError(f"{path} lacks {exc}") from exc
            problems = table.problems(sizes[level], horizon, levels)
            if problems:
                raise IntegrityError(f"{path} {level}: " + "; ".join(problems))
            out[level] = table
        return out

    def problems(self, n: int, horizon: int, levels: int) -> list[str]:
        """What is wrong with the arrays (empty: right shapes, finite, ordered, non-negative)."""
        out = []
        for name, shape in (
            ("mu", (n, horizon)),
            ("lower", (n, levels, horizon)),
            ("upper", (n, levels, horizon)),
            ("cum_lower", (n, levels, horizon)),
            ("cum_upper", (n, levels, horizon)),
            ("inv_k", (n, horizon)),
            ("cum_inv_k", (n, horizon)),
        ):
            arr = getattr(self, name)
            if arr.shape != shape:
                out.append(f"{name} has shape {arr.shape}, expected {shape}")
            elif not np.all(np.isfinite(arr)):
                out.append(f"{name} has NaN or inf")
            elif np.any(arr < 0):
                out.append(f"{name} has a negative value")
        if not out:
            if np.any(self.lower > self.upper) or np.any(self.cum_lower > self.cum_upper):
                out.append("a lower bound is above its upper bound")
            if np.any(np.diff(self.cum_upper, axis=-1) < -1e-9):
                out.append("a cumulative upper bound decreases with the horizon")
        return out
