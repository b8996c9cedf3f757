"""Checks on a refresh's input, run before anything is imported, embedded or built.

Each check returns a :class:`DataCheck` with a reason a person can act on and its figures:

- ``schema``: the file reads as a catalog (columns present, right file type);
- ``duplicates``: no item id appears twice;
- ``rejected_rows``: the share of rows the import would reject (bad fields, missing or
  unreadable images) is at most ``max_rejected_share``;
- ``count_change``: a full catalog file does not drop more than ``max_removed_share`` of the
  current items;
- ``embedding_drift``: new images embed like the production catalog — the mean cosine of their
  embeddings to the centroid of a production sample falls by at most ``drift_max_std`` standard
  deviations of the production sample's own cosines (pure noise or a wrong crop falls far).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.catalog import CatalogStore
from lookalike.catalog.rows import ParsedFile, read_rows
from lookalike.core.errors import LookalikeError
from lookalike.core.images import image_sha256, load_image_file
from lookalike.core.settings import RefreshSettings
from lookalike.embed import Embedder

__all__ = ["DataCheck", "InputScan", "check_input", "embedding_drift", "scan_input"]


@dataclass
class DataCheck:
    name: str
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InputScan:
    """What a catalog file holds, read without writing anything."""

    parsed: ParsedFile
    unreadable: dict[int, str]  # file line -> why an image of that row does not decode
    new_images: list[Path]  # readable images whose bytes the catalog does not hold yet
    file_item_ids: set[str]


def scan_input(path: Path, images_root: Path | None, catalog: CatalogStore) -> InputScan:
    """Parse ``path`` and decode every image the catalog does not already hold.

    Images are known by the SHA-256 of their bytes, so an unchanged feed decodes nothing.
    Raises ``InvalidInput``/``NotFound`` when the file cannot be read as a catalog at all.
    """
    parsed = read_rows(Path(path), images_root)
    known = {img.sha256 for img in catalog.iter_images()}
    todo: list[tuple[int, Path]] = []
    for row in parsed.rows:
        for image in row.images:
            try:
                sha = image_sha256(image.path.read_bytes())
            except OSError:
                todo.append((row.line, image.path))  # decoding will report why
                continue
            if sha not in known:
                todo.append((row.line, image.path))

    def decode(entry: tuple[int, Path]) -> tuple[int, Path, str | None]:
        line, p = entry
        try:
            load_image_file(p)
        except (LookalikeError, OSError) as exc:
            return line, p, f"{p.name}: {getattr(exc, 'message', None) or exc}"
        return line, p, None

    unreadable: dict[int, str] = {}
    new_images: list[Path] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for line, p, problem in pool.map(decode, todo):
            if problem is None:
                new_images.append(p)
            else:
                unreadable.setdefault(line, problem)
    ids = {r.item_id for r in parsed.rows} | {r.item_id for r in parsed.rejected if r.item_id}
    return InputScan(parsed, unreadable, new_images, ids)


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def check_input(
    scan: InputScan, current_item_ids: set[str], limits: RefreshSettings
) -> list[DataCheck]:
    """The file-level checks (everything but drift) on a scanned input file."""
    parsed = scan.parsed
    checks: list[DataCheck] = []
    dupes = [r for r in parsed.rejected if r.reason.startswith("duplicate item_id")]
    checks.append(
        DataCheck(
            "duplicates",
            not dupes,
            "no duplicate item ids"
            if not dupes
            else f"{len(dupes)} duplicate item id(s), e.g. line {dupes[0].line}: {dupes[0].reason}",
            {"duplicates": len(dupes)},
        )
    )
    rejected = [r for r in parsed.rejected if r not in dupes]
    missing = [r for r in rejected if "image not found" in r.reason]
    bad = len(rejected) + len(scan.unreadable)
    share = _share(bad, parsed.rows_read)
    figures = {
        "rows": parsed.rows_read,
        "rejected": len(rejected),
        "missing_images": len(missing),
        "unreadable_images": len(scan.unreadable),
        "share": share,
        "limit": limits.max_rejected_share,
    }
    examples = [f"line {r.line}: {r.reason}" for r in rejected[:3]]
    examples += [f"line {line}: {why}" for line, why in list(scan.unreadable.items())[:3]]
    if share > limits.max_rejected_share:
        reason = (
            f"{bad} of {parsed.rows_read} rows ({share:.0%}) would be rejected "
            f"({len(missing)} with missing images, {len(scan.unreadable)} with unreadable "
            f"images) — over the {limits.max_rejected_share:.0%} limit; e.g. "
            + "; ".join(examples[:3])
        )
        checks.append(DataCheck("rejected_rows", False, reason, figures))
    else:
        checks.append(
            DataCheck("rejected_rows", True, f"{bad} of {parsed.rows_read} rows rejected", figures)
        )
    if parsed.rows_read == 0:
        checks.append(DataCheck("count_change", False, "the catalog file has no rows", {}))
    elif current_item_ids and limits.prune_missing:
        removed = len(current_item_ids - scan.file_item_ids)
        share = _share(removed, len(current_item_ids))
        figures = {
            "current_items": len(current_item_ids),
            "file_items": len(scan.file_item_ids),
            "would_remove": removed,
            "share": share,
            "limit": limits.max_removed_share,
        }
        ok = share <= limits.max_removed_share
        reason = (
            f"would remove {removed} of {len(current_item_ids)} items ({share:.0%})"
            if ok
            else f"the new file would remove {removed} of {len(current_item_ids)} catalog items "
            f"({share:.0%}) — over the {limits.max_removed_share:.0%} limit; check the export, "
            "or raise LOOKALIKE_REFRESH__MAX_REMOVED_SHARE for a deliberate clear-out"
        )
        checks.append(DataCheck("count_change", ok, reason, figures))
    else:
        checks.append(DataCheck("count_change", True, "no current catalog to compare with", {}))
    return checks


def _embed_files(embedder: Embedder, paths: Sequence[Path]) -> np.ndarray:
    images: list[Image.Image] = []
    for p in paths:
        try:
            images.append(load_image_file(p))
        except (LookalikeError, OSError):
            continue
    out = [embedder.embed(images[i : i + 32]) for i in range(0, len(images), 32)]
    return np.concatenate(out) if out else np.zeros((0, embedder.info.dim), np.float32)


def embedding_drift(
    embedder: Embedder,
    new_images: Sequence[Path],
    baseline_images: Sequence[Path],
    limits: RefreshSettings,
    *,
    seed: int = 0,
) -> DataCheck:
    """Compare a sample of new images with a sample of production catalog images."""
    rng = random.Random(seed)
    n = limits.drift_sample
    new = rng.sample(list(new_images), min(n, len(new_images)))
    base = rng.sample(list(baseline_images), min(n, len(baseline_images)))
    if len(base) < limits.drift_min_sample:
        return DataCheck("embedding_drift", True, "no production catalog to compare with", {})
    if not new:
        return DataCheck("embedding_drift", True, "no new images", {"new_sample": 0})
    new_v, base_v = _embed_files(embedder, new), _embed_files(embedder, base)
    centroid = base_v.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    base_cos, new_cos = base_v @ centroid, new_v @ centroid
    spread = max(float(base_cos.std()), 1e-6)
    shift = (float(base_cos.mean()) - float(new_cos.mean())) / spread
    figures = {
        "new_sample": len(new_v),
        "baseline_sample": len(base_v),
        "baseline_mean_cosine": round(float(base_cos.mean()), 4),
        "new_mean_cosine": round(float(new_cos.mean()), 4),
        "shift_std": round(shift, 2),
        "limit_std": limits.drift_max_std,
        "enforced": len(new_v) >= limits.drift_min_sample,
    }
    if not figures["enforced"] or shift <= limits.drift_max_std:
        note = "" if figures["enforced"] else " (too few new images to enforce)"
        return DataCheck(
            "embedding_drift",
            True,
            f"new images shift {shift:.1f} std from production{note}",
            figures,
        )
    return DataCheck(
        "embedding_drift",
        False,
        f"new images do not look like the catalog: their mean cosine to the production centroid "
        f"is {figures['new_mean_cosine']} vs {figures['baseline_mean_cosine']} "
        f"({shift:.1f} std, limit {limits.drift_max_std}) — check the image export "
        "(blank, noise or wrong files?)",
        figures,
    )
