"""``lookalike models train-embedding`` / ``train-localizer``: train candidates, never promote.

Mounted under ``lookalike models`` by ``cli/main.py``. Both write a new registry version with its
figures in the manifest; ``lookalike models promote NAME:VERSION`` then makes it production
through the checks. Needs the ``build`` extra (torch). ``train-embedding`` learns from
consumer-to-shop pairs (``--pairs``/``--root``) or from shoppers' clicks (``--clicks``, the
export of ``lookalike events export-pairs``, photos from the catalog).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import InvalidInput, LookalikeError
from lookalike.core.metrics import KS, recall_key
from lookalike.core.settings import Settings
from lookalike.core.textfiles import write_output
from lookalike.registry import Registry

if TYPE_CHECKING:
    from lookalike.training.candidate import PairSet

__all__ = ["app", "train_embedding", "train_localizer"]

app = typer.Typer(help="Train candidate models (not promoted).", no_args_is_help=True)
console = Console()
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def _images(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _say(stage: str, done: int | None = None, total: int | None = None, /) -> None:
    """The trainers' progress, one indented line each."""
    console.print(f"  {stage}" if done is None else f"  {stage} {done}/{total}")


def _figures_table(title: str, figures: dict) -> Table:
    table = Table(title=title)
    table.add_column("measured on")
    for col in [f"R@{k}" for k in KS] + ["mAP"]:
        table.add_column(col, justify="right")
    for label, fig in figures.items():
        if isinstance(fig, dict) and "recall" in fig and "map" in fig:
            table.add_row(
                label,
                *[f"{fig['recall'][recall_key(k)]:.3f}" for k in KS],
                f"{fig['map']:.3f}",
            )
    return table


def _pairs_from_file(
    pairs: Path, root: Path | None, split: str, eval_split: str
) -> tuple[PairSet, PairSet | None, dict[str, Any]]:
    """Train (and held-out) pairs of a pairs.csv, and what the manifest records of it."""
    from lookalike.registry.store import sha256_file
    from lookalike.search import read_pairs
    from lookalike.training.candidate import PairSet

    if root is None:
        raise InvalidInput("--pairs needs --root, the folder its paths are relative to")

    def pair_set(chosen: list) -> PairSet:
        return PairSet(
            [root / p.person for p in chosen],
            [root / p.product for p in chosen],
            [p.item_id for p in chosen],
        )

    train = pair_set(read_pairs(pairs, split or None))
    held = None
    if eval_split:
        kept = [p for p in read_pairs(pairs) if p.split == eval_split]
        held = pair_set(kept) if kept else None
    data = {
        "pairs_file": str(pairs),
        "pairs_sha256": sha256_file(pairs),
        "split": split or None,
        "eval_split": eval_split if held is not None else None,
    }
    return train, held, data


def _pairs_from_clicks(
    clicks: Path, settings: Settings, min_clicks: int
) -> tuple[PairSet, dict[str, Any]]:
    """Training pairs of an export of clicked pairs, photos from the catalog's media."""
    from lookalike.catalog import CatalogStore
    from lookalike.registry.store import sha256_file
    from lookalike.training.clicks import read_click_pairs

    store = CatalogStore(settings.db_url, settings.media_dir)
    try:
        found = read_click_pairs(clicks, store, min_clicks=min_clicks)
    finally:
        store.close()
    if found.skipped_unknown:
        console.print(
            f"  skipped {found.skipped_unknown} of {found.rows} clicked pairs: items not in "
            f"the catalog (e.g. {', '.join(found.unknown_items)})"
        )
    data = {
        **found.summary(),
        "pairs_file": str(clicks),
        "pairs_sha256": sha256_file(clicks),
        "min_clicks": min_clicks,
        "split": None,
        "eval_split": None,
    }
    return found.pairs, data


