"""``lookalike catalog``: import a catalog file, show what the catalog holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lookalike.catalog import CatalogStore, ImportReport
from lookalike.cli.fit import import_rentals
from lookalike.cli.progress import progress_bar
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings

__all__ = ["app", "import_catalog", "open_store", "stats"]

app = typer.Typer(help="Import and inspect the catalog.", no_args_is_help=True)
console = Console()
MAX_REJECTIONS_SHOWN = 50
# `lookalike catalog import-rentals PATH` is `lookalike fit import PATH` (cli/fit.py)
app.command("import-rentals")(import_rentals)


def open_store(settings: Settings) -> CatalogStore:
    """The catalog store of these settings, its folders and tables created if missing."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    store = CatalogStore.for_settings(settings)
    store.create_schema()
    return store


def _print_report(report: ImportReport, strict: bool) -> None:
    console.print(
        f"rows read {report.rows_read}: {report.items_added} added, "
        f"{report.items_updated} updated, {report.items_unchanged} unchanged, "
        f"{report.images_added} images added, {len(report.rejected)} rejected"
    )
    if not report.rejected:
        return
    table = Table(title="rejected rows", show_lines=False)
    table.add_column("line", justify="right")
    table.add_column("item_id")
    table.add_column("reason", overflow="fold")
    for rejection in report.rejected[:MAX_REJECTIONS_SHOWN]:
        table.add_row(str(rejection.line), rejection.item_id or "", rejection.reason)
    console.print(table)
    hidden = len(report.rejected) - MAX_REJECTIONS_SHOWN
    if hidden > 0:
        console.print(f"... and {hidden} more rejected rows")
    if strict:
        console.print(
            f"[red]strict mode: {len(report.rejected)} rows rejected, nothing was imported[/red]"
        )
    else:
        console.print(
            f"[yellow]warning: {len(report.rejected)} rows rejected; the other rows were "
            "imported. Fix them and import again (use --strict to import all or nothing).[/yellow]"
        )


@app.command("import")
def import_catalog(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, metavar="FILE", help="Catalog file: .csv or .jsonl"
        ),
    ],
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            exists=True,
            file_okay=False,
            help="Folder that relative image paths start from (default: the file's folder)",
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Import nothing if any row is rejected (exit code 1)")
    ] = False,
) -> ImportReport:
    """Import items and their images; re-importing the same file changes nothing."""
    settings = Settings()
    try:
        store = open_store(settings)
        try:
            with progress_bar(f"importing {file.name}") as progress:
                report = store.import_file(
                    file,
                    images,
                    strict=strict,
                    progress=progress,
                    max_pixels=settings.limits.max_pixels,
                )
        finally:
            store.close()
    except LookalikeError as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        raise typer.Exit(2) from exc
    _print_report(report, strict)
    if strict and report.rejected:
        raise typer.Exit(1)
    return report


@app.command("stats")
def stats() -> None:
    """Items, images and items per category."""
    settings = Settings()
    try:
        store = open_store(settings)
        try:
            counts = (store.count_items(), store.count_images(), store.revision())
            categories = store.categories()
        finally:
            store.close()
    except LookalikeError as exc:
        console.print(f"[red]error: {exc.message}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"catalog {store!r}, media in {settings.media_dir}")
    console.print(f"items {counts[0]}, images {counts[1]}, revision {counts[2]}")
    table = Table(title="categories")
    table.add_column("category")
    table.add_column("items", justify="right")
    for name, count in categories:
        table.add_row(name, str(count))
    console.print(table)
