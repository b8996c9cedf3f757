"""Who touched which item, when and how strongly: what the recommendation models learn from.

One row per interaction. Rental reviews (:class:`~lookalike.catalog.rentals.Rentals`) are
rentals (weight 1); shopper events (``shopper_events``: viewed, hearted, rented) come with the
weights of :data:`EVENT_WEIGHTS`. Ids are text whatever the source used (the catalog's are
text, the RTR file's are numbers). A review is a lower bound on a rental: every count built
from reviews under-counts demand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

import numpy as np

from lookalike.catalog.rentals import Rentals

__all__ = ["EVENTS", "EVENT_WEIGHTS", "Interactions"]

EVENTS = ("viewed", "hearted", "rented")
# How much one event says about taste, against a rental's 1.0: a heart is a strong wish, a view
# a weak one (a shopper views many dresses per rental).
EVENT_WEIGHTS = {"viewed": 0.2, "hearted": 0.5, "rented": 1.0}


@dataclass(frozen=True)
class Interactions:
    """Columnar: ``user``/``item`` text (object arrays), ``day`` datetime64[D], ``weight``
    float64, ``occasion``/``category`` text ('' when unknown, e.g. for an event)."""

    user: np.ndarray
    item: np.ndarray
    day: np.ndarray
    weight: np.ndarray
    occasion: np.ndarray
    category: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, rows: np.ndarray) -> Interactions:
        return Interactions(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @classmethod
    def from_rentals(cls, rentals: Rentals) -> Interactions:
        n = len(rentals)
        return cls(
            user=rentals.user_id.astype(str).astype(object),
            item=rentals.item_id.astype(str).astype(object),
            day=rentals.review_date.astype("datetime64[D]"),
            weight=np.ones(n),
            occasion=rentals.rented_for.astype(object),
            category=rentals.category.astype(object),
        )

    @classmethod
    def from_events(cls, rows: Iterable[tuple[str, str, str, datetime]]) -> Interactions:
        """``(user_id, item_id, event, at)`` rows (the ``shopper_events`` columns)."""
        rows = list(rows)
        n = len(rows)
        user = np.empty(n, dtype=object)
        item = np.empty(n, dtype=object)
        user[:] = [str(r[0]) for r in rows]
        item[:] = [str(r[1]) for r in rows]
        day = np.array([np.datetime64(r[3].date(), "D") for r in rows], dtype="datetime64[D]")
        weight = np.array([EVENT_WEIGHTS[r[2]] for r in rows], dtype=np.float64)
        blank = np.full(n, "", dtype=object)
        return cls(user, item, day, weight, blank, blank.copy())

    @classmethod
    def concat(cls, parts: Iterable[Interactions]) -> Interactions:
        parts = [p for p in parts if len(p)]
        if not parts:
            empty = np.empty(0, dtype=object)
            return cls(empty, empty, np.empty(0, "datetime64[D]"), np.empty(0), empty, empty)
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )
