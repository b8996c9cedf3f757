"""The serving contract in process: fallbacks, 503s, ETags, concurrency, freshness, metrics.

Every broken part is real: an ONNX graph that fails at run time, one that is slow, a FAISS index
of the wrong width behind a valid manifest. Nothing of ours is mocked.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from bad_models import copy_model
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.core.settings import Settings
from lookalike.embed import EmbedderInfo, PreprocessConfig, load_embedder
from lookalike.embed.runtime import LoadedEmbedder, onnx_session
from lookalike.index import create_index
from lookalike.registry import Ref, Registry
from lookalike.search import SearchService
from lookalike.search.indexing import load_registry_index
from lookalike.serve import create_app
from lookalike.serve.state import ServingState

MODEL = "effnet_lite0"


# -- real broken engines --------------------------------------------------------------------------
def _save(path: Path, nodes: list, inits: list) -> Path:
    graph = helper.make_graph(
        nodes,
        "broken",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 1280])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _i64(name: str, values: list[int] | int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def failing_graph(path: Path) -> Path:
    """Loads fine, fails on every run: 3*224*224 values cannot be reshaped to rows of 1281."""
    return _save(
        path,
        [helper.make_node("Reshape", ["pixels", "bad"], ["embedding"])],
        [_i64("bad", [-1, 1281])],
    )


def nan_graph(path: Path) -> Path:
    """Runs, but every output is NaN (0/0), as a model gone bad after its load check would."""
    nodes = [
        helper.make_node("Reshape", ["pixels", "flat"], ["x0"]),
        helper.make_node("Slice", ["x0", "starts", "ends", "axes"], ["x1"]),
        helper.make_node("Mul", ["x1", "zero"], ["x2"]),
        helper.make_node("Div", ["x2", "x2"], ["embedding"]),
    ]
    inits = [
        _i64("flat", [-1, 150528]),
        _i64("starts", [0]),
        _i64("ends", [1280]),
        _i64("axes", [1]),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    return _save(path, nodes, inits)


def slow_graph(path: Path, loops: int) -> Path:
    """A Loop of ``loops`` 147x1024 @ 1024x1024 MatMuls (~0.3 GFLOP each), then 1280 columns."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["x_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        helper.make_node("Reshape", ["pixels", "rows"], ["x0"]),
        helper.make_node("Loop", ["trips", "cond", "x0"], ["x1"], body=body),
        helper.make_node("Reshape", ["x1", "flat"], ["x2"]),
        helper.make_node("Slice", ["x2", "starts", "ends", "axes"], ["embedding"]),
    ]
    inits = [
        numpy_helper.from_array(np.eye(1024, dtype=np.float32), "W"),
        _i64("rows", [-1, 1024]),
        _i64("flat", [-1, 150528]),
        _i64("trips", loops),
        numpy_helper.from_array(np.array(True), "cond"),
        _i64("starts", [0]),
        _i64("ends", [1280]),
        _i64("axes", [1]),
    ]
    return _save(path, nodes, inits)


def slow_graph_taking(path: Path, seconds: float) -> Path:
    """A :func:`slow_graph` whose loop count makes one image take about ``seconds`` here."""
    probe = onnx_session(slow_graph(path, 20), ["CPUExecutionProvider"])
    pixels = np.zeros((1, 3, 224, 224), np.float32)
    probe.run(None, {"pixels": pixels})  # warm-up
    started = time.perf_counter()
    probe.run(None, {"pixels": pixels})
    per_loop = max((time.perf_counter() - started) / 20, 1e-5)
    return slow_graph(path, int(math.ceil(seconds / per_loop)))


def onnx_embedder(graph: Path, home: Path) -> LoadedEmbedder:
    """An embedder over ``graph`` that claims to be the production model (as a damaged runtime
    file would): same ref, dim and preprocessing, so the index pair check passes."""
    registry = Registry(home / "models", "model")
    ref = registry.resolve(f"{MODEL}:production")
    manifest = registry.manifest(ref)
    session = onnx_session(graph, ["CPUExecutionProvider"], threads=1)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"pixels": x})[0], dtype=np.float32)

    info = EmbedderInfo(str(ref), 1280, "fp32", "onnxruntime-cpu:fp32", "test graph")
    return LoadedEmbedder(run, PreprocessConfig.from_dict(manifest["preprocess"]), info)


