"""Recommendations on a live server: an event changes the next /home, an unknown user gets the
popular layout, similar items blend co-rental with visual neighbours, occasions, bad input.

The model is real: fitted on small rentals of the RTR shape plus shopper events on the demo
catalog's items (so co-rental and visual neighbours meet on the same ids), registered and
promoted through the one promote path. No ../shared needed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from live import live_server

from lookalike.catalog.rentals import rentals_from_records
from lookalike.core.settings import Settings
from lookalike.lifecycle import promote
from lookalike.recs.build import build_recs_model
from lookalike.recs.interactions import Interactions
from lookalike.recs.kind import RecsKind
from lookalike.registry import Ref, Registry

PAIRS = (("LK-0001", "LK-0002"), ("LK-0003", "LK-0004"))


def small_rentals(seed: int = 0, shuffle: bool = False):
    """Two taste groups over 2016–2017 (items 1–10 wedding gowns, 11–20 work sheaths)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {
        k: [] for k in ("user_id", "item_id", "review_date", "category", "rented_for")
    }
    for u in range(240):
        g = u % 2
        for _ in range(int(rng.integers(2, 5))):
            cols["user_id"].append(1000 + u)
            cols["item_id"].append(int(rng.integers(1, 11)) + 10 * g)
            cols["review_date"].append(str(np.datetime64("2016-01-01") + int(rng.integers(0, 730))))
            cols["category"].append("gown" if g == 0 else "sheath")
            cols["rented_for"].append("wedding" if g == 0 else "work")
    if shuffle:  # who rented what is noise: co-rental says nothing
        cols["item_id"] = list(rng.permutation(cols["item_id"]))
    return rentals_from_records(cols)


def demo_events() -> Interactions:
    """Shoppers who rented both demo items of each pair."""
    day = datetime(2017, 12, 20, tzinfo=UTC)
    rows = []
    for n in range(6):
        for a, b in PAIRS:
            rows += [(f"s{n}", a, "rented", day), (f"s{n}", b, "rented", day)]
    return Interactions.from_events(rows)


def good_recs_version(registry: Registry) -> Ref:
    return build_recs_model(registry, small_rentals(), events=demo_events())


def bad_recs_version(registry: Registry) -> Ref:
    """Rentals whose items were shuffled across users: NDCG@10 drops, the gate refuses it."""
    return build_recs_model(registry, small_rentals(shuffle=True), events=demo_events())


@pytest.fixture()
def recs_home(fresh_demo_home: Path) -> Path:
    kind = RecsKind(Settings(home=fresh_demo_home))
    outcome = promote(kind, "model", good_recs_version(kind.registry("model")))
    assert outcome.promoted, outcome.failed_checks
    return fresh_demo_home


