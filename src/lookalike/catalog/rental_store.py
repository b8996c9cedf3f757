"""``RentalStore``: rental reviews in the catalog database (SQLite or PostgreSQL).

Tables (migration ``0004``): ``rentals``, one row per review, unique on (user_id, item_id,
review_date, size), so importing the same file again adds nothing; and ``shopper_events``, the
append-only viewed/hearted/rented log whose table is defined here for the recommendations'
events store to share. Ids are text (the catalog's are), whatever the source used; a missing
size is stored as -1 so that such rows de-duplicate too. Each import is a *batch* (an id it
prints), recorded on the rows it added.

A review is a lower bound on a rental: counts read from here under-count demand.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from lookalike.core.db import get_engine, migrate, translate_errors
from lookalike.core.errors import InvalidInput
from lookalike.core.settings import DatabaseSettings, Settings
from lookalike.registry import sha256_file

from .rentals import (
    DEFAULT_RENTALS,
    RentalCheck,
    Rentals,
    read_checked_rentals,
    read_rentals,
    rentals_from_records,
)

__all__ = [
    "RentalCounts",
    "RentalData",
    "RentalImport",
    "RentalReview",
    "RentalStore",
    "metadata",
    "rentals_table",
    "shopper_events_table",
    "training_rentals",
]

_BATCH_ROWS = 5000
_MISSING_TABLES = (
    "the rentals tables are missing: run `lookalike fit import FILE` "
    "(or RentalStore.create_schema())"
)
# text column -> its width in the table (PostgreSQL refuses longer values)
_TEXT_COLUMNS = {
    "fit": 8,
    "bust_size_letter": 16,
    "body_type": 32,
    "category": 64,
    "rented_for": 64,
}
_FLOAT_COLUMNS = ("weight_lbs", "height_in", "bust_size_num", "age", "rating")

metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")

rentals_table = Table(
    "rentals",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("user_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("fit", String(8), nullable=False, server_default=""),
    Column("size", Integer, nullable=False, server_default="-1"),
    Column("weight_lbs", Float, nullable=True),
    Column("height_in", Float, nullable=True),
    Column("bust_size_num", Float, nullable=True),
    Column("bust_size_letter", String(16), nullable=False, server_default=""),
    Column("body_type", String(32), nullable=False, server_default=""),
    Column("age", Float, nullable=True),
    Column("category", String(64), nullable=False, server_default=""),
    Column("rented_for", String(64), nullable=False, server_default=""),
    Column("rating", Float, nullable=True),
    Column("review_date", Date, nullable=False),
    Column("source", String(300), nullable=False, server_default=""),
    Column("batch", String(64), nullable=False, server_default=""),
    UniqueConstraint(
        "user_id", "item_id", "review_date", "size", name="uq_rentals_user_item_date_size"
    ),
    Index("ix_rentals_item_date", "item_id", "review_date"),
    Index("ix_rentals_user_id", "user_id"),
    Index("ix_rentals_batch", "batch"),
)

shopper_events_table = Table(
    "shopper_events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("event", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    CheckConstraint("event IN ('viewed', 'hearted', 'rented')", name="ck_shopper_events_event"),
    Index("ix_shopper_events_user_at", "user_id", "at"),
    Index("ix_shopper_events_at", "at"),
)


@dataclass(frozen=True)
class RentalImport:
    """What one import did: rows read, rows added, rows already there (or repeated in the file)."""

    batch: str
    source: str
    rows_read: int
    added: int

    @property
    def duplicates(self) -> int:
        return self.rows_read - self.added

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duplicates": self.duplicates}


@dataclass(frozen=True)
class RentalCounts:
    rows: int
    users: int
    items: int
    first: str | None
    last: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RentalReview:
    """One stored review: the reviewer's measurements (None when unknown), fit, size, date."""

    user_id: str
    item_id: str
    fit: str
    size: int | None
    weight_lbs: float | None
    height_in: float | None
    bust_size_num: float | None
    bust_size_letter: str
    body_type: str
    age: float | None
    category: str
    rented_for: str
    rating: float | None
    review_date: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _db_errors() -> contextlib.AbstractContextManager[None]:
    return translate_errors("the rentals database", _MISSING_TABLES)


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _records(rentals: Rentals, start: int, stop: int, source: str, batch: str) -> list[dict]:
    cols = rentals.columns()
    out = []
    for i in range(start, stop):
        row: dict[str, Any] = {
            "user_id": str(int(cols["user_id"][i])),
            "item_id": str(int(cols["item_id"][i])),
            "size": int(cols["size"][i]),
            "review_date": date.fromisoformat(str(cols["review_date"][i])),
            "source": source,
            "batch": batch,
        }
        for name, width in _TEXT_COLUMNS.items():
            row[name] = str(cols[name][i])[:width]
        for name in _FLOAT_COLUMNS:
            row[name] = _num(float(cols[name][i]))
        out.append(row)
    return out


