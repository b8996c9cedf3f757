"""Shopper events (viewed, hearted, rented): the ``shopper_events`` table and a short-lived
per-user overlay that the home page reads, so a new event shows within a second.

``POST /v1/users/{id}/events`` appends through :meth:`EventStore.record` (the worker that took
it forgets its cached copy of that user at once). :meth:`EventStore.recent` reads a user's
latest :data:`RECENT_LIMIT` events of the last :data:`RECENT_DAYS` days from the table and
keeps them for ``ttl_s`` (default 0.5 s) in a bounded in-process cache: every worker reads the
same table, so workers agree within that TTL, and no model is retrained. The nightly
``lookalike recs build`` folds every event into the model (:meth:`EventStore.interactions`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select

from lookalike.catalog.rental_store import shopper_events_table as events_table
from lookalike.core.db import get_engine, migrate, translate_errors
from lookalike.core.settings import DatabaseSettings
from lookalike.recs.interactions import EVENTS, Interactions

__all__ = ["EventStore", "RECENT_DAYS", "RECENT_LIMIT", "ShopperEvent"]

RECENT_LIMIT = 100
RECENT_DAYS = 30
CACHE_USERS = 10_000
_MISSING = "the shopper_events table is missing: run `lookalike catalog migrate` (or restart)"

ShopperEvent = tuple[str, str, datetime]  # (item_id, event, at)


class EventStore:
    def __init__(
        self, url: str, options: DatabaseSettings | None = None, *, ttl_s: float = 0.5
    ) -> None:
        self.url = url
        self.options = options
        self.ttl_s = ttl_s
        self._engine = get_engine(url, options)
        self._cache: OrderedDict[str, tuple[float, list[ShopperEvent]]] = OrderedDict()
        self._lock = threading.Lock()

    def create_schema(self) -> None:
        migrate(self.url, self.options)

    def record(self, user_id: str, events: Sequence[tuple[str, str]]) -> datetime:
        """Append ``(item_id, event)`` pairs for ``user_id`` at the server's clock."""
        at = datetime.now(UTC)
        rows = [
            {"user_id": user_id, "item_id": item, "event": event, "at": at}
            for item, event in events
            if event in EVENTS
        ]
        with translate_errors("the events database", _MISSING), self._engine.begin() as conn:
            conn.execute(insert(events_table), rows)
        with self._lock:
            self._cache.pop(user_id, None)
        return at

    def recent(self, user_id: str) -> list[ShopperEvent]:
        """Her latest events, newest first (cached for ``ttl_s``)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(user_id)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(user_id)
                return hit[1]
        since = datetime.now(UTC) - timedelta(days=RECENT_DAYS)
        t = events_table.c
        query = (
            select(t.item_id, t.event, t.at)
            .where(t.user_id == user_id, t.at >= since)
            .order_by(t.at.desc(), t.id.desc())
            .limit(RECENT_LIMIT)
        )
        with translate_errors("the events database", _MISSING), self._engine.connect() as conn:
            rows = [(str(r[0]), str(r[1]), r[2]) for r in conn.execute(query)]
        with self._lock:
            self._cache[user_id] = (now + self.ttl_s, rows)
            self._cache.move_to_end(user_id)
            while len(self._cache) > CACHE_USERS:
                self._cache.popitem(last=False)
        return rows

    def interactions(self) -> Interactions:
        """Every event, for the nightly build to fold in."""
        t = events_table.c
        query = select(t.user_id, t.item_id, t.event, t.at).order_by(t.id)
        with translate_errors("the events database", _MISSING), self._engine.connect() as conn:
            return Interactions.from_events(
                (str(r[0]), str(r[1]), str(r[2]), r[3]) for r in conn.execute(query)
            )

    def forget(self, user_id: str) -> int:
        """Delete a user's events (a shopper's erasure request); returns how many."""
        with translate_errors("the events database", _MISSING), self._engine.begin() as conn:
            n = conn.execute(delete(events_table).where(events_table.c.user_id == user_id))
        with self._lock:
            self._cache.pop(user_id, None)
        return int(n.rowcount or 0)
