"""Price suggestion on the serving layer: the route on a live server, promote → serve → rollback
→ hot reload, a refused promote when MAPE gets worse, the rule-of-thumb fallback, bad bodies.

Artifacts are real: fitted on a small synthetic listings CSV of the real columns (so these tests
need no ../shared), registered and promoted through the one promote path.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from live import api_key, live_server, swap_then_roll_back, wait_for_version

from lookalike.core.settings import Settings
from lookalike.lifecycle import LoadContext, ProductSlot, StepPools, promote
from lookalike.price.build import build_price_model, register_price_model
from lookalike.price.fit import fit_price_model
from lookalike.price.kind import ARTIFACT_NAME, PriceKind
from lookalike.price.listings import FABRICS, read_listings
from lookalike.registry import Ref, Registry
from lookalike.serve.app import create_app

BRANDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
DRESS = {
    "brand": "bravo",
    "retail_price": 420,
    "length": "midi",
    "sleeves": "sleeveless",
    "neckline": "v_neckline",
    "fabrics": {"cotton": 95, "spandex": 5},
    "number_of_reviews": 12,
    "description": "a test dress",
}


def synthetic_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    """Listings of the rtr_dresses.csv columns: rent ≈ a brand's share of retail, $30 floor."""
    rng = np.random.default_rng(seed)
    share = {b: 0.10 + 0.02 * i for i, b in enumerate(BRANDS)}
    header = ["Brand", "Dress_Description", "Retail_price", "Rent_price", "Number_of_reviews",
              *FABRICS, "Length", "Sleeves", "Neckline"]  # fmt: skip
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            brand = BRANDS[i % len(BRANDS)]
            retail = float(rng.choice([150, 250, 350, 450, 600, 900]))
            rent = max(30.0, round(share[brand] * retail * rng.lognormal(0, 0.08) / 5) * 5)
            fabric = [0] * len(FABRICS)
            fabric[i % 3] = 100
            w.writerow(
                [
                    brand,
                    f"dress {i}",
                    f"${retail:,.0f}",
                    rent,
                    int(rng.integers(0, 200)),
                    *fabric,
                    ["mini", "midi", "maxi"][i % 3],
                    "sleeveless",
                    "v_neckline",
                ]
            )
    return path


def good_version(registry: Registry, data: Path) -> Ref:
    return build_price_model(registry, data, seed=0)


def bad_version(registry: Registry, data: Path) -> Ref:
    """A model whose prices are 3× too high: every check but the metric passes."""
    listings, _ = read_listings(data)
    train, holdout = listings.split(0.2, 0)
    model, _ = fit_price_model(train, seed=0)
    model.scale *= 3.0
    return register_price_model(registry, model, holdout, {"note": "deliberately 3x too high"})


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return synthetic_csv(tmp_path / "listings.csv")


def test_price_route_live_promote_rollback_reload(fresh_demo_home: Path, data: Path) -> None:
    home = fresh_demo_home
    key = api_key(home)
    kind = PriceKind(Settings(home=home))
    registry = kind.registry("model")
    with live_server(home, LOOKALIKE_SERVING__RELOAD_SECONDS="0.5") as server:
        # no price model yet: 503 naming the command, search stays healthy
        r = httpx.post(f"{server.base}/v1/price", json=DRESS, headers={"X-API-Key": key})
        assert r.status_code == 503 and "lookalike price build" in r.json()["error"]["message"]
        health = httpx.get(f"{server.base}/health").json()
        assert health["status"] == "ok", health["problems"]
        assert health["products"]["price"]["built"] is False
        assert health["products"]["search"]["status"] == "ok"
        # anonymous callers are refused: a merchandising tool needs a key
        assert httpx.post(f"{server.base}/v1/price", json=DRESS).status_code == 401

        first = good_version(registry, data)
        assert promote(kind, "model", first).status == "promoted"

        def ask() -> httpx.Response:
            return httpx.post(
                f"{server.base}/v1/price", json=DRESS, headers={"X-API-Key": key}, timeout=5
            )

        body = wait_for_version(ask, str(first))
        assert body["served_by"].startswith("price-") and body["fallback"] is None
        assert body["suggested_price"] >= body["floor"] == 30.0
        assert body["interval"]["low"] <= body["suggested_price"] <= body["interval"]["high"]
        step = body["rounded_to"]  # the step the build's CV chose from the training rents
        assert step in (0.0, 1.0, 5.0, 10.0)
        assert step == 0 or body["suggested_price"] % step == 0 or body["suggested_price"] == 30.0
        assert len(body["similar"]) == 5 and body["reason"].startswith("similar dresses")
        # the reason's range is the neighbours' own rents
        rents = [s["rent_price"] for s in body["similar"]]
        assert f"${min(rents):,.0f}" in body["reason"]

        swap_then_roll_back(server, kind, first, good_version(registry, data), ask)


