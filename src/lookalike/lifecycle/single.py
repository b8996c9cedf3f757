"""The common shape of a product served from one artifact: :class:`SingleModelKind`.

Most products (price, fit, recommendations, the post pre-filter, forecasts) are one folder in
``models/NAME/N/`` under one role, ``model``. What differs is how a folder loads, what its
output check and metric are, and how long one answer takes; what is the same is written here
once:

- the registry and the artifact name of the one role;
- :meth:`SingleModelKind.check`: resolve the ref, verify checksums, then run the kind's
  :meth:`~SingleModelKind.check_steps` (a generator of results: load, output, metric, latency),
  stopping at a failed ``load`` or ``output`` or at a :class:`CheckStop`;
- :meth:`SingleModelKind.finish`: a report that stopped early still names every check (the
  ones not run fail with the reason), and is recorded in the manifest;
- :func:`load_failed` and :func:`output_result`: the load and output results every kind writes;
- :meth:`SingleModelKind.metric_check`: the candidate's metric against production's on the same
  held-out data, through :func:`lookalike.lifecycle.checks.against_production` (the candidate
  compared with itself when it is production; a production that cannot be evaluated never blocks
  its fix);
- :meth:`SingleModelKind.release`: ``production`` of a product never promoted is an empty
  release whose note names the command that builds one (an optional product, not built yet);
- :func:`latency_check`: p95 of one answer after a warm-up, against a budget;
- :class:`Unbuilt`: the generation of a product that was never built (503 naming the fix);
- :class:`ChainedGeneration`: versions, fallback chains and their hook of a loaded release.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from lookalike.core.errors import InvalidInput, LookalikeError, NotFound, Unavailable, short_reason
from lookalike.lifecycle.checks import MetricGate, against_production
from lookalike.lifecycle.fallback import Chain, FallbackHook, Step
from lookalike.lifecycle.kinds import Kind, LoadContext, Release
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import (
    CheckReport,
    CheckResult,
    check_checksums,
    latency_figures,
    record_report,
)

__all__ = [
    "ChainedGeneration",
    "CheckStop",
    "SingleModelKind",
    "Unbuilt",
    "latency_check",
    "load_failed",
    "output_result",
    "problems_of",
    "product_chain",
]

ROLE = "model"
# A failed one of these stops the checks: nothing after them can be measured.
STOPPING = {"load": "the model did not load", "output": "the output check failed"}


class CheckStop(Exception):  # noqa: N818 - a control signal of check_steps, not an error
    """Raised by ``check_steps``: stop the checks here, the ones not run failing with ``why``;
    ``result`` (a failed check), when given, is added first."""

    def __init__(self, why: str, result: CheckResult | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.result = result


def load_failed(exc: BaseException) -> CheckResult:
    """The failed ``load`` result of an artifact that raised ``exc`` while loading."""
    why = exc.message if isinstance(exc, LookalikeError) else short_reason(exc, 200)
    return CheckResult("load", False, {}, why)


def output_result(problems: list[str], figures: dict[str, Any], passed_msg: str) -> CheckResult:
    """The ``output`` result: passed when there are no ``problems`` (the first five shown)."""
    return CheckResult("output", not problems, figures, "; ".join(problems[:5]) or passed_msg)


def problems_of(answer: Callable[[], list[str]], what: str) -> list[str]:
    """``answer()``'s problems; an answer that raises is itself the problem."""
    try:
        return answer()
    except Exception as exc:  # noqa: BLE001 - a model that raises fails its output check
        return [f"{what} failed: {short_reason(exc)}"]


def latency_check(
    answer: Callable[[int], object], *, runs: int, budget_ms: float, what: str, warmup: int = 2
) -> CheckResult:
    """Time ``answer(i)`` for ``i`` in ``0 .. warmup + runs - 1``; pass when p95 ≤ budget."""
    samples = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        answer(i)
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1000.0)
    figures = {**latency_figures(samples), "budget_p95_ms": budget_ms}
    p95 = figures.get("p95_ms", float("inf"))
    msg = f"p95 {p95:.2f} ms for {what} (budget {budget_ms:g} ms)"
    ok = p95 <= budget_ms
    return CheckResult("latency", ok, figures, msg if ok else msg + ": too slow")


