"""Read dress listings (the Rent the Runway CSV shape) into columns, reporting what was dropped.

The columns (header names are matched case-insensitively, spaces and dashes read as ``_``):

==================  ========================================================================
``Brand``           required; lower-cased and stripped
``Retail_price``    required; ``"$1,234"``, ``"1234.00"`` and ``" 1 234 "`` all read as 1234
``Rent_price``      required to train or evaluate (``require_rent``); optional to suggest
``Number_of_reviews``  optional; missing or empty reads as 0 (counted in ``filled``)
fabric % columns    ``cotton`` … ``tencel`` (:data:`FABRICS`); missing reads as 0; each 0–100
``Length``, ``Sleeves``, ``Neckline``  optional; missing reads as ``unknown``
``Dress_Description``  optional free text (shown in reasons, not a model feature)
==================  ========================================================================

A row whose required price is missing, not a number, not positive or absurd, or whose fabric
share is outside 0–100, is dropped with its line number and the reason (:class:`ReadReport`);
a file without a required column, not UTF-8, or with no usable row raises
:class:`~lookalike.core.errors.InvalidInput` naming what is wrong.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.core.textfiles import check_text, csv_delimiter, read_text_file

__all__ = [
    "CATEGORICAL",
    "FABRICS",
    "MAX_PRICE",
    "MAX_ROWS",
    "Listings",
    "ReadReport",
    "listings_from_records",
    "parse_price",
    "read_listings",
]

FABRICS = (
    "cotton",
    "linen",
    "silk",
    "leather",
    "spandex",
    "polyester",
    "nylon",
    "metallic_fibers",
    "wool",
    "rayon",
    "cellulose",
    "cashmere",
    "tencel",
)
CATEGORICAL = ("length", "sleeves", "neckline")
UNKNOWN = "unknown"
MAX_PRICE = 100_000.0  # USD: a dress listed above this is a typo, not a price
MAX_ROWS = 1_000_000
MAX_FIELD = 2_000  # characters kept of a free-text field
MAX_REASONS = 50  # dropped-row reasons kept verbatim (all are counted)
_NUMBER = re.compile(r"^[+]?\d+(\.\d+)?$")


def parse_price(text: object) -> float | None:
    """``"$1,234.50"`` → 1234.5; None for empty, non-numeric, non-finite or negative text."""
    if text is None:
        return None
    if isinstance(text, int | float):
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    cleaned = re.sub(r"[\s,$]", "", str(text)).removeprefix("USD").removesuffix("USD")
    if not cleaned or not _NUMBER.match(cleaned):
        return None
    value = float(cleaned)
    return value if math.isfinite(value) else None


@dataclass
class ReadReport:
    """What reading a file did: rows read, kept, dropped (with reasons), values filled in."""

    source: str
    rows: int = 0
    kept: int = 0
    dropped: int = 0
    reasons: list[str] = field(default_factory=list)
    filled: dict[str, int] = field(default_factory=dict)

    def drop(self, line: int, why: str) -> None:
        self.dropped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"line {line}: {why}")

    def fill(self, column: str) -> None:
        self.filled[column] = self.filled.get(column, 0) + 1

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rows": self.rows,
            "kept": self.kept,
            "dropped": self.dropped,
            "reasons": list(self.reasons),
            "filled": dict(self.filled),
        }


@dataclass
class Listings:
    """Column arrays of ``n`` dresses; ``rent`` is NaN where unknown (dresses to price)."""

    brand: list[str]
    description: list[str]
    retail: np.ndarray  # (n,) float64 USD
    rent: np.ndarray  # (n,) float64 USD, NaN when unknown
    reviews: np.ndarray  # (n,) float64
    fabrics: np.ndarray  # (n, len(FABRICS)) float64 percentages
    cats: dict[str, list[str]]  # length / sleeves / neckline

    def __len__(self) -> int:
        return len(self.brand)

    @property
    def has_rent(self) -> bool:
        return bool(len(self)) and bool(np.all(np.isfinite(self.rent)))

    def category_blocks(self, vocabulary: Mapping[str, list[str]]) -> list[np.ndarray]:
        """One-hot (n, len(vocabulary[k])) per length / sleeves / neckline; unseen values: 0s."""
        blocks = []
        for k in CATEGORICAL:
            index = {v: j for j, v in enumerate(vocabulary[k])}
            block = np.zeros((len(self), len(index)))
            for i, v in enumerate(self.cats[k]):
                j = index.get(v)
                if j is not None:
                    block[i, j] = 1.0
            blocks.append(block)
        return blocks

    def take(self, rows: Iterable[int] | np.ndarray) -> Listings:
        idx = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64)
        return Listings(
            brand=[self.brand[i] for i in idx],
            description=[self.description[i] for i in idx],
            retail=self.retail[idx],
            rent=self.rent[idx],
            reviews=self.reviews[idx],
            fabrics=self.fabrics[idx],
            cats={k: [v[i] for i in idx] for k, v in self.cats.items()},
        )

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Listings, Listings]:
        """(train, test): a random permutation with ``seed``, the first ``test_fraction`` is test.

        Nothing is stratified; the split depends only on ``len(self)``, the seed and the fraction.
        """
        if not 0 < test_fraction < 1:
            raise InvalidInput(f"test fraction must be between 0 and 1, got {test_fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(len(self) * test_fraction))
        if n_test < 1 or n_test >= len(self):
            raise InvalidInput(f"{len(self)} listings are too few to split {test_fraction:g}")
        return self.take(np.sort(order[n_test:])), self.take(np.sort(order[:n_test]))

    def split_by_brand(
        self, test_fraction: float = 0.2, seed: int = 0
    ) -> tuple[Listings, Listings]:
        """(train, test) with no brand on both sides: how a model prices a brand it never saw.

        The distinct brands are shuffled with ``seed`` and go to the test side, whole, until it
        holds at least ``test_fraction`` of the dresses (so it may hold a little more).
        """
        if not 0 < test_fraction < 1:
            raise InvalidInput(f"test fraction must be between 0 and 1, got {test_fraction}")
        brands = sorted(set(self.brand))
        if len(brands) < 2:
            raise InvalidInput(f"a split by brand needs 2 brands or more, got {len(brands)}")
        order = np.random.default_rng(seed).permutation(len(brands))
        sizes = Counter(self.brand)
        test_brands: set[str] = set()
        held = 0
        for j in order[:-1]:  # the last brand always stays in training
            if held >= test_fraction * len(self):
                break
            test_brands.add(brands[j])
            held += sizes[brands[j]]
        is_test = np.array([b in test_brands for b in self.brand])
        return self.take(np.flatnonzero(~is_test)), self.take(np.flatnonzero(is_test))

    def to_records(self) -> list[dict[str, object]]:
        """One dict per dress in the CSV's own column names (what :func:`read_listings` reads)."""
        out = []
        for i in range(len(self)):
            row: dict[str, object] = {
                "Brand": self.brand[i],
                "Dress_Description": self.description[i],
                "Retail_price": float(self.retail[i]),
                "Rent_price": "" if not np.isfinite(self.rent[i]) else float(self.rent[i]),
                "Number_of_reviews": float(self.reviews[i]),
            }
            row.update({f: float(v) for f, v in zip(FABRICS, self.fabrics[i], strict=True)})
            row.update({k.capitalize(): self.cats[k][i] for k in CATEGORICAL})
            out.append(row)
        return out


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()[:MAX_FIELD]


