"""What the server serves: the catalog and one :class:`~lookalike.lifecycle.ProductSlot` a product.

On start each product loads its ``production`` release (search: the index and the model it was
built with); if a load check fails it loads ``previous`` and says degraded. A background task
(:func:`watch_registry`) asks every slot every ``settings.serving.reload_seconds`` whether its
aliases changed, and reloads that product alone, in a thread, with the same checks. Loading
never raises: a product that cannot serve says why, its routes answer 503 with the command that
fixes it, and /health stays up for the engineer on call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from lookalike.catalog import CatalogStore
from lookalike.core.errors import LookalikeError, Unavailable
from lookalike.core.settings import Settings
from lookalike.lifecycle import FallbackHook, KindRegistry, LoadContext, ProductSlot, StepPools
from lookalike.search import SearchService
from lookalike.search.served import SearchGeneration
from lookalike.serve.products import default_kinds

__all__ = ["ServingState", "load_state", "watch_registry"]

log = logging.getLogger("lookalike.serve")
G = TypeVar("G")


@dataclass
class ServingState:
    settings: Settings
    catalog: CatalogStore
    kinds: KindRegistry
    pools: StepPools
    products: dict[str, ProductSlot] = field(default_factory=dict)
    on_fallback: FallbackHook | None = None
    # Why the schema could not be migrated at start (the database was down); retried by the
    # watcher until it succeeds, so a server started without its database recovers alone.
    schema_problem: str | None = None

    @property
    def search_slot(self) -> ProductSlot:
        return self.products["search"]

    @property
    def search(self) -> SearchGeneration | None:
        """The search generation being served now (read it once per request)."""
        generation = self.search_slot.generation
        assert generation is None or isinstance(generation, SearchGeneration)
        return generation

    def served(self, product: str, cls: type[G], *, what: str) -> G:
        """``product``'s generation serving now, or a 503 that says why and which command fixes it
        (the kind's ``build_fix``).

        Call it once per request and keep the answer: a reload may swap the slot's generation at
        any time. ``what`` names the product in the error ("price suggestion is not ready: …").
        """
        slot = self.products.get(product)
        generation = None if slot is None else slot.generation
        if isinstance(generation, cls):
            return generation
        if slot is None:
            raise Unavailable(f"{what} is not served here: no {product} kind is registered")
        why = "; ".join(slot.problems) or "nothing is promoted yet"
        fix = getattr(slot.kind, "build_fix", None)
        raise Unavailable(f"{what} is not ready: {why}" + (f" — run `{fix}`" if fix else ""))

    @property
    def ready(self) -> bool:
        return all(slot.ready for slot in self.products.values())

    @property
    def status(self) -> str:
        statuses = {slot.status for slot in self.products.values()}
        for worst in ("unavailable", "degraded"):
            if worst in statuses:
                return worst
        return "ok"

    @property
    def problems(self) -> list[str]:
        return [p for slot in self.products.values() for p in slot.problems]

    @property
    def reloads(self) -> int:
        return sum(slot.reloads for slot in self.products.values())

    def set_fallback_hook(self, hook: FallbackHook | None) -> None:
        self.on_fallback = hook
        for slot in self.products.values():
            slot.context.on_fallback = hook
            if slot.generation is not None:
                slot.generation.set_fallback_hook(hook)

    def ensure_schema(self) -> bool:
        """Migrate the database if that has not succeeded yet; True when it is ready."""
        if self.schema_problem is None:
            return True
        try:
            self.catalog.create_schema()
        except LookalikeError as exc:
            self.schema_problem = exc.message
            return False
        log.info("database reachable again: schema migrated")
        self.schema_problem = None
        return True

    def reload_if_changed(self) -> bool:
        """Reload every product whose aliases changed; True when any swapped. Blocking."""
        self.ensure_schema()
        swapped = False
        for slot in self.products.values():
            try:
                swapped = slot.reload_if_changed() or swapped
            except Exception:  # one product's reload must not stop the others
                log.exception("%s: reload failed", slot.product)
        return swapped

    def close(self) -> None:
        self.pools.close()
        self.catalog.close()

    @classmethod
    def for_service(cls, settings: Settings, service: SearchService, **kw: Any) -> ServingState:
        """A state serving ``service``'s model and index (tests and embedding apps).

        The release is what the registry says for ``service``'s index; the engines are the
        ones given, so a test can serve a deliberately broken engine. Reload still watches.
        """
        state = _empty_state(settings, service.catalog, **kw)
        slot = state.search_slot
        kind = slot.kind
        release = kind.release("production")
        loaded = SearchGeneration.load(release, slot.context, service.catalog, primary=service)
        slot.install(loaded)
        return state


def _empty_state(
    settings: Settings, catalog: CatalogStore, on_fallback: FallbackHook | None = None
) -> ServingState:
    pools = StepPools(settings.serving.max_in_flight + 2)
    kinds = default_kinds(settings)
    state = ServingState(settings, catalog, kinds, pools, on_fallback=on_fallback)
    for kind in kinds:
        context = LoadContext(settings, pools, on_fallback, shared={"catalog": catalog})
        state.products[kind.product] = ProductSlot(kind, context)
    return state


def load_state(settings: Settings, on_fallback: FallbackHook | None = None) -> ServingState:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    catalog = CatalogStore.for_settings(settings)
    state = _empty_state(settings, catalog, on_fallback)
    try:
        catalog.create_schema()
    except LookalikeError as exc:  # start without the database; routes that need it say 503
        state.schema_problem = exc.message
        log.error("database not ready at start: %s", exc.message)
    for slot in state.products.values():
        slot.load()
    return state


async def watch_registry(state: ServingState) -> None:
    """Re-check every product's aliases every ``reload_seconds`` until cancelled."""
    interval = state.settings.serving.reload_seconds
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(state.reload_if_changed)
        except Exception:  # a reload must never kill the watcher
            log.exception("registry reload failed")
