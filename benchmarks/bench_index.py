"""ANN benchmark for ``lookalike.index``: build time, bytes per vector, single-query latency and
recall@10 vs exact search, for Flat, HNSW32 and IVF-PQ (fast-scan PQ + SQ8 re-rank).

    python benchmarks/bench_index.py --quick                 # ~1-2 minutes
    python benchmarks/bench_index.py                         # 100k and 1M at 1280-d and 256-d
    python benchmarks/bench_index.py --real emb.npy          # synthetic data shaped like yours

Vectors are a clustered Gaussian mixture, L2-normalised (or, with ``--real``, real embeddings
plus Gaussian noise scaled to their per-dimension spread). Latency goes through
``FaissIndex.search`` one query at a time, with faiss limited to ``--search-threads`` (1: a
serving box with 2 cores runs one request per core); builds use every core. Exact ground truth
for recall comes from ``faiss.knn`` over the same array (no second copy of the data).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from lookalike.index import FaissIndex, create_index

K = 10


def make_data(n: int, dim: int, rng: np.random.Generator, real: np.ndarray | None) -> np.ndarray:
    """``n`` normalised vectors shaped like CNN embeddings, or noisy copies of real ones.

    Real image embeddings have a fast-decaying PCA spectrum (an intrinsic dimension of tens, not
    1280), so the mixture lives in a 128-d latent space with a 1/sqrt(i) spectrum, mapped into
    ``dim`` by a fixed random rotation, plus a little isotropic noise; 1000 overlapping clusters
    give top-1 cosines of ~0.75 like near-duplicate-free catalog photos. Isotropic noise in all
    1280 dimensions would be a far harder (and unrealistic) case for every ANN method.
    """
    if real is not None:
        if real.shape[1] != dim:
            raise SystemExit(f"--real vectors have dim {real.shape[1]}, not --dim {dim}")
        centres, proj = real.astype(np.float32), None
        sigma = 0.5 * real.std(axis=0).astype(np.float32)
    else:
        latent = 128
        shape = np.random.default_rng(dim)  # same space for base and queries
        centres = shape.standard_normal((1000, latent), dtype=np.float32)
        rot = np.linalg.qr(shape.standard_normal((dim, latent)))[0].T.astype(np.float32)
        proj = (np.arange(1, latent + 1, dtype=np.float32) ** -0.5)[:, None] * rot
        sigma = np.float32(0.8)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        chunk = centres[rng.integers(0, len(centres), m)]
        chunk += sigma * rng.standard_normal(chunk.shape, dtype=np.float32)
        if proj is not None:
            chunk = chunk @ proj + 0.02 * rng.standard_normal((m, dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + m] = chunk
    return out


def configs(n: int, dim: int) -> list[tuple[str, str, list[int]]]:
    """(label, factory, values of the search knob to sweep)."""
    nlist = 2 ** round(math.log2(2 * math.sqrt(n)))
    m = dim // 8 if dim >= 512 else dim // 4
    return [
        ("Flat", "Flat", [0]),
        ("HNSW32", "HNSW32", [64, 128, 256]),
        ("IVF-PQ", f"IVF{nlist},PQ{m}x4fs,Refine(SQ8)", [32, 64, 128]),
    ]


def build(factory: str, dim: int, base: np.ndarray, threads: int) -> tuple[FaissIndex, float]:
    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    index = create_index(factory, dim)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        # 64 points per list is plenty for k-means and keeps 1280-d training in minutes.
        n_train = min(len(base), 64 * int(factory.split(",")[0][3:]))
        index.train(base[np.sort(rng.choice(len(base), n_train, replace=False))])
    for s in range(0, len(base), 200_000):
        chunk = base[s : s + 200_000]
        index.add(chunk, np.arange(s, s + len(chunk), dtype=np.int64))
    return index, time.perf_counter() - start


def set_knob(index: FaissIndex, label: str, value: int) -> str:
    if label == "HNSW32":
        index.ef_search = value
        return f"efSearch={value}"
    if label == "IVF-PQ":
        index.nprobe = value
        return f"nprobe={value},k_factor={index.refine_k_factor:g}"
    return "exact"


def latency_ms(index: FaissIndex, queries: np.ndarray, budget_s: float) -> tuple[list[float], int]:
    times = []
    deadline = time.perf_counter() + budget_s
    for q in queries:
        t = time.perf_counter()
        index.search(q[None, :], K)
        times.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() > deadline and len(times) >= 20:
            break
    return times, len(times)


def run(args: argparse.Namespace) -> list[dict]:
    real = np.load(args.real) if args.real else None
    rows = []
    for dim in args.dims:
        for n in args.sizes:
            rng = np.random.default_rng(42)
            t = time.perf_counter()
            base = make_data(n, dim, rng, real)
            queries = make_data(max(args.queries, args.gt_queries), dim, rng, real)
            faiss.omp_set_num_threads(args.build_threads)
            _, gt = faiss.knn(
                queries[: args.gt_queries], base, K, metric=faiss.METRIC_INNER_PRODUCT
            )
            print(f"# n={n} dim={dim}: data + ground truth in {time.perf_counter() - t:.1f}s")
            for label, factory, knobs in configs(n, dim):
                if f"{label}@{n}x{dim}" in args.skip or label in args.skip:
                    print(f"  skip {label}")
                    continue
                index, build_s = build(factory, dim, base, args.build_threads)
                with tempfile.TemporaryDirectory() as tmp:
                    index.save(Path(tmp))
                    size = os.path.getsize(Path(tmp) / "index.faiss")
                for value in knobs:
                    knob = set_knob(index, label, value)
                    faiss.omp_set_num_threads(args.build_threads)
                    _, found = index.search(queries[: args.gt_queries], K)
                    hits = [len(set(f) & set(g)) for f, g in zip(found, gt, strict=True)]
                    faiss.omp_set_num_threads(args.search_threads)
                    times, nq = latency_ms(index, queries[: args.queries], args.latency_budget_s)
                    row = {
                        "index": label,
                        "factory": factory,
                        "params": knob,
                        "n": n,
                        "dim": dim,
                        "build_s": round(build_s, 2),
                        "bytes_per_vector": round(size / n, 1),
                        "recall_at_10": round(float(np.mean(hits)) / K, 4),
                        "latency_ms_median": round(float(np.median(times)), 3),
                        "latency_ms_p95": round(float(np.percentile(times, 95)), 3),
                        "latency_queries": nq,
                    }
                    rows.append(row)
                    print_row(row)
                del index
            del base
    return rows


HEADER = (
    f"{'index':8} {'n':>9} {'dim':>5} {'params':28} {'build s':>8} {'B/vec':>8} "
    f"{'R@10':>6} {'p50 ms':>8} {'p95 ms':>8} {'#q':>5}"
)


def print_row(r: dict) -> None:
    print(
        f"{r['index']:8} {r['n']:>9} {r['dim']:>5} {r['params']:28} {r['build_s']:>8.1f} "
        f"{r['bytes_per_vector']:>8.0f} {r['recall_at_10']:>6.3f} {r['latency_ms_median']:>8.2f} "
        f"{r['latency_ms_p95']:>8.2f} {r['latency_queries']:>5}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[1280, 256])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=500, help="single queries timed per config")
    p.add_argument("--gt-queries", type=int, default=200, help="queries scored for recall")
    p.add_argument("--latency-budget-s", type=float, default=30.0, help="cap per config (Flat)")
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--search-threads", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], help="e.g. HNSW32@1000000x1280 or IVF-PQ")
    p.add_argument("--real", help=".npy of real embeddings to shape the synthetic data")
    p.add_argument("--quick", action="store_true", help="20k and 100k vectors only")
    p.add_argument("--out", default="artifacts/bench_index.json")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.latency_budget_s = [20_000, 100_000], 10.0
        args.skip = [*args.skip, "HNSW32@100000x1280"]
    print(HEADER)
    t = time.perf_counter()
    rows = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "faiss": faiss.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "search_threads": args.search_threads,
        "build_threads": args.build_threads,
        "real": args.real,
        "k": K,
        "total_s": round(time.perf_counter() - t, 1),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(HEADER)
    for r in rows:
        print_row(r)
    print(f"wrote {out} ({meta['total_s']}s)")


if __name__ == "__main__":
    main()
