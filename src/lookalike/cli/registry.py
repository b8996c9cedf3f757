"""``lookalike registry``: show and repair what the model and index registries hold.

A damaged ``aliases.json`` (not JSON, not an object, versions that do not exist) never stops the
server or ``lookalike models``/``index``: the registry serves what is valid and reports the rest.
This is the command that puts the file right again, and that shows what a kill -9 left behind.

Mounted in ``cli/main.py`` as ``app.add_typer(registry_cli.app, name="registry")``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.registry import Ref, Registry

__all__ = ["app", "repair_cmd", "show_cmd"]

app = typer.Typer(
    help="Inspect and repair the registries (models/ and index/).", no_args_is_help=True
)
console = Console()


class Kind(StrEnum):
    models = "models"
    index = "index"
    all = "all"


def _registries(settings: Settings, kind: Kind) -> list[Registry]:
    out = []
    if kind in (Kind.models, Kind.all):
        out.append(Registry(settings.models_dir, "model"))
    if kind in (Kind.index, Kind.all):
        out.append(Registry(settings.index_dir, "index"))
    return out


@app.command("repair")
def repair_cmd(
    name: Annotated[str | None, typer.Argument(help="artifact name (default: every name)")] = None,
    kind: Annotated[Kind, typer.Option("--kind", help="which registry")] = Kind.all,
) -> None:
    """Rewrite damaged alias files from what is valid, and remove dead writers' temp folders.

    Where no valid production alias is left, production points at the newest version that
    passed its checks (else the newest intact one). Exit 1 when NAME is in no registry.
    """
    found = False
    for registry in _registries(Settings(), kind):
        names = registry.names() if name is None else [n for n in [name] if n in registry.names()]
        for each in names:
            found = True
            try:
                done = registry.repair_aliases(each)
            except LookalikeError as exc:
                console.print(f"[red]{registry.kind} {each}: {exc.message}[/]")
                raise typer.Exit(1) from exc
            if done["changed"] or done["actions"]:
                console.print(f"[yellow]{registry.kind} {each}: repaired[/]")
                for action in done["actions"]:
                    console.print(f"  {action}", soft_wrap=True)
                console.print(f"  aliases now: {_aliases_text(done['after'])}")
            else:
                console.print(
                    f"[green]{registry.kind} {each}: sound[/] ({_aliases_text(done['after'])})"
                )
    if name is not None and not found:
        console.print(f"[red]no artifact named {name!r} in {kind.value}[/]")
        raise typer.Exit(1)
    if not found:
        console.print(f"nothing to repair: no artifacts in {kind.value}")


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="artifact name, e.g. effnet_lite0 or catalog")],
    kind: Annotated[Kind, typer.Option("--kind", help="which registry")] = Kind.all,
) -> None:
    """Versions, aliases, alias-file problems and unfinished writes of NAME."""
    shown = False
    for registry in _registries(Settings(), kind):
        if name not in registry.names():
            continue
        shown = True
        aliases = registry.aliases(name)
        table = Table("version", "aliases", "created", "checks", title=f"{registry.kind} {name}")
        for version in registry.versions(name):
            try:
                manifest = registry.manifest(Ref(name, version))
            except LookalikeError as exc:
                table.add_row(version, "", "", f"[red]{exc.message}[/]")
                continue
            checks = manifest.get("checks")
            passed = checks.get("passed") if isinstance(checks, dict) else None
            table.add_row(
                version,
                ",".join(a for a, v in aliases.items() if v == version),
                str(manifest.get("created_at", "")),
                {True: "passed", False: "failed", None: "-"}.get(passed, "-"),
            )
        console.print(table)
        for problem in registry.alias_problems(name):
            console.print(f"[red]aliases.json: {problem}[/]", soft_wrap=True)
        leftovers = registry.leftovers(name)
        if leftovers:
            console.print(
                f"[yellow]{len(leftovers)} unfinished write(s):[/] "
                + ", ".join(p.name for p in leftovers)
            )
        if registry.alias_problems(name) or leftovers:
            console.print(f"run `lookalike registry repair {name}` to fix")
    if not shown:
        console.print(f"[red]no artifact named {name!r} in {kind.value}[/]")
        raise typer.Exit(1)


def _aliases_text(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a}={v}" for a, v in aliases.items()) or "no aliases"