def listings_from_records(
    records: Iterable[Mapping[str, object]],
    *,
    require_rent: bool,
    source: str = "records",
    first_line: int = 2,
) -> tuple[Listings, ReadReport]:
    """Parse rows (dicts keyed by the CSV's column names, any case) into :class:`Listings`."""
    report = ReadReport(source)
    brand: list[str] = []
    desc: list[str] = []
    retail: list[float] = []
    rent: list[float] = []
    reviews: list[float] = []
    fabrics: list[list[float]] = []
    cats: dict[str, list[str]] = {k: [] for k in CATEGORICAL}
    for line, raw in enumerate(records, start=first_line):
        report.rows += 1
        if report.rows > MAX_ROWS:
            raise InvalidInput(f"{source}: more than {MAX_ROWS:,} rows; split the file")
        row = {_key(str(k)): v for k, v in raw.items() if k is not None}
        name = _text(row.get("brand")).lower()
        if not name:
            report.drop(line, "no brand")
            continue
        price = parse_price(row.get("retail_price"))
        if price is None or not 0 < price <= MAX_PRICE:
            report.drop(
                line,
                f"retail price {_text(row.get('retail_price'))[:20]!r} is not a "
                f"price between 0 and {MAX_PRICE:,.0f}",
            )
            continue
        rent_text = _text(row.get("rent_price"))
        paid = parse_price(rent_text) if rent_text else None
        if rent_text and (paid is None or not 0 < paid <= MAX_PRICE):
            report.drop(line, f"rent price {rent_text[:20]!r} is not a price")
            continue
        if require_rent and paid is None:
            report.drop(line, "no rent price")
            continue
        count_text = _text(row.get("number_of_reviews"))
        count = parse_price(count_text) if count_text else None
        if count is None:
            if count_text:
                report.drop(line, f"number of reviews {count_text[:20]!r} is not a count")
                continue
            report.fill("number_of_reviews")
            count = 0.0
        shares: list[float] = []
        bad = None
        for fabric in FABRICS:
            text = _text(row.get(fabric))
            share = parse_price(text.rstrip("%")) if text else 0.0
            if share is None or share > 100:
                bad = f"{fabric} {text[:20]!r} is not a percentage 0-100"
                break
            shares.append(share)
        if bad:
            report.drop(line, bad)
            continue
        for k in CATEGORICAL:
            value = _text(row.get(k)).lower()[:60]
            if not value:
                report.fill(k)
            cats[k].append(value or UNKNOWN)
        brand.append(name[:120])
        desc.append(_text(row.get("dress_description")))
        retail.append(price)
        rent.append(paid if paid is not None else math.nan)
        reviews.append(count)
        fabrics.append(shares)
    report.kept = len(brand)
    listings = Listings(
        brand=brand,
        description=desc,
        retail=np.asarray(retail, dtype=np.float64),
        rent=np.asarray(rent, dtype=np.float64),
        reviews=np.asarray(reviews, dtype=np.float64),
        fabrics=np.asarray(fabrics, dtype=np.float64).reshape(len(brand), len(FABRICS)),
        cats=cats,
    )
    return listings, report


