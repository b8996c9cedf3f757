"""What one product serves in one process, and how it follows the registry.

A :class:`ProductSlot` holds the product's current :class:`~lookalike.lifecycle.kinds.Generation`.
:meth:`ProductSlot.load` loads the ``production`` release; when that fails its load checks it
loads ``previous`` and says degraded; when nothing loads the slot says why (routes answer 503
with the fix, /health stays up). :meth:`ProductSlot.reload_if_changed` is what each worker's
watcher calls every few seconds: when the kind's alias files changed it loads the new release in
the calling thread, with the same checks, and swaps the generation in one assignment. Requests in
flight finish on the generation they took. A release that cannot load leaves the old one serving
(degraded, with the reason) and is not retried until the aliases change again.

Loading never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lookalike.core.errors import LookalikeError, short_reason
from lookalike.lifecycle.checks import recorded_metrics
from lookalike.lifecycle.kinds import Generation, Kind, LoadContext, Release

__all__ = ["ProductSlot", "release_metrics"]

log = logging.getLogger("lookalike.lifecycle")
ALIASES = ("production", "previous")


def release_metrics(kind: Kind, release: Release) -> list[dict[str, Any]]:
    """What each member of ``release`` was measured at by its checks (``recorded_metrics``),
    with the artifact it belongs to; a manifest that cannot be read adds nothing."""
    out: list[dict[str, Any]] = []
    for role, ref in release.members.items():
        try:
            manifest = kind.registry(role).manifest(ref)
        except (OSError, ValueError, LookalikeError):
            continue
        out += [{"artifact": str(ref), **m} for m in recorded_metrics(manifest)]
    return out


@dataclass
class ProductSlot:
    kind: Kind
    context: LoadContext
    generation: Generation | None = None
    problems: list[str] = field(default_factory=list)
    degraded: bool = False
    loaded_at: float = field(default_factory=time.time)
    reloads: int = 0
    # What the served release was measured at by its checks (read once per installed release).
    held_to: list[dict[str, Any]] = field(default_factory=list)
    # The alias files the current generation was loaded for (None: not read yet).
    seen: tuple | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def product(self) -> str:
        return self.kind.product

    @property
    def ready(self) -> bool:
        return self.generation is not None

    @property
    def status(self) -> str:
        if self.generation is None:
            return "unavailable"
        return "degraded" if self.degraded else "ok"

    def _key(self) -> tuple | None:
        try:
            return self.kind.watch_key()
        except (OSError, ValueError, LookalikeError) as exc:
            log.warning("%s: could not read registry aliases: %s", self.product, exc)
            return None

    def _load_release(self) -> tuple[Generation | None, list[str], bool]:
        """Load production, else previous: (generation, problems, fell back)."""
        problems: list[str] = []
        for alias in ALIASES:
            release: Release | None = None
            try:
                release = self.kind.release(alias)
                self.context.reuse = self.generation
                generation = self.kind.load(release, self.context)
            except LookalikeError as exc:
                what = f" ({release.describe()})" if release is not None else ""
                problems.append(f"{self.product}:{alias}{what}: {exc.message}")
                continue
            except Exception as exc:  # noqa: BLE001 - engines raise their own types
                what = f" ({release.describe()})" if release is not None else ""
                problems.append(f"{self.product}:{alias}{what}: {short_reason(exc, 300)}")
                continue
            finally:
                self.context.reuse = None
            health = generation.health()
            fell_back = alias != "production" or bool(health.get("fell_back"))
            problems += list(health.get("problems", []))
            # A damaged aliases.json serves what is still valid, and says so.
            broken = self._alias_problems()
            problems += broken
            return generation, problems, fell_back or bool(broken)
        return None, problems, True

    def _alias_problems(self) -> list[str]:
        out = []
        for role in self.kind.roles:
            registry = self.kind.registry(role)
            name = self.kind.artifact_name(role)
            for problem in registry.alias_problems(name):
                out.append(
                    f"{registry.kind} {name}: {problem} — run `lookalike registry repair {name}`"
                )
        return out

    def install(self, generation: Generation) -> None:
        """Swap in a generation: one reference assignment; old requests finish on theirs."""
        generation.set_fallback_hook(self.context.on_fallback)
        self.held_to = release_metrics(self.kind, generation.release)
        self.generation = generation
        self.loaded_at = time.time()

    def load(self) -> ProductSlot:
        """First load (at start-up); never raises."""
        self.seen = self._key()
        generation, problems, fell_back = self._load_release()
        self.problems = problems
        if generation is None:
            log.error("%s not ready: %s", self.product, "; ".join(problems))
            return self
        self.install(generation)
        self.degraded = fell_back
        self._log("serving")
        return self

    def reload_if_changed(self) -> bool:
        """Reload when the kind's aliases changed since the last load; True when swapped.

        Blocking (loads models): run it in a thread.
        """
        key = self._key()
        if key is None or key == self.seen:
            return False
        with self._lock:
            if key == self.seen:
                return False
            if self.seen is None:  # first look at a slot built elsewhere: adopt, do not reload
                self.seen = key
                return False
            current = self.generation
            generation, problems, fell_back = self._load_release()
            self.seen = key
            if generation is not None and current is not None and _vanished(current, generation):
                # "never built" after a release served: its files went away (a volume not
                # mounted, a folder deleted), not a decision: nothing unpromotes to nothing
                problems.append(
                    f"the registry no longer holds any {self.product} release (was its folder "
                    "removed?)"
                )
                generation.close()
                generation = None
            if generation is None:
                if current is not None:
                    problems.append(
                        f"kept serving {current.release.describe()}: the new release could not load"
                    )
                    self.degraded = True
                self.problems = problems
                log.error("%s reload failed: %s", self.product, "; ".join(problems))
                return False
            self.problems = problems
            self.degraded = fell_back
            self.install(generation)
            self.reloads += 1
            self._log("reloaded: serving")
            if current is not None and current is not generation:
                current.close()
            return True

    def health(self) -> dict[str, Any]:
        """The product's part of /health (also for a product that is not ready)."""
        body: dict[str, Any] = {
            "status": self.status,
            "problems": list(self.problems),
            "reloads": self.reloads,
        }
        generation = self.generation
        if generation is not None:
            body["release"] = generation.release.to_dict()
            body["versions"] = generation.versions
            body["served_by"] = generation.served_by
            body["held_to"] = list(self.held_to)
            body.update({k: v for k, v in generation.health().items() if k not in body})
        return body

    def _log(self, verb: str) -> None:
        generation = self.generation
        assert generation is not None
        notes = "; ".join(generation.release.notes)
        log.info(
            "%s %s %s via %s%s%s",
            self.product,
            verb,
            generation.release.describe() or "nothing built",
            generation.served_by,
            f" ({notes})" if notes else "",
            " — DEGRADED: " + "; ".join(self.problems) if self.degraded else "",
        )


def _vanished(current: Generation, new: Generation) -> bool:
    """A served release followed by the "nothing built yet" one (no members)."""
    return bool(current.release.members) and not new.release.members
