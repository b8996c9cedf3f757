"""Anonymous search feedback: impression and click events keyed by the search's request id.

Nothing personal is stored: no user id, no IP address, no URL, no query image — only which
result (item, position) of which search (request id) was shown or opened. That is enough for
click-through within the top 10 (a business metric next to offline Recall@K) and for turning
clicks on "similar items" results into training pairs.

Events are accepted only for answers the server really gave: ``record(events, answers)`` checks
each against the :class:`IssuedAnswer` of its request id (the serving layer keeps those for an
hour, see ``serve/ledger.py``): the item must be in that answer at that position, and the
query item of a click is the one the server answered for, never the client's word. One
impression and one click per (request, item) are kept, so a search yields at most two rows per
result and a forged or replayed batch cannot inflate a pair. ``add_batch`` stores without checks
(trusted callers and tests only). ``delete_older_than`` is the retention step of the refresh
job.

    store = EventStore(settings.db_url)
    store.create_schema()
    answer = IssuedAnswer("req-1", "search", None, ("LK-0001",), time.time())
    store.record([Event("impression", "req-1", "LK-0001", 1)], {"req-1": answer})
    store.ctr_at_10()           # CtrFigures(searches=1, clicked=0, ctr=0.0, ...)
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from lookalike.core.db import get_engine, migrate
from lookalike.core.errors import ConfigError, InvalidInput, Unavailable
from lookalike.core.settings import DatabaseSettings

__all__ = [
    "CtrFigures",
    "Event",
    "EventStore",
    "EventType",
    "IssuedAnswer",
    "RecordOutcome",
    "check_event",
]

EventType = Literal["impression", "click"]
MAX_BATCH = 100
TOP_K = 10

_metadata = sa.MetaData()
search_events = sa.Table(
    "search_events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("item_id", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    # The item a "similar items" search started from; null for photo searches.
    sa.Column("query_item_id", sa.String(64), nullable=True),
    sa.Column("surface", sa.String(16), nullable=False),
    sa.Column("client_ts", sa.DateTime(timezone=True), nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True, slots=True)
class Event:
    """One impression or click. ``position`` is the 1-based rank of the item in the results."""

    type: EventType
    request_id: str
    item_id: str
    position: int
    query_item_id: str | None = None
    surface: str = "search"
    ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedAnswer:
    """What the server answered for one request id: the only ground events are accepted on."""

    request_id: str
    surface: Literal["search", "similar"]
    query_item_id: str | None  # the item of a "similar items" answer; None for a photo search
    item_ids: tuple[str, ...]  # the results, in rank order
    issued_at: float  # epoch seconds


def check_event(event: Event, answer: IssuedAnswer | None) -> Event | str:
    """The event as it may be stored (query item from the answer), or why it is refused."""
    if answer is None:
        return (
            f"request_id {event.request_id!r} is not a search or similar answer this server "
            "gave recently"
        )
    try:
        rank = answer.item_ids.index(event.item_id) + 1
    except ValueError:
        return f"item {event.item_id!r} was not in the results of {event.request_id!r}"
    if event.position != rank:
        return f"item {event.item_id!r} was at position {rank}, not {event.position}"
    if event.query_item_id is not None and event.query_item_id != answer.query_item_id:
        return f"{event.request_id!r} did not answer for query item {event.query_item_id!r}"
    if (event.surface == "similar") != (answer.surface == "similar"):
        return f"{event.request_id!r} was a {answer.surface} answer, not {event.surface}"
    return replace(event, query_item_id=answer.query_item_id)


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What ``record`` did with a batch: stored, already stored, and refused (with reasons)."""

    accepted: int
    duplicates: int
    rejected: int
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CtrFigures:
    """Click-through within the top 10: searches with a click at position <= 10 / searches."""

    searches: int
    clicked: int
    ctr: float | None
    impressions: int
    clicks: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EventStore:
    """Feedback events in the project database (``Settings.db_url``)."""

    def __init__(self, url: str, *, db: DatabaseSettings | None = None) -> None:
        self.url, self._db = url, db
        self._engine = get_engine(url, db)  # the process's engine; does not connect

    def close(self) -> None:
        self._engine.dispose()

    def create_schema(self) -> None:
        """Migrate the database to the newest schema, events table included (idempotent)."""
        migrate(self.url, self._db)

    def add_batch(self, events: Sequence[Event]) -> int:
        """Store up to 100 events in one transaction, unchecked; returns how many were stored.

        For trusted callers: events from clients go through ``record``.
        """
        if len(events) > MAX_BATCH:
            raise InvalidInput(f"at most {MAX_BATCH} events per batch, got {len(events)}")
        if not events:
            return 0
        now = datetime.now(UTC)
        rows = [
            {
                "type": e.type,
                "request_id": e.request_id,
                "item_id": e.item_id,
                "position": e.position,
                "query_item_id": e.query_item_id,
                "surface": e.surface,
                "client_ts": _aware(e.ts),
                "received_at": now,
            }
            for e in events
        ]
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(search_events), rows)
        except SQLAlchemyError as exc:
            if "no such table" in str(exc):
                raise ConfigError("the events table is missing: call create_schema()") from exc
            raise Unavailable(f"the events database is unavailable: {exc}") from exc
        return len(rows)

    def record(self, events: Sequence[Event], answers: dict[str, IssuedAnswer]) -> RecordOutcome:
        """Check each event against its answer, drop repeats, store the rest (see the module)."""
        checked: list[Event] = []
        reasons: list[str] = []
        for event in events:
            result = check_event(event, answers.get(event.request_id))
            if isinstance(result, str):
                if result not in reasons:
                    reasons.append(result)
            else:
                checked.append(result)
        rejected = len(events) - len(checked)
        seen = self._stored_keys({e.request_id for e in checked})
        fresh: list[Event] = []
        for event in checked:
            key = (event.request_id, event.type, event.item_id)
            if key not in seen:
                seen.add(key)
                fresh.append(event)
        stored = self.add_batch(fresh)
        return RecordOutcome(stored, len(checked) - len(fresh), rejected, reasons[:5])

    def _stored_keys(self, request_ids: set[str]) -> set[tuple[str, str, str]]:
        if not request_ids:
            return set()
        ev = search_events
        query = sa.select(ev.c.request_id, ev.c.type, ev.c.item_id).where(
            ev.c.request_id.in_(request_ids)
        )
        try:
            with self._engine.connect() as conn:
                return {(r, t, i) for r, t, i in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise Unavailable(f"the events database is unavailable: {exc}") from exc

    def delete_older_than(self, days: float) -> int:
        """Retention: delete events received more than ``days`` ago; returns how many."""
        if days <= 0:
            raise ConfigError(f"event retention must be positive, got {days} days")
        cutoff = datetime.now(UTC) - timedelta(days=days)
        try:
            with self._engine.begin() as conn:
                result = conn.execute(
                    sa.delete(search_events).where(search_events.c.received_at < cutoff)
                )
        except SQLAlchemyError as exc:
            raise Unavailable(f"the events database is unavailable: {exc}") from exc
        return int(result.rowcount or 0)

    def _since(self, since: datetime | None) -> Any:
        if since is None:
            return sa.true()
        return search_events.c.received_at >= _aware(since)

    def ctr_at_10(self, since: datetime | None = None) -> CtrFigures:
        """Share of searches (request ids with impressions) that got a click in the top 10."""
        ev = search_events
        where = self._since(since)
        shown = sa.select(sa.func.count(sa.distinct(ev.c.request_id))).where(
            where, ev.c.type == "impression"
        )
        clicked = sa.select(sa.func.count(sa.distinct(ev.c.request_id))).where(
            where,
            ev.c.type == "click",
            ev.c.position <= TOP_K,
            ev.c.request_id.in_(sa.select(ev.c.request_id).where(where, ev.c.type == "impression")),
        )
        counts = sa.select(ev.c.type, sa.func.count()).where(where).group_by(ev.c.type)
        with self._engine.connect() as conn:
            searches = int(conn.scalar(shown) or 0)
            with_click = int(conn.scalar(clicked) or 0)
            by_type = {t: int(n) for t, n in conn.execute(counts)}
        return CtrFigures(
            searches=searches,
            clicked=with_click,
            ctr=round(with_click / searches, 4) if searches else None,
            impressions=by_type.get("impression", 0),
            clicks=by_type.get("click", 0),
        )

    def clicked_pairs(self, since: datetime | None = None) -> list[tuple[str, str, int]]:
        """``(query item, clicked item, clicks)`` from clicks on "similar items" results."""
        ev = search_events
        query = (
            sa.select(ev.c.query_item_id, ev.c.item_id, sa.func.count())
            .where(
                self._since(since),
                ev.c.type == "click",
                ev.c.query_item_id.is_not(None),
                ev.c.query_item_id != ev.c.item_id,
            )
            .group_by(ev.c.query_item_id, ev.c.item_id)
            .order_by(ev.c.query_item_id, ev.c.item_id)
        )
        with self._engine.connect() as conn:
            return [(q, i, int(n)) for q, i, n in conn.execute(query)]

    def export_pairs(self, out: Path, since: datetime | None = None, min_clicks: int = 1) -> int:
        """Write clicked pairs as a CSV (query_item_id, clicked_item_id, clicks); returns rows.

        Each row says shoppers looking at one item opened the other from its similar results:
        a positive pair for fine-tuning the embedder.
        """
        rows = [r for r in self.clicked_pairs(since) if r[2] >= min_clicks]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["query_item_id", "clicked_item_id", "clicks"])
            writer.writerows(rows)
        return len(rows)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(search_events)) or 0)
