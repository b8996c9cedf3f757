"""What the HTTP route benchmarks share: a real server, the figures of a run, the table, the JSON.

    with serving(home, probe=lambda c: c.get("/v1/forecast/items/1"), headers=...) as client:
        for run in range(runs):
            entry = {"run": run + 1, "items": timed(client_calls)}
    total = totals(runs, ["items"])
    print_runs(runs, total, ["items"], target_ms=20)

The server is ``lookalike serve`` (one uvicorn worker) on 127.0.0.1 on a free port, started
from ``tests/integration/live.py`` (the same helper the integration tests use) and stopped
when the block ends. ``probe`` says when it is up: a product-only home has no search model, so
``/ready`` would wait forever; the product's own route answering 200 is the signal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from live import LiveServer, free_port  # noqa: E402

__all__ = [
    "arguments",
    "free_port",
    "machine",
    "model_arguments",
    "print_runs",
    "serving",
    "stats",
    "timed",
    "totals",
    "write",
]


def arguments(
    doc: str, name: str, *, data: Path | None, requests: int, home: str | None = None
) -> argparse.ArgumentParser:
    """The options every route benchmark takes: ``--data``, ``--runs``, ``--requests``,
    ``--json`` (default ``artifacts/NAME.json``) and, when ``home`` says what is reused,
    ``--home`` (reuse that LOOKALIKE_HOME instead of building into a temporary one)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--data", type=Path, default=data)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=requests)
    ap.add_argument("--json", type=Path, default=Path(f"artifacts/{name}.json"))
    if home is not None:
        ap.add_argument(
            "--home", type=Path, default=None, help=f"reuse this LOOKALIKE_HOME's {home}"
        )
    return ap


def model_arguments(doc: str, name: str) -> argparse.ArgumentParser:
    """The options every benchmark of a built model's files takes: ``--models`` (a models/
    folder), ``--model`` (default its production), ``--runs`` and ``--json`` (default
    ``artifacts/NAME.json``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--model", default="effnet_lite0:production")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path(f"artifacts/{name}.json"))
    return ap


def stats(samples: list[float]) -> dict[str, float]:
    """Median, p95 and max of latencies in ms."""
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(float(np.percentile(samples, 95)), 3),
        "max_ms": round(max(samples), 3),
    }


def timed(calls: Iterable[Callable[[], httpx.Response]], check: Callable[[httpx.Response], None]):
    """Send each call in turn; ``{"requests", median/p95/max, "samples"}`` of their latencies."""
    samples = []
    for call in calls:
        start = time.perf_counter()
        r = call()
        samples.append((time.perf_counter() - start) * 1000)
        check(r)
    return {"requests": len(samples), **stats(samples), "samples": samples}


def totals(runs: list[dict[str, Any]], routes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per route over every run (and the median of the runs' p95); drops the runs' samples."""
    out = {}
    for route in routes:
        every = [s for r in runs for s in r[route].pop("samples")]
        out[route] = {
            "requests": len(every),
            **stats(every),
            "median_of_run_p95_ms": round(statistics.median(r[route]["p95_ms"] for r in runs), 3),
        }
    return out


def print_runs(
    runs: list[dict[str, Any]],
    total: dict[str, dict[str, Any]],
    routes: list[str],
    target_ms: float,
) -> None:
    """The table: one line per route and run, then the route over all runs."""
    width = max(5, *(len(r) for r in routes))
    print(
        f"{'route':>{width}} {'run':>4} {'requests':>9} {'median ms':>10} {'p95 ms':>8}"
        f" {'max ms':>8}"
    )
    for route in routes:
        for r in runs:
            f = r[route]
            print(
                f"{route:>{width}} {r['run']:>4} {f['requests']:>9} {f['median_ms']:>10.2f}"
                f" {f['p95_ms']:>8.2f} {f['max_ms']:>8.2f}"
            )
        t = total[route]
        print(
            f"{route:>{width}}  all {t['requests']:>9} {t['median_ms']:>10.2f} {t['p95_ms']:>8.2f}"
            f" {t['max_ms']:>8.2f}  (median of the runs' p95 {t['median_of_run_p95_ms']:.2f};"
            f" target p95 ≤ {target_ms:g} ms)"
        )


def machine(load_before: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """CPUs, Python and the 1/5/15-minute load average (before the runs, when given, and now)."""
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if load_before is not None:
        out["load_average_before"] = [round(x, 2) for x in load_before]
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"wrote {path}")


@contextmanager
def serving(
    home: Path,
    probe: Callable[[httpx.Client], httpx.Response],
    headers: dict[str, str] | None = None,
    timeout: float = 120,
    **env: str,
) -> Iterator[httpx.Client]:
    """A keep-alive client of a started ``lookalike serve`` on ``home``, once ``probe`` is 200.

    ``env``: settings for the server (``LOOKALIKE_…`` variables) on top of this process's.
    """
    server = LiveServer(home, home / f"server-{free_port()}.log", **env)
    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=server.base, headers=headers or {}, timeout=10) as client:
            while True:
                try:
                    if probe(client).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.proc.poll() is not None:
                    sys.exit(f"server did not answer:\n{server.log.read_text()}")
                time.sleep(0.2)
            yield client
    finally:
        server.stop()
