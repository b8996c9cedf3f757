"""Rental reviews: who rented which item, how it fit, her measurements, the occasion, the date.

The shape is Rent the Runway's public "Clothing Fit" data
(``../shared/data/rtr/fit_reviews.parquet``: user_id, item_id, fit small/fit/large, weight,
height, bust, body type, size, age, category, rented_for, rating, review_date) and the same
columns from a business's own warehouse, as Parquet or CSV. A review is a lower bound on a
rental: not every renter writes one, so counts built from reviews under-count demand.

:class:`Rentals` is columnar (one numpy array per column, row order kept) so that the fit,
recommendation and forecast models slice and group it without pandas. Every evaluation splits it
by time (:func:`time_split`), never at random. :func:`check_rentals` reports the dirty rows
(ages over 100, impossible heights, missing measurements) without dropping them: the models
treat an implausible value as missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.core.textfiles import csv_rows

__all__ = [
    "DEFAULT_RENTALS",
    "FITS",
    "RentalCheck",
    "Rentals",
    "check_rentals",
    "read_checked_rentals",
    "read_rentals",
    "rentals_from_records",
    "time_split",
]

# The shared evaluation copy, relative to the project's root (absent on a user's fresh clone).
DEFAULT_RENTALS = Path("../shared/data/rtr/fit_reviews.parquet")
FITS = ("small", "fit", "large")
# Plausible ranges: outside them a value is treated as missing (and reported by check_rentals).
PLAUSIBLE = {
    "age": (14.0, 100.0),
    "height_in": (48.0, 84.0),
    "weight_lbs": (70.0, 400.0),
    "bust_size_num": (28.0, 50.0),
}
_TEXT = ("fit", "rented_for", "body_type", "category", "bust_size_letter")
_FLOAT = ("weight_lbs", "height_in", "bust_size_num", "age", "rating")
_INT = ("user_id", "item_id", "size")
# Column names in the raw UCSD JSON and common warehouse spellings → ours.
_ALIASES = {
    "user id": "user_id",
    "item id": "item_id",
    "rented for": "rented_for",
    "body type": "body_type",
    "weight": "weight_lbs",
    "height": "height_in",
    "date": "review_date",
    "bust size": "bust_size",
}


@dataclass(frozen=True)
class Rentals:
    """One row per review; every column a numpy array of the same length.

    Text columns are ``object`` arrays of ``str`` ('' when missing); measurements are float64
    with NaN when missing or implausible; ``review_date`` is ``datetime64[D]``.
    """

    user_id: np.ndarray
    item_id: np.ndarray
    fit: np.ndarray
    size: np.ndarray
    weight_lbs: np.ndarray
    height_in: np.ndarray
    bust_size_num: np.ndarray
    bust_size_letter: np.ndarray
    body_type: np.ndarray
    age: np.ndarray
    category: np.ndarray
    rented_for: np.ndarray
    rating: np.ndarray
    review_date: np.ndarray

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def take(self, rows: np.ndarray) -> Rentals:
        """The rows selected by a boolean mask or an index array, in that order."""
        return Rentals(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def span(self) -> tuple[np.datetime64, np.datetime64]:
        """(first, last) review date."""
        return self.review_date.min(), self.review_date.max()


def _text(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = ["" if v is None else str(v).strip().lower() for v in values]
    return out


def _float(values: list[Any]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None or v == "":
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _plausible(name: str, values: np.ndarray) -> np.ndarray:
    lo, hi = PLAUSIBLE.get(name, (-np.inf, np.inf))
    out = values.copy()
    with np.errstate(invalid="ignore"):
        out[(out < lo) | (out > hi)] = np.nan
    return out


def _split_bust(values: list[Any]) -> tuple[list[Any], list[Any]]:
    """'34d' → (34, 'd'); 'ddd/e' letters kept as written."""
    nums: list[Any] = []
    letters: list[Any] = []
    for v in values:
        s = "" if v is None else str(v).strip().lower()
        digits = "".join(ch for ch in s[:2] if ch.isdigit())
        nums.append(digits or None)
        letters.append(s[len(digits) :] or None)
    return nums, letters


def _height_inches(v: Any) -> Any:
    """5' 8" → 68; a number stays a number."""
    if v is None or isinstance(v, int | float):
        return v
    s = str(v).replace('"', "").strip()
    if "'" in s:
        feet, _, inches = s.partition("'")
        try:
            return int(feet) * 12 + int(inches.strip() or 0)
        except ValueError:
            return None
    return s


