"""``lookalike models``: build the default, list, check, promote (after checks), roll back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from lookalike.cli.train import train_embedding, train_localizer
from lookalike.core.errors import LookalikeError, NotFound
from lookalike.core.settings import Settings
from lookalike.lifecycle import Kind, KindRegistry, PromoteOutcome, promote, rollback
from lookalike.lifecycle.checks import recorded_metrics
from lookalike.registry import Ref, Registry
from lookalike.registry.checks import CheckReport
from lookalike.serve.products import default_kinds

__all__ = ["app", "check_table", "run_checks", "run_promote", "run_rollback"]

log = logging.getLogger("lookalike.cli")

app = typer.Typer(help="Embedding models in the registry (models/).", no_args_is_help=True)
console = Console()


def _registry(settings: Settings) -> Registry:
    return Registry(settings.models_dir, "model")


@app.command("build-default")
def build_default_cmd(
    calibration: Annotated[
        Path,
        typer.Option(help="folder of real photos: int8 calibration and fidelity figures"),
    ] = Path("demo/catalog/images"),
    name: Annotated[str, typer.Option(help="registry name of the model")] = "effnet_lite0",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="catalog CSV (columns image, category) whose photos fit the garment-aware "
            "head; default: items.csv beside the calibration folder, if there is one"
        ),
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="the ImageNet backbone alone (no detector, no head)")
    ] = False,
    detector_size: Annotated[
        int | None,
        typer.Option(help="garment detector input, px (multiple of 32; default 256, packaged 320)"),
    ] = None,
    detector_fp32: Annotated[
        bool,
        typer.Option(
            "--detector-fp32",
            help="serve the detector in fp32 (default: int8 when "
            "it agrees with fp32 on the labelled photos)",
        ),
    ] = False,
) -> None:
    """Build the default embedder: EfficientNet-Lite0 (ImageNet) as ONNX fp32 + int8, plus the
    garment detector and a head fitted on the demo photos; measure, register, promote."""
    settings = Settings()
    images = sorted(
        p for p in calibration.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}
    )
    if not images:
        console.print(f"[red]error:[/red] no images in {calibration}")
        raise typer.Exit(code=1)
    labels = labels or (calibration.parent / "items.csv")
    labelled: list[tuple[Path, str]] = []
    kind_classifier: Path | None = None
    if not plain and labels.is_file():
        from lookalike.embed.garment_default import KIND_CLASSIFIER_FILE, read_labelled

        labelled = read_labelled(labels)
        # the kind classifier fitted on more photos of the same kinds, shipped beside the CSV
        shipped = labels.parent / KIND_CLASSIFIER_FILE
        kind_classifier = shipped if shipped.is_file() else None
    try:
        from lookalike.embed.build import build_default
    except ImportError as exc:
        console.print(
            f"[red]error:[/red] building needs the build extra ({exc}): "
            "pip install 'lookalike[build]'"
        )
        raise typer.Exit(code=1) from exc
    registry = _registry(settings)
    with console.status("building the default model") as status:

        def progress(msg: str, *_count: int | None) -> None:  # build_default: lines only
            console.log(msg)
            status.update(msg)

        ref = build_default(
            registry,
            images,
            name=name,
            progress=progress,
            labelled=labelled,
            detector_size=detector_size,
            detector_int8=not detector_fp32,
            kind_classifier=kind_classifier,
        )
    m = registry.manifest(ref)
    _print_summary([(ref, m)], registry)
    console.print(f"built {ref}, serving [bold]{m['default_variant']}[/bold]: {m['reason']}")
    # The default passes the same checks as any model before it becomes production.
    run_promote(settings, "model", str(ref), force=False)


def _fmt_latency(m: dict[str, Any]) -> str:
    lat = m.get("latency_batch1", {})
    parts = [
        f"{v} {lat[v]['median_ms']:.1f}/{lat[v]['p95_ms']:.1f}"
        for v in ("fp32", "int8")
        if v in lat
    ]
    return ", ".join(parts) if parts else "-"


# The default table fits an 80-column terminal: one column per figure a reader acts on, the
# served variant's p95 only, the date of creation only. `--wide` and `--json` keep the rest.
NARROW_WIDTH = 80


def _served_p95(m: dict[str, Any]) -> str:
    """The served variant's batch-1 p95 (an embedder), else its latency check's p95."""
    lat = m.get("latency_batch1", {}).get(str(m.get("default_variant")))
    if not lat:
        results = (m.get("checks") or {}).get("results") or {}
        lat = (results.get("latency") or {}).get("figures") or {}
    p95 = lat.get("p95_ms")
    return f"{p95:.1f}" if isinstance(p95, int | float) else "-"


def _summary_row(ref: Ref, m: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """The figures of one model, as --json prints them (the tables show a selection)."""
    return {
        "ref": str(ref),
        "aliases": sorted(a for a, v in registry.aliases(ref.name).items() if v == ref.version),
        "variant": m.get("default_variant"),
        "embedding_dim": m.get("embedding_dim"),
        "created_at": m.get("created_at"),
        "latency_batch1": m.get("latency_batch1", {}),
        "int8_fidelity": m.get("int8_fidelity", {}),
        "onnx_vs_torch_max_abs_diff": m.get("onnx_vs_torch_max_abs_diff"),
        "task": m.get("task"),
        "metrics": recorded_metrics(m),
    }


def _summary_table(
    rows: list[tuple[Ref, dict[str, Any]]], registry: Registry, wide: bool = False
) -> Table:
    if wide:
        return _wide_table(rows, registry)
    table = Table(
        title=f"models in {registry.root}",
        caption="--wide or --json: every figure",
        box=box.SIMPLE,
    )
    # Dates and figures never break; a very long name folds rather than push past 80 columns.
    longest = max((len(str(ref)) for ref, _ in rows), default=5)
    table.add_column("model", overflow="fold", min_width=min(longest, 20))
    table.add_column("aliases")
    table.add_column("created", no_wrap=True)
    table.add_column("p95 ms", no_wrap=True)
    table.add_column("held to", no_wrap=True)
    table.add_column("int8\nR@10", no_wrap=True)
    for ref, m in rows:
        row = _summary_row(ref, m, registry)
        fid = row["int8_fidelity"]
        table.add_row(
            row["ref"],
            ", ".join(row["aliases"]) or "-",
            str(row["created_at"] or "-")[:10],
            _served_p95(m),
            _held_to(row["metrics"]),
            f"{fid['recall_at_10']:.3f}" if fid else "-",
        )
    return table


def _held_to(metrics: list[dict[str, Any]]) -> str:
    """The first metric the model's checks measured, e.g. ``mape 0.145``; ``-`` when none."""
    if not metrics:
        return "-"
    return f"{metrics[0]['metric']} {metrics[0]['value']:.3f}"


