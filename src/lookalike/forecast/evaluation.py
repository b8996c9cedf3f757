"""Rolling-origin backtest: MASE and interval coverage per level, per category, per method.

Origins are every ``STEP`` weeks over the last year of the data (13 origins by default, the
newest 8 weeks before the end so that every horizon is observed); at each origin every method
is refitted on the weeks up to it only — never a random split. Figures:

- **MASE**: a series' mean absolute error over the origins and the 8 horizons, divided by its
  in-sample seasonal-naive error (mean ``|y[t] - y[t - 52]|`` over its history up to the
  origin). Below 1.0: better than the seasonal naive *in sample*; the baseline's own
  out-of-sample MASE is in the table too. Reported as the mean over series (M4 style) and the
  median. A series is scored at an origin when it has at least 65 weeks of history (a year for
  the lag + a quarter) and a non-zero scale; the others are counted, not hidden.
- **relative MAE** (``rel_mae``): a series' out-of-sample MAE over the same origins and
  horizons divided by the seasonal naive's MAE on those cells; below 1.0 means better than the
  seasonal naive on the weeks forecast (mean, median and geometric mean over series).
- **coverage**: the share of observed weeks inside the 80 % and 90 % intervals (target: 80 %
  and 90 %); ``buy90``: the share of 8-week totals at or below the 90 % upper quantile (what
  ``lookalike forecast buy --service-level 0.9`` orders up to). For small integer counts an
  interval's plain coverage cannot hit its level (for a mean of 0.1 the 80 % interval is
  [0, 0] and covers 90 %), so each is reported with its **randomised-PIT** version (the
  expected share of PIT values, uniform on ``[F(y − 1), F(y)]``, inside the interval's
  quantiles: exactly the level for a calibrated forecast) and with the shares at or below the
  upper bound and at or above the lower bound separately.

All counts are reviews, a lower bound on rentals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.forecast.fit import (
    DISPERSION_ORIGINS,
    EPS,
    HORIZON,
    SEASON,
    WINDOW,
    GramCache,
    Panel,
    actuals,
    fit_level,
    forecast_history,
    make_panel,
    scales,
)
from lookalike.forecast.quantiles import nb_cdf, nb_quantile, pit_share
from lookalike.forecast.series import WeeklyDemand

__all__ = [
    "LEVELS",
    "SERVED",
    "Backtest",
    "backtest",
    "level_panels",
    "mase_of",
    "sparsity",
    "summarise",
]

ORIGINS = 13
STEP = 4
MIN_HISTORY = SEASON + 13
LEVELS = (0.8, 0.9)
BUY_LEVEL = 0.9
SERVED = "ridge_tsb"  # what the artifact serves (in its ridge.npz): the ridge blended with TSB
INTERVAL_METHODS = (("ridge", "ridge"), ("seasonal_naive", "naive"), (SERVED, "combined"))


def level_panels(demand: WeeklyDemand) -> tuple[Panel, Panel]:
    """(items, categories): an item's context is its category; a category's, every review."""
    day0 = demand.week_start[0]
    items = make_panel(demand.items, demand.cats[demand.item_category], day0)
    cats = make_panel(demand.cats, demand.cats.sum(axis=0), day0)
    return items, cats


def mase_scale(panel: Panel, origin: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, eligible) per series: in-sample seasonal-naive MAE up to ``origin``."""
    y = panel.y[:, : origin + 1]
    diff = np.abs(y[:, SEASON:] - y[:, :-SEASON])
    # only weeks whose lag is inside the series' own history count
    weeks = np.arange(SEASON, origin + 1)[None, :]
    inside = weeks - SEASON >= panel.first[:, None]
    n = inside.sum(axis=1)
    scale = np.where(n > 0, (diff * inside).sum(axis=1) / np.maximum(n, 1), 0.0)
    eligible = (origin - panel.first + 1 >= MIN_HISTORY) & (scale > 0)
    return scale, eligible


