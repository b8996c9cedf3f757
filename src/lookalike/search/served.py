"""One served release of search: a model + the index built with it, and their fallback steps.

    embed:   the primary runtime (what ``load_embedder`` chose)  →  torch on CPU
    lookup:  the release's index                                 →  the index's ``previous``

Both fallback engines are loaded with the generation (at start-up or on reload, never inside a
request); one that cannot load is a skipped step whose reason the answer and /health show. The
query path itself is :class:`~lookalike.search.service.SearchService`'s, run through the two
chains (:class:`~lookalike.lifecycle.Chain`), so every request runs the same code as the tests.
"""

from __future__ import annotations

import calendar
import importlib.util
import logging
import time
from typing import Any

import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.core.errors import LookalikeError, NotFound, short_reason
from lookalike.embed import Embedder, load_embedder
from lookalike.lifecycle import Chain, FallbackHook, LoadContext, Release, Step
from lookalike.registry import Ref, Registry
from lookalike.search.indexing import IDS_FILE, LoadedIndex, check_pair, load_registry_index
from lookalike.search.service import SearchResult, SearchService, T

__all__ = ["SearchGeneration"]

log = logging.getLogger("lookalike.search")


def _epoch(stamp: Any) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _indexed_ids(registry: Registry, loaded: LoadedIndex) -> frozenset[int]:
    path = registry.path(loaded.ref) / IDS_FILE
    try:
        return frozenset(int(i) for i in np.load(path))
    except (OSError, ValueError):
        return frozenset()


