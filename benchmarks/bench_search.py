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

``--stages`` also times each stage of one search in this process on the 1k catalog, with the
server's own pieces (the multipart parser, ``decode_image``, the embedder, the index, the
catalog rows, the response schema, the access logger), so their shares of the request are
known; the catalog-row and response stages are timed both the way a request did them before
(a database query; ``json.dumps`` of a validated model's dict) and the way it does now.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
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

import faiss
import httpx
import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.catalog.schema import images as images_table
from lookalike.catalog.schema import items as items_table
from lookalike.core.images import decode_image
from lookalike.core.settings import Settings
from lookalike.embed import load_embedder
from lookalike.index import create_index, suggest_factory
from lookalike.registry import Registry
from lookalike.search import Hit, SearchService
from lookalike.search.indexing import IDS_FILE, load_registry_index
from lookalike.serve.logs import access_logger
from lookalike.serve.schemas import ResultItem, SearchResponse, match_label, price_text

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
    subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def real_catalog(home: Path, models: Path, n: int) -> None:
    shutil.copytree(models, home / "models")
    src = SHARED / "clothing"
    rows = list(csv.DictReader(open(src / "labels.csv", encoding="utf-8")))[:n]
    feed = home / "items.csv"
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "category", "price", "available", "image"])
        for i, r in enumerate(rows):
            w.writerow(
                [
                    f"R-{i:05d}",
                    f"{r['label']} {i}",
                    r["label"],
                    20 + i % 100,
                    "true" if i % 5 else "false",
                    f"images/{r['file']}",
                ]
            )
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
            conn.execute(
                items_table.insert(),
                [
                    {
                        "item_id": f"S-{i:06d}",
                        "title": f"Synthetic dress {i}",
                        "category": "Dress",
                        "price": 20.0 + i % 150,
                        "available": bool(i % 4),
                        "url": None,
                        "updated_at": now,
                    }
                    for i in chunk
                ],
            )
            conn.execute(
                images_table.insert(),
                [
                    {
                        "item_id": f"S-{i:06d}",
                        "position": 0,
                        "media": media.media,
                        "sha256": media.sha256,
                        "width": media.width,
                        "height": media.height,
                    }
                    for i in chunk
                ],
            )
        conn.exec_driver_sql("UPDATE catalog_state SET value = value + 1 WHERE key='revision'")
    ids = np.asarray(
        [img.image_id for img in store.iter_images() if img.item_id.startswith("S-")], np.int64
    )
    z = rng.standard_normal((n_new, r)).astype(np.float32) * comp_std
    vecs = (
        mean
        + z @ vt[:r]
        + rng.standard_normal((n_new, real.shape[1])).astype(np.float32) * resid_std
    )
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    factory = suggest_factory(total, real.shape[1])
    index = create_index(factory, real.shape[1])
    allv = np.concatenate([real, vecs.astype(np.float32)])
    allid = np.concatenate([real_ids, ids])
    if not index.is_trained:
        index.train(allv)
    index.add(allv, allid)
    manifest = {
        **{k: base.manifest[k] for k in ("embedder", "dim")},
        "factory": factory,
        "count": int(len(allid)),
        "catalog_revision": store.revision(),
        "built_by": "bench_search synthetic growth",
    }
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
                buf, "JPEG", quality=90
            )
            out.append(buf.getvalue())
    return out


def _multipart(body: bytes) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://x/v1/search", files={"image": ("q.jpg", body, "image/jpeg")}
    )
    return request.read(), request.headers["content-type"]


def _parse(loop: asyncio.AbstractEventLoop, payload: bytes, content_type: str) -> bytes:
    """The server's multipart parse (Starlette's parser over python-multipart), as a route."""
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    async def stream():  # noqa: ANN202 - an async generator of the body, as ASGI gives it
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    async def run() -> bytes:
        form = await MultiPartParser(
            Headers({"content-type": content_type}), stream(), max_part_size=32 * 1024 * 1024
        ).parse()
        upload = form["image"]
        data = await upload.read()  # type: ignore[union-attr]
        await form.close()
        return data

    return loop.run_until_complete(run())


def _items(hits: list[Hit], labels: tuple = (), *, old: bool) -> bytes:
    def item(h: Hit) -> ResultItem:
        fields = dict(
            item_id=h.item.item_id,
            title=h.item.title,
            category=h.item.category,
            price=h.item.price,
            price_text=price_text(h.item.price),
            available=h.item.available,
            score=round(h.score, 4),
            match=match_label(h.score, labels),
            image_url="/v1/items/x/image",
            url=f"/items/{h.item.item_id}",
            region=h.region,
            box=None,
        )
        return ResultItem(**fields) if old else ResultItem.model_construct(**fields)

    rest = dict(
        model_version="m:1",
        index_version="catalog:1",
        served_by="cpu",
        took_ms=1.0,
        request_id="0" * 32,
    )
    if old:
        body = SearchResponse(results=[item(h) for h in hits], **rest)
        return json.dumps(
            body.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")
        ).encode()
    return (
        SearchResponse.model_construct(
            results=[item(h) for h in hits], groups=[], crop_mode="whole", fallback=None, **rest
        )
        .model_dump_json()
        .encode()
    )


