"""How good a pre-filter is: precision, recall, PR-AUC, precision at a recall, the threshold.

All figures are of "shows a dress worn by a person" (label 1) against everything else, from
scores where higher means more likely a dress. PR-AUC is average precision (the step-wise area
under the precision-recall curve, as scikit-learn computes it), so a random scorer's PR-AUC is
the positive share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lookalike.core.errors import InvalidInput

__all__ = [
    "average_precision",
    "confusion",
    "figures",
    "precision_at_recall",
    "pr_curve",
    "threshold_for_recall",
]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if len(s) != len(y):
        raise InvalidInput(f"{len(s)} scores but {len(y)} labels")
    if not set(np.unique(y)) <= {0, 1}:
        raise InvalidInput("labels must be 0 or 1")
    return s, y


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(precision, recall, threshold)`` at every distinct score, highest threshold first."""
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last row of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    pos = max(int(y.sum()), 1)
    return tp / (tp + fp), tp / pos, s[last]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    precision, recall, _ = pr_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """The best precision among thresholds whose recall is at least ``recall``."""
    p, r, _ = pr_curve(scores, labels)
    ok = r >= recall - 1e-12
    return float(p[ok].max()) if ok.any() else 0.0


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """The highest threshold (``score >= t`` is positive) that keeps recall ≥ ``recall``."""
    _, r, t = pr_curve(scores, labels)
    ok = np.nonzero(r >= recall - 1e-12)[0]
    if not len(ok):
        raise InvalidInput("no positives to choose a threshold on")
    return float(t[ok[0]])


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    s, y = _check(scores, labels)
    pred = s >= threshold
    return {
        "tp": int(np.sum(pred & (y == 1))),
        "fp": int(np.sum(pred & (y == 0))),
        "fn": int(np.sum(~pred & (y == 1))),
        "tn": int(np.sum(~pred & (y == 0))),
    }


def figures(
    scores: np.ndarray, labels: np.ndarray, threshold: float, recall_target: float = 0.9
) -> dict[str, Any]:
    """Precision, recall (at ``threshold``), PR-AUC, precision at the recall target, counts."""
    c = confusion(scores, labels, threshold)
    predicted, positives = c["tp"] + c["fp"], c["tp"] + c["fn"]
    return {
        "precision": round(c["tp"] / predicted, 4) if predicted else 0.0,
        "recall": round(c["tp"] / positives, 4) if positives else 0.0,
        "pr_auc": round(average_precision(scores, labels), 4),
        f"precision_at_recall_{recall_target:g}": round(
            precision_at_recall(scores, labels, recall_target), 4
        ),
        "threshold": round(float(threshold), 6),
        "positives": positives,
        "negatives": c["fp"] + c["tn"],
        "confusion": c,
    }
