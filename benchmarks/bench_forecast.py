"""GET /v1/forecast/items/{id} and /v1/forecast/categories/{name} against a real
``lookalike serve`` (uvicorn, one worker) at the data set's full size: latency per request.

    python benchmarks/bench_forecast.py                     # builds on ../shared fit_reviews
    python benchmarks/bench_forecast.py --data r.parquet --runs 5 --requests 300 --json out.json

Builds and promotes a demand forecast of every item and category into a temporary
LOOKALIKE_HOME (the same library calls as ``lookalike forecast build``; about a minute on the
full 192,544 reviews), starts the server on 127.0.0.1, creates an API key, then sends ``--runs``
× ``--requests`` sequential requests per route over one keep-alive connection (items drawn at
random from all 5,850, weeks 1–8 and level 0.8/0.9 varied). Prints a table (median and p95 per
run, and over all runs) and writes JSON. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from lookalike.catalog.rentals import DEFAULT_RENTALS
from lookalike.core.settings import Settings
from lookalike.forecast.build import build_forecast
from lookalike.forecast.kind import ARTIFACT_NAME, ForecastKind
from lookalike.forecast.tables import ForecastSeries
from lookalike.lifecycle import promote
from lookalike.registry import Ref
from lookalike.serve.auth import ApiKeyStore

TARGET_P95_MS = 20.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _paths(series: ForecastSeries, n: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    items = rng.choice(series.item_ids, size=n)
    cats = rng.choice(series.categories, size=n)
    weeks = rng.integers(1, 9, size=n)
    levels = rng.choice(["0.8", "0.9"], size=n)
    return {
        "items": [
            f"/v1/forecast/items/{i}?weeks={w}&level={lv}"
            for i, w, lv in zip(items, weeks, levels, strict=True)
        ],
        "categories": [
            f"/v1/forecast/categories/{c}?weeks={w}&level={lv}"
            for c, w, lv in zip(cats, weeks, levels, strict=True)
        ],
    }


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(float(np.percentile(samples, 95)), 3),
        "max_ms": round(max(samples), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_RENTALS)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--json", type=Path, default=Path("artifacts/bench_forecast.json"))
    ap.add_argument(
        "--home",
        type=Path,
        default=None,
        help="reuse this LOOKALIKE_HOME's production forecast instead of building one",
    )
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"no rental reviews at {args.data}: pass --data (Parquet or CSV)")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        home = args.home or Path(tmp)
        settings = Settings(home=home)
        kind = ForecastKind(settings)
        registry = kind.registry("model")
        built = time.perf_counter()
        if args.home is None:
            ref = build_forecast(registry, args.data)
            status = promote(kind, "model", ref).status
            assert status == "promoted", status
        else:
            ref = registry.resolve(Ref(ARTIFACT_NAME, "production"))
            status = "reused"
        build_s = time.perf_counter() - built
        series = ForecastSeries.load(registry.path(ref))
        store = ApiKeyStore(settings.db_url)
        store.create_schema()
        key = store.create("bench", role="extension")[1]
        port = _port()
        server_log = Path(tmp) / "server.log"
        log = open(server_log, "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--port", str(port)],
            env={**os.environ, "LOOKALIKE_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        first = f"/v1/forecast/items/{series.item_ids[0]}"
        try:
            deadline = time.monotonic() + 120
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as client:
                while True:  # up when the forecast answers (search has no model here)
                    try:
                        if client.get(first).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit(f"server did not answer:\n{server_log.read_text()}")
                    time.sleep(0.2)
                for path in _paths(series, 30, seed=99)["items"]:  # warm-up
                    client.get(path)
                for run in range(args.runs):
                    paths = _paths(series, args.requests, seed=run)
                    entry: dict = {"run": run + 1}
                    for route, urls in paths.items():
                        samples = []
                        for url in urls:
                            start = time.perf_counter()
                            r = client.get(url)
                            samples.append((time.perf_counter() - start) * 1000)
                            assert r.status_code == 200, r.text
                            assert r.json()["served_by"] == "forecast-ridge", r.text
                        entry[route] = {"requests": len(samples), **_stats(samples)}
                        entry[route]["samples"] = samples
                    runs.append(entry)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    total = {}
    for route in ("items", "categories"):
        every = [s for r in runs for s in r[route].pop("samples")]
        total[route] = {
            "requests": len(every),
            **_stats(every),
            "median_of_run_p95_ms": round(statistics.median(r[route]["p95_ms"] for r in runs), 3),
        }
    print(
        f"GET /v1/forecast/…, {ref} ({status}; {series.item_ids.size} items, "
        f"{series.categories.size} categories; built in {build_s:.0f} s), one uvicorn worker"
    )
    print(f"{'route':>11} {'run':>4} {'requests':>9} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for route in ("items", "categories"):
        for r in runs:
            f = r[route]
            print(
                f"{route:>11} {r['run']:>4} {f['requests']:>9} {f['median_ms']:>10.2f}"
                f" {f['p95_ms']:>8.2f} {f['max_ms']:>8.2f}"
            )
        t = total[route]
        print(
            f"{route:>11}  all {t['requests']:>9} {t['median_ms']:>10.2f} {t['p95_ms']:>8.2f}"
            f" {t['max_ms']:>8.2f}  (target p95 ≤ {TARGET_P95_MS:g} ms)"
        )
    doc = {
        "benchmark": "bench_forecast",
        "data": str(args.data),
        "model": str(ref),
        "items": int(series.item_ids.size),
        "categories": int(series.categories.size),
        "build_seconds": round(build_s, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
        "total": total,
        "target_p95_ms": TARGET_P95_MS,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
