"""Fit prediction on the serving layer: POST /v1/fit before and after a promote, the unknown
item (404, or an answer for a named size), bad bodies (422 naming the field), the fallback to
the item's label shares when the weights are damaged, a refused promote when macro-F1 drops.

Artifacts are real: fitted on a small synthetic rentals CSV of the real columns (so these tests
need no ../shared), registered and promoted through the one promote path.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from live import LOOKALIKE, run_cli

from lookalike.catalog.rental_store import RentalStore
from lookalike.catalog.rentals import read_rentals
from lookalike.core.settings import Settings
from lookalike.lifecycle import LoadContext, ProductSlot, StepPools, promote
from lookalike.recs.fit import ARRAYS_FILE, FitModel
from lookalike.recs.fit_build import build_fit_model, split_for_fit
from lookalike.recs.fit_kind import ARTIFACT_NAME, HOLDOUT_FILE, FitKind
from lookalike.registry import Ref, Registry
from lookalike.serve.app import create_app

BODIES = ("hourglass", "athletic", "pear", "petite")
SHOPPER = {"height_in": 65, "weight_lbs": 140, "bust": "34c", "body_type": "hourglass"}


def synthetic_rentals(path: Path, n: int = 3000, seed: int = 0) -> Path:
    """Reviews of the shared file's columns: a renter's true size follows her weight, each item
    runs small or large by an offset, and the label follows size − (true size + offset)."""
    rng = np.random.default_rng(seed)
    items = [f"{1000 + i}" for i in range(40)]
    offset = {it: float(rng.choice([-2, 0, 0, 2])) for it in items}
    header = ["user_id", "item_id", "fit", "size", "weight_lbs", "height_in", "bust_size_num",
              "bust_size_letter", "body_type", "age", "category", "rented_for", "rating",
              "review_date"]  # fmt: skip
    days = np.arange(np.datetime64("2016-01-01"), np.datetime64("2018-01-08"))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for _ in range(n):
            user = int(rng.integers(1, 800))
            weight = 110 + (user % 60) * 1.5
            true = (weight - 110) / 6
            item = items[int(rng.integers(0, len(items)))]
            size = int(max(0, round(true + rng.normal(0, 2.0))))
            delta = size - (true + offset[item]) + rng.normal(0, 0.7)
            fit = "small" if delta < -1.5 else "large" if delta > 1.5 else "fit"
            w.writerow([user, item, fit, size, weight, 60 + user % 12, 32 + user % 6,
                        "bcd"[user % 3], BODIES[user % 4], 30, "dress", "party", 10,
                        str(days[int(rng.integers(0, len(days)))])])  # fmt: skip
    return path


def good_version(registry: Registry, data: Path) -> Ref:
    return build_fit_model(registry, data)


def bad_version(registry: Registry, data: Path) -> Ref:
    """A model whose decision always says "large": every check but the metric passes."""
    good = build_fit_model(registry, data)
    folder = registry.path(good)
    model = FitModel.load(folder)
    model.offsets = np.array([0.0, 0.0, 50.0])
    with registry.create(ARTIFACT_NAME, {**registry.manifest(good), "note": "always large"}) as w:
        model.save(w.path)
        (w.path / HOLDOUT_FILE).write_bytes((folder / HOLDOUT_FILE).read_bytes())
    return w.ref


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return synthetic_rentals(tmp_path / "rentals.csv")


def test_model_beats_the_item_majority_on_the_later_months(data: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models", "model")
    ref = build_fit_model(registry, data)
    m = registry.manifest(ref)
    assert m["task"] == "fit-prediction"
    assert m["metrics"]["macro_f1"] > m["baseline"]["macro_f1"] + 0.1
    past, later, _ = split_for_fit(read_rentals(data))
    assert m["holdout_rows"] == len(later) and m["train_rows"] == len(past)


def test_fit_route_promote_answer_fallback(tmp_path: Path, data: Path) -> None:
    settings = Settings(home=tmp_path)
    kind = FitKind(settings)
    registry = kind.registry("model")
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "1000"})
        assert r.status_code == 503 and "lookalike fit build" in r.json()["error"]["message"]
        assert client.get("/health").json()["products"]["fit"]["built"] is False
    ref = good_version(registry, data)
    assert promote(kind, "model", ref).status == "promoted"
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "1000"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == str(ref) and body["served_by"] == "fit-logistic"
        assert body["fallback"] is None and body["item_known"] is True
        sizes = [s["size"] for s in body["sizes"]]
        assert sizes and body["recommended_size"] in sizes
        for s in body["sizes"]:
            assert s["small"] + s["fit"] + s["large"] == pytest.approx(1.0, abs=1e-3)
        # bigger sizes lean large, smaller ones small (the synthetic truth)
        first, last = body["sizes"][0], body["sizes"][-1]
        assert first["small"] > last["small"] and last["large"] > first["large"]
        # an item the model never saw: 404 naming the way out, or an answer for a named size
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "no-such-item"})
        assert r.status_code == 404 and "size" in r.json()["error"]["message"]
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "no-such-item", "size": 6})
        assert r.status_code == 200 and r.json()["item_known"] is False
        assert [s["size"] for s in r.json()["sizes"]] == [6]
        for field, bad in {
            "bust": "huge",
            "body_type": "pyramid",
            "height_in": 500,
            "item_id": "",
            "colour": "red",
        }.items():
            r = client.post("/v1/fit", json={**SHOPPER, "item_id": "1000", field: bad})
            assert r.status_code == 422, (field, r.text)
            assert field in r.text
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "1000", "weight_lbs": "NaN"})
        assert r.status_code == 422 and "weight_lbs: Input should be a finite number" in r.text
        assert client.get("/health").json()["products"]["fit"]["status"] == "ok"


def test_item_shares_answer_when_the_weights_are_damaged(tmp_path: Path, data: Path) -> None:
    settings = Settings(home=tmp_path)
    kind = FitKind(settings)
    registry = kind.registry("model")
    ref = good_version(registry, data)
    assert promote(kind, "model", ref).status == "promoted"
    folder = registry.path(ref)
    with np.load(folder / ARRAYS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w"] = np.full_like(arrays["w"], np.nan)  # damaged on disk; item counts intact
    np.savez(folder / ARRAYS_FILE, **arrays)
    slot = ProductSlot(kind, LoadContext(settings, StepPools(2))).load()
    assert slot.status == "degraded" and "could not load" in " ".join(slot.problems)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "1000"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["served_by"] == "item-majority" and "could not load" in body["fallback"]
        shares = {(s["small"], s["fit"], s["large"]) for s in body["sizes"]}
        assert len(shares) == 1  # the same for every size: no measurements used
    # and the prior alone when the item arrays are gone too
    (folder / ARRAYS_FILE).write_bytes(b"not an npz")
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/fit", json={**SHOPPER, "item_id": "x", "size": 4})
        assert r.status_code == 200 and r.json()["served_by"] == "global-prior"


def test_promote_refused_when_macro_f1_drops(tmp_path: Path, data: Path) -> None:
    kind = FitKind(Settings(home=tmp_path))
    registry = kind.registry("model")
    good = good_version(registry, data)
    assert promote(kind, "model", good).status == "promoted"
    outcome = promote(kind, "model", bad_version(registry, data))
    assert outcome.status == "refused" and outcome.failed_checks == ["metric"]
    metric = outcome.report.get("metric") if outcome.report else None
    assert metric is not None and metric.figures["direction"] == "higher"
    assert registry.aliases(ARTIFACT_NAME)["production"] == good.version


def test_builds_fit_on_the_reviews_fit_import_put_in_the_database(
    tmp_path: Path, data: Path
) -> None:
    """`lookalike fit import FILE` then `fit build` / `forecast build` with no --data: they fit
    on the imported reviews (not on the shared evaluation copy), say so, and record the import
    batches as the model's data; the same rows from the file give the same model."""
    home = tmp_path / "home"
    run_cli(home, "fit", "import", str(data), check=True)
    stored = RentalStore.for_settings(Settings(home=home))
    n = stored.count_rows()
    assert n == len(read_rentals(data))  # the synthetic file repeats no review
    built = run_cli(home, "fit", "build", check=True).stdout
    assert f"rental reviews: the {n:,} reviews in the database (from {data.name})" in built
    registry = Registry(home / "models", "model")
    m = registry.manifest(Ref(ARTIFACT_NAME, "1"))
    assert m["data"]["database"] == "rentals" and m["data"]["rows"] == n
    assert [b["source"] for b in m["data"]["batches"]] == [data.name]
    from_file = registry.manifest(build_fit_model(registry, data))
    assert from_file["data"]["file"] == data.name
    assert from_file["metrics"] == m["metrics"] and from_file["holdout_rows"] == m["holdout_rows"]
    # its evaluation, on the same reviews, reads in 80 columns with every figure whole
    shown = run_cli(home, "eval", "fit", check=True, COLUMNS="80").stdout
    assert max(len(line) for line in shown.splitlines()) <= 80 and "…" not in shown
    macro = next(line for line in shown.splitlines() if "macro-F1" in line).split()
    assert len([v for v in macro if v.replace(".", "").isdigit()]) == 2, shown


def test_builds_with_no_reviews_anywhere_say_how_to_get_some(tmp_path: Path) -> None:
    """No --data, an empty database and no shared copy (a user's fresh clone): one clear line."""
    env = {**os.environ, "LOOKALIKE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    for command in (["fit", "build"], ["recs", "build"], ["forecast", "build"]):
        done = subprocess.run(
            [*LOOKALIKE, *command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        out = done.stdout + done.stderr
        assert done.returncode != 0 and "Traceback" not in out, out
        assert "no rental reviews: import them with `lookalike fit import FILE`" in out, out
