"""Build and evaluate fit models on the time split (training side; serving never imports it).

:func:`evaluate_fit` fits on the past and reports, on the later months, the model and the
baseline (the item's majority label; its smoothed label shares as AUC scores) side by side:
macro-F1, F1 and one-vs-rest AUC per class, accuracy. :func:`build_fit_model` does the same fit
and registers ``fit:N`` with the later months as ``holdout.npz`` (what the deploy gate measures
every later candidate and production on). Promoting it is :func:`lookalike.lifecycle.promote`'s
job, as for every kind. Reviews are a lower bound on rentals: every figure is over reviewed
rentals only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalog.rental_store import RentalData
from lookalike.catalog.rentals import Rentals, time_split
from lookalike.core.errors import InvalidInput
from lookalike.recs.fit import (
    CLASSES,
    FitModel,
    fit_figures,
    query_from_rentals,
    train_fit_model,
    usual_sizes,
)
from lookalike.recs.fit_kind import ARTIFACT_NAME, HOLDOUT_FILE, TASK, write_holdout
from lookalike.registry import Ref, Registry

__all__ = ["build_fit_model", "evaluate_fit", "split_for_fit"]


def split_for_fit(
    rentals: Rentals, *, test_from: str | None = None, test_months: int = 6
) -> tuple[Rentals, Rentals, str]:
    labelled = rentals.take(np.isin(rentals.fit, CLASSES))
    past, later = time_split(labelled, test_from=test_from, test_months=test_months)
    if len(past) < 30 or len(later) == 0:
        raise InvalidInput(
            f"the time split leaves {len(past)} past and {len(later)} later reviews: "
            "need at least 30 past reviews and one later"
        )
    how = f"train before {later.review_date.min()}, test {later.review_date.min()} → " + str(
        later.review_date.max()
    )
    return past, later, how


def _evaluate(model: FitModel, past: Rentals, later: Rentals) -> dict[str, Any]:
    q = query_from_rentals(later, model.stats, usual_sizes(past), leave_one_out=False)
    y = np.array([CLASSES.index(f) for f in later.fit])
    proba = model.predict_proba(q)
    figures = fit_figures(y, model.decide(proba), proba)
    lean = model.item_lean(q.item)
    baseline = fit_figures(y, np.argmax(lean, axis=1), lean)
    known = q.item >= 0
    return {
        "model": figures,
        "baseline": baseline,
        "later_items_known": round(float(known.mean()), 4),
        "label_share": {c: round(float(np.mean(y == i)), 4) for i, c in enumerate(CLASSES)},
        "_query": q,
        "_y": y,
    }


def evaluate_fit(
    rentals: Rentals, *, test_from: str | None = None, test_months: int = 6
) -> dict[str, Any]:
    """The model against the baseline on the later months (see the module doc)."""
    past, later, how = split_for_fit(rentals, test_from=test_from, test_months=test_months)
    model = train_fit_model(past)
    out = _evaluate(model, past, later)
    out.pop("_query"), out.pop("_y")
    return {
        "split": how,
        "train_rows": len(past),
        "test_rows": len(later),
        "decision_offsets": dict(zip(CLASSES, np.round(model.offsets, 3).tolist(), strict=True)),
        "class_imbalance": "inverse-frequency class weights in the loss; served probabilities "
        "calibrated (log prior added back); decision offsets tuned for macro-F1 on the "
        "leave-one-out training rows",
        **out,
    }


def build_fit_model(
    registry: Registry,
    data: Path | RentalData,
    *,
    test_from: str | None = None,
    test_months: int = 6,
    limit: int | None = None,
) -> Ref:
    """Fit on the past of ``data`` (a file, or reviews already read with their source), measure
    on its later months, register ``fit:N``."""
    if not isinstance(data, RentalData):
        data = RentalData.from_file(data, limit=limit)
    rentals = data.rentals
    past, later, how = split_for_fit(rentals, test_from=test_from, test_months=test_months)
    model = train_fit_model(past)
    out = _evaluate(model, past, later)
    q, y = out.pop("_query"), out.pop("_y")
    metrics = {**out["model"], "items": len(model.stats.ids)}
    doc = {
        "task": TASK,
        "method": "multinomial logistic regression (numpy, Newton), class-weighted",
        "metrics": metrics,
        "baseline": out["baseline"],
        "data": data.source,
        "split": how,
        "train_rows": len(past),
        "holdout_rows": len(later),
        "later_items_known": out["later_items_known"],
        "decision_offsets": model.offsets.tolist(),
    }
    with registry.create(ARTIFACT_NAME, doc) as writer:
        model.save(writer.path)
        write_holdout(writer.path / HOLDOUT_FILE, later.item_id.astype(str), q, y)
    return writer.ref
