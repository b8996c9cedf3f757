"""``lookalike price``: build (fit, register, check, promote), train only, and batch suggestions.

``lookalike eval price`` (registered in ``cli/eval.py``) prints the evaluation table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.core.textfiles import output_file, write_output
from lookalike.price.evaluation import DEFAULT_SEED, Evaluation, default_data, evaluate, load_split
from lookalike.price.kind import ARTIFACT_NAME
from lookalike.price.listings import read_listings
from lookalike.price.model import PriceModel
from lookalike.price.served import BUILD_FIX, ModelEngine
from lookalike.registry import Ref, Registry

__all__ = ["app", "eval_price", "evaluation_table"]

app = typer.Typer(help="Rental price suggestion (models/rental_price).", no_args_is_help=True)
console = Console()

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="listings CSV (default: ../shared/data/prices/rtr_dresses.csv)"),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of the 80/20 split and the CV folds")]
MethodOpt = Annotated[
    str | None, typer.Option("--method", help="ridge | knn | blend | boost (default: CV's choice)")
]


def _cell(text: str) -> str:
    # A spreadsheet runs a cell that starts with = + - @ as a formula: quote it.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def evaluation_table(ev: Evaluation) -> Table:
    table = Table(
        title=f"price models — {ev.split}; test {ev.test_rows} dresses "
        f"({ev.test_above_floor} above the ${ev.floor:g} floor"
        + (f", {ev.test_unseen_brand} of a brand not in training" if ev.test_unseen_brand else "")
        + ")"
    )
    for col in ("model", "MAE $", "MAPE", "MAE above floor $", "floored", ""):
        table.add_column(col, justify="left" if col in ("model", "") else "right")
    for row in ev.rows:
        f = row.figures
        table.add_row(
            row.name,
            f"{f['mae']:.2f}",
            f"{f['mape']:.4f}",
            f"{f['mae_above_floor']:.2f}",
            f"{f['floored_share']:.1%}",
            "[green]chosen by CV[/green]" if row.chosen else "",
        )
    return table


def eval_price(
    train: Annotated[
        Path | None, typer.Option("--train", help="training CSV (alone: split it 80/20)")
    ] = None,
    test: Annotated[Path | None, typer.Option("--test", help="test CSV (needs --train)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    seed: SeedOpt = DEFAULT_SEED,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="how one file is split 80/20: random, or brand (no brand on both sides)",
        ),
    ] = "random",
) -> None:
    """Fit every row's model on the training file; MAE, MAPE, MAE above the floor on the test.

    No files: the seeded random 80/20 split of the shared rtr_dresses.csv.
    """
    if train is None and test is None and not default_data().is_file():
        raise LookalikeError(
            f"no --train/--test given and {default_data()} is absent: pass files of the "
            "rtr_dresses.csv columns"
        )
    tr, te, how, reads = load_split(train, test, seed=seed, by=split)
    with console.status("cross-validating on the training file") as status:
        ev = evaluate(tr, te, split=how, reads=reads, seed=seed, progress=status.update)
    for read in ev.reads:
        if read.dropped or read.filled:
            console.print(
                f"{read.source}: {read.kept} of {read.rows} rows kept, {read.dropped} dropped"
                + (f" ({'; '.join(read.reasons[:3])})" if read.reasons else "")
                + (f"; filled {read.filled}" if read.filled else "")
            )
    console.print(evaluation_table(ev))
    sel = ev.selection
    console.print(
        f"CV ({sel.folds} folds on the training file, seed {sel.seed}): alpha {sel.alpha:g}, "
        f"k {sel.k}, brand weight {sel.brand_weight:g}, blend {sel.blend:g}, scale {sel.scale:g}"
        f"; CV MAPE {', '.join(f'{k} {v:.4f}' for k, v in sel.cv_mape.items())}"
        f"; rounding {', '.join(f'${s:g} {v:.4f}' for s, v in sel.step_mape.items())}"
        f" (chosen: {f'${sel.step:g}' if sel.step else 'none'})"
    )
    console.print(
        f"interval: {ev.interval['level']:.0%} ({ev.interval['quantiles']}); "
        f"test rents inside: {ev.interval['coverage_on_test']:.1%}"
    )
    if json_out:
        write_output(json_out, json.dumps(ev.to_dict(), indent=2))
        console.print(f"wrote {json_out}")


def _train(data: Path | None, seed: int, method: str | None) -> Ref:
    from lookalike.price.build import build_price_model  # fitting code: CLI-only import

    source = data or default_data()
    registry = Registry(Settings().models_dir, "model")
    with console.status(f"fitting a price model on {source}") as status:
        ref = build_price_model(registry, source, seed=seed, method=method, progress=status.update)
    m = registry.manifest(ref)
    figures = m["metrics"]
    console.print(
        f"built {ref}: {m['method']}, held-out MAPE {figures['mape']:.4f}, MAE "
        f"${figures['mae']:.2f}, interval coverage {figures['interval_coverage']:.1%} "
        f"({m['split']}, {m['train_rows']} train / {m['holdout_rows']} held out)"
    )
    return ref


@app.command("train")
def train_cmd(data: DataOpt = None, seed: SeedOpt = DEFAULT_SEED, method: MethodOpt = None) -> None:
    """Fit and register a price model (not promoted: `lookalike models promote NAME:VERSION`)."""
    ref = _train(data, seed, method)
    console.print(f"promote it with `lookalike models promote {ref}`")


@app.command("build")
def build_cmd(
    data: DataOpt = None,
    seed: SeedOpt = DEFAULT_SEED,
    method: MethodOpt = None,
    force: Annotated[bool, typer.Option("--force", help="promote even if checks fail")] = False,
) -> None:
    """Fit, register, check (MAPE vs production) and promote a price model."""
    from lookalike.cli.models import run_promote

    ref = _train(data, seed, method)
    run_promote(Settings(), "model", str(ref), force=force)


@app.command("suggest")
def suggest_cmd(
    items: Annotated[Path, typer.Argument(help="CSV of dresses (rtr_dresses.csv columns)")],
    out: Annotated[Path | None, typer.Option("--out", help="CSV to write")] = None,
    version: Annotated[str, typer.Option(help="model version or alias")] = "production",
) -> None:
    """Price a batch of dresses into a CSV a merchandiser can review."""
    registry = Registry(Settings().models_dir, "model", fix=BUILD_FIX)
    ref = registry.resolve(Ref(ARTIFACT_NAME, version))
    engine = ModelEngine(PriceModel.load(registry.path(ref)), str(ref))
    listings, report = read_listings(items, require_rent=False)
    answers = engine.price(listings)
    target = out or items.with_name(items.stem + ".priced.csv")
    fields = [
        "brand", "description", "retail_price", "length", "sleeves", "neckline",
        "suggested_price", "low", "high", "floor_applied", "rounded_to", "reason", "similar",
        "model_version",
    ]  # fmt: skip
    with output_file(target) as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for i, a in enumerate(answers):
            writer.writerow(
                {
                    "brand": _cell(listings.brand[i]),
                    "description": _cell(listings.description[i]),
                    "retail_price": f"{listings.retail[i]:.2f}",
                    **{k: _cell(listings.cats[k][i]) for k in ("length", "sleeves", "neckline")},
                    "suggested_price": f"{a['suggested_price']:.2f}",
                    "low": f"{a['interval']['low']:.2f}",
                    "high": f"{a['interval']['high']:.2f}",
                    "floor_applied": "yes" if a["floor_applied"] else "no",
                    "rounded_to": f"{a['rounded_to']:g}",
                    "reason": _cell(a["reason"]),
                    "similar": _cell(
                        "; ".join(
                            f"{s['brand']} {s['description']} (retail ${s['retail_price']:.0f}, "
                            f"rents ${s['rent_price']:.0f})"
                            for s in a["similar"]
                        )
                    ),
                    "model_version": str(ref),
                }
            )
    console.print(
        f"priced {len(answers)} dresses with {ref} → {target}"
        + (
            f"; {report.dropped} rows dropped ({'; '.join(report.reasons[:3])})"
            if report.dropped
            else ""
        )
    )
