"""Retrieval figures from exact ranks: Recall@K, mAP and the ranks themselves (pure numpy).

The one implementation every layer uses: offline evaluation (``lookalike eval retrieval``), the
deploy checks and the trainers' held-out figures. Each query has one relevant gallery row; its
rank is 1 + the number of gallery rows that score strictly higher, so a tie counts in the
query's favour. With one relevant row average precision is 1/rank, so mAP is the mean
reciprocal rank.

A gallery can hold byte-identical copies of one photo under two items (about a fifth of viton
pairs): ``groups`` (one id per gallery row, :func:`duplicate_groups` of the files' sha256) makes
any row of the relevant row's group count as found, the duplicate-aware recall.

Keys are spelled one way everywhere: ``{"@1": …, "@5": …, "@10": …, "@20": …}`` for recall,
and :func:`figures` writes ``{"recall": {"@10": …}, "map": …}``, the shape of a
:class:`~lookalike.search.evaluation.RetrievalReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np

__all__ = [
    "KS",
    "Figures",
    "duplicate_groups",
    "figures",
    "hub_share",
    "rank_metrics",
    "recall_key",
]

KS = (1, 5, 10, 20)


class Figures(TypedDict):
    """What a manifest records of a retrieval measurement."""

    recall: dict[str, float]  # "@1", "@5", "@10", "@20"
    map: float


def recall_key(k: int) -> str:
    """The key of Recall@``k`` in every figures dict: ``"@10"``."""
    return f"@{k}"


def _scores(queries: np.ndarray, gallery: np.ndarray, owner: np.ndarray | None) -> np.ndarray:
    # Several views of each query (a 3-D stack, or rows grouped by ``owner``): a gallery row
    # scores the best of them, as multi-crop search merges by the maximum.
    if queries.ndim == 3:
        scores = np.max(np.stack([v @ gallery.T for v in queries]), axis=0)
    else:
        scores = queries @ gallery.T
    if owner is not None:
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        scores = np.maximum.reduceat(scores, starts, axis=0)
    return scores


def duplicate_groups(keys: Sequence[str]) -> np.ndarray:
    """One group id per gallery row: rows with equal ``keys`` (e.g. sha256 of the file) share it.

    The id is the index of the group's first row, so a row without a twin is its own group.
    """
    first: dict[str, int] = {}
    return np.asarray([first.setdefault(key, i) for i, key in enumerate(keys)], dtype=np.int64)


def rank_metrics(
    queries: np.ndarray,
    gallery: np.ndarray,
    relevant: np.ndarray,
    ks: Sequence[int] = KS,
    owner: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, float], float, np.ndarray]:
    """Exact ranks of each query's one relevant gallery row; returns (recall, mAP, ranks).

    ``queries`` is ``(n, d)``, or ``(views, n, d)`` for several views of each query.
    ``owner`` (one query index per row of ``queries``, sorted) lets several rows speak for one
    query. Either way a gallery row scores the best view. ``recall`` is keyed ``"@k"``.
    ``groups`` (one id per gallery row, see :func:`duplicate_groups`) counts the best row of the
    relevant row's group as found: rows of that group never rank above the query's answer.
    """
    scores = _scores(np.asarray(queries), np.asarray(gallery), owner)
    relevant = np.asarray(relevant)
    if groups is None:
        own = scores[np.arange(len(scores)), relevant]
    else:
        groups = np.asarray(groups)
        if groups.shape != (scores.shape[1],):
            raise ValueError(f"groups has shape {groups.shape}, expected ({scores.shape[1]},)")
        same = groups[None, :] == groups[relevant][:, None]
        own = np.where(same, scores, -np.inf).max(axis=1)
    ranks = 1 + (scores > own[:, None]).sum(axis=1)
    recall = {recall_key(k): round(float((ranks <= k).mean()), 4) for k in ks}
    return recall, round(float((1.0 / ranks).mean()), 4), ranks


def hub_share(
    queries: np.ndarray,
    gallery: np.ndarray,
    owner: np.ndarray | None = None,
    *,
    k: int = 5,
    hubs: int = 5,
) -> dict[str, object]:
    """How much a few gallery rows dominate: the share of queries whose top ``k`` hold any of
    the ``hubs`` rows that appear most often in all top-``k`` lists (hubness; a healthy
    embedding spreads its answers, so this share stays low), and those rows' counts."""
    scores = _scores(np.asarray(queries), np.asarray(gallery), owner)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows, counts = np.unique(top, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:hubs]
    frequent = rows[order]
    share = float(np.isin(top, frequent).any(axis=1).mean()) if len(top) else 0.0
    return {
        f"share_top{k}_with_top{hubs}_hubs": round(share, 4),
        "hub_rows": [int(r) for r in frequent],
        "hub_counts": [int(c) for c in counts[order]],
    }


def figures(queries: np.ndarray, gallery: np.ndarray, relevant: np.ndarray) -> Figures:
    """:func:`rank_metrics` as a manifest's figures: ``{"recall": {"@k": …}, "map": …}``."""
    recall, mean_ap, _ = rank_metrics(queries, gallery, relevant)
    return Figures(recall=recall, map=mean_ap)
