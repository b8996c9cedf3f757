"""What the server serves: catalog + one search generation, reloaded when the registry changes.

On start the server loads ``production`` (model and index); if a load check fails it loads
``previous`` and says degraded. A background task (:func:`watch_registry`) re-reads the
production/previous aliases every ``settings.serving.reload_seconds``; when they change it loads
the new pair in a thread, with the same checks, and swaps ``state.search`` in one assignment.
Requests in flight finish on the generation they started with. When the new pair cannot load,
the old one keeps serving and /health says why.

Loading never raises: when nothing can serve, the state says why and the routes answer 503 with
the command that fixes it, while /health stays up for the engineer on call.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from lookalike.catalog import CatalogStore
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.embed import Embedder, load_embedder
from lookalike.registry import Ref, Registry
from lookalike.search import SearchService, load_production_index
from lookalike.serve.fallback import FallbackHook, GuardedSearch, StepPools

__all__ = ["ServingState", "freshness", "load_state", "reload_if_changed", "watch_registry"]

log = logging.getLogger("lookalike.serve")
AliasKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


@dataclass
class ServingState:
    settings: Settings
    catalog: CatalogStore
    search: GuardedSearch | None = None
    problems: list[str] = field(default_factory=list)
    degraded: bool = False
    loaded_at: float = field(default_factory=time.time)
    # The production/previous aliases the current generation was loaded for (None: not read).
    seen: AliasKey | None = None
    reloads: int = 0
    pools: StepPools | None = None
    on_fallback: FallbackHook | None = None
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_service(cls, settings: Settings, service: SearchService, **kw: Any) -> ServingState:
        """A state serving ``service`` (tests and embedding apps); reload still watches."""
        state = cls(settings, service.catalog, **kw)
        state.install(service)
        return state

    @property
    def service(self) -> SearchService | None:
        search = self.search
        return None if search is None else search.service

    @property
    def ready(self) -> bool:
        return self.search is not None

    @property
    def status(self) -> str:
        if self.search is None:
            return "unavailable"
        return "degraded" if self.degraded else "ok"

    def install(self, service: SearchService) -> None:
        """Swap in a new generation: one reference assignment, old requests finish on theirs."""
        if self.pools is None:
            self.pools = StepPools(self.settings.serving.max_in_flight + 2)
        self.search = GuardedSearch(service, self.settings, self.pools, self.on_fallback)
        self.loaded_at = time.time()


def _load_embedder(
    settings: Settings, problems: list[str], reuse: Embedder | None
) -> tuple[Embedder, bool]:
    registry = Registry(settings.models_dir, "model")
    name = settings.search.model_name
    for alias in ("production", "previous"):
        try:
            ref = registry.resolve(Ref(name, alias))
            if reuse is not None and reuse.info.ref == str(ref):
                # Same immutable version, already loaded and checked: keep it (an index-only
                # promote then costs one index load, not a model load).
                return reuse, alias != "production"
            embedder = load_embedder(registry, ref, runtime=settings.search.runtime)
            return embedder, alias != "production"
        except LookalikeError as exc:
            problems.append(f"model {name}:{alias}: {exc.message}")
        except Exception as exc:  # onnxruntime raises its own types on a damaged file
            problems.append(f"model {name}:{alias}: could not load ({exc})")
    raise LookalikeError("no model can serve")


def load_pair(
    settings: Settings, catalog: CatalogStore, reuse: Embedder | None = None
) -> tuple[SearchService | None, list[str], bool]:
    """Load production (else previous) model and matching index: (service, problems, fell back)."""
    problems: list[str] = []
    try:
        embedder, fell_back = _load_embedder(settings, problems, reuse)
    except LookalikeError:
        return None, problems, True
    try:
        loaded, failures = load_production_index(
            Registry(settings.index_dir, "index"), settings.search.index_name, embedder.info.ref
        )
    except LookalikeError as exc:
        problems.append(exc.message)
        return None, problems, True
    problems += failures
    service = SearchService(catalog, embedder, loaded, crops=settings.search.crops)
    return service, problems, fell_back or bool(failures)


def alias_key(settings: Settings) -> AliasKey | None:
    """The production/previous aliases of the served model and index, as read now."""
    try:
        model = Registry(settings.models_dir, "model").aliases(settings.search.model_name)
        index = Registry(settings.index_dir, "index").aliases(settings.search.index_name)
    except (OSError, ValueError) as exc:
        log.warning("could not read registry aliases: %s", exc)
        return None
    return tuple(sorted(model.items())), tuple(sorted(index.items()))


def load_state(settings: Settings, on_fallback: FallbackHook | None = None) -> ServingState:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    catalog.create_schema()
    state = ServingState(settings, catalog, on_fallback=on_fallback)
    state.seen = alias_key(settings)
    service, problems, fell_back = load_pair(settings, catalog)
    state.problems = problems
    if service is None:
        log.error("not ready: %s", "; ".join(problems))
        return state
    state.install(service)
    state.degraded = fell_back
    _log_serving(state, "serving")
    return state


def _log_serving(state: ServingState, verb: str) -> None:
    service = state.service
    assert service is not None
    info = service.embedder.info
    log.info(
        "%s model %s via %s (%s), index %s%s",
        verb,
        info.ref,
        info.served_by,
        info.reason,
        service.index.ref,
        " — DEGRADED: " + "; ".join(state.problems) if state.degraded else "",
    )


def reload_if_changed(state: ServingState) -> bool:
    """Reload when the registry aliases changed since the last load; True when swapped.

    Blocking (loads models): run it in a thread. A pair that cannot load leaves the current one
    serving, marks the state degraded and is not retried until the aliases change again.
    """
    key = alias_key(state.settings)
    if key is None or key == state.seen:
        return False
    with state._reload_lock:
        if key == state.seen:
            return False
        if state.seen is None:  # first look at a state built elsewhere: adopt, do not reload
            state.seen = key
            return False
        current = state.service
        service, problems, fell_back = load_pair(
            state.settings, state.catalog, reuse=None if current is None else current.embedder
        )
        state.seen = key
        if service is None:
            if current is not None:
                problems.append(
                    f"kept serving {current.embedder.info.ref} + {current.index.ref}: "
                    "the new production pair could not load"
                )
                state.degraded = True
            state.problems = problems
            log.error("reload failed: %s", "; ".join(problems))
            return False
        state.problems = problems
        state.degraded = fell_back
        state.install(service)
        state.reloads += 1
        _log_serving(state, "reloaded: serving")
        return True


async def watch_registry(state: ServingState) -> None:
    """Re-check the registry aliases every ``reload_seconds`` until cancelled."""
    interval = state.settings.serving.reload_seconds
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(reload_if_changed, state)
        except Exception:  # a reload must never kill the watcher
            log.exception("registry reload failed")


def _epoch(stamp: Any) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def freshness(state: ServingState) -> dict[str, Any]:
    """Age of each served artifact and how far the index lags behind the catalog.

    The catalog keeps a change counter, not change times, so when the catalog has moved past the
    revision the index was built at, the lag is bounded by the index's age (the change came
    after the build): ``stale`` turns true once that bound exceeds the stated limit. This can
    say stale a little early, never late.
    """
    now = time.time()
    limit = state.settings.serving.index_max_age_hours * 3600
    out: dict[str, Any] = {"artifacts": {}, "index_max_age_seconds": limit, "stale": False}
    service = state.service
    if service is None:
        return out
    model_reg = Registry(state.settings.models_dir, "model")
    try:
        model_created = _epoch(model_reg.manifest(service.embedder.info.ref).get("created_at"))
    except LookalikeError:
        model_created = None
    index_created = _epoch(service.index.manifest.get("created_at"))
    for kind, version, created in (
        ("model", service.embedder.info.ref, model_created),
        ("index", str(service.index.ref), index_created),
    ):
        out["artifacts"][kind] = {
            "version": version,
            "age_seconds": None if created is None else round(now - created, 1),
        }
    indexed = service.index.manifest.get("catalog_revision")
    try:
        current = state.catalog.revision()
    except LookalikeError:
        current = None
    behind = indexed is not None and current is not None and int(indexed) != current
    lag = (now - index_created) if behind and index_created is not None else 0.0
    out["catalog"] = {
        "revision": current,
        "indexed_revision": indexed,
        "index_behind": behind,
        "index_lag_seconds_at_most": round(lag, 1),
    }
    out["stale"] = bool(behind and lag > limit)
    return out
