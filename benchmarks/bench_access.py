"""What the access policy costs a request: key check, shared rate-limit hit, issued-answer record.

    python benchmarks/bench_access.py                        # SQLite ledger under a temp dir
    python benchmarks/bench_access.py --postgres URL         # also a PostgreSQL ledger

Each operation is timed one call at a time from one thread (the added latency of one request)
and then from ``--procs`` processes at once on the same ledger (workers contending for it; the
figure is per call, as each process sees it). ``ASGI POST /v1/search`` is a small real FastAPI
app called in-process (httpx's ASGI transport, one event loop as under uvicorn) with the access
policy and with only the CORS layer it had before: the difference is what a search pays for
the middleware, the key check, the shared counter and the answer record together. Prints a
table, writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from lookalike.core.settings import ExtensionSettings
from lookalike.jobs.events import IssuedAnswer
from lookalike.serve.auth import ApiKeyStore, install_auth
from lookalike.serve.ledger import AccessLedger


def _times(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _row(name: str, backend: str, ms: list[float], procs: int = 1) -> dict:
    ms = sorted(ms)
    return {
        "op": name,
        "backend": backend,
        "procs": procs,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _hits(url: str, n: int, tag: str, queue: mp.Queue) -> None:
    ledger = AccessLedger(url)
    queue.put(_times(lambda i: ledger.hit(f"bench:{tag}:{i % 50}", 10**9), n))


def _ledger_rows(url: str, backend: str, n: int, procs: int) -> list[dict]:
    ledger = AccessLedger(url)
    ledger.create_schema()
    rows = [_row("ledger.hit", backend, _times(lambda i: ledger.hit(f"b{i % 50}", 10**9), n))]
    answer = IssuedAnswer("r", "search", None, tuple(f"LK-{i:04d}" for i in range(20)), 0.0)

    def issue(i: int) -> None:
        ledger.issue(IssuedAnswer(f"rid-{i}", answer.surface, None, answer.item_ids, time.time()))

    rows.append(_row("ledger.issue (20 results)", backend, _times(issue, n)))
    rows.append(
        _row("ledger.issued (events)", backend, _times(lambda i: ledger.issued({f"rid-{i}"}), n))
    )
    # spawn, as uvicorn starts its workers: a forked child must not share pooled connections
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    workers = [ctx.Process(target=_hits, args=(url, n, f"p{p}", queue)) for p in range(procs)]
    for w in workers:
        w.start()
    contended = [x for _ in workers for x in queue.get()]
    for w in workers:
        w.join()
    rows.append(_row("ledger.hit", backend, contended, procs))
    return rows


def _app(with_auth: bool, home: Path, store: ApiKeyStore) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/search")
    def search() -> dict:
        return {"results": [{"item_id": f"LK-{i:04d}"} for i in range(20)], "request_id": "x"}

    if with_auth:
        ledger = AccessLedger(f"sqlite:///{home / 'access.db'}")
        ledger.create_schema()
        settings = ExtensionSettings(rate_per_minute=10**9, anonymous_per_minute=10**9)
        install_auth(app, store, settings, ledger=ledger)
    else:  # what was there before the access policy: CORS only
        app.add_middleware(CORSMiddleware, allow_origins=[], allow_methods=["GET", "POST"])
    return app


async def _timed_calls(app: FastAPI, headers: dict[str, str], n: int) -> list[float]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await client.post("/v1/search", headers=headers)  # warm: routes compiled, salt read
        out = []
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post("/v1/search", headers=headers)
            out.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
    return out


def _end_to_end(home: Path, n: int) -> list[dict]:
    store = ApiKeyStore(f"sqlite:///{home / 'catalog.db'}")
    store.create_schema()
    _, secret = store.create("bench")
    rows = []
    for label, with_auth, headers in (
        ("CORS only, as before", False, {}),
        ("policy, anonymous", True, {}),
        ("policy, with key", True, {"X-API-Key": secret}),
    ):
        ms = asyncio.run(_timed_calls(_app(with_auth, home, store), headers, n))
        rows.append(_row(f"ASGI POST /v1/search ({label})", "sqlite", ms))
    rows.append(_row("one thread hop (run_in_threadpool no-op)", "-", asyncio.run(_hops(n))))
    return rows


async def _hops(n: int) -> list[float]:
    """The policy makes two hops per search (check + record) that the route did not make."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await run_in_threadpool(lambda: None)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", type=int, default=2000, help="calls per measurement")
    p.add_argument("--procs", type=int, default=2, help="processes contending for the ledger")
    p.add_argument("--postgres", default=None, help="also measure a PostgreSQL ledger")
    p.add_argument("--out", default="artifacts/bench_access.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        rows = _ledger_rows(f"sqlite:///{home / 'ledger.db'}", "sqlite", args.n, args.procs)
        if args.postgres:
            rows += _ledger_rows(args.postgres, "postgresql", args.n, args.procs)
        store = ApiKeyStore(f"sqlite:///{home / 'keys.db'}")
        store.create_schema()
        _, secret = store.create("bench")
        rows.append(
            _row("ApiKeyStore.verify", "sqlite", _times(lambda i: store.verify(secret), args.n))
        )
        rows += _end_to_end(home, args.n)
    print(f"{'operation':48} {'backend':10} {'procs':>5} {'p50 ms':>8} {'p95 ms':>8}")
    for r in rows:
        print(
            f"{r['op']:48} {r['backend']:10} {r['procs']:>5} {r['p50_ms']:>8.3f} "
            f"{r['p95_ms']:>8.3f}"
        )
    meta = {"cpus": os.cpu_count(), "python": platform.python_version(), "n": args.n}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
