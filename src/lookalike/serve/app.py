"""The FastAPI application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from lookalike import __version__
from lookalike.core.errors import InvalidInput, LookalikeError, NotFound, Unavailable
from lookalike.core.images import decode_image
from lookalike.core.settings import Settings
from lookalike.search import SearchResult, SearchService
from lookalike.serve.auth import ApiKeyStore, install_auth
from lookalike.serve.limits import BodySizeLimit, RequestId
from lookalike.serve.schemas import (
    CategoryList,
    ErrorResponse,
    ItemOut,
    ResultItem,
    SearchResponse,
)
from lookalike.serve.state import ServingState, load_state

__all__ = ["create_app"]

log = logging.getLogger("lookalike.serve")
STATIC = Path(__file__).parent / "static"
ERRORS = {
    code: {"model": ErrorResponse}
    for code in (400, 404, 413, 415, 422, 503)
}


def _state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


def _service(request: Request) -> SearchService:
    state = _state(request)
    if state.service is None:
        raise Unavailable(
            "search is not ready: " + "; ".join(state.problems)
            + " — run `lookalike demo` or build a model and an index"
        )
    return state.service


def _image_url(item_id: str, n: int = 0) -> str:
    return f"/v1/items/{item_id}/image" + (f"?n={n}" if n else "")


def _response(request: Request, result: SearchResult) -> SearchResponse:
    return SearchResponse(
        results=[
            ResultItem(
                item_id=h.item.item_id,
                title=h.item.title,
                category=h.item.category,
                price=h.item.price,
                available=h.item.available,
                score=round(h.score, 4),
                image_url=_image_url(h.item.item_id),
                url=h.item.url or f"/items/{h.item.item_id}",
            )
            for h in result.hits
        ],
        model_version=result.model_version,
        index_version=result.index_version,
        served_by=result.served_by,
        took_ms=result.took_ms,
        request_id=request.scope.get("state", {}).get("request_id", ""),
    )


def _check_k(k: int, settings: Settings) -> None:
    if k > settings.limits.max_k:
        raise InvalidInput(f"k must be at most {settings.limits.max_k}, got {k}")


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/search",
        response_model=SearchResponse,
        responses=ERRORS,
        summary="Find the catalog items most similar to a photo",
    )
    async def search(
        request: Request,
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP or GIF photo")],
        k: Annotated[int, Query(ge=1, le=1000, description="How many items")] = 20,
        category: Annotated[str | None, Query(max_length=64)] = None,
        available: Annotated[bool | None, Query(description="Only items available now")] = None,
    ) -> SearchResponse:
        settings = _state(request).settings
        _check_k(k, settings)
        service = _service(request)
        data = await image.read(settings.limits.max_upload_bytes + 1)
        pil = await run_in_threadpool(
            decode_image,
            data,
            max_bytes=settings.limits.max_upload_bytes,
            max_pixels=settings.limits.max_pixels,
        )
        result = await run_in_threadpool(
            service.search_image, pil, k=k, category=category, available=available
        )
        return _response(request, result)

    @router.get("/v1/items/{item_id}", response_model=ItemOut, responses=ERRORS)
    async def get_item(request: Request, item_id: str) -> ItemOut:
        item = await run_in_threadpool(_state(request).catalog.get_item, item_id)
        return ItemOut(
            item_id=item.item_id,
            title=item.title,
            category=item.category,
            price=item.price,
            available=item.available,
            url=item.url,
            image_urls=[_image_url(item.item_id, n) for n in range(len(item.images))],
        )

    @router.get("/v1/items/{item_id}/image", responses=ERRORS, response_class=FileResponse)
    async def item_image(
        request: Request, item_id: str, n: Annotated[int, Query(ge=0, le=100)] = 0
    ) -> FileResponse:
        catalog = _state(request).catalog
        item = await run_in_threadpool(catalog.get_item, item_id)
        if n >= len(item.images):
            raise NotFound(f"item {item_id!r} has {len(item.images)} image(s); no image {n}")
        return FileResponse(
            catalog.media_path(item.images[n]),
            media_type="image/jpeg",
            headers={"Cache-Control": "public, max-age=86400, immutable"},
        )

    @router.get("/v1/items/{item_id}/similar", response_model=SearchResponse, responses=ERRORS)
    async def similar(
        request: Request,
        item_id: str,
        k: Annotated[int, Query(ge=1, le=1000)] = 20,
        category: Annotated[str | None, Query(max_length=64)] = None,
        available: bool | None = None,
    ) -> SearchResponse:
        _check_k(k, _state(request).settings)
        result = await run_in_threadpool(
            _service(request).similar, item_id, k=k, category=category, available=available
        )
        return _response(request, result)

    @router.get("/v1/categories", response_model=CategoryList)
    async def categories(request: Request) -> CategoryList:
        rows = await run_in_threadpool(_state(request).catalog.categories)
        return CategoryList.model_validate(
            {"categories": [{"name": n, "count": c} for n, c in rows]}
        )

    @router.get("/health", summary="Liveness and what is being served")
    async def health(request: Request) -> dict:
        state = _state(request)
        body: dict = {"status": state.status, "version": __version__, "problems": state.problems}
        if state.service is not None:
            info = state.service.embedder.info
            loaded = state.service.index
            body["model"] = {"version": info.ref, "variant": info.variant, "dim": info.dim}
            body["runtime"] = {"served_by": info.served_by, "reason": info.reason}
            body["index"] = {
                "version": str(loaded.ref),
                "factory": loaded.manifest.get("factory"),
                "vectors": loaded.index.ntotal,
                "built_at": loaded.manifest.get("created_at"),
            }
        return body

    @router.get("/ready", summary="200 when search can answer, 503 otherwise")
    async def ready(request: Request) -> JSONResponse:
        state = _state(request)
        return JSONResponse(
            {"ready": state.ready, "status": state.status}, status_code=200 if state.ready else 503
        )

    return router


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LookalikeError)
    async def lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg')}")
        body = {"error": {"code": "invalid_request", "message": "; ".join(parts)}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        body = {"error": {"code": "internal_error", "message": "internal error; see server log"}}
        return JSONResponse(body, status_code=500)


def create_app(settings: Settings | None = None, *, state: ServingState | None = None) -> FastAPI:
    """Build the app; it loads models, index and catalog at start-up (or uses ``state``)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "serving", None) is None:
            app.state.serving = await run_in_threadpool(load_state, settings)
        yield
        app.state.serving.catalog.close()

    app = FastAPI(
        title="Lookalike",
        version=__version__,
        description="Visual search for a fashion-rental catalog. Every result response names "
        "the model, index and runtime path that answered it.",
        lifespan=lifespan,
    )
    app.state.serving = state
    _install_error_handlers(app)
    app.include_router(build_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_upload_bytes + 64 * 1024)
    app.add_middleware(RequestId)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    keys = ApiKeyStore(settings.db_url)
    keys.create_schema()
    # CORS must stay the outermost layer so that 401 and 429 answers carry its headers too.
    install_auth(
        app,
        keys,
        extension_origins=settings.extension.origins,
        rate_per_minute=settings.extension.rate_per_minute,
    )

    @app.get("/", include_in_schema=False)
    async def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/items/{item_id}", include_in_schema=False)
    async def item_page(item_id: str) -> FileResponse:
        return FileResponse(STATIC / "item.html")

    return app