# -- helpers --------------------------------------------------------------------------------------
def _jpeg(path: Path) -> bytes:
    with Image.open(path) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=90)
        return buf.getvalue()


def _search(client: TestClient, data: bytes, headers: dict | None = None, **params):
    files = {"image": ("q.jpg", data, "image/jpeg")}
    return client.post("/v1/search", params=params, files=files, headers=headers or {})


def _metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = client.get("/metrics").text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# /metrics is an admin route that a scrape from loopback may read without a key.
LOOPBACK = ("127.0.0.1", 50000)


def _app_with(home: Path, embedder: LoadedEmbedder, **serving: float) -> Iterator[TestClient]:
    settings = Settings(home=home)
    for key, value in serving.items():
        setattr(settings.serving, key, value)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    loaded = load_registry_index(Registry(settings.index_dir, "index"), "catalog:production")
    state = ServingState.for_service(settings, SearchService(catalog, embedder, loaded))
    with TestClient(create_app(settings, state=state), client=LOOPBACK) as client:
        yield client


def _copy_index(home: Path, note: str) -> Ref:
    return copy_model(Registry(home / "index", "index"), "catalog:production", note=note)


def _wrong_width_index(home: Path) -> Ref:
    """A valid artifact (checksums, embedder name) whose FAISS index is 64-d: fails on query."""
    reg = Registry(home / "index", "index")
    good = reg.resolve("catalog:production")
    ids = np.load(reg.path(good) / "image_ids.npy")
    index = create_index("Flat", 64)
    vectors = np.random.default_rng(0).normal(size=(len(ids), 64)).astype(np.float32)
    index.add(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), ids)
    with reg.create("catalog", reg.manifest(good) | {"note": "wrong width"}) as w:
        index.save(w.path)
        np.save(w.path / "image_ids.npy", ids)
    return w.ref


@pytest.fixture()
def query(demo_images: list[Path]) -> tuple[bytes, str]:
    """A catalog photo and the item it belongs to (LK ids follow the sorted image names)."""
    import csv

    path = demo_images[5]
    with open(path.parents[1] / "items.csv", encoding="utf-8") as f:
        item = next(r["item_id"] for r in csv.DictReader(f) if r["image"].endswith(path.name))
    return _jpeg(path), item


# -- fallbacks ------------------------------------------------------------------------------------
def test_failing_runtime_falls_back_to_torch_cpu(fresh_demo_home, tmp_path, query) -> None:
    pytest.importorskip("torch")
    data, item = query
    broken = onnx_embedder(failing_graph(tmp_path / "fail.onnx"), fresh_demo_home)
    for client in _app_with(fresh_demo_home, broken):
        r = _search(client, data)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["served_by"] == "torch-cpu"
        assert "onnxruntime-cpu:fp32 failed" in body["fallback"]
        assert body["results"][0]["item_id"] == item  # the fallback gives real answers
        assert _metric(client, "lookalike_fallbacks_total", stage="embed", reason="error") == 1
        # similar items read the item's vector back from the index: no CNN pass to fail
        similar = client.get(f"/v1/items/{item}/similar", params={"k": 3}).json()
        assert similar["served_by"] == "index-vector" and len(similar["results"]) == 3
        assert item not in [r["item_id"] for r in similar["results"]]
        assert _metric(client, "lookalike_fallbacks_total", stage="embed", reason="error") == 1


def test_runtime_answering_nan_falls_back_to_torch_cpu(fresh_demo_home, tmp_path, query) -> None:
    pytest.importorskip("torch")
    data, item = query
    bad = onnx_embedder(nan_graph(tmp_path / "nan.onnx"), fresh_demo_home)
    for client in _app_with(fresh_demo_home, bad):
        body = _search(client, data).json()
        assert body["served_by"] == "torch-cpu" and "not finite" in body["fallback"]
        assert body["results"][0]["item_id"] == item


