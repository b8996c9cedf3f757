"""The one retrieval metric: ranks against a brute-force oracle, views, ties, key spelling."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.core.metrics import KS, figures, rank_metrics, recall_key


def _oracle_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1 + rows scoring strictly higher than the relevant one, by sorting each row."""
    out = []
    for row, rel in zip(scores, relevant, strict=True):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        better = [j for j in order if row[j] > row[rel]]
        out.append(1 + len(better))
    return np.asarray(out)


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(60, 16)).astype(np.float32)
    relevant = rng.integers(0, 60, 45)
    # queries near their relevant row, so the ranks spread over 1..60
    queries = gallery[relevant] + rng.normal(scale=2.0, size=(45, 16)).astype(np.float32)
    return queries, gallery, relevant


def test_ranks_recall_and_map_match_the_oracle(data) -> None:  # type: ignore[no-untyped-def]
    queries, gallery, relevant = data
    recall, mean_ap, ranks = rank_metrics(queries, gallery, relevant)
    want = _oracle_ranks(queries @ gallery.T, relevant)
    np.testing.assert_array_equal(ranks, want)
    assert 1 < ranks.max() and ranks.min() == 1  # a spread, not a trivial case
    assert set(recall) == {recall_key(k) for k in KS} == {"@1", "@5", "@10", "@20"}
    for k in KS:
        assert recall[f"@{k}"] == round(float(np.mean(want <= k)), 4)
    assert mean_ap == round(float(np.mean(1.0 / want)), 4)
    assert figures(queries, gallery, relevant) == {"recall": recall, "map": mean_ap}


def test_views_and_owner_rows_score_the_best_view(data) -> None:  # type: ignore[no-untyped-def]
    queries, gallery, relevant = data
    rng = np.random.default_rng(8)
    other = queries + rng.normal(scale=1.0, size=queries.shape).astype(np.float32)
    stacked = np.stack([queries, other])  # (views, n, d)
    best = np.maximum(queries @ gallery.T, other @ gallery.T)
    _, _, ranks = rank_metrics(stacked, gallery, relevant)
    np.testing.assert_array_equal(ranks, _oracle_ranks(best, relevant))
    # The same views as rows grouped by owner (as multi-crop search produces them).
    rows = np.stack([queries, other], axis=1).reshape(-1, queries.shape[1])
    owner = np.repeat(np.arange(len(queries)), 2)
    np.testing.assert_array_equal(rank_metrics(rows, gallery, relevant, owner=owner)[2], ranks)


def test_a_tie_with_a_duplicate_counts_in_the_querys_favour() -> None:
    gallery = np.eye(3, dtype=np.float32)
    gallery = np.vstack([gallery, gallery[1]])  # row 3 is a byte-identical copy of row 1
    queries = gallery[[1]]
    recall, mean_ap, ranks = rank_metrics(queries, gallery, np.asarray([1]), ks=(1,))
    assert ranks.tolist() == [1] and recall == {"@1": 1.0} and mean_ap == 1.0
