"""``lookalike refresh``, ``lookalike report`` and ``lookalike events``: the scheduled jobs.

Mounted in ``cli/main.py``::

    app.command("refresh")(refresh_cli.refresh_cmd)
    app.command("report")(refresh_cli.report_cmd)
    app.add_typer(refresh_cli.events_app, name="events")

``python -m lookalike.cli.refresh`` runs the same commands without the main app.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings

__all__ = ["app", "events_app", "export_pairs_cmd", "refresh_cmd", "report_cmd"]

console = Console()
events_app = typer.Typer(
    help="Anonymous search feedback (impressions and clicks).", no_args_is_help=True
)


def refresh_cmd(
    catalog_file: Path = typer.Option(
        None, "--catalog", help="Full catalog CSV/JSONL to import first (default: none)"
    ),
    images: Path = typer.Option(
        None, help="Folder image paths are relative to (default: the catalog file's folder)"
    ),
) -> None:
    """Import catalog changes, embed what changed, check, and promote or keep production.

    Exit codes: 0 promoted or up to date; 1 input failed its data checks; 2 the new index failed
    its checks (production kept); 75 another refresh holds the lock (try again later).
    """
    from lookalike.jobs.refresh import EXIT_BUSY, RefreshBusy, run_refresh

    settings = Settings()
    last: dict[str, int] = {}

    def progress(step: str, done: int | None = None, total: int | None = None, /) -> None:
        # One line per step and every ~10 %: readable in cron mail and easy to follow in tests.
        if done is None or total is None:
            print(step, flush=True)
            return
        tick = max(1, total // 10)
        if done == total or done // tick != last.get(step, -1):
            last[step] = done // tick
            print(f"{step} {done}/{total}", flush=True)

    try:
        outcome = run_refresh(
            settings, catalog_file=catalog_file, images_root=images, progress=progress
        )
    except RefreshBusy as exc:
        console.print(f"[yellow]{exc.message}[/]")
        raise typer.Exit(EXIT_BUSY) from exc
    except LookalikeError as exc:
        console.print(f"[red]refresh failed:[/] {exc.message}")
        raise typer.Exit(1) from exc
    colour = "green" if outcome.exit_code == 0 else "red"
    console.print(f"[{colour}]{outcome.status}[/]: {outcome.summary}", soft_wrap=True)
    console.print(f"report: {outcome.report_path}")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def report_cmd(
    out: Path = typer.Option(None, help="HTML file to write (default: <home>/reports/report.html)"),
) -> None:
    """Write a self-contained HTML report: metrics by version, latency, fallbacks, edge cases."""
    from lookalike.jobs.report import write_report
    from lookalike.serve.products import default_kinds

    settings = Settings()
    target = out or settings.home / "reports" / "report.html"
    try:
        path = write_report(settings, target, default_kinds(settings))
    except LookalikeError as exc:
        console.print(f"[red]report failed:[/] {exc.message}")
        raise typer.Exit(1) from exc
    console.print(f"report written to {path}")


@events_app.command("export-pairs")
def export_pairs_cmd(
    out: Path = typer.Argument(..., help="CSV to write: query_item_id,clicked_item_id,clicks"),
    min_clicks: int = typer.Option(1, min=1, help="Keep pairs clicked at least this often"),
) -> None:
    """Turn clicks on "similar items" results into training pairs."""
    from lookalike.jobs.events import EventStore

    store = EventStore(Settings().db_url)
    store.create_schema()
    n = store.export_pairs(out, min_clicks=min_clicks)
    store.close()
    console.print(f"wrote {n} pairs to {out}")


@events_app.command("ctr")
def ctr_cmd() -> None:
    """Click-through within the top 10 over every recorded search."""
    from lookalike.jobs.events import EventStore

    store = EventStore(Settings().db_url)
    store.create_schema()
    console.print(store.ctr_at_10().to_dict())
    store.close()


app = typer.Typer(no_args_is_help=True)
app.command("refresh")(refresh_cmd)
app.command("report")(report_cmd)
app.add_typer(events_app, name="events")

if __name__ == "__main__":
    sys.exit(app())