def test_slow_runtime_times_out_and_torch_answers(fresh_demo_home, tmp_path, query) -> None:
    pytest.importorskip("torch")
    data, item = query
    # Sized on this machine: ~5 s per image, 10x the budget below, however fast the CPU is.
    slow = onnx_embedder(slow_graph_taking(tmp_path / "slow.onnx", 5.0), fresh_demo_home)
    for client in _app_with(fresh_demo_home, slow, step_budget_ms=500):
        r = _search(client, data)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["served_by"] == "torch-cpu"
        assert "timed out after 500 ms" in body["fallback"]
        assert body["results"][0]["item_id"] == item
        assert _metric(client, "lookalike_fallbacks_total", stage="embed", reason="timeout") == 1


def test_index_failing_on_query_falls_back_to_previous(fresh_demo_home, query) -> None:
    data, item = query
    reg = Registry(fresh_demo_home / "index", "index")
    good = reg.resolve("catalog:production")
    bad = _wrong_width_index(fresh_demo_home)
    reg.promote(bad)
    for client in _app_with_production(fresh_demo_home):
        assert client.get("/health").json()["index"]["version"] == str(bad)  # it loads fine
        body = _search(client, data).json()
        assert body["index_version"] == str(good)
        assert f"{bad}" in body["fallback"] and "dim" in body["fallback"]
        assert body["results"][0]["item_id"] == item
        assert _metric(client, "lookalike_fallbacks_total", stage="index") == 1


def _app_with_production(home: Path, **serving: float) -> Iterator[TestClient]:
    settings = Settings(home=home)
    for key, value in serving.items():
        setattr(settings.serving, key, value)
    with TestClient(create_app(settings), client=LOOPBACK) as client:
        yield client


def test_when_every_step_fails_the_answer_is_503_not_500(fresh_demo_home, query) -> None:
    reg = Registry(fresh_demo_home / "index", "index")
    reg.promote(_wrong_width_index(fresh_demo_home))
    reg.set_aliases("catalog", previous=None)
    for client in _app_with_production(fresh_demo_home):
        r = _search(client, query[0])
        assert r.status_code == 503
        assert r.headers["retry-after"]
        message = r.json()["error"]["message"]
        assert "every index step failed" in message and "lookalike index rollback" in message
        assert _metric(client, "lookalike_errors_total", status="503", code="unavailable") == 1


# -- caching --------------------------------------------------------------------------------------
def test_etag_304_and_a_promote_or_rollback_changes_it(fresh_demo_home, query) -> None:
    data = query[0]
    for client in _app_with_production(fresh_demo_home, reload_seconds=0):
        first = _search(client, data, k=5)
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "private, max-age=60"
        assert _search(client, data, k=5).headers["etag"] == etag
        again = _search(client, data, headers={"If-None-Match": etag}, k=5)
        assert again.status_code == 304 and again.content == b""
        assert _search(client, data, k=6).headers["etag"] != etag  # other input, other tag

        item = client.get("/v1/items/LK-0001")
        assert (
            client.get(
                "/v1/items/LK-0001", headers={"If-None-Match": item.headers["etag"]}
            ).status_code
            == 304
        )
        similar = client.get("/v1/items/LK-0001/similar")
        assert (
            client.get(
                "/v1/items/LK-0001/similar", headers={"If-None-Match": similar.headers["etag"]}
            ).status_code
            == 304
        )

        reg = Registry(fresh_demo_home / "index", "index")
        new = _copy_index(fresh_demo_home, "promote")
        reg.promote(new)
        assert client.app.state.serving.reload_if_changed()
        r = _search(client, data, headers={"If-None-Match": etag}, k=5)
        assert r.status_code == 200 and r.json()["index_version"] == str(new)
        assert r.headers["etag"] != etag
        s2 = client.get(
            "/v1/items/LK-0001/similar", headers={"If-None-Match": similar.headers["etag"]}
        )
        assert s2.status_code == 200

        reg.rollback("catalog")
        assert client.app.state.serving.reload_if_changed()
        back = _search(client, data, k=5)
        assert back.json()["index_version"] != str(new) and back.headers["etag"] == etag


# -- concurrency: admission at the door is tested in test_load.py (in process and on a real
# server), where the one limit lives.


