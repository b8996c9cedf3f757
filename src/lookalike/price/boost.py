"""Gradient-boosted trees on log rent: their features, the trees as arrays, numpy prediction.

Serving needs only numpy: the trees are flat arrays (:class:`Trees`) walked level by level for
every tree at once. Training (:func:`fit_boost`) uses LightGBM, imported inside the function, so
neither the server nor a model load ever imports it.

Features (:class:`BoostFeatures`): log retail, log(1 + reviews), fabric shares, length / sleeves
/ neckline one-hots, the brand's shrunk mean log(rent / retail) (target encoding; out of fold for
the training rows so the trees never see a dress's own price through it), log(1 + the brand's
training dresses) and whether the description holds each of the common words ("gown",
"sequin", "velvet", …). The loss is L1 on log rent weighted by 1 / rent: its minimiser is the
1/rent-weighted median, which is the price that minimises the expected absolute percentage error
(MAPE), the metric the product is held to.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.core.errors import IntegrityError
from lookalike.price.listings import CATEGORICAL, FABRICS, Listings

__all__ = ["BOOST_SETTINGS", "BoostFeatures", "Trees", "fit_boost"]

# Fixed, not tuned on any split: a small learning rate, shallow trees, row and column sampling.
BOOST_SETTINGS: dict[str, Any] = {
    "n_estimators": 1500,
    "learning_rate": 0.02,
    "num_leaves": 15,
    "max_depth": 6,
    "min_child_samples": 10,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
}
SHRINK = 5.0  # a brand's mean is pulled toward the overall one as if it had 5 more dresses
TE_FOLDS = 5
MIN_WORD_DRESSES = 20  # a word is a feature when this many training descriptions hold it
MAX_WORDS = 60
_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


@dataclass
class BoostFeatures:
    """The trees' columns, learned from the training dresses (see the module's docstring)."""

    cats: dict[str, list[str]]
    words: list[str]
    brand_mean: dict[str, float]  # shrunk mean log(rent/retail) per training brand
    brand_count: dict[str, int]
    overall: float  # the mean a brand never seen gets

    @classmethod
    def fit(cls, train: Listings) -> BoostFeatures:
        counts = Counter(w for text in train.description for w in _words(text))
        words = sorted(w for w, c in counts.most_common(MAX_WORDS) if c >= MIN_WORD_DRESSES)
        log_ratio = np.log(train.rent / train.retail)
        mean, count = _brand_means(train.brand, log_ratio)
        return cls(
            cats={k: sorted(set(train.cats[k])) for k in CATEGORICAL},
            words=words,
            brand_mean=mean,
            brand_count=count,
            overall=float(log_ratio.mean()),
        )

    @property
    def names(self) -> list[str]:
        out = ["log_retail", "log1p_reviews", *(f"fabric:{f}" for f in FABRICS)]
        for k in CATEGORICAL:
            out += [f"{k}:{v}" for v in self.cats[k]]
        out += ["brand:mean_log_ratio", "brand:log1p_dresses"]
        return out + [f"word:{w}" for w in self.words]

    def matrix(self, listings: Listings, brand_mean: np.ndarray | None = None) -> np.ndarray:
        """(n, len(names)); ``brand_mean`` replaces the brand column (out-of-fold values)."""
        n = len(listings)
        blocks = [
            np.log(listings.retail)[:, None],
            np.log1p(listings.reviews)[:, None],
            listings.fabrics / 100.0,
        ]
        blocks += listings.category_blocks(self.cats)
        if brand_mean is None:
            brand_mean = np.array([self.brand_mean.get(b, self.overall) for b in listings.brand])
        blocks.append(brand_mean[:, None])
        blocks.append(np.log1p([self.brand_count.get(b, 0) for b in listings.brand])[:, None])
        texts = [_words(t) for t in listings.description]
        blocks.append(
            np.array([[w in t for w in self.words] for t in texts], dtype=np.float64).reshape(
                n, len(self.words)
            )
        )
        return np.hstack(blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cats": self.cats,
            "words": self.words,
            "brand_mean": self.brand_mean,
            "brand_count": self.brand_count,
            "overall": self.overall,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BoostFeatures:
        return cls(
            cats={k: list(doc["cats"][k]) for k in CATEGORICAL},
            words=[str(w) for w in doc["words"]],
            brand_mean={str(k): float(v) for k, v in doc["brand_mean"].items()},
            brand_count={str(k): int(v) for k, v in doc["brand_count"].items()},
            overall=float(doc["overall"]),
        )


def _brand_means(
    brands: list[str], log_ratio: np.ndarray
) -> tuple[dict[str, float], dict[str, int]]:
    overall = float(log_ratio.mean())
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for b, v in zip(brands, log_ratio, strict=True):
        sums[b] = sums.get(b, 0.0) + float(v)
        counts[b] = counts.get(b, 0) + 1
    mean = {b: (sums[b] + SHRINK * overall) / (counts[b] + SHRINK) for b in sums}
    return mean, counts


def _out_of_fold_brand_mean(train: Listings, seed: int) -> np.ndarray:
    """Each training dress's brand mean computed without the fold it sits in."""
    log_ratio = np.log(train.rent / train.retail)
    n = len(train)
    out = np.empty(n)
    order = np.random.default_rng(seed).permutation(n)
    for part in np.array_split(order, TE_FOLDS):
        rest = np.setdiff1d(np.arange(n), part)
        mean, _ = _brand_means([train.brand[i] for i in rest], log_ratio[rest])
        overall = float(log_ratio[rest].mean())
        out[part] = [mean.get(train.brand[i], overall) for i in part]
    return out


