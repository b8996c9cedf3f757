"""Layer 5: the HTTP service (FastAPI), its schemas, middleware and static pages."""

from __future__ import annotations

from lookalike.serve.app import create_app

__all__ = ["create_app"]
