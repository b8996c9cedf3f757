"""The HTTP API over real artifacts: the default ONNX model, a FAISS index, SQLite, real photos."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.core.settings import Settings
from lookalike.registry import Ref, Registry
from lookalike.serve import create_app
from lookalike.serve.errors import public_message


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
    huge = client.get("/v1/items/" + "A" * 3000)  # quoted up to 64 characters, the id limit
    assert huge.status_code == 404 and len(huge.json()["error"]["message"]) < 120
    assert client.get("/v1/items/LK-0001/image", params={"n": 5}).status_code == 404
    # a photo the media store lost (a partial restore, a cleanup): a 404 that says so, not a 500
    catalog = client.app.state.serving.catalog
    photo = catalog.media_path(catalog.get_item("LK-0001").images[0])
    photo.rename(photo.with_suffix(".away"))
    try:
        lost = client.get("/v1/items/LK-0001/image")
    finally:
        photo.with_suffix(".away").rename(photo)
    assert lost.status_code == 404, lost.text
    assert "missing from the media store" in lost.json()["error"]["message"]
    assert str(photo) not in lost.text  # no server path in the answer
    assert client.get("/v1/items/LK-0001/image").status_code == 200
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
        "empty": (b"", 422),
    }
    for name, (data, status) in cases.items():
        r = _search(client, data, name=f"{name}.jpg")
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
    assert _search(client, good, k=500).status_code == 422  # one bound, one status
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
    # an unknown item is a page that says so, with a 404 and a way back, not an empty item
    missing = client.get("/items/NO-SUCH-ITEM")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "not in the catalog" in missing.text and 'href="/"' in missing.text
    assert "default-src 'self'" in missing.headers["content-security-policy"]


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


# --- security headers, error envelopes, documented answers (issue 10) -------------------------

PAGES = ("/", "/items/LK-0001", "/docs")


def test_pages_carry_a_strict_csp_and_load_only_their_own_files(client) -> None:
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        csp = r.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ):
            assert directive in csp, (path, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        # nothing that policy would refuse: no inline script, style or event handler
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
        assert not re.search(r"\sstyle=|\son[a-z]+=|<style", r.text, re.I), path
        # self-hosted: every script, sheet and link is this server's (no CDN)
        for ref in re.findall(r'(?:src|href)="([^"]*)"', r.text):
            assert ref.startswith(("/", "#", "data:")), (path, ref)
            if ref.startswith("/static/"):
                asset = client.get(ref)
                assert asset.status_code == 200 and asset.content, ref
    docs = client.get("/docs").text
    assert "/static/swagger-ui-bundle.js" in docs and "/static/docs.js" in docs


def test_every_answer_is_nosniff_and_api_answers_allow_nothing(client) -> None:
    answers = [
        client.get("/health"),
        client.get("/v1/categories"),
        client.get("/v1/items/NOPE-1"),
        client.get("/v1/items/LK-0001/image"),
        client.get("/no/such/route"),
        client.get("/openapi.json"),
    ]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert r.headers["x-frame-options"] == "DENY"


def _envelope(r, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "detail" not in r.text
    message = body["error"]["message"]
    assert message and len(message) < 600
    return message


def test_framework_errors_use_the_documented_envelope(client, demo_images) -> None:
    _envelope(client.get("/no/such/route"), 404, "not_found")
    # the unknown path is not echoed back
    assert "evil" not in _envelope(client.get("/v1/<evil>/x"), 404, "not_found")
    r = client.delete("/v1/categories")
    _envelope(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]
    _envelope(client.put("/v1/search"), 405, "method_not_allowed")
    as_json = {"content-type": "application/json"}
    message = _envelope(
        client.post("/v1/events", content=b"{not json", headers=as_json), 422, "invalid_request"
    )
    assert "JSON" in message
    # a body that cannot even be read as text, and a multipart body that does not parse
    _envelope(
        client.post("/v1/events", content=b"\xff\xfe{", headers=as_json), 400, "invalid_request"
    )
    multipart = {"content-type": "multipart/form-data; boundary=xyz"}
    broken = b"--xyz\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n\r\n"
    r = client.post("/v1/search", content=broken, headers=multipart)
    assert r.status_code in (400, 422), r.text
    _envelope(r, r.status_code, "invalid_request")
    # a path parameter of the wrong shape and a query of the wrong type
    _envelope(client.get("/v1/items/LK-0001/image", params={"n": "x"}), 422, "invalid_request")
    # and the server still answers
    assert _search(client, _jpeg(demo_images[0]), k=3).status_code == 200


def test_k_has_one_bound_and_one_status_in_schema_and_code(client, demo_home, demo_images) -> None:
    max_k = Settings().limits.max_k
    spec = client.get("/openapi.json").json()
    for path, method in (("/v1/search", "post"), ("/v1/items/{item_id}/similar", "get")):
        (k,) = [p for p in spec["paths"][path][method]["parameters"] if p["name"] == "k"]
        assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, max_k), path
    good = _jpeg(demo_images[1])
    assert len(_search(client, good, k=max_k).json()["results"]) == max_k
    for r in (
        _search(client, good, k=max_k + 1),
        client.get("/v1/items/LK-0001/similar", params={"k": max_k + 1}),
        client.get("/v1/items/LK-0001/similar", params={"k": 0}),
    ):
        assert "k:" in _envelope(r, 422, "invalid_request")
    # the bound follows the setting, in the schema and in the code alike
    for small in _client(demo_home, max_k=7):
        spec = small.get("/openapi.json").json()
        params = spec["paths"]["/v1/items/{item_id}/similar"]["get"]["parameters"]
        assert next(p for p in params if p["name"] == "k")["schema"]["maximum"] == 7
        assert small.get("/v1/items/LK-0001/similar", params={"k": 8}).status_code == 422
        assert small.get("/v1/items/LK-0001/similar", params={"k": 7}).status_code == 200


def test_every_documented_error_is_the_envelope(client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorResponse" in schemas
    for path, item in spec["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "401" in responses, (method, path)
            if op.get("requestBody"):
                assert {"400", "413", "422"} <= set(responses), (method, path)
            for status, answer in responses.items():
                if status[0] in "45" and "content" in answer:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)
    assert "403" in spec["paths"]["/metrics"]["get"]["responses"]  # an admin route
    assert "403" not in spec["paths"]["/v1/search"]["post"]["responses"]  # a public one
    ready = spec["paths"]["/ready"]["get"]["responses"]
    assert "503" in ready
    assert (
        "image/jpeg"
        in spec["paths"]["/v1/items/{item_id}/image"]["get"]["responses"]["200"]["content"]
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_public_message_drops_sql_hosts_database_urls_and_paths(tmp_path) -> None:
    # real driver errors, as a store would wrap them: SQL text and parameters
    engine = sa.create_engine("sqlite://")
    with pytest.raises(sa.exc.OperationalError) as sql_error, engine.connect() as conn:
        conn.execute(sa.text("SELECT secret FROM nope WHERE id = :id"), {"id": "x\x00"})
    text = public_message(f"catalog database error: {sql_error.value}")
    assert text == "catalog database error", text
    # a PostgreSQL URL with a password, and the driver naming the host it tried
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://lk:hunter2@127.0.0.1:{_closed_port()}/lk?connect_timeout=2"
    with pytest.raises(sa.exc.OperationalError) as down:
        sa.create_engine(url).connect()
    text = public_message(f"the events database is unavailable: {down.value} (url {url})")
    assert "127.0.0.1" not in text and "hunter2" not in text and "postgresql" not in text, text
    assert text.startswith("the events database is unavailable")
    # a file path keeps only its name; the API's own paths stay as they are
    bad = tmp_path / "index" / "catalog" / "3" / "index.faiss"
    text = public_message(f"{bad} is not a readable faiss index; see /v1/items/{{item_id}}")
    assert str(tmp_path) not in text and "index.faiss is not a readable" in text, text
    assert "/v1/items/{item_id}" in text


def test_a_database_failure_answers_without_sql_or_paths(fresh_demo_home) -> None:
    for c in _client(fresh_demo_home):
        assert c.get("/v1/items/LK-0001").status_code == 200
        db = Settings(home=fresh_demo_home).db_url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                if "item" in table or "image" in table:
                    conn.execute(f'DROP TABLE "{table}"')
        r = c.get("/v1/items/LK-0002")
        assert r.status_code >= 500, r.text
        message = r.json()["error"]["message"]
        for leak in ("SELECT", "FROM", "sqlite", "[SQL", str(fresh_demo_home), ".db"):
            assert leak not in message, message
        # the server is still up and says so
        assert c.get("/health").status_code == 200
