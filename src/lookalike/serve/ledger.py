"""The access ledger: rate-limit counters and issued answers, shared by every worker of a host.

Each ``--workers N`` process used to count requests in its own memory, so a limit of N a minute
let through about N per worker. The ledger keeps the counts where every worker sees them: by
default a small SQLite file, ``var/access.db`` (through ``core.db.get_engine``: WAL, so a
commit is not an fsync), or any SQLAlchemy URL in
``LOOKALIKE_EXTENSION__LEDGER_URL`` (e.g. the PostgreSQL database, for replicas on several
hosts). It is not the catalog database on purpose: a write per search would contend with catalog
imports on SQLite. ``scripts/bench_access.py`` measures what a check costs.

Two tables:

- ``rate_windows``: sliding-window counters, one row per (bucket, minute). A request is allowed
  when ``previous minute * (1 - elapsed share) + this minute < limit``; a refused request is not
  counted, so a client over its limit gets back in as soon as its rate falls.
- ``issued_answers``: the request id, surface (``search`` | ``similar``), query item and result
  ids of each recent 200 answer of ``/v1/search`` and ``/v1/items/{id}/similar``, kept for
  ``ttl_seconds``; ``POST /v1/events`` accepts events only for these.

Buckets are opaque strings made by the caller (a key id, or a salted hash of a client network:
``client_bucket``); no IP address is ever stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Collection

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lookalike.core.db import get_engine, normalise_url
from lookalike.core.errors import ConfigError, Unavailable
from lookalike.core.settings import DatabaseSettings, Settings
from lookalike.jobs.events import IssuedAnswer

__all__ = ["WINDOW_SECONDS", "AccessLedger", "ledger_url"]

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# How many result ids of one answer are kept (k is capped at 100 by the search routes).
_MAX_ITEMS = 1000

_metadata = sa.MetaData()
rate_windows = sa.Table(
    "rate_windows",
    _metadata,
    sa.Column("bucket", sa.String(80), primary_key=True),
    sa.Column("window", sa.Integer, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
issued_answers = sa.Table(
    "issued_answers",
    _metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("surface", sa.String(16), nullable=False),
    sa.Column("query_item_id", sa.String(64), nullable=True),
    sa.Column("item_ids", sa.Text, nullable=False),  # JSON list, in rank order
    sa.Column("issued_at", sa.Float, nullable=False, index=True),
)
ledger_meta = sa.Table(
    "ledger_meta",
    _metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)


def ledger_url(settings: Settings) -> str:
    """The ledger's URL: ``extension.ledger_url`` or ``sqlite:///<home>/var/access.db``."""
    if settings.extension.ledger_url:
        return settings.extension.ledger_url
    return f"sqlite:///{(settings.var_dir / 'access.db').resolve()}"


def _engine(url: str, options: DatabaseSettings | None) -> sa.Engine:
    if normalise_url(url).startswith("sqlite") and ":memory:" in url:
        raise ConfigError("the access ledger must be a file or a server (workers share it)")
    return get_engine(url, options)


