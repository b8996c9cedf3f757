"""Click-to-results latency of the browser extension, measured in a real Chromium.

For each search the worker's context-menu handler is invoked on a different demo image of a
local page; the time runs from the handler's first line (in the worker) to the side panel
having rendered the result cards (in the panel page), both read from ``performance.timeOrigin +
performance.now()``. It covers reading the image in the page, downscaling, the upload, the
server's search and the panel's rendering; it does not cover the native menu's own animation.

    python benchmarks/bench_extension.py                      # starts `lookalike serve` on a
                                                              # prepared LOOKALIKE_HOME
    python benchmarks/bench_extension.py --server http://127.0.0.1:8000 --api-key lk_...

Prints a table and writes JSON (median and p95 per run and overall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import extension_harness as harness  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def measure(
    ext: harness.Extension, page, panel, images: list[str], searches: int, warmup: int
) -> list[float]:
    latencies: list[float] = []
    for n in range(warmup + searches):
        src = images[n % len(images)]
        search_id = ext.click_image(page, src)
        record = panel.wait_for_function(
            "(id) => (window.__lookalikeRenders || []).find(r => r.id === id)", arg=search_id
        ).json_value()
        if record["count"] == 0:
            raise RuntimeError(f"search {search_id} rendered no results: {ext.searches()[0]}")
        if n >= warmup:
            latencies.append(record["renderedAt"] - record["t0"])
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="A running server (default: start `lookalike serve`)")
    parser.add_argument("--api-key", default=os.environ.get("LOOKALIKE_E2E_API_KEY", ""))
    parser.add_argument(
        "--home",
        type=Path,
        default=os.environ.get("LOOKALIKE_HOME"),
        help="A prepared LOOKALIKE_HOME (demo catalog indexed) to serve",
    )
    parser.add_argument("--searches", type=int, default=60, help="Searches per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_extension.json")
    args = parser.parse_args()
    if not harness.CHROMIUM.is_file():
        print(f"{harness.CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-extension-"))
    server = None
    url, key = args.server, args.api_key
    if url is None:
        if args.home is None or not (Path(args.home) / "index").is_dir():
            print(
                "pass --server, or --home / LOOKALIKE_HOME with the demo catalog indexed "
                "(`lookalike demo --no-serve`)",
                file=sys.stderr,
            )
            return 2
        home = Path(args.home).resolve()
        key = harness.create_key(home, "bench-extension")
        server = harness.start_server(home, work / "serve.log")
        url = server.url
    demo = REPO / "demo" / "catalog"
    images = sorted((demo / "images").glob("*.jpg"))[:: max(1, 430 // 50)][:50]
    gallery = harness.write_gallery(work / "pages", images)
    runs = []
    try:
        with harness.page_server(work / "pages") as site, sync_playwright() as playwright:
            context = harness.launch(playwright, harness.extension_copy(work / "ext"), work / "p")
            ext = harness.Extension(context)
            ext.reset(url, key)
            panel = ext.open("sidepanel.html")
            page = context.new_page()
            page.goto(f"{site}/{gallery}")
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            srcs = [f"{site}/g{n}.jpg" for n in range(len(images))]
            for run in range(args.runs):
                values = measure(
                    ext, page, panel, srcs, args.searches, args.warmup if run == 0 else 0
                )
                runs.append(values)
                print(
                    f"run {run + 1}: n={len(values)} median={statistics.median(values):.1f} ms "
                    f"p95={percentile(values, 95):.1f} ms"
                )
            context.close()
    finally:
        if server is not None:
            server.stop()
    everything = [v for run in runs for v in run]
    report = {
        "benchmark": "extension click to results rendered",
        "server": url,
        "searches_per_run": args.searches,
        "runs": [
            {
                "n": len(r),
                "median_ms": statistics.median(r),
                "p95_ms": percentile(r, 95),
                "max_ms": max(r),
            }
            for r in runs
        ],
        "overall": {
            "n": len(everything),
            "median_ms": statistics.median(everything),
            "p95_ms": percentile(everything, 95),
            "max_ms": max(everything),
        },
        "target_p95_ms": 300,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print()
    print(f"{'run':>5} {'n':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for i, r in enumerate(report["runs"], 1):
        print(f"{i:>5} {r['n']:>5} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f}")
    o = report["overall"]
    print(f"{'all':>5} {o['n']:>5} {o['median_ms']:>10.1f} {o['p95_ms']:>8.1f} {o['max_ms']:>8.1f}")
    print(f"target p95 <= 300 ms: {'met' if o['p95_ms'] <= 300 else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
