"""Route classes and the access policy: who may call which route, and how often.

Every route of the app is in exactly one class, declared in one table, ``ROUTE_ACCESS``
(``tests/integration/test_route_classes.py`` fails for a route missing from it; at run time a
missing route is treated as ``admin``, closed rather than open):

=========== =============================================== ===================================
class       who                                             routes
=========== =============================================== ===================================
public      anyone; anonymous clients are limited per       pages, static files, docs, search,
            client network, key holders per key             similar, items, events, health
extension   any valid API key (role extension, moderator    ``/v1/auth/check``
            or admin)
moderator   a key with role moderator or admin, or a        ``/moderation``, ``/v1/moderation/…``
            moderator's login cookie (serve/sessions.py)
admin       a key with role admin                           ``/metrics`` (open to a scrape from
                                                            127.0.0.1/::1 unless
                                                            ``extension.metrics_open_on_loopback``
                                                            is off)
=========== =============================================== ===================================

The rules, on every route:

- A key, once sent, is always checked: an ``X-API-Key`` header (even empty or malformed) or an
  ``Authorization: Bearer lk_…`` header (what Prometheus sends) must name an active key, else
  401 ``invalid_api_key``. A key whose role the route's class does not admit gets 403
  ``forbidden``.
- A request from a browser extension (``Origin: chrome-extension://…``, ``moz-extension://…``,
  any ``*-extension://``) without a key gets 401 ``api_key_required``, as does any non-public
  route without a key.
- Metered routes count against a limit shared by every worker (``serve/ledger.py``): searches
  and similar lookups ``rate_per_minute`` per key or ``anonymous_per_minute`` per client
  network; ``POST /v1/events`` ``events_per_minute`` per key or client network, bodies up to
  ``events_max_body_bytes``. Past a limit: 429 ``rate_limited`` with ``Retry-After``.
- 200 answers of the search routes are recorded as issued answers (request id, results), the
  only ground on which ``POST /v1/events`` accepts events.

The client's address is used only in memory, to name its counter by a salted hash; it is never
logged or stored. Behind a reverse proxy the address must be the client's, not the proxy's:
uvicorn takes it from ``X-Forwarded-For`` when the proxy is in ``--forwarded-allow-ips``
(default 127.0.0.1, a proxy on the same host); otherwise every client shares one counter.
Extension origins get 401 without a key on every route, ``/v1/categories`` included.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import ExtensionSettings
from lookalike.jobs.events import IssuedAnswer

from .ledger import AccessLedger
from .sessions import has_session_cookie, send_login_redirect, session_principal

__all__ = [
    "ADMITS",
    "ROLES",
    "ROUTE_ACCESS",
    "AccessControl",
    "Meter",
    "RouteAccess",
    "RouteClass",
    "compile_routes",
    "flat_routes",
    "route_access",
    "route_path",
    "unclassified_routes",
]

log = logging.getLogger(__name__)

API_KEY_HEADER = b"x-api-key"
ROLES = ("extension", "moderator", "admin")
_EXTENSION_ORIGIN = re.compile(rb"^[a-z][a-z0-9-]*-extension://", re.I)
_LOOPBACK = {"127.0.0.1", "::1"}


class RouteClass(StrEnum):
    PUBLIC = "public"
    EXTENSION = "extension"
    MODERATOR = "moderator"
    ADMIN = "admin"


# Which key roles each class admits (public admits anonymous clients too).
ADMITS: dict[RouteClass, frozenset[str]] = {
    RouteClass.PUBLIC: frozenset(ROLES),
    RouteClass.EXTENSION: frozenset(ROLES),
    RouteClass.MODERATOR: frozenset({"moderator", "admin"}),
    RouteClass.ADMIN: frozenset({"admin"}),
}


class Meter(StrEnum):
    """Which shared limit a route counts against."""

    NONE = "none"
    SEARCH = "search"  # embeds or searches: the expensive routes
    EVENTS = "events"


@dataclass(frozen=True)
class RouteAccess:
    route_class: RouteClass
    meter: Meter = Meter.NONE


PUBLIC = RouteAccess(RouteClass.PUBLIC)
# The one table: a route's path (a Mount's prefix) -> its class. A new route goes here.
ROUTE_ACCESS: dict[str, RouteAccess] = {
    # shopper pages and their files
    "/": PUBLIC,
    "/items/{item_id}": PUBLIC,
    "/static": PUBLIC,
    # API documentation (the schema and the self-hosted docs page)
    "/openapi.json": PUBLIC,
    "/docs": PUBLIC,
    # probes: a load balancer or orchestrator calls them without credentials
    "/health": PUBLIC,
    "/ready": PUBLIC,
    # the API
    "/v1/search": RouteAccess(RouteClass.PUBLIC, Meter.SEARCH),
    "/v1/items/{item_id}/similar": RouteAccess(RouteClass.PUBLIC, Meter.SEARCH),
    "/v1/items/{item_id}": PUBLIC,
    "/v1/items/{item_id}/image": PUBLIC,
    "/v1/categories": PUBLIC,
    "/v1/events": RouteAccess(RouteClass.PUBLIC, Meter.EVENTS),
    "/v1/auth/check": RouteAccess(RouteClass.EXTENSION),
    # a merchandising tool, not a shopper feature: any valid key; ~1 ms of numpy, bounded by
    # admission (EXPENSIVE_PATHS), not metered per minute (serve/price_routes.py)
    "/v1/price": RouteAccess(RouteClass.EXTENSION),
    # recommendations (serve/recs_routes.py): shopper pages are public; a shopper's browser
    # posts her events without a key, so they are public and metered like /v1/events
    "/v1/users/{user_id}/home": PUBLIC,
    "/v1/users/{user_id}/events": RouteAccess(RouteClass.PUBLIC, Meter.EVENTS),
    "/v1/occasions/{name}/items": PUBLIC,
    # a shopper feature (size advice on the item page): public; ~1 ms of numpy per call,
    # bounded by admission like the other cheap routes, not metered per minute
    "/v1/fit": PUBLIC,
    # demand forecasts are a buying tool (they tell a competitor what rents): any valid key,
    # like /v1/price; a lookup of precomputed arrays, not metered (serve/forecast_routes.py)
    "/v1/forecast/items/{item_id}": RouteAccess(RouteClass.EXTENSION),
    "/v1/forecast/categories/{name}": RouteAccess(RouteClass.EXTENSION),
    # operations
    "/metrics": RouteAccess(RouteClass.ADMIN),
    # published photo reviews (serve/moderation_routes.py): only approved posts
    "/v1/items/{item_id}/reviews": PUBLIC,
    "/v1/reviews/{post_id}/photo": PUBLIC,
    # the moderator's page: a login cookie (serve/sessions.py) or a key of the role
    "/moderation/login": PUBLIC,
    "/moderation/logout": RouteAccess(RouteClass.MODERATOR),
    "/moderation": RouteAccess(RouteClass.MODERATOR),
    "/v1/moderation/session": RouteAccess(RouteClass.MODERATOR),
    "/v1/moderation/queue": RouteAccess(RouteClass.MODERATOR),
    "/v1/moderation/posts/{post_id}/decision": RouteAccess(RouteClass.MODERATOR),
    "/v1/moderation/posts/{post_id}/image": RouteAccess(RouteClass.MODERATOR),
    "/v1/moderation/undo": RouteAccess(RouteClass.MODERATOR),
    "/moderation/admin": RouteAccess(RouteClass.ADMIN),
    "/v1/moderation/audit": RouteAccess(RouteClass.ADMIN),
    "/v1/moderation/audit/counts": RouteAccess(RouteClass.ADMIN),
}
_UNCLASSIFIED = RouteAccess(RouteClass.ADMIN)
# (status, code, message[, Retry-After]) of a refused request, or None to let it in.
_Refusal = tuple[int, str, str] | tuple[int, str, str, int] | None
_SIMILAR = "/v1/items/{item_id}/similar"
# Route classes a moderator's session cookie counts for (as its account's role).
_SESSION_CLASSES = (RouteClass.MODERATOR, RouteClass.ADMIN)


def _by_session(scope: Scope, access: RouteAccess) -> _Refusal:
    """Admit a request by its session cookie (no API key sent); blocking, off the loop."""
    try:
        who = session_principal(scope)
    except LookalikeError as exc:
        if exc.status == 503:
            return (exc.status, exc.code, exc.message, 5)
        return (exc.status, exc.code, exc.message)
    if who is None:
        return (401, "session_expired", "the session expired: log in at /moderation/login")
    if who.role not in ADMITS[access.route_class]:
        return (
            403,
            "forbidden",
            f"this page needs role {access.route_class.value}; {who.name} is {who.role}",
        )
    scope.setdefault("state", {})["moderator_session"] = who
    return None


def route_path(route: BaseRoute) -> str:
    """The path a route is declared with (a Mount's prefix)."""
    return str(getattr(route, "path", ""))


def flat_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, BaseRoute]]:
    """(full path, route) of every route in match order, included routers opened up.

    FastAPI >= 0.16x keeps an included router as one entry of ``app.routes``; its routes and
    their prefixed paths are in ``effective_route_contexts()``.
    """
    flat: list[tuple[str, BaseRoute]] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            flat.append((route_path(route), route))
            continue
        for ctx in contexts():
            original = ctx.starlette_route or ctx.original_route
            flat.append((ctx.path or route_path(original), original))
    return flat


