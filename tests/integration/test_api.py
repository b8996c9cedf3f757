"""The HTTP API over real artifacts: the default ONNX model, a FAISS index, SQLite, real photos."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.core.settings import Settings
from lookalike.registry import Ref, Registry
from lookalike.serve import create_app


def _client(home: Path, **limits: int) -> Iterator[TestClient]:
    settings = Settings(home=home)
    for key, value in limits.items():
        setattr(settings.limits, key, value)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def client(demo_home: Path) -> Iterator[TestClient]:
    yield from _client(demo_home, max_upload_bytes=8 * 1024 * 1024)


@pytest.fixture(scope="module")
def items(demo_catalog: Path) -> dict[str, dict[str, str]]:
    with open(demo_catalog / "items.csv", encoding="utf-8") as f:
        return {row["image"].split("/")[-1]: row for row in csv.DictReader(f)}


def _jpeg(path: Path, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size:
            im = im.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return buf.getvalue()


def _search(client: TestClient, data: bytes, name: str = "q.jpg", **params):
    return client.post("/v1/search", params=params, files={"image": (name, data, "image/jpeg")})


def test_a_catalog_photo_finds_its_own_item_first(client, demo_images, items) -> None:
    for path in demo_images[::60]:
        r = _search(client, _jpeg(path))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["results"][0]["item_id"] == items[path.name]["item_id"]
        assert body["results"][0]["score"] > 0.95
        assert len(body["results"]) == 20
        scores = [x["score"] for x in body["results"]]
        assert scores == sorted(scores, reverse=True)
        assert len({x["item_id"] for x in body["results"]}) == 20
        assert body["model_version"].startswith("effnet_lite0:")
        assert body["index_version"].startswith("catalog:")
        assert body["served_by"].startswith("onnxruntime-cpu")
        assert r.headers["x-request-id"] == body["request_id"]


def test_a_resized_recompressed_photo_still_finds_its_item(client, demo_images, items) -> None:
    path = demo_images[7]
    r = _search(client, _jpeg(path, size=(1000, 1500), quality=70))
    assert r.status_code == 200
    top5 = [x["item_id"] for x in r.json()["results"][:5]]
    assert items[path.name]["item_id"] in top5


def test_filters_by_category_and_availability(client, demo_images) -> None:
    data = _jpeg(demo_images[3])
    body = _search(client, data, category="Skirt", k=10).json()
    assert body["results"] and {x["category"] for x in body["results"]} == {"Skirt"}
    body = _search(client, data, available="true", k=50).json()
    assert len(body["results"]) == 50 and all(x["available"] for x in body["results"])
    body = _search(client, data, category="Dress", available="false").json()
    assert all(x["category"] == "Dress" and not x["available"] for x in body["results"])
    assert _search(client, data, category="Spacesuit").json()["results"] == []


def test_items_images_similar_and_categories(client) -> None:
    item = client.get("/v1/items/LK-0001")
    assert item.status_code == 200 and item.json()["item_id"] == "LK-0001"
    img = client.get(item.json()["image_urls"][0])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(img.content)).size[0] > 0
    similar = client.get("/v1/items/LK-0001/similar", params={"k": 5}).json()
    ids = [x["item_id"] for x in similar["results"]]
    assert len(ids) == 5 and "LK-0001" not in ids
    missing = client.get("/v1/items/NOPE-1")
    assert missing.status_code == 404 and "NOPE-1" in missing.json()["error"]["message"]
    assert client.get("/v1/items/LK-0001/image", params={"n": 5}).status_code == 404
    cats = {c["name"]: c["count"] for c in client.get("/v1/categories").json()["categories"]}
    assert cats["Dress"] > 250 and "Skirt" in cats


def test_health_ready_openapi_and_page(client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["runtime"]["served_by"].startswith("onnxruntime-cpu")
    assert health["runtime"]["reason"]
    assert health["index"]["vectors"] == 430
    assert client.get("/ready").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/search" in spec["paths"] and "/v1/items/{item_id}/similar" in spec["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_bad_input_gets_a_clear_4xx_and_the_server_stays_up(client, demo_images) -> None:
    good = _jpeg(demo_images[0])
    cases = {
        "text": (b"<html>not an image</html>", 415),
        "truncated": (good[: len(good) // 2], 422),
        "garbage_after_header": (good[:20] + b"\x00" * 2000, 422),
        "empty": (b"", None),
    }
    for name, (data, status) in cases.items():
        r = _search(client, data, name=f"{name}.jpg")
        if status is None:
            assert 400 <= r.status_code < 500, name
        else:
            assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["message"], name
    # a decompression bomb: tiny in bytes, 40k x 40k pixels
    buf = io.BytesIO()
    Image.new("1", (40_000, 40_000)).save(buf, "PNG")
    r = _search(client, buf.getvalue(), name="bomb.png")
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    # over the byte limit (8 MB in this client)
    r = _search(client, b"\xff\xd8" + b"\x00" * (9 * 1024 * 1024))
    assert r.status_code == 413
    # a wrong field name and out-of-range parameters
    r = client.post("/v1/search", files={"file": ("q.jpg", good, "image/jpeg")})
    assert r.status_code == 422 and "image" in r.json()["error"]["message"]
    assert _search(client, good, k=0).status_code == 422
    assert _search(client, good, k=500).status_code == 400
    assert _search(client, good, available="maybe").status_code == 422
    # and after all of that the server still answers
    assert _search(client, good).status_code == 200


def test_phone_photo_of_50_megapixels_is_a_normal_upload(demo_home, demo_images) -> None:
    data = _jpeg(demo_images[11], size=(5792, 8688), quality=85)
    assert len(data) < 30 * 1024 * 1024
    for c in _client(demo_home):
        r = _search(c, data)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 20


def test_without_an_index_the_server_is_up_but_not_ready(tmp_path, built_models) -> None:
    shutil.copytree(built_models, tmp_path / "models")
    for c in _client(tmp_path):
        assert c.get("/health").json()["status"] == "unavailable"
        assert c.get("/ready").status_code == 503
        r = c.post("/v1/search", files={"image": ("q.jpg", b"x", "image/jpeg")})
        assert r.status_code == 503 and "lookalike index build" in r.json()["error"]["message"]
        assert r.headers["retry-after"]


def test_index_from_another_embedder_is_refused_with_the_fix(fresh_demo_home) -> None:
    reg = Registry(fresh_demo_home / "index", "index")
    ref = reg.resolve("catalog:production")
    manifest_path = reg.path(ref) / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["embedder"] = "effnet_lite0:999"
    manifest_path.write_text(json.dumps(doc))
    for c in _client(fresh_demo_home):
        health = c.get("/health").json()
        assert health["status"] == "unavailable"
        text = " ".join(health["problems"])
        assert "effnet_lite0:999" in text and "lookalike index build" in text


def test_corrupt_production_index_falls_back_to_previous(fresh_demo_home) -> None:
    reg = Registry(fresh_demo_home / "index", "index")
    good = reg.resolve("catalog:production")
    with reg.create("catalog", reg.manifest(good) | {"note": "copy"}) as w:
        for name in ("index.faiss", "meta.json", "image_ids.npy"):
            shutil.copy(reg.path(good) / name, w.path / name)
    reg.promote(w.ref)
    (reg.path(w.ref) / "index.faiss").write_bytes(b"corrupted")
    for c in _client(fresh_demo_home):
        health = c.get("/health").json()
        assert health["status"] == "degraded"
        assert health["index"]["version"] == str(Ref("catalog", good.version))
        assert any("checksum" in p for p in health["problems"])
        r = c.get("/v1/items/LK-0002/similar")
        assert r.status_code == 200 and r.json()["index_version"] == str(good)


def test_result_links_open_the_item_page(client, demo_images) -> None:
    body = _search(client, _jpeg(demo_images[2]), k=3).json()
    link = body["results"][0]["url"]
    assert link == f"/items/{body['results'][0]['item_id']}"
    page = client.get(link)
    assert page.status_code == 200 and "/static/item.js" in page.text


def test_per_garment_results_name_their_region_and_box(client, demo_images, items) -> None:
    path = demo_images[20]
    r = _search(client, _jpeg(path), per_garment="true", k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["crop_mode"] == "multi" and len(body["groups"]) >= 2
    for group in body["groups"]:
        assert group["region"] and len(group["results"]) == 5
        if group["box"] is not None:
            x0, y0, x1, y1 = group["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    # the merged list still finds the photo's own item, and says which crop matched
    top = body["results"][0]
    assert top["item_id"] == items[path.name]["item_id"] and top["region"]
    assert _search(client, _jpeg(path), crops="whole").json()["crop_mode"] == "whole"
    bad = _search(client, _jpeg(path), crops="elbow")
    assert bad.status_code == 400 and "crops" in bad.json()["error"]["message"]
