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

import sys
import tempfile
from pathlib import Path

from harness import arguments, machine, print_runs, serving, timed, totals, write

from lookalike.core.settings import Settings
from lookalike.lifecycle import promote
from lookalike.price.build import build_price_model
from lookalike.price.evaluation import default_data
from lookalike.price.kind import HOLDOUT_FILE, PriceKind
from lookalike.price.listings import CATEGORICAL, FABRICS, read_listings
from lookalike.serve.auth import ApiKeyStore

TARGET_P95_MS = 20.0
ROUTE = "POST /v1/price"


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
    args = arguments(__doc__, "bench_price", data=None, requests=200).parse_args()
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
        runs: list[dict] = []

        def ok(r) -> None:
            assert r.status_code == 200, r.text

        def price(body):
            return lambda: client.post("/v1/price", json=body)

        def probe(c):  # up when price answers (search has no model in this home)
            return c.post("/v1/price", json=bodies[0])

        with serving(home, probe, headers={"X-API-Key": key}) as client:
            timed((price(b) for b in bodies[:20]), ok)  # warm-up
            for run in range(args.runs):
                runs.append({"run": run + 1, ROUTE: timed((price(b) for b in bodies), ok)})
    total = totals(runs, [ROUTE])
    print(f"{ROUTE}, {ref} ({outcome.status}), one uvicorn worker on 127.0.0.1")
    print_runs(runs, total, [ROUTE], TARGET_P95_MS)
    doc = {
        "benchmark": "bench_price",
        "data": str(data),
        "model": str(ref),
        "machine": machine(),
        "runs": runs,
        "total": total,
        "target_p95_ms": TARGET_P95_MS,
    }
    write(args.json, doc)


if __name__ == "__main__":
    main()
