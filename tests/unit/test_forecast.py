"""Demand forecasting: weekly counts, count intervals, the seasonal naive's short-history rule,
the ridge against the seasonal naive on a rolling-origin backtest, the gate's MASE on shared
cells. Real numpy computations on synthetic series whose truth is known; no mocks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.catalog.rentals import read_rentals, rentals_from_records
from lookalike.core.errors import InvalidInput
from lookalike.forecast.evaluation import (
    backtest,
    level_figures,
    mase_scale,
    sparsity,
    summarise,
)
from lookalike.forecast.fit import make_panel, seasonal_naive
from lookalike.forecast.kind import backtest_mase
from lookalike.forecast.quantiles import fit_dispersion, nb_quantile
from lookalike.forecast.series import WeeklyDemand, weekly_demand


def _rentals(rows: list[tuple[int, str, str]]):
    return rentals_from_records(
        {
            "user_id": list(range(len(rows))),
            "item_id": [r[0] for r in rows],
            "review_date": [r[1] for r in rows],
            "category": [r[2] for r in rows],
        }
    )


def test_weeks_end_on_the_last_day_and_items_take_their_main_category() -> None:
    rentals = _rentals(
        [
            (1, "2017-01-01", "dress"),
            (1, "2017-01-02", "dress"),
            (1, "2017-01-09", "gown"),  # item 1 is mostly a dress
            (2, "2017-01-15", "gown"),  # the last day: the last week is 01-09 .. 01-15
        ]
    )
    d = weekly_demand(rentals)
    assert str(d.end) == "2017-01-15" and str(d.week_start[-1]) == "2017-01-09"
    assert d.weeks == 3 and str(d.week_start[0]) == "2016-12-26"
    assert d.items.sum() == 4 and d.cats.sum() == 4
    one, two = list(d.item_ids).index(1), list(d.item_ids).index(2)
    assert d.items[one].tolist() == [1, 1, 1] and d.items[two].tolist() == [0, 0, 1]
    assert d.categories[d.item_category[one]] == "dress"
    assert d.categories[d.item_category[two]] == "gown"
    assert d.item_first.tolist() == [0, 2]
    # a cut-off keeps only what was known by then
    early = weekly_demand(rentals, end="2017-01-08")
    assert early.items.sum() == 2 and 2 not in early.item_ids
    with pytest.raises(InvalidInput):
        weekly_demand(rentals, end="2016-01-01")


def _poisson_quantile(mu: float, q: float) -> int:
    x, p = 0, math.exp(-mu)
    cdf = p
    while cdf < q:
        x += 1
        p *= mu / x
        cdf += p
    return x


@pytest.mark.parametrize("mu", [0.05, 0.4, 2.0, 7.5, 30.0])
@pytest.mark.parametrize("q", [0.05, 0.1, 0.5, 0.9, 0.95])
def test_nb_quantile_with_no_overdispersion_is_the_poisson_quantile(mu: float, q: float) -> None:
    got = nb_quantile(np.array([mu]), np.array([1e-9]), q)[0]
    assert got == _poisson_quantile(mu, q)


@pytest.mark.parametrize(
    ("mu", "k"), [(0.3, 0.5), (3.0, 2.0), (20.0, 5.0), (400.0, 10.0), (8000.0, 50.0)]
)
def test_nb_quantile_matches_sampled_negative_binomials(mu: float, k: float) -> None:
    rng = np.random.default_rng(1)
    draws = rng.negative_binomial(k, k / (k + mu), size=200_000)
    for q in (0.1, 0.5, 0.9, 0.95):
        got = nb_quantile(np.array([mu]), np.array([1 / k]), q)[0]
        if mu <= 3000:  # exact: the smallest count whose cdf reaches q (up to sampling noise)
            assert (draws <= got).mean() >= q - 0.004, (q, got)
            assert (draws <= got - 1).mean() < q + 0.004, (q, got)
        else:  # the normal approximation of a very large total: within 1 %
            assert abs(got - np.quantile(draws, q)) <= 0.01 * mu, (q, got)


def test_dispersion_is_recovered_from_residuals() -> None:
    rng = np.random.default_rng(2)
    mu = rng.choice([0.5, 2.0, 8.0, 40.0], size=80_000)
    k = 3.0
    y = rng.negative_binomial(k, k / (k + mu))
    inv_k = fit_dispersion(mu, y)
    # every band with data estimates 1/k ≈ 1/3
    assert np.allclose(inv_k, 1 / k, atol=0.08), inv_k
    poisson = fit_dispersion(mu, rng.poisson(mu))
    assert np.all(poisson < 0.03), poisson


def _demand(y: np.ndarray, cats: np.ndarray, item_category: np.ndarray) -> WeeklyDemand:
    weeks = y.shape[1]
    start = np.datetime64("2014-01-06")
    return WeeklyDemand(
        week_start=(start + 7 * np.arange(weeks)).astype("datetime64[D]"),
        item_ids=np.arange(100, 100 + y.shape[0]),
        item_category=item_category,
        items=y,
        categories=np.array([f"c{i}" for i in range(cats.shape[0])]),
        cats=cats,
    )


def test_seasonal_naive_uses_last_year_else_the_recent_mean() -> None:
    weeks = 80
    y = np.zeros((2, weeks))
    y[0] = np.arange(weeks) % 5  # a year and more of history
    y[1, 70:] = [4, 0, 2, 2, 0, 1, 3, 0, 2, 6]  # listed at week 70: ten weeks of history
    panel = make_panel(y, y.sum(axis=0), np.datetime64("2014-01-06"))
    t = np.array([weeks - 1])
    for h in (1, 4, 8):
        naive = seasonal_naive(panel, t, h)[0]
        assert naive[0] == y[0, weeks - 1 + h - 52]
        assert naive[1] == pytest.approx(y[1, -8:].mean())  # min(8, age) = 8 weeks


def _seasonal_panel(seed: int = 0) -> WeeklyDemand:
    """40 items in 2 categories over 4 years: yearly season × 40 %/year growth × Poisson."""
    rng = np.random.default_rng(seed)
    weeks = 208
    w = np.arange(weeks)
    season = 1 + 0.7 * np.sin(2 * np.pi * w / 52.18)
    growth = 1.4 ** (w / 52)
    base = rng.uniform(0.3, 6.0, size=40)[:, None]
    y = rng.poisson(base * season * growth).astype(np.float64)
    item_category = np.arange(40) % 2
    cats = np.stack([y[item_category == c].sum(axis=0) for c in (0, 1)])
    return _demand(y, cats, item_category)


def test_ridge_beats_seasonal_naive_on_a_growing_seasonal_panel() -> None:
    demand = _seasonal_panel()
    bt = backtest(demand, origins=6, step=8)
    items = level_figures(bt.items)
    assert items["ridge"]["series_scored"] == 40
    # growth makes last year's week too low: the ridge's trend terms must do clearly better
    assert items["ridge"]["mase"] < 0.9 * items["seasonal_naive"]["mase"], items
    # the intervals are calibrated to within a few points on Poisson-like data
    assert 0.75 <= items["ridge"]["coverage80"] <= 0.9, items
    assert 0.85 <= items["ridge"]["coverage90"] <= 0.96, items
    figures = summarise(bt, demand)
    assert "lower bound on rentals" in figures["unit"]
    assert figures["sparsity"]["items_with_reviews"] == 40
    assert len(figures["origins"]) == 6


def test_mase_scale_needs_a_year_and_a_quarter_of_history() -> None:
    weeks = 120
    y = np.zeros((3, weeks))
    y[0] = 1 + np.arange(weeks) % 3
    y[1, 60:] = 1 + np.arange(60) % 2  # 60 weeks of history at the end: not scored
    y[2, :] = 1.0  # constant: its seasonal-naive error is 0, not scored
    panel = make_panel(y, y.sum(axis=0), np.datetime64("2014-01-06"))
    scale, eligible = mase_scale(panel, weeks - 1)
    assert eligible.tolist() == [True, False, False]
    assert scale[0] == pytest.approx(np.abs(y[0, 52:] - y[0, :-52]).mean())


def test_gate_scores_production_on_the_cells_both_backtests_hold() -> None:
    rng = np.random.default_rng(3)
    y = rng.poisson(3.0, size=(4, 5, 8)).astype(np.float64)
    candidate = {
        "origin_dates": np.arange(4) * 28,
        "items_ids": np.arange(5),
        "items_y": y,
        "items_scale": np.ones((4, 5)),
        "items_eligible": np.ones((4, 5), dtype=bool),
        "items_mu": y.copy(),  # perfect
    }
    assert backtest_mase(candidate, "items") == 0.0
    production = {
        "origin_dates": np.arange(2, 6) * 28,  # shares origins 2 and 3
        "items_ids": np.array([3, 4, 9]),  # shares series 3 and 4
        "items_mu": np.full((4, 3, 8), 3.0),
    }
    expected = np.abs(3.0 - y[2:, 3:]).mean(axis=(0, 2)).mean()
    assert backtest_mase(candidate, "items", production) == pytest.approx(expected)
    production["items_ids"] = np.array([7, 8, 9])
    with pytest.raises(InvalidInput):
        backtest_mase(candidate, "items", production)


@pytest.mark.shared_data
def test_real_reviews_are_intermittent_per_item(shared_data) -> None:
    rentals = read_rentals(shared_data / "rtr" / "fit_reviews.parquet")
    d = weekly_demand(rentals)
    assert d.items.sum() == len(rentals) == d.cats.sum()
    figures = sparsity(d)
    # most item-weeks have no review: why items are pooled (and the figures say so)
    assert figures["zero_item_weeks_share"] > 0.5
    assert figures["items_under_one_per_week_share"] > 0.5
