"""The price model's boosted trees: numpy prediction equals LightGBM's, files are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.core.errors import IntegrityError
from lookalike.price.boost import BoostFeatures, Trees, _out_of_fold_brand_mean, fit_boost
from lookalike.price.listings import FABRICS, listings_from_records
from lookalike.price.model import PriceModel

lightgbm = pytest.importorskip("lightgbm")


def _listings(n: int, seed: int = 0):
    """Synthetic dresses whose rent follows retail, a brand premium and the word "gown"."""
    rng = np.random.default_rng(seed)
    brands = ["alpha", "beta", "gamma", "delta"]
    premium = {"alpha": 0.0, "beta": 0.3, "gamma": -0.2, "delta": 0.1}
    records = []
    for i in range(n):
        brand = brands[i % 4]
        retail = float(rng.uniform(100, 900))
        gown = rng.random() < 0.3
        rent = retail * 0.15 * np.exp(premium[brand] + 0.25 * gown + rng.normal(0, 0.05))
        record = {
            "Brand": brand,
            "Dress_Description": ("silk gown" if gown else "midi dress") + f" no {i}",
            "Retail_price": f"{retail:.2f}",
            "Rent_price": f"{max(rent, 30.0):.2f}",
            "Number_of_reviews": str(int(rng.integers(0, 200))),
            "Length": "maxi" if gown else "midi",
        }
        record.update({f: "0" for f in FABRICS})
        records.append(record)
    listings, _ = listings_from_records(records, require_rent=True)
    return listings


def test_numpy_trees_predict_what_lightgbm_predicts() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5))
    y = 2 * x[:, 0] + np.sin(3 * x[:, 1]) + (x[:, 2] > 0.5) + rng.normal(0, 0.1, 600)
    params = {"objective": "l1", "num_leaves": 15, "max_depth": 6, "verbose": -1}
    data = lightgbm.Dataset(x, y, weight=1.0 / (y - y.min() + 1.0))
    model = lightgbm.train(params, data, num_boost_round=120)
    trees = Trees.from_lightgbm(model.dump_model())
    q = rng.normal(size=(200, 5))
    np.testing.assert_allclose(trees.predict(q), model.predict(q), rtol=1e-9, atol=1e-9)
    assert len(trees.roots) == 120 and 1 <= trees.depth <= 6
    single = trees.predict(q[:1])  # one request: the same walk on one row
    assert single.shape == (1,) and np.isclose(single[0], model.predict(q[:1])[0])


def test_fit_boost_learns_the_brand_and_the_word() -> None:
    train, test = _listings(800, 0), _listings(200, 1)
    features, trees = fit_boost(train)
    assert "gown" in features.words
    assert features.brand_mean["beta"] > features.brand_mean["alpha"] > features.brand_mean["gamma"]
    pred = np.exp(trees.predict(features.matrix(test)))
    assert np.mean(np.abs(pred - test.rent) / test.rent) < 0.08
    # a brand the trees never saw gets the overall mean, not an error
    unseen = test.take([0])
    unseen.brand[0] = "omega"
    assert features.matrix(unseen)[
        0, features.names.index("brand:mean_log_ratio")
    ] == pytest.approx(features.overall)


def test_training_rows_never_see_their_own_price_through_the_brand_mean() -> None:
    train = _listings(100, 2)
    train.brand[7] = "one-off"  # a brand with a single dress
    oof = _out_of_fold_brand_mean(train, seed=0)
    full = BoostFeatures.fit(train)
    # in sample its mean would lean toward its own ratio; out of fold it cannot know it
    others = np.log(np.delete(train.rent, 7) / np.delete(train.retail, 7))
    assert full.brand_mean["one-off"] != pytest.approx(oof[7])
    assert others.min() <= oof[7] <= others.max()


def test_damaged_trees_do_not_load(tmp_path: Path) -> None:
    from lookalike.price.fit import fit_price_model

    model, selection = fit_price_model(_listings(300, 4), folds=3)
    assert model.trees is not None and selection.boost == "fitted"
    model.method = "boost"
    model.save(tmp_path / "m")
    with np.load(tmp_path / "m" / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["boost_left"] = arrays["boost_left"].copy()
    inner = np.flatnonzero(arrays["boost_feature"] >= 0)[0]
    arrays["boost_left"][inner] = 10**9  # a child outside the tree
    np.savez(tmp_path / "m" / "arrays.npz", **arrays)
    with pytest.raises(IntegrityError, match="child points outside"):
        PriceModel.load(tmp_path / "m")
    arrays["boost_left"][inner] = inner  # a node that is its own child: a walk that never ends
    np.savez(tmp_path / "m" / "arrays.npz", **arrays)
    with pytest.raises(IntegrityError, match="comes before its parent"):
        PriceModel.load(tmp_path / "m")


def test_forcing_boost_without_the_trees_says_why() -> None:
    from lookalike.core.errors import InvalidInput
    from lookalike.price.fit import fit_price_model

    with pytest.raises(InvalidInput, match="needs the boosted trees, left out"):
        fit_price_model(_listings(120, 5), folds=3, method="boost", boost=False)
    model, selection = fit_price_model(_listings(120, 5), folds=3, boost=False)
    assert model.trees is None and selection.method in ("ridge", "knn", "blend")
    assert "gbm" not in selection.cv_mape
