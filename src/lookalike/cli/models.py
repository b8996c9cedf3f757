"""``lookalike models``: build the default embedder, list models, promote, roll back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.registry import Ref, Registry

__all__ = ["app"]

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


@app.command("promote")
def promote_cmd(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to make production")],
) -> None:
    """Make NAME:VERSION production; the current production becomes previous."""
    registry = _registry(Settings())
    try:
        parsed = Ref.parse(ref, default_version="latest")
        aliases = registry.promote(parsed)
    except LookalikeError as exc:
        raise _fail(exc) from exc
    console.print(f"{parsed.name}: {aliases}")


@app.command("rollback")
def rollback_cmd(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Swap production and previous for NAME."""
    registry = _registry(Settings())
    try:
        aliases = registry.rollback(name)
    except LookalikeError as exc:
        raise _fail(exc) from exc
    console.print(f"{name}: {aliases}")
