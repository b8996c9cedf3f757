"""Fit prediction: P(small / fit / large) for a shopper, an item and a size (numpy only).

The model is multinomial logistic regression on *shopper-minus-item* features, so each weight
reads as "how much a difference pushes towards small or large":

==================  ==========================================================================
size − item         the size minus the mean size of the item's renters who said "fit"
size − usual        the size minus the shopper's usual size (her other rentals' mean)
size − body         the size minus the size a body like hers fits on average (a ridge fit of
                    size on height, weight, bust over every "fit" review)
height/weight/      her measurement minus the mean of the item's "fit" renters
bust/cup − item
item lean           log(P(small)/P(fit)), log(P(large)/P(fit)) of the item, smoothed to the
                    overall prior with ``PRIOR_STRENGTH`` pseudo-reviews
reviews             log(1 + the item's reviews)
missing flags       one per difference above (a difference that is unknown is 0 + its flag)
body type,          one-hot (body types; the ``TOP_CATEGORIES`` most reviewed categories and
category            "other")
==================  ==========================================================================

Training rows use leave-one-out item and user statistics (the row's own review is taken out),
so the model never sees its own label through a feature. Class imbalance (about 74 % "fit"):
the loss weighs each class by the inverse of its frequency (``embed.heads.fit_softmax``), so
the *predicted label* (argmax of the weighted model) does not collapse to "fit"; the *served
probabilities* add the log prior back to the logits (undoing the weighting), so they stay
calibrated to how often each label really happens.

The baseline is the item's majority label (its smoothed label shares as scores for AUC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalog.rentals import FITS, Rentals
from lookalike.core.errors import IntegrityError, InvalidInput
from lookalike.recs.likeme import CUPS, SCALES

__all__ = [
    "CLASSES",
    "FitModel",
    "FitQuery",
    "ItemStats",
    "auc",
    "fit_figures",
    "train_fit_model",
    "item_stats",
    "macro_f1",
    "query_from_rentals",
    "usual_sizes",
]

CLASSES = FITS  # ("small", "fit", "large"): the order of every probability array here
PRIOR_STRENGTH = 10.0
TOP_CATEGORIES = 12
BODY_TYPES = ("apple", "athletic", "full bust", "hourglass", "pear", "petite", "straight & narrow")
DIFFS = ("size-item", "size-usual", "size-body", "height", "weight", "bust", "cup")
MODEL_FILE = "fit_model.json"
ARRAYS_FILE = "fit_arrays.npz"


def cup_indices(letters: np.ndarray) -> np.ndarray:
    return np.array([CUPS.get(str(s), np.nan) for s in letters], dtype=np.float64)


@dataclass
class ItemStats:
    """What the model knows of each item from the training reviews (row ``i`` = ``ids[i]``)."""

    ids: np.ndarray  # str
    counts: np.ndarray  # (n, 3) label counts in CLASSES order
    fit_n: np.ndarray  # reviews that said "fit" with each measurement known, (n, 5)
    fit_sum: np.ndarray  # their sums (size, height, weight, bust, cup), (n, 5)
    category: np.ndarray  # str, the item's most common category
    sizes: np.ndarray  # all sizes seen, concatenated
    size_start: np.ndarray  # item i's sizes are sizes[size_start[i]:size_start[i+1]]

    def index(self) -> dict[str, int]:
        return {str(v): i for i, v in enumerate(self.ids)}

    def sizes_of(self, i: int) -> list[int]:
        return [int(s) for s in self.sizes[self.size_start[i] : self.size_start[i + 1]]]


def _measures(r: Rentals) -> np.ndarray:
    size = np.where(r.size >= 0, r.size, np.nan).astype(np.float64)
    return np.stack(
        [size, r.height_in, r.weight_lbs, r.bust_size_num, cup_indices(r.bust_size_letter)],
        axis=1,
    )


def item_stats(r: Rentals) -> ItemStats:
    """Per-item label counts, "fit" renters' measurement sums and sizes seen."""
    ids, inverse = np.unique(r.item_id.astype(str), return_inverse=True)
    n = len(ids)
    y = np.array([CLASSES.index(f) for f in r.fit])
    counts = np.zeros((n, 3))
    np.add.at(counts, (inverse, y), 1)
    m = _measures(r)
    is_fit = (y == 1)[:, None] & ~np.isnan(m)
    fit_n = np.zeros((n, 5))
    fit_sum = np.zeros((n, 5))
    np.add.at(fit_n, inverse, is_fit.astype(np.float64))
    np.add.at(fit_sum, inverse, np.where(is_fit, m, 0.0))
    category = np.empty(n, dtype=object)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(n + 1))
    sizes: list[int] = []
    starts = [0]
    for i in range(n):
        rows = order[bounds[i] : bounds[i + 1]]
        cats, cat_counts = np.unique(r.category[rows], return_counts=True)
        category[i] = str(cats[np.argmax(cat_counts)])
        seen = sorted({int(s) for s in r.size[rows] if s >= 0})
        sizes += seen
        starts.append(len(sizes))
    return ItemStats(
        ids=ids,
        counts=counts,
        fit_n=fit_n,
        fit_sum=fit_sum,
        category=category,
        sizes=np.array(sizes, dtype=np.int64),
        size_start=np.array(starts, dtype=np.int64),
    )


