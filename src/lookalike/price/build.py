"""Build a price model artifact: split, fit (settings by CV), measure, register (training side).

``build_price_model(registry, data)`` reads ``data`` (a listings CSV), splits it with a seeded
random 80/20, fits on the 80 % (:func:`~lookalike.price.fit.fit_price_model`), measures the
model on the 20 %, and writes ``rental_price:N`` with the model files, the held-out dresses
(``holdout.csv``: what the deploy gate measures every later candidate and production on) and a
manifest that names its task, data, split, settings and figures. Promoting it is
:func:`lookalike.lifecycle.promote`'s job, as for every kind.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from lookalike.price.evaluation import DEFAULT_SEED, DEFAULT_TEST_FRACTION, evaluate_model
from lookalike.price.fit import fit_price_model
from lookalike.price.kind import ARTIFACT_NAME, HOLDOUT_FILE, TASK
from lookalike.price.listings import Listings, read_listings
from lookalike.price.model import PriceModel
from lookalike.registry import Ref, Registry, sha256_file

__all__ = ["build_price_model", "register_price_model", "write_listings"]


def write_listings(listings: Listings, path: Path) -> None:
    records = listings.to_records()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def register_price_model(
    registry: Registry,
    model: PriceModel,
    holdout: Listings,
    manifest: dict,
    name: str = ARTIFACT_NAME,
) -> Ref:
    """Write ``model`` + ``holdout`` as the next version of ``name``; its manifest has the task."""
    figures = evaluate_model(model, holdout)
    doc = {"task": TASK, "method": model.method, "metrics": figures, **manifest}
    with registry.create(name, doc) as writer:
        model.save(writer.path)
        write_listings(holdout, writer.path / HOLDOUT_FILE)
    return writer.ref


def build_price_model(
    registry: Registry,
    data: Path,
    *,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    method: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Ref:
    listings, report = read_listings(data)
    train, holdout = listings.split(test_fraction, seed)
    model, selection = fit_price_model(train, seed=seed, method=method, progress=progress)
    manifest = {
        "data": {
            "file": data.name,
            "sha256": sha256_file(data),
            "read": report.to_dict() | {"source": data.name},
        },
        "split": f"random {1 - test_fraction:.0%}/{test_fraction:.0%}, seed {seed}",
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "selection": selection.to_dict(),
        "floor": model.floor,
        "ratio": model.ratio,
        "interval": {
            "level": model.interval_level,
            "quantiles": selection.interval_rule,
        },
    }
    return register_price_model(registry, model, holdout, manifest)
