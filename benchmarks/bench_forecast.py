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

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import arguments, machine, print_runs, serving, timed, totals, write

from lookalike.catalog.rentals import DEFAULT_RENTALS
from lookalike.core.settings import Settings
from lookalike.forecast.build import build_forecast
from lookalike.forecast.kind import ARTIFACT_NAME, ForecastKind
from lookalike.forecast.tables import ForecastSeries
from lookalike.lifecycle import promote
from lookalike.registry import Ref
from lookalike.serve.auth import ApiKeyStore

TARGET_P95_MS = 20.0
ROUTES = ("items", "categories")


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


def main() -> None:
    args = arguments(
        __doc__, "bench_forecast", data=DEFAULT_RENTALS, requests=300,
        home="production forecast instead of building one",
    ).parse_args()  # fmt: skip
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
        first = f"/v1/forecast/items/{series.item_ids[0]}"

        def ok(r) -> None:
            assert r.status_code == 200, r.text
            assert r.json()["served_by"] == "forecast-ridge", r.text

        def get(url):
            return lambda: client.get(url)

        with serving(home, lambda c: c.get(first), headers={"X-API-Key": key}) as client:
            timed((get(u) for u in _paths(series, 30, seed=99)["items"]), ok)  # warm-up
            for run in range(args.runs):
                paths = _paths(series, args.requests, seed=run)
                entry: dict = {"run": run + 1}
                for route, urls in paths.items():
                    entry[route] = timed((get(u) for u in urls), ok)
                runs.append(entry)
    total = totals(runs, ROUTES)
    print(
        f"GET /v1/forecast/…, {ref} ({status}; {series.item_ids.size} items, "
        f"{series.categories.size} categories; built in {build_s:.0f} s), one uvicorn worker"
    )
    print_runs(runs, total, list(ROUTES), TARGET_P95_MS)
    doc = {
        "benchmark": "bench_forecast",
        "data": str(args.data),
        "model": str(ref),
        "items": int(series.item_ids.size),
        "categories": int(series.categories.size),
        "build_seconds": round(build_s, 1),
        "machine": machine(),
        "runs": runs,
        "total": total,
        "target_p95_ms": TARGET_P95_MS,
    }
    write(args.json, doc)


if __name__ == "__main__":
    main()
