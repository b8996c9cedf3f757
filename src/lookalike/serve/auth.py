"""API keys for extension clients, CORS for configured extension origins, per-key rate limit.

Wire it into an app with one call, after the routers are included::

    store = ApiKeyStore(settings.db_url)
    store.create_schema()
    install_auth(
        app,
        store,
        extension_origins=settings.extension.origins,
        rate_per_minute=settings.extension.rate_per_minute,
    )

Rules on the protected paths (``/v1/search`` by default):

- a request carrying ``X-API-Key`` must present a valid, unrevoked key, else 401
  ``invalid_api_key``;
- a request whose ``Origin`` is ``chrome-extension://...`` and carries no key gets 401
  ``api_key_required``;
- a request with neither key nor extension origin (the same-origin search page) passes;
- each key may make ``rate_per_minute`` requests a minute (token bucket, bursts up to the same
  number); past that the answer is 429 ``rate_limited`` with a ``Retry-After`` header.

``install_auth`` also adds ``GET /v1/auth/check`` (same key rules, but a key is required) that
the extension's "Test connection" button calls. Secrets are shown once by ``create`` and stored
only as SHA-256 hashes; they are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from lookalike.core.errors import ConfigError, NotFound

__all__ = [
    "API_KEY_HEADER",
    "ApiKey",
    "ApiKeyStore",
    "RateLimiter",
    "install_auth",
]

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_SECRET_PREFIX = "lk_"
# "lk_<key_id>_<random>": the key id lets us find the row, the hash comparison is constant-time.
_SECRET_RE = re.compile(r"^lk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_EXTENSION_SCHEME = "chrome-extension://"

_metadata = sa.MetaData()
_api_keys = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never the secret, only who it is for and whether it still works."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _row_to_key(row: sa.Row) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        created_at=_aware(row.created_at),
        revoked_at=_aware(row.revoked_at) if row.revoked_at is not None else None,
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; we only ever store UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ApiKeyStore:
    """API keys in the ``api_keys`` table of the database at ``url`` (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"cannot open the API key database {url!r}: {exc}") from exc

    def create_schema(self) -> None:
        """Create the ``api_keys`` table if it is missing (safe to call on every start)."""
        _metadata.create_all(self._engine)

    def create(self, name: str) -> tuple[str, str]:
        """Make a key for ``name``; return ``(key_id, secret)``. The secret is not kept."""
        name = name.strip()
        if not name:
            raise ConfigError("an API key needs a name, e.g. `lookalike keys create alice-laptop`")
        key_id = secrets.token_hex(6)
        secret = f"{_SECRET_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self._engine.begin() as conn:
            conn.execute(
                _api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    secret_sha256=_hash(secret),
                    created_at=datetime.now(UTC),
                    revoked_at=None,
                )
            )
        log.info("created API key %s for %r", key_id, name)
        return key_id, secret

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_api_keys).order_by(_api_keys.c.created_at)).all()
        return [_row_to_key(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; requests with it fail from now on. Revoking twice is harmless."""
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(_api_keys).where(_api_keys.c.key_id == key_id)).first()
            if row is None:
                raise NotFound(f"no API key {key_id!r} — see `lookalike keys list`")
            if row.revoked_at is None:
                conn.execute(
                    _api_keys.update()
                    .where(_api_keys.c.key_id == key_id)
                    .values(revoked_at=datetime.now(UTC))
                )
            row = conn.execute(sa.select(_api_keys).where(_api_keys.c.key_id == key_id)).one()
        log.info("revoked API key %s", key_id)
        return _row_to_key(row)

    def verify(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, or None (unknown, malformed or revoked)."""
        match = _SECRET_RE.match(secret.strip())
        if match is None:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(_api_keys).where(_api_keys.c.key_id == match.group(1))
            ).first()
        if row is None or not hmac.compare_digest(_hash(secret.strip()), row.secret_sha256):
            return None
        key = _row_to_key(row)
        return key if key.active else None


class RateLimiter:
    """A token bucket per key: ``rate_per_minute`` refill, bursts up to ``burst`` requests."""

    def __init__(
        self,
        rate_per_minute: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_minute <= 0:
            raise ConfigError(f"rate_per_minute must be positive, got {rate_per_minute}")
        self.rate_per_second = rate_per_minute / 60.0
        self.capacity = float(burst if burst is not None else rate_per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate_per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_second


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def install_auth(
    app: FastAPI,
    store: ApiKeyStore,
    *,
    extension_origins: list[str],
    rate_per_minute: int,
    protected_paths: tuple[str, ...] = ("/v1/search",),
) -> RateLimiter:
    """Add API-key checks, the rate limit, CORS for ``extension_origins`` and /v1/auth/check.

    ``extension_origins`` are full origins such as ``chrome-extension://<32 letters>``; only
    those get CORS headers. Returns the limiter (handy for tests and /health).
    """
    for origin in extension_origins:
        if not origin.startswith(_EXTENSION_SCHEME) or origin.rstrip("/") != origin:
            raise ConfigError(
                f"extension origin {origin!r} must look like chrome-extension://<id> "
                "(no trailing slash)"
            )
    limiter = RateLimiter(rate_per_minute)
    checked = (*protected_paths, "/v1/auth/check")

    async def check_key(request: Request) -> Response | None:
        """None when the request may go on, else the error response to send."""
        secret = request.headers.get(API_KEY_HEADER)
        if not secret:
            if request.url.path == "/v1/auth/check":
                return _error(401, "api_key_required", "send your API key in X-API-Key")
            if request.headers.get("origin", "").startswith(_EXTENSION_SCHEME):
                return _error(
                    401,
                    "api_key_required",
                    "this server needs an API key: add it on the extension's options page",
                )
            return None  # the same-origin search page
        key = await run_in_threadpool(store.verify, secret)
        if key is None:
            return _error(
                401,
                "invalid_api_key",
                "the API key is unknown or revoked — ask for a new one (`lookalike keys create`)",
            )
        wait = limiter.acquire(key.key_id)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            return _error(
                429,
                "rate_limited",
                f"too many searches with this key; try again in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
        request.state.api_key = key
        return None

    class KeyCheck:
        """Pure ASGI (no BaseHTTPMiddleware): the body streams through untouched."""

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            http = scope["type"] == "http" and scope["method"] != "OPTIONS"
            if http and scope["path"] in checked:
                refused = await check_key(Request(scope))  # its .state is the scope's state
                if refused is not None:
                    await refused(scope, receive, send)
                    return
            await self.inner(scope, receive, send)

    app.add_middleware(KeyCheck)

    @app.get("/v1/auth/check", include_in_schema=True, tags=["auth"])
    async def auth_check(request: Request) -> dict[str, str]:
        """Which key this is: the extension's "Test connection" calls it."""
        key: ApiKey = request.state.api_key
        return {"key_id": key.key_id, "name": key.name}

    # Added last so it is the outermost layer: 401/429 answers carry CORS headers too, and the
    # extension can read the error body and Retry-After instead of seeing a network failure.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(extension_origins),
        allow_methods=["GET", "POST"],
        allow_headers=[API_KEY_HEADER, "Content-Type"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    return limiter