class SearchGeneration:
    """Implements :class:`~lookalike.search.service.Phases` with the two fallback chains."""

    product = "search"

    def __init__(
        self,
        release: Release,
        primary: SearchService,
        context: LoadContext,
        *,
        torch: SearchService | None,
        torch_why: str | None,
        previous: SearchService | None,
        previous_why: str | None,
        model_created: float | None,
        indexed_ids: frozenset[int],
    ) -> None:
        self.release = release
        self.service = primary
        self.settings = context.settings
        budget = self.settings.serving.step_budget_ms / 1000
        served_by = primary.embedder.info.served_by
        embed_steps: list[Step[SearchService]] = [Step(served_by, primary)]
        if served_by != "torch-cpu":
            embed_steps.append(Step("torch-cpu", torch, torch_why))
        index_steps: list[Step[SearchService]] = [
            Step("index:production", primary, label=f"index {primary.index.ref}"),
            Step(
                "index:previous",
                previous,
                previous_why,
                label=None if previous is None else f"index {previous.index.ref}",
            ),
        ]
        self.embed_chain = Chain(
            "search",
            "embed",
            embed_steps,
            pools=context.pools,
            budget_s=budget,
            fix="lookalike models rollback",
            on_fallback=context.on_fallback,
        )
        self.index_chain = Chain(
            "search",
            "index",
            index_steps,
            pools=context.pools,
            budget_s=budget,
            fix="lookalike index rollback",
            on_fallback=context.on_fallback,
        )
        self.torch = torch
        self.previous = previous
        self._model_created = model_created
        self._indexed_ids = indexed_ids
        self._behind: tuple[int, int, int] | None = None  # (revision, missing, gone)

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        release: Release,
        context: LoadContext,
        catalog: CatalogStore,
        *,
        primary: SearchService | None = None,
    ) -> SearchGeneration:
        """Load ``release``'s model and index, check they pair, and load both fallbacks.

        ``primary``: serve this service's engines instead of loading the release's (tests that
        serve a deliberately broken engine); the fallbacks still come from the registry.
        """
        settings = context.settings
        models = Registry(settings.models_dir, "model")
        indexes = Registry(settings.index_dir, "index")
        if primary is None:
            model_ref, index_ref = release.members["model"], release.members["index"]
            reuse = context.reuse if isinstance(context.reuse, SearchGeneration) else None
            embedder = _reused_embedder(reuse, str(model_ref))
            if embedder is None:
                embedder = load_embedder(models, model_ref, runtime=settings.search.runtime)
            loaded = load_registry_index(indexes, index_ref)
            check_pair(loaded, embedder.info.ref)
            primary = SearchService(catalog, embedder, loaded, crops=settings.search.crops)
        else:
            reuse = None
            embedder, loaded = primary.embedder, primary.index
            model_ref = Ref.parse(embedder.info.ref)
        torch, torch_why = _torch_fallback(
            reuse, embedder, models, primary, wanted=settings.search.torch_fallback
        )
        previous, previous_why = _previous_index(indexes, primary)
        try:
            created = _epoch(models.manifest(model_ref).get("created_at"))
        except LookalikeError:
            created = None
        return cls(
            release,
            primary,
            context,
            torch=torch,
            torch_why=torch_why,
            previous=previous,
            previous_why=previous_why,
            model_created=created,
            indexed_ids=_indexed_ids(indexes, loaded),
        )

    # -- Phases ----------------------------------------------------------------------------------
    def embed(self, fn: Any) -> tuple[T, SearchService, list[str]]:
        return self.embed_chain.run(fn)

    def lookup(self, fn: Any) -> tuple[T, SearchService, list[str]]:
        return self.index_chain.run(fn)

    # -- the two query kinds -------------------------------------------------------------------
    def search_image(
        self,
        image: Image.Image,
        *,
        k: int,
        category: str | None = None,
        available: bool | None = None,
        per_garment: bool = False,
        crops: str | None = None,
    ) -> SearchResult:
        return self.service.search_image(
            image,
            k=k,
            category=category,
            available=available,
            per_garment=per_garment,
            crops=crops,
            phases=self,
        )

    def similar(
        self, item_id: str, *, k: int, category: str | None = None, available: bool | None = None
    ) -> SearchResult:
        return self.service.similar(
            item_id, k=k, category=category, available=available, phases=self
        )

    # -- Generation ------------------------------------------------------------------------------
    @property
    def versions(self) -> dict[str, str]:
        return {"model": self.service.embedder.info.ref, "index": str(self.service.index.ref)}

    @property
    def served_by(self) -> str:
        return self.service.embedder.info.served_by

    @property
    def model_version(self) -> str:
        return self.service.embedder.info.ref

    @property
    def index_version(self) -> str:
        return str(self.service.index.ref)

    def fallback_chains(self) -> dict[str, Chain[SearchService]]:
        return {"embed": self.embed_chain, "index": self.index_chain}

    def set_fallback_hook(self, hook: FallbackHook | None) -> None:
        self.embed_chain.on_fallback = hook
        self.index_chain.on_fallback = hook

    def close(self) -> None:
        """Nothing to release explicitly: engines are freed with the last request using them."""

    def catalog_lag(self) -> tuple[int, int, int]:
        """(catalog revision, images missing from the index, indexed images gone from it).

        The same comparison ``lookalike refresh`` makes (image ids), so a price or availability
        change never reads as the index being behind, and a refresh always clears what this says.
        """
        view = self.service.view
        revision = view.revision()
        cached = self._behind
        if cached is not None and cached[0] == revision:
            return cached
        current = view.image_ids()
        result = (
            revision,
            len(current - self._indexed_ids),
            len(self._indexed_ids - current),
        )
        self._behind = result
        return result

    def freshness(self) -> dict[str, Any]:
        """Age of each served artifact and whether the index lags the catalog's images.

        The catalog keeps a change counter, not change times, so once the index is behind, the
        lag is bounded by the index's age (the change came after the build): ``stale`` turns
        true when that bound exceeds the stated limit. It can say stale early, never late.
        """
        now = time.time()
        limit = self.settings.serving.index_max_age_hours * 3600
        index_created = _epoch(self.service.index.manifest.get("created_at"))
        out: dict[str, Any] = {"artifacts": {}, "index_max_age_seconds": limit, "stale": False}
        for role, version, created in (
            ("model", self.model_version, self._model_created),
            ("index", self.index_version, index_created),
        ):
            out["artifacts"][role] = {
                "version": version,
                "age_seconds": None if created is None else round(now - created, 1),
            }
        try:
            revision, missing, gone = self.catalog_lag()
        except LookalikeError as exc:
            out["catalog"] = {"error": exc.message}
            return out
        behind = bool(missing or gone)
        lag = (now - index_created) if behind and index_created is not None else 0.0
        indexed = len(self._indexed_ids)
        out["catalog"] = {
            "revision": revision,
            "indexed_revision": self.service.index.manifest.get("catalog_revision"),
            "index_behind": behind,
            "indexed_images": indexed,
            "images_not_indexed": missing,
            "indexed_images_removed": gone,
            "index_lag_seconds_at_most": round(lag, 1),
        }
        out["stale"] = bool(behind and lag > limit)
        # Most of what the index finds is gone from the catalog: searches drop those hits and
        # come back short or empty now, whatever the index's age (a replaced or lost database).
        out["catalog_lost"] = bool(indexed and 2 * gone > indexed)
        return out

    def health(self) -> dict[str, Any]:
        info = self.service.embedder.info
        loaded = self.service.index
        return {
            "model": {"version": info.ref, "variant": info.variant, "dim": info.dim},
            "runtime": {"served_by": info.served_by, "reason": info.reason},
            "index": {
                "version": str(loaded.ref),
                "factory": loaded.manifest.get("factory"),
                "vectors": loaded.index.ntotal,
                "built_at": loaded.manifest.get("created_at"),
            },
            "fallbacks": {
                "embed": [_step_state(s) for s in self.embed_chain.steps[1:]],
                "index": [_step_state(s) for s in self.index_chain.steps[1:]],
            },
        }


