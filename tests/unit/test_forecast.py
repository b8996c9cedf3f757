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
    SERVED,
    backtest,
    level_figures,
    mase_scale,
    rel_mae_of,
    sparsity,
    summarise,
)
from lookalike.forecast.fit import (
    HORIZON,
    GramCache,
    calibrate_dispersion,
    combination_weights,
    fit_level,
    forecast_history,
    make_panel,
    scaled_inv_k,
    seasonal_naive,
)
from lookalike.forecast.kind import backtest_mase
from lookalike.forecast.quantiles import fit_dispersion, nb_cdf, nb_quantile, pit_share
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


def _poisson_cdf(y: int, mu: float) -> float:
    return sum(math.exp(-mu) * mu**x / math.factorial(x) for x in range(y + 1)) if y >= 0 else 0.0


@pytest.mark.parametrize("mu", [0.1, 1.5, 12.0])
def test_nb_cdf_is_the_poisson_cdf_without_overdispersion(mu: float) -> None:
    y = np.arange(0, 30, dtype=np.float64)
    upper, lower = nb_cdf(y, np.full(y.size, mu), np.full(y.size, 1e-9))
    assert np.allclose(upper, [_poisson_cdf(int(v), mu) for v in y], atol=1e-7)
    assert np.allclose(lower, [_poisson_cdf(int(v) - 1, mu) for v in y], atol=1e-7)
    # the quantile is the smallest count whose cdf reaches q
    for q in (0.1, 0.5, 0.9):
        x = nb_quantile(np.array([mu]), np.array([1e-9]), q)[0]
        assert upper[int(x)] >= q and (x == 0 or upper[int(x) - 1] < q)


@pytest.mark.parametrize(("mu", "k"), [(0.3, 0.5), (6.0, 2.0), (5000.0, 400.0)])
def test_nb_cdf_matches_sampled_negative_binomials(mu: float, k: float) -> None:
    rng = np.random.default_rng(4)
    draws = rng.negative_binomial(k, k / (k + mu), size=200_000)
    points = np.quantile(draws, [0.1, 0.5, 0.9]).round()
    upper, lower = nb_cdf(points, np.full(3, mu), np.full(3, 1 / k))
    # exact below EXACT_UP_TO; above, a normal (close while the total is not very skewed)
    tol = 0.004 if mu <= 3000 else 0.01
    assert np.allclose(upper, [(draws <= p).mean() for p in points], atol=tol)
    assert np.allclose(lower, [(draws <= p - 1).mean() for p in points], atol=tol)


@pytest.mark.parametrize("mu", [0.1, 0.8, 25.0])
def test_randomised_pit_coverage_is_the_level_for_calibrated_counts(mu: float) -> None:
    """Plain coverage of a tiny count's interval is far from its level; the PIT share is not."""
    rng = np.random.default_rng(5)
    k = 2.0
    y = rng.negative_binomial(k, k / (k + mu), size=100_000).astype(np.float64)
    m, inv_k = np.full(y.size, mu), np.full(y.size, 1 / k)
    upper, lower = nb_cdf(y, m, inv_k)
    for level in (0.8, 0.9):
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        share = pit_share(upper, lower, lo_q, hi_q).mean()
        assert share == pytest.approx(level, abs=0.006), (mu, level, share)
        lo, hi = nb_quantile(m[:1], inv_k[:1], lo_q)[0], nb_quantile(m[:1], inv_k[:1], hi_q)[0]
        plain = ((y >= lo) & (y <= hi)).mean()
        if mu == 0.1 and level == 0.8:  # the interval is [0, 0]: it covers P(0) ≈ 0.91
            assert lo == hi == 0 and plain > 0.9
    # a forecast three times too low: its PIT values pile up at the top, the share falls
    upper, lower = nb_cdf(y, m / 3, inv_k)
    assert pit_share(upper, lower, 0.1, 0.9).mean() < (0.78 if mu < 0.5 else 0.72)


def test_relative_mae_divides_by_the_seasonal_naive_on_the_same_cells() -> None:
    y = np.zeros((2, 3, HORIZON))
    y[..., :] = 4.0
    naive = np.full(y.shape, 2.0)  # error 2 everywhere
    mu = np.full(y.shape, 3.0)  # error 1: half the naive's
    mu[:, 1] = 8.0  # series 1: error 4, twice the naive's
    eligible = np.ones((2, 3), dtype=bool)
    eligible[0, 2] = False  # series 2 scored on origin 1 only
    naive[:, 2] = 4.0  # ... where the naive is perfect: not scored
    rel, scored = rel_mae_of(mu, naive, y, eligible)
    assert scored.tolist() == [True, True, False]
    assert rel[:2] == pytest.approx([0.5, 2.0])
    assert rel_mae_of(naive, naive, y, eligible)[0][0] == 1.0


