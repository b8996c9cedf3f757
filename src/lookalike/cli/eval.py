"""``lookalike eval``: offline evaluation of the production model (or a named one)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lookalike.cli.price import eval_price
from lookalike.cli.progress import progress_bar
from lookalike.core.settings import Settings
from lookalike.core.textfiles import write_output
from lookalike.embed import load_embedder
from lookalike.registry import Registry
from lookalike.search import evaluate_retrieval, read_pairs

app = typer.Typer(help="Measure search (and price) quality offline.", no_args_is_help=True)
console = Console()
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@app.command("retrieval")
def retrieval(
    pairs: Path = typer.Option(..., exists=True, dir_okay=False, help="pairs.csv"),
    root: Path = typer.Option(..., exists=True, file_okay=False, help="Folder of the paths"),
    distractors: Path = typer.Option(
        None, exists=True, file_okay=False, help="Folder of extra catalog photos for the gallery"
    ),
    split: str = typer.Option(None, help="Keep only pairs whose split column has this value"),
    model: str = typer.Option(None, help="Model name:version (default: production)"),
    variant: str = typer.Option(None, help="fp32 or int8 (default: the model's serving variant)"),
    json_out: Path = typer.Option(None, "--json", help="Write the figures here as JSON"),
    limit: int = typer.Option(0, help="Use only the first N pairs (0: all)"),
    crop: str = typer.Option(
        "auto",
        help="Query crops: auto (as search does), model, whole, upper, lower, garment, multi",
    ),
    cache: bool = typer.Option(
        True, help="Reuse backbone features cached on disk (fixed-region crops)"
    ),
    cache_dir: Path = typer.Option(None, help="Feature cache folder (default: var/cache/features)"),
) -> None:
    """Query with shopper photos, rank catalog photos: Recall@1/5/10/20 and mAP.

    A second row, ``recall_dedup`` in the JSON, counts a byte-identical twin of the true product
    (same sha256) as found; ``pairs_with_twin`` says how many pairs have one.
    """
    settings = Settings()
    ref = model or f"{settings.search.model_name}:production"
    registry = Registry(settings.models_dir, "model")
    embedder = load_embedder(registry, ref, runtime=settings.search.runtime, variant=variant)
    feature_cache = None
    if cache:
        from lookalike.embed.cache import FeatureCache, backbone_key

        manifest = registry.manifest(embedder.info.ref)
        feature_cache = FeatureCache(
            cache_dir or settings.var_dir / "cache" / "features",
            backbone_key(manifest, embedder.info.variant),
            embedder.embed_backbone,
        )
    chosen = read_pairs(pairs, split)
    if limit:
        chosen = chosen[:limit]
    extra = sorted(
        p
        for p in (distractors.rglob("*") if distractors else [])
        if p.suffix.lower() in IMAGE_SUFFIXES
    )
    with progress_bar(f"embedding with {embedder.info.ref}") as progress:
        report = evaluate_retrieval(
            embedder,
            chosen,
            root,
            distractors=extra,
            progress=progress,
            crop=crop,
            cache=feature_cache,
        )
    table = Table(title=f"{report.model} ({report.served_by}, crop {report.extra['crop']})")
    for col in ["recall", "queries", "gallery", *[f"R{k}" for k in report.recall], "mAP"]:
        table.add_column(col, justify="right")
    size = [str(report.queries), str(report.gallery)]
    table.add_row(
        "strict", *size, *[f"{v:.3f}" for v in report.recall.values()], f"{report.map:.3f}"
    )
    table.add_row(
        "twin=found", *size, *[f"{report.recall_dedup[k]:.3f}" for k in report.recall], "-"
    )
    console.print(table)
    if report.skipped.get("photos"):
        skip = report.skipped
        reasons = "; ".join(map(str, skip["reasons"][:3]))  # type: ignore[index]
        console.print(
            f"[yellow]skipped {skip['photos']} unreadable photos[/] ({skip['pairs']} pairs, "
            f"{skip['distractors']} distractors left out): {reasons}"
        )
    console.print(
        f"{report.pairs_with_twin} of {report.queries} pairs have a byte-identical twin of their"
        " product in the gallery; 'twin=found' (recall_dedup) counts that twin as a hit"
    )
    hub = report.extra.get("hubness") or {}
    if hub:
        share = next(v for k, v in hub.items() if k.startswith("share_"))
        console.print(
            f"hubness: {share:.1%} of queries have one of the 5 most frequent gallery photos in "
            f"their top 5 (those photos appear {', '.join(map(str, hub['hub_counts']))} times)"
        )
    if json_out:
        doc = {**report.to_dict(), "pairs": str(pairs), "split": split}
        write_output(json_out, json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}")


# `lookalike eval price`: the price models' evaluation table (cli/price.py).
app.command("price")(eval_price)