def _network(host: str) -> str:
    """The unit a client is counted by: its IPv4 address, or its IPv6 /64 (one household)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{addr}/64", strict=False))
    return str(addr)


class AccessLedger:
    """Shared counters and issued answers (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: float = 3600.0,
        options: DatabaseSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self._engine = _engine(url, options)
        self._clock = clock
        self._insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        self._salt: bytes | None = None
        self._purged_at = 0.0
        self._lock = threading.Lock()
        # Counts of closed windows, read once per bucket and window: a hit is then one statement.
        self._closed: dict[str, int] = {}
        self._closed_window = -1
        self._ready = False
        self._tried_at = -math.inf

    def create_schema(self) -> None:
        """Create the tables and the hashing salt if missing (safe on every start, any worker)."""
        for attempt in range(2):
            try:
                _metadata.create_all(self._engine, checkfirst=True)
                with self._engine.begin() as conn:
                    conn.execute(
                        self._insert(ledger_meta)
                        .values(name="client_salt", value=secrets.token_hex(32))
                        .on_conflict_do_nothing(index_elements=["name"])
                    )
                break
            except (sa.exc.SQLAlchemyError, Unavailable) as exc:
                # Two workers creating the tables at once: the loser finds them made.
                if attempt == 1:
                    if isinstance(exc, Unavailable):
                        raise
                    raise Unavailable(
                        f"the access ledger is unavailable: {type(exc).__name__}"
                    ) from exc
                time.sleep(0.2)
        self._load_salt()
        self._ready = True

    def _ensure_schema(self) -> None:
        """Before a use: create the tables if a start-up without the database could not.

        Retried at most every 5 s; in between the caller gets ``Unavailable`` at once.
        """
        if self._ready:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._tried_at < 5.0:
                raise Unavailable("the access ledger is not ready yet; retrying")
            self._tried_at = now
        self.create_schema()

    def _load_salt(self) -> bytes:
        if self._salt is None:
            with self._engine.connect() as conn:
                value = conn.scalar(
                    sa.select(ledger_meta.c.value).where(ledger_meta.c.name == "client_salt")
                )
            if value is None:
                raise ConfigError("the access ledger has no salt: call create_schema()")
            self._salt = bytes.fromhex(value)
        return self._salt

    def client_bucket(self, host: str | None) -> str:
        """An opaque, stable name for a client network: a salted hash, never the address.

        No I/O after ``create_schema`` (the salt is kept in memory).
        """
        self._ensure_schema()
        digest = hmac.new(self._load_salt(), _network(host or "-").encode(), hashlib.sha256)
        return "ip:" + digest.hexdigest()[:24]

    # --- rate limits -------------------------------------------------------------------------

    def hit(self, bucket: str, limit: int) -> float:
        """Count one request of ``bucket``: 0.0 if allowed, else seconds until one would be."""
        self._ensure_schema()
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        elapsed = (now % WINDOW_SECONDS) / WINDOW_SECONDS
        t = rate_windows
        with self._engine.connect() as conn:
            prev = self._closed_count(conn, bucket, window - 1)
            carried = (prev or 0) * (1.0 - elapsed)
            cap = math.ceil(limit - carried)  # this minute may reach cap - 1 + 1 = cap
            allowed = False
            if cap >= 1:
                stmt = self._insert(t).values(bucket=bucket, window=window, count=1)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["bucket", "window"],
                    set_={"count": t.c.count + 1},
                    where=t.c.count < cap,
                ).returning(t.c.count)
                allowed = conn.execute(stmt).first() is not None
            if allowed:
                conn.commit()
                self._maybe_purge(now)
                return 0.0
            conn.rollback()
            current = conn.scalar(
                sa.select(t.c.count).where(t.c.bucket == bucket, t.c.window == window)
            )
        return _wait_seconds(prev or 0, current or 0, limit, elapsed)

    def _closed_count(self, conn: sa.Connection, bucket: str, window: int) -> int:
        with self._lock:
            if self._closed_window != window:
                self._closed, self._closed_window = {}, window
            cached = self._closed.get(bucket)
        if cached is not None:
            return cached
        t = rate_windows
        count = int(
            conn.scalar(sa.select(t.c.count).where(t.c.bucket == bucket, t.c.window == window)) or 0
        )
        with self._lock:
            if self._closed_window == window and len(self._closed) < 100_000:
                self._closed[bucket] = count
        return count

    # --- issued answers ----------------------------------------------------------------------

    def issue(self, answer: IssuedAnswer) -> None:
        """Remember an answer the server gave (replaces one with the same request id)."""
        self._ensure_schema()
        values = {
            "request_id": answer.request_id,
            "surface": answer.surface,
            "query_item_id": answer.query_item_id,
            "item_ids": json.dumps(list(answer.item_ids[:_MAX_ITEMS])),
            "issued_at": answer.issued_at,
        }
        stmt = self._insert(issued_answers).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["request_id"],
            set_={k: v for k, v in values.items() if k != "request_id"},
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def issued(self, request_ids: Collection[str]) -> dict[str, IssuedAnswer]:
        """The answers among ``request_ids`` issued within the last ``ttl_seconds``."""
        if not request_ids:
            return {}
        self._ensure_schema()
        oldest = self._clock() - self.ttl_seconds
        t = issued_answers
        query = sa.select(t).where(t.c.request_id.in_(set(request_ids)), t.c.issued_at >= oldest)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            r.request_id: IssuedAnswer(
                request_id=r.request_id,
                surface=r.surface,
                query_item_id=r.query_item_id,
                item_ids=tuple(json.loads(r.item_ids)),
                issued_at=r.issued_at,
            )
            for r in rows
        }

    # --- housekeeping ------------------------------------------------------------------------

    def purge(self) -> int:
        """Delete closed windows and expired answers; returns the rows deleted."""
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        with self._engine.begin() as conn:
            a = conn.execute(sa.delete(rate_windows).where(rate_windows.c.window < window - 1))
            b = conn.execute(
                sa.delete(issued_answers).where(issued_answers.c.issued_at < now - self.ttl_seconds)
            )
        return int(a.rowcount or 0) + int(b.rowcount or 0)

    def _maybe_purge(self, now: float) -> None:
        # At most once a minute per worker; a failed purge only leaves rows for the next one.
        with self._lock:
            if now - self._purged_at < WINDOW_SECONDS:
                return
            self._purged_at = now
        try:
            self.purge()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("access ledger purge failed (will retry): %s", type(exc).__name__)


def _wait_seconds(prev: int, current: int, limit: int, elapsed: float) -> float:
    """Seconds until ``prev * (1 - share) + current < limit`` holds again (at least 1)."""
    if current < limit and prev > 0:
        # later in this window the carried share of the previous one shrinks
        share = 1.0 - (limit - current) / prev
        return max(1.0, (share - elapsed) * WINDOW_SECONDS)
    # in the next window this one is the previous: wait until its carried share is below limit
    share = 1.0 - limit / current if current else 0.0
    return max(1.0, (1.0 - elapsed + max(0.0, share)) * WINDOW_SECONDS)
