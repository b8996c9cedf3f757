"""Fitting the forecasters (training side: the server never imports this module).

Three ways to forecast a weekly series ``h = 1..8`` weeks after an origin week ``t``:

- **seasonal naive** (the baseline): the same week a year earlier, ``y[t + h - 52]``. A series
  with less than a year of history at the target week has no such week: it gets the mean of
  its last ``min(8, age)`` weeks instead (said in the docs and the manifest).
- **TSB** (Teunter–Syntetos–Babai), for intermittent demand: a smoothed probability of a
  non-zero week × a smoothed size of a non-zero week. Used as a feature of the ridge and
  reported alone in the evaluation.
- **ridge**: one regularised linear model per horizon, pooled across every series of a level
  (all items share one, all categories another). Each series is divided by its own scale (mean
  of its last 52 weeks + ``EPS``) so that a dress with 40 reviews a week and one with one a month
  share coefficients. Features (known at ``t``): the last two weeks, the 4/13/52-week means
  (level and local trend), the same weeks a year earlier (yearly seasonality), the category's
  (for an item) or the business's (for a category) change from that time last year to the
  target week last year applied to the series' level, TSB, the series' age (launch phase), and
  Fourier terms of the target week of the year. Fitted by normal equations from per-week Gram
  matrices, so a rolling-origin backtest refits at each origin in milliseconds.

- **ridge + TSB** (served): ``w·ridge + (1 − w)·TSB``. A series with at least half a year of
  past origins takes the weight (grid of 0.05) with the smallest absolute error on its own
  out-of-sample forecasts of the 52 origins before the forecast (every one of them made with
  the ridge as it was fitted then, :func:`forecast_history`); a younger series takes the
  weight, per horizon, with the smallest scaled error over all series.

Intervals: a negative binomial around each mean with a dispersion fitted to the same method's
out-of-sample residuals over the 52 origins before ``t`` (:mod:`lookalike.forecast.quantiles`),
per horizon and per band of the mean, and for the sum of the first ``H`` weeks (what
``lookalike forecast buy`` needs). The served blend's variance is then rescaled per series by
the ratio of its past squared errors to the variance the bands gave it
(:func:`calibrate_dispersion`), where that series' past carries enough variance to tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.forecast.quantiles import band_of, fit_dispersion

__all__ = [
    "EPS",
    "FEATURES",
    "HORIZON",
    "SEASON",
    "Fitted",
    "History",
    "Panel",
    "calibrate_dispersion",
    "combination_weights",
    "fit_level",
    "forecast_history",
    "scaled_inv_k",
    "make_panel",
    "seasonal_naive",
]

HORIZON = 8
SEASON = 52
WINDOW = 156  # training origins: the last three years (older years had a different business)
DISPERSION_ORIGINS = 52
EPS = 0.1  # added to every scale: a series with one review a year stays bounded
RIDGE_LAMBDA = 1e-3  # per row; the intercept is not penalised
TSB_ALPHA = 0.1  # size of a non-zero week
TSB_BETA = 0.1  # probability of a non-zero week
COMBINE_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # weight of the ridge vs TSB
OWN_WEIGHT_ORIGINS = 26  # past origins a series needs for a weight of its own
CALIBRATE_MIN_VAR = 50.0  # expected variance (summed over past cells) to rescale a series
CALIBRATE_RANGE = (0.5, 4.0)
INV_K_FLOOR, INV_K_CEIL = 1e-4, 50.0
FOURIER = 3
FEATURES = (
    "intercept", "last", "last_but_one", "mean4", "mean13", "mean52", "same_weeks_last_year",
    "has_last_year", "context_seasonal_x_level", "context_seasonal", "tsb", "log_age",
    "launch", *[f"{f}{k}" for k in range(1, FOURIER + 1) for f in ("sin", "cos")],
)  # fmt: skip


@dataclass
class Panel:
    """One level's series (items or categories) with what the features read from."""

    y: np.ndarray  # (n, T)
    first: np.ndarray  # (n,) week of the first review
    ctx: np.ndarray  # (n, T) the context series: the item's category, or all reviews
    day0: np.datetime64  # first day of week 0
    cs: np.ndarray  # (n, T + 1) cumulative sums of y
    ccs: np.ndarray  # (n, T + 1) cumulative sums of ctx
    tsb: np.ndarray  # (n, T) TSB forecast made at the end of each week

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def weeks(self) -> int:
        return int(self.y.shape[1])


