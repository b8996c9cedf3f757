"""ETags and Cache-Control for answers that depend only on model, index, catalog and input.

The ETag of a search is a hash of the model version, the index version, the catalog revision
(results carry price and availability) and the input (sha256 of the image bytes plus the query
parameters). A promote or rollback changes a version, so the ETag changes and no client or
proxy keeps results of a replaced model. ``If-None-Match`` with a matching tag gets 304.

``Cache-Control: private, max-age=60``: *private* because a search is a shopper's own photo
(and calls carry API keys), so shared caches must not keep it; *60 s* bounds how long a client
may reuse an answer without asking — availability changes by the minute and a promote should
reach clients within one — and after it the ETag makes the re-check a cheap 304.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

__all__ = ["cached_json", "etag_for", "matches", "not_modified"]


def etag_for(*parts: object) -> str:
    """A strong ETag over ``parts`` (versions, revision, input hash, parameters)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f'"{digest[:32]}"'


def matches(request: Request, etag: str) -> bool:
    """True when the request's ``If-None-Match`` names ``etag`` (or ``*``)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _headers(etag: str, max_age: int) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": f"private, max-age={max_age}"}


def not_modified(etag: str, max_age: int) -> Response:
    return Response(status_code=304, headers=_headers(etag, max_age))


def cached_json(body: Any, etag: str, max_age: int) -> JSONResponse:
    return JSONResponse(body, headers=_headers(etag, max_age))
