"""The scheduled refresh: import → data checks → embed changes → index → checks → promote.

``run_refresh(settings, catalog_file=...)`` is what ``lookalike refresh`` runs from cron or any
scheduler. Guarantees:

- one at a time: an exclusive, non-blocking ``flock`` on ``var/refresh.lock``; a second run
  raises :class:`RefreshBusy` naming the pid that holds it (the CLI exits 75, EX_TEMPFAIL);
- safe to kill at any point: the catalog import is one transaction, a new index version is
  written by ``Registry.create`` (a hidden ``.tmp-*`` folder renamed into place), aliases and
  reports are replaced atomically, and the lock dies with the process;
- production changes only when the input passed its data checks and the new index passed
  its checks through the one promote path (``lookalike.lifecycle.promote``, as
  ``lookalike index promote``); otherwise production stays and the report says why.

Every run writes ``var/refresh/<UTC timestamp>.json`` and a ``.txt`` summary beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalog import CatalogStore
from lookalike.core.errors import LookalikeError, NotFound, Unavailable
from lookalike.core.progress import Progress, relabelled
from lookalike.core.settings import Settings
from lookalike.embed import load_embedder
from lookalike.jobs.datachecks import DataCheck, check_input, embedding_drift, scan_input
from lookalike.jobs.events import EventStore
from lookalike.lifecycle import promote
from lookalike.registry import Ref, Registry
from lookalike.registry.store import atomic_write_text
from lookalike.search import build_index, update_index
from lookalike.search.indexing import IDS_FILE
from lookalike.search.kind import SearchKind

__all__ = ["EXIT_BUSY", "RefreshBusy", "RefreshOutcome", "refresh_lock", "run_refresh"]

log = logging.getLogger("lookalike.refresh")
EXIT_BUSY = 75  # EX_TEMPFAIL: a scheduler may simply try again later
EXIT_DATA = 1
EXIT_GATES = 2


class RefreshBusy(Unavailable):
    code = "refresh_running"


@dataclass
class RefreshOutcome:
    """``status`` is promoted, up_to_date, stopped (data checks) or kept (index checks)."""

    status: str
    exit_code: int
    report: dict[str, Any]
    report_path: Path

    @property
    def summary(self) -> str:
        return str(self.report.get("summary", self.status))


@contextlib.contextmanager
def refresh_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` or raise ``RefreshBusy`` at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RefreshBusy(f"another refresh is running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock; so does the process dying


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _fell_back(reason: str) -> bool:
    """True when a CPU step failed: a machine without a GPU skipping CUDA is no fallback."""
    steps = [part.split(" skipped")[0] for part in reason.split("; ") if " skipped" in part]
    return any("cuda" not in step for step in steps)


def _baseline_images(catalog: CatalogStore, n: int) -> list[Path]:
    images = list(catalog.iter_images())
    sample = random.Random(1).sample(images, min(n, len(images)))
    return [catalog.media_path(img) for img in sample]


def _text(report: dict[str, Any]) -> str:
    lines = [f"refresh {report['started_at']}: {report['summary']}"]
    for check in report.get("data_checks", []):
        mark = "ok  " if check["passed"] else "FAIL"
        lines.append(f"  [{mark}] {check['name']}: {check['reason']}")
    if "import" in report:
        imp = report["import"]
        lines.append(
            f"  import: +{imp['items_added']} ~{imp['items_updated']} ={imp['items_unchanged']} "
            f"-{imp['items_removed']} items, {imp['rejected']} rows rejected"
        )
    if "index" in report:
        lines.append(f"  index: {report['index']}")
    for failure in report.get("gate_failures", []):
        lines.append(f"  [FAIL] {failure}")
    lines.append(f"  took {report.get('seconds')} s")
    return "\n".join(lines) + "\n"


def _write_report(settings: Settings, report: dict[str, Any]) -> Path:
    folder = settings.var_dir / "refresh"
    stamp = report["started_at"].replace(":", "").replace("-", "")
    path = folder / f"{stamp}-{report['pid']}.json"
    doc = _jsonable(report)
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True))
    atomic_write_text(path.with_suffix(".txt"), _text(doc))
    return path


def mark_killed_runs(settings: Settings) -> list[dict[str, Any]]:
    """Mark the reports of earlier runs that never finished as ``killed``; return them.

    Call it under the refresh lock: a report still saying ``running`` is then from a run
    that died (kill -9, OOM, power). Each gets the index versions it wrote that no alias
    points at (``orphans``, listed, never deleted) and the temp folders it left are removed.
    """
    indexes = Registry(settings.index_dir, "index")
    name = settings.search.index_name
    killed: list[dict[str, Any]] = []
    for path in sorted((settings.var_dir / "refresh").glob("*.json")):
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(old, dict) or old.get("status") != "running":
            continue
        if old.get("pid") == os.getpid():
            continue
        orphans = [f"{name}:{v}" for v in indexes.unaliased_since(name, old["started_at"])]
        cleaned = indexes.clean_leftovers(name)
        old.update(
            status="killed",
            exit_code=None,
            summary="killed before it finished; production was left as it was"
            + (f"; orphan versions (no alias): {', '.join(orphans)}" if orphans else ""),
            orphans=orphans,
            leftovers_removed=cleaned,
        )
        atomic_write_text(path, json.dumps(old, indent=2, sort_keys=True))
        atomic_write_text(path.with_suffix(".txt"), _text(old))
        killed.append({"report": path.name, "started_at": old["started_at"], "orphans": orphans})
    return killed


def _gate_failures(check_report: Any) -> list[str]:
    return [f"{r.name}: {r.message}" for r in getattr(check_report, "failed", [])]


def run_refresh(
    settings: Settings,
    *,
    catalog_file: Path | None = None,
    images_root: Path | None = None,
    progress: Progress | None = None,
) -> RefreshOutcome:
    """Run one refresh under the lock; see the module docstring. Raises ``RefreshBusy``."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    with refresh_lock(settings.var_dir / "refresh.lock"):
        return _run(settings, catalog_file, images_root, progress)