def test_combination_weights_follow_each_series_own_past_errors() -> None:
    rng = np.random.default_rng(6)
    m, n = 52, 3
    y = rng.poisson(5.0, size=(m, n, HORIZON)).astype(np.float64)
    ridge = y + rng.normal(0, 3, size=y.shape)
    other = y + rng.normal(0, 3, size=y.shape)
    ridge[:, 0] = y[:, 0]  # series 0: the ridge is exact
    other[:, 1] = y[:, 1]  # series 1: the other is exact
    live = np.ones((m, n), dtype=bool)
    live[:20, 2] = False  # series 2: 32 past origins, enough for a weight of its own
    w = combination_weights(ridge, other, y, np.full((m, n), 5.0), live)
    assert w.shape == (n, HORIZON)
    assert np.all(w[0] == 1.0) and np.all(w[1] == 0.0)
    # series 2 is as well served by both: a weight in between
    assert 0.2 <= w[2, 0] <= 0.8
    # a young series (too few past origins) takes the pooled per-horizon weight
    young = live.copy()
    young[:40, 2] = False
    w2 = combination_weights(ridge, other, y, np.full((m, n), 5.0), young)
    assert np.all((0.0 <= w2[2]) & (w2[2] <= 1.0)) and not np.all(w2[2] == w[2, 0])


def test_dispersion_calibration_recovers_a_variance_twice_the_model_s() -> None:
    rng = np.random.default_rng(7)
    m, n = 52, 3
    mu = np.full((m, n, HORIZON), 20.0)
    mu[:, 2] = 0.01  # expected variance 0.01 × 416 cells: too little to tell
    model_inv_k = np.full(mu.shape, 0.05)  # variance 20 + 0.05·400 = 40
    y = mu + rng.normal(0, 1, size=mu.shape) * np.sqrt(80.0)  # series 0: variance 80
    y[:, 1] = rng.normal(20.0, np.sqrt(40.0), size=(m, HORIZON))  # series 1: as modelled
    ratio = calibrate_dispersion(model_inv_k, mu, y, np.ones((m, n), dtype=bool))
    assert ratio[0] == pytest.approx(2.0, rel=0.15)
    assert ratio[1] == pytest.approx(1.0, rel=0.15)
    assert ratio[2] == 1.0
    new = scaled_inv_k(np.full((1, HORIZON), 0.05), np.full((1, HORIZON), 20.0), np.array([2.0]))
    assert np.allclose(20.0 + new * 400.0, 80.0)
    # a variance below Poisson's is never asked for
    floor = scaled_inv_k(np.full((1, HORIZON), 0.05), np.full((1, HORIZON), 20.0), np.array([0.1]))
    assert np.all(floor > 0) and np.all(floor < 1e-3)


def test_forecasts_made_at_an_origin_do_not_see_the_weeks_after_it() -> None:
    demand = _seasonal_panel(seed=1)
    panel = make_panel(demand.items, demand.cats[demand.item_category], demand.week_start[0])
    origin = 170
    later = demand.items.copy()
    later[:, origin + 1 :] *= 5.0  # a different future
    later_cats = np.stack([later[demand.item_category == c].sum(axis=0) for c in (0, 1)])
    changed = make_panel(later, later_cats[demand.item_category], demand.week_start[0])
    a = fit_level(panel, origin, GramCache(panel, since=0))
    b = fit_level(changed, origin, GramCache(changed, since=0))
    for key in ("ridge", "naive", "combined"):
        assert np.allclose(a[key].mu, b[key].mu) and np.allclose(a[key].inv_k, b[key].inv_k)
    assert np.allclose(a["weights"], b["weights"])
    # the history's ridge at an earlier origin is the ridge as it was fitted then
    gram = GramCache(panel, since=0)
    hist = forecast_history(panel, gram, np.arange(origin - 10, origin + 1))
    assert np.allclose(hist.betas[0], gram.fit(origin - 10))
    assert not np.allclose(hist.betas[0], hist.betas[-1])


def test_the_served_blend_beats_the_seasonal_naive_with_calibrated_pit() -> None:
    demand = _seasonal_panel()
    bt = backtest(demand, origins=6, step=8)
    items = level_figures(bt.items)
    served = items[SERVED]
    assert served["rel_mae"] < 0.9 and items["seasonal_naive"]["rel_mae"] == 1.0
    assert served["mase"] < 0.9 * items["seasonal_naive"]["mase"]
    assert 0.74 <= served["pit_coverage80"] <= 0.88, served
    assert 0.84 <= served["pit_coverage90"] <= 0.95, served
    assert served["below_upper90"] >= served["coverage90"]
    assert bt.items.weights is not None and np.all(
        (bt.items.weights >= 0) & (bt.items.weights <= 1)
    )
    figures = summarise(bt, demand)
    assert figures["served"] == SERVED
    assert len(figures["ridge_weight"]["items"]) == HORIZON
    assert figures["items_dense_at_origin"][SERVED]["series_scored"] > 0
