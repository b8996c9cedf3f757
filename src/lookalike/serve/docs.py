"""``/docs``: Swagger UI served from this server, never from a CDN.

FastAPI's default docs page loads Swagger UI from a CDN and starts it with an inline script;
both break a strict Content-Security-Policy and leak every docs visit to a third party. The
assets come from the ``fastapi-offline`` wheel (Swagger UI 5, which renders OpenAPI 3.1) and
are served from ``/static`` beside our own files (``static_files``); the page and its start-up
script are our own files, ``static/docs.html`` and ``static/docs.js``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["install_docs", "static_files"]

_ASSETS_PACKAGE = ("fastapi_offline", "static")


def _have_assets() -> bool:
    spec = importlib.util.find_spec(_ASSETS_PACKAGE[0])
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations))) / _ASSETS_PACKAGE[1]
    return (folder / "swagger-ui-bundle.js").is_file()


def static_files(static_dir: Path) -> StaticFiles:
    """``/static``: our files first, then Swagger UI's (``swagger-ui-bundle.js``, ``.css``)."""
    packages = [_ASSETS_PACKAGE] if _have_assets() else None
    return StaticFiles(directory=static_dir, packages=packages)


def install_docs(app: FastAPI, static_dir: Path) -> None:
    """Add ``GET /docs``, our page over the app's ``/openapi.json``.

    Build the app with ``docs_url=None, redoc_url=None`` so FastAPI's CDN page is not added.
    Without the assets (an environment set up before they were a dependency) ``/docs``
    answers 503 naming the fix.
    """
    have_assets = _have_assets()

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> Response:
        if not have_assets:
            message = "the API docs assets are not installed — run `pip install fastapi-offline`"
            body = {"error": {"code": "unavailable", "message": message}}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "3600"})
        return FileResponse(static_dir / "docs.html")