@dataclass
class Trees:
    """A sum of regression trees as flat arrays; node ``i`` is a leaf when ``left[i] < 0``."""

    feature: np.ndarray  # (nodes,) int64; -1 at a leaf
    threshold: np.ndarray  # (nodes,) float64; go left when x <= threshold
    left: np.ndarray  # (nodes,) int64
    right: np.ndarray  # (nodes,) int64
    value: np.ndarray  # (nodes,) float64; a leaf's output
    roots: np.ndarray  # (trees,) int64
    depth: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n,) sums of the trees' leaves for the rows of ``x`` (n, d)."""
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            feat = self.feature[node]
            inner = feat >= 0
            if not inner.any():
                break
            go_left = x[rows, np.where(inner, feat, 0)] <= self.threshold[node]
            nxt = np.where(go_left, self.left[node], self.right[node])
            node = np.where(inner, nxt, node)
        return self.value[node].sum(1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "boost_feature": self.feature,
            "boost_threshold": self.threshold,
            "boost_left": self.left,
            "boost_right": self.right,
            "boost_value": self.value,
            "boost_roots": self.roots,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], depth: int) -> Trees:
        trees = cls(
            feature=np.asarray(arrays["boost_feature"]).astype(np.int64),
            threshold=np.asarray(arrays["boost_threshold"], dtype=np.float64),
            left=np.asarray(arrays["boost_left"]).astype(np.int64),
            right=np.asarray(arrays["boost_right"]).astype(np.int64),
            value=np.asarray(arrays["boost_value"], dtype=np.float64),
            roots=np.asarray(arrays["boost_roots"]).astype(np.int64),
            depth=int(depth),
        )
        return trees  # PriceModel.validate checks them against its features

    def validate(self, n_features: int | None = None) -> None:
        nodes = len(self.feature)
        same = all(len(a) == nodes for a in (self.threshold, self.left, self.right, self.value))
        problems = []
        if not same:
            problems.append("node arrays differ in length")
        elif nodes:
            inner = self.feature >= 0
            index = np.arange(nodes)
            for name, a in (("left", self.left), ("right", self.right)):
                if np.any(inner & ((a < 0) | (a >= nodes))):
                    problems.append(f"a {name} child points outside the nodes")
                elif np.any(inner & (a <= index)):  # children follow their parent: no cycles
                    problems.append(f"a {name} child comes before its parent")
            if not 0 <= self.depth <= nodes:
                problems.append(f"depth {self.depth} for {nodes} nodes")
            if n_features is not None and np.any(self.feature >= n_features):
                problems.append("a split uses a feature the model does not have")
            if not np.all(np.isfinite(self.value)) or not np.all(
                np.isfinite(self.threshold[inner])
            ):
                problems.append("NaN or inf in the trees")
        if len(self.roots) and (np.any(self.roots < 0) or np.any(self.roots >= nodes)):
            problems.append("a root points outside the nodes")
        if problems:
            raise IntegrityError("boosted trees do not fit together: " + "; ".join(problems))

    @classmethod
    def from_lightgbm(cls, dump: dict[str, Any]) -> Trees:
        """Flatten ``Booster.dump_model()`` (numerical ``<=`` splits only)."""
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        value: list[float] = []
        roots: list[int] = []
        depth = 0

        def add(node: dict[str, Any], level: int) -> int:
            nonlocal depth
            i = len(feature)
            feature.append(-1)
            threshold.append(0.0)
            left.append(-1)
            right.append(-1)
            value.append(0.0)
            if "leaf_value" in node or "split_feature" not in node:
                value[i] = float(node.get("leaf_value", 0.0))
                depth = max(depth, level)
                return i
            if node.get("decision_type", "<=") != "<=":
                raise IntegrityError(f"unsupported split {node.get('decision_type')!r}")
            feature[i] = int(node["split_feature"])
            threshold[i] = float(node["threshold"])
            left[i] = add(node["left_child"], level + 1)
            right[i] = add(node["right_child"], level + 1)
            return i

        for info in dump["tree_info"]:
            roots.append(add(info["tree_structure"], 0))
        return cls(
            np.array(feature, dtype=np.int64),
            np.array(threshold, dtype=np.float64),
            np.array(left, dtype=np.int64),
            np.array(right, dtype=np.int64),
            np.array(value, dtype=np.float64),
            np.array(roots, dtype=np.int64),
            depth,
        )


def fit_boost(
    train: Listings, *, seed: int = 0, settings: dict[str, Any] | None = None
) -> tuple[BoostFeatures, Trees]:
    """Fit the features and the trees on ``train`` (training side: needs LightGBM)."""
    import lightgbm  # the training extra; the server never gets here

    features = BoostFeatures.fit(train)
    x = features.matrix(train, brand_mean=_out_of_fold_brand_mean(train, seed))
    params = {**BOOST_SETTINGS, **(settings or {})}
    # A small training file cannot feed 10-dress leaves: let leaves shrink with it.
    params["min_child_samples"] = max(2, min(params["min_child_samples"], len(train) // 20))
    rounds = int(params.pop("n_estimators"))
    params.update(objective="l1", seed=seed, verbose=-1, num_threads=2)
    params["bagging_fraction"] = params.pop("subsample")
    params["bagging_freq"] = params.pop("subsample_freq")
    params["feature_fraction"] = params.pop("colsample_bytree")
    data = lightgbm.Dataset(x, np.log(train.rent), weight=1.0 / train.rent, params={"verbose": -1})
    booster = lightgbm.train(params, data, num_boost_round=rounds)
    return features, Trees.from_lightgbm(booster.dump_model())
