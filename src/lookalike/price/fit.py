"""Fitting price models (training side: the server never imports this module).

:func:`fit_price_model` fits every part on the training dresses and chooses its settings by
k-fold cross-validation on those dresses alone (never on a test file):

- ridge ``alpha`` from :data:`ALPHAS` (out-of-fold MAPE of the floored ridge);
- kNN ``k`` × brand-mismatch weight from :data:`KS` × :data:`BRAND_WEIGHTS`;
- the blend weight (:data:`BLENDS`) and a MAPE calibration ``scale`` (:data:`SCALES`): a
  log-space model predicts a median, while MAPE's best answer sits a little lower;
- gradient-boosted trees (:mod:`lookalike.price.boost`, fixed settings), their kNN blend weight
  and calibration scale (the same grids);
- the method: the lowest out-of-fold MAPE among ridge, kNN, the calibrated blend and the
  calibrated boosted trees (``boost``);
- the interval: quantiles (q, 1 − q) of the chosen model's out-of-fold log(actual /
  predicted), q the largest of :data:`INTERVAL_QS` whose interval — floored and rounded to the
  price's step, as served — holds at least 80 % of the out-of-fold rents (listed rents sit on
  the same grid, so the 10th/90th percentiles alone would hold more than 80 % once rounded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.price.boost import fit_boost
from lookalike.price.listings import CATEGORICAL, Listings
from lookalike.price.model import FeatureSpace, PriceModel, bounds, covered, snap

__all__ = [
    "ALPHAS",
    "BLENDS",
    "BRAND_WEIGHTS",
    "KS",
    "SCALES",
    "Selection",
    "fit_parts",
    "fit_price_model",
    "mape",
]

ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0)
KS = (5, 10, 20)
BRAND_WEIGHTS = (2.0, 4.0, 8.0)
BLENDS = tuple(round(0.1 * i, 1) for i in range(11))
SCALES = tuple(round(0.85 + 0.01 * i, 2) for i in range(21))
STEPS = (0.0, 1.0, 5.0, 10.0)  # rounding of a suggestion in dollars, chosen by CV (0: none)
RETAIL_WEIGHT = 3.0  # in the neighbour space, retail price counts 3× a standardised column
REVIEWS_WEIGHT = 0.5
INTERVAL_LEVEL = 0.8
INTERVAL_QS = tuple(round(0.1 + 0.01 * i, 2) for i in range(16))  # 0.10 … 0.25
MIN_TRAIN = 20

Progress = Callable[[str], None]


def mape(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - actual) / actual))


@dataclass
class Selection:
    """What cross-validation chose, and the out-of-fold MAPE of each candidate."""

    alpha: float
    k: int
    brand_weight: float
    blend: float
    scale: float
    method: str
    folds: int
    seed: int
    cv_mape: dict[str, float] = field(default_factory=dict)
    boost_knn: float = 0.0
    boost_scale: float = 1.0
    boost: str = "fitted"  # or why it was not ("LightGBM is not installed")
    step: float = 0.0  # the suggestions' rounding in dollars (0: none), by CV
    step_mape: dict[float, float] = field(default_factory=dict)  # out-of-fold MAPE per step
    interval_q: float = INTERVAL_QS[0]  # the interval's quantiles are q and 1 − q, by CV

    @property
    def interval_rule(self) -> str:
        q = self.interval_q
        return (
            f"{q:.0%} and {1 - q:.0%} quantiles of out-of-fold log(actual/predicted): the "
            f"narrowest holding {INTERVAL_LEVEL:.0%} of out-of-fold rents as served"
        )

    def scale_of(self, method: str) -> float:
        """The calibration scale ``method`` is served with (1.0 for an uncalibrated one)."""
        return {"blend": self.scale, "boost": self.boost_scale}.get(method, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "k": self.k,
            "brand_weight": self.brand_weight,
            "blend": self.blend,
            "scale": self.scale,
            "method": self.method,
            "folds": self.folds,
            "seed": self.seed,
            "boost_knn": self.boost_knn,
            "boost_scale": self.boost_scale,
            "boost": self.boost,
            "cv_mape": {k: round(v, 5) for k, v in self.cv_mape.items()},
            "step": self.step,
            "step_mape": {str(k): round(v, 5) for k, v in self.step_mape.items()},
            "interval_q": self.interval_q,
        }


def _neighbour_weights(space: FeatureSpace, std: np.ndarray) -> np.ndarray:
    """Per-column weights of the standardised matrix in the neighbour space.

    Retail dominates, reviews count half, the fabric shares share one unit between them;
    a length / sleeves / neckline mismatch costs 1 each (one-hot columns are de-standardised);
    brand is not a column here: a brand mismatch is a separate penalty (``brand_weight``²).
    """
    names = space.names
    w = np.zeros(len(names))
    w[0] = RETAIL_WEIGHT
    w[1] = REVIEWS_WEIGHT
    n_fabrics = space.n_numeric - 2
    w[2 : space.n_numeric] = 1.0 / np.sqrt(n_fabrics)
    for j, name in enumerate(names):
        if name.split(":", 1)[0] in CATEGORICAL:
            w[j] = std[j] / np.sqrt(2.0)
    return w


def fit_parts(
    train: Listings,
    *,
    alpha: float = 3.0,
    k: int = 10,
    brand_weight: float = 4.0,
    blend: float = 0.5,
    scale: float = 1.0,
    method: str = "blend",
    min_brand: int = 5,
) -> PriceModel:
    """Fit ridge + neighbours on ``train`` with fixed settings (no selection)."""
    if len(train) < MIN_TRAIN or not train.has_rent:
        raise InvalidInput(
            f"need at least {MIN_TRAIN} priced dresses to fit a price model, got {len(train)}"
            + ("" if train.has_rent else " (some have no rent price)")
        )
    space = FeatureSpace.fit(train, min_brand=min_brand)
    x = space.matrix(train)
    mean = x.mean(0)
    std = x.std(0)
    std[std < 1e-9] = 1.0
    z = (x - mean) / std
    y = np.log(train.rent)
    intercept = float(y.mean())
    gram = z.T @ z + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(gram, z.T @ (y - intercept))
    weights = _neighbour_weights(space, std)
    return PriceModel(
        method=method,
        space=space,
        floor=float(train.rent.min()),
        ratio=float(np.median(train.rent / train.retail)),
        mean=mean,
        std=std,
        coef=coef,
        intercept=intercept,
        k=k,
        brand_weight=brand_weight,
        weights=weights,
        train_z=z * weights,
        train_brand=list(train.brand),
        train_description=list(train.description),
        train_length=list(train.cats["length"]),
        train_retail=train.retail.copy(),
        train_rent=train.rent.copy(),
        blend=blend,
        scale=scale,
    )


def _folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def _interval(
    residual: np.ndarray, raw: np.ndarray, actual: np.ndarray, floor: float, step: float
) -> tuple[float, tuple[float, float]]:
    """q and the quantiles (q, 1 − q) of ``residual`` (log actual / predicted), q the largest
    of :data:`INTERVAL_QS` whose served interval holds :data:`INTERVAL_LEVEL` of ``actual``."""
    price = snap(np.maximum(raw, floor), step, floor)
    for q in sorted(INTERVAL_QS, reverse=True):
        quantiles = (float(np.quantile(residual, q)), float(np.quantile(residual, 1 - q)))
        low, high = bounds(raw, price, quantiles, step, floor)
        if covered(actual, low, high) >= INTERVAL_LEVEL:
            break
    return q, quantiles  # the widest, 10th and 90th percentiles, when none holds enough


def _floored_mape(log_pred: np.ndarray, actual: np.ndarray, floor: float, scale: float) -> float:
    return mape(np.maximum(np.exp(log_pred) * scale, floor), actual)


def fit_price_model(
    train: Listings,
    *,
    folds: int = 5,
    seed: int = 0,
    method: str | None = None,
    boost: bool = True,
    progress: Progress | None = None,
) -> tuple[PriceModel, Selection]:
    """Choose settings by ``folds``-fold CV on ``train``, then fit on all of it.

    ``method``: force one (``ridge``, ``knn``, ``blend``, ``boost``) instead of the CV's choice.
    ``boost=False`` leaves the boosted trees out (they are also left out, with the reason in
    ``Selection.boost``, when LightGBM is not installed).
    """
    say = progress or (lambda _msg: None)
    n = len(train)
    if n < max(MIN_TRAIN, 2 * folds):
        raise InvalidInput(f"need at least {max(MIN_TRAIN, 2 * folds)} priced dresses, got {n}")
    floor = float(train.rent.min())
    y = train.rent
    oof_ridge = {a: np.zeros(n) for a in ALPHAS}
    oof_knn = {(kk, bw): np.zeros(n) for kk in KS for bw in BRAND_WEIGHTS}
    oof_gbm = np.zeros(n)
    boost_note = "fitted" if boost else "left out (boost=False)"
    if boost:
        try:
            import lightgbm  # noqa: F401  (training extra)
        except ImportError:
            boost_note = "left out: LightGBM is not installed (pip install -e '.[build]')"
    parts = _folds(n, folds, seed)
    for i, held in enumerate(parts):
        fit_rows = np.setdiff1d(np.arange(n), held)
        inner, outer = train.take(fit_rows), train.take(held)
        for a in ALPHAS:
            m = fit_parts(inner, alpha=a)
            z = m._z(m.space.matrix(outer))
            oof_ridge[a][held] = m.log_ridge(z)
        for kk in KS:
            for bw in BRAND_WEIGHTS:
                m.k, m.brand_weight = kk, bw
                oof_knn[(kk, bw)][held] = m.log_knn(z, outer)
        if boost_note == "fitted":
            features, trees = fit_boost(inner, seed=seed)
            oof_gbm[held] = trees.predict(features.matrix(outer))
        say(f"cross-validation fold {i + 1}/{folds}")
    alpha = min(ALPHAS, key=lambda a: _floored_mape(oof_ridge[a], y, floor, 1.0))
    k, bw = min(oof_knn, key=lambda key: _floored_mape(oof_knn[key], y, floor, 1.0))
    ridge, knn = oof_ridge[alpha], oof_knn[(k, bw)]
    blend, scale = min(
        ((w, c) for w in BLENDS for c in SCALES),
        key=lambda wc: _floored_mape((1 - wc[0]) * ridge + wc[0] * knn, y, floor, wc[1]),
    )
    oof_blend = (1 - blend) * ridge + blend * knn
    oofs = {"ridge": ridge, "knn": knn, "blend": oof_blend}
    cv = {
        "ridge": _floored_mape(ridge, y, floor, 1.0),
        "knn": _floored_mape(knn, y, floor, 1.0),
        "blend": _floored_mape(oof_blend, y, floor, scale),
    }
    boost_knn, boost_scale = 0.0, 1.0
    if boost_note == "fitted":
        boost_knn, boost_scale = min(
            ((w, c) for w in BLENDS for c in SCALES),
            key=lambda wc: _floored_mape((1 - wc[0]) * oof_gbm + wc[0] * knn, y, floor, wc[1]),
        )
        oofs["gbm"] = oof_gbm
        oofs["boost"] = (1 - boost_knn) * oof_gbm + boost_knn * knn
        cv["gbm"] = _floored_mape(oof_gbm, y, floor, 1.0)
        cv["boost"] = _floored_mape(oofs["boost"], y, floor, boost_scale)
    candidates = [name for name in cv if name != "gbm"]  # gbm is boost with no kNN share
    chosen = method or min(candidates, key=lambda name: cv[name])
    if chosen in ("gbm", "boost") and boost_note != "fitted":
        raise InvalidInput(f"price method {chosen} needs the boosted trees, {boost_note}")
    if chosen not in cv:
        raise InvalidInput(f"unknown price method {chosen!r} (known: {', '.join(cv)})")
    selection = Selection(
        alpha, k, bw, blend, scale, chosen, folds, seed, cv, boost_knn, boost_scale, boost_note
    )
    chosen_scale = selection.scale_of(chosen)
    oof_price = np.maximum(np.exp(oofs[chosen]) * chosen_scale, floor)
    selection.step_mape = {s: mape(snap(oof_price, s, floor), y) for s in STEPS}
    selection.step = min(STEPS, key=lambda s: (selection.step_mape[s], s))
    residual = np.log(y) - (oofs[chosen] + np.log(chosen_scale))
    model = fit_parts(
        train, alpha=alpha, k=k, brand_weight=bw, blend=blend, scale=chosen_scale, method="ridge"
    )
    if boost_note == "fitted":
        say("fitting the boosted trees on every training dress")
        model.boost_features, model.trees = fit_boost(train, seed=seed)
        model.boost_knn = boost_knn
    model.method = chosen
    model.step = selection.step
    oof_raw = np.exp(oofs[chosen]) * chosen_scale
    selection.interval_q, model.interval = _interval(residual, oof_raw, y, floor, selection.step)
    model.interval_level = INTERVAL_LEVEL
    rule_residual = np.log(y) - np.log(model.ratio * train.retail)
    _, model.rule_interval = _interval(rule_residual, model.ratio * train.retail, y, floor, 0.0)
    model.facts = {"selection": selection.to_dict(), "train_rows": n}
    say(f"chose {chosen} (CV MAPE {cv[chosen]:.4f})")
    return model, selection
