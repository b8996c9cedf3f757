"""Clicked pairs (``lookalike events export-pairs``) as training pairs: the click loop, closed.

The export is a CSV of ``query_item_id, clicked_item_id, clicks``: shoppers looking at one
item opened the other from its similar results. Each pair becomes a training pair of two
catalog photos, the query item's first photo (what "similar items" embeds) and the clicked
item's first photo, both read from the catalog store's media. Items the catalog no longer has
(or that have no photo) are skipped and counted, so that a stale export trains on what is
left and says what it dropped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.catalog import CatalogStore
from lookalike.core.errors import InvalidInput
from lookalike.training.candidate import PairSet

__all__ = ["CLICK_COLUMNS", "ClickPairs", "read_click_pairs"]

CLICK_COLUMNS = ("query_item_id", "clicked_item_id", "clicks")


@dataclass
class ClickPairs:
    """The pairs to train on and what the file held."""

    pairs: PairSet
    rows: int  # pairs in the file
    clicks: int  # clicks behind the kept pairs
    skipped_unknown: int  # pairs naming an item the catalog does not have (or has no photo of)
    unknown_items: list[str] = field(default_factory=list)  # a few of them, for the message

    def summary(self) -> dict[str, Any]:
        """What the candidate's manifest records about its source."""
        return {
            "source": "clicks",
            "training_pairs": len(self.pairs),
            "click_pairs": self.rows,
            "clicks": self.clicks,
            "skipped_unknown_items": self.skipped_unknown,
        }


def _rows(path: Path, min_clicks: int) -> list[tuple[str, str, int]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(CLICK_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise InvalidInput(
                f"{path}: missing columns {sorted(missing)}; expected the CSV that "
                "`lookalike events export-pairs` writes (query_item_id,clicked_item_id,clicks)"
            )
        out = []
        for line, r in enumerate(reader, start=2):
            try:
                clicks = int(r["clicks"])
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"{path}, line {line}: clicks must be a whole number, got {r['clicks']!r}"
                ) from None
            query, clicked = (
                (r["query_item_id"] or "").strip(),
                (r["clicked_item_id"] or "").strip(),
            )
            if not query or not clicked:
                raise InvalidInput(f"{path}, line {line}: both item ids are needed")
            if clicks >= min_clicks and query != clicked:
                out.append((query, clicked, clicks))
    return out


def read_click_pairs(path: Path, catalog: CatalogStore, *, min_clicks: int = 1) -> ClickPairs:
    """Training pairs from an export of clicked pairs (see the module docstring).

    Raises InvalidInput when the file is not such an export, or when no pair is left.
    """
    rows = _rows(Path(path), min_clicks)
    items = catalog.get_items(sorted({i for q, c, _ in rows for i in (q, c)}))
    photo = {i: catalog.media_path(item.images[0]) for i, item in items.items() if item.images}
    queries: list[Path] = []
    positives: list[Path] = []
    keys: list[str] = []
    clicks = 0
    unknown: dict[str, None] = {}
    for query, clicked, n in rows:
        if query not in photo or clicked not in photo:
            unknown.update({i: None for i in (query, clicked) if i not in photo})
            continue
        queries.append(photo[query])
        positives.append(photo[clicked])
        keys.append(query)  # the hold-out split by query item: no query on both sides
        clicks += n
    skipped = len(rows) - len(queries)
    if not queries:
        raise InvalidInput(
            f"{path}: none of its {len(rows)} clicked pairs (at least {min_clicks} clicks) names "
            "two catalog items with photos"
        )
    return ClickPairs(
        pairs=PairSet(queries, positives, keys),
        rows=len(rows),
        clicks=clicks,
        skipped_unknown=skipped,
        unknown_items=list(unknown)[:5],
    )
