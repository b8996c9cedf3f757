"""Every error answer in the one documented envelope, with nothing internal in it.

``{"error": {"code", "message"}}`` for our own errors (``core.errors``), for request validation
(422 ``invalid_request``, JSON that does not parse included), for the framework's own answers
(404 for an unknown route, 405 with ``Allow``, 400 for a multipart body that does not parse)
and for anything unexpected (500 ``internal_error``, details only in the server log).

Messages are written for the client, but some wrap a lower-layer error (a SQLAlchemy error
carries the SQL text, the driver's message names the database host, a faiss error the file
path). ``public_message`` cuts those parts out before a message leaves the server; an error
that is ours to fix (500) gets a generic message and the request id to find it in the log.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.core.errors import LookalikeError

__all__ = ["install_error_handlers", "public_message"]

log = logging.getLogger("lookalike.serve")

# A wrapped driver error starts "(psycopg.errors.DataError) ..." or "(sqlite3.OperationalError)":
# everything from there on is the driver's text (SQL, parameters, host names).
_DRIVER = re.compile(r"\s*\((?:psycopg\d?|sqlite3|sqlalchemy|asyncpg|pymysql)[\w.]*\).*", re.S)
_SQL_TAIL = re.compile(r"\s*(?:\[SQL:|\[parameters:|\(Background on this error at:).*", re.S)
_DB_URL = re.compile(r"\b(?:postgres(?:ql)?|sqlite|mysql|mariadb)(?:\+\w+)?://\S*", re.I)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# psycopg: 'connection to server at "db.internal"', 'could not translate host name "db"'
_SERVER_AT = re.compile(r'\b(server at|host name|host=)\s*"?[\w.:-]+"?', re.I)
# An absolute file path of two or more segments; the API's own paths are not files.
_ROUTE_ROOTS = ("v1", "items", "static", "docs", "docs-assets", "health", "ready", "metrics")
_FILE_PATH = re.compile(r"(?<![\w:/.])(?:~|[A-Za-z]:)?(/[\w.@+~-]+){2,}/?")
_MAX_MESSAGE = 500


def _file_path(match: re.Match[str]) -> str:
    text = match.group(0)
    first = text.lstrip("~").split("/")[1]
    if first in _ROUTE_ROOTS:
        return text
    return text.rstrip("/").rsplit("/", 1)[-1]


def public_message(message: str) -> str:
    """``message`` without SQL text, driver details, database URLs, hosts or file paths.

    A file path keeps its last segment (``index.faiss``), so the message still says which
    file; the folders (which name the machine's layout) are dropped.
    """
    text = _DRIVER.sub("", message)
    text = _SQL_TAIL.sub("", text)
    text = _DB_URL.sub("<database>", text)
    text = _SERVER_AT.sub(r"\1 <host>", text)
    text = _IPV4.sub("<host>", text)
    text = _FILE_PATH.sub(_file_path, text)
    text = text.strip().rstrip(":").strip()
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    return text or "the request failed"


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _internal(request: Request, code: str) -> JSONResponse:
    rid = _request_id(request)
    where = f" (request id {rid})" if rid else ""
    message = f"internal error; see the server log{where}"
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=500)


# Framework answers by status: the code a client can switch on, and a message without the
# request's own text (a path can be long or hostile; the client knows what it sent).
_HTTP_CODES = {
    400: ("invalid_request", "the request body could not be parsed"),
    404: ("not_found", "no route matches this path; see /docs for the API"),
    405: ("method_not_allowed", "this method is not allowed on this path; see the Allow header"),
    413: ("too_large", "the request body is too large"),
    415: ("unsupported_media_type", "this content type is not accepted here"),
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``; call once from ``create_app``."""

    @app.exception_handler(LookalikeError)
    async def lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
        request.state.error_code = exc.code
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        if exc.status >= 500 and exc.status != 503:
            return _internal(request, exc.code)
        retry_after = getattr(exc, "retry_after", 5)
        headers = {"Retry-After": str(retry_after)} if exc.status == 503 else None
        body = {"error": {"code": exc.code, "message": public_message(exc.message)}}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_code = "invalid_request"
        parts = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                parts.append("the body is not valid JSON")
                continue
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            where = ".".join(loc)
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        message = public_message("; ".join(dict.fromkeys(parts)) or "the request is invalid")
        body = {"error": {"code": "invalid_request", "message": message}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status >= 500:
            request.state.error_code = "internal_error"
            log.error("HTTP %s on %s: %s", status, request.url.path, exc.detail)
            return _internal(request, "internal_error")
        code, default = _HTTP_CODES.get(status, (f"http_{status}", f"HTTP {status}"))
        request.state.error_code = code
        detail = exc.detail if isinstance(exc.detail, str) else ""
        # Starlette's own details are just the status phrase ("Not Found"): say more.
        message = default if not detail or detail in _PHRASES else public_message(detail)
        body = {"error": {"code": code, "message": message}}
        return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request.state.error_code = "internal_error"
        log.exception("unexpected error on %s", request.url.path)
        return _internal(request, "internal_error")


_PHRASES = {
    "Bad Request",
    "Not Found",
    "Method Not Allowed",
    "Request Entity Too Large",
    "Content Too Large",
    "Unsupported Media Type",
    "There was an error parsing the body",
}
