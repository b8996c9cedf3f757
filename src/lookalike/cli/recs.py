"""``lookalike recs``: You may also like, carousels and occasions.

``lookalike recs build --data PATH`` is the nightly refresh: it reads the rental reviews and
every shopper event in the database, fits, evaluates on the time split, registers
``recommendations:N`` and promotes it through its checks (servers pick it up by reload).
``lookalike eval similar`` and ``lookalike eval home`` (added by :func:`add_eval_commands`)
print the model's figures next to their baselines' on the time split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lookalike.catalog.rentals import time_split
from lookalike.cli.fit import DataOpt, rentals_for
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.core.textfiles import write_output

__all__ = ["add_eval_commands", "app", "eval_home", "eval_similar"]

app = typer.Typer(help="You may also like, carousels and occasions.", no_args_is_help=True)
console = Console()

JsonOpt = Annotated[Path | None, typer.Option("--json", help="write the figures here")]
NOTE = "reviews are a lower bound on rentals: a 'next rental' is the next reviewed one"


def _write(json_out: Path | None, doc: dict[str, Any]) -> None:
    if json_out:
        write_output(json_out, json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}")


def _evaluate(data: Path | None, which: str) -> dict[str, Any]:
    from lookalike.recs.build import fit_recs_model  # fitting code: CLI-only import
    from lookalike.recs.evaluation import (
        evaluate_home,
        evaluate_similar,
        home_cases,
        similar_cases,
    )
    from lookalike.recs.interactions import Interactions

    source = rentals_for(data)
    with console.status("fitting on the past, scoring the later months"):
        rentals = source.rentals
        past, later = time_split(rentals)
        model = fit_recs_model(Interactions.from_rentals(past))
        if which == "similar":
            figures = evaluate_similar(model, similar_cases(past, later))
        else:
            figures = evaluate_home(model, home_cases(past, later))
    split = f"past < {later.review_date.min()} ≤ later (to {later.review_date.max()})"
    return {"split": split, "data": source.source, "note": NOTE, **figures}


def eval_similar(data: DataOpt = None, json_out: JsonOpt = None) -> None:
    """You may also like: hit rate@10 and NDCG@10 of each user's next rental vs popularity."""
    doc = _evaluate(data, "similar")
    table = Table(title=f"you may also like — {doc['split']}; {doc['cases']} next rentals")
    for col in ("list", "hit@10", "NDCG@10"):
        table.add_column(col, justify="left" if col == "list" else "right")
    for name, row in doc["rows"].items():
        table.add_row(name, f"{row['hit@10']:.4f}", f"{row['ndcg@10']:.4f}")
    console.print(table)
    console.print(
        f"{NOTE}. Visual similarity cannot be measured here: the RTR items have no photos."
    )
    _write(json_out, doc)


def eval_home(data: DataOpt = None, json_out: JsonOpt = None) -> None:
    """Home page: hit rate@20 of the page a user sees vs the popular layout."""
    doc = _evaluate(data, "home")
    table = Table(
        title=f"home page — {doc['split']}; {doc['cases']} later users, "
        f"{doc['users_with_history']} with a history"
    )
    for col in ("page", "hit@20 (all)", "hit@20 (with history)"):
        table.add_column(col, justify="left" if col == "page" else "right")
    for name, row in doc["rows"].items():
        table.add_row(name, f"{row['hit@20']:.4f}", f"{row['hit@20 (users with history)']:.4f}")
    console.print(table)
    console.print(f"{NOTE}; the first 20 items = 4 of each carousel in page order, then 4 more…")
    _write(json_out, doc)


@app.command("build")
def build_cmd(
    data: DataOpt = None,
    events: Annotated[bool, typer.Option(help="fold in the shopper events of the database")] = True,
    promote: Annotated[bool, typer.Option(help="check and promote it")] = True,
    force: Annotated[bool, typer.Option("--force", help="promote even if checks fail")] = False,
) -> None:
    """Fit on rentals + events, evaluate on the time split, register, check and promote."""
    from lookalike.recs.build import build_recs_model  # fitting code: CLI-only import
    from lookalike.recs.events import EventStore
    from lookalike.registry import Registry

    settings = Settings()
    try:
        source = rentals_for(data, settings)
        rentals = source.rentals
        folded = None
        if events:
            store = EventStore(settings.db_url, settings.db)
            store.create_schema()
            folded = store.interactions()
        registry = Registry(settings.models_dir, "model")
        with console.status("fitting") as status:
            ref = build_recs_model(
                registry,
                rentals,
                events=folded,
                source=source.source,
                progress=status.update,
            )
    except ValueError as exc:  # rentals that cannot be fitted: the user's data, not a bug
        raise LookalikeError(str(exc)) from exc
    m = registry.manifest(ref)["metrics"]
    console.print(
        f"built {ref}: NDCG@10 {m['ndcg@10']:.4f}, hit@10 {m['hit@10']:.4f}, home hit@20 "
        f"{m['home_hit@20']:.4f} on the later months; {0 if folded is None else len(folded)} "
        "events folded in"
    )
    if promote:
        from lookalike.cli.models import run_promote

        run_promote(settings, "model", str(ref), force=force)
    else:
        console.print(f"promote it with `lookalike models promote {ref}`")


def add_eval_commands(eval_app: typer.Typer) -> None:
    """Add this product's metric commands to ``lookalike eval``."""
    eval_app.command("similar")(eval_similar)
    eval_app.command("home")(eval_home)
