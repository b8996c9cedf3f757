"""Layer 6: the ``lookalike`` command. One verb per job; each sub-app lives in its own module."""

from __future__ import annotations

from lookalike.cli.main import app

__all__ = ["app"]