def _wide_table(rows: list[tuple[Ref, dict[str, Any]]], registry: Registry) -> Table:
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


def _print_summary(
    rows: list[tuple[Ref, dict[str, Any]]], registry: Registry, wide: bool = False
) -> None:
    table = _summary_table(rows, registry, wide=wide)
    # Rich sizes to the terminal; the narrow table is capped so it never passes 80 columns.
    console.print(table, width=None if wide else min(console.width, NARROW_WIDTH))


@app.command("list")
def list_cmd(
    wide: Annotated[bool, typer.Option("--wide", help="every figure, in wider columns")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="every figure, as JSON")] = False,
) -> None:
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
    if as_json:
        typer.echo(json.dumps([_summary_row(ref, m, registry) for ref, m in rows], indent=2))
        return
    if not rows:
        console.print(f"no models in {registry.root} — run `lookalike models build-default`")
        return
    _print_summary(rows, registry, wide=wide)


def check_table(report: CheckReport, title: str | None = None) -> Table:
    """Every check of ``report``: name, PASS/FAIL, what it found (failed rows in red)."""
    table = Table(title=title or f"checks of {report.ref}")
    for col in ("check", "result", "finding"):
        table.add_column(col)
    for r in report.results:
        mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(r.name, mark, r.message if r.passed else f"[red]{r.message}[/red]")
    return table