def stages(home: Path, bodies: list[bytes], runs: int) -> dict:
    """Each stage of one search, timed in this process (median and p95 per stage, in ms)."""
    settings = Settings(home=home)
    store = CatalogStore.for_settings(settings)
    embedder = load_embedder(
        Registry(settings.models_dir, "model"),
        "effnet_lite0:production",
        runtime=settings.search.runtime,
    )
    index = load_registry_index(Registry(settings.index_dir, "index"), "catalog:production")
    service = SearchService(store, embedder, index, crops=settings.search.crops)
    log = access_logger(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    omp_default = faiss.omp_get_max_threads()
    limits = settings.limits
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    parts = [_multipart(b) for b in bodies]
    loop = asyncio.new_event_loop()
    for n in range(runs * len(bodies) + 10):
        payload, content_type = parts[n % len(parts)]
        data = timed("multipart parse", _parse, loop, payload, content_type)
        timed("sha256 (ETag input)", hashlib.sha256, data)
        pil = timed(
            "decode",
            decode_image,
            data,
            max_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
            max_decoded_pixels=limits.max_upload_pixels,
            max_decoded_bytes=limits.max_upload_decode_bytes,
        )
        regions, vectors = timed("crop + embed", service.query_vectors, pil)
        if getattr(embedder, "detector", None) is not None:  # inside "crop + embed": apart
            timed("(of which) garment detector", embedder.locate, [pil])
        # both ways, in turns (the one right after the embedder meets its spinning threads)
        for threads in (omp_default, 1) if n % 2 else (1, omp_default):
            faiss.omp_set_num_threads(threads)  # 1: as the server does now (serve/app.py)
            name = (
                "index search: 1 thread (now)"
                if threads == 1
                else f"index search: {threads} OpenMP threads (before)"
            )
            ranked = timed(name, service._ranked, vectors[0], k=20)
        ids = [item_id for item_id, *_ in ranked]
        timed("catalog rows: database (before)", store.get_items, ids)
        rows = timed("catalog rows: memory (now)", service.view.items, ids)
        hits = [Hit(rows[i], score, image_id) for i, score, image_id in ranked]
        timed("response: validate + json.dumps (before)", _items, hits, old=True)
        timed("response: construct + pydantic-core (now)", _items, hits, old=False)
        timed(
            "access log line",
            log.info,
            "request",
            request_id="0" * 32,
            method="POST",
            route="/v1/search",
            status=200,
            ms=12.3,
            model_version="m:1",
        )
        if n == 9:
            times.clear()  # warm-up done
    faiss.omp_set_num_threads(omp_default)
    store.close()
    loop.close()
    return {
        name: {
            "median_ms": round(statistics.median(v), 3),
            "p95_ms": round(pct(v, 95), 3),
            "n": len(v),
        }
        for name, v in times.items()
    }


def _start(home: Path, workers: int, src: Path | None) -> tuple[subprocess.Popen, str]:
    """``lookalike serve`` on ``home``; with ``src``, the code of that checkout's ``src/``."""
    port = free_port()
    # one client sends every request: the per-client rate limit is lifted for the benchmark
    env = {
        **os.environ,
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_EXTENSION__ANONYMOUS_PER_MINUTE": "1000000",
        "LOOKALIKE_EXTENSION__RATE_PER_MINUTE": "1000000",
    }
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookalike.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, f"http://127.0.0.1:{port}"


def measure(
    home: Path,
    bodies: list[bytes],
    runs: int,
    workers: int,
    crops: tuple[str, ...] = ("auto",),
    baseline: Path | None = None,
) -> list[dict]:
    """One server; for each crop mode, ``runs`` passes over ``bodies`` (one request at a time).

    With ``baseline`` (another checkout, e.g. ``git worktree add /tmp/base HEAD~1``) a second
    server runs that code on the same home and each photo goes to both in turn, so both see
    the same machine load: a before/after that other jobs on the machine cannot skew.
    """
    servers = {"now": _start(home, workers, None)}
    if baseline is not None:
        servers["baseline"] = _start(home, workers, baseline)
    clients = {code: httpx.Client(base_url=url, timeout=30) for code, (_, url) in servers.items()}
    try:
        health = {}
        for code, client in clients.items():
            for _ in range(300):
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            health[code] = client.get("/health").json()
        out = []
        for mode in crops:
            params = {} if mode == "auto" else {"crops": mode}

            def post(client: httpx.Client, body: bytes, params: dict = params) -> httpx.Response:
                return client.post(
                    "/v1/search", params=params, files={"image": ("q.jpg", body, "image/jpeg")}
                )

            for body in bodies[:20]:  # warm-up
                for client in clients.values():
                    post(client, body)
            per_run: dict[str, list[list[float]]] = {code: [] for code in clients}
            server_ms: dict[str, list[float]] = {code: [] for code in clients}
            regions = dict.fromkeys(clients, 0)
            for _ in range(runs):
                lat: dict[str, list[float]] = {code: [] for code in clients}
                for body in bodies:
                    for code, client in clients.items():
                        t0 = time.perf_counter()
                        r = post(client, body)
                        lat[code].append((time.perf_counter() - t0) * 1000)
                        r.raise_for_status()
                        doc = r.json()
                        server_ms[code].append(doc["took_ms"])
                        regions[code] += len({h.get("region") for h in doc["results"]})
                for code in clients:
                    per_run[code].append(lat[code])
            for code in clients:
                flat = [x for run in per_run[code] for x in run]
                out.append(
                    {
                        "code": code,
                        "crops": mode,
                        "served_by": health[code].get("runtime", {}).get("served_by"),
                        "model": health[code].get("model", {}).get("version"),
                        "index": health[code].get("index"),
                        "requests": len(flat),
                        "regions_per_answer": round(regions[code] / len(flat), 2),
                        "runs": [
                            {
                                "median_ms": round(statistics.median(r), 2),
                                "p95_ms": round(pct(r, 95), 2),
                            }
                            for r in per_run[code]
                        ],
                        "median_ms": round(statistics.median(flat), 2),
                        "p95_ms": round(pct(flat, 95), 2),
                        "server_took_median_ms": round(statistics.median(server_ms[code]), 2),
                        "server_took_p95_ms": round(pct(server_ms[code], 95), 2),
                    }
                )
    finally:
        for client in clients.values():
            client.close()
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        type=Path,
        default=REPO / "models",
        help="models/ folder with a production embedder",
    )
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--crops",
        default="auto",
        help="comma-separated crop modes to measure (auto = the model's own crop; "
        "multi = whole photo + garments, which needs a localiser for garments)",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of the code to compare with (its src/ is served on the "
        "same home, requests alternate between the two servers)",
    )
    ap.add_argument(
        "--stages",
        action="store_true",
        help="also time each stage of a search in-process at the first size",
    )
    ap.add_argument("--json", type=Path, default=REPO / "artifacts" / "bench_search.json")
    args = ap.parse_args()
    if not (SHARED / "clothing").is_dir():
        raise SystemExit(f"{SHARED} is absent: this benchmark needs ../shared/data")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    bodies = queries(args.requests)
    results = []
    stage_times: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        home = Path(tmp)
        real_catalog(home, args.models, min(sizes[0], 1000))
        if args.stages:
            stage_times = stages(home, bodies, args.runs)
        for size in sizes:
            factory = "real"
            if size > 1000:
                factory = grow_synthetic(home, size)
            for res in measure(
                home, bodies, args.runs, args.workers, tuple(args.crops.split(",")), args.baseline
            ):
                res = {"catalog_size": size, "index_factory": factory, **res}
                results.append(res)
                print(
                    json.dumps(
                        {
                            k: res[k]
                            for k in ("catalog_size", "code", "crops", "median_ms", "p95_ms")
                        }
                    )
                )
    print(
        f"\n{'catalog':>9} {'index':>22} {'code':>8} {'crops':>6} {'served_by':>22} "
        f"{'median ms':>10} {'p95 ms':>8} {'server p95':>10}"
    )
    for r in results:
        print(
            f"{r['catalog_size']:>9} {str(r['index']['factory']):>22} {r['code']:>8} "
            f"{r['crops']:>6} {r['served_by']:>22} {r['median_ms']:>10.1f} "
            f"{r['p95_ms']:>8.1f} {r['server_took_p95_ms']:>10.1f}"
        )
    if stage_times:
        now = [k for k in stage_times if "(before)" not in k and "(of which)" not in k]
        total = sum(stage_times[k]["median_ms"] for k in now)
        print(
            f"\n{'stage (1k items, in-process)':>44} {'median ms':>10} {'p95 ms':>8} "
            f"{'share now':>9}"
        )
        for name, t in stage_times.items():
            share = f"{t['median_ms'] / total * 100:8.1f}%" if name in now or "(of" in name else ""
            print(f"{name:>44} {t['median_ms']:>10.3f} {t['p95_ms']:>8.3f} {share:>9}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"benchmark": "search_e2e", "results": results, "stages": stage_times}, indent=2)
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