def test_promote_refused_when_mape_gets_worse(tmp_path: Path, data: Path) -> None:
    kind = PriceKind(Settings(home=tmp_path))
    registry = kind.registry("model")
    good = good_version(registry, data)
    assert promote(kind, "model", good).status == "promoted"
    bad = bad_version(registry, data)
    outcome = promote(kind, "model", bad)
    assert outcome.status == "refused" and outcome.failed_checks == ["metric"]
    metric = outcome.report.get("metric") if outcome.report else None
    assert metric is not None and metric.figures["direction"] == "lower"
    assert metric.figures["candidate"] > metric.figures["production"] + 0.005
    assert registry.aliases(ARTIFACT_NAME)["production"] == good.version
    recorded = registry.manifest(bad)["checks"]
    assert recorded["passed"] is False and "metric" in recorded["results"]


def test_rule_of_thumb_answers_when_the_model_cannot_load(tmp_path: Path, data: Path) -> None:
    settings = Settings(home=tmp_path)
    kind = PriceKind(settings)
    registry = kind.registry("model")
    ref = good_version(registry, data)
    assert promote(kind, "model", ref).status == "promoted"
    (registry.path(ref) / "arrays.npz").write_bytes(b"not an npz file")  # damaged on disk
    slot = ProductSlot(kind, LoadContext(settings, StepPools(2))).load()
    assert slot.status == "degraded" and "rule of thumb" in " ".join(slot.problems)
    key = api_key(tmp_path)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/price", json=DRESS, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["served_by"] == "rule-of-thumb" and body["fallback"]
        manifest_ratio = registry.manifest(ref)["ratio"]
        expected = max(30.0, manifest_ratio * DRESS["retail_price"])
        assert body["suggested_price"] == pytest.approx(expected, abs=0.01)
        assert body["similar"] == [] and body["model_version"] == str(ref)
        assert body["rounded_to"] == 0.0  # the rule of thumb is not rounded
        health = client.get("/health").json()["products"]["price"]
        assert health["status"] == "degraded"


def test_bad_bodies_get_a_422_that_names_the_field(tmp_path: Path, data: Path) -> None:
    settings = Settings(home=tmp_path)
    kind = PriceKind(settings)
    assert promote(kind, "model", good_version(kind.registry("model"), data)).promoted
    key = api_key(tmp_path)
    cases = {
        "colour": {**DRESS, "colour": "red"},
        "retail_price": {**DRESS, "retail_price": -5},
        "fabrics": {**DRESS, "fabrics": {"unobtainium": 50}},
        "number_of_reviews": {**DRESS, "number_of_reviews": "many"},
        "brand": {**DRESS, "brand": "   "},
    }
    with TestClient(create_app(settings)) as client:
        for field, body in cases.items():
            r = client.post("/v1/price", json=body, headers={"X-API-Key": key})
            assert r.status_code == 422, (field, r.text)
            assert field in r.json()["error"]["message"], (field, r.text)
        # "NaN" and "Infinity" parse as floats: refused as not finite, not as out of range
        for value in ("NaN", "Infinity"):
            r = client.post(
                "/v1/price", json={**DRESS, "retail_price": value}, headers={"X-API-Key": key}
            )
            assert r.status_code == 422 and "finite number" in r.json()["error"]["message"]
        shares = {**DRESS, "fabrics": {"cotton": 150}}
        r = client.post("/v1/price", json=shares, headers={"X-API-Key": key})
        assert r.status_code == 422 and "between 0 and 100" in r.json()["error"]["message"]


def test_cli_build_and_suggest(tmp_path: Path, data: Path) -> None:
    from live import run_cli

    home = tmp_path / "home"
    home.mkdir()
    built = run_cli(home, "price", "build", "--data", str(data), check=True)
    assert "rental_price:1 is production" in built.stdout
    items = tmp_path / "new.csv"
    shutil.copy(data, items)
    run_cli(home, "price", "suggest", str(items), "--out", str(tmp_path / "out.csv"), check=True)
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == 400
    assert all(float(r["suggested_price"]) >= 30 for r in rows)
    assert all(float(r["low"]) <= float(r["suggested_price"]) <= float(r["high"]) for r in rows)
    step = float(rows[0]["rounded_to"])  # one model, one step: the merchandiser sees it per row
    assert {r["rounded_to"] for r in rows} == {rows[0]["rounded_to"]} and step in (0, 1, 5, 10)
    assert step == 0 or all(
        float(r["suggested_price"]) % step == 0 or float(r["suggested_price"]) == 30 for r in rows
    )
    assert rows[0]["reason"] and rows[0]["model_version"] == "rental_price:1"
    missing = run_cli(tmp_path / "empty", "price", "suggest", str(items))
    assert missing.returncode == 1 and "lookalike price build" in missing.stderr