def mase_of(
    mu: np.ndarray, y: np.ndarray, scale: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-series MASE over origins × horizons: (mase (n,), scored (n,) bool).

    ``mu``, ``y``: (origins, n, HORIZON); ``scale``, ``eligible``: (origins, n).
    """
    err = np.abs(mu - y) / np.where(scale > 0, scale, 1.0)[..., None]
    w = eligible[..., None] & np.isfinite(err)
    total = np.where(w, err, 0.0).sum(axis=(0, 2))
    count = w.sum(axis=(0, 2))
    return total / np.maximum(count, 1), count > 0


def rel_mae_of(
    mu: np.ndarray, naive: np.ndarray, y: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-series out-of-sample relative MAE: the method's MAE over the scored origins ×
    horizons divided by the seasonal naive's MAE on the same cells: (rel (n,), scored (n,)).

    Below 1.0: better than the seasonal naive on the weeks forecast. A series whose seasonal
    naive made no error on its cells is not scored.
    """
    w = eligible[..., None] & np.isfinite(y) & np.isfinite(mu)
    own = np.where(w, np.abs(mu - y), 0.0).sum(axis=(0, 2))
    base = np.where(w, np.abs(naive - y), 0.0).sum(axis=(0, 2))
    scored = base > 0
    return np.where(scored, own / np.where(scored, base, 1.0), np.nan), scored


@dataclass
class LevelBacktest:
    """Forecasts of one level at every origin: (origins, n, HORIZON) arrays per method."""

    ids: np.ndarray
    y: np.ndarray
    scale: np.ndarray  # (origins, n)
    eligible: np.ndarray  # (origins, n)
    live: np.ndarray  # (origins, n) listed by the origin
    level: np.ndarray  # (origins, n) mean reviews a week over the 52 weeks up to the origin
    mu: dict[str, np.ndarray] = field(default_factory=dict)
    bounds: dict[str, dict[float, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    buy_upper: dict[str, np.ndarray] = field(default_factory=dict)  # (origins, n)
    # (F(y), F(y − 1)) of each observed week, and of each 8-week total, under the method's NB
    cdf: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    buy_cdf: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    weights: np.ndarray | None = None  # (origins, HORIZON) the ridge's weight in the blend


@dataclass
class Backtest:
    origins: np.ndarray  # week indices
    origin_dates: np.ndarray  # datetime64[D]: last day of each origin week
    items: LevelBacktest
    categories: LevelBacktest
    category_names: np.ndarray
    item_category: np.ndarray


def _bounds(mu: np.ndarray, inv_k: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    return {
        level: (nb_quantile(mu, inv_k, (1 - level) / 2), nb_quantile(mu, inv_k, (1 + level) / 2))
        for level in LEVELS
    }


def _last_day(demand: WeeklyDemand, week: int) -> np.datetime64:
    return demand.week_start[int(week)] + np.timedelta64(6, "D")


def backtest(
    demand: WeeklyDemand,
    *,
    origins: int = ORIGINS,
    step: int = STEP,
    progress: Callable[[str], None] | None = None,
) -> Backtest:
    """Refit every method at each origin and keep its forecasts of the 8 weeks after it."""
    weeks = demand.weeks
    origin_idx = np.array(sorted(weeks - 1 - HORIZON - step * k for k in range(origins)))
    if origin_idx[0] < MIN_HISTORY + HORIZON:
        raise ValueError(f"{weeks} weeks of data are too few for {origins} origins")
    items, cats = level_panels(demand)
    panels = (("items", items), ("categories", cats))
    since = int(origin_idx[0]) - WINDOW - HORIZON - 60
    grams = {}
    for name, panel in panels:
        if progress:
            progress(f"Gram matrices of the {name}")
        grams[name] = GramCache(panel, since=since)
    out: dict[str, LevelBacktest] = {}
    for name, panel in panels:
        o = origin_idx.size
        scale = np.zeros((o, panel.n))
        eligible = np.zeros((o, panel.n), dtype=bool)
        for j, origin in enumerate(origin_idx):
            scale[j], eligible[j] = mase_scale(panel, int(origin))
        out[name] = LevelBacktest(
            ids=demand.item_ids if name == "items" else demand.categories,
            y=actuals(panel, origin_idx),
            scale=scale,
            eligible=eligible,
            live=(origin_idx[:, None] - panel.first[None, :]) >= 0,
            level=scales(panel, origin_idx) - EPS,
        )
    per_origin: dict[str, list[dict]] = {"items": [], "categories": []}
    first = int(origin_idx[0]) - HORIZON - DISPERSION_ORIGINS + 1
    histories = {}
    for name, panel in panels:
        if progress:
            progress(f"out-of-sample forecasts of the {name}")
        histories[name] = forecast_history(
            panel, grams[name], np.arange(first, int(origin_idx[-1]) + 1)
        )
    for j, origin in enumerate(origin_idx):
        if progress:
            progress(f"origin {j + 1}/{origin_idx.size}: week ending {_last_day(demand, origin)}")
        for name, panel in panels:
            per_origin[name].append(
                fit_level(panel, int(origin), grams[name], history=histories[name])
            )
    for name, panel in panels:
        lv = out[name]
        fits = per_origin[name]
        for method, key in INTERVAL_METHODS:
            mu = np.stack([f[key].mu for f in fits])
            inv_k = np.stack([f[key].inv_k for f in fits])
            cmu = np.cumsum(mu, axis=-1)[..., -1]
            cinv = np.stack([f[key].cum_inv_k[:, -1] for f in fits])
            lv.mu[method] = mu
            lv.bounds[method] = _bounds(mu, inv_k)
            lv.buy_upper[method] = nb_quantile(cmu, cinv, BUY_LEVEL)
            y = np.where(np.isfinite(lv.y), lv.y, 0.0)
            lv.cdf[method] = nb_cdf(y, mu, inv_k)
            lv.buy_cdf[method] = nb_cdf(y.sum(axis=-1), cmu, cinv)
        lv.weights = np.stack([f["weights"] for f in fits])
        lv.mu["tsb"] = np.repeat(panel.tsb[:, origin_idx].T[..., None], HORIZON, axis=-1)
    # an item's share of its category's last 13 weeks × the category's ridge forecast
    item_cat = demand.item_category
    share = np.zeros((origin_idx.size, items.n))
    for j, origin in enumerate(origin_idx):
        lo = max(int(origin) - 12, 0)
        own = items.y[:, lo : origin + 1].sum(axis=1)
        cat = cats.y[:, lo : origin + 1].sum(axis=1)[item_cat]
        share[j] = np.where(cat > 0, own / np.maximum(cat, 1), 0.0)
    cat_served = out["categories"].mu[SERVED][:, item_cat, :]
    out["items"].mu["category_share"] = share[..., None] * cat_served
    return Backtest(
        origins=origin_idx,
        origin_dates=np.array([_last_day(demand, o) for o in origin_idx], dtype="datetime64[D]"),
        items=out["items"],
        categories=out["categories"],
        category_names=demand.categories,
        item_category=item_cat,
    )


def level_figures(
    lv: LevelBacktest, rows: np.ndarray | None = None, cells: np.ndarray | None = None
) -> dict[str, Any]:
    """Per method on ``rows`` (n,) and ``cells`` (origins, n; e.g. a selection made at each
    origin): MASE and the relative MAE against the seasonal naive (mean and median over scored
    series), interval coverage, its randomised-PIT version (fair for counts), the shares at or
    below the upper and at or above the lower bound, and buy90."""
    sel = np.ones(lv.ids.size, dtype=bool) if rows is None else rows
    keep = np.ones(lv.eligible.shape, dtype=bool) if cells is None else cells
    figures: dict[str, Any] = {}
    y = lv.y[:, sel]
    eligible = (lv.eligible & keep)[:, sel]
    live_cells = (lv.live & keep)[:, sel]
    naive = lv.mu["seasonal_naive"][:, sel]

    def r4(v: float) -> float:
        return round(float(v), 4)

    for method, mu in lv.mu.items():
        mase, scored = mase_of(mu[:, sel], y, lv.scale[:, sel], eligible)
        rel, rel_scored = rel_mae_of(mu[:, sel], naive, y, eligible)
        rel = rel[rel_scored]
        entry: dict[str, Any] = {
            "mase": r4(mase[scored].mean()) if scored.any() else None,
            "mase_median": r4(np.median(mase[scored])) if scored.any() else None,
            "series_scored": int(scored.sum()),
            "rel_mae": r4(rel.mean()) if rel.size else None,
            "rel_mae_median": r4(np.median(rel)) if rel.size else None,
            "rel_mae_gmean": r4(np.exp(np.log(np.maximum(rel, 1e-3)).mean())) if rel.size else None,
            "rel_mae_series": int(rel.size),
        }
        if method in lv.bounds:
            live = live_cells[..., None] & np.isfinite(y)
            up_cdf, low_cdf = (a[:, sel][live] for a in lv.cdf[method])
            for level, (lo, hi) in lv.bounds[method].items():
                pct = int(round(level * 100))
                lo_s, hi_s = lo[:, sel][live], hi[:, sel][live]
                obs = y[live]
                entry[f"coverage{pct}"] = r4(((obs >= lo_s) & (obs <= hi_s)).mean())
                q_lo, q_hi = (1 - level) / 2, (1 + level) / 2
                entry[f"pit_coverage{pct}"] = r4(pit_share(up_cdf, low_cdf, q_lo, q_hi).mean())
                entry[f"below_upper{pct}"] = r4((obs <= hi_s).mean())  # target ≥ q_hi
                entry[f"above_lower{pct}"] = r4((obs >= lo_s).mean())  # target ≥ 1 − q_lo
            total = np.nansum(y, axis=-1)
            ok = live_cells
            entry["buy90"] = r4((total <= lv.buy_upper[method][:, sel])[ok].mean())
            b_up, b_low = (a[:, sel][ok] for a in lv.buy_cdf[method])
            entry["buy90_pit"] = r4(pit_share(b_up, b_low, 0.0, BUY_LEVEL).mean())
        figures[method] = entry
    return figures


def sparsity(demand: WeeklyDemand, weeks: int = SEASON) -> dict[str, Any]:
    """How intermittent the item series are over the last ``weeks`` weeks (reviews per week)."""
    recent = demand.items[:, -weeks:]
    listed = recent.sum(axis=1) > 0
    per_week = recent[listed].mean(axis=1)
    return {
        "weeks": weeks,
        "items_with_reviews": int(listed.sum()),
        "zero_item_weeks_share": round(float((recent[listed] == 0).mean()), 4),
        "median_reviews_per_week": round(float(np.median(per_week)), 4),
        "items_under_one_per_week_share": round(float((per_week < 1).mean()), 4),
        "items_at_least_one_per_week": int((per_week >= 1).sum()),
    }


def summarise(bt: Backtest, demand: WeeklyDemand, top_categories: int = 10) -> dict[str, Any]:
    """The evaluation's figures (what ``lookalike eval forecast`` prints and writes)."""
    dense = demand.items[:, -SEASON:].mean(axis=1) >= 1.0
    per_cat = {}
    order = np.argsort(-demand.cats[:, -SEASON:].sum(axis=1))[:top_categories]
    for c in order:
        sel = np.zeros(bt.categories.ids.size, dtype=bool)
        sel[c] = True
        f = level_figures(bt.categories, sel)
        per_cat[str(bt.category_names[c])] = {
            "reviews_last_year": int(demand.cats[c, -SEASON:].sum()),
            "ridge_mase": f["ridge"]["mase"],
            "seasonal_naive_mase": f["seasonal_naive"]["mase"],
            "ridge_coverage80": f["ridge"]["coverage80"],
            "ridge_coverage90": f["ridge"]["coverage90"],
            "ridge_rel_mae": f["ridge"]["rel_mae"],
            f"{SERVED}_mase": f[SERVED]["mase"],
            f"{SERVED}_rel_mae": f[SERVED]["rel_mae"],
            f"{SERVED}_coverage80": f[SERVED]["coverage80"],
            f"{SERVED}_pit_coverage80": f[SERVED]["pit_coverage80"],
            "tsb_mase": f["tsb"]["mase"],
        }
    return {
        "origins": [str(d) for d in bt.origin_dates],
        "horizon_weeks": HORIZON,
        "unit": "reviews per week (a lower bound on rentals)",
        "categories": level_figures(bt.categories),
        "per_category": per_cat,
        "items": level_figures(bt.items),
        "items_dense": level_figures(bt.items, dense),
        "dense_items": int(dense.sum()),
        # chosen at each origin from the 52 weeks before it (no look at the weeks forecast)
        "items_dense_at_origin": level_figures(bt.items, cells=bt.items.level >= 1.0),
        "sparsity": sparsity(demand),
        "served": SERVED,
        "ridge_weight": {
            name: np.round(lv.weights.mean(axis=(0, 1)), 3).tolist()
            for name, lv in (("categories", bt.categories), ("items", bt.items))
            if lv.weights is not None
        },
    }
