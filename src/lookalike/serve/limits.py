"""Limits: request ids, body size, admission at the door, and connection guards.

Two layers keep a burst or a flood from turning into seconds of latency or a dead server:

- ``Admission`` (pure ASGI, before the body is read): per worker at most ``max_in_flight``
  expensive requests (search, similar) run, a few more wait at most ``queue_budget_ms``, the rest
  get 503 + Retry-After at once. Cheap routes (/health, /ready, /metrics, items) never wait.
- ``GuardedH11Protocol`` (uvicorn's h11 protocol plus timers): a request head must arrive
  within ``header_timeout_seconds`` (slowloris), a body within ``body_timeout_seconds``, and past
  ``max_connections`` the oldest idle connection is closed so that idle sockets cannot use up the
  worker's file descriptors. ``lookalike serve`` selects it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import resource
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "EXPENSIVE_PATHS",
    "Admission",
    "BodySizeLimit",
    "GuardedH11Protocol",
    "RequestId",
    "raise_open_file_limit",
]

log = logging.getLogger("lookalike.serve.limits")

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


# -- admission at the door --------------------------------------------------------------------
# (route name for metrics and logs, path pattern) of the routes that decode, embed or search.
# A new route that runs a model belongs here, or it queues in the thread pool unbounded.
EXPENSIVE_PATHS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("/v1/search", re.compile(r"^/v1/search/?$")),
    ("/v1/items/{item_id}/similar", re.compile(r"^/v1/items/[^/]+/similar/?$")),
    ("/v1/price", re.compile(r"^/v1/price/?$")),
)


class _RouteName:
    """Stands in for the Starlette route in ``scope["route"]`` of a refused request."""

    def __init__(self, path: str) -> None:
        self.path = path


class _Gate:
    """``limit`` slots and a short FIFO queue on one event loop (one thread: no lock needed)."""

    def __init__(self, limit: int, queue_size: int) -> None:
        self.limit = max(1, limit)
        self.queue_size = max(0, queue_size)
        self.in_flight = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def enter(self, budget_s: float) -> bool:
        """Take a slot, waiting at most ``budget_s``; False when refused."""
        if self.in_flight < self.limit and not self.waiters:
            self.in_flight += 1
            return True
        if budget_s <= 0 or len(self.waiters) >= self.queue_size:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(budget_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # the slot was handed over just as the budget ran out
            self._forget(waiter)
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()
            else:
                self._forget(waiter)
            raise
        return True

    def leave(self) -> None:
        """Hand the slot to the oldest waiter, or free it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight = max(0, self.in_flight - 1)

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)


