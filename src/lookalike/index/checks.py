"""Input checks and durable writes shared by the index implementations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lookalike.core.errors import DimensionMismatch, InvalidInput
from lookalike.core.textfiles import fsync_dir

__all__ = ["check_ids", "check_vectors", "fsync_and_rename"]


def check_vectors(dim: int, vectors: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous float32 ``(n, dim)`` array; a single ``(dim,)`` row becomes ``(1, dim)``.

    Raises DimensionMismatch (naming both widths) or InvalidInput (shape, NaN/inf, not numbers).
    """
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be a float array: {exc}") from exc
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInput(f"{what} must be 2-D (n, {dim}), got shape {x.shape}")
    if x.shape[1] != dim:
        raise DimensionMismatch(f"{what} have dim {x.shape[1]}, the index has dim {dim}")
    if not np.isfinite(x).all():
        raise InvalidInput(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(x)


def check_ids(ids: np.ndarray) -> np.ndarray:
    """A C-contiguous int64 1-D array of non-negative ids (-1 is reserved for padding)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidInput(f"ids must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"ids must be integers, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise InvalidInput("ids must be non-negative (-1 marks padding)")
    return arr


def fsync_and_rename(tmp: Path, final: Path) -> None:
    """Flush ``tmp`` to disk and move it over ``final`` (and flush the directory entry)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)
