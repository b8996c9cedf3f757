"""The golden set: real photos with known answers that every model and index must still find.

``demo/golden/golden.json`` (built by ``scripts/make_golden_set.py``) lists perturbed query
photos, the catalog item each must find, and a small gallery (the targets plus distractors)::

    {"queries": [{"query": "queries/LK-0236.jpg", "item_id": "LK-0236",
                  "catalog_image": "catalog/LK-0236.jpg", "perturbation": {...}}, ...],
     "gallery": [{"item_id": "LK-0236", "image": "catalog/LK-0236.jpg"}, ...]}

The item ids are the demo catalog's, so an index over the demo catalog can be checked with the
same queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lookalike.core.errors import ConfigError, NotFound
from lookalike.core.settings import Settings
from lookalike.search.evaluation import Pair

__all__ = ["GOLDEN_FILE", "GoldenQuery", "GoldenSet", "default_golden_dir", "load_golden"]

GOLDEN_FILE = "golden.json"
_CHECKOUT = Path(__file__).resolve().parents[3]  # src/lookalike/jobs -> repository root


@dataclass(frozen=True)
class GoldenQuery:
    query: Path
    item_id: str
    catalog_image: Path


@dataclass(frozen=True)
class GoldenSet:
    """Absolute paths of the golden photos; ``gallery`` lists ``(item_id, path)``."""

    root: Path
    queries: list[GoldenQuery]
    gallery: list[tuple[str, Path]]

    @property
    def gallery_paths(self) -> list[Path]:
        return [p for _, p in self.gallery]

    def relevant_rows(self) -> list[int]:
        """For each query, the row of its catalog photo in ``gallery``."""
        row = {p: i for i, (_, p) in enumerate(self.gallery)}
        return [row[q.catalog_image] for q in self.queries]

    def pairs(self) -> list[Pair]:
        """The queries as retrieval pairs, paths relative to ``root`` (``evaluate_retrieval``)."""
        return [
            Pair(
                q.item_id,
                q.query.relative_to(self.root).as_posix(),
                q.catalog_image.relative_to(self.root).as_posix(),
            )
            for q in self.queries
        ]

    def distractors(self) -> list[Path]:
        """Gallery photos that no query points at."""
        targets = {q.catalog_image for q in self.queries}
        return [p for p in self.gallery_paths if p not in targets]


def default_golden_dir(settings: Settings) -> Path:
    """``settings.gates.golden_dir``, else the first ``demo/golden`` with a golden.json under
    home, the working directory or the source checkout. Raises NotFound when there is none."""
    if settings.gates.golden_dir is not None:
        return Path(settings.gates.golden_dir)
    for base in (settings.home, Path.cwd(), _CHECKOUT):
        candidate = base / "demo" / "golden"
        if (candidate / GOLDEN_FILE).is_file():
            return candidate
    raise NotFound(
        "no golden set found (demo/golden/golden.json) — set LOOKALIKE_GATES__GOLDEN_DIR or "
        "run `python scripts/make_golden_set.py`"
    )


def load_golden(root: Path) -> GoldenSet:
    """Read ``root/golden.json``; raise ConfigError when it is malformed or a photo is missing."""
    root = Path(root).resolve()
    path = root / GOLDEN_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        gallery = [(str(g["item_id"]), root / g["image"]) for g in doc["gallery"]]
        queries = [
            GoldenQuery(root / q["query"], str(q["item_id"]), root / q["catalog_image"])
            for q in doc["queries"]
        ]
    except FileNotFoundError as exc:
        raise NotFound(f"no golden set at {path}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"golden set {path} is malformed: {exc}") from exc
    in_gallery = {p for _, p in gallery}
    missing = [str(p) for p in [*in_gallery, *(q.query for q in queries)] if not p.is_file()]
    missing += [str(q.catalog_image) for q in queries if q.catalog_image not in in_gallery]
    if missing or not queries:
        raise ConfigError(
            f"golden set {path} is incomplete (missing {missing[:5]}, {len(queries)} queries) — "
            "rebuild it with `python scripts/make_golden_set.py`"
        )
    return GoldenSet(root, queries, gallery)
