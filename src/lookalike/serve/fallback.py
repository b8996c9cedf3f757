"""The search route's fallback chain, each step under a time budget.

    embed:  the primary runtime (what ``load_embedder`` chose)  →  torch on CPU
    index:  the index being served (production)                  →  ``previous``

A step that raises or exceeds ``settings.serving.step_budget_ms`` hands over to the next one; a
late result is discarded. The fallback steps are loaded lazily, on the first failure, and kept
for this generation (one model + index pair). When every step fails the route answers 503 with
the reasons — never 500 because a model failed.

Each step runs in its own small thread pool so that a hung primary cannot starve its fallback.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

import numpy as np
from PIL import Image

from lookalike.core.errors import NotFound, Unavailable, short_reason
from lookalike.core.settings import Settings
from lookalike.embed import load_embedder
from lookalike.registry import Ref, Registry
from lookalike.search import Hit, SearchService
from lookalike.search.crops import QueryCrop
from lookalike.search.indexing import check_pair, load_registry_index
from lookalike.search.service import GarmentGroup

__all__ = ["GuardedResult", "GuardedSearch", "StepPools"]

log = logging.getLogger("lookalike.serve")
T = TypeVar("T")
FallbackHook = Callable[[str, str, str], None]  # (stage, failed step, "timeout" | "error")


class StepPools:
    """One thread pool per fallback step, shared by every generation of a worker."""

    def __init__(self, threads: int) -> None:
        self.threads = max(2, threads)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def get(self, step: str) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(step)
            if pool is None:
                pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"step-{step}")
                self._pools[step] = pool
            return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


class _StepFailed(Exception):
    def __init__(self, step: str, kind: str, why: str) -> None:
        super().__init__(f"{step} {why}")
        self.step = step
        self.kind = kind
        self.why = why


@dataclass(frozen=True)
class GuardedResult:
    hits: list[Hit]
    model_version: str
    index_version: str
    served_by: str
    fallback: str | None
    took_ms: float
    groups: list[GarmentGroup] = field(default_factory=list)
    crop_mode: str = "whole"


def _finite(vector: np.ndarray) -> np.ndarray:
    # The load check caught NaN at start; this catches an engine that goes bad later.
    if not np.all(np.isfinite(vector)):
        raise ValueError("embedding is not finite (NaN or inf)")
    return vector


def _finite_rows(found: tuple[list[QueryCrop], np.ndarray]) -> tuple[list[QueryCrop], np.ndarray]:
    _finite(found[1])
    return found


class GuardedSearch:
    """One generation of search (a SearchService) with its fallback chain.

    Swapped as a whole on reload: a request takes ``state.search`` once and finishes on it.
    """

    def __init__(
        self,
        service: SearchService,
        settings: Settings,
        pools: StepPools,
        on_fallback: FallbackHook | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.pools = pools
        self.on_fallback = on_fallback
        self._lock = threading.Lock()
        self._torch: SearchService | None = None
        self._torch_problem: str | None = None
        self._previous: SearchService | None = None
        self._previous_problem: str | None = None

    @property
    def model_version(self) -> str:
        return self.service.embedder.info.ref

    @property
    def index_version(self) -> str:
        return str(self.service.index.ref)

    @property
    def budget_s(self) -> float:
        return self.settings.serving.step_budget_ms / 1000

    # -- lazily loaded fallbacks ---------------------------------------------------------------
    def _torch_service(self) -> SearchService | None:
        """The same index and crop mode, embedded by torch on CPU (loaded on first need)."""
        with self._lock:
            if self._torch is None and self._torch_problem is None:
                if importlib.util.find_spec("torch") is None:
                    self._torch_problem = "torch is not installed"
                else:
                    try:
                        registry = Registry(self.settings.models_dir, "model")
                        embedder = load_embedder(registry, self.model_version, runtime="torch-cpu")
                        self._torch = SearchService(
                            self.service.catalog,
                            embedder,
                            self.service.index,
                            crops=self.service.crops,
                        )
                        log.warning("loaded torch-cpu fallback for %s", self.model_version)
                    except Exception as exc:  # noqa: BLE001 - the reason is reported instead
                        self._torch_problem = f"torch-cpu could not load: {short_reason(exc, 200)}"
            return self._torch

    def _previous_service(self) -> SearchService | None:
        with self._lock:
            if self._previous is None and self._previous_problem is None:
                registry = Registry(self.settings.index_dir, "index")
                name = self.service.index.ref.name
                try:
                    ref = registry.resolve(Ref(name, "previous"))
                    if ref == self.service.index.ref:
                        raise NotFound(f"{ref} is already the index being served")
                    loaded = load_registry_index(registry, ref)
                    check_pair(loaded, self.model_version)
                    self._previous = SearchService(
                        self.service.catalog,
                        self.service.embedder,
                        loaded,
                        crops=self.service.crops,
                    )
                    log.warning("loaded index fallback %s", ref)
                except Exception as exc:  # noqa: BLE001
                    self._previous_problem = (
                        f"{name}:previous could not load: {short_reason(exc, 200)}"
                    )
            return self._previous

    # -- running steps ---------------------------------------------------------------------------
    def _run(self, step: str, fn: Callable[[], T]) -> T:
        future = self.pools.get(step).submit(fn)
        try:
            return future.result(timeout=self.budget_s)
        except FutureTimeout:
            future.cancel()  # if it already started it runs on; its result is discarded
            budget = self.settings.serving.step_budget_ms
            raise _StepFailed(step, "timeout", f"timed out after {budget:.0f} ms") from None
        except Exception as exc:  # noqa: BLE001 - a failed step hands over to the next
            raise _StepFailed(step, "error", f"failed: {short_reason(exc, 200)}") from exc

    def _note(self, stage: str, failure: _StepFailed) -> None:
        log.warning("%s step %s %s", stage, failure.step, failure.why)
        if self.on_fallback is not None:
            self.on_fallback(stage, failure.step, failure.kind)

    def embed(self, embed: Callable[[SearchService], T]) -> tuple[T, SearchService, list[str]]:
        """Run ``embed(service)`` on the primary, else on the torch-cpu view.

        Returns (its result, the service whose embedder answered, reasons for skipped steps).
        """
        primary = self.service
        served_by = primary.embedder.info.served_by
        reasons: list[str] = []
        try:
            return self._run(served_by, lambda: embed(primary)), primary, reasons
        except _StepFailed as failed:
            self._note("embed", failed)
            reasons.append(str(failed))
        if served_by != "torch-cpu":
            fallback = self._torch_service()
            if fallback is None:
                reasons.append(self._torch_problem or "torch-cpu unavailable")
            else:
                try:
                    return self._run("torch-cpu", lambda: embed(fallback)), fallback, reasons
                except _StepFailed as failed:
                    self._note("embed", failed)
                    reasons.append(str(failed))
        raise Unavailable(
            "search cannot answer now, every embedder failed: "
            + "; ".join(reasons)
            + " — retry shortly; if it persists run `lookalike models rollback`"
        )

    def lookup(self, query: Callable[[SearchService], T]) -> tuple[T, str, list[str]]:
        """Run ``query(service)`` on the production index, else on ``previous``.

        Returns (its result, the index version that answered, reasons for skipped steps).
        """
        reasons: list[str] = []
        for step in ("index:production", "index:previous"):
            service = self.service if step == "index:production" else self._previous_service()
            if service is None:
                reasons.append(self._previous_problem or "no previous index")
                break

            try:
                return self._run(step, partial(query, service)), str(service.index.ref), reasons
            except _StepFailed as failed:
                failed.why = f"{service.index.ref} {failed.why}"
                self._note("index", failed)
                reasons.append(f"index {failed.why}")
        raise Unavailable(
            "search cannot answer now, every index failed: "
            + "; ".join(reasons)
            + " — retry shortly; if it persists run `lookalike index rollback`"
        )

    # -- the two query kinds -----------------------------------------------------------------
    def search_image(
        self,
        image: Image.Image,
        *,
        k: int,
        category: str | None,
        available: bool | None,
        per_garment: bool = False,
        crops: str | None = None,
    ) -> GuardedResult:
        """A shopper's photo: the service's crops are embedded, looked up and merged.

        ``crops`` overrides the service's crop mode; ``per_garment`` turns ``auto`` into
        ``multi`` so that each garment gets its own results.
        """
        started = time.perf_counter()
        mode = crops or self.service.crops
        if per_garment and mode == "auto":
            mode = "multi"
        (regions, vectors), by, why_embed = self.embed(
            lambda s: _finite_rows(s.query_vectors(image, mode))
        )
        (hits, groups), index_version, why_index = self.lookup(
            lambda s: s.search_crops(
                regions,
                vectors,
                k=k,
                category=category,
                available=available,
                per_garment=per_garment,
            )
        )
        result = self._result(hits, index_version, by, why_embed + why_index, started)
        used = "multi" if len(regions) > 1 else regions[0].region if regions else "whole"
        return replace(result, groups=groups, crop_mode=used)

    def similar(
        self, item_id: str, *, k: int, category: str | None, available: bool | None
    ) -> GuardedResult:
        """Items that look like ``item_id``; ``NotFound`` (404) for an unknown item."""
        started = time.perf_counter()
        image = self.service.item_image(item_id)
        vector, by, why_embed = self.embed(lambda s: _finite(s.embedder.embed([image])[0]))
        hits, index_version, why_index = self.lookup(
            lambda s: s.search_vector(
                vector, k=k, category=category, available=available, exclude=(item_id,)
            )
        )
        return self._result(hits, index_version, by, why_embed + why_index, started)

    def _result(
        self,
        hits: list[Hit],
        index_version: str,
        by: SearchService,
        why: list[str],
        started: float,
    ) -> GuardedResult:
        return GuardedResult(
            hits,
            self.model_version,
            index_version,
            by.embedder.info.served_by,
            "; ".join(why) or None,
            round((time.perf_counter() - started) * 1000, 2),
        )
