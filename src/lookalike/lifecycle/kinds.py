"""Model kinds: what the lifecycle needs to know about one family of models.

A kind (keyed by the manifest's ``task``) is one product's contract with the serving layer:

- ``roles``: the artifacts it is made of, each in its own registry (search: ``model`` in
  ``models/`` and ``index`` in ``index/``);
- :meth:`Kind.check`: the deploy checks of one artifact, each recorded in its manifest; metric
  checks go through :func:`lookalike.lifecycle.checks.against_production` with the kind's
  declared :meth:`Kind.metric_gates` (direction + tolerance);
- :meth:`Kind.release`: which versions serve together under an alias — a **release**. Search's
  release is anchored on the index: the index alias plus the embedder it was built with, so a
  promoted model waits for its index and a restart in the middle of a deploy keeps serving the
  last pair that was promoted together;
- :meth:`Kind.load`: load a release into a :class:`Generation` (what requests run on), with its
  fallback steps loaded too; a generation reports what ``/health`` and ``/metrics`` show.

Kinds are registered explicitly (:class:`KindRegistry`), by the composition root, never at import
time. A new product adds one kind module, its trainer and its router: no lifecycle code changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from lookalike.core.errors import ConfigError, NotFound
from lookalike.core.settings import Settings
from lookalike.lifecycle.checks import MetricGate
from lookalike.lifecycle.fallback import Chain, FallbackHook, StepPools
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckReport

__all__ = ["Generation", "Kind", "KindRegistry", "LoadContext", "Release"]


@dataclass(frozen=True)
class Release:
    """Versions that serve together: ``members`` maps each role to a resolved ``name:version``.

    ``alias`` is the alias it was resolved from; ``notes`` say why it is what it is (e.g. a
    promoted model still waiting for an index built with it).
    """

    product: str
    alias: str
    members: dict[str, Ref]
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return " + ".join(str(ref) for ref in self.members.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "members": {role: str(ref) for role, ref in self.members.items()},
            "notes": list(self.notes),
        }


@dataclass
class LoadContext:
    """What a kind's :meth:`Kind.load` may use: shared pools, the fallback hook, the previous
    generation (to reuse an already-loaded, immutable artifact) and shared handles."""

    settings: Settings
    pools: StepPools
    on_fallback: FallbackHook | None = None
    reuse: Generation | None = None
    shared: dict[str, Any] = field(default_factory=dict)


class Generation(Protocol):
    """One loaded release of a product; swapped as a whole on reload."""

    release: Release

    @property
    def versions(self) -> dict[str, str]:
        """role -> name:version actually answering (for responses, logs and metrics)."""
        ...

    @property
    def served_by(self) -> str:
        """The runtime path of the primary step (e.g. ``onnx-cpu``)."""
        ...

    def health(self) -> dict[str, Any]:
        """What /health shows for this product."""
        ...

    def fallback_chains(self) -> dict[str, Chain[Any]]:
        """Each stage's chain of steps (the contract test runs them with a failing primary)."""
        ...

    def set_fallback_hook(self, hook: FallbackHook | None) -> None: ...

    def close(self) -> None: ...


class Kind(ABC):
    """One family of models; see the module docstring. Subclasses set the class variables."""

    task: ClassVar[str]
    product: ClassVar[str]
    roles: ClassVar[tuple[str, ...]]
    # The checks of each role, in order: a report holds exactly these names.
    check_names: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def metric_gates(self, role: str) -> tuple[MetricGate, ...]:
        """The metric gates ``role``'s checks apply against production (direction, tolerance)."""
        return ()

    # -- artifacts -----------------------------------------------------------------------------
    @abstractmethod
    def registry(self, role: str) -> Registry:
        """The registry holding ``role``'s artifacts."""

    @abstractmethod
    def artifact_name(self, role: str) -> str:
        """The registry name of ``role``'s artifact (e.g. ``effnet_lite0``)."""

    def role_of(self, registry_kind: str, name: str) -> str | None:
        """The role whose artifacts are ``name`` in a registry of ``registry_kind``."""
        for role in self.roles:
            if self.registry(role).kind == registry_kind and self.artifact_name(role) == name:
                return role
        return None

    def watch_key(self) -> tuple:
        """Everything whose change means the served release may have changed (alias files)."""
        return tuple(
            (role, tuple(sorted(self.registry(role).aliases(self.artifact_name(role)).items())))
            for role in self.roles
        )

    # -- checks, releases, loading -------------------------------------------------------------
    @abstractmethod
    def check(self, role: str, ref: Ref, **options: Any) -> CheckReport:
        """Run (and record in the manifest) every deploy check of ``role``'s version ``ref``."""

    @abstractmethod
    def release(self, alias: str) -> Release:
        """The release served under ``alias`` (production / previous); NotFound when none."""

    @abstractmethod
    def load(self, release: Release, context: LoadContext) -> Generation:
        """Load ``release`` (and its fallback steps) and check it can answer; raise if not."""

    def rollback_with(self, role: str, moved_from: Ref) -> list[str]:
        """Other roles that must roll back when ``role`` rolls back from ``moved_from``."""
        return []

    def after_promote(self, role: str, ref: Ref) -> list[str]:
        """Notes for the operator after ``role`` became ``ref`` (e.g. what must follow)."""
        return []


class KindRegistry:
    """The kinds one process serves, keyed by task and by product (registered explicitly)."""

    def __init__(self) -> None:
        self._by_task: dict[str, Kind] = {}

    def register(self, kind: Kind) -> Kind:
        if kind.task in self._by_task:
            raise ConfigError(f"a kind for task {kind.task!r} is already registered")
        if any(k.product == kind.product for k in self._by_task.values()):
            raise ConfigError(f"product {kind.product!r} already has a kind")
        self._by_task[kind.task] = kind
        return kind

    def __iter__(self) -> Iterator[Kind]:
        return iter(self._by_task.values())

    def __len__(self) -> int:
        return len(self._by_task)

    def for_task(self, task: str) -> Kind:
        try:
            return self._by_task[task]
        except KeyError:
            known = ", ".join(sorted(self._by_task)) or "none"
            raise NotFound(f"no model kind for task {task!r} (known: {known})") from None

    def for_product(self, product: str) -> Kind:
        for kind in self._by_task.values():
            if kind.product == product:
                return kind
        raise NotFound(f"no product {product!r}")

    def owner(self, registry_kind: str, name: str) -> tuple[Kind, str]:
        """The kind and role that own artifact ``name`` of a ``registry_kind`` registry."""
        for kind in self._by_task.values():
            role = kind.role_of(registry_kind, name)
            if role is not None:
                return kind, role
        raise NotFound(f"no product serves {registry_kind} {name!r}")