class Admission:
    """Admit expensive requests at the door; refuse at once what cannot start soon.

    Per worker at most ``max_in_flight`` requests to ``paths`` run; up to ``queue_size`` more
    wait, each at most ``queue_budget_ms``; the rest get 503 ``saturated`` + Retry-After before
    their body is read. Other routes pass straight through, so /health, /ready and /metrics never
    wait behind searches. It also sets anyio's default thread limiter to ``threads`` (when > 0)
    on each event loop it sees: searches hold at most ``max_in_flight`` threads, and the rest of
    the pool is headroom for cheap routes instead of a queue of 40 stalled searches.
    ``on_reject(route)`` is called for each refusal (the ``lookalike_rejected`` counter).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        queue_size: int = 0,
        queue_budget_ms: float = 0.0,
        retry_after: int = 1,
        threads: int = 0,
        paths: tuple[tuple[str, re.Pattern[str]], ...] = EXPENSIVE_PATHS,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.max_in_flight = max(1, max_in_flight)
        self.queue_size = max(0, queue_size)
        self.budget_s = max(0.0, queue_budget_ms) / 1000.0
        self.retry_after = max(1, retry_after)
        self.threads = threads
        self.paths = paths
        self.on_reject = on_reject
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate = _Gate(self.max_in_flight, self.queue_size)

    @property
    def in_flight(self) -> int:
        return self._gate.in_flight

    @property
    def waiting(self) -> int:
        return len(self._gate.waiters)

    def _bind(self) -> _Gate:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (start-up, or a test client's own loop)
            self._loop = loop
            self._gate = _Gate(self.max_in_flight, self.queue_size)
            if self.threads > 0:
                anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
        return self._gate

    def _route(self, scope: Scope) -> str | None:
        path = scope.get("path", "")
        for name, pattern in self.paths:
            if pattern.match(path):
                return name
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "lifespan"):
            await self.app(scope, receive, send)
            return
        gate = self._bind()
        route = self._route(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if not await gate.enter(self.budget_s):
            await self._refuse(scope, send, route)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.leave()

    async def _refuse(self, scope: Scope, send: Send, route: str) -> None:
        scope.setdefault("route", _RouteName(route))
        scope.setdefault("state", {})["error_code"] = "saturated"
        if self.on_reject is not None:
            self.on_reject(route)
        body = {
            "error": {
                "code": "saturated",
                "message": f"the server is busy ({self.max_in_flight} searches in progress, "
                f"{self.waiting} waiting); retry in {self.retry_after} s",
            }
        }
        await _send_json(
            send, 503, body, headers=[(b"retry-after", str(self.retry_after).encode())]
        )


# -- connections --------------------------------------------------------------------------------
def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after.

    The soft limit is often 1024 while the hard one is far higher: sockets past the soft limit
    fail with `Too many open files` and the listening socket stops accepting.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. macOS caps the soft limit below an infinite hard one
            pass
    return soft, hard


class _ConnectionLimits:
    def __init__(self, header_timeout_s: float, body_timeout_s: float, max_connections: int):
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max(1, max_connections)


_LIMITS: _ConnectionLimits | None = None
# Idle connections of this process (waiting for a request head), oldest first. Touched only on
# the event loop's thread.
_IDLE: dict[GuardedH11Protocol, None] = {}
# Counts of connections the guard closed, by reason; read by tests and benchmarks.
GUARD_COUNTS: collections.Counter[str] = collections.Counter()
_LAST_LOGGED: dict[str, float] = {}
_TIMEOUT_BODY = json.dumps(
    {"error": {"code": "timeout", "message": "the request was not sent in time"}}
).encode()
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


def _connection_limits() -> _ConnectionLimits:
    """Read once per process from Settings (env ``LOOKALIKE_SERVING__*``): uvicorn builds the
    protocol itself, in each worker process, so the limits cannot be passed in."""
    global _LIMITS
    if _LIMITS is None:
        from lookalike.core.settings import Settings

        serving = Settings().serving
        _LIMITS = _ConnectionLimits(
            serving.header_timeout_seconds, serving.body_timeout_seconds, serving.max_connections
        )
    return _LIMITS


def _note(reason: str) -> None:
    """Count a closed connection; log at most one line per reason every 10 s (a flood of idle
    sockets must not become a flood of log lines). No client address is logged."""
    GUARD_COUNTS[reason] += 1
    now = time.monotonic()
    if now - _LAST_LOGGED.get(reason, -1e9) >= 10.0:
        _LAST_LOGGED[reason] = now
        log.warning(
            "closed connections: %s (%d so far in this worker)", reason, GUARD_COUNTS[reason]
        )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a body deadline and a connection cap.

    - A request head must be complete within ``header_timeout_seconds`` of connecting or of its
      first byte: a slowloris client (headers byte by byte) gets 408 and is closed; a socket that
      connects and sends nothing is closed.
    - A request body must be complete within ``body_timeout_seconds`` of its head.
    - Past ``max_connections`` per worker, the oldest idle connection (no request in progress)
      is closed, so idle sockets cannot use up file descriptors or uvicorn's
      ``limit_concurrency`` and lock out /health and search.
    Select it with ``uvicorn.run(..., http="lookalike.serve.limits:GuardedH11Protocol")``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = _connection_limits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object | None = None
        self._head_started = False

    # -- asyncio.Protocol / uvicorn hooks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()
        _IDLE[self] = None
        self._evict_over_limit()

    def connection_lost(self, exc: Exception | None) -> None:
        _IDLE.pop(self, None)
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head():
            self._head_started = True
            if self._head_timer is None:
                self._arm_head()
        super().data_received(data)
        self._track_cycle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track_cycle()
        if self._awaiting_head() and not self.transport.is_closing():
            _IDLE.pop(self, None)
            _IDLE[self] = None  # idle again, and now the newest; keep-alive bounds its idle time
            self._head_started = False

    def handle_websocket_upgrade(self, event: Any) -> None:
        # the connection belongs to the WebSocket protocol from here on: no deadlines of ours
        _IDLE.pop(self, None)
        self._cancel_timers()
        super().handle_websocket_upgrade(event)

    # -- state
    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _track_cycle(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # a request head was parsed
            self._seen_cycle = cycle
            self._cancel(head=True)
            _IDLE.pop(self, None)
            if cycle.more_body and self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.guard.body_timeout_s, self._body_timed_out
                )
        if self._body_timer is not None and (
            cycle is None or not cycle.more_body or cycle.response_complete
        ):
            self._cancel(body=True)

    def _arm_head(self) -> None:
        self._cancel(head=True)
        self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)

    def _cancel(self, head: bool = False, body: bool = False) -> None:
        if head and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if body and self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel(head=True, body=True)

    # -- closing
    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        if self._head_started:
            _note("request head not complete in time (408)")
            self.transport.write(_TIMEOUT_408)
        else:
            _note("no request within the header timeout")
        self._close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return
        if self.transport.is_closing():
            return
        _note("request body not complete in time")
        if not cycle.response_started:
            self.transport.write(_TIMEOUT_408)
        cycle.disconnected = True  # the app's receive() now says http.disconnect
        cycle.message_event.set()
        self._close()

    def _close(self) -> None:
        _IDLE.pop(self, None)
        self._cancel_timers()
        self._unset_keepalive_if_required()
        self.connections.discard(self)  # counted out now, not when asyncio calls connection_lost
        self.transport.close()

    def _evict_over_limit(self) -> None:
        excess = len(self.connections) - self.guard.max_connections
        while excess > 0:
            victim = next((p for p in _IDLE if p is not self), None)
            if victim is None:
                return  # all busy: uvicorn's limit_concurrency answers 503 past this
            _note("idle connection closed to stay under max_connections")
            victim._close()
            excess -= 1
