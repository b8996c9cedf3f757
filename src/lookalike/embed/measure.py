"""Figures that choose a model variant: latency, and how closely one variant tracks another.

numpy only (no torch); the model build and ``benchmarks/bench_embed.py`` use the same code, so
the manifest's figures and the benchmark's table are measured the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

__all__ = ["cpu_threads", "latency_ms", "mean_cosine", "neighbour_recall"]


def cpu_threads() -> int:
    """The cores this process may run on (the container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def latency_ms(fn: Callable[[], object], *, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times unmeasured, then ``runs`` times; median/p95/mean in ms."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    times *= 1000.0
    return {
        "median_ms": round(float(np.median(times)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
        "mean_ms": round(float(times.mean()), 3),
        "runs": runs,
    }


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between row ``i`` of ``a`` and row ``i`` of ``b``."""
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean(np.sum(an * bn, axis=1)))


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)  # an image is not its own neighbour
    return np.argsort(-sims, axis=1)[:, :k]


def neighbour_recall(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Share of each image's ``k`` nearest neighbours under ``reference`` that ``candidate`` keeps.

    Both are ``(n, d)`` embeddings of the same ``n`` images; 1.0 means identical top-k lists
    (order aside).
    """
    k = min(k, len(reference) - 1)
    if k < 1:
        raise ValueError("need at least two embeddings to compare neighbours")
    ref, cand = _top_k(reference, k), _top_k(candidate, k)
    hits = [len(set(r) & set(c)) for r, c in zip(ref.tolist(), cand.tolist(), strict=True)]
    return float(np.mean(hits) / k)
