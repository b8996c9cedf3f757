"""Deploy gates with real artifacts: a bad model or index cannot become production.

The promote commands run as real ``lookalike`` subprocesses over a copy of the demo home. The
latency budgets are lifted in these tests (timing is not what they prove); one test sets an
impossible budget to show the latency check refuses.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_models import copy_model, register_onnx_model

from lookalike.catalog import CatalogStore
from lookalike.core.settings import Gates, Settings
from lookalike.embed import load_embedder
from lookalike.registry import Ref, Registry
from lookalike.search import build_index, update_index
from lookalike.search.gates import check_index, check_model

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]
NO_TIMING = {
    "LOOKALIKE_GATES__LATENCY_P95_MS": "100000",
    "LOOKALIKE_GATES__INDEX_LATENCY_P95_MS": "100000",
}


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **NO_TIMING, "LOOKALIKE_HOME": str(home), "COLUMNS": "250"}
    return subprocess.run([*LOOKALIKE, *args], env=env, capture_output=True, text=True, timeout=600)


def _settings(home: Path, **gates: float) -> Settings:
    budget = {"latency_p95_ms": 100_000.0, "index_latency_p95_ms": 100_000.0, **gates}
    return Settings(home=home, gates=Gates(**budget))


@pytest.fixture()
def home(fresh_demo_home: Path) -> Path:
    return fresh_demo_home


def _models(home: Path) -> Registry:
    return Registry(home / "models", "model")


def _aliases(home: Path, kind: str = "models", name: str = "effnet_lite0") -> dict[str, str]:
    return json.loads((home / kind / name / "aliases.json").read_text())


def test_good_model_passes_promotes_and_rolls_back(home: Path) -> None:
    models = _models(home)
    v2 = copy_model(models)
    out = _cli(home, "models", "promote", str(v2))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "effnet_lite0:2 is production" in out.stdout
    assert _aliases(home) == {"production": "2", "previous": "1"}
    checks = models.manifest(v2)["checks"]
    assert checks["passed"] is True
    assert set(checks["results"]) == {"checksums", "load", "output", "golden", "metric", "latency"}
    golden = checks["results"]["golden"]["figures"]
    assert golden["recall"]["@10"] >= 0.9 and golden["queries"] == 24
    metric = checks["results"]["metric"]["figures"]
    assert metric["production_ref"] == "effnet_lite0:1"
    assert metric["candidate"] == pytest.approx(metric["production"], abs=1e-6)

    out = _cli(home, "models", "rollback", "effnet_lite0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "now serving effnet_lite0:1" in out.stdout
    assert _aliases(home) == {"production": "1", "previous": "2"}
    assert models.versions("effnet_lite0") == ["1", "2"]  # nothing deleted


def test_corrupted_model_is_refused(home: Path) -> None:
    models = _models(home)
    v2 = copy_model(models)
    onnx_file = models.path(v2) / "model_fp32.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    onnx_file.write_bytes(bytes(data))
    out = _cli(home, "models", "promote", str(v2))
    assert out.returncode != 0
    assert "refused" in out.stdout and "checksums" in out.stdout
    assert "checksum does not match" in out.stdout
    assert _aliases(home) == {"production": "1"}
    checks = models.manifest(v2)["checks"]["results"]
    assert checks["checksums"]["passed"] is False and checks["load"]["passed"] is False


@pytest.mark.parametrize(
    ("kind", "dim", "reason"),
    [("nan", 1280, "not finite"), ("projection", 512, "output shape (1, 512)")],
    ids=["nan-output", "wrong-dim"],
)
def test_broken_output_is_refused(home: Path, kind: str, dim: int, reason: str) -> None:
    models = _models(home)
    bad = register_onnx_model(models, kind, dim=dim, manifest_dim=1280)
    out = _cli(home, "models", "promote", str(bad))
    assert out.returncode != 0
    assert "refused" in out.stdout
    assert _aliases(home) == {"production": "1"}
    results = models.manifest(bad)["checks"]["results"]
    assert results["checksums"]["passed"] is True  # a proper manifest: only the graph is bad
    assert results["load"]["passed"] is False and reason in results["load"]["message"]
    assert all(not results[n]["passed"] for n in ("output", "golden", "metric", "latency"))


def test_worse_model_is_refused_by_the_metric_with_both_figures(home: Path) -> None:
    models = _models(home)
    worse = register_onnx_model(models, "projection")
    report = check_model(_settings(home), worse)
    assert not report.passed
    # it is a working model: it loads, and its output is finite unit vectors
    for name in ("checksums", "load", "output", "latency"):
        assert report.get(name).passed, report.get(name)
    metric = report.get("metric")
    assert not metric.passed
    assert metric.figures["production_ref"] == "effnet_lite0:1"
    assert metric.figures["production"] - metric.figures["candidate"] > 0.02
    recorded = models.manifest(worse)["checks"]["results"]["metric"]["figures"]
    assert recorded["candidate"] == metric.figures["candidate"]
    assert recorded["production"] == metric.figures["production"]
    assert _aliases(home) == {"production": "1"}


def test_latency_budget_is_enforced(home: Path) -> None:
    report = check_model(_settings(home, latency_p95_ms=0.001), "effnet_lite0:1", record=False)
    latency = report.get("latency")
    assert not latency.passed and latency.figures["p95_ms"] > 0.001
    assert latency.figures["budget_p95_ms"] == 0.001  # the finding names the budget it broke
    assert [r.name for r in report.failed] == ["latency"]


def test_metric_on_a_pairs_file(home: Path, shared_data: Path, tmp_path: Path) -> None:
    viton = shared_data / "viton-dev"
    with open(viton / "pairs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"][:40]
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    worse = register_onnx_model(_models(home), "projection", seed=1)
    report = check_model(_settings(home), worse, pairs=pairs, root=viton, record=False)
    metric = report.get("metric")
    assert metric.figures["source"] == str(pairs) and metric.figures["direction"] == "higher"
    assert 0.0 <= metric.figures["candidate"] <= 1.0
    assert metric.figures["production"] >= 0.5  # 40 products: the real model finds most


def test_index_built_with_another_embedder_is_refused(home: Path) -> None:
    settings = _settings(home)
    models, indexes = _models(home), Registry(home / "index", "index")
    other = register_onnx_model(models, "projection")  # a second, real embedder (not promoted)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    try:
        ref = build_index(catalog, load_embedder(models, other), indexes)
    finally:
        catalog.close()
    out = _cli(home, "index", "promote", str(ref))
    assert out.returncode != 0
    assert "embedder" in out.stdout and "effnet_lite0:2" in out.stdout
    assert _aliases(home, "index", "catalog") == {"production": "1"}
    report = check_index(settings, ref, record=False)
    assert report.get("embedder").figures == {
        "index_embedder": "effnet_lite0:2",
        "model": "effnet_lite0:production",
    }


def test_good_index_promotes_and_rolls_back(home: Path) -> None:
    settings = _settings(home)
    models, indexes = _models(home), Registry(home / "index", "index")
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    try:
        embedder = load_embedder(models, "effnet_lite0:production")
        ref, added, removed = update_index(catalog, embedder, indexes)
    finally:
        catalog.close()
    assert (added, removed) == (0, 0)
    out = _cli(home, "index", "promote", str(ref))
    assert out.returncode == 0, out.stdout + out.stderr
    assert _aliases(home, "index", "catalog") == {"production": "2", "previous": "1"}
    results = indexes.manifest(ref)["checks"]["results"]
    assert results["retrieval"]["figures"]["method"] == "golden"
    assert results["retrieval"]["figures"]["recall@10"] >= 0.9
    assert results["count"]["figures"]["vectors"] == results["count"]["figures"]["catalog_images"]
    out = _cli(home, "index", "rollback", "catalog")
    assert out.returncode == 0 and "now serving catalog:1" in out.stdout
    assert _aliases(home, "index", "catalog") == {"production": "1", "previous": "2"}


def test_index_of_another_catalog_uses_self_retrieval(
    tmp_path: Path, built_models: Path, demo_images: list[Path]
) -> None:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(built_models, home / "models")
    settings = _settings(home, self_retrieval_sample=16)
    settings.var_dir.mkdir(parents=True)
    feed = tmp_path / "items.csv"
    with open(feed, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "category", "price", "available", "image"])
        for i, p in enumerate(demo_images[:24]):
            writer.writerow([f"OTHER-{i}", f"Dress {i}", "Dress", "30", "true", p.name])
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    try:
        catalog.create_schema()
        assert catalog.import_file(feed, demo_images[0].parent).ok
        models, indexes = _models(home), Registry(home / "index", "index")
        ref = build_index(catalog, load_embedder(models, "effnet_lite0:production"), indexes)
    finally:
        catalog.close()
    report = check_index(settings, ref)
    assert report.passed, report.to_dict()
    figures = report.get("retrieval").figures
    assert figures["method"] == "self" and figures["queries"] == 16 and figures["top1"] >= 0.95
    assert Registry(home / "index", "index").manifest(Ref("catalog", "1"))["checks"]["passed"]