def usual_sizes(r: Rentals) -> dict[str, tuple[float, int]]:
    """user id → (sum of her sizes, reviews with a size) over ``r``."""
    out: dict[str, tuple[float, int]] = {}
    for user, size in zip(r.user_id.astype(str), r.size, strict=True):
        if size < 0:
            continue
        s, k = out.get(user, (0.0, 0))
        out[user] = (s + float(size), k + 1)
    return out


@dataclass
class FitQuery:
    """Shoppers × (item, size), columnar. ``item`` is the row in :class:`ItemStats` (-1: not
    known); NaN / '' where unknown. ``loo`` (training only): the row's own label, taken out of
    its item's statistics; -1 otherwise."""

    item: np.ndarray
    size: np.ndarray
    height: np.ndarray
    weight: np.ndarray
    bust: np.ndarray
    cup: np.ndarray
    body_type: np.ndarray
    usual_size: np.ndarray
    loo: np.ndarray

    def __len__(self) -> int:
        return int(self.item.shape[0])


def query_from_rentals(
    r: Rentals,
    stats: ItemStats,
    users: dict[str, tuple[float, int]],
    *,
    leave_one_out: bool,
) -> FitQuery:
    """The query rows of reviews ``r`` (the shopper's usual size from ``users``; for training
    rows, ``leave_one_out`` takes each row's own review out of its item's and user's figures)."""
    index = stats.index()
    item = np.array([index.get(str(v), -1) for v in r.item_id], dtype=np.int64)
    size = np.where(r.size >= 0, r.size, np.nan).astype(np.float64)
    usual = np.full(len(r), np.nan)
    for i, user in enumerate(r.user_id.astype(str)):
        s, k = users.get(user, (0.0, 0))
        if leave_one_out and not np.isnan(size[i]):
            s, k = s - size[i], k - 1
        if k > 0:
            usual[i] = s / k
    loo = np.array([CLASSES.index(f) for f in r.fit]) if leave_one_out else np.full(len(r), -1)
    return FitQuery(
        item=item,
        size=size,
        height=r.height_in.astype(np.float64),
        weight=r.weight_lbs.astype(np.float64),
        bust=r.bust_size_num.astype(np.float64),
        cup=cup_indices(r.bust_size_letter),
        body_type=r.body_type.astype(object),
        usual_size=usual,
        loo=loo,
    )


