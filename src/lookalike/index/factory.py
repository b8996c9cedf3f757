"""Choosing a faiss factory string for a catalog, and reading the knobs out of one.

Sizing rules (measured by ``benchmarks/bench_index.py`` on 2 CPU cores):

- below 50k vectors and 64 MB of floats (12.5k at 1280-d, 50k at 256-d), ``Flat``: exact,
  nothing to train; a single query streams the whole matrix, so latency grows with n*dim
  (measured on a busy 2-core box: 20k x 1280 -> 34 ms median, 100k x 1280 -> 270 ms);
- up to ~2M vectors, ``HNSW32``: the best recall for the latency (efSearch 128 keeps recall@10
  >= 0.95 vs exact), at ``4*dim + ~300`` bytes per vector and a build that is slow at high
  dimension (the graph is built with full-precision distances);
- above that, ``IVF{nlist},PQ{m}x4fs,Refine(SQ8)``: the 4-bit fast-scan PQ codes find candidates
  cheaply and an 8-bit scalar-quantised copy re-ranks them, so recall@10 stays >= 0.95 at
  ``dim + m/2 + 8`` bytes per vector (about a quarter of Flat), and training is one k-means.
"""

from __future__ import annotations

import math
import re

from lookalike.core.errors import InvalidInput

__all__ = [
    "DEFAULT_EF_SEARCH",
    "DEFAULT_REFINE_K_FACTOR",
    "FLAT_MAX",
    "FLAT_MAX_BYTES",
    "HNSW_MAX",
    "MIN_POINTS_PER_LIST",
    "default_nprobe",
    "parse_nlist",
    "suggest_factory",
    "with_nlist",
]

FLAT_MAX = 50_000
FLAT_MAX_BYTES = 64 * 2**20
HNSW_MAX = 2_000_000
# faiss's k-means warns below 39 training points per centroid; fewer gives poor lists.
MIN_POINTS_PER_LIST = 39
# efSearch 128 gives recall@10 >= 0.97 on our synthetic and 1M benchmarks (efSearch 64: ~0.93).
DEFAULT_EF_SEARCH = 128
# Re-rank 32x k candidates with the refine codes: 4-bit PQ alone ranks poorly, and with 10x the
# bench measured recall@10 0.90-0.95 at 20k-100k x 1280; 320 SQ8 distances cost ~0.1 ms.
DEFAULT_REFINE_K_FACTOR = 32.0

_IVF = re.compile(r"IVF(\d+)")


def suggest_factory(n: int, dim: int) -> str:
    """A factory string suited to ``n`` vectors of width ``dim`` (see the module docstring)."""
    if n < 0 or dim <= 0:
        raise InvalidInput(f"cannot size an index for n={n}, dim={dim}")
    if n < FLAT_MAX and n * dim * 4 <= FLAT_MAX_BYTES:
        return "Flat"
    if n <= HNSW_MAX:
        return "HNSW32"
    # nlist ~ 2*sqrt(n), a power of two: a cheap coarse search and a k-means that trains in
    # minutes on 2 cores at 1280-d (4*sqrt(n) doubles both for little recall gain here).
    nlist = 2 ** round(math.log2(2 * math.sqrt(n)))
    return f"IVF{nlist},PQ{_pq_m(dim)}x4fs,Refine(SQ8)"


def _pq_m(dim: int) -> int:
    """Sub-quantizer count: ~8 dims each, even (fast-scan packs codes in pairs), divides dim."""
    target = max(2, dim // 8)
    for m in sorted(range(2, dim + 1, 2), key=lambda c: abs(c - target)):
        if dim % m == 0:
            return m
    return 1


def parse_nlist(factory: str) -> int | None:
    """The number of IVF lists in a factory string, or None for a non-IVF index."""
    match = _IVF.search(factory)
    return int(match.group(1)) if match else None


def with_nlist(factory: str, nlist: int) -> str:
    """The same factory string with its IVF list count replaced."""
    return _IVF.sub(f"IVF{nlist}", factory, count=1)


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/8 of them, at least 32 (bench: nprobe 16 of 256 -> recall 0.84,
    64 of 256 -> 0.96 with refine)."""
    return min(nlist, max(32, nlist // 8))
