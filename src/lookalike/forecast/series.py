"""Weekly demand per item and per category, counted from rental review dates.

A review is a lower bound on a rental (not every renter writes one), so every count here, and
every forecast built on it, is "reviewed rentals per week": real demand is higher.

Weeks end on the data's last day (``end``): the last week is ``[end - 6, end]``, the one before
``[end - 13, end - 7]`` and so on, so the newest week is always whole. An item belongs to the
category most of its reviews name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.catalog.rentals import Rentals
from lookalike.core.errors import InvalidInput

__all__ = ["WeeklyDemand", "weekly_demand"]


@dataclass(frozen=True)
class WeeklyDemand:
    """Review counts per week: ``items`` is (items, weeks), ``cats`` is (categories, weeks).

    ``week_start[j]`` is the first day of week ``j``; ``item_first[i]`` the week of item ``i``'s
    first review (its history starts there: the weeks before are "not yet listed", not zero).
    """

    week_start: np.ndarray  # datetime64[D], (T,)
    item_ids: np.ndarray  # int64, (n_items,)
    item_category: np.ndarray  # int64 index into categories, (n_items,)
    items: np.ndarray  # float64, (n_items, T)
    categories: np.ndarray  # str, (n_cats,)
    cats: np.ndarray  # float64, (n_cats, T)

    @property
    def weeks(self) -> int:
        return int(self.week_start.shape[0])

    @property
    def end(self) -> np.datetime64:
        """The last day counted."""
        return self.week_start[-1] + np.timedelta64(6, "D")

    @property
    def item_first(self) -> np.ndarray:
        return _first_nonzero(self.items)

    @property
    def cat_first(self) -> np.ndarray:
        return _first_nonzero(self.cats)

    def truncate(self, weeks: int) -> WeeklyDemand:
        """The first ``weeks`` weeks only (what was known at the end of week ``weeks - 1``)."""
        keep = self.items[:, :weeks].sum(axis=1) > 0
        return WeeklyDemand(
            self.week_start[:weeks],
            self.item_ids[keep],
            self.item_category[keep],
            self.items[keep, :weeks],
            self.categories,
            self.cats[:, :weeks],
        )


def _first_nonzero(y: np.ndarray) -> np.ndarray:
    nz = y > 0
    first = nz.argmax(axis=1)
    first[~nz.any(axis=1)] = y.shape[1]
    return first


def weekly_demand(rentals: Rentals, *, end: str | np.datetime64 | None = None) -> WeeklyDemand:
    """Count ``rentals`` per item and per category per week (weeks ending on ``end``).

    ``end`` defaults to the last review date; reviews after it are ignored.
    """
    if not len(rentals):
        raise InvalidInput("no rental reviews to count demand from")
    dates = rentals.review_date.astype("datetime64[D]")
    last = dates.max() if end is None else np.datetime64(str(end)[:10], "D")
    keep = dates <= last
    if not keep.any():
        raise InvalidInput(f"no rental reviews on or before {last}")
    dates = dates[keep]
    item = rentals.item_id[keep].astype(np.int64)
    category = np.array([c or "unknown" for c in rentals.category[keep]], dtype=object)
    back = ((last - dates).astype(np.int64)) // 7  # 0 = the last week
    n_weeks = int(back.max()) + 1
    week = n_weeks - 1 - back
    week_start = last - np.timedelta64(6, "D") - 7 * np.arange(n_weeks - 1, -1, -1)
    week_start = week_start.astype("datetime64[D]")

    item_ids, item_row = np.unique(item, return_inverse=True)
    categories, cat_row = np.unique(category.astype(str), return_inverse=True)
    items = np.zeros((item_ids.size, n_weeks))
    np.add.at(items, (item_row, week), 1.0)
    cats = np.zeros((categories.size, n_weeks))
    np.add.at(cats, (cat_row, week), 1.0)
    # an item's category: the one most of its reviews name
    pair = np.zeros((item_ids.size, categories.size), dtype=np.int64)
    np.add.at(pair, (item_row, cat_row), 1)
    return WeeklyDemand(
        week_start=week_start,
        item_ids=item_ids,
        item_category=pair.argmax(axis=1),
        items=items,
        categories=categories,
        cats=cats,
    )
