"""A real `lookalike serve` (uvicorn) on 127.0.0.1 and the CLI end to end."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import httpx
import pytest
from live import live_server, run_cli
from PIL import Image


def _run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, check=check)


def test_cli_import_build_and_serve_over_real_uvicorn(tmp_path, built_models, demo_catalog):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(built_models, home / "models")
    # a small catalog of our own: JSONL with relative paths and one bad row
    images = sorted((demo_catalog / "images").glob("*.jpg"))[:40]
    lines = [
        f'{{"item_id": "T-{i}", "title": "Test dress {i}", "category": "Dress", '
        f'"price": {20 + i}, "available": {"true" if i % 2 else "false"}, '
        f'"image": "{p.name}"}}'
        for i, p in enumerate(images)
    ]
    lines.append('{"item_id": "T-bad", "title": "No image", "category": "Dress", "price": 5}')
    feed = tmp_path / "items.jsonl"
    feed.write_text("\n".join(lines) + "\n")
    out = _run(home, "catalog", "import", str(feed), "--images", str(demo_catalog / "images"))
    assert "T-bad" in out.stdout
    out = _run(home, "index", "build")
    assert "catalog:1" in out.stdout
    listing = run_cli(home, "index", "list", check=True, COLUMNS="80").stdout
    assert "production" in listing and "catalog:1" in listing
    # the embedder's whole ref (its version too) in 80 columns, nothing cut to "effnet_li…"
    assert "effnet_lite0:1" in listing and "…" not in listing
    assert max(len(line) for line in listing.splitlines()) <= 80

    with live_server(home) as server:
        base = server.base
        with Image.open(images[5]) as im:
            buf = io.BytesIO()
            im.convert("RGB").resize((1000, 1500)).save(buf, "JPEG", quality=90)
        r = httpx.post(f"{base}/v1/search", files={"image": ("q.jpg", buf.getvalue())}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["results"][0]["item_id"] == "T-5"
        assert len(body["results"]) == 20 and body["index_version"] == "catalog:1"
        r = httpx.post(f"{base}/v1/search", files={"image": ("x.jpg", b"nope")}, timeout=30)
        assert r.status_code == 415
        assert httpx.get(f"{base}/health", timeout=5).json()["status"] == "ok"


@pytest.mark.shared_data
def test_eval_retrieval_on_viton_dev_sample(tmp_path, built_models, shared_data):
    import shutil

    shutil.copytree(built_models, tmp_path / "models")
    viton = shared_data / "viton-dev"
    out = tmp_path / "eval.json"
    _run(
        tmp_path,
        "eval",
        "retrieval",
        "--pairs",
        str(viton / "pairs.csv"),
        "--root",
        str(viton),
        "--split",
        "val",
        "--limit",
        "100",
        "--json",
        str(out),
    )
    import json

    doc = json.loads(out.read_text())
    assert doc["queries"] == 100 and doc["gallery"] == 100
    r = doc["recall"]
    assert 0 <= r["@1"] <= r["@5"] <= r["@10"] <= r["@20"] <= 1
    # against 100 candidates, chance is 0.10 at @10; ImageNet features do better than chance
    assert r["@10"] > 0.10
