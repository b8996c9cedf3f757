"""A fitted price model: features, the predictor, the floor, the interval and the neighbours.

Serving needs only numpy. A model is a folder of two files (written by :meth:`PriceModel.save`,
read by :meth:`PriceModel.load`; no pickle):

- ``model.json``: the method, the floor, the rule-of-thumb ratio, the feature vocabulary
  (brands kept, categories), blend weight, scale and interval quantiles;
- ``arrays.npz``: the ridge coefficients, the standardisation and the priced training dresses
  the neighbours come from (their feature rows, brand, retail and rental price), and the boosted
  trees as flat arrays when the model has them (``boost_*``).

Methods (``method``): ``rule`` (median rent/retail × retail), ``ridge`` (ridge regression on log
rent over :class:`FeatureSpace`), ``knn`` (log retail + the weighted mean log rent/retail of the
k nearest priced dresses, a brand mismatch costing ``brand_weight``²), ``blend``
(``(1 - w)·ridge + w·knn`` in log space), ``gbm`` (gradient-boosted trees on log rent,
:mod:`lookalike.price.boost`), ``boost`` (``(1 - v)·gbm + v·knn``). Every prediction is
multiplied by ``scale`` and then floored at ``floor`` (the lowest rental price seen in training).
A model's suggestion (not the rule of thumb) is then rounded to ``step`` dollars when its training
chose one (:func:`snap`; 0: not rounded) and floored again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import IntegrityError, InvalidInput
from lookalike.price.boost import BoostFeatures, Trees
from lookalike.price.listings import CATEGORICAL, FABRICS, Listings

__all__ = [
    "ARRAYS_FILE",
    "METHODS",
    "MODEL_FILE",
    "FeatureSpace",
    "Neighbour",
    "PriceModel",
    "Suggestions",
    "snap",
]

MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
METHODS = ("rule", "ridge", "knn", "blend", "gbm", "boost")
OTHER_BRAND = "(other brands)"
FORMAT = 1


@dataclass
class FeatureSpace:
    """The columns of the model matrix, learned from training dresses.

    ``[log retail, log(1+reviews), fabric shares (0–1)…, brand one-hot (kept brands + pooled
    other), length / sleeves / neckline one-hot]``. Brands with fewer than ``min_brand`` training
    dresses share the pooled column; a category never seen in training sets no column.
    """

    brands: list[str]
    cats: dict[str, list[str]]
    min_brand: int = 5

    @classmethod
    def fit(cls, listings: Listings, min_brand: int = 5) -> FeatureSpace:
        counts: dict[str, int] = {}
        for b in listings.brand:
            counts[b] = counts.get(b, 0) + 1
        brands = sorted(b for b, c in counts.items() if c >= min_brand)
        cats = {k: sorted(set(listings.cats[k])) for k in CATEGORICAL}
        return cls(brands, cats, min_brand)

    @property
    def names(self) -> list[str]:
        out = ["log_retail", "log1p_reviews", *(f"fabric:{f}" for f in FABRICS)]
        out += [f"brand:{b}" for b in self.brands] + [f"brand:{OTHER_BRAND}"]
        for k in CATEGORICAL:
            out += [f"{k}:{v}" for v in self.cats[k]]
        return out

    @property
    def n_numeric(self) -> int:
        return 2 + len(FABRICS)

    def matrix(self, listings: Listings) -> np.ndarray:
        """(n, len(names)) float64."""
        n = len(listings)
        numeric = np.column_stack(
            [np.log(listings.retail), np.log1p(listings.reviews), listings.fabrics / 100.0]
        ).reshape(n, self.n_numeric)
        brand_index = {b: i for i, b in enumerate(self.brands)}
        brand = np.zeros((n, len(self.brands) + 1))
        for i, b in enumerate(listings.brand):
            brand[i, brand_index.get(b, len(self.brands))] = 1.0
        blocks = [numeric, brand]
        blocks += listings.category_blocks(self.cats)
        return np.hstack(blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"brands": self.brands, "cats": self.cats, "min_brand": self.min_brand}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureSpace:
        return cls(
            list(doc["brands"]),
            {k: list(doc["cats"][k]) for k in CATEGORICAL},
            int(doc.get("min_brand", 5)),
        )


@dataclass(frozen=True)
class Neighbour:
    """A priced training dress that the reason shows."""

    brand: str
    description: str
    length: str
    retail: float
    rent: float
    distance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "brand": self.brand,
            "description": self.description,
            "length": self.length,
            "retail_price": round(self.retail, 2),
            "rent_price": round(self.rent, 2),
            "distance": round(self.distance, 4),
        }


@dataclass
class Suggestions:
    """Suggested prices of a batch: all arrays (n,); ``low``/``high`` bound the interval."""

    price: np.ndarray
    raw: np.ndarray  # before the floor
    low: np.ndarray
    high: np.ndarray
    floor_applied: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.price)


@dataclass
class PriceModel:
    """A fitted model; build one with :mod:`lookalike.price.fit`, load one with :meth:`load`."""

    method: str
    space: FeatureSpace
    floor: float
    ratio: float  # median rent/retail of the training dresses (the rule of thumb)
    # standardisation of the model matrix, and the ridge on log rent over it
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    # kNN: neighbour space and the priced training dresses
    k: int
    brand_weight: float
    weights: np.ndarray  # per-column weight of the standardised matrix in the neighbour space
    train_z: np.ndarray  # (m, d) neighbour-space rows of the training dresses
    train_brand: list[str]
    train_description: list[str]
    train_length: list[str]
    train_retail: np.ndarray
    train_rent: np.ndarray
    blend: float = 0.5  # weight of knn in a blend
    scale: float = 1.0
    # quantiles of log(actual / predicted) on held-out folds: the interval
    interval: tuple[float, float] = (0.0, 0.0)
    interval_level: float = 0.8
    rule_interval: tuple[float, float] = (0.0, 0.0)
    # gradient-boosted trees (None in a model fitted without them) and the kNN share in "boost"
    boost_features: BoostFeatures | None = None
    trees: Trees | None = None
    boost_knn: float = 0.0
    step: float = 0.0  # suggestions rounded to this many dollars (0: not rounded), chosen by CV
    facts: dict[str, Any] = field(default_factory=dict)
    _codes: tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # -- predicting ------------------------------------------------------------------------------
    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def _brand_codes(self) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(brand → code, training codes, active columns, training rows on them, their norms).

        Built once per loaded model, so a request compares ints, not thousands of strings, and
        multiplies only the columns with a weight (brand one-hots have none here).
        """
        if self._codes is None:
            codes: dict[str, int] = {}
            for b in self.train_brand:
                codes.setdefault(b, len(codes))
            train = np.array([codes[b] for b in self.train_brand], dtype=np.int64)
            active = np.flatnonzero(self.weights != 0)
            rows = np.ascontiguousarray(self.train_z[:, active])
            self._codes = (codes, train, active, rows, (rows * rows).sum(1))
        return self._codes

    def _neighbours(
        self, z: np.ndarray, brands: list[str], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices (n, k), squared distances (n, k)) of the nearest training dresses."""
        codes, train_codes, active, t, t_norm = self._brand_codes()
        q = z[:, active] * self.weights[active]
        d = (q * q).sum(1)[:, None] + t_norm[None, :] - 2.0 * (q @ t.T)
        query = np.array([codes.get(b, -1) for b in brands], dtype=np.int64)
        same = query[:, None] == train_codes[None, :]
        d = np.maximum(d, 0.0) + (self.brand_weight**2) * (~same)
        k = min(k, len(train_codes))
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        dist = np.take_along_axis(d, idx, axis=1)
        order = np.argsort(dist, axis=1, kind="stable")
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(dist, order, axis=1)

    def log_ridge(self, z: np.ndarray) -> np.ndarray:
        return z @ self.coef + self.intercept

    def log_knn(self, z: np.ndarray, listings: Listings) -> np.ndarray:
        idx, dist = self._neighbours(z, listings.brand, self.k)
        log_ratio = np.log(self.train_rent / self.train_retail)[idx]
        w = 1.0 / (1.0 + dist)
        return np.log(listings.retail) + (log_ratio * w).sum(1) / w.sum(1)

    def log_gbm(self, listings: Listings) -> np.ndarray:
        if self.boost_features is None or self.trees is None:
            raise InvalidInput("this price model was fitted without boosted trees")
        return self.trees.predict(self.boost_features.matrix(listings))

    def log_raw(self, listings: Listings, method: str | None = None) -> np.ndarray:
        """Log of the unfloored, unscaled prediction of ``method`` (default: the model's)."""
        method = method or self.method
        if method == "rule":
            return np.log(self.ratio * listings.retail)
        if method == "gbm":
            return self.log_gbm(listings)
        z = self._z(self.space.matrix(listings))
        if method == "boost":
            gbm = self.log_gbm(listings)
            if self.boost_knn == 0.0:
                return gbm
            return (1.0 - self.boost_knn) * gbm + self.boost_knn * self.log_knn(z, listings)
        if method == "ridge":
            return self.log_ridge(z)
        if method == "knn":
            return self.log_knn(z, listings)
        if method == "blend":
            return (1.0 - self.blend) * self.log_ridge(z) + self.blend * self.log_knn(z, listings)
        raise InvalidInput(f"unknown price method {method!r} (known: {', '.join(METHODS)})")

    def suggest(
        self, listings: Listings, method: str | None = None, scale: float | None = None
    ) -> Suggestions:
        """Floored suggestions with their intervals (``method`` ``rule``: the rule of thumb).

        ``scale`` overrides the model's (the evaluation reports uncalibrated rows with 1.0).
        """
        method = method or self.method
        if scale is None:
            scale = 1.0 if method == "rule" else self.scale
        raw = np.exp(self.log_raw(listings, method)) * scale
        lo_q, hi_q = self.rule_interval if method == "rule" else self.interval
        step = 0.0 if method == "rule" else self.step
        price = snap(np.maximum(raw, self.floor), step, self.floor)
        low, high = bounds(raw, price, (lo_q, hi_q), step, self.floor)
        return Suggestions(price, raw, low, high, raw < self.floor)

    def similar(self, listings: Listings, k: int = 5) -> list[list[Neighbour]]:
        """The ``k`` most similar priced training dresses of each listing (same brand first)."""
        z = self._z(self.space.matrix(listings))
        idx, dist = self._neighbours(z, listings.brand, k)
        return [
            [
                Neighbour(
                    self.train_brand[j],
                    self.train_description[j],
                    self.train_length[j],
                    float(self.train_retail[j]),
                    float(self.train_rent[j]),
                    float(d),
                )
                for j, d in zip(row, drow, strict=True)
            ]
            for row, drow in zip(idx, dist, strict=True)
        ]

    @staticmethod
    def reason(brand: str, length: str, neighbours: list[Neighbour]) -> str:
        """One line a merchandiser can check against the neighbours shown with it."""
        if not neighbours:
            return "no similar priced dress to compare with"
        low = min(n.rent for n in neighbours)
        high = max(n.rent for n in neighbours)
        span = f"${low:,.0f}" if low == high else f"${low:,.0f}–{high:,.0f}"
        same = sum(n.brand == brand for n in neighbours)
        cut = f", {length}" if length and length != "unknown" else ""
        if same == len(neighbours):
            return f"similar dresses from {brand}{cut}, rent for {span}"
        if same:
            return (
                f"similar dresses ({same} of {len(neighbours)} from {brand}){cut}, rent for {span}"
            )
        brands = ", ".join(dict.fromkeys(n.brand for n in neighbours[:3]))
        return (
            f"no priced dress from {brand} yet: similar dresses from {brands}{cut}, rent for {span}"
        )

    # -- files -----------------------------------------------------------------------------------
    def save(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": FORMAT,
            "method": self.method,
            "space": self.space.to_dict(),
            "floor": self.floor,
            "ratio": self.ratio,
            "intercept": self.intercept,
            "k": self.k,
            "brand_weight": self.brand_weight,
            "blend": self.blend,
            "scale": self.scale,
            "step": self.step,
            "interval": list(self.interval),
            "interval_level": self.interval_level,
            "rule_interval": list(self.rule_interval),
            "boost_features": None
            if self.boost_features is None
            else self.boost_features.to_dict(),
            "boost_depth": None if self.trees is None else self.trees.depth,
            "boost_knn": self.boost_knn,
            "train_brand": self.train_brand,
            "train_description": self.train_description,
            "train_length": self.train_length,
            "facts": self.facts,
        }
        (folder / MODEL_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True), "utf-8")
        np.savez(
            folder / ARRAYS_FILE,
            mean=self.mean,
            std=self.std,
            coef=self.coef,
            weights=self.weights,
            train_z=self.train_z,
            train_retail=self.train_retail,
            train_rent=self.train_rent,
            **({} if self.trees is None else self.trees.arrays()),
        )
        return [folder / MODEL_FILE, folder / ARRAYS_FILE]

    @staticmethod
    def read_rule(folder: Path) -> tuple[float, float, tuple[float, float]]:
        """(ratio, floor, rule interval) from ``model.json`` alone: the fallback's inputs."""
        doc = _read_doc(folder)
        ratio, floor = float(doc["ratio"]), float(doc["floor"])
        if not (np.isfinite(ratio) and ratio > 0 and np.isfinite(floor) and floor >= 0):
            raise IntegrityError(f"{folder.name}: rule of thumb ratio {ratio} / floor {floor}")
        lo, hi = (float(v) for v in doc.get("rule_interval", (0.0, 0.0)))
        return ratio, floor, (lo, hi)

    @classmethod
    def load(cls, folder: Path) -> PriceModel:
        doc = _read_doc(folder)
        try:
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
            trees = None
            if doc.get("boost_depth") is not None:
                trees = Trees.from_arrays(arrays, int(doc["boost_depth"]))
            arrays = {k: v.astype(np.float64) for k, v in arrays.items()}
            boost = doc.get("boost_features")
            model = cls(
                method=str(doc["method"]),
                space=FeatureSpace.from_dict(doc["space"]),
                floor=float(doc["floor"]),
                ratio=float(doc["ratio"]),
                mean=arrays["mean"],
                std=arrays["std"],
                coef=arrays["coef"],
                intercept=float(doc["intercept"]),
                k=int(doc["k"]),
                brand_weight=float(doc["brand_weight"]),
                weights=arrays["weights"],
                train_z=arrays["train_z"],
                train_brand=list(doc["train_brand"]),
                train_description=list(doc["train_description"]),
                train_length=list(doc["train_length"]),
                train_retail=arrays["train_retail"],
                train_rent=arrays["train_rent"],
                blend=float(doc["blend"]),
                scale=float(doc["scale"]),
                interval=(float(doc["interval"][0]), float(doc["interval"][1])),
                interval_level=float(doc["interval_level"]),
                rule_interval=(float(doc["rule_interval"][0]), float(doc["rule_interval"][1])),
                boost_features=None if boost is None else BoostFeatures.from_dict(boost),
                trees=trees,
                boost_knn=float(doc.get("boost_knn", 0.0)),
                step=float(doc.get("step", 0.0)),  # older artifacts: not rounded
                facts=dict(doc.get("facts", {})),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise IntegrityError(f"price model in {folder.name} cannot load: {exc}") from exc
        model.validate()
        return model

    def validate(self) -> None:
        """Raise IntegrityError when the parts do not fit together (shapes, finiteness)."""
        d = len(self.space.names)
        m = len(self.train_brand)
        problems = []
        if self.method not in METHODS:
            problems.append(f"unknown method {self.method!r}")
        if self.method in ("gbm", "boost") and (self.trees is None or self.boost_features is None):
            problems.append(f"method {self.method} needs boosted trees and the model has none")
        if self.trees is not None and self.boost_features is not None:
            try:
                self.trees.validate(len(self.boost_features.names))
            except IntegrityError as exc:
                problems.append(str(exc))
        if not 0.0 <= self.boost_knn <= 1.0:
            problems.append(f"boost_knn {self.boost_knn} outside 0–1")
        if not (np.isfinite(self.step) and 0.0 <= self.step <= 100.0):
            problems.append(f"step {self.step} is not a price step in dollars (0–100)")
        for name, arr, shape in (
            ("mean", self.mean, (d,)),
            ("std", self.std, (d,)),
            ("coef", self.coef, (d,)),
            ("weights", self.weights, (d,)),
            ("train_z", self.train_z, (m, d)),
            ("train_retail", self.train_retail, (m,)),
            ("train_rent", self.train_rent, (m,)),
        ):
            if arr.shape != shape:
                problems.append(f"{name} has shape {arr.shape}, expected {shape}")
            elif not np.all(np.isfinite(arr)):
                problems.append(f"{name} has NaN or inf")
        if len(self.train_description) != m or len(self.train_length) != m:
            problems.append("training dress columns differ in length")
        if not m:
            problems.append("no training dresses to compare with")
        if np.any(self.std <= 0):
            problems.append("a feature has zero spread")
        if problems:
            raise IntegrityError("price model does not fit together: " + "; ".join(problems))


def snap(price: np.ndarray, step: float, floor: float) -> np.ndarray:
    """``price`` rounded to the nearest multiple of ``step`` dollars, never below ``floor``.

    Most listed rents sit on a grid ($5 steps on Rent the Runway); a suggestion on the grid is what
    a merchandiser would list, and the CV measures whether it is also closer (``step`` 0: as is).
    """
    if step <= 0:
        return price
    return np.maximum(np.round(price / step) * step, floor)


def bounds(
    raw: np.ndarray, price: np.ndarray, quantiles: tuple[float, float], step: float, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """The interval around ``price``: ``raw`` × exp(each quantile of log(actual / predicted)),
    floored, on the price's own grid (``step``: "$55–70"), never excluding the price itself."""
    low = snap(np.maximum(raw * np.exp(quantiles[0]), floor), step, floor)
    high = snap(np.maximum(raw * np.exp(quantiles[1]), floor), step, floor)
    return np.minimum(low, price), np.maximum(high, price)


def covered(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The share of ``actual`` inside its interval [low, high] (ends included)."""
    return float(np.mean((actual >= low - 1e-9) & (actual <= high + 1e-9)))


def _read_doc(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / MODEL_FILE).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{folder.name}/{MODEL_FILE} cannot be read: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IntegrityError(f"{folder.name}/{MODEL_FILE} is not a price model of format {FORMAT}")
    return doc
