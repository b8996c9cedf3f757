"""Price suggestion offline: dirty listings, the model rows on real data, the floor, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.core.errors import IntegrityError, InvalidInput
from lookalike.price.evaluation import default_data, evaluate, load_split, row_figures
from lookalike.price.fit import INTERVAL_QS, STEPS, _interval, fit_price_model
from lookalike.price.listings import FABRICS, parse_price, read_listings
from lookalike.price.model import PriceModel, bounds, snap

REAL = default_data()
HEADER = (
    "Brand,Dress_Description,Retail_price,Rent_price,Number_of_reviews,"
    + ",".join(FABRICS)
    + ",Length,Sleeves,Neckline\n"
)


def _row(brand: str, retail: str, rent: str, reviews: str = "3", cotton: str = "100") -> str:
    fabrics = [cotton] + ["0"] * (len(FABRICS) - 1)
    return f'{brand},a dress,"{retail}",{rent},{reviews},' + ",".join(fabrics) + ",midi,,v\n"


def test_parse_price_reads_dollar_text() -> None:
    assert parse_price("$1,234") == 1234.0
    assert parse_price(" 45.50 ") == 45.5
    assert parse_price("USD 99") == 99.0
    for bad in ("", "n/a", "-5", "1e400", "$", "12.3.4", None):
        assert parse_price(bad) is None, bad


def test_dirty_rows_are_dropped_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "dirty.csv"
    path.write_text(
        HEADER
        + _row("tory burch", "$1,234", "$70")
        + _row("tory burch", "", "70")  # no retail
        + _row("", "300", "40")  # no brand
        + _row("parker", "300", "forty")  # rent not a price
        + _row("parker", "300", "40", reviews="")  # reviews filled with 0
        + _row("parker", "300", "40", cotton="705")  # fabric share out of range
    )
    listings, report = read_listings(path)
    assert len(listings) == 2 and report.rows == 6 and report.dropped == 4
    assert listings.retail[0] == 1234.0 and listings.rent[0] == 70.0
    assert listings.cats["sleeves"][0] == "unknown" and report.filled["sleeves"] == 2
    assert report.filled["number_of_reviews"] == 1
    joined = " | ".join(report.reasons)
    for why in ("line 3: retail price", "line 4: no brand", "line 5: rent price", "line 7: cotton"):
        assert why in joined


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    no_rent = tmp_path / "no_rent.csv"
    no_rent.write_text("Brand,Retail_price\nparker,300\n")
    with pytest.raises(InvalidInput, match="missing column.*rent_price"):
        read_listings(no_rent)
    listings, _ = read_listings(no_rent, require_rent=False)  # fine to price
    assert np.isnan(listings.rent[0])
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read_listings(binary)
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER + _row("", "1", "1"))
    with pytest.raises(InvalidInput, match="no usable row"):
        read_listings(empty)


def test_a_semicolon_or_tab_separated_file_reads_like_the_comma_one(tmp_path: Path) -> None:
    rows = HEADER + _row("tory burch", "478", "70") + _row("parker", "$1,234", "$85")
    comma = tmp_path / "comma.csv"
    comma.write_text(rows)
    expected, _ = read_listings(comma)
    for name, sep in (("semicolon.csv", ";"), ("tabs.tsv", "\t")):
        other = tmp_path / name  # no comma in the header: the separator is read from it
        other.write_text(rows.replace(",", sep).replace(f'"$1{sep}234"', '"$1,234"'))
        listings, report = read_listings(other)
        assert report.dropped == 0, report.reasons
        assert listings.brand == expected.brand
        assert listings.retail.tolist() == [478.0, 1234.0]
        assert listings.rent.tolist() == expected.rent.tolist()
        assert listings.cats["length"] == expected.cats["length"]


@pytest.fixture(scope="module")
def real_slice():
    if not REAL.is_file():
        pytest.skip(f"needs ../shared/data ({REAL} is absent)")
    listings, _ = read_listings(REAL)
    rows = np.random.default_rng(14).permutation(len(listings))[:1500]
    return listings.take(rows).split(0.2, 0)


@pytest.fixture(scope="module")
def fitted(real_slice):
    return fit_price_model(real_slice[0])


def test_model_rows_on_a_real_slice(real_slice) -> None:
    train, test = real_slice
    ev = evaluate(train, test, split="seeded slice of rtr_dresses.csv")
    names = [r.name for r in ev.rows]
    if ev.selection.step:  # the chosen row as served, rounded to the CV's step, comes last
        assert names.pop() == ev.chosen.name and ev.chosen.name.endswith(
            f", rounded to ${ev.selection.step:g}"
        )
    assert names == [
        "rule",
        "rule, floored",
        "ridge",
        "knn",
        "ridge + knn blend",
        "gradient boosting",
        "boosting + knn blend",
    ]
    mape = {r.name: r.figures["mape"] for r in ev.rows}
    # the floor only removes error; the linear model beats the rule; the choice beats both
    assert mape["rule, floored"] < mape["rule"]
    assert mape["ridge"] < mape["rule, floored"]
    assert ev.chosen.figures["mape"] < mape["rule, floored"]
    assert mape["gradient boosting"] < mape["rule, floored"]
    # the chosen row is the one CV chose, and every CV candidate has its out-of-fold MAPE
    assert set(ev.selection.cv_mape) == {"ridge", "knn", "blend", "gbm", "boost"}
    assert ev.chosen.method == ev.selection.method
    assert ev.floor == train.rent.min() == 30.0
    # the floor's dresses are not all the figures: MAE above the floor is reported separately
    assert ev.test_above_floor < ev.test_rows
    assert all(np.isfinite(r.figures["mae_above_floor"]) for r in ev.rows)
    assert 0.6 <= ev.interval["coverage_on_test"] <= 0.95


def test_every_suggestion_is_floored_and_inside_its_interval(real_slice, fitted) -> None:
    _, test = real_slice
    model, _ = fitted
    for method in ("rule", "ridge", "knn", "blend", "gbm", "boost"):
        out = model.suggest(test, method=method)
        assert np.all(out.price >= model.floor), method
        assert np.all(out.low <= out.price) and np.all(out.price <= out.high), method
        assert np.array_equal(out.floor_applied, out.raw < model.floor), method
    cheap = test.take([0])
    cheap.retail[:] = 5.0  # a $5 dress: the raw prediction is under the floor
    out = model.suggest(cheap)
    assert out.floor_applied[0] and out.price[0] == model.floor


def test_saved_model_loads_and_answers_the_same(real_slice, fitted, tmp_path: Path) -> None:
    train, test = real_slice
    model, _ = fitted
    model.save(tmp_path / "m")
    loaded = PriceModel.load(tmp_path / "m")
    for method in ("ridge", "knn", "blend", "gbm", "boost"):
        np.testing.assert_allclose(
            loaded.suggest(test, method=method).price, model.suggest(test, method=method).price
        )
    similar = loaded.similar(test.take([0]), 5)[0]
    assert len(similar) == 5 and similar == sorted(similar, key=lambda n: n.distance)
    # same brand weighted up: a brand with priced dresses gets its own brand's first
    brand = test.brand[0]
    if brand in train.brand:
        assert similar[0].brand == brand
    (tmp_path / "m" / "arrays.npz").write_bytes(b"junk")
    with pytest.raises(Exception, match="cannot load"):
        PriceModel.load(tmp_path / "m")
    ratio, floor, _ = PriceModel.read_rule(tmp_path / "m")  # the fallback still has its inputs
    assert ratio == model.ratio and floor == model.floor


def test_row_figures() -> None:
    figures = row_figures(np.array([30.0, 60.0]), np.array([30.0, 50.0]), 30.0)
    assert figures["mae"] == 5.0 and figures["mape"] == 0.1
    assert figures["mae_above_floor"] == 10.0 and figures["floored_share"] == 0.5


def test_snap_rounds_to_the_step_and_keeps_the_floor() -> None:
    price = np.array([30.0, 31.9, 32.6, 47.4, 47.6, 99.0])
    np.testing.assert_array_equal(snap(price, 0.0, 30.0), price)  # step 0: as is
    np.testing.assert_array_equal(snap(price, 5.0, 30.0), [30, 30, 35, 45, 50, 100])
    np.testing.assert_array_equal(snap(price, 10.0, 32.0), [32, 32, 32, 50, 50, 100])


def test_the_rounding_step_is_chosen_from_the_prices_and_served(
    real_slice, fitted, tmp_path: Path
) -> None:
    train, test = real_slice
    model, selection = fitted
    assert set(selection.step_mape) == set(STEPS) and model.step == selection.step
    assert selection.step_mape[selection.step] == min(selection.step_mape.values())
    out = model.suggest(test)
    if model.step:
        on_grid = np.isclose(out.price / model.step, np.round(out.price / model.step))
        assert np.all(on_grid | (out.price == model.floor))
        # the interval on the same grid ("$55–70"), never under the floor
        for end in (out.low, out.high):
            on_grid = np.isclose(end / model.step, np.round(end / model.step))
            assert np.all(on_grid | (end == model.floor))
        assert np.all(out.low >= model.floor)
    assert np.all(out.low <= out.price) and np.all(out.price <= out.high)
    # rents off any grid (a business pricing to the cent): rounding to $5 or $10 only adds error
    off = train.take(np.arange(len(train)))
    off.rent[:] = np.maximum(off.rent * np.random.default_rng(3).uniform(0.93, 1.07, len(off)), 30)
    _, sel = fit_price_model(off, boost=False)
    assert sel.step in (0.0, 1.0), sel.step_mape
    # a damaged step in model.json is refused at load
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["step"] = -5
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="step -5"):
        PriceModel.load(tmp_path / "m")


def test_a_split_by_brand_keeps_every_brand_on_one_side(tmp_path: Path) -> None:
    brands = [f"brand {b}" for b in range(12)]
    path = tmp_path / "listings.csv"
    path.write_text(
        HEADER + "".join(_row(brands[i % 12], str(200 + i), str(30 + i % 40)) for i in range(300))
    )
    listings, _ = read_listings(path)
    train, test = listings.split_by_brand(0.2, seed=4)
    assert not set(train.brand) & set(test.brand)
    assert len(train) + len(test) == 300 and 0.2 <= len(test) / 300 < 0.3
    again = listings.split_by_brand(0.2, seed=4)[1]
    assert again.brand == test.brand  # seeded: the same brands every time
    assert listings.split_by_brand(0.2, seed=5)[1].brand != test.brand
    tr, te, how, _ = load_split(path, None, by=" Brand ")  # what `--split brand` passes
    assert not set(tr.brand) & set(te.brand) and how.startswith("by brand, ")
    with pytest.raises(InvalidInput, match="split 'shop'"):
        load_split(path, None, by="shop")
    with pytest.raises(InvalidInput, match="--split brand splits one file"):
        load_split(path, path, by="brand")
    one = tmp_path / "one.csv"
    one.write_text(HEADER + _row("parker", "300", "40") + _row("parker", "310", "45"))
    with pytest.raises(InvalidInput, match="needs 2 brands"):
        read_listings(one)[0].split_by_brand()


def test_evaluation_counts_the_test_dresses_of_brands_it_never_saw(real_slice) -> None:
    train, test = real_slice
    small = train.take(np.arange(400))
    unseen = sum(b not in set(small.brand) for b in test.brand)
    ev = evaluate(small, test, split="400 dresses of the slice", folds=3)
    assert unseen > 0 and ev.test_unseen_brand == unseen
    assert ev.to_dict()["test_unseen_brand"] == unseen


def test_the_interval_holds_80_percent_as_served_rounded_to_the_grid() -> None:
    """Rents on a $5 grid: rounded ends of the 10th/90th percentiles hold more than 80 %, so
    the quantiles narrow until the served (floored, rounded) interval holds just 80 %."""
    rng = np.random.default_rng(0)
    raw = rng.uniform(35, 150, 4000)
    rent = np.maximum(np.round(raw * np.exp(rng.normal(0, 0.15, 4000)) / 5) * 5, 30)
    residual = np.log(rent) - np.log(raw)
    price = snap(np.maximum(raw, 30), 5.0, 30)

    def held(quantiles: tuple[float, float], step: float) -> float:
        low, high = bounds(raw, price, quantiles, step, 30)
        assert np.all((low <= price) & (price <= high) & (low >= 30))
        return float(np.mean((rent >= low) & (rent <= high)))

    wide = (float(np.quantile(residual, 0.1)), float(np.quantile(residual, 0.9)))
    assert held(wide, 5.0) > 0.82  # what the plain percentiles would have served
    q, quantiles = _interval(residual, raw, rent, 30.0, 5.0)
    assert q > INTERVAL_QS[0] and 0.8 <= held(quantiles, 5.0) < held(wide, 5.0)
    narrower = (float(np.quantile(residual, q + 0.01)), float(np.quantile(residual, 0.99 - q)))
    assert held(narrower, 5.0) < 0.8  # the narrowest that still holds 80 %
    # unrounded rents: the 10th/90th percentiles already hold 80 %, and are kept
    smooth = raw * np.exp(rng.normal(0, 0.15, 4000))
    q, _ = _interval(np.log(smooth / raw), raw, smooth, 0.0, 0.0)
    assert q in (0.1, 0.11)
