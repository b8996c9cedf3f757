"""Catalog ingestion throughput: 1000×1500 JPEGs → normalised media + SQLite rows.

    python benchmarks/bench_ingest.py [--n 200] [--runs 5] [--workers N]

Makes N 1000×1500 JPEGs by upscaling real demo photos (in a temp folder), then imports them into
a fresh SQLite store and media folder on every run (so no run profits from the content-hash
dedupe of the previous one). Prints a table and writes artifacts/bench_ingest.json with the
median and p95 of per-run throughput (images/s), wall time and CPU time per image (the figure
that does not depend on what else the machine is doing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.catalog.ingest import default_workers

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "catalog" / "images"
SIZE = (1000, 1500)


def make_images(folder: Path, n: int) -> Path:
    """Write ``n`` distinct 1000×1500 JPEGs and a catalog CSV naming them; return the CSV."""
    sources = sorted(DEMO.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no demo images in {DEMO}")
    lines = ["item_id,title,category,price,available,image"]
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as src:
            big = src.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
        # Reused sources get a one-pixel mark so every file has its own hash (no dedupe).
        big.putpixel((i % SIZE[0], 0), (i % 256, (i // 256) % 256, 7))
        name = f"img{i:05d}.jpg"
        big.save(folder / name, "JPEG", quality=90)
        lines.append(f"B-{i:05d},Bench item {i},Dress,{10 + i % 90},true,{name}")
    path = folder / "items.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(csv_path: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one import into a fresh store."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        store = CatalogStore(f"sqlite:///{tmp}/catalog.db", Path(tmp) / "media")
        store.create_schema()
        cpu = _cpu_seconds()
        start = time.perf_counter()
        report = store.import_file(csv_path, workers=workers)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu
        store.close()
    if not report.ok or report.images_added == 0:
        raise SystemExit(f"import failed: {report.rejected[:3]}")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--json", type=Path, default=REPO / "artifacts" / "bench_ingest.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-src-") as src:
        csv_path = make_images(Path(src), args.n)
        source_bytes = sum(p.stat().st_size for p in Path(src).glob("*.jpg"))
        one_run(csv_path, args.workers)  # warm-up: imports, page cache
        load_before = os.getloadavg()[0]
        measured = [one_run(csv_path, args.workers) for _ in range(args.runs)]
        load_after = os.getloadavg()[0]

    times = [wall for wall, _ in measured]
    cpu_ms = [cpu / args.n * 1000 for _, cpu in measured]
    rates = [args.n / t for t in times]
    cpus = len(os.sched_getaffinity(0))
    result = {
        "benchmark": "catalog ingest: scaled decode, <=512 JPEG q90, fsync, SQLite",
        "images_per_run": args.n,
        "image_size": list(SIZE),
        "mean_source_kib": round(source_bytes / args.n / 1024, 1),
        "runs": args.runs,
        "workers": args.workers,
        "cpus": cpus,
        # Other work on the machine (load, VM steal) slows wall-clock figures; CPU time per
        # image does not depend on it, and gives the throughput of idle cores.
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "python": platform.python_version(),
        "images_per_s": {
            "median": round(statistics.median(rates), 1),
            # p95 of throughput is the optimistic tail; p5 is the one to plan capacity with.
            "p95": round(float(np.percentile(rates, 95)), 1),
            "p5": round(float(np.percentile(rates, 5)), 1),
        },
        "seconds_per_run": {
            "median": round(statistics.median(times), 3),
            "p95": round(float(np.percentile(times, 95)), 3),
        },
        "cpu_ms_per_image": {
            "median": round(statistics.median(cpu_ms), 2),
            "p95": round(float(np.percentile(cpu_ms, 95)), 2),
        },
        # Threads overlap (Pillow and hashlib drop the GIL): CPU seconds / wall seconds.
        "cores_used": round(statistics.median(c / t for (t, c) in measured), 2),
        "projected_images_per_s_on_idle_cpus": round(cpus * 1000 / statistics.median(cpu_ms), 1),
        "per_run_images_per_s": [round(r, 1) for r in rates],
    }
    print(f"{'metric':<28}{'median':>10}{'p95':>10}{'p5':>10}")
    ips = result["images_per_s"]
    print(f"{'images/s':<28}{ips['median']:>10}{ips['p95']:>10}{ips['p5']:>10}")
    spr = result["seconds_per_run"]
    print(f"{'seconds per run':<28}{spr['median']:>10}{spr['p95']:>10}{'':>10}")
    cms = result["cpu_ms_per_image"]
    print(f"{'CPU ms per image':<28}{cms['median']:>10}{cms['p95']:>10}{'':>10}")
    print(
        f"cores used {result['cores_used']}; on {cpus} idle CPUs that is "
        f"~{result['projected_images_per_s_on_idle_cpus']} images/s "
        f"(load average {load_before:.1f} -> {load_after:.1f})"
    )
    print(
        f"{args.n} images of {SIZE[0]}x{SIZE[1]} (~{result['mean_source_kib']} KiB), "
        f"{args.runs} runs, {args.workers} workers, {result['cpus']} CPUs"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
