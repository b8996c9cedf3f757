"""The pre-filter's commands on ``lookalike moderation``: compare, train, eval, score.

``compare`` prints one row per feature set (the report's table); ``train`` registers a
candidate (promotion: ``lookalike models promote post_prefilter:N``, through the kind's checks);
``eval`` scores any labelled folder with the production classifier; ``score`` runs the queue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.core.textfiles import write_output
from lookalike.registry import Ref, Registry

__all__ = ["add_commands"]

console = Console()
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"

DataOpt = Annotated[
    Path, typer.Option("--data", help="a ../shared/data-like folder (street, scenes, clothing)")
]
CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="feature cache folder (default: var/prefilter-cache)")
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write the figures here as JSON")]
BackboneOpt = Annotated[
    str, typer.Option("--backbone", help="the search model whose backbone the classifier copies")
]


def _settings() -> Settings:
    return Settings()


def _fmt(f: dict[str, Any] | None, key: str) -> str:
    return "—" if not f else f"{f[key]:.3f}"


def rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    cols = ("features", "L2", "thr", "P", "R", "PR-AUC", "P@R.9", "street P", "street R",
            "street PR-AUC", "street P@R.9")  # fmt: skip
    for c in cols:
        table.add_column(c, justify="left" if c == "features" else "right")
    for r in rows:
        a, s = r["all"], r.get("street")
        table.add_row(
            r["features"], f"{r['l2']:g}", f"{r['threshold']:.3f}",
            _fmt(a, "precision"), _fmt(a, "recall"), _fmt(a, "pr_auc"),
            _fmt(a, "precision_at_recall_0.9"),
            _fmt(s, "precision"), _fmt(s, "recall"), _fmt(s, "pr_auc"),
            _fmt(s, "precision_at_recall_0.9"),
        )  # fmt: skip
    return table


def _cache(settings: Settings, cache: Path | None) -> Path:
    return cache or settings.var_dir / "prefilter-cache"


def compare_cmd(
    data: DataOpt = SHARED,
    cache: CacheOpt = None,
    backbone: BackboneOpt = "effnet_lite0:production",
    json_out: JsonOpt = None,
) -> None:
    """One row per feature set on the seed data's held-out split (L2, threshold by 5-fold CV)."""
    from lookalike.cli.progress import progress_bar
    from lookalike.moderation.fit import (
        cached_blocks,
        compare_feature_sets,
        search_backbone,
        seed_samples,
        stratified_split,
    )

    settings = _settings()
    parts = search_backbone(Registry(settings.models_dir, "model"), Ref.parse(backbone))
    samples = seed_samples(data)
    with progress_bar(f"features of {len(samples)} photos") as bar:
        blocks = cached_blocks(
            parts.extractor(), samples, _cache(settings, cache), parts.cache_key(),
            lambda d, n: bar("features", d, n),
        )  # fmt: skip
    rows = compare_feature_sets(blocks, samples, stratified_split(samples))
    console.print(rows_table(rows, f"pre-filter feature sets — held-out split of {data}"))
    if json_out:
        write_output(json_out, json.dumps(rows, indent=2))


def train_cmd(
    data: DataOpt = SHARED,
    cache: CacheOpt = None,
    backbone: BackboneOpt = "effnet_lite0:production",
    decisions: Annotated[
        bool, typer.Option("--decisions/--no-decisions", help="add the moderators' decisions")
    ] = True,
    json_out: JsonOpt = None,
) -> None:
    """Retrain from the seed data plus every moderator decision; register a candidate."""
    from lookalike.cli.progress import progress_bar
    from lookalike.moderation.fit import build_prefilter, seed_samples, split_decisions

    settings = _settings()
    registry = Registry(settings.models_dir, "model")
    samples = seed_samples(data)
    extra_train, extra_hold = [], []
    if decisions:
        try:
            extra_train, extra_hold = split_decisions(settings)
        except LookalikeError as exc:  # no moderation database yet: the seed data alone
            console.print(f"[yellow]no moderator decisions:[/yellow] {exc.message}")
    with progress_bar("pre-filter features") as bar:
        ref, metrics = build_prefilter(
            registry, samples + extra_train, backbone=Ref.parse(backbone),
            cache=_cache(settings, cache), extra_holdout=extra_hold,
            data={"seed": str(data), "decisions_train": len(extra_train),
                  "decisions_holdout": len(extra_hold)},
            progress=lambda d, n: bar("features", d, n),
        )  # fmt: skip
    registry.set_aliases(ref.name, candidate=ref.version)
    for part, f in metrics.items():
        console.print(
            f"{part}: precision {f['precision']:.3f}, recall {f['recall']:.3f}, "
            f"PR-AUC {f['pr_auc']:.3f}, P@R0.9 {f['precision_at_recall_0.9']:.3f}"
        )
    console.print(f"registered {ref} as candidate — promote: `lookalike models promote {ref}`")
    if json_out:
        write_output(json_out, json.dumps({"ref": str(ref), "metrics": metrics}, indent=2))


def _production(settings: Settings) -> Any:
    from lookalike.lifecycle import LoadContext, ProductSlot, StepPools
    from lookalike.moderation.kind import PrefilterKind

    slot = ProductSlot(PrefilterKind(settings), LoadContext(settings, StepPools(2))).load()
    if slot.generation is None:
        raise LookalikeError("; ".join(slot.problems) or "no pre-filter loads")
    return slot.generation


