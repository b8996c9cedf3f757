"""Structured access logs: one JSON line per request (structlog), written to stderr.

A line carries ``request_id`` (also in the ``X-Request-ID`` response header), ``route``,
``status``, ``ms`` and, for model routes, ``model_version``, ``index_version``, ``served_by``
and ``fallback``. Image bytes, API keys and headers are never logged: the middleware passes
only those facts, and a last processor drops any field whose name looks secret and cuts long
strings, so a later change cannot leak them by accident.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["access_logger"]

_SECRET = ("key", "authorization", "token", "secret", "password", "image", "body", "cookie")
_MAX_TEXT = 500


def _scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    for name in list(event):
        if any(part in name.lower() for part in _SECRET):
            del event[name]
        elif isinstance(event[name], bytes):
            del event[name]
        elif isinstance(event[name], str) and len(event[name]) > _MAX_TEXT:
            event[name] = event[name][:_MAX_TEXT] + "…"
    return event


def access_logger(stream: TextIO | None = None) -> Any:
    """A structlog logger writing JSON lines to ``stream`` (stderr by default).

    Built per app and not via ``structlog.configure``: no global state, and tests may pass
    their own stream.
    """
    return structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        context_class=dict,
        log="lookalike.access",
        pid=os.getpid(),
    )