def rentals_from_records(columns: Mapping[str, list[Any]]) -> Rentals:
    """Build :class:`Rentals` from column lists (names as in the shared file or the aliases).

    Raises :class:`InvalidInput` naming the missing columns: user_id, item_id and review_date
    are required; every other column may be absent (all missing).
    """
    cols = {_ALIASES.get(k.strip().lower(), k.strip().lower()): v for k, v in columns.items()}
    missing = [c for c in ("user_id", "item_id", "review_date") if c not in cols]
    if missing:
        raise InvalidInput(f"rental reviews need the columns {', '.join(missing)}")
    n = len(cols["user_id"])
    if "bust_size" in cols and "bust_size_num" not in cols:
        cols["bust_size_num"], cols["bust_size_letter"] = _split_bust(cols["bust_size"])
    if "height_in" in cols:
        cols["height_in"] = [_height_inches(v) for v in cols["height_in"]]
    if "weight_lbs" in cols:
        cols["weight_lbs"] = [
            str(v).lower().replace("lbs", "").strip() if isinstance(v, str) else v
            for v in cols["weight_lbs"]
        ]
    out: dict[str, np.ndarray] = {}
    for name in _INT:
        raw = _float(cols.get(name, [None] * n))
        if name != "size" and np.isnan(raw).any():
            bad = int(np.flatnonzero(np.isnan(raw))[0])
            raise InvalidInput(f"row {bad + 1}: {name} must be a whole number")
        out[name] = np.where(np.isnan(raw), -1, raw).astype(np.int64)
    for name in _FLOAT:
        out[name] = _plausible(name, _float(cols.get(name, [None] * n)))
    for name in _TEXT:
        out[name] = _text(cols.get(name, [None] * n))
    try:
        out["review_date"] = np.array(
            [np.datetime64(str(v)[:10], "D") for v in cols["review_date"]], dtype="datetime64[D]"
        )
    except ValueError as exc:
        raise InvalidInput(f"review_date must be a date (YYYY-MM-DD): {exc}") from None
    unknown = sorted(set(out["fit"]) - set(FITS) - {""})
    if unknown:
        raise InvalidInput(f"fit must be one of {', '.join(FITS)}; got {', '.join(unknown[:5])}")
    return Rentals(**out)


def _read_columns(path: str | Path, limit: int | None) -> dict[str, list[Any]]:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no rental reviews at {path}")
    if path.suffix.lower() in {".parquet", ".pq"}:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{path} is not a readable Parquet file ({exc})") from exc
        if limit is not None:
            table = table.slice(0, limit)
        return {name: table.column(name).to_pylist() for name in table.column_names}
    rows = csv_rows(path)[:limit]
    if not rows:
        raise InvalidInput(f"{path} has no rows")
    return {k: [r.get(k) for r in rows] for k in rows[0]}


def read_rentals(path: str | Path, *, limit: int | None = None) -> Rentals:
    """Read a Parquet or CSV file of rental reviews (see the module doc for the columns)."""
    return rentals_from_records(_read_columns(path, limit))


def read_checked_rentals(
    path: str | Path, *, limit: int | None = None
) -> tuple[Rentals, RentalCheck]:
    """:func:`read_rentals` and :func:`check_rentals` of the same rows, reading the file once."""
    columns = _read_columns(path, limit)
    rentals = rentals_from_records(columns)
    return rentals, _check(rentals, _implausible(columns))


def time_split(
    rentals: Rentals, *, test_from: str | np.datetime64 | None = None, test_months: int = 6
) -> tuple[Rentals, Rentals]:
    """(past, later): rows before ``test_from`` and rows from it on.

    Without ``test_from`` the later part is the last ``test_months`` months of the data.
    """
    if test_from is None:
        last = rentals.review_date.max().astype("datetime64[M]")
        cut = (last - np.timedelta64(test_months - 1, "M")).astype("datetime64[D]")
    else:
        cut = np.datetime64(str(test_from)[:10], "D")
    later = rentals.review_date >= cut
    return rentals.take(~later), rentals.take(later)


@dataclass(frozen=True)
class RentalCheck:
    rows: int
    users: int
    items: int
    first: str
    last: str
    implausible: dict[str, int]
    missing: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "users": self.users,
            "items": self.items,
            "first": self.first,
            "last": self.last,
            "implausible": self.implausible,
            "missing": self.missing,
        }


def _implausible(columns: Mapping[str, list[Any]]) -> dict[str, int]:
    """Values outside :data:`PLAUSIBLE` in the raw columns (before they became NaN)."""
    cols = {_ALIASES.get(k.strip().lower(), k.strip().lower()): v for k, v in columns.items()}
    if "height_in" in cols:
        cols["height_in"] = [_height_inches(v) for v in cols["height_in"]]
    if "bust_size" in cols and "bust_size_num" not in cols:
        cols["bust_size_num"], _ = _split_bust(cols["bust_size"])
    out: dict[str, int] = {}
    for name, (lo, hi) in PLAUSIBLE.items():
        if name in cols:
            values = cols[name]
            if name == "weight_lbs":
                values = [
                    str(v).lower().replace("lbs", "").strip() if isinstance(v, str) else v
                    for v in values
                ]
            v = _float(values)
            with np.errstate(invalid="ignore"):
                out[name] = int(((v < lo) | (v > hi)).sum())
    return out


def _check(rentals: Rentals, implausible: dict[str, int]) -> RentalCheck:
    missing = {name: int(np.isnan(getattr(rentals, name)).sum()) for name in _FLOAT}
    missing.update({name: int((getattr(rentals, name) == "").sum()) for name in _TEXT})
    missing["size"] = int((rentals.size < 0).sum())
    first, last = rentals.span
    return RentalCheck(
        rows=len(rentals),
        users=int(np.unique(rentals.user_id).size),
        items=int(np.unique(rentals.item_id).size),
        first=str(first),
        last=str(last),
        implausible=implausible,
        missing=missing,
    )


def check_rentals(path_or_rentals: str | Path | Rentals) -> RentalCheck:
    """Counts of rows with implausible (treated as missing) and missing values, per column.

    Given :class:`Rentals` (already read) the implausible values are NaN by then, so only the
    missing counts (which include them) are reported; give the path to count them apart.
    """
    if isinstance(path_or_rentals, Rentals):
        return _check(path_or_rentals, {})
    return read_checked_rentals(path_or_rentals)[1]