def eval_cmd(
    labels: Annotated[
        Path, typer.Option("--labels", help="CSV with columns file, has_dress (0/1, yes/no)")
    ],
    root: Annotated[Path, typer.Option("--root", help="folder the file column is relative to")],
    json_out: JsonOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=256)] = 32,
) -> None:
    """Score a labelled folder with the production classifier: P, R, PR-AUC, confusion."""
    from lookalike.cli.progress import progress_bar
    from lookalike.core.images import read_named_photo
    from lookalike.moderation.evaluation import figures
    from lookalike.moderation.fit import labelled_folder

    settings = _settings()
    samples = labelled_folder(labels, root)
    if not samples:
        raise LookalikeError(f"{labels} has no rows")
    gen = _production(settings)
    scores: list[float] = []
    served: set[str] = set()
    unreadable: list[str] = []
    with progress_bar(f"scoring {len(samples)} photos") as bar:
        kept = []
        for start in range(0, len(samples), batch):
            chunk, images = [], []
            for s in samples[start : start + batch]:
                try:
                    images.append(read_named_photo(s.path))
                    chunk.append(s)
                except LookalikeError as exc:  # the message starts with the path
                    unreadable.append(exc.message)
                except OSError as exc:
                    unreadable.append(f"{s.path}: {exc.strerror or exc}")
            if images:
                answers, by, _ = gen.score(images)
                served.add(by)
                scores += [a.score for a in answers]
                kept += chunk
            bar("scoring", min(start + batch, len(samples)), len(samples))
    y = np.array([s.label for s in kept])
    if not len(y):
        raise LookalikeError("no photo could be read")
    f = figures(np.array(scores), y, gen.threshold, gen.manifest.get("recall_target", 0.9))
    out = {"model_version": gen.version, "served_by": sorted(served),
           "fallback": sorted(served) != [gen.served_by] or gen.scorer is None,
           "photos": len(y), "unreadable": len(unreadable),
           "unreadable_photos": unreadable[:20], **f}  # fmt: skip
    c = f["confusion"]
    console.print(
        f"{gen.version} ({', '.join(sorted(served))}) on {len(y)} photos"
        f" ({len(unreadable)} unreadable), threshold {f['threshold']:.4f}\n"
        f"precision {f['precision']:.3f}  recall {f['recall']:.3f}  PR-AUC {f['pr_auc']:.3f}"
        f"  P@R0.9 {f['precision_at_recall_0.9']:.3f}"
    )
    if unreadable:
        console.print(f"[yellow]left out, unreadable:[/] {'; '.join(unreadable[:3])}")
    table = Table(title="confusion at the production threshold")
    for col in ("", "predicted dress", "predicted other"):
        table.add_column(col)
    table.add_row("dress", str(c["tp"]), str(c["fn"]))
    table.add_row("other", str(c["fp"]), str(c["tn"]))
    console.print(table)
    if json_out:
        write_output(json_out, json.dumps(out, indent=2))


def score_cmd(
    batch: Annotated[int, typer.Option("--batch", min=1, max=256, help="posts per batch")] = 32,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many posts")] = 100000,
    matches: Annotated[
        bool, typer.Option("--matches/--no-matches", help="top-3 catalog matches from search")
    ] = True,
) -> None:
    """Score new posts in batches: dress score, safety, catalog matches, near-duplicates."""
    from lookalike.catalog import CatalogStore
    from lookalike.cli.progress import progress_bar
    from lookalike.core.images import load_image_file
    from lookalike.lifecycle import LoadContext, ProductSlot, StepPools
    from lookalike.moderation.prefilter import score_posts
    from lookalike.moderation.store import ModerationStore
    from lookalike.search.kind import SearchKind

    settings = _settings()
    catalog = None
    totals = {"scored": 0, "queued": 0, "unsafe": 0, "unreadable": 0}
    served: dict[str, Any] = {}
    try:
        store = ModerationStore.from_settings(settings)
        store.create_schema()
        gen = _production(settings)
        search = None
        if matches:
            catalog = CatalogStore(settings.db_url, settings.media_dir)
            context = LoadContext(settings, StepPools(2), shared={"catalog": catalog})
            slot = ProductSlot(SearchKind(settings), context).load()
            search = slot.generation if slot.ready else None
            if search is None:
                console.print(f"[yellow]no catalog matches:[/yellow] {'; '.join(slot.problems)}")
        with progress_bar("scoring posts") as bar:
            while totals["scored"] + totals["unreadable"] < limit:
                posts = store.posts_to_score(min(batch, limit - totals["scored"]))
                if not posts:
                    break
                kept, images = [], []
                for p in posts:
                    try:
                        images.append(load_image_file(p.image_path))
                        kept.append(p)
                    except (OSError, LookalikeError) as exc:
                        reason = getattr(exc, "message", None) or type(exc).__name__
                        store.reject_post(p.post_id, f"unreadable at scoring: {reason}")
                        totals["unreadable"] += 1
                if kept:
                    records, served = score_posts(
                        gen, kept, images, search=search, duplicate_of=store.near_duplicate_of
                    )
                    store.record_scores(records)
                    totals["scored"] += len(records)
                    totals["queued"] += sum(r.enqueue for r in records)
                    totals["unsafe"] += sum(not r.safe for r in records)
                bar("scoring", totals["scored"], None)
    finally:
        if catalog is not None:
            catalog.close()
    console.print(
        f"scored {totals['scored']} posts: {totals['queued']} queued, {totals['unsafe']} unsafe"
        f" (kept out of the queue), {totals['unreadable']} unreadable — "
        f"{served.get('model_version', gen.version if totals['scored'] else '-')}"
        f" served by {served.get('served_by', '-')}"
        + (f" (fallback: {served['fallback']})" if served.get("fallback") else "")
    )


def add_commands(app: typer.Typer) -> None:
    """Add the pre-filter's commands to the ``moderation`` app."""
    app.command("compare")(compare_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("score")(score_cmd)
