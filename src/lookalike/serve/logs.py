"""Structured access logs: one JSON line per request (structlog), written to stderr.

A line carries ``request_id`` (also in the ``X-Request-ID`` response header), ``route``,
``status``, ``ms`` and, for model routes, ``model_version``, ``index_version``, ``served_by``
and ``fallback``. The route is the path *template* (``/v1/items/{item_id}``), never the raw
path or its query string. Image bytes, API keys, tokens, headers, client IPs and query strings
are never logged: the middleware passes only those facts, and a last processor drops any field
whose name looks secret or identifying and cuts long strings, so a later change cannot leak
them by accident. ``lookalike serve`` turns uvicorn's own access log off (it writes both the
client address and the full query string).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["access_logger"]

_SECRET = ("key", "authorization", "token", "secret", "password", "image", "body", "cookie")
# Fields that would identify a shopper or carry what they searched for: dropped by exact name.
_IDENTIFYING = frozenset(
    {
        "client",
        "client_ip",
        "ip",
        "remote_addr",
        "peer",
        "host",
        "forwarded",
        "x_forwarded_for",
        "query",
        "query_string",
        "query_params",
        "url",
        "path",
        "raw_path",
        "user_agent",
        "referer",
    }
)
_MAX_TEXT = 500


def _scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    for name in list(event):
        lowered = name.lower()
        if lowered in _IDENTIFYING or any(part in lowered for part in _SECRET):
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
