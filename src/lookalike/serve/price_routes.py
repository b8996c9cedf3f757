"""``POST /v1/price``: a suggested rental price for a dress, with a reason a merchandiser checks.

The body is a dress's attributes (validated: an unknown field, a fabric we do not know, a share
outside 0–100 or a price that is not positive is a 422 that names the field). The answer is the
suggested price (never below the floor), an interval, whether the floor was applied, the 5 most
similar priced dresses and a one-line reason, and which model version and path answered
(``model_version``, ``served_by``, ``fallback``). Fallback: the model → the rule of thumb stored
with it. With no price model promoted the route answers 503 naming ``lookalike price build``;
search is not affected.

Access: ``extension`` class (any valid API key). Suggesting prices is a merchandising tool, not a
shopper feature: anonymous clients have no business calling it, and a key names who priced what.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from lookalike.core.errors import InvalidInput
from lookalike.price.listings import FABRICS, MAX_PRICE, listings_from_records
from lookalike.price.served import BUILD_FIX, PriceGeneration
from lookalike.serve.schemas import ErrorResponse

__all__ = ["PriceRequest", "PriceResponse", "build_price_router"]

Cat = Annotated[str | None, Field(default=None, max_length=60, pattern=r"^[A-Za-z0-9 _\-]*$")]


class PriceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand: str = Field(min_length=1, max_length=120, description="e.g. `tory burch`")
    retail_price: float = Field(gt=0, le=MAX_PRICE, allow_inf_nan=False, description="USD")
    length: Cat = None
    sleeves: Cat = None
    neckline: Cat = None
    fabrics: dict[str, float] = Field(
        default_factory=dict,
        description='fabric → percentage (0–100), e.g. `{"cotton": 95, "spandex": 5}`; '
        "known fabrics: " + ", ".join(FABRICS),
    )
    number_of_reviews: int = Field(0, ge=0, le=10_000_000)
    description: str = Field("", max_length=2000)

    @field_validator("brand")
    @classmethod
    def _brand(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("brand is empty")
        return value

    @field_validator("fabrics")
    @classmethod
    def _fabrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(k for k in value if k.lower() not in FABRICS)
        if unknown:
            raise ValueError(
                f"unknown fabric(s) {', '.join(repr(k[:30]) for k in unknown[:5])}; "
                f"known: {', '.join(FABRICS)}"
            )
        bad = sorted(k for k, v in value.items() if not (math.isfinite(v) and 0 <= v <= 100))
        if bad:
            raise ValueError(f"fabric share of {', '.join(bad)} must be between 0 and 100")
        return {k.lower(): v for k, v in value.items()}

    def record(self) -> dict[str, object]:
        return {
            "Brand": self.brand,
            "Dress_Description": self.description,
            "Retail_price": self.retail_price,
            "Number_of_reviews": self.number_of_reviews,
            "Length": self.length or "",
            "Sleeves": self.sleeves or "",
            "Neckline": self.neckline or "",
            **{f: self.fabrics.get(f, 0.0) for f in FABRICS},
        }


class Interval(BaseModel):
    low: float
    high: float
    level: float = Field(description="share of held-out dresses whose rent fell inside")


class SimilarDress(BaseModel):
    brand: str
    description: str
    length: str
    retail_price: float
    rent_price: float
    distance: float


class PriceResponse(BaseModel):
    suggested_price: float
    interval: Interval
    floor: float
    floor_applied: bool
    rounded_to: float = Field(
        0.0, description="the price step the suggestion is rounded to, $ (0: none)"
    )
    similar: list[SimilarDress]
    reason: str
    model_version: str
    served_by: str
    fallback: str | None = None


def build_price_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/price",
        response_model=PriceResponse,
        responses={
            401: {"model": ErrorResponse, "description": "No or an unknown API key"},
            422: {"model": ErrorResponse, "description": "A field is missing or out of range"},
            503: {
                "model": ErrorResponse,
                "description": "No price model is promoted, or every fallback failed; "
                "Retry-After says when to retry",
            },
        },
        summary="Suggest a rental price for a dress, with the similar priced dresses as reason",
        description="Needs an API key. Fallback: the price model, then the rule of thumb "
        "(median rent/retail of the training dresses × retail, floored). 503 when no price "
        f"model is promoted (`{BUILD_FIX}`).",
    )
    async def suggest_price(body: PriceRequest, request: Request) -> dict[str, Any]:
        generation = request.app.state.serving.served(
            "price", PriceGeneration, what="price suggestion"
        )
        listings, report = listings_from_records([body.record()], require_rent=False)
        if not len(listings):  # the schema already refuses what the reader would drop
            raise InvalidInput("the dress could not be read: " + "; ".join(report.reasons))
        answers, served_by, reasons = await run_in_threadpool(generation.price, listings)
        return {
            **answers[0],
            "model_version": generation.version,
            "served_by": served_by,
            "fallback": "; ".join(reasons) if reasons else None,
        }

    return router
