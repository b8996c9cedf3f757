"""Fallback chains: run a step under a time budget, hand over to the next when it fails.

A :class:`Chain` is an ordered list of :class:`Step` for one stage of a product's path (search:
``embed`` = primary runtime → torch on CPU; ``index`` = production → previous). A step that
raises or exceeds ``budget_s`` hands over to the next one; a late result is discarded. A step
whose engine could not be loaded is skipped with its reason. When every step fails the chain
raises :class:`~lookalike.core.errors.Unavailable` (503) naming each reason and the command that
fixes it — never a 500 because a model failed. A step that raises ``Unavailable`` itself (a
shared dependency such as the database is down) ends the chain with that answer: every other
step would fail the same way.

Each step runs in its own small thread pool (:class:`StepPools`) so that a hung primary cannot
starve its fallback. Fallback engines are loaded when the product's generation loads, never
inside a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Generic, TypeVar

from lookalike.core.errors import Unavailable, short_reason

__all__ = ["Chain", "FallbackHook", "Step", "StepFailed", "StepPools"]

log = logging.getLogger("lookalike.lifecycle")
T = TypeVar("T")
E = TypeVar("E")
# (product, stage, failed step, "timeout" | "error") -> None; the metrics count fallbacks with it
FallbackHook = Callable[[str, str, str, str], None]


class StepPools:
    """One thread pool per step name, shared by every generation of a worker."""

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


class StepFailed(Exception):
    def __init__(self, step: str, kind: str, why: str) -> None:
        super().__init__(f"{step} {why}")
        self.step = step
        self.kind = kind
        self.why = why


@dataclass(frozen=True)
class Step(Generic[E]):
    """One way to answer: ``engine`` is what a call runs on (None: not available, see ``why``).

    ``label`` is how the step names itself in reasons (default: its name).
    """

    name: str
    engine: E | None
    why: str | None = None
    label: str | None = None


class Chain(Generic[E]):
    """The ordered steps of one stage; :meth:`run` returns the first answer that comes in time."""

    def __init__(
        self,
        product: str,
        stage: str,
        steps: Sequence[Step[E]],
        *,
        pools: StepPools,
        budget_s: float,
        fix: str,
        on_fallback: FallbackHook | None = None,
    ) -> None:
        self.product = product
        self.stage = stage
        self.steps = list(steps)
        self.pools = pools
        self.budget_s = budget_s
        self.fix = fix
        self.on_fallback = on_fallback

    @property
    def primary(self) -> E:
        engine = self.steps[0].engine
        assert engine is not None, "a chain's first step is always loaded"
        return engine

    def _call(self, step: str, fn: Callable[[], T]) -> T:
        future = self.pools.get(step).submit(fn)
        try:
            return future.result(timeout=self.budget_s)
        except FutureTimeout:
            future.cancel()  # if it already started it runs on; its result is discarded
            ms = self.budget_s * 1000
            raise StepFailed(step, "timeout", f"timed out after {ms:.0f} ms") from None
        except Unavailable:
            # A dependency every step shares (the database) is down: the next step would fail
            # the same way, so the answer is that 503, not a fallback.
            raise
        except Exception as exc:  # noqa: BLE001 - a failed step hands over to the next
            raise StepFailed(step, "error", f"failed: {short_reason(exc, 200)}") from exc

    def run(self, fn: Callable[[E], T]) -> tuple[T, E, list[str]]:
        """Run ``fn(engine)`` step by step: (its result, the engine that answered, reasons).

        ``reasons`` names every step that was skipped or failed before the answer.
        """
        reasons: list[str] = []
        for step in self.steps:
            engine = step.engine
            label = step.label or step.name
            if engine is None:
                reasons.append(step.why or f"{label} unavailable")
                continue
            try:
                return self._call(step.name, lambda e=engine: fn(e)), engine, reasons
            except StepFailed as failed:
                log.warning("%s %s step %s %s", self.product, self.stage, label, failed.why)
                if self.on_fallback is not None:
                    self.on_fallback(self.product, self.stage, failed.step, failed.kind)
                reasons.append(f"{label} {failed.why}")
        raise Unavailable(
            f"{self.product} cannot answer now, every {self.stage} step failed: "
            + "; ".join(reasons)
            + f" — retry shortly; if it persists run `{self.fix}`"
        )