_REVIEW_FIELDS = tuple(f.name for f in fields(RentalReview))
_SIZE = _REVIEW_FIELDS.index("size")
assert _REVIEW_FIELDS[-1] == "review_date"


def _review(row: tuple[Any, ...]) -> RentalReview:
    """A stored row, its columns in :data:`_REVIEW_FIELDS` order, as a review.

    Positional on purpose: a busy item has thousands of reviews, and reading a SQLAlchemy row's
    columns by name costs more than the database read itself.
    """
    size = row[_SIZE]
    return RentalReview(
        *row[:_SIZE],
        None if size is None or size < 0 else int(size),
        *row[_SIZE + 1 : -1],
        row[-1].isoformat(),
    )


@dataclass(frozen=True)
class RentalData:
    """Rental reviews a model is fitted on, and where they came from: ``source`` goes into the
    model's manifest (a file's name and sha256, or the database's import batches), ``label``
    into what the command prints."""

    rentals: Rentals
    source: dict[str, Any]
    label: str

    @classmethod
    def from_file(cls, path: str | Path, *, limit: int | None = None) -> RentalData:
        path = Path(path)
        rentals = read_rentals(path, limit=limit)
        source = {"file": path.name, "sha256": sha256_file(path), "rows": len(rentals)}
        return cls(rentals, source, str(path))


def training_rentals(settings: Settings, data: Path | None = None) -> RentalData:
    """The reviews ``fit``, ``recs`` and ``forecast`` build and evaluate on.

    ``--data FILE`` when given; else what ``lookalike fit import`` put in the database; else the
    shared evaluation copy (``DEFAULT_RENTALS``, absent on a user's fresh clone). A database
    that cannot be reached is an error, never a silent switch to another data set.
    """
    if data is not None:
        return RentalData.from_file(data)
    store = RentalStore.for_settings(settings)
    store.create_schema()
    if store.count_rows():
        return store.rental_data()
    if DEFAULT_RENTALS.is_file():
        return RentalData.from_file(DEFAULT_RENTALS)
    raise InvalidInput(
        "no rental reviews: import them with `lookalike fit import FILE` "
        "(Parquet or CSV), or pass --data FILE"
    )


