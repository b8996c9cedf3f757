"""A real `lookalike serve` (uvicorn) on 127.0.0.1 and the CLI end to end."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOOKALIKE_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.run([*LOOKALIKE, *args], env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"lookalike {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


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
    listing = _run(home, "index", "list").stdout
    assert "production" in listing and "effnet_lite0" in listing

    port = _free_port()
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    server = subprocess.Popen(
        [*LOOKALIKE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("server did not become ready")
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
    finally:
        server.terminate()
        server.wait(timeout=20)


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
