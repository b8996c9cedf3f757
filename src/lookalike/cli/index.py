"""``lookalike index``: build, update, list, promote and roll back catalog indexes."""

from __future__ import annotations

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from lookalike.catalog import CatalogStore
from lookalike.cli.models import check_table, run_checks, run_promote, run_rollback
from lookalike.cli.progress import progress_bar
from lookalike.core.settings import Settings
from lookalike.embed import load_embedder
from lookalike.registry import Ref, Registry
from lookalike.search import build_index, update_index

app = typer.Typer(help="Build and manage the catalog's vector index.", no_args_is_help=True)
console = Console()


def _open(settings: Settings) -> tuple[CatalogStore, Registry, Registry]:
    catalog = CatalogStore.for_settings(settings)
    catalog.create_schema()
    return catalog, Registry(settings.models_dir, "model"), Registry(settings.index_dir, "index")


@app.command("build")
def build(
    factory: str | None = typer.Option(
        None, help="FAISS factory string (Flat, HNSW32, IVF1024,PQ32); default suits the size"
    ),
    model: str | None = typer.Option(None, help="Embedder name:version (default: production)"),
    promote: bool = typer.Option(True, help="Make the new index production"),
) -> None:
    """Embed every catalog image and write a new index version."""
    settings = Settings()
    catalog, models, indexes = _open(settings)
    ref = model or f"{settings.search.model_name}:production"
    embedder = load_embedder(models, ref, runtime=settings.search.runtime)
    console.print(f"embedder {embedder.info.ref} via {embedder.info.served_by}")
    with progress_bar("embedding catalog images") as progress:
        new = build_index(
            catalog,
            embedder,
            indexes,
            name=settings.search.index_name,
            factory=factory,
            progress=progress,
        )
    manifest = indexes.manifest(new)
    console.print(
        f"built index [bold]{new}[/]: {manifest['count']} vectors, {manifest['items']} items, "
        f"{manifest['factory']}, {manifest['build_seconds']} s"
    )
    for problem in manifest.get("skipped_images", []):
        console.print(f"[yellow]skipped[/] {problem}")
    if promote:  # through the same checks as `lookalike index promote`
        promote_cmd(str(new), model=model, force=False)


@app.command("update")
def update(promote: bool = typer.Option(True, help="Make the new index production")) -> None:
    """Add new catalog images and drop deleted ones, starting from production (no full rebuild)."""
    settings = Settings()
    catalog, models, indexes = _open(settings)
    embedder = load_embedder(
        models, f"{settings.search.model_name}:production", runtime=settings.search.runtime
    )
    with progress_bar("embedding new images") as progress:
        new, added, removed = update_index(
            catalog, embedder, indexes, name=settings.search.index_name, progress=progress
        )
    console.print(f"wrote index [bold]{new}[/]: +{added} / -{removed} vectors")
    if promote:  # through the same checks as `lookalike index promote`
        promote_cmd(str(new), model=None, force=False)


@app.command("list")
def list_indexes() -> None:
    """Every index version with its aliases and figures."""
    indexes = Registry(Settings().index_dir, "index")
    # 80 columns without cutting what an operator reads: one "name:version" (as every command
    # takes it), the embedder folds rather than hide its version, the date without the time.
    table = Table(title=f"indexes in {indexes.root}", box=box.SIMPLE)
    table.add_column("index", overflow="fold")
    table.add_column("aliases", overflow="fold")
    table.add_column("embedder", overflow="fold")
    table.add_column("factory", overflow="fold")
    table.add_column("vectors", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for name in indexes.names():
        aliases = indexes.aliases(name)
        for version in indexes.versions(name):
            m = indexes.manifest(Ref(name, version))
            tags = ",".join(a for a, v in aliases.items() if v == version)
            table.add_row(
                f"{name}:{version}",
                tags,
                str(m.get("embedder") or "-"),
                str(m.get("factory") or "-"),
                str(m.get("count")),
                str(m.get("created_at") or "")[:10],
            )
    console.print(table)


@app.command("check")
def check(
    ref: str = typer.Argument(..., help="name:version, e.g. catalog:3"),
    model: str | None = typer.Option(None, help="embedder it serves with (default: production)"),
) -> None:
    """Run the deploy checks on an index version without promoting; exit 1 if any fails."""
    report = run_checks(Settings(), "index", ref, {"model": model})
    console.print(check_table(report))
    if not report.passed:
        raise typer.Exit(1)


@app.command("promote")
def promote_cmd(
    ref: str = typer.Argument(..., help="name:version, e.g. catalog:3"),
    model: str | None = typer.Option(None, help="embedder it serves with (default: production)"),
    force: bool = typer.Option(False, "--force", help="promote even if checks fail (logged)"),
) -> None:
    """Check an index version and make it production only if every check passes.

    Checks: checksums, load, built with the production model, vector count vs catalog, golden
    (or self-) retrieval through the index, search latency. The old production becomes previous.
    """
    run_promote(Settings(), "index", ref, force=force, check_options={"model": model})


@app.command("rollback")
def rollback(name: str = typer.Argument("catalog")) -> None:
    """Move production back to previous in one atomic step (nothing is deleted)."""
    run_rollback(Settings(), "index", name)
