"""You may also like, personalised carousels, shopper events and occasions.

- ``GET /v1/users/{user_id}/home``: carousels (for you, occasions, categories), their order and
  items, personalised from her rentals in the model and her recent events; an unknown user gets
  the popular layout for the season (``personalised: false``).
- ``POST /v1/users/{user_id}/events``: viewed / hearted / rented, at most :data:`MAX_EVENTS`
  per request, stored in ``shopper_events``; the next ``/home`` of that user reflects them
  within a second (``recs/events.py``), without retraining.
- ``GET /v1/occasions/{name}/items``: the season's most rented items for an occasion.
- ``GET /v1/items/{item_id}/similar?blend=`` (the search router, serve/app.py) calls
  :func:`blended_similar` when a recs model serves.

Ids are whatever the rentals say: an item the model knows but the catalog does not (the RTR
data's items on the demo catalog) is listed with ``in_catalog: false`` and no catalog fields.
Every answer names ``model_version``, ``served_by`` and ``fallback``. With no recs model promoted
these routes answer 503 naming ``lookalike recs build``; search is not affected.

Access: the GETs are public (shopper pages). ``POST /v1/users/{id}/events`` is public and
metered like ``POST /v1/events`` (the ``events`` meter: per key or per client network, body
capped): a shopper's own browser sends it, so it cannot need a key, and the meter bounds what an
anonymous client can write. It trusts the user id the client names (no shopper login exists
yet): events only reorder that user's page, they never change anyone else's.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lookalike.catalog.records import Item
from lookalike.core.errors import NotFound, Unavailable
from lookalike.recs.events import EventStore
from lookalike.recs.served import BUILD_FIX, RecsGeneration
from lookalike.recs.similar import DEFAULT_BLEND, Scored, blend
from lookalike.search import Hit, SearchResult
from lookalike.search.served import SearchGeneration
from lookalike.serve.schemas import ErrorResponse

__all__ = ["BLEND_DOC", "blended_similar", "build_recs_router", "recs_generation"]

MAX_EVENTS = 50
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
BLEND_DOC = (
    "0 = looks alike only (visual, the search index) … 1 = rented by the same people only "
    f"(co-rental); default {DEFAULT_BLEND} when a recs model serves. An item with no rentals "
    "gets its visual neighbours only; with no recs model the answer is visual only."
)
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown occasion"},
    422: {"model": ErrorResponse, "description": "A bad id, field or parameter"},
    503: {"model": ErrorResponse, "description": f"No recs model promoted (`{BUILD_FIX}`)"},
}
UserId = Annotated[str, Path(pattern=ID_PATTERN, description="The shopper's id")]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(pattern=ID_PATTERN)
    event: Literal["viewed", "hearted", "rented"]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsOut(BaseModel):
    recorded: int
    at: str


class RecItem(BaseModel):
    item_id: str
    score: float
    source: str = Field(description="co-rental, popular, category-popular, occasion, static…")
    in_catalog: bool
    title: str | None = None
    category: str | None = None
    price: float | None = None
    available: bool | None = None
    image_url: str | None = None


class CarouselOut(BaseModel):
    id: str
    title: str
    kind: str = Field(description="for-you | occasion | category")
    items: list[RecItem]


class HomeOut(BaseModel):
    user_id: str
    personalised: bool
    events_applied: int
    month: int
    carousels: list[CarouselOut]
    model_version: str
    served_by: str
    fallback: str | None = None


class OccasionOut(BaseModel):
    occasion: str
    month: int
    items: list[RecItem]
    model_version: str
    served_by: str
    fallback: str | None = None


def recs_generation(request: Request) -> RecsGeneration | None:
    """The recs generation serving now, or None (not built, not loaded)."""
    slot = request.app.state.serving.products.get("recs")
    generation = None if slot is None else slot.generation  # read once: a reload may swap it
    return generation if isinstance(generation, RecsGeneration) else None


def _required(request: Request) -> RecsGeneration:
    serving = request.app.state.serving
    return serving.served("recs", RecsGeneration, what="recommendation")


def _events(request: Request) -> EventStore:
    store = getattr(request.app.state, "recs_events", None)
    if store is None:
        settings = request.app.state.serving.settings
        store = EventStore(settings.db_url, settings.db)
        request.app.state.recs_events = store
    return store


def _month(month: int | None) -> int:
    return month or datetime.now(UTC).month


def _catalog_items(request: Request, ids: list[str]) -> dict[str, Item]:
    search = request.app.state.serving.search
    if search is None:
        return {}
    return search.service.view.items(ids)


def _rec_items(scored: list[Scored], catalog: dict[str, Item]) -> list[RecItem]:
    out = []
    for s in scored:
        item = catalog.get(s.item_id)
        extra: dict[str, Any] = {}
        if item is not None:
            extra = {
                "title": item.title,
                "category": item.category,
                "price": item.price,
                "available": item.available,
                "image_url": f"/v1/items/{item.item_id}/image",
            }
        out.append(
            RecItem.model_construct(
                item_id=s.item_id,
                score=s.score,
                source=s.source,
                in_catalog=item is not None,
                **{k: extra.get(k) for k in ("title", "category", "price", "available")},
                image_url=extra.get("image_url"),
            )
        )
    return out


def _stub(item_id: str, category: str | None) -> Item:
    """A rentals-only item (known to the model, not to the catalog): no price (NaN, shown as
    none), no photo."""
    title = f"item {item_id} (not in the catalog)"
    return Item(item_id, title, category or "", math.nan, False, None, (), _EPOCH)


def blended_similar(
    search: SearchGeneration,
    recs: RecsGeneration,
    item_id: str,
    *,
    k: int,
    category: str | None,
    available: bool | None,
    blend_weight: float | None,
) -> SearchResult:
    """Visual neighbours blended with co-rental ones (recs/similar.py); see BLEND_DOC."""
    started = time.perf_counter()
    weight = DEFAULT_BLEND if blend_weight is None else blend_weight
    pool = max(3 * k, 50)
    visual: SearchResult | None = None
    in_catalog = True
    if weight < 1:
        try:
            visual = search.similar(item_id, k=pool, category=category, available=available)
        except NotFound:
            in_catalog = False
            if not recs.knows_item(item_id):
                raise
    if not recs.knows_item(item_id):
        assert visual is not None
        note = f"item {item_id} has no rentals: visual neighbours only"
        return replace(
            visual,
            hits=visual.hits[:k],
            fallback="; ".join(filter(None, [visual.fallback, note])),
        )
    month = datetime.now(UTC).month
    corental, recs_by, reasons = recs.similar(item_id, pool, month)
    pairs = [] if visual is None else [(h.item.item_id, h.score) for h in visual.hits]
    ranked = blend(pairs, corental, weight, pool) if pairs else corental
    ids = [s.item_id for s in ranked]
    items = search.service.view.items(ids)
    hits = []
    for s in ranked:
        item = items.get(s.item_id) or _stub(s.item_id, recs.item_category(s.item_id))
        if category is not None and item.category.lower() != category.lower():
            continue
        if available is not None and item.available != available:
            continue
        hits.append(Hit(item, s.score, item.images[0].image_id if item.images else 0))
        if len(hits) >= k:
            break
    if not in_catalog:
        reasons = [*reasons, f"item {item_id} is not in the catalog: co-rental neighbours only"]
    parts = [recs_by] + ([] if visual is None else [visual.served_by])
    return SearchResult(
        hits=hits,
        model_version=recs.version + ("" if visual is None else f" + {visual.model_version}"),
        index_version=search.index_version if visual is None else visual.index_version,
        served_by="+".join(parts),
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        fallback="; ".join(filter(None, [*reasons, None if visual is None else visual.fallback]))
        or None,
    )


def build_recs_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/v1/users/{user_id}/home",
        response_model=HomeOut,
        responses=ERRORS,
        summary="The shopper's home page: carousels, their order and their items",
        description="Personalised from her rentals and her recent events (they count within a "
        "second); an unknown user gets the popular layout for the season. Fallback: "
        "personalised → popular for the season → the static layout shipped in the model.",
    )
    async def home(
        request: Request,
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=50, description="Items per carousel")] = 10,
        month: Annotated[
            int | None, Query(ge=1, le=12, description="Season (default: now)")
        ] = None,
    ) -> HomeOut:
        recs = _required(request)
        store = _events(request)

        def run() -> HomeOut:
            missed: list[str] = []
            try:
                events = store.recent(user_id)
            except Unavailable as exc:  # the page still answers from her rentals in the model
                events, missed = [], [f"recent events not read ({exc.message}): rentals only"]
            m = _month(month)
            carousels, served_by, reasons = recs.home(user_id, events, m, k)
            reasons = [*missed, *reasons]
            personalised = any(c.kind == "for-you" for c in carousels)
            if served_by == "recs-personalised" and not personalised:
                served_by = "recs-popular"  # no history and no events: the popular layout
            ids = list({s.item_id for c in carousels for s in c.items})
            catalog = _catalog_items(request, ids)
            return HomeOut.model_construct(
                user_id=user_id,
                personalised=personalised,
                events_applied=len(events),
                month=m,
                carousels=[
                    CarouselOut.model_construct(
                        id=c.id, title=c.title, kind=c.kind, items=_rec_items(c.items, catalog)
                    )
                    for c in carousels
                ],
                model_version=recs.version,
                served_by=served_by,
                fallback="; ".join(reasons) or None,
            )

        return await run_in_threadpool(run)

    @router.post(
        "/v1/users/{user_id}/events",
        response_model=EventsOut,
        status_code=202,
        responses={**ERRORS, 413: {"model": ErrorResponse, "description": "Body too large"}},
        summary="Record what the shopper viewed, hearted or rented",
        description=f"At most {MAX_EVENTS} events per request; the server's clock stamps them. "
        "Her next `/home` reflects them within a second; the nightly `lookalike recs build` "
        "folds them into the model.",
    )
    async def post_events(request: Request, user_id: UserId, body: EventsIn) -> EventsOut:
        store = _events(request)
        pairs = [(e.item_id, e.event) for e in body.events]
        at = await run_in_threadpool(store.record, user_id, pairs)
        return EventsOut(recorded=len(pairs), at=at.isoformat())

    @router.get(
        "/v1/occasions/{name}/items",
        response_model=OccasionOut,
        responses=ERRORS,
        summary="Items for an occasion (wedding, formal-affair, party, work, vacation, …)",
        description="The season's most rented items for the occasion; with `user_id`, "
        "personalised from her history. Unknown occasion: 404 naming the known ones.",
    )
    async def occasion_items(
        request: Request,
        name: Annotated[str, Path(max_length=40)],
        k: Annotated[int, Query(ge=1, le=100)] = 20,
        user_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        month: Annotated[int | None, Query(ge=1, le=12)] = None,
    ) -> OccasionOut:
        recs = _required(request)
        store = _events(request)

        def run() -> OccasionOut:
            events = store.recent(user_id) if user_id else []
            m = _month(month)
            scored, served_by, reasons = recs.occasion(name, user_id, events, m, k)
            catalog = _catalog_items(request, [s.item_id for s in scored])
            return OccasionOut.model_construct(
                occasion=" ".join(name.lower().replace("-", " ").replace("_", " ").split()),
                month=m,
                items=_rec_items(scored, catalog),
                model_version=recs.version,
                served_by=served_by,
                fallback="; ".join(reasons) or None,
            )

        return await run_in_threadpool(run)

    return router
