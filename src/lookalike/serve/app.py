"""The FastAPI application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import faiss
from fastapi import APIRouter, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from lookalike import __version__
from lookalike.catalog.records import Item
from lookalike.core.db import database_problem
from lookalike.core.errors import InvalidInput, LookalikeError, NotFound, Unavailable
from lookalike.core.images import (
    DEFAULT_DRAFT_SIZE,
    MIN_SIDE,
    UPLOAD_BUDGET_WAIT_SECONDS,
    decode_image,
    draft_for_box,
)
from lookalike.core.settings import Settings
from lookalike.search import Hit, SearchResult
from lookalike.search.crops import CROP_MODES
from lookalike.search.served import SearchGeneration
from lookalike.search.service import CatalogView
from lookalike.serve.access import ROUTE_ACCESS, RouteClass
from lookalike.serve.auth import ApiKeyStore, install_auth
from lookalike.serve.caching import etag_for, matches, not_modified
from lookalike.serve.docs import install_docs, static_files
from lookalike.serve.errors import install_error_handlers, public_message
from lookalike.serve.events import build_events_router
from lookalike.serve.fit_routes import build_fit_router
from lookalike.serve.forecast_routes import build_forecast_router
from lookalike.serve.headers import SecurityHeaders
from lookalike.serve.ledger import AccessLedger, ledger_url
from lookalike.serve.limits import (
    Admission,
    BodySizeLimit,
    RequestId,
)
from lookalike.serve.logs import access_logger
from lookalike.serve.metrics import CONTENT_TYPE_LATEST, ObserveRequests, ServingMetrics
from lookalike.serve.moderation_routes import build_moderation_router
from lookalike.serve.price_routes import build_price_router
from lookalike.serve.recs_routes import (
    BLEND_DOC,
    blended_similar,
    build_recs_router,
    recs_generation,
)
from lookalike.serve.schemas import (
    CategoryList,
    ErrorResponse,
    GarmentGroupOut,
    ItemOut,
    ResultItem,
    SearchResponse,
    install_openapi,
    match_label,
    price_text,
)
from lookalike.serve.state import ServingState, load_state, watch_registry

__all__ = ["create_app"]

log = logging.getLogger("lookalike.serve")
STATIC = Path(__file__).parent / "static"
ERRORS: dict[int | str, dict] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)
}
ERRORS[304] = {"description": "Not modified: the If-None-Match ETag still matches"}
ERRORS[503] = {
    "model": ErrorResponse,
    "description": "Every fallback step failed, no model is loaded, or the worker is saturated "
    "(code `saturated`); Retry-After says when to retry. A model failure is never a 500.",
}
CACHING = (
    " The answer carries an `ETag` built from the model and index versions, the catalog "
    "revision and the input, with `Cache-Control: private, max-age=60`; send it back as "
    "`If-None-Match` to get 304. A promote or rollback changes it."
)


def _state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


def _search(request: Request) -> SearchGeneration:
    state = _state(request)
    search = state.search  # read once: a reload may swap it while this request runs
    if search is None:
        raise Unavailable(
            "search is not ready: "
            + "; ".join(state.search_slot.problems)
            + " — run `lookalike demo` or build a model and an index"
        )
    return search


def _held_rows(state: ServingState, unreachable: Unavailable) -> CatalogView:
    """The catalog rows search answers with (its in-memory view), for a read the database could
    not answer: the results a shopper just got keep their photos, item pages and categories.
    No search loaded, or it never read the catalog: the database's ``unreachable``."""
    search = state.search
    if search is None or not search.service.view.holds_rows:
        raise unreachable
    return search.service.view


def _catalog_item(state: ServingState, item_id: str) -> tuple[Item, int]:
    """An item and the catalog revision it is read at, from the database or the held rows."""
    try:
        return state.catalog.get_item(item_id), state.catalog.revision()
    except Unavailable as exc:
        view = _held_rows(state, exc)
        item = view.item(item_id)
        if item is None:  # not held: only the database could say whether it exists
            raise
        return item, view.revision()


def _categories(state: ServingState) -> list[tuple[str, int]]:
    try:
        return state.catalog.categories()
    except Unavailable as exc:
        return _held_rows(state, exc).categories()


def _metrics(request: Request) -> ServingMetrics:
    metrics: ServingMetrics = request.app.state.metrics
    return metrics


def _image_url(item_id: str, n: int = 0) -> str:
    return f"/v1/items/{item_id}/image" + (f"?n={n}" if n else "")


