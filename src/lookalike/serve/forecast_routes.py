"""Demand forecasts per item and per category: ``GET /v1/forecast/items/{item_id}`` and
``GET /v1/forecast/categories/{name}``.

Query: ``weeks`` (1–8, default 8) and ``level`` (the central interval's coverage, 0.8 or 0.9,
default 0.8); anything else is a 422 that names the parameter. An item id is the rental data's
item id (not the demo catalog's): one with no rental reviews up to the training end is a 404,
as is an unknown category. The answer: weekly point forecasts with lower/upper bounds, the total
over the weeks asked (its own interval, not the sum of the weekly bounds), the last 12 weeks of
history, and ``model_version``, ``served_by``, ``fallback``. Counts are **reviews per week, a
lower bound on rentals** (not every renter writes a review). Fallback: ridge → seasonal naive →
(items) category share → static zero; with no forecast promoted, 503 naming
``lookalike forecast build``.

Access: ``extension`` class (any valid API key), like ``/v1/price``. A demand forecast is a
merchandising and buying tool, not a shopper feature: it tells a competitor what rents, so
anonymous clients have no business reading it. A lookup of precomputed arrays (well under 1 ms),
so it is not metered per minute; admission bounds it like the other cheap routes. For the same
reason the handlers answer on the event loop instead of hopping to a worker thread first (the
hop cost about 1 ms of the p95 under load): the lookup still runs in its chain step's pool,
whose step budget bounds the wait.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from lookalike.forecast.served import UNIT, ForecastGeneration
from lookalike.serve.schemas import ErrorResponse

__all__ = ["ForecastResponse", "build_forecast_router"]

Weeks = Annotated[int, Query(ge=1, le=8, description="weeks ahead, 1–8")]
Level = Annotated[
    float, Query(gt=0, lt=1, description="coverage of the central interval: 0.8 or 0.9")
]


class WeekForecast(BaseModel):
    week_start: str
    point: float = Field(description="mean reviews that week")
    lower: float
    upper: float


class Total(BaseModel):
    point: float
    lower: float
    upper: float


class WeekHistory(BaseModel):
    week_start: str
    reviews: int


class ForecastResponse(BaseModel):
    series: str = Field(description="`item` or `category`")
    id: str
    category: str
    unit: str
    level: float
    trained_until: str
    forecast: list[WeekForecast]
    total: Total
    history: list[WeekHistory]
    model_version: str
    served_by: str
    fallback: str | None = None


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "level is not one the forecast holds"},
    401: {"model": ErrorResponse, "description": "No or an unknown API key"},
    404: {"model": ErrorResponse, "description": "No rental reviews for this item or category"},
    422: {"model": ErrorResponse, "description": "weeks or level out of range"},
    503: {"model": ErrorResponse, "description": "No forecast is promoted, or every step failed"},
}


def _generation(request: Request) -> ForecastGeneration:
    serving = request.app.state.serving
    return serving.served("forecast", ForecastGeneration, what="demand forecasting")


def _answer(generation: ForecastGeneration, level: str, key: str, weeks: int, lv: float) -> dict:
    q = generation.query(level, key, weeks, lv)
    body, served_by, reasons = generation.forecast(q)
    category = (
        generation.category_of(q.row)
        if level == "items"
        else str(generation.series.categories[q.row])
    )
    return {
        "series": "item" if level == "items" else "category",
        "id": key.strip() if level == "items" else category,
        "category": category,
        "unit": UNIT,
        "level": generation.levels[q.level_index],
        "trained_until": generation.meta["trained_until"],
        **body,
        "history": generation.history(q),
        "model_version": generation.version,
        "served_by": served_by,
        "fallback": "; ".join(reasons) if reasons else None,
    }


def build_forecast_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/v1/forecast/items/{item_id}",
        response_model=ForecastResponse,
        responses=RESPONSES,
        summary="Weekly demand forecast of one rental item (reviews: a lower bound on rentals)",
        description="Needs an API key. Point forecasts and intervals for 1–8 weeks after the "
        "training end, the total over those weeks, and the last 12 weeks. Fallback: ridge → "
        "seasonal naive → the item's share of its category → static zero.",
    )
    async def item_forecast(
        request: Request,
        item_id: Annotated[str, Path(min_length=1, max_length=64)],
        weeks: Weeks = 8,
        level: Level = 0.8,
    ) -> dict[str, Any]:
        return _answer(_generation(request), "items", item_id, weeks, level)

    @router.get(
        "/v1/forecast/categories/{name}",
        response_model=ForecastResponse,
        responses=RESPONSES,
        summary="Weekly demand forecast of one category (reviews: a lower bound on rentals)",
        description="Needs an API key. As the item route; fallback: ridge → seasonal naive → "
        "static zero.",
    )
    async def category_forecast(
        request: Request,
        name: Annotated[str, Path(min_length=1, max_length=100)],
        weeks: Weeks = 8,
        level: Level = 0.8,
    ) -> dict[str, Any]:
        return _answer(_generation(request), "categories", name, weeks, level)

    return router
