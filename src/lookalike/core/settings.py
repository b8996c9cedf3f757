"""Settings: one object, read from ``LOOKALIKE_*`` environment variables, passed down.

Nested sections use ``__`` in variable names, e.g. ``LOOKALIKE_LIMITS__MAX_UPLOAD_BYTES``.
Build it with ``Settings()`` in the CLI or ``create_app()``; never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ExtensionSettings", "Limits", "SearchSettings", "Settings"]

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


class ExtensionSettings(BaseModel):
    """Browser-extension clients: which extension origins may call the API, and how often."""

    # e.g. ["chrome-extension://abcdefghijklmnopabcdefghijklmnop"]; CORS allows exactly these.
    origins: list[str] = []
    rate_per_minute: int = 120


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
