"""End-to-end `POST /v1/search` latency against a real uvicorn on 127.0.0.1.

    python benchmarks/bench_search.py --models models/ [--sizes 1000,100000] [--requests 200]

For each catalog size it prepares a LOOKALIKE_HOME, starts `lookalike serve` as a subprocess and
sends 1000×1500 JPEG shopper photos one at a time (the latency a shopper sees, not throughput):
- 1k: 1,000 real photos from ../shared/data/clothing, imported and indexed by the real commands;
- 100k: those 1,000 real items plus synthetic items whose vectors are drawn from the real
  embeddings' distribution (mean + the top principal components of the real vectors, with the
  residual variance as isotropic noise), written as catalog rows and an index version.
Queries are street photos from ../shared/data/street (people, backgrounds) upscaled to 1000×1500.
Prints a table (client-side median/p95 per run, and over all runs) and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.catalog.schema import images as images_table
from lookalike.catalog.schema import items as items_table
from lookalike.core.settings import Settings
from lookalike.index import create_index, suggest_factory
from lookalike.registry import Registry
from lookalike.search.indexing import IDS_FILE, load_registry_index

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lookalike(home: Path, *args: str) -> None:
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "lookalike.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def real_catalog(home: Path, models: Path, n: int) -> None:
    shutil.copytree(models, home / "models")
    src = SHARED / "clothing"
    rows = list(csv.DictReader(open(src / "labels.csv", encoding="utf-8")))[:n]
    feed = home / "items.csv"
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "category", "price", "available", "image"])
        for i, r in enumerate(rows):
            w.writerow([f"R-{i:05d}", f"{r['label']} {i}", r["label"], 20 + i % 100,
                        "true" if i % 5 else "false", f"images/{r['file']}"])
    lookalike(home, "catalog", "import", str(feed), "--images", str(src))
    lookalike(home, "index", "build")


def grow_synthetic(home: Path, total: int, seed: int = 0) -> str:
    """Add synthetic items until the catalog holds ``total``; write and promote a new index."""
    settings = Settings(home=home)
    indexes = Registry(settings.index_dir, "index")
    base = load_registry_index(indexes, "catalog:production")
    real_ids = np.load(indexes.path(base.ref) / IDS_FILE)
    real = base.index.reconstruct(real_ids)
    rng = np.random.default_rng(seed)
    mean = real.mean(0)
    centred = real - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    r = min(256, len(s))
    comp_std = s[:r] / np.sqrt(len(real) - 1)
    resid = centred - (centred @ vt[:r].T) @ vt[:r]
    resid_std = float(resid.std())
    n_new = total - len(real_ids)
    store = CatalogStore(settings.db_url, settings.media_dir)
    media = next(store.iter_images())
    now = datetime.now(UTC)
    with store._engine.begin() as conn:  # bulk rows: a benchmark shortcut
        for start in range(0, n_new, 10_000):
            chunk = range(start, min(n_new, start + 10_000))
            conn.execute(items_table.insert(), [
                {"item_id": f"S-{i:06d}", "title": f"Synthetic dress {i}", "category": "Dress",
                 "price": 20.0 + i % 150, "available": bool(i % 4), "url": None,
                 "updated_at": now} for i in chunk])
            conn.execute(images_table.insert(), [
                {"item_id": f"S-{i:06d}", "position": 0, "media": media.media,
                 "sha256": media.sha256, "width": media.width, "height": media.height}
                for i in chunk])
        conn.exec_driver_sql("UPDATE catalog_state SET value = value + 1 WHERE key='revision'")
    ids = np.asarray(
        [img.image_id for img in store.iter_images() if img.item_id.startswith("S-")], np.int64
    )
    z = rng.standard_normal((n_new, r)).astype(np.float32) * comp_std
    vecs = mean + z @ vt[:r] + rng.standard_normal((n_new, real.shape[1])).astype(
        np.float32) * resid_std
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    factory = suggest_factory(total, real.shape[1])
    index = create_index(factory, real.shape[1])
    allv = np.concatenate([real, vecs.astype(np.float32)])
    allid = np.concatenate([real_ids, ids])
    if not index.is_trained:
        index.train(allv)
    index.add(allv, allid)
    manifest = {**{k: base.manifest[k] for k in ("embedder", "dim")}, "factory": factory,
                "count": int(len(allid)), "catalog_revision": store.revision(),
                "built_by": "bench_search synthetic growth"}
    with indexes.create("catalog", manifest) as w:
        index.save(w.path)
        np.save(w.path / IDS_FILE, np.sort(allid))
    indexes.promote(w.ref)
    store.close()
    return factory


def queries(n: int) -> list[bytes]:
    folder = SHARED / "street" / "images"
    paths = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if not paths:
        paths = sorted((SHARED / "clothing" / "images").glob("*.jpg"))[:n]
    out = []
    for p in paths:
        with Image.open(p) as im:
            buf = io.BytesIO()
            im.convert("RGB").resize((1000, 1500), Image.Resampling.BICUBIC).save(
                buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def measure(home: Path, bodies: list[bytes], runs: int, workers: int,
            crops: tuple[str, ...] = ("auto",)) -> list[dict]:
    """One server; for each crop mode, ``runs`` passes over ``bodies`` (one request at a time)."""
    port = free_port()
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(300):
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            health = client.get("/health").json()
            out = []
            for mode in crops:
                params = {} if mode == "auto" else {"crops": mode}

                def post(body: bytes, params: dict = params) -> httpx.Response:
                    return client.post("/v1/search", params=params,
                                       files={"image": ("q.jpg", body, "image/jpeg")})

                for body in bodies[:20]:  # warm-up
                    post(body)
                per_run = []
                server_ms: list[float] = []
                regions = 0
                for _ in range(runs):
                    lat = []
                    for body in bodies:
                        t0 = time.perf_counter()
                        r = post(body)
                        lat.append((time.perf_counter() - t0) * 1000)
                        r.raise_for_status()
                        doc = r.json()
                        server_ms.append(doc["took_ms"])
                        regions += len({h.get("region") for h in doc["results"]})
                    per_run.append(lat)
                flat = [x for run in per_run for x in run]
                out.append({
                    "crops": mode,
                    "served_by": health.get("runtime", {}).get("served_by"),
                    "model": health.get("model", {}).get("version"),
                    "index": health.get("index"),
                    "requests": len(flat),
                    "regions_per_answer": round(regions / len(flat), 2),
                    "runs": [{"median_ms": round(statistics.median(r), 2),
                              "p95_ms": round(pct(r, 95), 2)} for r in per_run],
                    "median_ms": round(statistics.median(flat), 2),
                    "p95_ms": round(pct(flat, 95), 2),
                    "server_took_median_ms": round(statistics.median(server_ms), 2),
                    "server_took_p95_ms": round(pct(server_ms, 95), 2),
                })
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=REPO / "models",
                    help="models/ folder with a production embedder")
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--crops", default="auto",
                    help="comma-separated crop modes to measure (auto = the model's own crop; "
                         "multi = whole photo + garments, which needs a localiser for garments)")
    ap.add_argument("--json", type=Path, default=REPO / "artifacts" / "bench_search.json")
    args = ap.parse_args()
    if not (SHARED / "clothing").is_dir():
        raise SystemExit(f"{SHARED} is absent: this benchmark needs ../shared/data")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    bodies = queries(args.requests)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        home = Path(tmp)
        real_catalog(home, args.models, min(sizes[0], 1000))
        for size in sizes:
            factory = "real"
            if size > 1000:
                factory = grow_synthetic(home, size)
            for res in measure(home, bodies, args.runs, args.workers,
                               tuple(args.crops.split(","))):
                res = {"catalog_size": size, "index_factory": factory, **res}
                results.append(res)
                print(json.dumps({k: res[k] for k in
                                  ("catalog_size", "crops", "median_ms", "p95_ms")}))
    print(f"\n{'catalog':>9} {'index':>22} {'crops':>6} {'served_by':>22} {'median ms':>10} "
          f"{'p95 ms':>8} {'server p95':>10}")
    for r in results:
        print(f"{r['catalog_size']:>9} {str(r['index']['factory']):>22} {r['crops']:>6} "
              f"{r['served_by']:>22} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} "
              f"{r['server_took_p95_ms']:>10.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "search_e2e", "results": results}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
