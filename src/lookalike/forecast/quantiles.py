"""Prediction intervals for counts: a negative binomial around each point forecast.

Weekly review counts are small, overdispersed integers, so an interval is the quantiles of a
negative binomial with the forecast's mean ``mu`` and a size ``k`` (variance ``mu + mu²/k``).
``k`` is estimated from the forecaster's own residuals, per horizon and per band of ``mu``
(:func:`fit_dispersion`), so an interval widens with the model's real errors, not only with
Poisson noise. Quantiles are exact for ``mu`` up to :data:`EXACT_UP_TO` (summed pmf) and a
normal approximation above (8-week totals of the largest categories). numpy only: no scipy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BANDS",
    "EXACT_UP_TO",
    "band_of",
    "fit_dispersion",
    "nb_cdf",
    "nb_quantile",
    "pit_share",
]

EXACT_UP_TO = 3000.0
# bands of the forecast mean, per week; the dispersion is estimated per band
BANDS = np.array([0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, np.inf])
MIN_ROWS = 200
INV_K_RANGE = (1e-4, 50.0)


def band_of(mu: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(BANDS, mu, side="right") - 1, 0, BANDS.size - 2)


def fit_dispersion(mu: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1/k per band of ``mu`` by moments: ``E[(y - mu)²] - mu ≈ mu²/k`` (least squares).

    A band with fewer than ``MIN_ROWS`` residuals takes the pooled estimate.
    """
    mu = np.asarray(mu, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(mu) & np.isfinite(y)
    mu, y = np.maximum(mu[ok], 1e-6), y[ok]
    excess = (y - mu) ** 2 - mu

    def one(sel: np.ndarray) -> float:
        m2 = mu[sel] ** 2
        denom = float((m2 * m2).sum())
        if denom <= 0:
            return INV_K_RANGE[0]
        return float(np.clip((excess[sel] * m2).sum() / denom, *INV_K_RANGE))

    pooled = one(np.ones(mu.size, dtype=bool)) if mu.size else 1.0
    bands = band_of(mu)
    out = np.full(BANDS.size - 1, pooled)
    for b in range(out.size):
        sel = bands == b
        if sel.sum() >= MIN_ROWS:
            out[b] = one(sel)
    return out


def nb_quantile(mu: np.ndarray, inv_k: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile (smallest count whose cdf ≥ q) of NB(mean ``mu``, size ``1/inv_k``)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 0.0)
    inv_k = np.broadcast_to(np.asarray(inv_k, dtype=np.float64), mu.shape)
    out = np.zeros(mu.shape)
    big = mu > EXACT_UP_TO
    if big.any():
        sd = np.sqrt(mu[big] + inv_k[big] * mu[big] ** 2)
        z = _normal_ppf(q)
        out[big] = np.maximum(np.ceil(mu[big] + z * sd - 0.5), 0.0)
    small = ~big & (mu > 0)
    if small.any():
        out[small] = _nb_quantile_exact(mu[small], inv_k[small], q)
    return out


def _nb_quantile_exact(mu: np.ndarray, inv_k: np.ndarray, q: float) -> np.ndarray:
    # the pmf by its recursion, in logs (pmf(0) of a large mean underflows, its tail does not);
    # only the rows whose cdf has not reached q yet are carried on
    k = 1.0 / np.maximum(inv_k, 1e-12)
    log_ratio = np.log(mu / (k + mu))
    log_pmf = k * np.log(k / (k + mu))
    cdf = np.exp(log_pmf)
    out = np.zeros(mu.shape)
    rows = np.flatnonzero(cdf < q)
    k, log_ratio, log_pmf, cdf = k[rows], log_ratio[rows], log_pmf[rows], cdf[rows]
    limit = int(np.max(mu + 40.0 * np.sqrt(mu + inv_k * mu**2))) + 50
    step = 0
    while rows.size and step < limit:
        log_pmf = log_pmf + np.log((step + k) / (step + 1)) + log_ratio
        step += 1
        cdf = cdf + np.exp(log_pmf)
        out[rows] = step
        keep = cdf < q
        if not keep.all():
            rows, k, log_ratio, log_pmf, cdf = (a[keep] for a in (rows, k, log_ratio, log_pmf, cdf))
    return out


def nb_cdf(y: np.ndarray, mu: np.ndarray, inv_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(Y ≤ y), P(Y ≤ y − 1)) of NB(mean ``mu``, size ``1/inv_k``) at integer counts ``y``.

    Exact (the pmf's recursion summed up to ``y``) for ``mu`` up to :data:`EXACT_UP_TO`; a
    normal with a continuity correction above. ``mu`` = 0 is a point mass at 0.
    """
    y = np.rint(np.asarray(y, dtype=np.float64))
    mu = np.broadcast_to(np.maximum(np.asarray(mu, dtype=np.float64), 0.0), y.shape)
    inv_k = np.broadcast_to(np.asarray(inv_k, dtype=np.float64), y.shape)
    upper = np.where(y >= 0, 1.0, 0.0)  # mu = 0: all the mass at 0
    lower = np.where(y >= 1, 1.0, 0.0)
    big = (mu > EXACT_UP_TO) & (y >= 0)
    if big.any():
        sd = np.sqrt(mu[big] + inv_k[big] * mu[big] ** 2)
        upper[big] = _normal_cdf((y[big] + 0.5 - mu[big]) / sd)
        lower[big] = _normal_cdf((y[big] - 0.5 - mu[big]) / sd)
    small = ~big & (mu > 0) & (y >= 0)
    if small.any():
        up, low = _nb_cdf_exact(y[small], mu[small], inv_k[small])
        upper[small], lower[small] = up, low
    return upper, lower


def _nb_cdf_exact(y: np.ndarray, mu: np.ndarray, inv_k: np.ndarray) -> tuple[np.ndarray, ...]:
    k = 1.0 / np.maximum(inv_k, 1e-12)
    log_ratio = np.log(mu / (k + mu))
    log_pmf = k * np.log(k / (k + mu))
    cdf = np.exp(log_pmf)
    pmf = cdf.copy()
    rows = np.flatnonzero(y > 0)
    step = 0
    while rows.size:
        lp = log_pmf[rows] + np.log((step + k[rows]) / (step + 1)) + log_ratio[rows]
        log_pmf[rows] = lp
        pmf[rows] = np.exp(lp)
        cdf[rows] += pmf[rows]
        step += 1
        rows = rows[y[rows] > step]
    cdf = np.minimum(cdf, 1.0)
    return cdf, np.maximum(cdf - pmf, 0.0)


def pit_share(upper_cdf: np.ndarray, lower_cdf: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Chance that the randomised PIT of each count falls in ``[lo, hi]``.

    A count's randomised PIT is uniform on ``[F(y − 1), F(y)]``; for a calibrated forecast it is
    uniform on [0, 1], so its mean share inside ``[lo, hi]`` is ``hi − lo`` even for counts
    of 0 and 1, where the plain coverage of an integer interval cannot be.
    """
    width = np.maximum(upper_cdf - lower_cdf, 1e-12)
    inside = np.clip(np.minimum(upper_cdf, hi) - np.maximum(lower_cdf, lo), 0.0, None)
    return np.minimum(inside / width, 1.0)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(np.asarray(z) / math.sqrt(2)))


def _normal_ppf(q: float) -> float:
    """Inverse standard normal cdf (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-39.6968302866538, 220.946098424521, -275.928510446969, 138.357751867269,
         -30.6647980661472, 2.50662827745924)  # fmt: skip
    b = (-54.4760987982241, 161.585836858041, -155.698979859887, 66.8013118877197,
         -13.2806815528857)  # fmt: skip
    c = (-0.00778489400243029, -0.322396458041136, -2.40075827716184, -2.54973253934373,
         4.37466414146497, 2.93816398269878)  # fmt: skip
    d = (0.00778469570904146, 0.32246712907004, 2.445134137143, 3.75440866190742)
    lo = 0.02425
    if q < lo:
        t = math.sqrt(-2 * math.log(q))
        return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
            (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1
        )
    if q > 1 - lo:
        return -_normal_ppf(1 - q)
    r = q - 0.5
    s = r * r
    return (
        (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5])
        * r
        / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1)
    )
