"""API keys with roles, CORS for configured extension origins, and the access policy.

Wire it into an app with one call, after the routers are included::

    store = ApiKeyStore(settings.db_url)
    store.create_schema()
    ledger = AccessLedger(ledger_url(settings), ttl_seconds=..., options=settings.db)
    ledger.create_schema()
    install_auth(app, store, settings.extension, ledger=ledger)

A key has a role: ``extension`` (the browser extension), ``moderator`` or ``admin``. Which
routes each role may call, the anonymous per-network limit, the per-key limit shared by every
worker and the bounds on ``POST /v1/events`` are the rules of ``serve/access.py``
(``ROUTE_ACCESS`` is the one table of route classes). ``install_auth`` adds that middleware,
``GET /v1/auth/check`` (any valid key; the extension's "Test connection" button calls it) and
CORS for exactly the configured extension origins. Secrets are shown once by ``create`` and
stored only as SHA-256 hashes; they are never logged.

While the database is unreachable, a key this worker verified in the last
:data:`KEY_GRACE_SECONDS` still opens its routes (its hash, role and name kept in memory): a
revocation is a write to the same database, so none can have happened meanwhile; an unknown key
gets the database's 503.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from lookalike.core.db import get_engine, migrate
from lookalike.core.errors import ConfigError, NotFound, Unavailable
from lookalike.core.settings import DatabaseSettings, ExtensionSettings
from lookalike.serve.access import ROLES, AccessControl
from lookalike.serve.ledger import AccessLedger

__all__ = [
    "API_KEY_HEADER",
    "ApiKey",
    "ApiKeyStore",
    "Role",
    "install_auth",
]

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_SECRET_PREFIX = "lk_"
# "lk_<key_id>_<random>": the key id lets us find the row, the hash comparison is constant-time.
_SECRET_RE = re.compile(r"^lk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_EXTENSION_SCHEME = "chrome-extension://"
KEY_GRACE_SECONDS = 600.0  # a verified key outlives a database outage this long (module doc)
_KNOWN_KEYS = 10_000
Role = Literal["extension", "moderator", "admin"]

_metadata = sa.MetaData()
_api_keys = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # Added by migration 0002_key_roles; keys made before it are extension keys.
    sa.Column("role", sa.String(16), nullable=False, server_default="extension"),
)


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never the secret, only who it is for and whether it still works."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: Role = "extension"

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
        role=cast(Role, row.role),
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; we only ever store UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ApiKeyStore:
    """API keys in the ``api_keys`` table of the database at ``url`` (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, db: DatabaseSettings | None = None) -> None:
        # The process's engine (core.db): raises ConfigError for a bad URL, never connects.
        self.url, self._db = url, db
        self._engine = get_engine(url, db)
        # key_id -> (secret hash, key, when verified): the outage grace of the module doc
        self._known: dict[str, tuple[str, ApiKey, float]] = {}
        self._known_lock = threading.Lock()

    def create_schema(self) -> None:
        """Migrate the database to the newest schema, ``api_keys`` included (safe to repeat)."""
        migrate(self.url, self._db)

    def create(self, name: str, role: str = "extension") -> tuple[str, str]:
        """Make a key for ``name`` with ``role``; return ``(key_id, secret)`` (secret not kept)."""
        name = name.strip()
        if not name:
            raise ConfigError("an API key needs a name, e.g. `lookalike keys create alice-laptop`")
        if role not in ROLES:
            raise ConfigError(f"a key's role is one of {', '.join(ROLES)}, not {role!r}")
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
                    role=role,
                )
            )
        log.info("created %s API key %s for %r", role, key_id, name)
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
        key_id, digest = match.group(1), _hash(secret.strip())
        try:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(_api_keys).where(_api_keys.c.key_id == key_id)).first()
        except Unavailable as exc:
            return self._verified_before(key_id, digest, exc)
        key = None
        if row is not None and hmac.compare_digest(digest, row.secret_sha256):
            key = _row_to_key(row)
        with self._known_lock:
            if key is not None and key.active:
                if len(self._known) >= _KNOWN_KEYS:
                    self._known.clear()
                self._known[key_id] = (digest, key, time.monotonic())
                return key
            self._known.pop(key_id, None)
        return None

    def _verified_before(self, key_id: str, digest: str, unreachable: Unavailable) -> ApiKey:
        """The key as last verified, within the grace; else the database's ``unreachable``."""
        with self._known_lock:
            hit = self._known.get(key_id)
        if (
            hit is not None
            and hmac.compare_digest(digest, hit[0])
            and time.monotonic() - hit[2] < KEY_GRACE_SECONDS
        ):
            return hit[1]
        raise unreachable


def install_auth(
    app: FastAPI,
    store: ApiKeyStore,
    settings: ExtensionSettings,
    *,
    ledger: AccessLedger,
) -> None:
    """Add the access policy (serve/access.py), CORS for ``settings.origins`` and
    ``GET /v1/auth/check``. The ledger is kept on ``app.state.access_ledger`` (the events
    route reads issued answers from it).

    ``settings.origins`` are full origins such as ``chrome-extension://<32 letters>``; only those
    get CORS headers.
    """
    for origin in settings.origins:
        if not origin.startswith(_EXTENSION_SCHEME) or origin.rstrip("/") != origin:
            raise ConfigError(
                f"extension origin {origin!r} must look like chrome-extension://<id> "
                "(no trailing slash)"
            )
    app.state.access_ledger = ledger
    app.add_middleware(AccessControl, keys=store, ledger=ledger, settings=settings)

    @app.get("/v1/auth/check", include_in_schema=True, tags=["auth"])
    async def auth_check(request: Request) -> dict[str, str]:
        """Which key this is: the extension's "Test connection" calls it."""
        key: ApiKey = request.state.api_key
        return {"key_id": key.key_id, "name": key.name, "role": key.role}

    # Added last so it is the outermost layer: 401/429 answers carry CORS headers too, and the
    # extension can read the error body and Retry-After instead of seeing a network failure.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.origins),
        allow_methods=["GET", "POST"],
        allow_headers=[API_KEY_HEADER, "Content-Type"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