@app.command("train-embedding")
def train_embedding(
    pairs: Path = typer.Option(None, exists=True, dir_okay=False, help="pairs.csv"),
    root: Path = typer.Option(None, exists=True, file_okay=False, help="Folder of the paths"),
    clicks: Path = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Train on clicked pairs (`lookalike events export-pairs` CSV) instead of --pairs",
    ),
    min_clicks: int = typer.Option(1, min=1, help="With --clicks: pairs clicked this often"),
    split: str = typer.Option("train", help="Train on pairs of this split ('' for all)"),
    eval_split: str = typer.Option(
        "val", help="Measure on this split if the file has it ('' for a held-out 10% of train)"
    ),
    distractors: Path = typer.Option(
        None, exists=True, file_okay=False, help="Extra catalog photos for the eval gallery"
    ),
    base: str = typer.Option(None, help="Backbone model (default: SEARCH model:production)"),
    name: str = typer.Option(None, help="Registry name of the candidate (default: base's name)"),
    head: str = typer.Option("linear", help="Head: linear or mlp (no better on viton-dev)"),
    dim: int = typer.Option(256, help="Output width of the towers"),
    epochs: int = typer.Option(40, help="Passes over the training pairs"),
    colour_weight: float = typer.Option(
        0.5, help="Weight of the HSV colour signature appended to the embedding (0: none)"
    ),
    query_crop: str = typer.Option(
        None, help="Region of query photos: upper/whole/lower (default: upper; whole for clicks)"
    ),
    augment: bool = typer.Option(True, help="Add mirrored crops as a second view"),
    finetune_blocks: int = typer.Option(
        0, help="Also fine-tune the backbone's last N blocks and head convolution (0: frozen)"
    ),
    finetune_epochs: int = typer.Option(12, help="Epochs when fine-tuning"),
    cache: Path = typer.Option(None, help="Feature cache folder (default: var/cache/features)"),
    json_out: Path = typer.Option(None, "--json", help="Write the manifest's figures here"),
) -> None:
    """Train a two-tower projection head (InfoNCE) on frozen CNN features of pairs.csv or clicks."""
    from lookalike.training.candidate import train_candidate
    from lookalike.training.head import TrainConfig

    settings = Settings()
    registry = Registry(settings.models_dir, "model")
    base_ref = base or f"{settings.search.model_name}:production"
    if head not in ("linear", "mlp"):
        console.print(f"[red]error:[/red] --head must be linear or mlp, not {head!r}")
        raise typer.Exit(code=1)
    try:
        if (pairs is None) == (clicks is None):
            raise InvalidInput(
                "give one source of training pairs: --pairs (with --root) or --clicks"
            )
        if clicks is not None:
            # Photos come from the catalog; held-out figures from a 10% hash split of the pairs.
            train, data = _pairs_from_clicks(clicks, settings, min_clicks)
            held = None
        else:
            assert pairs is not None  # one of the two, checked above
            train, held, data = _pairs_from_file(pairs, root, split, eval_split)
        crop = query_crop or ("whole" if clicks is not None else "upper")
        cfg = TrainConfig(kind=head, dim=dim, epochs=epochs, colour_weight=colour_weight)  # type: ignore[arg-type]
        tune = None
        if finetune_blocks:
            from lookalike.training.finetune import BLOCKS, FinetuneConfig

            if not 0 < finetune_blocks < BLOCKS:
                raise InvalidInput(f"--finetune-blocks must be 1..{BLOCKS - 1}")
            tune = FinetuneConfig(
                kind=head,  # type: ignore[arg-type]
                at=BLOCKS - finetune_blocks,
                dim=dim,
                epochs=finetune_epochs,
                colour_weight=colour_weight,
            )
        result = train_candidate(
            registry,
            train,
            base=base_ref,
            name=name,
            cfg=cfg,
            finetune=tune,
            query_crop=crop,
            augment=augment,
            evaluate=held,
            eval_label=eval_split or "val",
            distractors=_images(distractors),
            cache_dir=cache or settings.var_dir / "cache" / "features",
            training_data={
                **data,
                "distractors": str(distractors) if distractors else None,
                "distractor_count": len(_images(distractors)),
            },
            progress=_say,
        )
    except LookalikeError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(code=1) from exc
    figures = result.manifest.get("figures", {})
    console.print(_figures_table(f"candidate {result.ref}", figures))
    t = result.manifest["training"]
    console.print(
        f"registered [bold]{result.ref}[/bold]: features {t['feature_seconds']} s, "
        f"training {t['train_seconds']} s, total {t['total_seconds']} s — not promoted; "
        f"run `lookalike models promote {result.ref}`"
    )
    if json_out:
        write_output(json_out, json.dumps({"ref": str(result.ref), **result.manifest}, indent=2))


@app.command("train-localizer")
def train_localizer(
    data: Path = typer.Option(
        ..., exists=True, file_okay=False, help="Folder with images/, masks/ and labels.txt"
    ),
    model: str = typer.Option(None, help="Model to add the localiser to (default: production)"),
    name: str = typer.Option(None, help="Registry name of the result (default: the model's)"),
    epochs: int = typer.Option(60, help="Passes over the masked photos"),
    cache: Path = typer.Option(None, help="Feature cache folder (default: var/cache/features)"),
) -> None:
    """Train a garment localiser (per-cell classifier on the CNN's feature map) from masks."""
    from lookalike.training.localizer import train_localizer_candidate

    settings = Settings()
    registry = Registry(settings.models_dir, "model")
    ref = model or f"{settings.search.model_name}:production"
    try:
        result = train_localizer_candidate(
            registry,
            data,
            model=ref,
            name=name,
            epochs=epochs,
            cache_dir=cache or settings.var_dir / "cache" / "features",
            progress=_say,
        )
    except LookalikeError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(code=1) from exc
    loc = result.manifest["localizer"]
    console.print(
        f"registered [bold]{result.ref}[/bold] with a localiser: held-out IoU "
        f"{loc['figures']} in {loc['train_seconds']} s — not promoted"
    )
