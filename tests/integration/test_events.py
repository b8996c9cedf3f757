"""``POST /v1/events`` through the real app: stored rows, CTR@10, strict validation, pairs, and
only events of answers the server really gave (forged ones are refused and never exported)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lookalike.core.db import get_engine
from lookalike.core.settings import Settings
from lookalike.jobs.events import Event, EventStore, search_events
from lookalike.serve.app import create_app
from lookalike.serve.events import build_events_router


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    # The lead mounts the router in create_app; until then the test mounts it the same way.
    if not any(getattr(r, "path", None) == "/v1/events" for r in app.routes):
        app.include_router(build_events_router())
    return app


@pytest.fixture()
def client(fresh_demo_home: Path):
    with TestClient(_app(Settings(home=fresh_demo_home))) as c:
        yield c


def _search(client: TestClient, demo_images: list[Path]) -> tuple[str, list[str]]:
    data = demo_images[5].read_bytes()
    r = client.post("/v1/search?k=10", files={"image": ("q.jpg", io.BytesIO(data), "image/jpeg")})
    assert r.status_code == 200
    body = r.json()
    assert body["request_id"] == r.headers["X-Request-ID"]
    return body["request_id"], [hit["item_id"] for hit in body["results"]]


def test_impressions_and_clicks_give_ctr_at_10(client, fresh_demo_home, demo_images):
    clicked_search, items = _search(client, demo_images)
    other_search, other_items = _search(client, demo_images)
    for request_id, shown in ((clicked_search, items), (other_search, other_items)):
        events = [
            {"type": "impression", "request_id": request_id, "item_id": item, "position": i + 1}
            for i, item in enumerate(shown)
        ]
        r = client.post("/v1/events", json={"events": events})
        assert r.status_code == 202
        assert r.json() == {"accepted": 10, "duplicates": 0, "rejected": 0, "reasons": []}
    click = {
        "type": "click",
        "request_id": clicked_search,
        "item_id": items[2],
        "position": 3,
        "ts": "2026-01-02T03:04:05Z",
    }
    assert client.post("/v1/events", json={"events": [click]}).status_code == 202

    store = EventStore(Settings(home=fresh_demo_home).db_url)
    assert store.count() == 21
    ctr = store.ctr_at_10()
    assert (ctr.searches, ctr.clicked, ctr.ctr, ctr.clicks) == (2, 1, 0.5, 1)
    store.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"events": []}, "events: List should have at least 1 item"),
        (
            {"events": [{"type": "view", "request_id": "r", "item_id": "LK-0001", "position": 1}]},
            "type: Input should be 'impression' or 'click'",
        ),
        (
            {
                "events": [
                    {"type": "click", "request_id": "r" * 65, "item_id": "LK-0001", "position": 1}
                ]
            },
            "request_id: String should match pattern",
        ),
        (
            {"events": [{"type": "click", "request_id": "r", "item_id": "x" * 65, "position": 1}]},
            "item_id: String should have at most 64 characters",
        ),
        (
            {"events": [{"type": "click", "request_id": "r", "item_id": "LK-0001", "position": 0}]},
            "position: Input should be greater than or equal to 1",
        ),
        (
            {
                "events": [
                    {
                        "type": "click",
                        "request_id": "r",
                        "item_id": "LK-0001",
                        "position": 1,
                        "user_id": "u-1",
                    }
                ]
            },
            "user_id: Extra inputs are not permitted",
        ),
        (
            {
                "events": [
                    {"type": "impression", "request_id": "r", "item_id": "LK-0001", "position": 1}
                ]
                * 101
            },
            "events: List should have at most 100 items",
        ),
    ],
)
def test_invalid_events_get_422_with_a_clear_message(client, body, expected):
    r = client.post("/v1/events", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert expected in error["message"]


def test_clicks_on_similar_items_become_training_pairs(client, fresh_demo_home, tmp_path):
    r = client.get("/v1/items/LK-0010/similar?k=10")
    request_id = r.json()["request_id"]
    first = r.json()["results"][0]["item_id"]
    events = [
        {
            "type": "click",
            "request_id": request_id,
            "item_id": first,
            "position": 1,
            "query_item_id": "LK-0010",
            "surface": "similar",
        },
    ]
    r = client.post("/v1/events", json={"events": events * 2})
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicates"]) == (1, 1)
    # a replay of the same click is not counted again
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)

    store = EventStore(Settings(home=fresh_demo_home).db_url)
    out = tmp_path / "pairs.csv"
    assert store.export_pairs(out) == 1
    with open(out, newline="") as f:
        assert list(csv.DictReader(f)) == [
            {"query_item_id": "LK-0010", "clicked_item_id": first, "clicks": "1"}
        ]
    store.close()


def test_forged_events_are_refused_and_never_exported(
    client, fresh_demo_home, demo_images, tmp_path
):
    search_id, items = _search(client, demo_images)
    similar = client.get("/v1/items/LK-0010/similar?k=5").json()
    sim_id, sim_items = similar["request_id"], [h["item_id"] for h in similar["results"]]
    forged = [
        # an id this server never issued
        {"type": "click", "request_id": "made-up-1", "item_id": "LK-0001", "position": 1},
        # a photo search turned into a "similar" pair
        {
            "type": "click",
            "request_id": search_id,
            "item_id": items[0],
            "position": 1,
            "query_item_id": "LK-0003",
            "surface": "similar",
        },
        # a real similar answer, but another query item, a wrong position, an absent item
        {
            "type": "click",
            "request_id": sim_id,
            "item_id": sim_items[0],
            "position": 1,
            "query_item_id": "LK-0003",
            "surface": "similar",
        },
        {"type": "click", "request_id": sim_id, "item_id": sim_items[1], "position": 4},
        {"type": "click", "request_id": sim_id, "item_id": "LK-0010", "position": 1},
    ]
    r = client.post("/v1/events", json={"events": forged})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "events_rejected"
    assert "made-up-1" in error["message"] and "not a search or similar answer" in error["message"]

    # one good click among forged ones: 202 with the counts and reasons
    good = {
        "type": "click",
        "request_id": sim_id,
        "item_id": sim_items[1],
        "position": 2,
        "surface": "similar",
    }
    r = client.post("/v1/events", json={"events": [*forged, good]})
    assert r.status_code == 202
    assert (r.json()["accepted"], r.json()["rejected"]) == (1, len(forged))
    assert r.json()["reasons"]

    store = EventStore(Settings(home=fresh_demo_home).db_url)
    assert store.count() == 1
    out = tmp_path / "pairs.csv"
    assert store.export_pairs(out) == 1
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    # the query item is the one the server answered for, not the client's word
    assert rows == [{"query_item_id": "LK-0010", "clicked_item_id": sim_items[1], "clicks": "1"}]
    store.close()


def test_retention_deletes_old_events(fresh_demo_home):
    url = Settings(home=fresh_demo_home).db_url
    store = EventStore(url)
    store.create_schema()
    store.add_batch([Event("impression", f"r{i}", "LK-0001", 1) for i in range(5)])
    old = datetime.now(UTC) - timedelta(days=200)
    with get_engine(url).begin() as conn:
        conn.execute(
            sa.update(search_events)
            .where(search_events.c.request_id.in_(["r0", "r1", "r2"]))
            .values(received_at=old)
        )
    assert store.delete_older_than(180) == 3
    assert store.count() == 2
    assert store.delete_older_than(180) == 0
    store.close()
