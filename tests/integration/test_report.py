"""``lookalike report`` on the demo home: sections, embedded plots, real edge cases."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient
from test_fit_serving import synthetic_rentals
from test_price_serving import good_version as price_version
from test_price_serving import synthetic_csv

from lookalike.catalog import CatalogStore
from lookalike.catalog.rental_store import RentalStore
from lookalike.catalog.schema import items as items_table
from lookalike.core.settings import Settings
from lookalike.jobs.events import Event, EventStore
from lookalike.jobs.refresh import run_refresh
from lookalike.jobs.report import FEW_FIT_REVIEWS, collect_report, write_report
from lookalike.lifecycle import promote
from lookalike.search.gates import check_index
from lookalike.serve.app import create_app
from lookalike.serve.products import default_kinds


def test_report_shows_metrics_plots_and_edge_cases(fresh_demo_home: Path, tmp_path: Path):
    settings = Settings(home=fresh_demo_home)
    check_index(settings, "catalog:production")  # figures into the index manifest
    run_refresh(settings)  # one refresh report (nothing to do)
    with TestClient(create_app(settings)) as client:
        similar = client.get("/v1/items/LK-0100/similar?k=10").json()["results"]
    neighbours = [hit["item_id"] for hit in similar]
    with CatalogStore(settings.db_url, settings.media_dir) as store:
        store.set_available("LK-0100", True)
        for item_id in neighbours:
            store.set_available(item_id, False)
    engine = sa.create_engine(settings.db_url)
    with engine.begin() as conn:  # an item whose images never made it into the catalog
        conn.execute(
            sa.insert(items_table).values(
                item_id="NO-PHOTO",
                title="Mystery gown",
                category="Gown",
                price=10.0,
                available=True,
                url=None,
                updated_at=datetime.now(UTC),
            )
        )
    engine.dispose()
    events = EventStore(settings.db_url)
    events.create_schema()
    events.add_batch([Event("impression", "req-1", n, i + 1) for i, n in enumerate(neighbours)])
    events.add_batch([Event("click", "req-1", neighbours[0], 1)])

    data = collect_report(settings, default_kinds(settings), artifacts=[])
    lonely = {row["item_id"]: row for row in data.lonely}
    assert "LK-0100" in lonely and set(lonely["LK-0100"]["neighbours"]) == set(neighbours)
    assert data.items_without_images == ["NO-PHOTO"]
    assert ("Gown", 1) in data.categories
    index_rows = [v for v in data.versions if v["kind"] == "index"]
    (retrieval,) = index_rows[0]["metrics"]
    assert retrieval["metric"] == "recall@10" and index_rows[0]["checks"] is True
    assert index_rows[0]["product"] == "search" and 0.0 <= retrieval["value"] <= 1.0
    assert data.ctr is not None and data.ctr["ctr"] == 1.0

    out = write_report(settings, tmp_path / "report.html", default_kinds(settings), artifacts=[])
    page = out.read_text()
    for section in (
        "The metric each product is held to",
        "Latency percentiles",
        "Fallback rate",
        "Edge cases worth a human",
    ):
        assert section in page
    assert len(re.findall(r"src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", page)) >= 3
    assert "LK-0100" in page and "NO-PHOTO" in page and "CTR@10" in page
    assert "not yet measured: stock is not modelled" in page  # not faked
    assert "no rental reviews yet" in page or "rentals tables are missing" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_report_command_writes_the_file(fresh_demo_home: Path, tmp_path: Path):
    from lookalike.cli.main import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    module = "lookalike.cli" if "report" in names else "lookalike.cli.refresh"
    out = tmp_path / "r.html"
    done = subprocess.run(
        [sys.executable, "-m", module, "report", "--out", str(out)],
        env={"LOOKALIKE_HOME": str(fresh_demo_home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    assert "The metric each product is held to" in page and "Latency percentiles" in page


def test_report_holds_each_product_to_its_own_metric(fresh_demo_home: Path, tmp_path: Path):
    """A price model's MAPE is shown as MAPE (lower is better), never in search's Recall@10
    column; a product with nothing built says which command builds it; the fit edge cases are
    counted from the rental reviews the home holds."""
    settings = Settings(home=fresh_demo_home)
    kinds = default_kinds(settings)
    price = kinds.for_product("price")
    ref = price_version(price.registry("model"), synthetic_csv(tmp_path / "listings.csv"))
    assert promote(price, "model", ref).status == "promoted"
    rentals = RentalStore.for_settings(settings)
    rentals.create_schema()
    rentals.import_file(synthetic_rentals(tmp_path / "rentals.csv", n=1500))

    data = collect_report(settings, kinds, artifacts=[])
    products = {p["product"]: p for p in data.products}
    assert set(products) == {k.product for k in kinds}
    (mape,) = products["price"]["production"]
    manifest = price.registry("model").manifest(ref)
    assert mape["metric"] == "mape" and mape["direction"] == "lower"
    assert round(mape["value"], 4) == manifest["metrics"]["mape"]  # the manifest rounds
    search = products["search"]["production"]  # the release a server loads: model + index
    assert {m["metric"] for m in search} == {"recall@10"}
    assert {m["artifact"] for m in search} == {
        str(ref) for ref in kinds.for_product("search").release("production").members.values()
    }
    assert products["forecast"]["production"] == [] and products["forecast"]["versions"] == 0
    fit = data.fit_data
    assert fit is not None and fit["reviews"] == rentals.count_rows()
    assert sum(fit["users_by_reviews"].values()) == fit["users"] == rentals.counts().users
    sizes = dict(rentals.group_counts("size"))
    assert {t["value"] for t in fit["thin"] if t["by"] == "size"} == {
        s for s, n in sizes.items() if n < FEW_FIT_REVIEWS
    }

    page = write_report(settings, tmp_path / "r.html", kinds, artifacts=[]).read_text()
    assert f"<td>{ref}</td><td>mape</td><td>lower</td>" in page
    assert "run `lookalike forecast build`" in page
    assert "Recall@10</th>" not in page  # no one column for every product's metric
    assert "not yet measured</span> (products not built yet)" not in page
