"""Prometheus metrics of one worker, and the ASGI middleware that records every request.

Each app has its own ``CollectorRegistry`` (so several apps in one process do not collide).
With ``--workers N`` every worker process exposes its own ``/metrics``; the ``pid`` label on
``lookalike_serving_info`` says which one answered a scrape. Prometheus multiprocess mode was
left out on purpose: it needs a shared directory set before import and cannot express the
per-worker info gauges; scrape each replica (one worker per container) in production.

The middleware also writes the one structured log line per request (see ``serve.logs``) and
adds ``X-Served-By-Pid`` so a client can tell workers apart.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "ObserveRequests", "ServingMetrics"]

# Around the 15 ms target and the 200 ms contract, up to the 1 s fallback budget and beyond.
BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)


class ServingMetrics:
    """The metrics of one app; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram(
            "lookalike_request_seconds",
            "Request latency by route and by the runtime path that answered",
            ["route", "served_by"],
            buckets=BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "lookalike_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "lookalike_errors",
            "Error answers by status and error code",
            ["status", "code"],
            registry=r,
        )
        self.fallbacks = Counter(
            "lookalike_fallbacks",
            "Fallback steps taken: product, stage (search: embed|index), the step that failed, why",
            ["product", "stage", "failed", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "lookalike_rejected",
            "Requests refused with 503 because the worker was saturated",
            ["route"],
            registry=r,
        )
        self.in_flight = Gauge(
            "lookalike_in_flight", "HTTP requests being handled now by this worker", registry=r
        )
        self.searches_in_flight = Gauge(
            "lookalike_searches_in_flight",
            "Searches holding a concurrency slot now (limit: serving.max_in_flight)",
            registry=r,
        )
        self.info = Gauge(
            "lookalike_serving_info",
            "1 for the release each product serves in this worker (role=name:version, ...)",
            ["product", "release", "served_by", "pid"],
            registry=r,
        )
        self.degraded = Gauge(
            "lookalike_degraded",
            "1 when a product serves a fallback version, a stale index, or nothing",
            ["product"],
            registry=r,
        )
        self.held_to = Gauge(
            "lookalike_model_metric",
            "What each served artifact was measured at by its deploy checks (held-out data)",
            ["product", "artifact", "metric", "direction"],
            registry=r,
        )
        self.artifact_age = Gauge(
            "lookalike_artifact_age_seconds",
            "Age of each served artifact",
            ["product", "artifact"],
            registry=r,
        )
        self.index_lag = Gauge(
            "lookalike_index_catalog_lag_seconds",
            "Upper bound of how long catalog changes have waited for the index (0: current)",
            registry=r,
        )
        self.index_stale = Gauge(
            "lookalike_index_stale", "1 when the index lags the catalog past its limit", registry=r
        )
        self.reloads = Counter(
            "lookalike_reloads",
            "Generations swapped in after a registry change",
            ["product"],
            registry=r,
        )
        self._reloads_counted: dict[str, int] = {}

    def record_fallback(self, product: str, stage: str, failed: str, reason: str) -> None:
        self.fallbacks.labels(product, stage, failed, reason).inc()

    def clear_serving(self) -> None:
        """Forget the per-product serving gauges before :meth:`set_product` fills them again."""
        self.info.clear()
        self.held_to.clear()

    def set_product(
        self,
        product: str,
        versions: dict[str, str] | None,
        served_by: str | None,
        degraded: bool,
        fresh: dict[str, Any],
        reloads: int = 0,
        held_to: list[dict[str, Any]] | None = None,
    ) -> None:
        """Refresh the gauges that describe what ``product`` serves (called on each scrape)."""
        for m in held_to or ():
            self.held_to.labels(product, m["artifact"], m["metric"], m["direction"]).set(m["value"])
        counted = self._reloads_counted.get(product, 0)
        self.reloads.labels(product).inc(max(0, reloads - counted))
        self._reloads_counted[product] = max(counted, reloads)
        if versions:
            release = ",".join(f"{role}={ref}" for role, ref in versions.items())
            self.info.labels(product, release, served_by or "-", str(os.getpid())).set(1)
        self.degraded.labels(product).set(1 if degraded else 0)
        for name, art in fresh.get("artifacts", {}).items():
            if art.get("age_seconds") is not None:
                self.artifact_age.labels(product, name).set(art["age_seconds"])
        if "catalog" in fresh:
            self.index_lag.set(fresh["catalog"].get("index_lag_seconds_at_most", 0.0))
            self.index_stale.set(1 if fresh.get("stale") else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"


class ObserveRequests:
    """Time every HTTP request, count it, log it as one JSON line, and tag the worker pid."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, access_log: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = ""
        in_flight = self.metrics.in_flight
        in_flight.inc()

        async def observed(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name == b"x-request-id":
                        request_id = value.decode("latin-1")
                message["headers"] = [*message.get("headers", []), (b"x-served-by-pid", self.pid)]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            in_flight.dec()
            seconds = time.perf_counter() - started
            route = _route_of(scope)
            facts: dict[str, Any] = scope.get("state", {}).get("serving_facts", {})
            served_by = str(facts.get("served_by", "-"))
            self.metrics.latency.labels(route, served_by).observe(seconds)
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                code = str(scope.get("state", {}).get("error_code", "-"))
                self.metrics.errors.labels(str(status), code).inc()
            if route not in ("/metrics", "/static"):
                self.access_log.info(
                    "request",
                    request_id=request_id or scope.get("state", {}).get("request_id", ""),
                    method=scope.get("method"),
                    route=route,
                    status=status,
                    ms=round(seconds * 1000, 2),
                    **facts,
                )