def unclassified_routes(routes: Sequence[BaseRoute]) -> list[str]:
    """Paths of ``routes`` (e.g. ``app.routes``) that ``ROUTE_ACCESS`` does not classify."""
    return [path for path, _ in flat_routes(routes) if path not in ROUTE_ACCESS]


@dataclass(frozen=True)
class _Compiled:
    template: str
    regex: re.Pattern[str]
    access: RouteAccess
    route: BaseRoute


def compile_routes(routes: Sequence[BaseRoute]) -> list[_Compiled]:
    """The app's routes in match order with their access; unclassified ones as admin."""
    compiled = []
    for template, route in flat_routes(routes):
        access = ROUTE_ACCESS.get(template)
        if access is None:
            log.warning(
                "route %s has no access class: treated as admin until it is added to "
                "ROUTE_ACCESS in lookalike/serve/access.py",
                template,
            )
            access = _UNCLASSIFIED
        if isinstance(route, Mount):
            regex = re.compile("^" + re.escape(template) + "(?:/.*)?$")
        else:
            regex = compile_path(template)[0]
        compiled.append(_Compiled(template, regex, access, route))
    return compiled


def route_access(compiled: list[_Compiled], path: str) -> tuple[_Compiled | None, dict[str, str]]:
    """The route serving a request path and its path parameters; None for no route.

    A path that no route serves is public: the router answers it with 404.
    """
    for c in compiled:
        match = c.regex.match(path)
        if match is not None:
            return c, match.groupdict()
    return None, {}


