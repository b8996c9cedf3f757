"""The one progress type: counted steps and lines of text, renamed and shifted on the way up."""

from __future__ import annotations

import logging

import pytest

from lookalike.core.progress import Progress, logged, relabelled


def _recorder() -> tuple[list[tuple[str, int | None, int | None]], Progress]:
    seen: list[tuple[str, int | None, int | None]] = []

    def record(stage: str, done: int | None = None, total: int | None = None, /) -> None:
        seen.append((stage, done, total))

    return seen, record


def test_relabelled_renames_and_shifts_counts_and_passes_text() -> None:
    seen, record = _recorder()
    gallery = relabelled(record, offset=0, total=30)
    queries = relabelled(record, "embedding", offset=10, total=30)
    assert gallery is not None and queries is not None
    gallery("embedding", 10, 10)
    queries("queries", 5, 20)
    queries("a line of text")
    assert seen == [("embedding", 10, 30), ("embedding", 15, 30), ("a line of text", None, None)]
    assert relabelled(None, "x") is None


def test_logged_writes_stages_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("lookalike.test")
    report = logged(log, "train")
    with caplog.at_level(logging.INFO, logger="lookalike.test"):
        report("epoch 1/3 loss 0.5")
        report("features", 64, 100)
    assert [r.getMessage() for r in caplog.records] == [
        "train: epoch 1/3 loss 0.5",
        "train: features 64/100",
    ]
