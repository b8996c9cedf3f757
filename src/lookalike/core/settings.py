"""Settings: one object, read from ``LOOKALIKE_*`` environment variables, passed down.

Nested sections use ``__`` in variable names, e.g. ``LOOKALIKE_LIMITS__MAX_UPLOAD_BYTES``.
Build it with ``Settings()`` in the CLI or ``create_app()``; never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ExtensionSettings",
    "Gates",
    "Limits",
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
    max_k: int = 100


class SearchSettings(BaseModel):
    default_k: int = 20
    model_name: str = "effnet_lite0"
    index_name: str = "catalog"
    # ``auto`` walks the ladder GPU -> ONNX Runtime CPU -> torch CPU; the others pin one step.
    runtime: Runtime = "auto"
    # Crops of a shopper's photo to search: ``auto`` is the model's own query crop (one
    # forward pass); ``multi`` adds the garment regions (slower, see docs/search-quality.md).
    crops: str = "auto"


class ExtensionSettings(BaseModel):
    """Browser-extension clients: which extension origins may call the API, and how often."""

    # e.g. ["chrome-extension://abcdefghijklmnopabcdefghijklmnop"]; CORS allows exactly these.
    origins: list[str] = []
    rate_per_minute: int = 120


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
    """What a model or index must pass before ``promote`` makes it production (jobs/gates.py).

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
    # Cache-Control max-age of results; ETags make revalidation after it cheap.
    cache_max_age_seconds: int = 60
    # Freshness: how far the index may lag behind catalog changes before /health says degraded.
    index_max_age_hours: float = 24.0


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