def _ridge_size(x: np.ndarray, size: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Coefficients (intercept, height, weight, bust) of size ~ body over complete rows."""
    ok = ~np.isnan(x).any(axis=1) & ~np.isnan(size)
    a = np.column_stack([np.ones(ok.sum()), x[ok]])
    reg = l2 * np.eye(a.shape[1])
    reg[0, 0] = 0.0
    return np.linalg.solve(a.T @ a + reg, a.T @ size[ok])


class FitModel:
    """The fitted model: item statistics, the body→size ridge, the feature scaling, weights."""

    def __init__(
        self,
        stats: ItemStats,
        prior: np.ndarray,
        size_coef: np.ndarray,
        categories: tuple[str, ...],
        w: np.ndarray,
        b: np.ndarray,
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.stats = stats
        self.prior = np.asarray(prior, np.float64)
        self.size_coef = np.asarray(size_coef, np.float64)
        self.categories = tuple(categories)
        self.w = np.asarray(w, np.float64)
        self.b = np.asarray(b, np.float64)
        self.meta = dict(meta or {})
        # Added to log P(small / fit / large) before the argmax: the macro-F1 decision.
        self.offsets = np.zeros(3)
        self._index = stats.index()
        self._cat_index = {c: i for i, c in enumerate(self.categories)}
        other = len(self.categories)
        # each item's category column; the extra last entry is an unknown item's (index -1)
        self._item_cat = np.array(
            [self._cat_index.get(str(c), other) for c in stats.category] + [other], dtype=np.int64
        )

    # ---- features ---------------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        return (
            [f"{d} diff" for d in DIFFS]
            + ["lean small", "lean large", "log reviews"]
            + [f"{d} missing" for d in DIFFS]
            + [f"body {b}" for b in BODY_TYPES]
            + [f"category {c}" for c in self.categories]
            + ["category other"]
        )

    def item_index(self, item_id: str) -> int:
        return self._index.get(str(item_id), -1)

    def item_lean(self, item: np.ndarray, loo: np.ndarray | None = None) -> np.ndarray:
        """(n, 3) smoothed label shares of each item (the prior for an unknown item)."""
        known = item >= 0
        counts = np.zeros((len(item), 3))
        counts[known] = self.stats.counts[item[known]]
        if loo is not None:
            own = known & (loo >= 0)
            counts[np.flatnonzero(own), loo[own]] -= 1
        shares = counts + PRIOR_STRENGTH * self.prior
        return shares / shares.sum(axis=1, keepdims=True)

    def features(self, q: FitQuery) -> np.ndarray:
        n = len(q)
        known = q.item >= 0
        fit_n = np.zeros((n, 5))
        fit_sum = np.zeros((n, 5))
        fit_n[known] = self.stats.fit_n[q.item[known]]
        fit_sum[known] = self.stats.fit_sum[q.item[known]]
        own_fit = known & (q.loo == 1)
        if own_fit.any():  # leave the row's own "fit" review out of its item's means
            mine = np.stack([q.size, q.height, q.weight, q.bust, q.cup], axis=1)[own_fit]
            has = ~np.isnan(mine)
            fit_n[own_fit] -= has
            fit_sum[own_fit] -= np.where(has, mine, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(fit_n > 0, fit_sum / np.maximum(fit_n, 1), np.nan)
        body = np.column_stack([q.height, q.weight, q.bust])
        body_size = self.size_coef[0] + body @ self.size_coef[1:]
        diffs = np.column_stack(
            [
                (q.size - mean[:, 0]) / SCALES["size"],
                (q.size - q.usual_size) / SCALES["size"],
                (q.size - body_size) / SCALES["size"],
                (q.height - mean[:, 1]) / SCALES["height"],
                (q.weight - mean[:, 2]) / SCALES["weight"],
                (q.bust - mean[:, 3]) / SCALES["bust"],
                (q.cup - mean[:, 4]) / SCALES["cup"],
            ]
        )
        missing = np.isnan(diffs)
        diffs = np.clip(np.where(missing, 0.0, diffs), -5.0, 5.0)
        lean = self.item_lean(q.item, q.loo)
        reviews = np.zeros(n)
        reviews[known] = self.stats.counts[q.item[known]].sum(axis=1)
        reviews = np.maximum(reviews - (known & (q.loo >= 0)), 0)
        bodies = np.zeros((n, len(BODY_TYPES)))
        for j, bt in enumerate(BODY_TYPES):
            bodies[:, j] = q.body_type == bt
        other = len(self.categories)
        cats = np.zeros((n, other + 1))
        cats[np.arange(n), self._item_cat[q.item]] = 1.0
        return np.column_stack(
            [
                diffs,
                np.log(lean[:, [0, 2]] / lean[:, [1]]),
                np.log1p(reviews),
                missing.astype(np.float64),
                bodies,
                cats,
            ]
        )

    # ---- predictions ------------------------------------------------------------------------

    def logits(self, q: FitQuery) -> np.ndarray:
        """Logits of the calibrated probabilities, CLASSES order."""
        return self.features(q) @ self.w + self.b

    def predict_proba(self, q: FitQuery) -> np.ndarray:
        """Calibrated P(small, fit, large) (rows sum to 1)."""
        z = self.logits(q)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """The predicted label index per row: argmax of log P + the tuned offsets."""
        with np.errstate(divide="ignore"):
            return np.argmax(np.log(proba) + self.offsets, axis=1)

    def predict(self, q: FitQuery) -> np.ndarray:
        return self.decide(self.predict_proba(q))

    # ---- files ------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        s = self.stats
        np.savez(
            folder / ARRAYS_FILE,
            ids=s.ids.astype(str),
            counts=s.counts,
            fit_n=s.fit_n,
            fit_sum=s.fit_sum,
            category=s.category.astype(str),
            sizes=s.sizes,
            size_start=s.size_start,
            w=self.w,
            b=self.b,
            offsets=self.offsets,
        )
        doc = {
            "classes": list(CLASSES),
            "prior": self.prior.tolist(),
            "size_coef": self.size_coef.tolist(),
            "categories": list(self.categories),
            "features": self.feature_names,
            "prior_strength": PRIOR_STRENGTH,
            **self.meta,
        }
        (folder / MODEL_FILE).write_text(json.dumps(doc, indent=2))

    @staticmethod
    def read_prior(folder: Path) -> np.ndarray:
        """The label prior alone (``fit_model.json``): the last fallback needs nothing else."""
        try:
            prior = np.asarray(json.loads((folder / MODEL_FILE).read_text())["prior"], float)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{folder / MODEL_FILE} is unreadable: {exc}") from exc
        if prior.shape != (3,) or not np.all(np.isfinite(prior)) or abs(prior.sum() - 1) > 1e-6:
            raise IntegrityError(f"{folder / MODEL_FILE}: the prior is not 3 shares summing to 1")
        return prior

    @staticmethod
    def read_stats(folder: Path) -> ItemStats:
        try:
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
                ids, category = z["ids"], z["category"]
                stats = ItemStats(
                    ids=ids.astype(object),
                    counts=z["counts"].astype(np.float64),
                    fit_n=z["fit_n"].astype(np.float64),
                    fit_sum=z["fit_sum"].astype(np.float64),
                    category=category.astype(object),
                    sizes=z["sizes"].astype(np.int64),
                    size_start=z["size_start"].astype(np.int64),
                )
        except (OSError, ValueError, KeyError) as exc:
            raise IntegrityError(f"{folder / ARRAYS_FILE} is unreadable: {exc}") from exc
        n = len(stats.ids)
        if stats.counts.shape != (n, 3) or stats.size_start.shape != (n + 1,):
            raise IntegrityError(f"{folder / ARRAYS_FILE}: item arrays of different lengths")
        return stats

    @classmethod
    def load(cls, folder: Path) -> FitModel:
        doc = json.loads((folder / MODEL_FILE).read_text())
        stats = cls.read_stats(folder)
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
            w, b, offsets = z["w"], z["b"], z["offsets"]
        model = cls(
            stats,
            cls.read_prior(folder),
            np.asarray(doc["size_coef"]),
            tuple(doc["categories"]),
            w,
            b,
        )
        width = len(model.feature_names)
        if w.shape != (width, 3) or b.shape != (3,):
            raise IntegrityError(f"fit weights are {w.shape}, the features need ({width}, 3)")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise IntegrityError("fit weights have NaN or inf")
        if offsets.shape != (3,) or not np.all(np.isfinite(offsets)):
            raise IntegrityError("fit decision offsets are not 3 finite numbers")
        model.offsets = offsets.astype(np.float64)
        return model


def _newton_softmax(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, *, l2: float, steps: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression by Newton's method, "fit" as the reference
    class (its logit is 0): (w (d, 3), b (3,)). A few dozen full-batch steps converge where
    gradient descent (``embed.heads.fit_softmax``) needs thousands on 150k rows."""
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd < 1e-9] = 1.0
    xs = np.column_stack([(x - mu) / sd, np.ones(len(x))])
    n, d = xs.shape
    onehot = np.eye(3)[y][:, [0, 2]]
    theta = np.zeros((d, 2))
    reg = np.full(d, l2 * n)
    reg[-1] = 0.0  # no penalty on the bias
    total = weight.sum()

    def loss(t: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.column_stack([xs @ t[:, 0], np.zeros(n), xs @ t[:, 1]])
        zmax = z.max(axis=1, keepdims=True)
        logp = z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
        nll = -float(np.sum(weight * logp[np.arange(n), y]))
        return (nll + 0.5 * float(np.sum(reg[:, None] * t**2))) / total, np.exp(logp)

    value, p = loss(theta)
    for _ in range(steps):
        pk = p[:, [0, 2]]
        grad = (xs.T @ (weight[:, None] * (pk - onehot)) + reg[:, None] * theta).ravel("F")
        hess = np.empty((2 * d, 2 * d))
        for a in range(2):
            for c in range(2):
                s = weight * pk[:, a] * ((a == c) - pk[:, c])
                hess[a * d : (a + 1) * d, c * d : (c + 1) * d] = (xs * s[:, None]).T @ xs
        hess += np.diag(np.concatenate([reg, reg]))
        step = np.linalg.solve(hess + 1e-9 * np.eye(2 * d), grad).reshape((d, 2), order="F")
        scale = 1.0
        while scale > 1e-4:  # backtracking: never a step that makes the loss worse
            new_value, new_p = loss(theta - scale * step)
            if new_value <= value:
                break
            scale /= 2
        else:
            break
        theta, converged = theta - scale * step, value - new_value < 1e-9
        value, p = new_value, new_p
        if converged:
            break
    w = np.zeros((d - 1, 3))
    w[:, [0, 2]] = theta[:-1] / sd[:, None]
    b = np.zeros(3)
    b[[0, 2]] = theta[-1] - mu @ w[:, [0, 2]]
    return w, b


def _tune_offsets(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Offsets added to log P(small) and log P(large) that maximise macro-F1 on ``y``."""
    grid = np.linspace(0.0, 3.0, 31)
    best, best_f1 = np.zeros(3), -1.0
    for a in grid:
        for c in grid:
            off = np.array([a, 0.0, c])
            f1, _ = macro_f1(y, np.argmax(logp + off, axis=1))
            if f1 > best_f1:
                best, best_f1 = off, f1
    return best


def train_fit_model(
    train: Rentals, *, l2: float = 1e-4, meta: dict[str, Any] | None = None
) -> FitModel:
    """Fit on ``train``: leave-one-out features, class-weighted softmax, then the decision
    offsets that maximise macro-F1 on the (leave-one-out) training rows."""
    labelled = np.isin(train.fit, CLASSES)
    train = train.take(labelled)
    if len(train) < 30:
        raise InvalidInput(f"a fit model needs at least 30 labelled reviews, got {len(train)}")
    stats = item_stats(train)
    y = np.array([CLASSES.index(f) for f in train.fit])
    counts = np.bincount(y, minlength=3).astype(np.float64)
    if np.any(counts == 0):
        raise InvalidInput("a fit model needs reviews of every label (small, fit and large)")
    prior = (counts + 1.0) / (len(y) + 3.0)
    m = _measures(train)
    fit_rows = y == 1
    size_coef = _ridge_size(m[fit_rows][:, 1:4], m[fit_rows][:, 0])
    cats, cat_counts = np.unique(train.category, return_counts=True)
    top = tuple(str(c) for c in cats[np.argsort(-cat_counts, kind="stable")][:TOP_CATEGORIES])
    shell = FitModel(stats, prior, size_coef, top, np.zeros((1, 3)), np.zeros(3))
    q = query_from_rentals(train, stats, usual_sizes(train), leave_one_out=True)
    x = shell.features(q)
    class_weight = len(y) / (3.0 * counts)  # inverse frequency: each class weighs the same
    w, b = _newton_softmax(x, y, class_weight[y], l2=l2)
    # The served probabilities are calibrated (the weighting undone); the decision adds
    # offsets tuned for macro-F1 on the training rows.
    model = FitModel(stats, prior, size_coef, top, w, b - np.log(class_weight), meta=meta)
    logp = np.log(model.predict_proba(q))
    model.offsets = _tune_offsets(logp, y)
    return model


# ---- metrics --------------------------------------------------------------------------------


def macro_f1(y: np.ndarray, pred: np.ndarray) -> tuple[float, list[float]]:
    """(macro-F1, F1 per class in CLASSES order)."""
    per = []
    for c in range(3):
        tp = float(np.sum((pred == c) & (y == c)))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = float(np.sum((pred != c) & (y == c)))
        per.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(per)), per


def auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties count half)."""
    pos = positive.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks of ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_figures(y: np.ndarray, pred: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """macro-F1, F1 and AUC per class (one class against the rest), accuracy, rows."""
    f1, per = macro_f1(y, pred)
    aucs = [auc(y == c, proba[:, c]) for c in range(3)]
    return {
        "macro_f1": round(f1, 4),
        "f1": {c: round(v, 4) for c, v in zip(CLASSES, per, strict=True)},
        "auc": {c: round(v, 4) for c, v in zip(CLASSES, aucs, strict=True)},
        "mean_auc": round(float(np.nanmean(aucs)), 4),
        "accuracy": round(float(np.mean(pred == y)), 4),
        "predicted_share": {c: round(float(np.mean(pred == i)), 4) for i, c in enumerate(CLASSES)},
        "rows": len(y),
    }