class SingleModelKind(Kind):
    """A kind of one role, ``model``, in ``models/``; subclasses set ``artifact`` and
    ``build_fix`` and write ``check`` and ``load``."""

    roles: ClassVar[tuple[str, ...]] = (ROLE,)
    artifact: ClassVar[str]  # the registry name, e.g. "rental_price"
    build_fix: ClassVar[str]  # the command that builds one, e.g. "lookalike price build"

    def registry(self, role: str) -> Registry:
        if role != ROLE:
            raise InvalidInput(f"{self.product} has no role {role!r} (roles: {ROLE})")
        return Registry(self.settings.models_dir, "model", fix=self.build_fix)

    def artifact_name(self, role: str) -> str:
        return self.artifact

    # -- checks ----------------------------------------------------------------------------------
    def check(self, role: str, ref: Ref, **options: Any) -> CheckReport:
        registry = self.registry(role)
        resolved = registry.resolve(Ref.parse(str(ref), default_version="latest"))
        report = CheckReport(str(resolved))
        report.add(check_checksums(registry, resolved))
        try:
            for result in self.check_steps(registry, resolved, **options):
                report.add(result)
                if not result.passed and result.name in STOPPING:
                    return self.finish(registry, report, STOPPING[result.name])
        except CheckStop as stop:
            if stop.result is not None:
                report.add(stop.result)
            return self.finish(registry, report, stop.why)
        record_report(registry, report)
        return report

    def check_steps(self, registry: Registry, ref: Ref, **options: Any) -> Iterator[CheckResult]:
        """The kind's checks after the checksums, in order (see :meth:`check`)."""
        raise NotImplementedError

    def finish(self, registry: Registry, report: CheckReport, why: str) -> CheckReport:
        """Fail every check not yet in ``report`` ("not run: why") and record the report."""
        done = {r.name for r in report.results}
        for name in self.check_names.get(ROLE, ()):
            if name not in done:
                report.add(CheckResult(name, False, {}, f"not run: {why}"))
        record_report(registry, report)
        return report

    def metric_check(
        self,
        registry: Registry,
        ref: Ref,
        candidate: float,
        production_metric: Callable[[Ref], float],
        *,
        source: str,
        gate: MetricGate | None = None,
    ) -> CheckResult:
        """``candidate`` (the metric of ``ref``) against ``production_metric(production ref)``
        on the same data, through ``gate`` (default: the role's first metric gate)."""
        gate = gate or self.metric_gates(ROLE)[0]
        try:
            prod_ref = registry.resolve(Ref(ref.name, "production"))
        except LookalikeError:
            return against_production(gate, candidate, None, source=source)
        if prod_ref == ref:
            return against_production(
                gate, candidate, candidate, production_ref=str(prod_ref), source=source,
                note="itself",
            )  # fmt: skip
        try:
            production = production_metric(prod_ref)
        except Exception as exc:  # noqa: BLE001 - a broken production must not block its fix
            return against_production(
                gate, candidate, None, production_ref=str(prod_ref), source=source,
                note=f"production {prod_ref} could not be evaluated: {short_reason(exc)}",
            )  # fmt: skip
        return against_production(
            gate, candidate, production, production_ref=str(prod_ref), source=source
        )

    # -- releases --------------------------------------------------------------------------------
    def release(self, alias: str) -> Release:
        registry = self.registry(ROLE)
        try:
            ref = registry.resolve(Ref(self.artifact, alias))
        except NotFound:
            if (
                alias == "production"
                and not registry.aliases(self.artifact)
                and not registry.alias_problems(self.artifact)
            ):
                # never promoted: an optional product that is simply not built yet
                note = f"no {self.product} model yet — run `{self.build_fix}`"
                return Release(self.product, alias, {}, (note,))
            raise
        return Release(self.product, alias, {ROLE: ref})


class Unbuilt:
    """What a product's slot holds while none of its models was ever promoted.

    The product is optional: until someone runs ``build_fix`` the server (and search) stays
    healthy, /health says ``built: false`` with the command, and the product's routes answer 503
    naming it (:meth:`unavailable`). Subclasses add the product's answering methods, each raising
    ``self.unavailable()``.
    """

    product: ClassVar[str]
    build_fix: ClassVar[str]

    def __init__(self, release: Release) -> None:
        self.release = release

    def unavailable(self) -> Unavailable:
        return Unavailable(f"no {self.product} model is promoted yet — run `{self.build_fix}`")

    @property
    def versions(self) -> dict[str, str]:
        return {}

    @property
    def served_by(self) -> str:
        return "none"

    def fallback_chains(self) -> dict[str, Chain[Any]]:
        return {}

    def set_fallback_hook(self, hook: FallbackHook | None) -> None:
        """Nothing answers, so nothing falls back."""

    def close(self) -> None:
        """Nothing loaded."""

    def health(self) -> dict[str, Any]:
        return {
            "built": False,
            "fix": f"run `{self.build_fix}` to build and promote a {self.product} model",
        }


def product_chain(
    product: str,
    stage: str,
    steps: list[Step[Any]],
    context: LoadContext,
    fix: str,
    *,
    min_budget_s: float = 0.0,
) -> Chain[Any]:
    """A stage's fallback chain on the server's step pools, step budget (at least
    ``min_budget_s``) and fallback hook; ``fix`` is the command named when every step fails."""
    return Chain(
        product,
        stage,
        steps,
        pools=context.pools,
        budget_s=max(context.settings.serving.step_budget_ms / 1000, min_budget_s),
        fix=fix,
        on_fallback=context.on_fallback,
    )


class ChainedGeneration:
    """The common part of a one-artifact product's loaded release: each stage a fallback chain.

    A subclass sets ``release``, ``version`` (the model's ``name:version``) and ``chains``
    (stage → :class:`Chain`) in its constructor and adds ``served_by``, ``health`` and its
    answering methods.
    """

    release: Release
    version: str
    chains: dict[str, Chain[Any]]

    @property
    def versions(self) -> dict[str, str]:
        return {ROLE: self.version}

    def fallback_chains(self) -> dict[str, Chain[Any]]:
        return dict(self.chains)

    def set_fallback_hook(self, hook: FallbackHook | None) -> None:
        for chain in self.chains.values():
            chain.on_fallback = hook

    def health_body(
        self,
        model: dict[str, Any],
        fallbacks: dict[str, Any],
        *,
        fell_back: bool = False,
        problems: list[str] | None = None,
    ) -> dict[str, Any]:
        """The product's part of /health in the shape every kind keeps: ``built``, ``model``
        (its ``version`` first), ``fallbacks``; ``fell_back`` (the slot says degraded) and
        ``problems`` only when there are any."""
        body: dict[str, Any] = {
            "built": True,
            "model": {"version": self.version, **model},
            "fallbacks": fallbacks,
        }
        if fell_back:
            body["fell_back"] = True
        if problems:
            body["problems"] = list(problems)
        return body

    def close(self) -> None:
        """Nothing to release: arrays and sessions are freed with the last request using them."""