def _run(
    settings: Settings,
    catalog_file: Path | None,
    images_root: Path | None,
    progress: Progress | None,
) -> RefreshOutcome:
    started = time.time()
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "pid": os.getpid(),
        "catalog_file": str(catalog_file) if catalog_file else None,
    }
    # A "running" report now, so that a run killed from here on leaves a trace the next marks.
    report["killed_runs"] = mark_killed_runs(settings)
    report.update(status="running", summary="running (if the run is over, it was killed)")
    _write_report(settings, report)

    def step(name: str) -> Progress | None:
        return relabelled(progress, name)

    def finish(status: str, code: int, summary: str) -> RefreshOutcome:
        report.update(status=status, exit_code=code, summary=summary)
        report["seconds"] = round(time.time() - started, 2)
        path = _write_report(settings, report)
        log.info("refresh %s: %s (report %s)", status, summary, path)
        return RefreshOutcome(status, code, report, path)

    catalog = CatalogStore.for_settings(settings)
    try:
        catalog.create_schema()
        # Retention of the feedback events (the same database): old events go each run.
        days = settings.extension.events_retention_days
        report["events_deleted"] = EventStore(settings.db_url, db=settings.db).delete_older_than(
            days
        )
        models = Registry(settings.models_dir, "model")
        indexes = Registry(settings.index_dir, "index")
        name = settings.search.index_name
        embedder = load_embedder(
            models, Ref(settings.search.model_name, "production"), runtime=settings.search.runtime
        )
        report["embedder"] = {
            "ref": embedder.info.ref,
            "served_by": embedder.info.served_by,
            "reason": embedder.info.reason,
            "fell_back": _fell_back(embedder.info.reason),
        }

        if catalog_file is not None:
            checks: list[DataCheck] = []
            current_ids = {img.item_id for img in catalog.iter_images()}
            try:
                scan = scan_input(catalog_file, images_root, catalog)
            except LookalikeError as exc:
                checks.append(DataCheck("schema", False, exc.message))
                report["data_checks"] = checks
                return finish("stopped", EXIT_DATA, f"data checks failed: schema: {exc.message}")
            checks.append(DataCheck("schema", True, "the file reads as a catalog"))
            checks += check_input(scan, current_ids, settings.refresh)
            if all(c.passed for c in checks):
                checks.append(
                    embedding_drift(
                        embedder,
                        scan.new_images,
                        _baseline_images(catalog, settings.refresh.drift_sample),
                        settings.refresh,
                    )
                )
            report["data_checks"] = checks
            failed = [c for c in checks if not c.passed]
            if failed:
                why = "; ".join(f"{c.name}: {c.reason}" for c in failed)
                return finish("stopped", EXIT_DATA, f"data checks failed: {why}")

            imported = catalog.import_file(catalog_file, images_root, progress=step("importing"))
            removed = 0
            if settings.refresh.prune_missing:
                # One short transaction per item: a kill leaves the rest for the next run.
                for item_id in sorted(current_ids - scan.file_item_ids):
                    with contextlib.suppress(NotFound):
                        catalog.delete_item(item_id)
                        removed += 1
            report["import"] = {
                "rows": imported.rows_read,
                "items_added": imported.items_added,
                "items_updated": imported.items_updated,
                "items_unchanged": imported.items_unchanged,
                "items_removed": removed,
                "images_added": imported.images_added,
                "rejected": len(imported.rejected),
                "rejections": [dataclasses.asdict(r) for r in imported.rejected[:20]],
            }

        try:
            production = indexes.resolve(Ref(name, "production"))
            manifest = indexes.manifest(production)
        except NotFound:
            production, manifest = None, {}
        report["production_before"] = str(production) if production else None
        if production is None or manifest.get("embedder") != embedder.info.ref:
            why = (
                "no production index"
                if production is None
                else (f"embedder changed ({manifest.get('embedder')} → {embedder.info.ref})")
            )
            report["index_mode"] = f"build: {why}"
            new = build_index(catalog, embedder, indexes, name=name, progress=step("embedding"))
            added, dropped = indexes.manifest(new)["count"], 0
        else:
            indexed = np.load(indexes.path(production) / IDS_FILE)
            current = np.asarray([img.image_id for img in catalog.iter_images()], np.int64)
            if np.array_equal(np.sort(indexed), np.sort(current)):
                report["index"] = f"{production} is current ({len(current)} images)"
                return finish("up_to_date", 0, f"nothing to do: {production} is current")
            report["index_mode"] = f"update of {production}"
            new, added, dropped = update_index(
                catalog, embedder, indexes, name=name, progress=step("embedding")
            )
        report["index"] = f"{new}: +{added} / -{dropped} vectors"
        report["candidate"] = str(new)

        # The one promote path: the index's checks, then production moves (or it does not).
        outcome = promote(SearchKind(settings), "index", new)
        report["index_checks"] = outcome.report
        if not outcome.promoted:
            failures = _gate_failures(outcome.report)
            report["gate_failures"] = failures
            indexes.set_aliases(name, candidate=new.version)
            return finish(
                "kept",
                EXIT_GATES,
                f"{new} failed its checks, production stays {production}: " + "; ".join(failures),
            )
        return finish("promoted", 0, f"{new} is now production (was {production})")
    finally:
        catalog.close()
