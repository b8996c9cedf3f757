"""POST /v1/fit and GET /v1/items/{id}/reviews?like_me=… against a real ``lookalike serve``
(uvicorn, one worker) at the data set's full size: latency per request.

    python benchmarks/bench_fit.py                     # builds on ../shared fit_reviews
    python benchmarks/bench_fit.py --data r.parquet --runs 5 --requests 300 --json out.json

Builds and promotes a fit model into a temporary LOOKALIKE_HOME (the same library calls as
``lookalike fit build --promote``) and imports every review into its rentals table (the same
call as ``lookalike fit import``), starts the server on 127.0.0.1, creates an API key, then
sends ``--runs`` × ``--requests`` sequential requests per route over one keep-alive connection.
Each request is one review of the later months drawn at random (so items come as often as
they are reviewed, busy items with thousands of reviews included) whose item the model knows:
its reviewer's measurements are the shopper (height, weight, bust, body type, usual size; a
missing one is left out), ``/v1/fit`` asks for every size of the item, ``reviews`` ranks the
item's reviews by ``like_me``. Prints a table (median and p95 per run, and over all runs) and
writes JSON. The server is stopped at the end. Reviews are a lower bound on rentals.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import arguments, machine, print_runs, serving, stats, timed, totals, write

from lookalike.catalog.rental_store import RentalStore
from lookalike.catalog.rentals import DEFAULT_RENTALS, Rentals, read_rentals
from lookalike.core.settings import Settings
from lookalike.lifecycle import promote
from lookalike.recs.fit import FitModel
from lookalike.recs.fit_build import build_fit_model, split_for_fit
from lookalike.recs.fit_kind import ARTIFACT_NAME, FitKind
from lookalike.recs.likeme import BODY_TYPES, SIZE_RANGE
from lookalike.registry import Ref
from lookalike.serve.auth import ApiKeyStore
from lookalike.serve.fit_routes import _CACHE_ITEMS  # the server's per-item review cache

TARGET_P95_MS = 20.0
ROUTES = ("fit", "reviews")


def _shopper(later: Rentals, i: int) -> dict[str, Any]:
    """The reviewer of row ``i`` as a shopper: only the measurements she gave."""
    out: dict[str, Any] = {}
    if math.isfinite(later.height_in[i]):
        out["height_in"] = float(later.height_in[i])
    if math.isfinite(later.weight_lbs[i]):
        out["weight_lbs"] = float(later.weight_lbs[i])
    if math.isfinite(later.bust_size_num[i]) and later.bust_size_letter[i]:
        out["bust"] = f"{int(later.bust_size_num[i])}{later.bust_size_letter[i]}"
    if later.body_type[i] in BODY_TYPES:
        out["body_type"] = str(later.body_type[i])
    size = later.size[i]
    if math.isfinite(size) and size == int(size) and SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        out["usual_size"] = int(size)
    return out


_LIKE_ME = {"height_in": "height", "weight_lbs": "weight", "bust": "bust",
            "body_type": "body_type", "usual_size": "size"}  # fmt: skip


def _like_me(shopper: dict[str, Any]) -> str:
    parts = []
    for key, name in _LIKE_ME.items():
        if key in shopper:
            v = shopper[key]
            parts.append(f"{name}:{v:g}" if isinstance(v, float) else f"{name}:{v}")
    return ",".join(parts) or "size:8"


def _requests(later: Rentals, known: np.ndarray, n: int, seed: int) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(known, size=n)
    fit, reviews = [], []
    for i in rows:
        item = str(later.item_id[i])
        shopper = _shopper(later, int(i))
        fit.append({"item_id": item, **shopper})
        reviews.append((f"/v1/items/{item}/reviews", {"like_me": _like_me(shopper)}))
    return {"fit": fit, "reviews": reviews}


def _send(client: httpx.Client, route: str, req: Any) -> httpx.Response:
    if route == "fit":
        return client.post("/v1/fit", json=req)
    path, params = req
    return client.get(path, params=params)


def _check(route: str, r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    doc = r.json()
    if route == "fit":
        assert doc["served_by"] == "fit-logistic" and doc["sizes"], r.text
    else:
        assert doc["fit_reviews"] and "similarity" in doc["fit_reviews"][0], r.text


class _SeenItems:
    """Which items the server's review cache holds (an LRU of ``_CACHE_ITEMS``, as the
    server's): a first ask reads all of the item's reviews from the database."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()

    def ask(self, item: str) -> bool:
        """True when ``item`` is cached before this ask."""
        hit = item in self._items
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > _CACHE_ITEMS:
            self._items.popitem(last=False)
        return hit