def test_recs_on_a_live_server(recs_home: Path) -> None:
    with live_server(recs_home, LOOKALIKE_SERVING__RELOAD_SECONDS="1") as server:
        base = server.base
        health = httpx.get(f"{base}/health").json()
        assert health["products"]["recs"]["status"] == "ok"

        # unknown user: the popular layout, and says so
        page = httpx.get(f"{base}/v1/users/nobody/home", params={"month": 6}).json()
        assert page["personalised"] is False and page["served_by"] == "recs-popular"
        assert page["model_version"].startswith("recommendations:")
        assert {c["kind"] for c in page["carousels"]} <= {"occasion", "category"}

        # an event changes her next page within a second, without retraining
        r = httpx.post(
            f"{base}/v1/users/shopper-1/events",
            json={"events": [{"item_id": "LK-0001", "event": "viewed"}]},
        )
        assert r.status_code == 202, r.text
        started = time.monotonic()
        page = httpx.get(f"{base}/v1/users/shopper-1/home", params={"month": 6}).json()
        assert time.monotonic() - started < 1.0
        assert page["personalised"] is True and page["events_applied"] == 1
        for_you = page["carousels"][0]
        assert for_you["id"] == "for-you" and for_you["items"][0]["item_id"] == "LK-0002"
        assert for_you["items"][0]["in_catalog"] is True and for_you["items"][0]["title"]

        # similar: co-rental only, visual only (as before), the default blend
        co = httpx.get(f"{base}/v1/items/LK-0001/similar", params={"blend": 1, "k": 5}).json()
        assert co["results"][0]["item_id"] == "LK-0002" and "recs" in co["served_by"]
        visual = httpx.get(f"{base}/v1/items/LK-0001/similar", params={"blend": 0, "k": 5})
        plain = httpx.get(f"{base}/v1/items/LK-0001/similar", params={"k": 5}).json()
        assert "recs" not in visual.json()["served_by"]
        assert "recs" in plain["served_by"]  # default blend when a recs model serves
        ids = [r["item_id"] for r in visual.json()["results"]]
        assert "LK-0001" not in ids and len(ids) == 5
        # an item nobody rented: its visual neighbours only, and the answer says so
        new = httpx.get(f"{base}/v1/items/LK-0100/similar", params={"blend": 0.7, "k": 5})
        assert new.status_code == 200 and "no rentals" in (new.json()["fallback"] or "")
        # an item the rentals know but the catalog does not: co-rental only, not a 500
        rtr = httpx.get(f"{base}/v1/items/3/similar", params={"k": 3}).json()
        assert rtr["results"] and "not in the catalog" in rtr["fallback"]
        # its neighbours are rentals-only too: no made-up "$0 per rental", no photo link
        stub = next(r for r in rtr["results"] if "not in the catalog" in r["title"])
        assert stub["price"] is None and stub["price_text"] == "" and stub["image_url"] is None
        assert httpx.get(f"{base}/v1/items/nope-404/similar").status_code == 404

        # occasions
        wed = httpx.get(f"{base}/v1/occasions/wedding/items", params={"k": 5}).json()
        assert len(wed["items"]) == 5 and wed["served_by"].startswith("recs")
        missing = httpx.get(f"{base}/v1/occasions/bar-mitzvah/items")
        assert missing.status_code == 404 and "wedding" in missing.json()["error"]["message"]

        # bad input: 4xx that says what is wrong
        bad = httpx.post(
            f"{base}/v1/users/shopper-1/events",
            json={"events": [{"item_id": "LK-0001", "event": "liked"}]},
        )
        assert bad.status_code == 422 and "event" in bad.text
        too_many = {"events": [{"item_id": "LK-0001", "event": "viewed"}] * 51}
        assert httpx.post(f"{base}/v1/users/u/events", json=too_many).status_code in (413, 422)
        assert httpx.get(f"{base}/v1/users/bad%20id!/home").status_code == 422
        assert httpx.get(f"{base}/v1/users/u/home", params={"month": 13}).status_code == 422

        # the database gone while serving: her page still answers, from her rentals in the
        # model and without her recent events (and says so), never a 500; back: events count
        db = recs_home / "var" / "catalog.db"
        db.rename(db.with_suffix(".away"))
        time.sleep(0.6)  # past her events cached by the page above (EventStore's ttl_s)
        try:
            down = httpx.get(f"{base}/v1/users/shopper-1/home", params={"month": 6})
            assert down.status_code == 200, down.text
            assert down.json()["events_applied"] == 0
            assert "recent events not read" in down.json()["fallback"]
            lost = httpx.post(
                f"{base}/v1/users/shopper-1/events",
                json={"events": [{"item_id": "LK-0001", "event": "viewed"}]},
            )
            assert lost.status_code == 503 and lost.headers.get("retry-after"), lost.text
        finally:
            db.with_suffix(".away").rename(db)
        time.sleep(0.6)
        back = httpx.get(f"{base}/v1/users/shopper-1/home", params={"month": 6}).json()
        assert back["events_applied"] >= 1 and not (back["fallback"] or "").startswith("recent")
