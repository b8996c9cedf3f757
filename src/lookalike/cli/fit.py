"""``lookalike fit``: rental reviews import, fit prediction (build, eval), reviews of women like me.

``lookalike fit import FILE`` (also ``lookalike catalog import-rentals FILE``) loads rental
reviews into the catalog database and prints the data checks; ``lookalike fit build`` fits and
registers a fit model (promote it through ``lookalike registry``); ``lookalike eval fit`` (added
by :func:`add_eval_commands`) prints the model's macro-F1 and per-class AUC next to the
baseline's on the time split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lookalike.catalog.rental_store import RentalData, RentalStore, training_rentals
from lookalike.catalog.rentals import DEFAULT_RENTALS, RentalCheck
from lookalike.cli.progress import progress_bar
from lookalike.core.settings import Settings
from lookalike.core.textfiles import write_output

__all__ = [
    "DataOpt",
    "add_eval_commands",
    "app",
    "eval_fit",
    "import_rentals",
    "print_checks",
    "rentals_for",
]

app = typer.Typer(
    help="Shopper fit: rental reviews import, size and fit prediction, reviews of women like me.",
    no_args_is_help=True,
)
console = Console()

# One option and one rule for every command that fits on rental reviews (fit, recs, forecast).
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="rental reviews, Parquet or CSV (default: the reviews `lookalike fit import` put in "
        f"the database, else {DEFAULT_RENTALS})",
    ),
]


def rentals_for(data: Path | None, settings: Settings | None = None) -> RentalData:
    """The reviews to fit on (``training_rentals``), said once: which file or the database."""
    found = training_rentals(settings or Settings(), data)
    console.print(f"rental reviews: {found.label}", highlight=False)
    return found


def print_checks(check: RentalCheck) -> None:
    """The data checks of a rentals file: counts, span, implausible and missing values."""
    console.print(
        f"{check.rows} reviews, {check.users} users, {check.items} items, "
        f"{check.first} → {check.last} (reviews are a lower bound on rentals)"
    )
    table = Table(title="data checks (implausible values are treated as missing)")
    table.add_column("column")
    table.add_column("implausible", justify="right")
    table.add_column("missing", justify="right")
    table.add_column("missing %", justify="right")
    for name in sorted(set(check.implausible) | set(check.missing)):
        missing = check.missing.get(name, 0)
        table.add_row(
            name,
            str(check.implausible.get(name, "")),
            str(missing),
            f"{missing / max(check.rows, 1):.1%}",
        )
    console.print(table)


@app.command("import")
def import_rentals(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, metavar="PATH", help="Parquet or CSV"),
    ],
    limit: Annotated[
        int | None, typer.Option("--limit", help="import only the first N rows")
    ] = None,
) -> None:
    """Import rental reviews into the catalog database; importing again adds nothing."""
    settings = Settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    store = RentalStore.for_settings(settings)
    store.create_schema()
    with progress_bar(f"importing {file.name}") as progress:
        check, report = store.import_file(
            file, limit=limit, progress=lambda done, total: progress("rows", done, total)
        )
    counts = store.counts()
    print_checks(check)
    console.print(
        f"batch {report.batch}: {report.rows_read} rows read, {report.added} added, "
        f"{report.duplicates} already stored or repeated in the file"
    )
    console.print(
        f"the database holds {counts.rows} reviews of {counts.items} items by {counts.users} "
        f"users ({counts.first} → {counts.last})"
    )


def eval_fit(
    data: DataOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    test_from: Annotated[
        str | None, typer.Option("--test-from", help="first day of the later part (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Fit on the past, macro-F1 and per-class AUC on the later months vs the item majority."""
    from lookalike.recs.fit_build import evaluate_fit  # fitting code: CLI-only import

    source = rentals_for(data)
    with console.status("fitting on the past"):
        figures = evaluate_fit(source.rentals, test_from=test_from)
    table = Table(
        title=f"fit prediction — {figures['split']}; {figures['train_rows']} train / "
        f"{figures['test_rows']} test reviews (reviews are a lower bound on rentals)"
    )
    # One row per figure, one column per model: ten figures side by side would not fit 80
    # columns, and a table cut to fit shows "0.46…" instead of the number.
    models = (("item majority (baseline)", "baseline"), ("logistic (ours)", "model"))
    table.add_column("figure")
    for name, _ in models:
        table.add_column(name, justify="right")
    rows = [("macro-F1", lambda f: f["macro_f1"])]
    rows += [(f"F1 {c}", lambda f, c=c: f["f1"][c]) for c in ("small", "fit", "large")]
    rows += [(f"AUC {c}", lambda f, c=c: f["auc"][c]) for c in ("small", "fit", "large")]
    rows += [("mean AUC", lambda f: f["mean_auc"]), ("accuracy", lambda f: f["accuracy"])]
    for label, value in rows:
        table.add_row(label, *(f"{value(figures[key]):.4f}" for _, key in models))
    console.print(table)
    console.print(
        f"later labels {figures['label_share']}; items of the later months the model knows: "
        f"{figures['later_items_known']:.1%}; imbalance: {figures['class_imbalance']}"
    )
    if json_out:
        write_output(json_out, json.dumps(figures, indent=2))
        console.print(f"wrote {json_out}")


@app.command("build")
def build_cmd(
    data: DataOpt = None,
    test_from: Annotated[
        str | None, typer.Option("--test-from", help="first day of the later part (YYYY-MM-DD)")
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="also check and promote it (else: a candidate)")
    ] = False,
) -> None:
    """Fit on the past, measure on the later months, register a candidate `fit:N`."""
    from lookalike.recs.fit_build import build_fit_model  # fitting code: CLI-only import
    from lookalike.registry import Registry

    settings = Settings()
    source = rentals_for(data, settings)
    registry = Registry(settings.models_dir, "model")
    with console.status("fitting a fit model"):
        ref = build_fit_model(registry, source, test_from=test_from)
    m = registry.manifest(ref)
    f, b = m["metrics"], m["baseline"]
    console.print(
        f"built {ref}: macro-F1 {f['macro_f1']:.4f} (baseline {b['macro_f1']:.4f}), mean AUC "
        f"{f['mean_auc']:.4f} (baseline {b['mean_auc']:.4f}) on {m['holdout_rows']} later "
        f"reviews ({m['split']})"
    )
    if promote:
        from lookalike.cli.models import run_promote

        run_promote(settings, "model", str(ref), force=False)
    else:
        console.print(f"promote it with `lookalike models promote {ref}`")


def add_eval_commands(eval_app: typer.Typer) -> None:
    """Add this product's metric command to ``lookalike eval``."""
    eval_app.command("fit")(eval_fit)