def main() -> None:
    args = arguments(
        __doc__, "bench_fit", data=DEFAULT_RENTALS, requests=300,
        home="production fit model and imported rentals",
    ).parse_args()  # fmt: skip
    if not args.data.is_file():
        sys.exit(f"no rental reviews at {args.data}: pass --data (Parquet or CSV)")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as tmp:
        home = args.home or Path(tmp)
        settings = Settings(home=home)
        kind = FitKind(settings)
        registry = kind.registry("model")
        rentals_store = RentalStore.for_settings(settings)
        built = time.perf_counter()
        if args.home is None:
            ref = build_fit_model(registry, args.data)
            status = promote(kind, "model", ref).status
            assert status == "promoted", status
        else:
            ref = registry.resolve(Ref(ARTIFACT_NAME, "production"))
            status = "reused"
        build_s = time.perf_counter() - built
        imported = time.perf_counter()
        if args.home is None:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
            rentals_store.create_schema()
            rentals_store.import_file(args.data)
        import_s = time.perf_counter() - imported
        stored = rentals_store.counts()
        model = FitModel.load(registry.path(ref))
        _, later, split = split_for_fit(read_rentals(args.data))
        known = np.flatnonzero(np.isin(later.item_id.astype(str), model.stats.ids.astype(str)))
        store = ApiKeyStore(settings.db_url)
        store.create_schema()
        key = store.create("bench", role="extension")[1]
        warm = _requests(later, known, 30, seed=99)
        seen = _SeenItems()
        load_before = os.getloadavg()

        def call(route: str, req: Any):
            return lambda: _send(client, route, req)

        def checker(route: str):
            return lambda r: _check(route, r)

        def probe(c: httpx.Client) -> httpx.Response:  # up when fit answers
            return _send(c, "fit", warm["fit"][0])

        with serving(home, probe, headers={"X-API-Key": key}) as client:
            for route in ROUTES:  # warm-up
                if route == "reviews":
                    for req in warm[route]:
                        seen.ask(req[0])
                timed((call(route, req) for req in warm[route]), checker(route))
            for run in range(args.runs):
                reqs = _requests(later, known, args.requests, seed=run)
                entry: dict = {"run": run + 1}
                for route in ROUTES:
                    cached = [route == "reviews" and seen.ask(req[0]) for req in reqs[route]]
                    entry[route] = timed((call(route, req) for req in reqs[route]), checker(route))
                    entry[route]["cached"] = cached
                runs.append(entry)
    split_reviews: dict[str, list[float]] = {"cached": [], "first ask": []}
    for r in runs:
        r["fit"].pop("cached")
        for ms, hit in zip(r["reviews"]["samples"], r["reviews"].pop("cached"), strict=True):
            split_reviews["cached" if hit else "first ask"].append(ms)
    total = totals(runs, ROUTES)
    total["reviews"]["by_cache"] = {
        k: {"requests": len(v), **stats(v)} for k, v in split_reviews.items() if v
    }
    load_after = os.getloadavg()
    print(
        f"POST /v1/fit and GET /v1/items/{{id}}/reviews?like_me=…, {ref} ({status}; "
        f"{len(model.stats.ids)} items; built in {build_s:.0f} s), {stored.rows} reviews stored "
        f"(imported in {import_s:.0f} s); shoppers = reviewers of {split}; one uvicorn worker; "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after"
    )
    print_runs(runs, total, list(ROUTES), TARGET_P95_MS)
    for name, t in total["reviews"]["by_cache"].items():
        hit, where = ("hit", "in") if name == "cached" else ("miss", "not in")
        print(
            f"{'reviews':>7} {hit:>4} {t['requests']:>9} {t['median_ms']:>10.2f}"
            f" {t['p95_ms']:>8.2f} {t['max_ms']:>8.2f}  (the item {where} the server's"
            f" {_CACHE_ITEMS}-item review cache)"
        )
    doc = {
        "benchmark": "bench_fit",
        "data": str(args.data),
        "model": str(ref),
        "items": len(model.stats.ids),
        "reviews_stored": stored.rows,
        "shoppers_from": split,
        "build_seconds": round(build_s, 1),
        "import_seconds": round(import_s, 1),
        "machine": machine(load_before),
        "runs": runs,
        "total": total,
        "target_p95_ms": TARGET_P95_MS,
    }
    write(args.json, doc)


if __name__ == "__main__":
    main()