class RentalStore:
    """Rental reviews in the service's database; each method runs its own short transaction."""

    def __init__(self, url: str, *, db: DatabaseSettings | None = None) -> None:
        self.url = url
        self._db = db
        self._engine = get_engine(url, db)

    @classmethod
    def for_settings(cls, settings: Settings) -> RentalStore:
        return cls(settings.db_url, db=settings.db)

    def __repr__(self) -> str:
        return f"RentalStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def create_schema(self) -> None:
        """Migrate the database to the newest schema (idempotent)."""
        migrate(self.url, self._db)

    # ---- import -----------------------------------------------------------------------------

    def _insert(self, conn: Connection, rows: list[dict]) -> None:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            stmt: Any = postgresql.insert(rentals_table).on_conflict_do_nothing()
        else:
            stmt = sqlite.insert(rentals_table).on_conflict_do_nothing()
        conn.execute(stmt, rows)

    def import_rentals(
        self,
        rentals: Rentals,
        *,
        source: str = "",
        batch: str | None = None,
        batch_rows: int = _BATCH_ROWS,
        progress: Callable[[int, int], None] | None = None,
    ) -> RentalImport:
        """Add ``rentals``' rows that are not stored yet, ``batch_rows`` per transaction.

        Idempotent: a row whose (user_id, item_id, review_date, size) is stored is skipped.
        ``progress(done, total)`` is called after each transaction.
        """
        batch = batch or uuid.uuid4().hex[:12]
        source = source[:300]
        n = len(rentals)
        with _db_errors():
            before = self.count_rows()
            for start in range(0, n, batch_rows):
                stop = min(n, start + batch_rows)
                with self._engine.begin() as conn:
                    self._insert(conn, _records(rentals, start, stop, source, batch))
                if progress is not None:
                    progress(stop, n)
            added = self.count_rows() - before
        return RentalImport(batch=batch, source=source, rows_read=n, added=added)

    def import_file(
        self,
        path: str | Path,
        *,
        limit: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[RentalCheck, RentalImport]:
        """Read a Parquet/CSV file of rental reviews and import it: (its data checks, report)."""
        rentals, check = read_checked_rentals(path, limit=limit)
        report = self.import_rentals(rentals, source=Path(path).name, progress=progress)
        return check, report

    # ---- reading ----------------------------------------------------------------------------

    def revision(self) -> int:
        """The newest row's id: it changes whenever an import adds rows (caches key on it)."""
        with _db_errors(), self._engine.connect() as conn:
            return int(conn.scalar(select(func.max(rentals_table.c.id))) or 0)

    def count_rows(self) -> int:
        with _db_errors(), self._engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(rentals_table)) or 0)

    def counts(self) -> RentalCounts:
        t = rentals_table
        with _db_errors(), self._engine.connect() as conn:
            row = conn.execute(
                select(
                    func.count(),
                    func.count(func.distinct(t.c.user_id)),
                    func.count(func.distinct(t.c.item_id)),
                    func.min(t.c.review_date),
                    func.max(t.c.review_date),
                )
            ).one()
        first, last = row[3], row[4]
        return RentalCounts(
            rows=int(row[0]),
            users=int(row[1]),
            items=int(row[2]),
            first=None if first is None else str(first),
            last=None if last is None else str(last),
        )

    def item_reviews(self, item_id: str, *, limit: int | None = None) -> list[RentalReview]:
        """The reviews of ``item_id``, newest first (empty for an id the rentals do not know)."""
        if "\x00" in item_id or len(item_id) > 64:
            return []  # no stored id looks like this; asking PostgreSQL would be a driver error
        t = rentals_table
        query = (
            select(*[t.c[name] for name in _REVIEW_FIELDS])
            .where(t.c.item_id == item_id)
            .order_by(t.c.review_date.desc(), t.c.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        with _db_errors(), self._engine.connect() as conn:
            return [_review(r) for r in conn.execute(query).tuples().all()]

    def has_item(self, item_id: str) -> bool:
        if "\x00" in item_id or len(item_id) > 64:
            return False
        t = rentals_table
        with _db_errors(), self._engine.connect() as conn:
            return conn.scalar(select(t.c.id).where(t.c.item_id == item_id).limit(1)) is not None

    def iter_batches(self) -> Iterator[tuple[str, str, int]]:
        """(batch, source, rows) of every import that added rows, oldest first."""
        t = rentals_table
        query = (
            select(t.c.batch, t.c.source, func.count(), func.min(t.c.id))
            .group_by(t.c.batch, t.c.source)
            .order_by(func.min(t.c.id))
        )
        with _db_errors(), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        for batch, source, n, _ in rows:
            yield str(batch), str(source), int(n)

    def load_rentals(self) -> Rentals:
        """Every stored review, in import order, as the columns a model is fitted on."""
        t = rentals_table
        names = [c.name for c in t.columns if c.name not in ("id", "source", "batch")]
        with _db_errors(), self._engine.connect() as conn:
            rows = conn.execute(select(*[t.c[n] for n in names]).order_by(t.c.id)).all()
        if not rows:
            raise InvalidInput("the database holds no rental reviews: run `lookalike fit import`")
        columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
        columns["size"] = [None if v == -1 else v for v in columns["size"]]
        return rentals_from_records(columns)

    def rental_data(self) -> RentalData:
        """:meth:`load_rentals` with its provenance: the import batches and the date span."""
        rentals = self.load_rentals()
        first, last = rentals.span
        batches = [{"batch": b, "source": src, "rows": n} for b, src, n in self.iter_batches()]
        source = {
            "database": "rentals",
            "rows": len(rentals),
            "first": str(first),
            "last": str(last),
            "batches": batches,
        }
        files = ", ".join(sorted({b["source"] for b in batches}))
        return RentalData(
            rentals, source, f"the {len(rentals):,} reviews in the database (from {files})"
        )

    def group_counts(self, column: str) -> list[tuple[str, int]]:
        """Reviews per value of ``column`` (``size`` or ``body_type``), fewest first; a missing
        value is ``""`` (a size stored as -1 too)."""
        if column not in ("size", "body_type"):
            raise ValueError(f"no review counts by {column!r}")
        col = rentals_table.c[column]
        query = select(col, func.count()).group_by(col).order_by(func.count(), col)
        with _db_errors(), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [("" if v in (None, -1) else str(v), int(n)) for v, n in rows]

    def reviews_per_user(self) -> dict[int, int]:
        """How many users have each number of reviews: {reviews: users}."""
        t = rentals_table
        per_user = select(func.count().label("n")).select_from(t).group_by(t.c.user_id).subquery()
        query = select(per_user.c.n, func.count()).group_by(per_user.c.n)
        with _db_errors(), self._engine.connect() as conn:
            return {int(n): int(users) for n, users in conn.execute(query).all()}
