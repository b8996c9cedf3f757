"""The one promote path, and the one rollback: used by the CLI, the refresh job and build-default.

``promote(kind, role, ref)`` runs the kind's checks on ``ref`` (recorded in its manifest) and moves
``production`` only when every check passed. ``force=True`` promotes anyway; the failed checks are
recorded in the manifest (``forced_promotion``) and logged as a warning. Nothing becomes
production any other way.

``rollback(kind, role)`` moves ``role`` back to ``previous`` and, in the same step, every role
that must move with it (search: the index built with the model being rolled back), so the served
release is again one that was promoted together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lookalike.core.errors import LookalikeError, NotFound
from lookalike.lifecycle.kinds import Kind, Release
from lookalike.registry import Ref
from lookalike.registry.checks import CheckReport

__all__ = ["PromoteOutcome", "RollbackOutcome", "promote", "rollback"]

log = logging.getLogger("lookalike.lifecycle")


@dataclass
class PromoteOutcome:
    """``status``: promoted | forced | refused | already (``ref`` already was production)."""

    status: str
    ref: Ref
    report: CheckReport | None
    aliases: dict[str, str] = field(default_factory=dict)
    production_before: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.status in ("promoted", "forced")

    @property
    def failed_checks(self) -> list[str]:
        return [] if self.report is None else [r.name for r in self.report.failed]


@dataclass
class RollbackOutcome:
    moved: dict[str, tuple[str, str]]  # role -> (from name:version, to name:version)
    release: Release | None
    notes: list[str] = field(default_factory=list)


def promote(
    kind: Kind,
    role: str,
    ref: Ref | str,
    *,
    force: bool = False,
    check_options: dict[str, Any] | None = None,
    on_report: Callable[[CheckReport], None] | None = None,
) -> PromoteOutcome:
    """Check ``ref`` (a ``role`` artifact of ``kind``) and make it production if it passes.

    Raises NotFound when ``ref`` does not exist. ``on_report`` sees the check report before the
    aliases move (the CLI prints it).
    """
    registry = kind.registry(role)
    resolved = registry.resolve(Ref.parse(str(ref), default_version="latest"))
    before = registry.aliases(resolved.name).get("production")
    before_text = f"{resolved.name}:{before}" if before else None
    if before == resolved.version:
        return PromoteOutcome(
            "already", resolved, None, registry.aliases(resolved.name), before_text
        )
    report = kind.check(role, resolved, **(check_options or {}))
    if on_report is not None:
        on_report(report)
    if not report.passed and not force:
        failed = ", ".join(r.name for r in report.failed)
        log.warning("refused to promote %s: failed %s", resolved, failed)
        return PromoteOutcome(
            "refused", resolved, report, registry.aliases(resolved.name), before_text
        )
    status = "promoted"
    if not report.passed:
        failed = ", ".join(r.name for r in report.failed)
        status = "forced"
        log.warning("FORCED promotion of %s despite failed checks: %s", resolved, failed)
        registry.update_manifest(
            resolved, forced_promotion={"failed": failed, "at": report.checked_at}
        )
    aliases = registry.promote(resolved)  # under the registry's lock on the alias file
    log.info("%s %s is production (was %s)", kind.product, resolved, before_text)
    notes = kind.after_promote(role, resolved)
    return PromoteOutcome(status, resolved, report, aliases, before_text, notes)


def rollback(kind: Kind, role: str, name: str | None = None) -> RollbackOutcome:
    """Move ``role`` back to previous, and with it every role the kind says must follow."""
    name = name or kind.artifact_name(role)
    registry = kind.registry(role)
    current = registry.aliases(name)
    if "previous" not in current:
        raise NotFound(f"{registry.kind} {name!r} has no previous version to roll back to")
    moved_from = Ref(name, current["production"]) if "production" in current else None
    followers = kind.rollback_with(role, moved_from) if moved_from is not None else []
    moved: dict[str, tuple[str, str]] = {}
    for r in [role, *followers]:
        reg = kind.registry(r)
        art = name if r == role else kind.artifact_name(r)
        before = reg.aliases(art).get("production", "none")
        after = reg.rollback(art)  # under the registry's lock on the alias file
        moved[r] = (f"{art}:{before}", f"{art}:{after['production']}")
        log.info("rolled back %s %s -> %s", r, moved[r][0], moved[r][1])
    try:
        release: Release | None = kind.release("production")
    except LookalikeError:
        release = None
    return RollbackOutcome(moved, release, list(release.notes) if release else [])
