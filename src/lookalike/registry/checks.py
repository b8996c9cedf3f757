"""Check results for an artifact, and the checks that need nothing but the registry.

A promotion gate is a list of :class:`CheckResult` (name, passed, figures, message) gathered in a
:class:`CheckReport`; the report goes into the version's manifest under ``"checks"`` so that a
manifest says what its artifact was held to. The checks that need a model or an index to run
(load, output, golden recall, metric, latency) live in ``lookalike.search.gates``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.core.errors import LookalikeError
from lookalike.registry.store import Ref, Registry

__all__ = [
    "CheckReport",
    "CheckResult",
    "check_checksums",
    "latency_figures",
    "record_report",
]


@dataclass(frozen=True)
class CheckResult:
    """One check: ``figures`` are the measured numbers, ``message`` says why it failed or passed."""

    name: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "message": self.message, "figures": self.figures}


@dataclass
class CheckReport:
    """Every check run on ``ref``; ``passed`` only when each one passed."""

    ref: str
    results: list[CheckResult] = field(default_factory=list)
    checked_at: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def add(self, result: CheckResult) -> CheckResult:
        self.results.append(result)
        return result

    def get(self, name: str) -> CheckResult | None:
        return next((r for r in self.results if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"ref", "passed", "checked_at", "results": {name: {...}}}``."""
        return {
            "ref": self.ref,
            "passed": self.passed,
            "checked_at": self.checked_at,
            "results": {r.name: r.to_dict() for r in self.results},
        }


def check_checksums(registry: Registry, ref: Ref | str) -> CheckResult:
    """Every file listed in the manifest exists and has the sha256 the manifest records."""
    try:
        resolved = registry.resolve(ref)
        problems = registry.verify(resolved)
        files = len(registry.manifest(resolved).get("files", {}))
    except LookalikeError as exc:
        return CheckResult("checksums", False, {}, exc.message)
    if problems:
        return CheckResult(
            "checksums", False, {"files": files, "problems": problems}, "; ".join(problems)
        )
    return CheckResult("checksums", True, {"files": files}, f"{files} files match the manifest")


def latency_figures(samples_ms: Iterable[float]) -> dict[str, float]:
    """``{"runs", "median_ms", "p95_ms", "max_ms"}`` of a list of timings in milliseconds."""
    arr = np.asarray(list(samples_ms), dtype=np.float64)
    if arr.size == 0:
        return {"runs": 0}
    return {
        "runs": int(arr.size),
        "median_ms": round(float(np.median(arr)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "max_ms": round(float(arr.max()), 3),
    }


def record_report(registry: Registry, report: CheckReport, **extra: Any) -> bool:
    """Write ``report`` into the manifest of ``report.ref`` under ``"checks"``.

    Returns False (and writes nothing) when the manifest itself cannot be read or written, e.g.
    for a version whose folder was damaged: the report is still printed by the caller.
    """
    try:
        registry.update_manifest(Ref.parse(report.ref), checks=report.to_dict(), **extra)
    except (LookalikeError, OSError):
        return False
    return True