def read_listings(
    path: Path | str, *, require_rent: bool = True, text: str | None = None
) -> tuple[Listings, ReadReport]:
    """Read a listings CSV (or ``text``, its content); see the module docstring."""
    source = str(path)
    text = read_text_file(path) if text is None else check_text(text, source)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text))
    try:
        header = {_key(h) for h in (reader.fieldnames or []) if h is not None}
    except csv.Error as exc:
        raise InvalidInput(f"{source}: not a readable CSV ({exc})") from exc
    needed = ["brand", "retail_price"] + (["rent_price"] if require_rent else [])
    missing = [c for c in needed if c not in header]
    if missing:
        raise InvalidInput(
            f"{source}: missing column(s) {', '.join(missing)} (found: "
            f"{', '.join(sorted(header))[:300] or 'no header'}); expected the columns of "
            "rtr_dresses.csv: Brand, Retail_price, Rent_price, …"
        )
    try:
        listings, report = listings_from_records(reader, require_rent=require_rent, source=source)
    except csv.Error as exc:
        raise InvalidInput(f"{source}: not a readable CSV ({exc})") from exc
    if not len(listings):
        why = "; ".join(report.reasons[:3])
        raise InvalidInput(f"{source}: no usable row ({report.rows} read; {why or 'empty'})")
    return listings, report
