"""Request and response schemas of the HTTP API (they are the OpenAPI documentation).

``install_openapi`` finishes the generated document so that it lists every answer a route can
give, in the shape it really has: FastAPI documents its validation errors as
``{"detail": [...]}`` while ours are ``{"error": {"code", "message"}}`` (``serve.errors``), and
the answers that middleware gives before a route runs (413 from the body limit, 401 and 429
from the key check) appear in no route's own ``responses``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

__all__ = [
    "Category",
    "CategoryList",
    "ErrorBody",
    "ErrorResponse",
    "GarmentGroupOut",
    "install_openapi",
    "ItemOut",
    "match_label",
    "price_text",
    "ResultItem",
    "SearchResponse",
]


def price_text(price: float) -> str:
    """The one price a shopper reads, on every page and in the extension: "$45 per rental",
    "$45.50 per rental" (cents only when there are some)."""
    if not math.isfinite(price) or price < 0:
        return ""
    cents = round(float(price) * 100)
    dollars, rest = divmod(cents, 100)
    return f"${dollars:,}" + (f".{rest:02d}" if rest else "") + " per rental"


def match_label(score: float, labels: Sequence[tuple[str, float]]) -> str | None:
    """The first label whose threshold ``score`` reaches, highest threshold first ("Very
    close", "Close", "Similar"); None below them all, or when the model has no calibrated
    ``score_labels`` in its manifest (a raw cosine means nothing to a shopper)."""
    for label, threshold in sorted(labels, key=lambda lt: -lt[1]):
        if math.isfinite(threshold) and score >= threshold:
            return label
    return None


class ResultItem(BaseModel):
    item_id: str
    title: str
    category: str
    price: float | None = Field(
        description="Rental price in the catalog's currency; null for an item the rentals know "
        "but the catalog does not (a co-rental neighbour from `/similar`: no price, no photo)"
    )
    price_text: str = Field(
        description='The price as shown to a shopper, e.g. "$45 per rental"; "" with no price'
    )
    available: bool = Field(description="Can be rented now")
    score: float = Field(description="Cosine similarity of the best-matching image, -1..1")
    match: str | None = Field(
        None,
        description='How close, in words ("Very close", "Close", "Similar"), from thresholds '
        "calibrated for the serving model (its manifest's `score_labels`); null when the model "
        "has none or the score is below them all",
    )
    image_url: str | None = Field(description="Its photo; null for an item not in the catalog")
    url: str | None = None
    region: str = Field("whole", description="Which crop of the query photo matched")
    box: list[float] | None = Field(
        None, description="That crop's box in the query photo, normalised [x0, y0, x1, y1]"
    )


class GarmentGroupOut(BaseModel):
    region: str = Field(description="whole, upper, lower or a located garment")
    box: list[float] | None
    score: float
    results: list[ResultItem]


class SearchResponse(BaseModel):
    results: list[ResultItem]
    groups: list[GarmentGroupOut] = Field(
        default_factory=list, description="Results per garment, with `per_garment=true`"
    )
    crop_mode: str = Field("whole", description="Which crops of the photo were searched")
    model_version: str = Field(description="Embedder that answered, name:version")
    index_version: str = Field(description="Index that answered, name:version")
    served_by: str = Field(description="Runtime path that answered, e.g. onnxruntime-cpu:int8")
    fallback: str | None = Field(
        None,
        description="Why a fallback step answered (the step that failed or timed out, and how); "
        "null when the primary path answered",
    )
    took_ms: float
    request_id: str


class ItemOut(BaseModel):
    item_id: str
    title: str
    category: str
    price: float
    price_text: str = Field(description='The price as shown to a shopper, e.g. "$45 per rental"')
    available: bool
    url: str | None
    image_urls: list[str]


class Category(BaseModel):
    name: str
    count: int


class CategoryList(BaseModel):
    categories: list[Category]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERROR_REF = "#/components/schemas/ErrorResponse"
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
    }


def _refers_to(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_refers_to(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers_to(v, ref) for v in node)
    return False


def document_errors(
    schema: dict[str, Any], forbidden_paths: Collection[str] = ()
) -> dict[str, Any]:
    """Make ``schema`` (an OpenAPI document) name every error answer; idempotent.

    Every operation may answer 401 (a key, once sent, is checked on every route), every ``/v1``
    operation 429 (rate limits), and the operations of ``forbidden_paths`` (routes that need a
    role) 403.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in error_schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("ErrorResponse", error_schema)
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            invalid = responses.get("422")
            if invalid is None and (op.get("parameters") or op.get("requestBody")):
                invalid = responses["422"] = {}
            if invalid is not None and (
                not invalid.get("content") or _refers_to(invalid, _FASTAPI_VALIDATION)
            ):
                responses["422"] = _error("A parameter or the body is invalid")
            body = op.get("requestBody", {}).get("content", {})
            if body:
                responses.setdefault("413", _error("The request body is over the size limit"))
                # FastAPI answers 400 for a body it cannot even read (bad multipart, not UTF-8)
                responses.setdefault("400", _error("The request body could not be parsed"))
            responses.setdefault(
                "401", _error("An API key was sent (or is required here) and is not valid")
            )
            if path in forbidden_paths:
                responses.setdefault("403", _error("The API key's role may not call this route"))
            if path.startswith("/v1/"):
                responses.setdefault(
                    "429", _error("Over the rate limit; Retry-After says when to come back")
                )
    if not _refers_to(schema.get("paths", {}), _FASTAPI_VALIDATION):
        components.pop("HTTPValidationError", None)
        if not _refers_to(components, "#/components/schemas/ValidationError"):
            components.pop("ValidationError", None)
    return schema


def install_openapi(app: FastAPI, forbidden_paths: Collection[str] = ()) -> None:
    """Serve ``app``'s OpenAPI document finished by :func:`document_errors` (built once)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate(), forbidden_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
