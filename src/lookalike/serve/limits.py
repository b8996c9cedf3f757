"""Limits: request ids, a hard cap on request body size, and a concurrency cap on searches."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.core.errors import Unavailable

__all__ = ["BodySizeLimit", "ConcurrencyLimit", "RequestId", "Saturated"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def _send_json(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413 — by Content-Length up front, or while reading.

    Checking while reading covers chunked uploads that send no Content-Length: the body is never
    buffered past the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> dict:
        mb = self.max_bytes / 1024 / 1024
        return {
            "error": {
                "code": "too_large",
                "message": f"request body is larger than the {mb:.0f} MB limit",
            }
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_json(send, 413, self._error())
                    return
        received = 0
        overflow = False
        replaced = False

        async def limited() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflow = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if overflow:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await _send_json(send, 413, self._error())
                return
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not overflow:
                raise
        if overflow and not replaced:
            await _send_json(send, 413, self._error())


class RequestId:
    """Give every request an id (the client's X-Request-ID if sane) and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _REQUEST_ID.match(text) else None
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, with_id)


class Saturated(Unavailable):
    """503 with ``Retry-After``: the worker is at its concurrency limit; nothing was queued."""

    code = "saturated"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConcurrencyLimit:
    """At most ``limit`` concurrent holders; a request beyond it is refused at once.

    Refusing beats queueing: a queue in front of a 2-core embedder turns a burst into seconds of
    latency for everyone, while a 503 + Retry-After lets the client (or the load balancer) try
    another replica or come back a second later.
    """

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        self.limit = max(1, limit)
        self.retry_after = retry_after
        self._held = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._held >= self.limit:
                return False
            self._held += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block; raise :class:`Saturated` when none is free."""
        if not self.try_acquire():
            raise Saturated(
                f"the server is busy ({self.limit} searches in progress); retry in "
                f"{self.retry_after} s",
                retry_after=self.retry_after,
            )
        try:
            yield
        finally:
            self.release()
