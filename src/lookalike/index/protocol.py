"""The ``VectorIndex`` protocol: what the search layer needs from a vector index.

Vectors are L2-normalised float32 rows, so the score is the inner product (= cosine). Ids are the
caller's int64 ids (catalog item ids), never positions inside the index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["VectorIndex"]


@runtime_checkable
class VectorIndex(Protocol):
    """A k-nearest-neighbour index over int64-identified, L2-normalised float32 vectors."""

    dim: int
    factory: str

    @property
    def ntotal(self) -> int:
        """Number of live (searchable) vectors."""
        ...

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add ``(n, dim)`` float32 vectors under ``(n,)`` int64 ids not yet in the index."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (absent ones are ignored); return how many were removed."""
        ...

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: ``(m, k)`` float32 scores (best first) and ``(m, k)`` int64 ids.

        Rows with fewer than ``k`` hits are padded with score ``-inf`` and id ``-1``. ``allowed``
        (int64 ids) restricts the hits to those ids.
        """
        ...

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which ids are live in the index."""
        ...

    def save(self, directory: Path) -> list[str]:
        """Write the index into ``directory``; return the file names written."""
        ...
