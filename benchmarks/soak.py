"""Soak: the realistic mix for N minutes at 70 % of the sustained search throughput; server
memory (RSS of the server and its workers) must grow less than 5 %.

    python benchmarks/soak.py --models models/ [--home DIR] [--minutes 10]
        [--searches-per-s R | --from artifacts/bench_load.json] [--fraction 0.7]
        [--json artifacts/soak.json]

The offered search rate is ``--fraction`` x the sustained figure of benchmarks/bench_load.py
(``--from`` its JSON) or ``--searches-per-s``, for searches and similar-item lookups together
(both take admission slots; 5 of the mix's 13 tasks); the cheap routes of
benchmarks/locustfile.py come on top in their weights. RSS is sampled every
``--sample-seconds``; the baseline is the median of the samples in the minute after the warm-up
(``--warmup-seconds``), the end the median of the last three samples. Prints a table and writes
JSON. The 10-minute run is for an idle machine; ``--minutes 1`` is the short check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import (  # noqa: E402
    REPO,
    Server,
    machine,
    prepare_home,
    run_locust,
    summarize,
    users_for,
)

GROWTH_LIMIT = 0.05
# The locustfile's weights: search 3 and similar 2 of 3+2+2+1+4+1. Both take admission slots,
# so the 70 % applies to the two together.
EXPENSIVE_SHARE = 5 / 13
ROUTES = (
    "/v1/search",
    "/v1/items/{id}/similar",
    "/v1/items/{id}",
    "/items/{id}",
    "/v1/items/{id}/image",
    "/health",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--searches-per-s", type=float, default=None)
    ap.add_argument("--from", dest="from_json", type=Path, default=None)
    ap.add_argument("--fraction", type=float, default=0.7)
    ap.add_argument("--warmup-seconds", type=float, default=30.0)
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=REPO / "artifacts" / "soak.json")
    args = ap.parse_args()

    if args.searches_per_s is not None:
        sustained = args.searches_per_s
    elif args.from_json is not None:
        sustained = float(json.loads(args.from_json.read_text())["sustained_per_s"])
    else:
        sys.exit("give --searches-per-s or --from artifacts/bench_load.json")
    searches = args.fraction * sustained
    total_rate = searches / EXPENSIVE_SHARE
    users = users_for(total_rate)
    seconds = args.minutes * 60
    if seconds <= args.warmup_seconds + 3 * args.sample_seconds:
        sys.exit("the run must be longer than the warm-up plus three samples")

    host = machine()  # before our own load: the load average says what else was running
    home = prepare_home(args.models, args.home)
    server = Server(home, args.workers)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - started, server.rss_bytes()))
            stop.wait(args.sample_seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    print(
        f"soak: {args.minutes:g} min, {searches:.2f} searches+similar/s ({args.fraction:.0%} of "
        f"{sustained:.2f}) in a mix of {total_rate:.2f} requests/s, {users} users"
    )
    try:
        sampler.start()
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_locust(
                server.base,
                seconds=seconds,
                users=users,
                rate=total_rate,
                mix="realistic",
                workdir=Path(tmp),
            )
    finally:
        stop.set()
        sampler.join()
        server.stop()

    after_warmup = [r for t, r in samples if args.warmup_seconds <= t < args.warmup_seconds + 60]
    baseline = statistics.median(after_warmup or [r for _, r in samples[:3]])
    end = statistics.median([r for _, r in samples[-3:]])
    growth = (end - baseline) / baseline
    routes = {name: summarize(rows, args.warmup_seconds, name) for name in ROUTES}
    server_errors = sum(1 for _, _, status, _ in rows if status >= 500 and status != 503)

    print(f"\n{'route':<26} {'requests':>8} {'ok/s':>7} {'503 %':>6} {'p95 ms':>7} {'errors':>6}")
    for name, s in routes.items():
        if not s.get("requests"):
            continue
        print(
            f"{name:<26} {s['requests']:>8} {s['goodput_per_s']:>7.2f} "
            f"{100 * s['shed_fraction']:>6.2f} {s['p95_ms'] or 0:>7.1f} {s['errors']:>6}"
        )
    mib = 1024 * 1024
    print(
        f"\nserver RSS: {baseline / mib:.0f} MiB after warm-up -> {end / mib:.0f} MiB at the end "
        f"({100 * growth:+.1f} %, limit {100 * GROWTH_LIMIT:.0f} %); 5xx other than 503: "
        f"{server_errors}"
    )
    report = {
        "benchmark": "soak",
        "machine": host,
        "minutes": args.minutes,
        "sustained_per_s": sustained,
        "fraction": args.fraction,
        "searches_per_s": round(searches, 2),
        "requests_per_s": round(total_rate, 2),
        "users": users,
        "routes": routes,
        "rss_samples": [[round(t, 1), r] for t, r in samples],
        "rss_baseline_bytes": baseline,
        "rss_end_bytes": end,
        "rss_growth": round(growth, 4),
        "growth_limit": GROWTH_LIMIT,
        "server_errors": server_errors,
        "passed": growth < GROWTH_LIMIT and server_errors == 0,
        "note": "locust runs on the same machine as the server and takes CPU from it",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
