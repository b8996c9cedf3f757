"""Demand forecasts on the serving layer: both routes on a live server, promote → serve →
rollback → hot reload, a refused promote when MASE gets worse, the fallback chain when the
ridge's file is damaged, bad parameters, the build/buy CLI.

Artifacts are real: built from a small synthetic rental-reviews CSV (three categories, yearly
seasonality, growth; so these tests need no ../shared), registered and promoted through the one
promote path.
"""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from live import api_key, live_server, swap_then_roll_back, wait_for_version

from lookalike.core.settings import Settings
from lookalike.forecast.build import build_forecast
from lookalike.forecast.kind import ARTIFACT_NAME, ForecastKind
from lookalike.lifecycle import LoadContext, ProductSlot, StepPools, promote
from lookalike.registry import Ref, Registry
from lookalike.serve.app import create_app

CATEGORIES = {"dress": 6.0, "gown": 3.0, "top": 1.0}  # reviews a week per item at the start


def synthetic_forecast_rentals(path: Path, weeks: int = 160, seed: int = 0) -> Path:
    """Rental reviews of 24 items over ``weeks`` weeks: Poisson around a yearly season × growth.

    Item 0–7 dresses, 8–15 gowns, 16–23 tops; items 5, 13 and 21 start half-way (short history).
    """
    rng = np.random.default_rng(seed)
    start = np.datetime64("2015-01-05")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "review_date", "category", "fit", "rented_for"])
        user = 0
        for item in range(24):
            cat = list(CATEGORIES)[item // 8]
            base = CATEGORIES[cat] * (0.5 + (item % 8) / 8)
            first = weeks // 2 if item % 8 == 5 else 0
            for week in range(first, weeks):
                season = 1.0 + 0.6 * np.sin(2 * np.pi * week / 52.18)
                growth = 1.0 + 0.5 * week / 52
                for _ in range(rng.poisson(base * season * growth)):
                    day = start + np.timedelta64(7 * week + int(rng.integers(0, 7)), "D")
                    w.writerow([user, 1000 + item, str(day), cat, "fit", "party"])
                    user += 1
    return path


def good_forecast(registry: Registry, data: Path) -> Ref:
    return build_forecast(registry, data)


def bad_forecast(registry: Registry, data: Path) -> Ref:
    """Forecasts 3× too high: every check but the two metrics passes."""
    return build_forecast(registry, data, scale_ridge=3.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_forecast_rentals(tmp_path_factory.mktemp("forecast") / "rentals.csv")


def test_forecast_routes_live_promote_rollback_reload(fresh_demo_home: Path, data: Path) -> None:
    home = fresh_demo_home
    key = api_key(home)
    kind = ForecastKind(Settings(home=home))
    registry = kind.registry("model")
    headers = {"X-API-Key": key}
    with live_server(home, LOOKALIKE_SERVING__RELOAD_SECONDS="0.5") as server:
        r = httpx.get(f"{server.base}/v1/forecast/items/1000", headers=headers)
        assert r.status_code == 503 and "lookalike forecast build" in r.json()["error"]["message"]
        health = httpx.get(f"{server.base}/health").json()
        assert health["status"] == "ok", health["problems"]
        assert health["products"]["forecast"]["built"] is False
        # a buying tool: anonymous callers are refused
        assert httpx.get(f"{server.base}/v1/forecast/items/1000").status_code == 401

        first = good_forecast(registry, data)
        manifest = registry.manifest(first)
        metrics = manifest["metrics"]
        # the served blend, with its relative MAE and its fair-for-counts coverage recorded
        assert manifest["method"] == "ridge_tsb"
        assert 0 < metrics["rel_mae"] < 1 and 0 < metrics["rel_mae_categories"]
        assert 0 < metrics["pit_coverage80_items"] < 1
        assert manifest["evaluation"]["served"] == "ridge_tsb"
        assert promote(kind, "model", first).status == "promoted"

        def ask() -> httpx.Response:
            return httpx.get(
                f"{server.base}/v1/forecast/items/1000", headers={"X-API-Key": key}, timeout=5
            )

        body = wait_for_version(ask, str(first))
        assert body["served_by"] == "forecast-ridge" and body["fallback"] is None
        assert body["category"] == "dress" and "lower bound on rentals" in body["unit"]
        assert len(body["forecast"]) == 8 and len(body["history"]) == 12
        for week in body["forecast"]:
            assert 0 <= week["lower"] <= week["upper"]
            assert week["point"] > 0
        total = body["total"]
        assert total["point"] == pytest.approx(sum(w["point"] for w in body["forecast"]), abs=0.01)
        assert total["lower"] <= total["point"] <= total["upper"]
        # the history is the real last weeks of item 1000
        assert sum(h["reviews"] for h in body["history"]) > 0

        r = httpx.get(
            f"{server.base}/v1/forecast/categories/Gown",
            params={"weeks": 3, "level": 0.9},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        cat = r.json()
        assert cat["id"] == "gown" and cat["level"] == 0.9 and len(cat["forecast"]) == 3
        # the 90 % interval is at least as wide as the 80 % one
        r80 = httpx.get(
            f"{server.base}/v1/forecast/categories/gown", params={"weeks": 3}, headers=headers
        ).json()
        for w90, w80 in zip(cat["forecast"], r80["forecast"], strict=True):
            assert w90["lower"] <= w80["lower"] and w90["upper"] >= w80["upper"]

        swap_then_roll_back(server, kind, first, good_forecast(registry, data), ask)


def test_promote_refused_when_mase_gets_worse(tmp_path: Path, data: Path) -> None:
    kind = ForecastKind(Settings(home=tmp_path))
    registry = kind.registry("model")
    good = good_forecast(registry, data)
    assert promote(kind, "model", good).status == "promoted"
    bad = bad_forecast(registry, data)
    outcome = promote(kind, "model", bad)
    assert outcome.status == "refused"
    assert set(outcome.failed_checks) == {"metric", "metric_categories"}
    metric = outcome.report.get("metric") if outcome.report else None
    assert metric is not None and metric.figures["direction"] == "lower"
    assert metric.figures["candidate"] > metric.figures["production"] + 0.02
    assert registry.aliases(ARTIFACT_NAME)["production"] == good.version


def test_fallbacks_when_forecast_files_are_damaged(tmp_path: Path, data: Path) -> None:
    settings = Settings(home=tmp_path)
    kind = ForecastKind(settings)
    registry = kind.registry("model")
    ref = good_forecast(registry, data)
    assert promote(kind, "model", ref).status == "promoted"
    folder = registry.path(ref)
    (folder / "ridge.npz").write_bytes(b"not an npz file")
    slot = ProductSlot(kind, LoadContext(settings, StepPools(2))).load()
    assert slot.status == "degraded" and "ridge" in " ".join(slot.problems)
    key = api_key(tmp_path)
    with TestClient(create_app(settings)) as client:
        body = client.get("/v1/forecast/items/1003", headers={"X-API-Key": key}).json()
        assert body["served_by"] == "seasonal-naive" and "ridge" in body["fallback"]
        assert body["model_version"] == str(ref)
        # naive gone too: the item's share of its category; categories answer static zero
        (folder / "naive.npz").write_bytes(b"broken")
    slot = ProductSlot(kind, LoadContext(settings, StepPools(2))).load()
    with TestClient(create_app(settings)) as client:
        body = client.get("/v1/forecast/items/1003", headers={"X-API-Key": key}).json()
        assert body["served_by"] == "static-zero", body
        assert all(w["point"] == 0 for w in body["forecast"]) and body["fallback"]
        health = client.get("/health").json()["products"]["forecast"]
        assert health["status"] == "degraded"


def test_bad_parameters_and_unknown_series(tmp_path: Path, data: Path) -> None:
    settings = Settings(home=tmp_path)
    kind = ForecastKind(settings)
    assert promote(kind, "model", good_forecast(kind.registry("model"), data)).promoted
    headers = {"X-API-Key": api_key(tmp_path)}
    with TestClient(create_app(settings)) as client:
        for params, field in (({"weeks": 9}, "weeks"), ({"weeks": 0}, "weeks"),
                              ({"weeks": "two"}, "weeks"), ({"level": 1.5}, "level")):  # fmt: skip
            r = client.get("/v1/forecast/items/1000", params=params, headers=headers)
            assert r.status_code == 422, (params, r.text)
            assert field in r.json()["error"]["message"]
        r = client.get("/v1/forecast/items/1000", params={"level": 0.85}, headers=headers)
        assert r.status_code == 400 and "0.8 or 0.9" in r.json()["error"]["message"]
        for path in ("/v1/forecast/items/999999", "/v1/forecast/items/not-an-id",
                     "/v1/forecast/categories/ballgown"):  # fmt: skip
            r = client.get(path, headers=headers)
            assert r.status_code == 404, (path, r.text)
        # a short-history item (started half-way) is still forecast
        r = client.get("/v1/forecast/items/1005", headers=headers)
        assert r.status_code == 200 and r.json()["served_by"] == "forecast-ridge"


def test_cli_build_and_buy(tmp_path: Path, data: Path) -> None:
    from live import run_cli

    home = tmp_path / "home"
    home.mkdir()
    built = run_cli(home, "forecast", "build", "--data", str(data), "--promote", check=True)
    assert "demand_forecast:1 is production" in built.stdout, built.stdout
    stock = tmp_path / "stock.csv"
    stock.write_text("item_id,stock\n1000,1000\n1001,2\n")
    out = tmp_path / "buy.csv"
    args = ["--weeks", "8", "--service-level", "0.9", "--stock", str(stock), "--out", str(out)]
    run_cli(home, "forecast", "buy", *args, check=True)
    rows = {r["item_id"]: r for r in csv.DictReader(out.open())}
    assert len(rows) == 24
    assert rows["1000"]["buy"] == "0" and rows["1000"]["stock"] == "1000"
    one = rows["1001"]
    assert int(one["buy"]) == max(0, int(one["upper_q90"]) - 2)
    assert int(one["upper_q90"]) >= float(one["expected_reviews"])
    no_stock = rows["1002"]
    assert no_stock["stock"] == "" and int(no_stock["buy"]) == int(no_stock["upper_q90"])
    assert all(r["model_version"] == "demand_forecast:1" for r in rows.values())
    assert all(r["method"] == "ridge_tsb" for r in rows.values())  # the served blend
    missing = run_cli(tmp_path / "empty", "forecast", "buy", "--out", str(tmp_path / "x.csv"))
    assert missing.returncode == 1 and "lookalike forecast build" in missing.stderr
