"""``POST /v1/fit`` (P(small / fit / large) per size, a recommended size) and the rental reviews
of an item sorted by how like the shopper each reviewer is (:func:`fit_reviews`, which
``GET /v1/items/{item_id}/reviews`` fills its ``fit_reviews`` with).

Item ids are whatever the rental reviews say (the RTR ids are not the demo catalog's): an id
the fit model has never seen is a 404 unless the body names a ``size``. Fallback: the model →
the item's own label shares → the overall prior (static); with no fit model promoted the route
answers 503 naming ``lookalike fit build``. Every answer names ``model_version``, ``served_by``
and ``fallback``.

Access: public (a shopper feature on the item page); it is ~1 ms of numpy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from lookalike.catalog.rental_store import RentalReview, RentalStore
from lookalike.catalog.rentals import PLAUSIBLE
from lookalike.core.errors import InvalidInput
from lookalike.recs.fit_served import BUILD_FIX, FitAsk, FitGeneration
from lookalike.recs.likeme import (
    BODY_TYPES,
    SIZE_RANGE,
    Reviewers,
    Shopper,
    parse_bust,
    parse_like_me,
    rank_reviewers,
    reason_for,
)
from lookalike.serve.schemas import ErrorResponse

__all__ = ["FitRequest", "FitResponse", "build_fit_router", "fit_reviews"]

FIT_REVIEWS_LIMIT = 20
_CACHE_ITEMS = 256


class FitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    size: int | None = Field(
        None, ge=SIZE_RANGE[0], le=SIZE_RANGE[1], description="only this size (default: all)"
    )
    height_in: float | None = Field(
        None, ge=PLAUSIBLE["height_in"][0], le=PLAUSIBLE["height_in"][1], allow_inf_nan=False
    )
    weight_lbs: float | None = Field(
        None, ge=PLAUSIBLE["weight_lbs"][0], le=PLAUSIBLE["weight_lbs"][1], allow_inf_nan=False
    )
    bust: str | None = Field(None, max_length=8, description="band and cup, e.g. `34c`")
    body_type: str | None = Field(None, description="one of " + ", ".join(BODY_TYPES))
    usual_size: int | None = Field(None, ge=SIZE_RANGE[0], le=SIZE_RANGE[1])

    @field_validator("bust")
    @classmethod
    def _bust(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_bust(value)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("body_type")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        if value is None:
            return None
        body = value.strip().lower().replace("_", " ")
        if body not in BODY_TYPES:
            raise ValueError(f"must be one of {', '.join(BODY_TYPES)}")
        return body

    def shopper(self) -> Shopper:
        band, cup = parse_bust(self.bust) if self.bust else (None, None)
        return Shopper(
            height_in=self.height_in,
            weight_lbs=self.weight_lbs,
            bust_size_num=band,
            bust_cup=cup,
            body_type=self.body_type,
            size=self.usual_size,
        )


class SizeFit(BaseModel):
    size: int
    small: float
    fit: float
    large: float


class FitResponse(BaseModel):
    item_id: str
    item_known: bool
    sizes: list[SizeFit]
    recommended_size: int | None = Field(description="the size most likely to fit")
    reason: str
    model_version: str
    served_by: str
    fallback: str | None = None


# ---- reviews of women like me -----------------------------------------------------------------


class _ReviewCache:
    """An item's reviews (and their columns) per store revision: a busy item has thousands."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str, int], tuple[list[RentalReview], Reviewers]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, store: RentalStore, item_id: str) -> tuple[list[RentalReview], Reviewers]:
        key = (store.url, item_id, store.revision())
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        reviews = store.item_reviews(item_id)
        value = (reviews, Reviewers.of(reviews))
        with self._lock:
            self._items[key] = value
            while len(self._items) > _CACHE_ITEMS:
                self._items.popitem(last=False)
        return value


_cache = _ReviewCache()


def fit_reviews(
    store: RentalStore, item_id: str, like_me: str | None, limit: int = FIT_REVIEWS_LIMIT
) -> tuple[list[dict[str, Any]], int]:
    """(the item's rental reviews, newest first — or most like the shopper first when
    ``like_me`` is given, each with ``similarity`` and ``reason`` —, how many it has).

    Blocking (the database): run it in a thread. ``like_me`` is validated first
    (:func:`~lookalike.recs.likeme.parse_like_me`: a 422 naming the bad field).
    """
    shopper = parse_like_me(like_me) if like_me is not None else None
    reviews, who = _cache.get(store, item_id)
    if shopper is None:
        return [r.to_dict() for r in reviews[:limit]], len(reviews)
    order, similarity, shared = rank_reviewers(shopper, who)
    out = []
    for i in order[:limit]:
        out.append(
            {
                **reviews[i].to_dict(),
                "similarity": round(float(similarity[i]), 4),
                "shared_features": int(shared[i]),
                "reason": reason_for(shopper, who, int(i)),
            }
        )
    return out, len(reviews)


def build_fit_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/fit",
        response_model=FitResponse,
        responses={
            404: {
                "model": ErrorResponse,
                "description": "The item has no reviews the model knows and no size was named",
            },
            422: {"model": ErrorResponse, "description": "A field is missing or out of range"},
            503: {
                "model": ErrorResponse,
                "description": "No fit model is promoted, or every fallback failed",
            },
        },  # fmt: skip
        summary="P(small / fit / large) of each size of an item for a shopper, and a size",
        description="Public. Fallback: the fit model, then the item's own label shares, then "
        f"the overall prior. 503 when no fit model is promoted (`{BUILD_FIX}`).",
    )
    async def predict_fit(body: FitRequest, request: Request) -> dict[str, Any]:
        generation = request.app.state.serving.served("fit", FitGeneration, what="fit prediction")
        ask = FitAsk(body.shopper(), body.item_id, body.size)
        answer, served_by, reasons = await run_in_threadpool(generation.answer, ask)
        return {
            "item_id": body.item_id,
            "item_known": answer.item_known,
            "sizes": answer.sizes,
            "recommended_size": answer.recommended_size,
            "reason": answer.reason,
            "model_version": generation.version,
            "served_by": served_by,
            "fallback": "; ".join(reasons) if reasons else None,
        }

    return router