# -- freshness and metrics ------------------------------------------------------------------------
def test_health_and_metrics_show_age_versions_and_staleness(fresh_demo_home, query) -> None:
    for client in _app_with_production(fresh_demo_home):
        health = client.get("/health").json()
        fresh = health["freshness"]
        assert health["status"] == "ok" and health["pid"] > 0
        assert fresh["artifacts"]["model"]["age_seconds"] >= 0
        assert fresh["artifacts"]["index"]["age_seconds"] >= 0
        assert fresh["catalog"]["index_behind"] is False
        _search(client, query[0])
        assert _metric(client, "lookalike_request_seconds_count", route="/v1/search") == 1
        release = "model=effnet_lite0:1,index=catalog:1"
        assert _metric(client, "lookalike_serving_info", product="search", release=release) == 1
        # the metric search is held to, as the served model's checks measured it
        (recall,) = [m for m in health["products"]["search"]["held_to"] if m["check"] == "metric"]
        assert recall["artifact"] == "effnet_lite0:1" and recall["metric"] == "recall@10"
        labels = {"product": "search", "artifact": "effnet_lite0:1", "metric": "recall@10"}
        assert _metric(client, "lookalike_model_metric", **labels) == recall["value"]
        text = client.get("/metrics").text
        assert "lookalike_in_flight " in text
        assert 'lookalike_degraded{product="search"} 0.0' in text
        assert 'lookalike_artifact_age_seconds{artifact="index",product="search"}' in text
        assert health["products"]["search"]["release"]["members"] == {
            "model": "effnet_lite0:1",
            "index": "catalog:1",
        }

    # A price or availability change needs no new index: nothing is behind (refresh agrees).
    settings = Settings(home=fresh_demo_home)
    store = CatalogStore(settings.db_url, settings.media_dir)
    store.set_available("LK-0001", not store.get_item("LK-0001").available)
    store.close()
    for client in _app_with_production(fresh_demo_home, index_max_age_hours=0):
        health = client.get("/health").json()
        assert health["freshness"]["catalog"]["index_behind"] is False
        assert health["status"] == "ok"

    # An item leaves the catalog: its images are still indexed, so the index is behind.
    store = CatalogStore(settings.db_url, settings.media_dir)
    store.delete_item("LK-0002")
    store.close()
    for client in _app_with_production(fresh_demo_home):
        health = client.get("/health").json()
        assert health["freshness"]["catalog"]["index_behind"] is True
        assert health["freshness"]["catalog"]["indexed_images_removed"] >= 1
        assert health["status"] == "ok"  # within the 24 h limit
    for client in _app_with_production(fresh_demo_home, index_max_age_hours=0):
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["freshness"]["stale"] is True
        assert any("index is stale" in p for p in health["problems"])
        assert _metric(client, "lookalike_index_stale") == 1
        assert _metric(client, "lookalike_degraded", product="search") == 1


def test_a_lost_catalog_database_degrades_search_at_once(fresh_demo_home, query) -> None:
    """The database file is gone (a new empty one is migrated at start-up) while the index
    still holds every photo: searches find nothing to show, so /health says so straight away
    instead of waiting for the index-age limit."""
    for suffix in ("", "-wal", "-shm"):
        (fresh_demo_home / "var" / f"catalog.db{suffix}").unlink(missing_ok=True)
    for client in _app_with_production(fresh_demo_home):
        found = _search(client, query[0])
        assert found.status_code == 200 and found.json()["results"] == []
        health = client.get("/health").json()
        search = health["products"]["search"]
        catalog = search["freshness"]["catalog"]
        indexed = catalog["indexed_images"]
        assert indexed > 0 and catalog["indexed_images_removed"] == indexed
        assert search["freshness"]["catalog_lost"] is True and not search["freshness"]["stale"]
        assert search["status"] == "degraded" and health["status"] == "degraded"
        (problem,) = [p for p in health["problems"] if "database" in p]
        assert f"no longer holds {indexed} of the index's {indexed} images" in problem
        assert "lookalike index build" in problem
        assert _metric(client, "lookalike_degraded", product="search") == 1


def test_a_torch_pinned_primary_has_no_second_embed_step(fresh_demo_home, query) -> None:
    """Pinned to torch-cpu, the chain is one step long and the answer says so."""
    pytest.importorskip("torch")
    emb = load_embedder(
        Registry(fresh_demo_home / "models", "model"), f"{MODEL}:production", runtime="torch-cpu"
    )
    for client in _app_with(fresh_demo_home, emb):
        body = _search(client, query[0]).json()
        assert body["served_by"] == "torch-cpu" and body["fallback"] is None
