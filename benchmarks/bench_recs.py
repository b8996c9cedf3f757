"""Recommendations routes against a real ``lookalike serve`` (uvicorn, one worker): p95 per route.

    python benchmarks/bench_recs.py                        # the full ../shared RTR reviews
    python benchmarks/bench_recs.py --runs 5 --requests 200 --json out.json

Builds the demo (``lookalike demo --no-serve``: model, catalog, index) in a temporary
LOOKALIKE_HOME, builds and promotes a recommendations model on the whole rentals file (the same
library call as ``lookalike recs build``), starts the server on 127.0.0.1 and sends ``--runs`` ×
``--requests`` sequential requests per route over one keep-alive connection:

- ``GET /v1/users/{id}/home``: RTR users with a history (a different one each request);
- ``POST /v1/users/{id}/events``: one viewed event each;
- ``GET /v1/occasions/{name}/items``: the occasions in turn;
- ``GET /v1/items/{id}/similar`` on RTR items (co-rental; they are not in the demo catalog) and
  on demo items (visual + co-rental blend; the demo items have no rentals: visual only).

Prints a table (median and p95 per route over every run, and the median of the runs' p95) and
writes JSON. Target: p95 ≤ 20 ms each. The per-minute rate limits are lifted for the run (the
meter's ledger write is still on every metered request).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import arguments, machine, print_runs, serving, timed, totals, write

from lookalike.catalog.rentals import DEFAULT_RENTALS, read_rentals
from lookalike.core.settings import Settings
from lookalike.lifecycle import promote
from lookalike.recs.build import build_recs_model
from lookalike.recs.kind import RecsKind
from lookalike.recs.model import RecsModel

TARGET_P95_MS = 20.0


def main() -> None:
    args = arguments(__doc__, "bench_recs", data=DEFAULT_RENTALS, requests=200).parse_args()
    if not args.data.is_file():
        sys.exit(f"no rental reviews at {args.data}: pass --data (../shared/data/rtr)")
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-recs-") as tmp:
        home = Path(tmp)
        # the per-minute meters (serve/access.py) would refuse a benchmark's rate: lift them
        limits = {
            f"LOOKALIKE_EXTENSION__{name}": "10000000"
            for name in ("RATE_PER_MINUTE", "ANONYMOUS_PER_MINUTE", "EVENTS_PER_MINUTE")
        }
        env = {**os.environ, "LOOKALIKE_HOME": str(home), **limits}
        subprocess.run(
            [sys.executable, "-m", "lookalike.cli", "demo", "--no-serve", "--catalog",
             str(repo / "demo" / "catalog" / "items.csv")],
            env=env, check=True, capture_output=True, cwd=home,
        )  # fmt: skip
        kind = RecsKind(Settings(home=home))
        rentals = read_rentals(args.data)
        ref = build_recs_model(kind.registry("model"), rentals)
        outcome = promote(kind, "model", ref)
        assert outcome.promoted, outcome.failed_checks
        model = RecsModel.load(kind.registry("model").path(ref))
        rng = np.random.default_rng(0)
        known = model.users[model.u_ptr[1:] - model.u_ptr[:-1] >= 2]
        users = [str(u) for u in rng.choice(known, args.requests, replace=False)]
        items = [str(i) for i in rng.choice(model.items, args.requests, replace=False)]
        demo_items = [f"LK-{n:04d}" for n in range(1, 61)]
        n = args.requests
        routes = {
            "GET /home": lambda c, i: c.get(f"/v1/users/{users[i]}/home"),
            "POST /events": lambda c, i: c.post(
                f"/v1/users/bench-{i}/events",
                json={"events": [{"item_id": items[i], "event": "viewed"}]},
            ),
            "GET /occasions": lambda c, i: c.get(
                f"/v1/occasions/{model.occasions[i % len(model.occasions)]}/items"
            ),
            "GET /similar (RTR item)": lambda c, i: c.get(f"/v1/items/{items[i]}/similar"),
            "GET /similar (demo item)": lambda c, i: c.get(
                f"/v1/items/{demo_items[i % len(demo_items)]}/similar"
            ),
        }
        runs: list[dict] = []

        def ok(r) -> None:
            assert r.status_code in (200, 202), (r.request.url.path, r.status_code, r.text)

        def calls(call, count: int):
            return (lambda i=i: call(client, i) for i in range(count))

        with serving(home, lambda c: c.get("/ready"), timeout=180, **limits) as client:
            for run in range(args.runs):
                entry: dict = {"run": run + 1}
                for name, call in routes.items():
                    timed(calls(call, min(20, n)), ok)  # warm-up
                    entry[name] = timed(calls(call, n), ok)
                runs.append(entry)
    total = totals(runs, routes)
    print(
        f"recs routes, {ref} on {len(rentals)} reviews ({len(model.items)} items, "
        f"{len(model.users)} users), one uvicorn worker on 127.0.0.1, {args.runs} runs"
    )
    print_runs(runs, total, list(routes), TARGET_P95_MS)
    doc = {
        "benchmark": "bench_recs",
        "data": str(args.data),
        "model": str(ref),
        "machine": machine(),
        "runs": runs,
        "routes": total,
        "target_p95_ms": TARGET_P95_MS,
    }
    write(args.json, doc)


if __name__ == "__main__":
    main()