def _box(box: tuple[float, ...] | None) -> list[float] | None:
    return None if box is None else [round(float(v), 4) for v in box]


def _box_error(why: str, text: str) -> RequestValidationError:
    """A 422 on the form field ``box``, worded like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"loc": ("body", "box"), "msg": why, "type": "value_error", "input": text[:80]}]
    )


def _parse_box(text: str) -> tuple[float, float, float, float]:
    """A shopper's box "x0,y0,x1,y1" (normalised 0..1, origin top left), or a 422 that says
    what is wrong with it."""
    parts = text.split(",")
    if len(parts) != 4:
        raise _box_error(
            f'needs four numbers "x0,y0,x1,y1" between 0 and 1, got {len(parts)}', text
        )
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise _box_error(f'needs four numbers "x0,y0,x1,y1", got {text[:80]!r}', text) from None
    values = (x0, y0, x1, y1)
    if not all(math.isfinite(v) for v in values):
        raise _box_error("its numbers must be finite", text)
    if not all(0.0 <= v <= 1.0 for v in values):
        raise _box_error("its numbers are fractions of the photo's width and height: 0 to 1", text)
    if not (x1 > x0 and y1 > y0):
        raise _box_error("is empty: x1 must be greater than x0 and y1 greater than y0", text)
    return x0, y0, x1, y1


def _check_box_pixels(box: tuple[float, float, float, float], size: tuple[int, int]) -> None:
    width, height = (box[2] - box[0]) * size[0], (box[3] - box[1]) * size[1]
    if min(width, height) < MIN_SIDE:
        raise _box_error(
            f"covers {width:.0f}×{height:.0f} pixels of the {size[0]}×{size[1]} photo, too "
            f"small to show a garment: draw one at least {MIN_SIDE} pixels on each side",
            ",".join(f"{v:g}" for v in box),
        )


# ``model_construct``: the values are ours and already typed, so they are not validated again;
# the JSON itself is written by pydantic-core in ``_cached``.
Labels = tuple[tuple[str, float], ...]


def _result_item(h: Hit, labels: Labels, worn_labels: Labels) -> ResultItem:
    score = round(h.score, 4)
    return ResultItem.model_construct(
        item_id=h.item.item_id,
        title=h.item.title,
        category=h.item.category,
        price=h.item.price if math.isfinite(h.item.price) else None,
        price_text=price_text(h.item.price),
        available=h.item.available,
        score=score,
        match=match_label(score, worn_labels if h.worn else labels),
        image_url=_image_url(h.item.item_id) if h.item.images else None,
        url=h.item.url or f"/items/{h.item.item_id}",
        region=h.region,
        box=_box(h.box),
    )


def _response(
    request: Request, result: SearchResult, labels: Labels = (), worn_labels: Labels = ()
) -> SearchResponse:
    """``labels`` name the scores of a photo of a garment alone, ``worn_labels`` those of a
    garment a person wears (see ``EmbedderInfo.score_labels_worn``)."""
    request.state.serving_facts = {
        "model_version": result.model_version,
        "index_version": result.index_version,
        "served_by": result.served_by,
        "fallback": result.fallback,
    }
    return SearchResponse.model_construct(
        results=[_result_item(h, labels, worn_labels) for h in result.hits],
        groups=[
            GarmentGroupOut.model_construct(
                region=g.region,
                box=_box(g.box),
                score=round(g.score, 4),
                results=[_result_item(h, labels, worn_labels) for h in g.hits],
            )
            for g in result.groups
        ],
        crop_mode=result.crop_mode,
        model_version=result.model_version,
        index_version=result.index_version,
        served_by=result.served_by,
        fallback=result.fallback,
        took_ms=result.took_ms,
        request_id=request.scope.get("state", {}).get("request_id", ""),
    )


def _cached(request: Request, body: SearchResponse | ItemOut, etag: str) -> Response:
    max_age = _state(request).settings.serving.cache_max_age_seconds
    # pydantic-core writes the JSON: no dict round trip through json.dumps (docs/benchmarks.md,
    # "The request path"); the same ETag and Cache-Control as a 304 carries.
    cache = not_modified(etag, max_age).headers
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers={name: cache[name] for name in ("etag", "cache-control")},
    )


async def _answer(
    request: Request, search: SearchGeneration, key: tuple, run: Callable[[], SearchResult]
) -> Response:
    """Answer a model route: 304 when the client's ETag still holds, else run under the limit.

    ``key`` is the input part of the ETag; the versions and catalog revision are added here.
    """
    state = _state(request)
    max_age = state.settings.serving.cache_max_age_seconds
    # the revision the search itself sees: cached, not a database query per request
    revision = await run_in_threadpool(search.service.view.revision)
    expected = etag_for(search.model_version, search.index_version, revision, *key)
    if matches(request, expected):
        return not_modified(expected, max_age)
    # Admission (serve/limits.py) already bounded how many of these run: no second limit here.
    metrics = _metrics(request)
    metrics.searches_in_flight.inc()
    try:
        result = await run_in_threadpool(run)
    finally:
        metrics.searches_in_flight.dec()
    stale = search.service.view.stale_note  # answered from memory: the answer says so
    if stale is not None:
        result = replace(result, fallback="; ".join(filter(None, [result.fallback, stale])))
    # A fallback index answers with its own version: the tag names what really answered.
    etag = etag_for(result.model_version, result.index_version, revision, *key)
    info = search.service.embedder.info  # the same model on every fallback
    response = _response(request, result, info.score_labels, info.score_labels_worn)
    return _cached(request, response, etag)


async def _db_problem(state: ServingState) -> str | None:
    """Why the database cannot answer now (None: it can); a cheap SELECT 1 with timeouts."""
    problem = await run_in_threadpool(database_problem, state.settings.db_url, state.settings.db)
    return problem if problem is not None else state.schema_problem


def _catalog_lost(catalog: dict[str, Any]) -> str:
    """The problem line for an index most of whose images the catalog no longer has."""
    indexed, gone = catalog["indexed_images"], catalog["indexed_images_removed"]
    revision, built_at = catalog["revision"], catalog.get("indexed_revision")
    backwards = (
        f"; its revision {revision} is below the {built_at} the index was built at"
        if isinstance(built_at, int) and revision < built_at
        else ""
    )
    return (
        f"the catalog database no longer holds {gone} of the index's {indexed} images"
        f"{backwards} (was the database replaced or lost?): searches drop those items and come "
        "back short or empty — restore the database, or re-import the catalog and run "
        "`lookalike index build`"
    )


def _product_health(state: ServingState) -> dict[str, dict]:
    """Each product's /health part; search adds freshness (an index staler than its limit
    makes it degraded)."""
    out: dict[str, dict] = {}
    for product, slot in state.products.items():
        body = slot.health()
        generation = slot.generation
        if isinstance(generation, SearchGeneration):
            fresh = generation.freshness()
            body["freshness"] = fresh
            if fresh["stale"]:
                lag_h = fresh["catalog"]["index_lag_seconds_at_most"] / 3600
                limit_h = state.settings.serving.index_max_age_hours
                body["problems"].append(
                    f"index is stale: catalog images changed after it was built {lag_h:.1f} h "
                    f"ago (limit {limit_h:g} h) — run `lookalike refresh` or `lookalike index "
                    "build`"
                )
                if body["status"] == "ok":
                    body["status"] = "degraded"
            if fresh.get("catalog_lost"):
                body["problems"].append(_catalog_lost(fresh["catalog"]))
                if body["status"] == "ok":
                    body["status"] = "degraded"
        out[product] = body
    return out


def build_router(max_k: int) -> APIRouter:
    """The API routes; ``max_k`` (``settings.limits.max_k``) bounds ``k`` in schema and code."""
    router = APIRouter()

    @router.post(
        "/v1/search",
        response_model=SearchResponse,
        responses=ERRORS,
        summary="Find the catalog items most similar to a photo",
        description="Embeds the photo and returns the nearest catalog items. Fallbacks: the "
        "primary runtime, then torch on CPU, when a step fails or exceeds its time budget; the "
        "production index, then previous. `served_by` and `fallback` say what answered. A "
        "category that does not exist gives 200 with no results." + CACHING,
    )
    async def search(
        request: Request,
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF photo")],
        # a default, not Annotated: annotations are strings here and max_k is a local
        k: int = Query(20, ge=1, le=max_k, description="How many items"),  # noqa: B008
        category: Annotated[str | None, Query(max_length=64)] = None,
        available: Annotated[bool | None, Query(description="Only items available now")] = None,
        per_garment: Annotated[
            bool, Query(description="Also return results per garment found in the photo")
        ] = False,
        crops: Annotated[
            str | None,
            Query(description=f"Crops of the photo to search: {', '.join(CROP_MODES)}"),
        ] = None,
        box: Annotated[
            str | None,
            Form(
                description='Search only this area of the photo: "x0,y0,x1,y1", fractions of '
                "its width and height (0..1, origin top left). The area is embedded as it "
                "is (no further cropping); results carry region `box`.",
                max_length=200,
            ),
        ] = None,
    ) -> Response:
        settings = _state(request).settings
        if crops is not None and crops not in CROP_MODES:
            raise InvalidInput(f"crops must be one of {', '.join(CROP_MODES)}, got {crops!r}")
        area = None if box is None or not box.strip() else _parse_box(box)
        search = _search(request)
        data = await image.read(settings.limits.max_upload_bytes + 1)
        digest = hashlib.sha256(data).hexdigest()

        def run() -> SearchResult:
            # Bounded work per upload: the header cap, then pixels after the JPEG draft and the
            # decoded bytes (from the header, before decoding), under the process-wide budget.
            def decode(draft: tuple[int, int]) -> Image.Image:
                return decode_image(
                    data,
                    max_bytes=settings.limits.max_upload_bytes,
                    max_pixels=settings.limits.max_pixels,
                    max_decoded_pixels=settings.limits.max_upload_pixels,
                    max_decoded_bytes=settings.limits.max_upload_decode_bytes,
                    draft_size=draft,
                    budget_wait_s=UPLOAD_BUDGET_WAIT_SECONDS,
                )

            # a drawn box: its area, not the whole photo, decoded at the model's size
            pil = decode(DEFAULT_DRAFT_SIZE if area is None else draft_for_box(area))
            if area is not None:
                _check_box_pixels(area, pil.size)
            # the generation's service through its fallback chains (SearchGeneration.search_image
            # does the same; it does not take ``box``)
            return search.service.search_image(
                pil,
                k=k,
                category=category,
                available=available,
                per_garment=per_garment,
                crops=crops,
                box=area,
                phases=search,
            )

        key = ("search", digest, k, category, available, per_garment, crops, area)
        return await _answer(request, search, key, run)

    @router.get(
        "/v1/items/{item_id}",
        response_model=ItemOut,
        responses=ERRORS,
        description="One catalog item; 404 for an unknown id. The ETag follows the catalog "
        "revision; `If-None-Match` gives 304.",
    )
    async def get_item(request: Request, item_id: str) -> Response:
        state = _state(request)
        max_age = state.settings.serving.cache_max_age_seconds
        item, revision = await run_in_threadpool(_catalog_item, state, item_id)
        etag = etag_for("item", revision, item_id)
        if matches(request, etag):
            return not_modified(etag, max_age)
        body = ItemOut(
            item_id=item.item_id,
            title=item.title,
            category=item.category,
            price=item.price,
            price_text=price_text(item.price),
            available=item.available,
            url=item.url,
            image_urls=[_image_url(item.item_id, n) for n in range(len(item.images))],
        )
        return _cached(request, body, etag)

    @router.get(
        "/v1/items/{item_id}/image",
        responses={
            **ERRORS,
            200: {"content": {"image/jpeg": {}}, "description": "The item's n-th photo"},
        },
        response_class=FileResponse,
    )
    async def item_image(
        request: Request, item_id: str, n: Annotated[int, Query(ge=0, le=100)] = 0
    ) -> FileResponse:
        state = _state(request)
        catalog = state.catalog
        item, _ = await run_in_threadpool(_catalog_item, state, item_id)
        if n >= len(item.images):
            raise NotFound(f"item {item_id!r} has {len(item.images)} image(s); no image {n}")
        path = catalog.media_path(item.images[n])
        if not path.is_file():  # the media store lost it (a restore, a cleanup): 404, not a 500
            log.warning("item %s: image %d is missing from the media store (%s)", item_id, n, path)
            raise NotFound(f"item {item_id!r}: image {n} is missing from the media store")
        return FileResponse(
            path,
            media_type="image/jpeg",
            headers={"Cache-Control": "public, max-age=86400, immutable"},
        )

    @router.get(
        "/v1/items/{item_id}/similar",
        response_model=SearchResponse,
        responses=ERRORS,
        summary="Items that look like a catalog item",
        description="The item itself is excluded. Unknown item: 404 with code `not_found` (the "
        "documented default answer: there is nothing to compare). Same fallback chain as "
        "search." + CACHING,
    )
    async def similar(
        request: Request,
        item_id: str,
        # a default, not Annotated: annotations are strings here and max_k is a local
        k: int = Query(20, ge=1, le=max_k, description="How many items"),  # noqa: B008
        category: Annotated[str | None, Query(max_length=64)] = None,
        available: bool | None = None,
        blend: Annotated[float | None, Query(ge=0, le=1, description=BLEND_DOC)] = None,
    ) -> Response:
        search = _search(request)
        recs = recs_generation(request)  # None: no recs model, visual only as before

        def run() -> SearchResult:
            if recs is not None and blend != 0:
                return blended_similar(
                    search, recs, item_id, k=k, category=category, available=available,
                    blend_weight=blend,
                )  # fmt: skip
            return search.similar(item_id, k=k, category=category, available=available)

        key = ("similar", item_id, k, category, available, blend, recs and recs.version)
        return await _answer(request, search, key, run)

    @router.get("/v1/categories", response_model=CategoryList, responses=ERRORS)
    async def categories(request: Request) -> CategoryList:
        rows = await run_in_threadpool(_categories, _state(request))
        return CategoryList.model_validate(
            {"categories": [{"name": n, "count": c} for n, c in rows]}
        )

    @router.get("/health", summary="Liveness, what is being served, and how fresh it is")
    async def health(request: Request) -> dict:
        """``status``: ok | degraded (a fallback version, an index staler than its limit, or a
        catalog that lost most of the indexed items) | unavailable. ``freshness`` gives each
        served artifact's age and the catalog revision the index was built at against the
        current one."""
        state = _state(request)
        products = await run_in_threadpool(_product_health, state)
        db_problem = await _db_problem(state)
        problems = [p for body in products.values() for p in body["problems"]]
        statuses = {body["status"] for body in products.values()}
        if db_problem is not None:
            problems.append(f"database: {db_problem}")
            statuses.add("degraded")
        status = next((s for s in ("unavailable", "degraded") if s in statuses), "ok")
        # /health is public: reasons name versions and checks, never paths, hosts or SQL
        for part in products.values():
            part["problems"] = [public_message(p) for p in part["problems"]]
        body: dict = {
            "status": status,
            "version": __version__,
            "pid": os.getpid(),
            "problems": [public_message(p) for p in problems],
            "reloads": state.reloads,
            "database": {
                "ok": db_problem is None,
                "problem": None if db_problem is None else public_message(db_problem),
            },
            "products": products,
        }
        # Search's own facts stay at the top level too (the runbook and the page read them).
        search = products.get("search", {})
        for key in ("freshness", "model", "runtime", "index", "release"):
            if key in search:
                body[key] = search[key]
        return body

    @router.get(
        "/metrics",
        summary="Prometheus metrics of this worker",
        include_in_schema=True,
        response_class=PlainTextResponse,
    )
    async def metrics(request: Request) -> Response:
        state = _state(request)
        products = await run_in_threadpool(_product_health, state)
        gauges = _metrics(request)
        gauges.clear_serving()
        for product, body in products.items():
            gauges.set_product(
                product,
                body.get("versions"),
                body.get("served_by"),
                body["status"] != "ok",
                body.get("freshness", {}),
                reloads=body["reloads"],
                held_to=body.get("held_to"),
            )
        return Response(_metrics(request).render(), media_type=CONTENT_TYPE_LATEST)

    @router.get(
        "/ready",
        summary="200 when search can answer, 503 otherwise",
        description="Every product can answer, and the database is reachable or search holds "
        "the catalog rows it answers from (a database that goes away while serving leaves "
        "search up: taking every worker out of rotation for it would turn a degraded service "
        "into an outage). Down at start, before search ever read the catalog: 503.",
        responses={503: {"description": "Not ready: `{ready: false, status}`"}},
    )
    async def ready(request: Request) -> JSONResponse:
        state = _state(request)
        db_problem = await _db_problem(state)
        search = state.search
        from_memory = search is not None and search.service.view.holds_rows
        ready = state.ready and (db_problem is None or from_memory)
        status = state.status if db_problem is None or state.status == "unavailable" else "degraded"
        return JSONResponse(
            {"ready": ready, "status": status, "database": db_problem},
            status_code=200 if ready else 503,
        )

    return router


def create_app(settings: Settings | None = None, *, state: ServingState | None = None) -> FastAPI:
    """Build the app; it loads models, index and catalog at start-up (or uses ``state``).

    While it runs, a background task re-reads the registry aliases every
    ``settings.serving.reload_seconds`` and swaps in a promoted (or rolled back) pair.
    """
    settings = settings or Settings()
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One query per request: faiss's OpenMP team would only spin against the embedder's
        # threads (1k Flat search in the request path: median 10-14 ms with 2, 0.6-0.7 with 1;
        # docs/benchmarks.md, "The request path, stage by stage").
        omp_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        if getattr(app.state, "serving", None) is None:
            app.state.serving = await run_in_threadpool(
                load_state, settings, metrics.record_fallback
            )
        serving: ServingState = app.state.serving
        serving.set_fallback_hook(metrics.record_fallback)
        watcher = asyncio.create_task(watch_registry(serving))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            serving.close()
            faiss.omp_set_num_threads(omp_threads)

    app = FastAPI(
        title="Lookalike",
        version=__version__,
        description="Visual search for a fashion-rental catalog. Every result response names "
        "the model, index and runtime path that answered it (`served_by`, and `fallback` when "
        "a fallback step answered). Model failures answer 503 with Retry-After, never 500.",
        lifespan=lifespan,
        # /docs is our own page with self-hosted assets (serve.docs), not FastAPI's CDN page
        docs_url=None,
        redoc_url=None,
    )
    app.state.serving = state
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(build_router(settings.limits.max_k))
    app.include_router(build_events_router())
    app.include_router(build_price_router())
    app.include_router(build_moderation_router())
    app.include_router(build_fit_router())
    app.include_router(build_recs_router())
    app.include_router(build_forecast_router())
    app.mount("/static", static_files(STATIC), name="static")
    install_docs(app, STATIC)
    # a route that needs a role answers 403 to a key without it: its docs say so
    needs_role = (RouteClass.MODERATOR, RouteClass.ADMIN)
    install_openapi(
        app, forbidden_paths=[p for p, a in ROUTE_ACCESS.items() if a.route_class in needs_role]
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_upload_bytes + 64 * 1024)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    keys = ApiKeyStore(settings.db_url, db=settings.db)
    try:
        keys.create_schema()
    except LookalikeError as exc:  # the database is down: start anyway (the watcher migrates)
        log.error("API keys not ready at start: %s", exc.message)
    ledger = AccessLedger(
        ledger_url(settings),
        ttl_seconds=settings.extension.request_id_ttl_seconds,
        options=settings.db,
    )
    try:
        ledger.create_schema()
    except LookalikeError as exc:  # its database is down: start anyway (retried on use)
        log.error("access ledger not ready at start: %s", exc.message)
    # CORS must stay the outermost layer that answers, so that 401 and 429 carry its headers.
    install_auth(app, keys, settings.extension, ledger=ledger)
    # Admission at the door: right inside CORS (a 503 carries CORS headers and Retry-After) and
    # outside the access policy, whose ledger write per request would otherwise queue refusals
    # in the thread pool; before the body is read.
    serving = settings.serving
    cors = next(i for i, m in enumerate(app.user_middleware) if m.cls is CORSMiddleware)
    app.user_middleware.insert(
        cors + 1,
        Middleware(
            Admission,
            max_in_flight=serving.max_in_flight,
            queue_size=serving.queue_size,
            queue_budget_ms=serving.queue_budget_ms,
            retry_after=serving.retry_after_seconds,
            threads=serving.worker_threads or serving.max_in_flight + 16,
            on_reject=lambda route: metrics.rejected.labels(route).inc(),
        ),
    )
    # Outside the access policy, so that its 401/403/429 answers carry X-Request-ID as well.
    app.add_middleware(RequestId)
    # CSP, nosniff and framing rules on every answer, the 401/429/413 ones included.
    app.add_middleware(SecurityHeaders)
    # Outside everything: it only observes (latency, status, one JSON log line per request).
    app.add_middleware(ObserveRequests, metrics=metrics, access_log=access_logger())

    @app.get("/", include_in_schema=False)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/items/{item_id}", include_in_schema=False)
    async def item_page(request: Request, item_id: str) -> FileResponse:
        # An unknown item is a 404 page a shopper can read, not an empty item page.
        try:
            await run_in_threadpool(_catalog_item, _state(request), item_id)
        except NotFound:
            return FileResponse(STATIC / "missing.html", status_code=404)
        return FileResponse(STATIC / "item.html")

    return app
