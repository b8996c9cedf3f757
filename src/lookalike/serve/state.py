"""What the server loads at start: catalog, embedder and index, with production → previous.

Loading never raises: when nothing can serve, the state says why and the routes answer 503 with
the command that fixes it, while /health stays up for the engineer on call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from lookalike.catalog import CatalogStore
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.embed import Embedder, load_embedder
from lookalike.registry import Ref, Registry
from lookalike.search import SearchService, load_production_index
from lookalike.search.indexing import LoadedIndex

__all__ = ["ServingState", "load_state"]

log = logging.getLogger("lookalike.serve")


@dataclass
class ServingState:
    settings: Settings
    catalog: CatalogStore
    service: SearchService | None = None
    problems: list[str] = field(default_factory=list)
    degraded: bool = False
    loaded_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return self.service is not None

    @property
    def status(self) -> str:
        if self.service is None:
            return "unavailable"
        return "degraded" if self.degraded else "ok"


def _load_embedder(settings: Settings, problems: list[str]) -> tuple[Embedder, bool]:
    registry = Registry(settings.models_dir, "model")
    name = settings.search.model_name
    for alias in ("production", "previous"):
        try:
            embedder = load_embedder(registry, Ref(name, alias), runtime=settings.search.runtime)
            return embedder, alias != "production"
        except LookalikeError as exc:
            problems.append(f"model {name}:{alias}: {exc.message}")
        except Exception as exc:  # onnxruntime raises its own types on a damaged file
            problems.append(f"model {name}:{alias}: could not load ({exc})")
    raise LookalikeError("no model can serve")


def load_state(settings: Settings) -> ServingState:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    catalog.create_schema()
    state = ServingState(settings, catalog)
    try:
        embedder, fell_back = _load_embedder(settings, state.problems)
    except LookalikeError:
        log.error("not ready: %s", "; ".join(state.problems))
        return state
    index_registry = Registry(settings.index_dir, "index")
    try:
        loaded: LoadedIndex
        loaded, failures = load_production_index(
            index_registry, settings.search.index_name, embedder.info.ref
        )
        state.problems += failures
    except LookalikeError as exc:
        state.problems.append(exc.message)
        log.error("not ready: %s", "; ".join(state.problems))
        return state
    state.service = SearchService(catalog, embedder, loaded)
    state.degraded = fell_back or bool(failures)
    log.info(
        "serving model %s via %s (%s), index %s%s",
        embedder.info.ref,
        embedder.info.served_by,
        embedder.info.reason,
        loaded.ref,
        " — DEGRADED: " + "; ".join(state.problems) if state.degraded else "",
    )
    return state
