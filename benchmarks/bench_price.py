"""POST /v1/price against a real ``lookalike serve`` (uvicorn, one worker): latency per request.

    python benchmarks/bench_price.py                      # fits on ../shared rtr_dresses.csv
    python benchmarks/bench_price.py --data my.csv --runs 5 --requests 200 --json out.json

Builds and promotes a price model into a temporary LOOKALIKE_HOME (the same library calls as
``lookalike price build``), starts the server on 127.0.0.1, creates an API key, then sends
``--runs`` × ``--requests`` sequential requests over one keep-alive connection, each a different
held-out dress. Prints a table (median and p95 per run, and over all runs) and writes JSON.
The server is stopped at the end.
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

from lookalike.core.settings import Settings
from lookalike.lifecycle import promote
from lookalike.price.build import build_price_model
from lookalike.price.evaluation import default_data
from lookalike.price.kind import HOLDOUT_FILE, PriceKind
from lookalike.price.listings import CATEGORICAL, FABRICS, read_listings
from lookalike.serve.auth import ApiKeyStore


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies(holdout: Path, n: int) -> list[dict]:
    listings, _ = read_listings(holdout)
    out = []
    for i in range(min(n, len(listings))):
        out.append(
            {
                "brand": listings.brand[i],
                "retail_price": float(listings.retail[i]),
                **{k: listings.cats[k][i] for k in CATEGORICAL},
                "fabrics": {
                    f: float(v) for f, v in zip(FABRICS, listings.fabrics[i], strict=True) if v
                },
                "number_of_reviews": int(listings.reviews[i]),
                "description": listings.description[i],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", type=Path, default=Path("artifacts/bench_price.json"))
    args = ap.parse_args()
    data = args.data or default_data()
    if not data.is_file():
        sys.exit(f"no listings CSV at {data}: pass --data (rtr_dresses.csv columns)")
    with tempfile.TemporaryDirectory(prefix="bench-price-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home)
        kind = PriceKind(settings)
        ref = build_price_model(kind.registry("model"), data)
        outcome = promote(kind, "model", ref)
        assert outcome.promoted, outcome.failed_checks
        store = ApiKeyStore(settings.db_url)
        store.create_schema()
        key = store.create("bench", role="extension")[1]
        bodies = _bodies(kind.registry("model").path(ref) / HOLDOUT_FILE, args.requests)
        port = _port()
        log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--port", str(port)],
            env={**os.environ, "LOOKALIKE_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        runs: list[dict] = []
        try:
            deadline = time.monotonic() + 120
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as client:
                while True:  # the server is up when price answers (search has no model here)
                    try:
                        if client.post("/v1/price", json=bodies[0]).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit(f"server did not answer:\n{(home / 'server.log').read_text()}")
                    time.sleep(0.2)
                for body in bodies[:20]:  # warm-up
                    client.post("/v1/price", json=body)
                for run in range(args.runs):
                    samples = []
                    for body in bodies:
                        start = time.perf_counter()
                        r = client.post("/v1/price", json=body)
                        samples.append((time.perf_counter() - start) * 1000)
                        assert r.status_code == 200, r.text
                    runs.append(
                        {
                            "run": run + 1,
                            "requests": len(samples),
                            "median_ms": round(statistics.median(samples), 3),
                            "p95_ms": round(float(np.percentile(samples, 95)), 3),
                            "max_ms": round(max(samples), 3),
                            "samples": samples,
                        }
                    )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    every = [s for r in runs for s in r.pop("samples")]
    total = {
        "requests": len(every),
        "median_ms": round(statistics.median(every), 3),
        "p95_ms": round(float(np.percentile(every, 95)), 3),
        "median_of_run_p95_ms": round(statistics.median(r["p95_ms"] for r in runs), 3),
    }
    print(f"POST /v1/price, {ref} ({outcome.status}), one uvicorn worker on 127.0.0.1")
    print(f"{'run':>4} {'requests':>9} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for r in runs:
        print(
            f"{r['run']:>4} {r['requests']:>9} {r['median_ms']:>10.2f} {r['p95_ms']:>8.2f}"
            f" {r['max_ms']:>8.2f}"
        )
    print(
        f" all {total['requests']:>9} {total['median_ms']:>10.2f} {total['p95_ms']:>8.2f}"
        f"   (median of the runs' p95: {total['median_of_run_p95_ms']:.2f} ms; target ≤ 20)"
    )
    doc = {
        "benchmark": "bench_price",
        "data": str(data),
        "model": str(ref),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
        "total": total,
        "target_p95_ms": 20.0,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
