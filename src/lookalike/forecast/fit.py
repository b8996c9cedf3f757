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

Intervals: a negative binomial around each mean with a dispersion fitted to the same model's
residuals over the last 52 origins before ``t`` (:mod:`lookalike.forecast.quantiles`), per
horizon, and for the sum of the first ``H`` weeks (what ``lookalike forecast buy`` needs).
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
    "Panel",
    "fit_level",
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


def fit_level(panel: Panel, origin: int, gram: GramCache, lam: float = RIDGE_LAMBDA) -> dict:
    """Ridge and seasonal-naive forecasts made at ``origin`` for every series, with dispersion."""
    beta = gram.fit(origin, lam)
    past = np.arange(max(origin - HORIZON - DISPERSION_ORIGINS + 1, 0), origin - HORIZON + 1)
    y_past = actuals(panel, past)
    live = (past[:, None] - panel.first[None, :]) >= 0
    out: dict = {"beta": beta}
    now = np.array([origin])
    for name, mu_past, mu_now in (
        ("ridge", predict(panel, beta, past), predict(panel, beta, now)[0]),
        ("naive", naive_all(panel, past), naive_all(panel, now)[0]),
    ):
        weekly, cum = dispersion_tables(mu_past, y_past, live)
        inv_k, cum_inv_k = apply_tables(mu_now, weekly, cum)
        out[name] = Fitted(mu_now, inv_k, cum_inv_k, weekly, cum)
    return out