def _step_state(step: Step[SearchService]) -> dict[str, Any]:
    return {"step": step.label or step.name, "ready": step.engine is not None, "why": step.why}


def _reused_embedder(reuse: SearchGeneration | None, model_ref: str) -> Embedder | None:
    # Same immutable version, already loaded and checked: keep it (an index-only promote then
    # costs one index load, not a model load).
    if reuse is not None and reuse.service.embedder.info.ref == model_ref:
        return reuse.service.embedder
    return None


def _torch_fallback(
    reuse: SearchGeneration | None,
    embedder: Embedder,
    models: Registry,
    primary: SearchService,
    *,
    wanted: bool,
) -> tuple[SearchService | None, str | None]:
    """The same model on torch CPU, over the same index, or why there is none."""
    info = embedder.info
    if info.served_by == "torch-cpu":
        return None, None
    if reuse is not None and reuse.torch is not None and reuse.model_version == info.ref:
        torch_embedder = reuse.torch.embedder
    else:
        if not wanted:
            return None, "torch-cpu fallback is off (LOOKALIKE_SEARCH__TORCH_FALLBACK=false)"
        if importlib.util.find_spec("torch") is None:
            return None, "torch-cpu fallback: torch is not installed"
        try:
            torch_embedder = load_embedder(models, info.ref, runtime="torch-cpu")
        except Exception as exc:  # noqa: BLE001 - the reason is reported instead
            return None, f"torch-cpu could not load: {short_reason(exc, 200)}"
        log.info("loaded torch-cpu fallback for %s", info.ref)
    service = SearchService(primary.catalog, torch_embedder, primary.index, crops=primary.crops)
    return service, None


def _previous_index(
    indexes: Registry, primary: SearchService
) -> tuple[SearchService | None, str | None]:
    """The index's ``previous`` version, when it was built with the same model."""
    name = primary.index.ref.name
    try:
        ref = indexes.resolve(Ref(name, "previous"))
        if ref == primary.index.ref:
            raise NotFound(f"{ref} is already the index being served")
        loaded = load_registry_index(indexes, ref)
        check_pair(loaded, primary.embedder.info.ref)
    except Exception as exc:  # noqa: BLE001
        return None, f"{name}:previous could not serve: {short_reason(exc, 200)}"
    service = SearchService(primary.catalog, primary.embedder, loaded, crops=primary.crops)
    log.info("loaded index fallback %s", ref)
    return service, None
