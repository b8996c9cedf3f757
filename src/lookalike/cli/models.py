"""``lookalike models``: build the default, list, check, promote (after checks), roll back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lookalike.cli.train import train_embedding, train_localizer
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckReport

__all__ = ["already_production", "app", "check_table", "gate_and_promote"]

log = logging.getLogger("lookalike.cli")

app = typer.Typer(help="Embedding models in the registry (models/).", no_args_is_help=True)
console = Console()


def _registry(settings: Settings) -> Registry:
    return Registry(settings.models_dir, "model")


def _fail(exc: LookalikeError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(code=1)


@app.command("build-default")
def build_default_cmd(
    calibration: Annotated[
        Path,
        typer.Option(help="folder of real photos: int8 calibration and fidelity figures"),
    ] = Path("demo/catalog/images"),
    name: Annotated[str, typer.Option(help="registry name of the model")] = "effnet_lite0",
) -> None:
    """Build EfficientNet-Lite0 (ImageNet) as ONNX fp32 + int8, measure, register, promote."""
    settings = Settings()
    images = sorted(
        p for p in calibration.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}
    )
    if not images:
        console.print(f"[red]error:[/red] no images in {calibration}")
        raise typer.Exit(code=1)
    try:
        from lookalike.embed.build import build_default
    except ImportError as exc:
        console.print(
            f"[red]error:[/red] building needs the build extra ({exc}): "
            "pip install 'lookalike[build]'"
        )
        raise typer.Exit(code=1) from exc
    registry = _registry(settings)
    try:
        with console.status("building the default model") as status:

            def progress(msg: str) -> None:
                console.log(msg)
                status.update(msg)

            ref = build_default(registry, images, name=name, progress=progress)
    except LookalikeError as exc:
        raise _fail(exc) from exc
    m = registry.manifest(ref)
    console.print(_summary_table([(ref, m)], registry))
    console.print(
        f"[green]{ref}[/green] is production, serving [bold]{m['default_variant']}[/bold]: "
        f"{m['reason']}"
    )


def _fmt_latency(m: dict[str, Any]) -> str:
    lat = m.get("latency_batch1", {})
    parts = [
        f"{v} {lat[v]['median_ms']:.1f}/{lat[v]['p95_ms']:.1f}"
        for v in ("fp32", "int8")
        if v in lat
    ]
    return ", ".join(parts) if parts else "-"


def _summary_table(rows: list[tuple[Ref, dict[str, Any]]], registry: Registry) -> Table:
    table = Table(title=f"models in {registry.root}")
    for col in ("name", "version", "aliases", "variant", "dim", "created"):
        table.add_column(col)
    table.add_column("batch-1 ms (median/p95)")
    table.add_column("int8 vs fp32 (cos, R@10)")
    table.add_column("onnx≈torch")
    for ref, m in rows:
        aliases = ", ".join(a for a, v in registry.aliases(ref.name).items() if v == ref.version)
        fid = m.get("int8_fidelity", {})
        diff = m.get("onnx_vs_torch_max_abs_diff")
        table.add_row(
            ref.name,
            ref.version,
            aliases or "-",
            str(m.get("default_variant", "-")),
            str(m.get("embedding_dim", "-")),
            str(m.get("created_at", "-")),
            _fmt_latency(m),
            f"{fid['mean_cosine']:.4f}, {fid['recall_at_10']:.3f}" if fid else "-",
            f"{diff:.1e}" if isinstance(diff, float) else "-",
        )
    return table


@app.command("list")
def list_cmd() -> None:
    """Every model version with its aliases, served variant and key figures."""
    registry = _registry(Settings())
    rows: list[tuple[Ref, dict[str, Any]]] = []
    for name in registry.names():
        for version in registry.versions(name):
            ref = Ref(name, version)
            try:
                rows.append((ref, registry.manifest(ref)))
            except LookalikeError as exc:
                console.print(f"[yellow]{ref}: {exc.message}[/yellow]")
    if not rows:
        console.print(f"no models in {registry.root} — run `lookalike models build-default`")
        return
    console.print(_summary_table(rows, registry))


def check_table(report: CheckReport, title: str | None = None) -> Table:
    """Every check of ``report``: name, PASS/FAIL, what it found (failed rows in red)."""
    table = Table(title=title or f"checks of {report.ref}")
    for col in ("check", "result", "finding"):
        table.add_column(col)
    for r in report.results:
        mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(r.name, mark, r.message if r.passed else f"[red]{r.message}[/red]")
    return table


def gate_and_promote(registry: Registry, report: CheckReport, force: bool, what: str) -> None:
    """Promote ``report.ref`` when every check passed; otherwise exit 1 (or, forced, shout)."""
    console.print(check_table(report))
    ref = Ref.parse(report.ref)
    if not report.passed:
        failed = ", ".join(r.name for r in report.failed)
        if not force:
            console.print(
                f"[red]refused:[/red] {ref} failed {len(report.failed)} check(s) ({failed}); "
                f"production is unchanged ({_production(registry, ref.name)})"
            )
            raise typer.Exit(code=1)
        log.warning("FORCED promotion of %s %s despite failed checks: %s", what, ref, failed)
        console.print(
            f"[bold red]WARNING: --force promotes {ref} although {failed} failed. "
            f"Roll back with `lookalike {what} rollback {ref.name}`.[/bold red]"
        )
        registry.update_manifest(ref, forced_promotion={"failed": failed, "at": report.checked_at})
    aliases = registry.promote(ref)
    console.print(f"[green]{ref} is production[/green] (previous: {aliases.get('previous', '-')})")


def already_production(registry: Registry, ref: str) -> bool:
    """True (and says so) when ``ref`` already is production: promoting it is a no-op."""
    try:
        resolved = registry.resolve(Ref.parse(ref, default_version="latest"))
    except LookalikeError as exc:
        raise _fail(exc) from exc
    if registry.aliases(resolved.name).get("production") != resolved.version:
        return False
    console.print(f"{resolved} is already production; nothing to do")
    return True


def _production(registry: Registry, name: str) -> str:
    return registry.aliases(name).get("production", "none")


PairsOpt = Annotated[
    Path | None,
    typer.Option("--pairs", help="pairs.csv for the metric check (default: the golden set)"),
]
RootOpt = Annotated[Path | None, typer.Option("--root", help="folder the pairs' paths are in")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="only this split of --pairs")]


def _run_checks(
    ref: str, pairs: Path | None, root: Path | None, split: str | None
) -> tuple[Registry, CheckReport]:
    from lookalike.jobs.gates import check_model

    settings = Settings()
    registry = _registry(settings)
    try:
        with console.status(f"checking {ref}"):
            report = check_model(settings, ref, pairs=pairs, root=root, split=split)
    except LookalikeError as exc:
        raise _fail(exc) from exc
    return registry, report


@app.command("check")
def check_cmd(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to check (default version: latest)")],
    pairs: PairsOpt = None,
    root: RootOpt = None,
    split: SplitOpt = None,
) -> None:
    """Run the deploy checks on NAME:VERSION without promoting; exit 1 if any fails."""
    _, report = _run_checks(ref, pairs, root, split)
    console.print(check_table(report))
    if not report.passed:
        raise typer.Exit(code=1)


@app.command("promote")
def promote_cmd(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to make production")],
    pairs: PairsOpt = None,
    root: RootOpt = None,
    split: SplitOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="promote even if checks fail (logged loudly)")
    ] = False,
) -> None:
    """Check NAME:VERSION and make it production only if every check passes.

    The checks (checksums, load, output, golden, metric vs production, latency) and their
    figures are written into the version's manifest; the old production becomes previous.
    """
    if already_production(_registry(Settings()), ref):
        return
    registry, report = _run_checks(ref, pairs, root, split)
    gate_and_promote(registry, report, force, "models")
    _warn_index_mismatch(Settings(), report.ref)


def _warn_index_mismatch(settings: Settings, model_ref: str) -> None:
    indexes = Registry(settings.index_dir, "index")
    try:
        built_with = indexes.manifest(f"{settings.search.index_name}:production").get("embedder")
    except LookalikeError:
        return
    if built_with and built_with != model_ref and settings.search.model_name in model_ref:
        console.print(
            f"[yellow]the production index was built with {built_with}: run `lookalike index "
            f"build` so that search serves {model_ref}[/yellow]"
        )


@app.command("rollback")
def rollback_cmd(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Move production back to previous in one atomic step (the two swap; nothing is deleted)."""
    registry = _registry(Settings())
    try:
        before = registry.aliases(name).get("production", "none")
        aliases = registry.rollback(name)
    except LookalikeError as exc:
        raise _fail(exc) from exc
    console.print(
        f"{name}: now serving [bold]{name}:{aliases['production']}[/bold] "
        f"(was {name}:{before}; previous is now {name}:{aliases.get('previous', '-')}). "
        "Restart the server (or wait for its alias reload) to serve it."
    )


# Training lives in its own module (torch, imported lazily); its commands belong under `models`.
app.command("train-embedding")(train_embedding)
app.command("train-localizer")(train_localizer)
