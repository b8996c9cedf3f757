"""Settings: one object, read from ``LOOKALIKE_*`` environment variables, passed down.

Nested sections use ``__`` in variable names, e.g. ``LOOKALIKE_LIMITS__MAX_UPLOAD_BYTES``.
Build it with ``Settings()`` in the CLI or ``create_app()``; never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DatabaseSettings",
    "ExtensionSettings",
    "Gates",
    "Limits",
    "ModerationSettings",
    "RefreshSettings",
    "SearchSettings",
    "ServingSettings",
    "Settings",
]

Runtime = Literal["auto", "cuda", "onnx-cpu", "torch-cpu"]


class Limits(BaseModel):
    """Bounds on what one request may cost."""

    # A 50-megapixel phone JPEG is about 15-25 MB; anything above this is refused with 413.
    max_upload_bytes: int = 30 * 1024 * 1024
    # Decompression-bomb guard: phone photos up to 50 MP are normal, 100 MP is not.
    max_pixels: int = 80_000_000
    # Pixels a search upload may decode (after JPEG draft reduction, so a 50 MP phone JPEG
    # still passes at 1/8 scale); a PNG/WebP/GIF/BMP above it is refused from its header.
    max_upload_pixels: int = 24_000_000
    # Memory one upload's decode may need (core/images.py `decode_cost`); over it: 413.
    max_upload_decode_bytes: int = 400 * 2**20
    max_k: int = 100


class DatabaseSettings(BaseModel):
    """How long a database may keep a caller waiting (``LOOKALIKE_DB__*``; core/db.py).

    A stopped or frozen database must cost a request seconds, not a minute: every wait has a
    bound, and past it the caller gets ``Unavailable`` (503) and the next call tries again.
    """

    # Frozen so that one engine per (URL, settings) can be cached per process.
    model_config = ConfigDict(frozen=True)

    # PostgreSQL: the whole connection handshake (psycopg ``connect_timeout``, at least 2 s).
    connect_timeout_s: float = 5.0
    # PostgreSQL: the server cancels a statement past this; the client also gives up on a
    # silent (frozen) server after this plus ``connect_timeout_s``.
    statement_timeout_s: float = 10.0
    # How long a caller waits for a free pooled connection before 503.
    pool_timeout_s: float = 5.0
    pool_size: int = 5
    max_overflow: int = 10
    # SQLite: how long a writer waits for another writer's lock (sqlite3 ``timeout``).
    sqlite_busy_timeout_s: float = 30.0


class SearchSettings(BaseModel):
    default_k: int = 20
    model_name: str = "effnet_lite0"
    index_name: str = "catalog"
    # ``auto`` walks the ladder GPU -> ONNX Runtime CPU -> torch CPU; the others pin one step.
    runtime: Runtime = "auto"
    # Crops of a shopper's photo to search: ``auto`` is the model's own query crop (one
    # forward pass); ``multi`` adds the garment regions (slower, see docs/search-quality.md).
    crops: str = "auto"
    # The torch-CPU fallback step of the embed chain, loaded with each served release (at
    # start-up or reload, never inside a request). Off saves ~0.5 GB per worker and the start-up
    # time; search then has no second embed step.
    torch_fallback: bool = True


class ExtensionSettings(BaseModel):
    """API clients (serve/access.py): extension origins, rate limits, feedback-event bounds."""

    # e.g. ["chrome-extension://abcdefghijklmnopabcdefghijklmnop"]; CORS allows exactly these.
    origins: list[str] = []
    # Searches and similar-item lookups a minute, per API key and (anonymous) per client
    # network (IPv4 address or IPv6 /64), counted across every worker in the access ledger.
    rate_per_minute: int = Field(120, ge=1)
    anonymous_per_minute: int = Field(120, ge=1)
    # POST /v1/events: requests a minute per client, body bytes, and how long events are kept.
    events_per_minute: int = Field(120, ge=1)
    events_max_body_bytes: int = Field(64 * 1024, ge=1024)
    events_retention_days: float = Field(180.0, gt=0)
    # Events are accepted for a search/similar answer this long after it was given.
    request_id_ttl_seconds: float = Field(3600.0, gt=0)
    # Shared counters; None: sqlite:///<home>/var/access.db (one host). Point it at PostgreSQL
    # when replicas on several hosts must share one limit.
    ledger_url: str | None = None
    # /metrics is an admin route; a scrape from this host (127.0.0.1/::1) needs no key.
    metrics_open_on_loopback: bool = True


class RefreshSettings(BaseModel):
    """Data checks that stop ``lookalike refresh`` before anything is built."""

    # Share of file rows the import would reject (bad fields, missing/unreadable images).
    max_rejected_share: float = 0.05
    # Share of current catalog items that a new (full) catalog file may drop in one refresh.
    max_removed_share: float = 0.20
    # How far the mean cosine of new embeddings to the production centroid may fall, in
    # standard deviations of the production sample's own cosines.
    drift_max_std: float = 3.0
    drift_sample: int = 64
    # Fewer new images than this and the drift figure is reported but not enforced.
    drift_min_sample: int = 8
    # The catalog file is the full catalog: items absent from it are removed.
    prune_missing: bool = True


class Gates(BaseModel):
    """What a model or index must pass before ``promote`` makes it production (search/gates.py).

    Measured on the 2-core CPU dev box with the default EfficientNet-Lite0 fp32: golden
    Recall@10 1.0, batch-1 embed p95 about 70 ms, Flat search p95 under 1 ms; the bounds keep
    a wide margin so that only a broken or clearly worse artifact is refused.
    """

    # A candidate's Recall@10 may be at most this much (absolute) below production's.
    tolerance: float = 0.02
    # Share of golden queries whose known item must be in the top 10.
    golden_recall_min: float = 0.9
    # Batch-1 embedding p95 on the golden queries (the search contract is 200 ms end to end).
    latency_p95_ms: float = 150.0
    # One k=10 index search, p95.
    index_latency_p95_ms: float = 50.0
    # Without golden items in the catalog: share of sampled images that find themselves top-1.
    self_retrieval_min: float = 0.95
    self_retrieval_sample: int = 64
    # ``None``: demo/golden under home, the working directory or the source checkout.
    golden_dir: Path | None = None


class ServingSettings(BaseModel):
    """The serving contract: hot reload, time budgets, concurrency, caching and freshness."""

    # How often each worker re-reads the registry's production aliases (0 turns it off). A
    # promote is visible everywhere within this plus the time to load the new pair.
    reload_seconds: float = 2.0
    # A fallback step is taken when a step fails or exceeds this budget. It is far above the
    # contract on purpose: on a 2-core CPU under a burst, a healthy embed queues for 100-300 ms,
    # and a trigger near the contract would flap onto the slower torch path and make it worse.
    # The budget catches hung or broken engines, not slow minutes.
    step_budget_ms: float = 1000.0
    # Concurrent searches per worker; beyond it the answer is 503 + Retry-After (no queue).
    max_in_flight: int = 8
    retry_after_seconds: int = 1
    # Admission at the door (serve/limits.py `Admission`): past max_in_flight, up to queue_size
    # searches wait at most queue_budget_ms for a slot, the rest get 503 + Retry-After at once.
    queue_size: int = 8
    queue_budget_ms: float = 75.0
    # Threads for blocking work per worker (anyio's default is 40); 0 = max_in_flight + 16, so
    # cheap routes keep threads of their own while searches are bounded by admission.
    worker_threads: int = 0
    # Connections per worker (serve/limits.py `GuardedH11Protocol`): past max_connections the
    # oldest idle connection is closed; a request head must arrive within header_timeout_seconds
    # of the first byte (or of connecting), a body within body_timeout_seconds.
    max_connections: int = 1000
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 30.0
    keep_alive_seconds: int = 5
    max_header_bytes: int = 16 * 1024
    backlog: int = 2048
    # Cache-Control max-age of results; ETags make revalidation after it cheap.
    cache_max_age_seconds: int = 60
    # Freshness: how far the index may lag behind catalog changes before /health says degraded.
    index_max_age_hours: float = 24.0


class ModerationSettings(BaseModel):
    """The moderator's page (serve/sessions.py, moderation/store.py)."""

    # A session ends after this long without a request (the cookie also expires then).
    session_idle_hours: float = Field(8.0, gt=0)
    # How long a post shown to one moderator is kept from the others.
    lease_seconds: float = Field(120.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOKALIKE_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=lambda: Path.cwd())
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    limits: Limits = Field(default_factory=Limits)
    search: SearchSettings = Field(default_factory=SearchSettings)
    extension: ExtensionSettings = Field(default_factory=ExtensionSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    gates: Gates = Field(default_factory=Gates)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def var_dir(self) -> Path:
        return self.home / "var"

    @property
    def media_dir(self) -> Path:
        """Normalised copies of catalog images, named by content hash."""
        return self.var_dir / "media"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'catalog.db').resolve()}"
