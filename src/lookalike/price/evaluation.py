"""The evaluation table: every row's model fitted on the training file, measured on the test file.

Rows, in order (all but the first floored at the lowest training rent):

1. ``rule``: the business's rule of thumb, median(rent / retail) × retail;
2. ``rule, floored``;
3. ``ridge``: regularised linear model on log prices (alpha by CV);
4. ``knn``: the nearest priced dresses' rent/retail ratio (k, brand weight by CV);
5. ``ridge + knn blend``: weight and a MAPE calibration scale by CV;
6. ``gradient boosting``: boosted trees on log rent, L1 weighted by 1/rent (fixed settings);
7. ``boosting + knn blend``: its kNN weight and calibration scale by CV (rows 6–7 only when
   LightGBM is installed);

and which one CV chose (``chosen``). Figures per row: MAE, MAPE, MAE on the dresses whose rent is
above the floor, the share of suggestions floored; the chosen row also reports how often the
test rent fell inside its interval. With no files, the default split is
:data:`DEFAULT_SEED`-seeded random 80/20 of ``rtr_dresses.csv`` (nothing stratified).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.price.fit import Selection, fit_price_model
from lookalike.price.listings import Listings, ReadReport, read_listings
from lookalike.price.model import PriceModel, covered

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "SPLITS",
    "Evaluation",
    "Row",
    "default_data",
    "evaluate",
    "evaluate_model",
    "load_split",
    "row_figures",
]

DEFAULT_SEED = 0
DEFAULT_TEST_FRACTION = 0.2
SPLITS = ("random", "brand")
ROWS = (
    ("rule", "rule", False, 1.0),
    ("rule, floored", "rule", True, 1.0),
    ("ridge", "ridge", True, 1.0),
    ("knn", "knn", True, 1.0),
    ("ridge + knn blend", "blend", True, None),
    ("gradient boosting", "gbm", True, 1.0),
    ("boosting + knn blend", "boost", True, None),
)
CHOSEN_ROW = {
    "ridge": "ridge",
    "knn": "knn",
    "blend": "ridge + knn blend",
    "boost": "boosting + knn blend",
}


def default_data(shared: Path | None = None) -> Path:
    """``../shared/data/prices/rtr_dresses.csv`` from the project root (or under ``shared``)."""
    root = shared or Path(__file__).resolve().parents[3].parent / "shared"
    return root / "data" / "prices" / "rtr_dresses.csv"


def row_figures(pred: np.ndarray, actual: np.ndarray, floor: float) -> dict[str, float]:
    err = np.abs(pred - actual)
    above = actual > floor
    return {
        "mae": round(float(err.mean()), 4),
        "mape": round(float((err / actual).mean()), 4),
        "mae_above_floor": round(float(err[above].mean()), 4) if above.any() else float("nan"),
        "floored_share": round(float(np.mean(pred <= floor + 1e-9)), 4),
    }


@dataclass
class Row:
    name: str
    method: str
    figures: dict[str, float]
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "chosen": self.chosen, **self.figures}


@dataclass
class Evaluation:
    rows: list[Row]
    selection: Selection
    train_rows: int
    test_rows: int
    floor: float
    test_above_floor: int
    split: str
    test_unseen_brand: int = 0  # test dresses whose brand no training dress has
    reads: list[ReadReport] = field(default_factory=list)
    interval: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> Row:
        return next(r for r in self.rows if r.chosen)

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "test_above_floor": self.test_above_floor,
            "test_unseen_brand": self.test_unseen_brand,
            "floor": self.floor,
            "rows": [r.to_dict() for r in self.rows],
            "chosen": self.chosen.name,
            "selection": self.selection.to_dict(),
            "interval": self.interval,
            "reads": [r.to_dict() for r in self.reads],
        }


def evaluate_model(model: PriceModel, test: Listings) -> dict[str, float]:
    """The model's own figures on ``test`` (what the deploy gate compares): MAPE and friends."""
    out = model.suggest(test)
    figures = row_figures(out.price, test.rent, model.floor)
    figures["interval_coverage"] = round(covered(test.rent, out.low, out.high), 4)
    figures["rows"] = len(test)
    return figures


def evaluate(
    train: Listings,
    test: Listings,
    *,
    split: str,
    reads: list[ReadReport] | None = None,
    folds: int = 5,
    seed: int = DEFAULT_SEED,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Fit on ``train`` (settings by CV on it), report every row on ``test``."""
    model, selection = fit_price_model(train, folds=folds, seed=seed, progress=progress)
    rows = []
    chosen_name = CHOSEN_ROW[selection.method]
    for name, method, floored, scale in ROWS:
        if method in ("gbm", "boost") and model.trees is None:
            continue
        raw = np.exp(model.log_raw(test, method)) * (
            selection.scale_of(method) if scale is None else scale
        )
        pred = np.maximum(raw, model.floor) if floored else raw
        rows.append(
            Row(name, method, row_figures(pred, test.rent, model.floor), name == chosen_name)
        )
    own = evaluate_model(model, test)
    known = set(train.brand)
    if model.step > 0:  # the chosen row as served: rounded to the step the CV chose
        for row in rows:
            row.chosen = False
        name = f"{chosen_name}, rounded to ${model.step:g}"
        rows.append(Row(name, selection.method, {k: own[k] for k in rows[0].figures}, True))
    return Evaluation(
        rows=rows,
        selection=selection,
        train_rows=len(train),
        test_rows=len(test),
        floor=model.floor,
        test_above_floor=int(np.sum(test.rent > model.floor)),
        split=split,
        test_unseen_brand=sum(b not in known for b in test.brand),
        reads=list(reads or []),
        interval={
            "level": round(model.interval_level, 3),
            "quantiles": selection.interval_rule,
            "coverage_on_test": own["interval_coverage"],
        },
    )


def load_split(
    train_path: Path | None,
    test_path: Path | None,
    *,
    data: Path | None = None,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    by: str = "random",
) -> tuple[Listings, Listings, str, list[ReadReport]]:
    """(train, test, how they were split, read reports) for ``lookalike eval price``.

    Both files given: use them. Only ``train_path`` (or ``data``): split it, at random
    (``by="random"``) or by brand (``by="brand"``: no brand on both sides). Neither: split the
    shared ``rtr_dresses.csv``.
    """
    by = by.strip().lower()
    if by not in SPLITS:
        raise InvalidInput(f"split {by!r}: use one of {', '.join(SPLITS)}")
    if train_path is not None and test_path is not None:
        if by != "random":
            raise InvalidInput(f"--split {by} splits one file; --train and --test are the split")
        train, r1 = read_listings(train_path)
        test, r2 = read_listings(test_path)
        return train, test, f"train {train_path}, test {test_path}", [r1, r2]
    if test_path is not None:
        raise InvalidInput("--test needs --train (or give neither for the default split)")
    source = train_path or data or default_data()
    listings, report = read_listings(source)
    if by == "brand":
        train, test = listings.split_by_brand(test_fraction, seed)
        how = (
            f"by brand, {len(set(test.brand))} of {len(set(listings.brand))} brands held out "
            f"({len(test) / len(listings):.0%} of the dresses) of {source.name}, seed {seed}"
        )
    else:
        train, test = listings.split(test_fraction, seed)
        how = f"random {1 - test_fraction:.0%}/{test_fraction:.0%} of {source.name}, seed {seed}"
    return train, test, how, [report]