def make_panel(y: np.ndarray, ctx: np.ndarray, day0: np.datetime64) -> Panel:
    y = np.asarray(y, dtype=np.float64)
    ctx = np.broadcast_to(np.asarray(ctx, dtype=np.float64), y.shape)
    nz = y > 0
    first = np.where(nz.any(axis=1), nz.argmax(axis=1), y.shape[1])
    zeros = np.zeros((y.shape[0], 1))
    return Panel(
        y=y,
        first=first,
        ctx=np.ascontiguousarray(ctx),
        day0=day0,
        cs=np.hstack([zeros, np.cumsum(y, axis=1)]),
        ccs=np.hstack([zeros, np.cumsum(ctx, axis=1)]),
        tsb=_tsb(y, first),
    )


def _tsb(y: np.ndarray, first: np.ndarray) -> np.ndarray:
    n, weeks = y.shape
    p = np.zeros(n)
    z = np.zeros(n)
    out = np.zeros((n, weeks))
    for t in range(weeks):
        yt = y[:, t]
        started = first == t
        p[started], z[started] = 1.0, yt[started]
        live = first < t
        hit = yt > 0
        p[live] += TSB_BETA * (hit[live] - p[live])
        upd = live & hit
        z[upd] += TSB_ALPHA * (yt[upd] - z[upd])
        out[:, t] = p * z
    return out