def run_promote(
    settings: Settings,
    registry_kind: str,
    ref: str,
    *,
    force: bool,
    check_options: dict[str, Any] | None = None,
) -> PromoteOutcome:
    """The CLI face of the one promote path: check, print the table, promote or exit 1.

    ``registry_kind`` is ``model`` or ``index``; the product that owns the artifact is found
    from the manifest's ``task`` (or the artifact's name).
    """
    kinds = default_kinds(settings)
    kind, role = _owner(kinds, settings, registry_kind, ref)
    with console.status(f"checking {ref}"):
        outcome = promote(
            kind,
            role,
            ref,
            force=force,
            check_options=check_options,
        )
    if outcome.status == "already":
        console.print(f"{outcome.ref} is already production; nothing to do")
        return outcome
    assert outcome.report is not None
    console.print(check_table(outcome.report))
    what = "models" if registry_kind == "model" else "index"
    failed = ", ".join(outcome.failed_checks)
    if outcome.status == "refused":
        console.print(
            f"[red]refused:[/red] {outcome.ref} failed {len(outcome.failed_checks)} check(s) "
            f"({failed}); production is unchanged ({outcome.production_before or 'none'})"
        )
        raise typer.Exit(code=1)
    if outcome.status == "forced":
        console.print(
            f"[bold red]WARNING: --force promotes {outcome.ref} although {failed} failed. "
            f"Roll back with `lookalike {what} rollback {outcome.ref.name}`.[/bold red]"
        )
    console.print(
        f"[green]{outcome.ref} is production[/green] "
        f"(previous: {outcome.aliases.get('previous', '-')})"
    )
    for note in outcome.notes:
        console.print(f"[yellow]{note}[/yellow]")
    return outcome


def _owner(
    kinds: KindRegistry, settings: Settings, registry_kind: str, ref: str
) -> tuple[Kind, str]:
    parsed = Ref.parse(ref, default_version="latest")
    registry = (
        Registry(settings.models_dir, "model")
        if registry_kind == "model"
        else Registry(settings.index_dir, "index")
    )
    task = registry.manifest(parsed).get("task")
    if task:
        try:
            kind = kinds.for_task(str(task))
            role = kind.role_of(registry_kind, parsed.name) or _first_role(kind, registry_kind)
            return kind, role
        except LookalikeError:
            pass
    return kinds.owner(registry_kind, parsed.name)


def _first_role(kind: Kind, registry_kind: str) -> str:
    for role in kind.roles:
        if kind.registry(role).kind == registry_kind:
            return role
    raise NotFound(f"{kind.product} has no {registry_kind} artifacts")


def run_rollback(settings: Settings, registry_kind: str, name: str) -> None:
    """The CLI face of the one rollback: the artifact and what must move with it."""
    kinds = default_kinds(settings)
    kind, role = kinds.owner(registry_kind, name)
    outcome = rollback(kind, role, name)
    for moved_role, (before, after) in outcome.moved.items():
        console.print(
            f"{moved_role}: now serving [bold]{after}[/bold] (was {before})"
            if moved_role == role
            else f"{moved_role}: rolled back with it to [bold]{after}[/bold] (was {before})"
        )
    if outcome.release is not None:
        console.print(f"{kind.product} release: {outcome.release.describe()}")
    for note in outcome.notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print("Running servers pick it up within their alias reload (or restart them).")


PairsOpt = Annotated[
    Path | None,
    typer.Option("--pairs", help="pairs.csv for the metric check (default: the golden set)"),
]
RootOpt = Annotated[Path | None, typer.Option("--root", help="folder the pairs' paths are in")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="only this split of --pairs")]


def run_checks(
    settings: Settings, registry_kind: str, ref: str, check_options: dict[str, Any]
) -> CheckReport:
    """Run the owning kind's checks on ``ref`` without promoting (recorded in its manifest)."""
    kinds = default_kinds(settings)
    kind, role = _owner(kinds, settings, registry_kind, ref)
    resolved = kind.registry(role).resolve(Ref.parse(ref, default_version="latest"))
    with console.status(f"checking {resolved}"):
        return kind.check(role, resolved, **check_options)


@app.command("check")
def check_cmd(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to check (default version: latest)")],
    pairs: PairsOpt = None,
    root: RootOpt = None,
    split: SplitOpt = None,
) -> None:
    """Run the deploy checks on NAME:VERSION without promoting; exit 1 if any fails."""
    report = run_checks(Settings(), "model", ref, {"pairs": pairs, "root": root, "split": split})
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
    run_promote(
        Settings(),
        "model",
        ref,
        force=force,
        check_options={"pairs": pairs, "root": root, "split": split},
    )


@app.command("rollback")
def rollback_cmd(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Move production back to previous in one atomic step (the two swap; nothing is deleted)."""
    run_rollback(Settings(), "model", name)


# Training lives in its own module (torch, imported lazily); its commands belong under `models`.
app.command("train-embedding")(train_embedding)
app.command("train-localizer")(train_localizer)