async def _send_error(
    send: Send, status: int, code: str, message: str, retry_after: int | None = None
) -> None:
    raw = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _credential(scope: Scope) -> str | None:
    """The key the client sent (maybe empty), or None when it sent none."""
    value = _header(scope, API_KEY_HEADER)
    if value is not None:
        return value.decode("latin-1")
    auth = _header(scope, b"authorization")
    if auth is not None and auth[:7].lower() == b"bearer ":
        return auth[7:].decode("latin-1")
    return None


class AccessControl:
    """Pure ASGI middleware applying the module's rules; the body streams through untouched.

    ``keys`` is an ``ApiKeyStore`` (anything with ``verify(secret) -> key | None`` whose key has
    ``key_id`` and ``role``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: object,
        ledger: AccessLedger,
        settings: ExtensionSettings,
    ) -> None:
        self.app = app
        self.keys = keys
        self.ledger = ledger
        self.settings = settings
        self._routes: list[_Compiled] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if self._routes is None:
            # Built on the first request: every route has been added by then.
            self._routes = compile_routes(list(scope["app"].routes))
        matched, params = route_access(self._routes, scope["path"])
        access = matched.access if matched is not None else PUBLIC
        secret = _credential(scope)
        by_session = access.route_class in _SESSION_CLASSES and has_session_cookie(scope)
        if secret is None and access.meter is Meter.NONE and not by_session:
            refusal = self._admit(scope, matched, None)  # no I/O: stay on the event loop
        else:
            # One thread hop for the key check and the shared counter together.
            refusal = await run_in_threadpool(self._admit, scope, matched, secret)
        if refusal is not None:
            if matched is not None:
                # The access log and metrics name the route of a refused request too.
                scope.setdefault("route", matched.route)
            if refusal[0] == 401 and await send_login_redirect(scope, send):
                return  # a signed-out browser on a moderator page: to the sign-in form
            await _send_error(send, *refusal)
            return
        if access.meter is Meter.EVENTS:
            await self._events(scope, receive, send)
            return
        if access.meter is Meter.SEARCH:
            surface = "similar" if matched and matched.template == _SIMILAR else "search"
            send = self._recording(send, surface, params.get("item_id"))
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope, matched: _Compiled | None, secret: str | None) -> _Refusal:
        """None when the request may go on (its key put on the scope's state), else the refusal.

        Runs in a worker thread when it needs the database.
        """
        access = matched.access if matched is not None else PUBLIC
        key = None
        if secret is not None:
            if not secret.strip():
                return (
                    401,
                    "invalid_api_key",
                    "the X-API-Key header is empty: send your key, or leave the header out",
                )
            try:
                key = self.keys.verify(secret)  # type: ignore[attr-defined]
            except LookalikeError as exc:  # the key database is down: 503, retry shortly
                return (
                    (exc.status, exc.code, exc.message, 5)
                    if exc.status == 503
                    else (
                        exc.status,
                        exc.code,
                        exc.message,
                    )
                )
            if key is None:
                return (
                    401,
                    "invalid_api_key",
                    "the API key is unknown or revoked — ask for a new one (`lookalike keys "
                    "create`)",
                )
            if key.role not in ADMITS[access.route_class]:
                return (
                    403,
                    "forbidden",
                    f"this route needs a key with role {access.route_class.value}; key "
                    f"{key.key_id} has role {key.role}",
                )
            scope.setdefault("state", {})["api_key"] = key
        else:
            if _EXTENSION_ORIGIN.match(_header(scope, b"origin") or b""):
                return (
                    401,
                    "api_key_required",
                    "this server needs an API key: add it on the extension's options page",
                )
            template = matched.template if matched is not None else None
            if access.route_class in _SESSION_CLASSES and has_session_cookie(scope):
                return _by_session(scope, access)  # a moderator's login cookie (serve/sessions.py)
            if access.route_class is not RouteClass.PUBLIC and not self._open_metrics(
                scope, template
            ):
                return (
                    401,
                    "api_key_required",
                    f"this route needs an API key with role {access.route_class.value}: send "
                    "it in X-API-Key",
                )
        if access.meter is Meter.NONE:
            return None
        return self._meter(scope, access.meter, key)

    def _open_metrics(self, scope: Scope, template: str | None) -> bool:
        client = scope.get("client")
        return (
            template == "/metrics"
            and self.settings.metrics_open_on_loopback
            and client is not None
            and client[0] in _LOOPBACK
        )

    def _meter(self, scope: Scope, meter: Meter, key: object) -> _Refusal:
        """Count the request against its shared limit; a refusal is 429 with Retry-After."""
        s = self.settings
        try:
            if key is not None:
                who, what = f"key:{key.key_id}", "with this key"  # type: ignore[attr-defined]
                limit = s.events_per_minute if meter is Meter.EVENTS else s.rate_per_minute
            else:
                client = scope.get("client")
                who = self.ledger.client_bucket(client[0] if client else None)
                what = "from your network without an API key"
                limit = s.events_per_minute if meter is Meter.EVENTS else s.anonymous_per_minute
            wait = self.ledger.hit(f"{meter.value}:{who}", limit)
        except (LookalikeError, SQLAlchemyError) as exc:
            # An unreachable ledger must not take search down with it: serve unmetered.
            log.warning("rate limit not applied: %s", getattr(exc, "code", type(exc).__name__))
            return None
        if wait <= 0:
            return None
        retry = max(1, math.ceil(wait))
        noun = "feedback requests" if meter is Meter.EVENTS else "searches"
        return (
            429,
            "rate_limited",
            f"too many {noun} {what} (limit {limit}/min); retry in {retry} s",
            retry,
        )

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the (small) body under its cap, then hand it on in one piece."""
        cap = self.settings.events_max_body_bytes
        length = _header(scope, b"content-length")
        too_big = f"an events body may be at most {cap} bytes; send fewer events per request"
        if length is not None and length.isdigit() and int(length) > cap:
            await _send_error(send, 413, "too_large", too_big)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > cap:
                await _send_error(send, 413, "too_large", too_big)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _recording(self, send: Send, surface: str, query_item_id: str | None) -> Send:
        """Wrap ``send``: record a 200 answer's results before its body goes out."""
        status = 0
        chunks: list[bytes] = []

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                await send(message)
                return
            if message["type"] != "http.response.body" or status != 200:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            await self._record(body, surface, query_item_id)
            await send({"type": "http.response.body", "body": body})

        return recording_send

    async def _record(self, body: bytes, surface: str, query_item_id: str | None) -> None:
        try:
            data = json.loads(body)
            answer = IssuedAnswer(
                request_id=str(data["request_id"]),
                surface="similar" if surface == "similar" else "search",
                query_item_id=query_item_id if surface == "similar" else None,
                item_ids=tuple(str(r["item_id"]) for r in data["results"]),
                issued_at=time.time(),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("a %s answer had no request_id/results to record", surface)
            return
        if not answer.request_id:
            return
        try:
            await run_in_threadpool(self.ledger.issue, answer)
        except (LookalikeError, SQLAlchemyError) as exc:
            # The answer still goes out; only its feedback events will be refused.
            code = getattr(exc, "code", type(exc).__name__)
            log.warning("could not record an issued answer: %s", code)