def _window_sum(cs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum of weeks [lo, hi) per series; lo, hi are (m, n) (clipped to the data)."""
    rows = np.arange(cs.shape[0])[None, :]
    lo = np.clip(lo, 0, cs.shape[1] - 1)
    hi = np.clip(hi, 0, cs.shape[1] - 1)
    return cs[rows, hi] - cs[rows, lo]


def _recent_mean(panel: Panel, t: np.ndarray, length: int) -> np.ndarray:
    """mean of the last ``length`` weeks up to ``t`` (inclusive), since the series' start."""
    hi = t[:, None] + 1
    lo = np.maximum(hi - length, panel.first[None, :])
    n = np.maximum(hi - lo, 1)
    return _window_sum(panel.cs, lo, hi) / n


def scales(panel: Panel, t: np.ndarray) -> np.ndarray:
    return _recent_mean(panel, t, SEASON) + EPS


def features(panel: Panel, t: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X (m, n, F), scale (m, n), live (m, n)) for origins ``t`` (m,) and horizon ``h``."""
    t = np.asarray(t, dtype=np.int64)
    rows = np.arange(panel.n)[None, :]
    age = t[:, None] - panel.first[None, :] + 1
    live = age >= 1
    s = scales(panel, t)
    y = panel.y
    last = y[rows, t[:, None]]
    prev = np.where(age >= 2, y[rows, np.maximum(t - 1, 0)[:, None]], 0.0)
    tau = t + h
    # the same three weeks a year before the target week (all observed by t since h ≤ 8)
    lo = (tau - SEASON - 1)[:, None] + np.zeros_like(rows)
    has_year = (lo >= panel.first[None, :]) & (lo >= 0)
    same = _window_sum(panel.cs, lo, lo + 3) / 3.0
    # the context's move from "this time last year" to "the target week last year"
    ctx_then = _window_sum(panel.ccs, lo, lo + 3) / 3.0
    base_lo = (t - SEASON - 12)[:, None] + np.zeros_like(rows)
    ctx_base = _window_sum(panel.ccs, base_lo, base_lo + 13) / 13.0
    has_ctx = (base_lo >= 0) & (ctx_base > 0)
    ratio = np.where(has_ctx, np.clip(ctx_then / np.maximum(ctx_base, 1e-9), 0.0, 5.0), 0.0)
    mean4 = _recent_mean(panel, t, 4)
    mean13 = _recent_mean(panel, t, 13)
    mean52 = s - EPS
    tsb = panel.tsb[rows, t[:, None]]
    day = (panel.day0 + 7 * tau).astype("datetime64[D]")
    year_frac = (day - day.astype("datetime64[Y]")).astype(np.float64) / 365.25
    fourier = []
    for k in range(1, FOURIER + 1):
        fourier += [np.sin(2 * np.pi * k * year_frac), np.cos(2 * np.pi * k * year_frac)]
    shape = s.shape
    cols = [
        np.ones(shape),
        last / s,
        prev / s,
        mean4 / s,
        mean13 / s,
        mean52 / s,
        np.where(has_year, same, 0.0) / s,
        has_year.astype(np.float64),
        ratio * mean13 / s,
        ratio,
        tsb / s,
        np.log1p(np.maximum(age, 0)) / 5.0,
        1.0 / (1.0 + np.maximum(age, 0) / 4.0),
        *[np.broadcast_to(f[:, None], shape) for f in fourier],
    ]
    X = np.stack(cols, axis=-1)
    return X, s, live


def seasonal_naive(panel: Panel, t: np.ndarray, h: int) -> np.ndarray:
    """(m, n): last year's same week, or the mean of the last min(8, age) weeks without one."""
    t = np.asarray(t, dtype=np.int64)
    rows = np.arange(panel.n)[None, :]
    back = (t + h - SEASON)[:, None] + np.zeros_like(rows)
    has_year = (back >= panel.first[None, :]) & (back >= 0)
    same = panel.y[rows, np.clip(back, 0, panel.weeks - 1)]
    return np.where(has_year, same, _recent_mean(panel, t, 8))


class GramCache:
    """Per-origin Gram matrices of every horizon: a ridge fit at any origin is a sum and a solve."""

    def __init__(self, panel: Panel, *, since: int = 0, block: int = 26) -> None:
        """Gram matrices of the origins ``t >= since`` (earlier ones are never fitted on)."""
        self.panel = panel
        f = len(FEATURES)
        weeks = panel.weeks
        self.G = np.zeros((HORIZON, weeks + 1, f, f))  # cumulative over origins
        self.B = np.zeros((HORIZON, weeks + 1, f))
        self.N = np.zeros((HORIZON, weeks + 1))
        for h in range(1, HORIZON + 1):
            g = np.zeros((weeks, f, f))
            b = np.zeros((weeks, f))
            cnt = np.zeros(weeks)
            origins = np.arange(max(since, 0), weeks - h)
            for start in range(0, origins.size, block):
                t = origins[start : start + block]
                X, s, live = features(panel, t, h)
                target = panel.y[:, t + h].T / s
                w = live.astype(np.float64)
                Xw = X * w[..., None]
                g[t] = np.einsum("mnf,mng->mfg", Xw, X)
                b[t] = np.einsum("mnf,mn->mf", Xw, target)
                cnt[t] = w.sum(axis=1)
            self.G[h - 1, 1:] = np.cumsum(g, axis=0)
            self.B[h - 1, 1:] = np.cumsum(b, axis=0)
            self.N[h - 1, 1:] = np.cumsum(cnt)

    def fit(self, origin: int, lam: float = RIDGE_LAMBDA) -> np.ndarray:
        """Coefficients (HORIZON, F) from the targets known at ``origin`` (last WINDOW origins)."""
        f = len(FEATURES)
        beta = np.zeros((HORIZON, f))
        penalty = np.eye(f)
        penalty[0, 0] = 0.0
        for h in range(1, HORIZON + 1):
            hi = max(origin - h + 1, 0)  # origins t ≤ origin - h have their target observed
            lo = max(hi - WINDOW, 0)
            G = self.G[h - 1, hi] - self.G[h - 1, lo]
            B = self.B[h - 1, hi] - self.B[h - 1, lo]
            n = max(self.N[h - 1, hi] - self.N[h - 1, lo], 1.0)
            beta[h - 1] = np.linalg.solve(G + lam * n * penalty + 1e-9 * np.eye(f), B)
        return beta


def predict(panel: Panel, beta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(m, n, HORIZON) ridge means at origins ``t`` (non-negative)."""
    t = np.asarray(t, dtype=np.int64)
    out = np.zeros((t.size, panel.n, HORIZON))
    for h in range(1, HORIZON + 1):
        X, s, _ = features(panel, t, h)
        out[..., h - 1] = np.maximum(s * (X @ beta[h - 1]), 0.0)
    return out


def naive_all(panel: Panel, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.int64)
    return np.stack([seasonal_naive(panel, t, h) for h in range(1, HORIZON + 1)], axis=-1)


def actuals(panel: Panel, t: np.ndarray) -> np.ndarray:
    """(m, n, HORIZON) the observed weeks after each origin (NaN past the data)."""
    t = np.asarray(t, dtype=np.int64)
    out = np.full((t.size, panel.n, HORIZON), np.nan)
    for h in range(1, HORIZON + 1):
        ok = t + h < panel.weeks
        out[ok, :, h - 1] = panel.y[:, t[ok] + h].T
    return out


@dataclass
class Fitted:
    """One method's forecasts at one origin: means and their dispersion (weekly and cumulative)."""

    mu: np.ndarray  # (n, HORIZON)
    inv_k: np.ndarray  # (n, HORIZON) weekly
    cum_inv_k: np.ndarray  # (n, HORIZON) of the sum of weeks 1..H
    weekly_bands: np.ndarray  # (HORIZON, bands) the fitted 1/k
    cum_bands: np.ndarray


def dispersion_tables(mu: np.ndarray, y: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, ...]:
    """(weekly, cumulative) 1/k per horizon per band from past forecasts ``mu`` and actuals."""
    weekly = np.stack([fit_dispersion(mu[..., h][live], y[..., h][live]) for h in range(HORIZON)])
    cmu, cy = np.cumsum(mu, axis=-1), np.cumsum(y, axis=-1)
    cum = np.stack([fit_dispersion(cmu[..., h][live], cy[..., h][live]) for h in range(HORIZON)])
    return weekly, cum


def apply_tables(mu: np.ndarray, weekly: np.ndarray, cum: np.ndarray) -> tuple[np.ndarray, ...]:
    """1/k of each forecast (weekly and cumulative) looked up by its band."""
    hs = np.arange(HORIZON)
    inv_k = weekly[hs, band_of(mu)]
    cum_inv_k = cum[hs, band_of(np.cumsum(mu, axis=-1))]
    return inv_k, cum_inv_k


@dataclass
class History:
    """Every method's forecasts made at each origin in ``origins`` (out of sample).

    The ridge's forecast at origin ``p`` uses coefficients fitted at ``p`` (targets known by
    ``p`` only), so its residuals on later weeks are honest out-of-sample errors: what the
    combination weights and the dispersion are fitted to.
    """

    origins: np.ndarray  # (m,) consecutive week indices
    ridge: np.ndarray  # (m, n, HORIZON)
    naive: np.ndarray
    tsb: np.ndarray
    betas: np.ndarray  # (m, HORIZON, F)

    def rows(self, origins: np.ndarray) -> np.ndarray:
        pos = np.asarray(origins, dtype=np.int64) - int(self.origins[0])
        if pos.size and (pos.min() < 0 or pos.max() >= self.origins.size):
            raise ValueError("origins outside the forecast history")
        return pos


def forecast_history(
    panel: Panel, gram: GramCache, origins: np.ndarray, lam: float = RIDGE_LAMBDA, block: int = 26
) -> History:
    """The ridge (refitted at each origin), the seasonal naive and TSB at consecutive origins."""
    origins = np.asarray(origins, dtype=np.int64)
    m = origins.size
    betas = np.stack([gram.fit(int(p), lam) for p in origins]) if m else np.zeros((0, HORIZON, 1))
    ridge = np.zeros((m, panel.n, HORIZON))
    for h in range(1, HORIZON + 1):
        for start in range(0, m, block):
            t = origins[start : start + block]
            X, s, _ = features(panel, t, h)
            b = betas[start : start + block, h - 1]
            ridge[start : start + block, :, h - 1] = np.maximum(
                s * np.einsum("mnf,mf->mn", X, b), 0.0
            )
    tsb = np.repeat(panel.tsb[:, origins].T[..., None], HORIZON, axis=-1)
    return History(origins, ridge, naive_all(panel, origins), tsb, betas)


def combination_weights(
    ridge: np.ndarray, other: np.ndarray, y: np.ndarray, scale: np.ndarray, live: np.ndarray
) -> np.ndarray:
    """The weight ``w`` of ``w·ridge + (1 − w)·other`` per series and horizon, (n, HORIZON).

    A series with at least :data:`OWN_WEIGHT_ORIGINS` past origins takes the weight (grid of
    0.05, one for all horizons) with the smallest absolute error on its own past forecasts; the
    others take, per horizon, the weight with the smallest mean scaled absolute error over all
    series. ``ridge``, ``other``, ``y``: (m, n, HORIZON); ``scale``, ``live``: (m, n).
    """
    n = ridge.shape[1]
    ok = live[..., None] & np.isfinite(y)
    a = np.where(ok, y, 0.0)
    denom = np.where(scale > 0, scale, 1.0)[..., None]
    grid = COMBINE_GRID
    per_series = np.zeros((grid.size, n))  # absolute error of each weight, per series
    per_horizon = np.zeros((grid.size, HORIZON))  # scaled absolute error, per horizon
    for j, g in enumerate(grid):
        err = np.where(ok, np.abs(g * ridge + (1 - g) * other - a), 0.0)
        per_series[j] = err.sum(axis=(0, 2))
        per_horizon[j] = (err / denom).sum(axis=(0, 1))
    cells = ok.sum(axis=(0, 1))
    pooled = np.where(cells > 0, grid[np.argmin(per_horizon, axis=0)], 1.0)
    own = grid[np.argmin(per_series, axis=0)]  # (n,); ties: the smallest weight
    enough = live.sum(axis=0) >= OWN_WEIGHT_ORIGINS
    return np.where(enough[:, None], own[:, None], pooled[None, :]) * np.ones((n, HORIZON))


def calibrate_dispersion(
    inv_k: np.ndarray, mu: np.ndarray, y: np.ndarray, live: np.ndarray
) -> np.ndarray:
    """Per-series variance ratio (observed squared error / the model's variance) of past
    forecasts, (n,): 1 where the series' expected variance is under :data:`CALIBRATE_MIN_VAR`
    (too little to tell), clipped to :data:`CALIBRATE_RANGE`. ``inv_k``, ``mu``, ``y``:
    (m, n, HORIZON) with the band tables' 1/k; ``live``: (m, n)."""
    ok = live[..., None] & np.isfinite(y) & np.isfinite(mu)
    var = np.where(ok, mu + inv_k * mu**2, 0.0).sum(axis=(0, 2))
    sq = np.where(ok, (np.where(ok, y, 0.0) - mu) ** 2, 0.0).sum(axis=(0, 2))
    ratio = np.where(var >= CALIBRATE_MIN_VAR, sq / np.maximum(var, 1e-12), 1.0)
    return np.clip(ratio, *CALIBRATE_RANGE)


def scaled_inv_k(inv_k: np.ndarray, mu: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """The 1/k that multiplies a forecast's variance ``mu + inv_k·mu²`` by ``ratio`` (n,)
    (never below Poisson's: a count's variance is at least its mean)."""
    r = ratio[:, None]
    m = np.maximum(mu, 1e-9)
    target = r * (m + inv_k * m**2)
    return np.clip((target - m) / m**2, INV_K_FLOOR, INV_K_CEIL)


def fit_level(
    panel: Panel,
    origin: int,
    gram: GramCache,
    lam: float = RIDGE_LAMBDA,
    history: History | None = None,
) -> dict:
    """Forecasts made at ``origin`` for every series, with their dispersion: the ridge, the
    seasonal naive and the served combination of the ridge with TSB.

    The combination's weights and every method's dispersion are fitted on the forecasts made
    at the ``DISPERSION_ORIGINS`` origins before ``origin − HORIZON`` (so that all their 8 weeks
    are observed by ``origin``), each with the ridge as it was fitted then.
    """
    past = np.arange(max(origin - HORIZON - DISPERSION_ORIGINS + 1, 0), origin - HORIZON + 1)
    if history is None:
        history = forecast_history(panel, gram, np.arange(past[0], origin + 1), lam)
    pj, nj = history.rows(past), history.rows(np.array([origin]))[0]
    y_past = actuals(panel, past)
    live = (past[:, None] - panel.first[None, :]) >= 0
    weights = combination_weights(
        history.ridge[pj], history.tsb[pj], y_past, scales(panel, past), live
    )
    out: dict = {"beta": history.betas[nj], "weights": weights}
    combined = weights * history.ridge + (1 - weights) * history.tsb
    methods = (("ridge", history.ridge), ("naive", history.naive), ("combined", combined))
    for name, mu_all in methods:
        mu_past, mu_now = mu_all[pj], mu_all[nj]
        weekly, cum = dispersion_tables(mu_past, y_past, live)
        inv_k, cum_inv_k = apply_tables(mu_now, weekly, cum)
        if name == "combined":  # the served forecast: its intervals are calibrated per series
            past_w, past_c = zip(*(apply_tables(m, weekly, cum) for m in mu_past), strict=True)
            ratio = calibrate_dispersion(np.stack(past_w), mu_past, y_past, live)
            cmu_past, cy_past = np.cumsum(mu_past, axis=-1), np.cumsum(y_past, axis=-1)
            cum_ratio = calibrate_dispersion(np.stack(past_c), cmu_past, cy_past, live)
            inv_k = scaled_inv_k(inv_k, mu_now, ratio)
            cum_inv_k = scaled_inv_k(cum_inv_k, np.cumsum(mu_now, axis=-1), cum_ratio)
            out["variance_ratio"], out["cum_variance_ratio"] = ratio, cum_ratio
        out[name] = Fitted(mu_now, inv_k, cum_inv_k, weekly, cum)
    return out
