"""``lookalike forecast``: build a demand forecast, and what to buy.

``lookalike forecast build --data PATH`` backtests, fits and registers a candidate
(``demand_forecast:N``; ``--promote`` runs the checks and promotes it, else
``lookalike models promote demand_forecast:N``). ``lookalike forecast buy`` turns the production
forecast into units to buy per item. ``lookalike eval forecast`` (added by
:func:`add_eval_commands`) prints the backtest: MASE and interval coverage of the ridge next to
the seasonal naive's. Every count is reviews, a lower bound on rentals.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from lookalike.cli.fit import DataOpt, rentals_for
from lookalike.cli.price import _cell
from lookalike.core.errors import InvalidInput, LookalikeError
from lookalike.core.settings import Settings
from lookalike.core.textfiles import output_file, write_output
from lookalike.forecast.kind import ARTIFACT_NAME
from lookalike.forecast.quantiles import nb_quantile
from lookalike.forecast.served import BUILD_FIX
from lookalike.forecast.tables import METHOD_FILES, ForecastSeries, ForecastTable, read_meta
from lookalike.registry import Ref, Registry

__all__ = ["add_eval_commands", "app", "buy_units", "eval_forecast", "read_stock"]

app = typer.Typer(help="Demand forecasts and what to buy.", no_args_is_help=True)
console = Console()

LOWER_BOUND = "reviews are a lower bound on rentals: real demand is higher"
STOCK_COLUMNS = ("stock", "units", "quantity", "on_hand")


@app.command("build")
def build_cmd(
    data: DataOpt = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="check and promote it (else a candidate)")
    ] = False,
) -> None:
    """Backtest, fit on every week and register a demand forecast (a candidate)."""
    from lookalike.forecast.build import build_forecast  # fitting code: CLI-only import

    settings = Settings()
    registry = Registry(settings.models_dir, "model")
    source = rentals_for(data, settings)
    with console.status("forecasting demand") as status:
        ref = build_forecast(registry, source, progress=status.update)
    m = registry.manifest(ref)
    f = m["metrics"]
    console.print(
        f"built {ref} (ridge + TSB): backtest MASE items {f['mase']:.3f} (seasonal naive "
        f"{f['baseline_mase']:.3f}), categories {f['mase_categories']:.3f} (seasonal naive "
        f"{f['baseline_mase_categories']:.3f}); MAE relative to the seasonal naive items "
        f"{f['rel_mae']:.3f}, categories {f['rel_mae_categories']:.3f}; 80 % interval "
        f"coverage items {f['coverage80_items']:.1%} (randomised PIT "
        f"{f['pit_coverage80_items']:.1%}), categories {f['coverage80_categories']:.1%} "
        f"(PIT {f['pit_coverage80_categories']:.1%}) "
        f"({m['data']['rows']} reviews to {m['data']['last']}; {LOWER_BOUND})"
    )
    if promote:
        from lookalike.cli.models import run_promote

        run_promote(settings, "model", str(ref), force=False)
    else:
        console.print(f"promote it with `lookalike models promote {ref}`")


def read_stock(path: Path) -> dict[str, float]:
    """item_id → units on hand from a CSV with ``item_id`` and one of :data:`STOCK_COLUMNS`."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            column = next((fields[c] for c in STOCK_COLUMNS if c in fields), None)
            if "item_id" not in fields or column is None:
                raise InvalidInput(
                    f"{path} needs the columns item_id and one of {', '.join(STOCK_COLUMNS)}"
                )
            stock: dict[str, float] = {}
            for n, row in enumerate(reader, start=2):
                item = str(row[fields["item_id"]]).strip()
                try:
                    units = float(row[column])
                except (TypeError, ValueError):
                    raise InvalidInput(f"{path} line {n}: {column} is not a number") from None
                if not np.isfinite(units) or units < 0:
                    raise InvalidInput(f"{path} line {n}: {column} must be ≥ 0")
                stock[item] = stock.get(item, 0.0) + units
            return stock
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def buy_units(
    folder: Path, weeks: int, service_level: float, stock: dict[str, float]
) -> tuple[list[dict[str, object]], str]:
    """One row per item: the ``service_level`` quantile of its demand over ``weeks`` weeks
    minus its stock (never negative), largest first; and which method answered."""
    meta = read_meta(folder)
    series = ForecastSeries.load(folder)
    horizon = int(meta["horizon"])
    if not 1 <= weeks <= horizon:
        raise InvalidInput(f"--weeks must be between 1 and {horizon}")
    if not 0.5 <= service_level < 1.0:
        raise InvalidInput("--service-level must be in [0.5, 1)")
    sizes = {"items": series.item_ids.size, "categories": series.categories.size}
    table, method = None, ""
    problems = []
    for name, file in METHOD_FILES.items():  # ridge, else the seasonal naive
        try:
            table = ForecastTable.load_all(folder / file, sizes, horizon, len(meta["levels"]))
        except LookalikeError as exc:
            problems.append(exc.message)
            continue
        # ridge.npz holds the ridge + TSB blend in artifacts that say so (``served``)
        method = "ridge_tsb" if name == "ridge" and "served" in meta else name
        break
    if table is None:
        raise LookalikeError("no forecast table loads: " + "; ".join(problems))
    items = table["items"]
    expected = items.mu[:, :weeks].sum(axis=1)
    upper = nb_quantile(expected, items.cum_inv_k[:, weeks - 1], service_level)
    rows = []
    for i, item in enumerate(series.item_ids):
        key = str(int(item))
        on_hand = stock.get(key)
        units = max(0.0, float(upper[i]) - (on_hand or 0.0))
        rows.append(
            {
                "item_id": key,
                "category": str(series.categories[int(series.item_category[i])]),
                "expected_reviews": round(float(expected[i]), 3),
                f"upper_q{round(service_level * 100):d}": int(upper[i]),
                "stock": "" if on_hand is None else f"{on_hand:g}",
                "buy": int(np.ceil(units)),
            }
        )
    rows.sort(key=lambda r: (-int(r["buy"]), -float(r["expected_reviews"])))  # type: ignore[arg-type]
    return rows, method


@app.command("buy")
def buy_cmd(
    weeks: Annotated[int, typer.Option("--weeks", help="horizon in weeks, 1–8")] = 8,
    service_level: Annotated[
        float, typer.Option("--service-level", help="chance the stock covers the demand")
    ] = 0.9,
    stock_csv: Annotated[
        Path | None,
        typer.Option("--stock", help="CSV item_id,stock (absent: no stock on hand)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="CSV report")] = Path("forecast_buy.csv"),
    version: Annotated[str, typer.Option(help="forecast version or alias")] = "production",
) -> None:
    """Units to buy per item: the upper quantile of demand over the horizon minus stock.

    The catalog store keeps no stock count (only whether an item is available), so stock comes
    from ``--stock``; without it every item counts as having none.
    """
    registry = Registry(Settings().models_dir, "model", fix=BUILD_FIX)
    ref = registry.resolve(Ref(ARTIFACT_NAME, version))
    stock = read_stock(stock_csv) if stock_csv else {}
    rows, method = buy_units(registry.path(ref), weeks, service_level, stock)
    with output_file(out) as f:
        fields = [*rows[0].keys(), "model_version", "method"] if rows else ["item_id"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    **r,
                    "category": _cell(str(r["category"])),
                    "model_version": str(ref),
                    "method": method,
                }
            )
    total = sum(int(r["buy"]) for r in rows)  # type: ignore[call-overload]
    unknown = sum(1 for r in rows if r["stock"] == "")
    console.print(
        f"{total} units over {sum(1 for r in rows if r['buy'])} items to cover {weeks} weeks at "
        f"a {service_level:.0%} service level ({ref}, {method}) → {out}"
        + (f"; {unknown} items had no stock row (counted as 0)" if stock_csv else "")
        + f". Demand is counted from reviews: {LOWER_BOUND}"
    )


def _figure_table(title: str, figures: dict) -> Table:
    table = Table(title=title)
    cols = (
        "method", "MASE (median)", "rel MAE (median)", "series", "cover 80 % (PIT)",
        "cover 90 % (PIT)", "≤ upper 90 %", "≥ lower 90 %", "buy90 (PIT)",
    )  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "method" else "right")

    def fmt(v: object, pct: bool = False) -> str:
        if v is None:
            return "—"
        return f"{v:.1%}" if pct else f"{v:.3f}" if isinstance(v, float) else str(v)

    def pair(a: object, b: object, pct: bool = False) -> str:
        return "—" if a is None else f"{fmt(a, pct)} ({fmt(b, pct)})"

    for method, f in figures.items():
        table.add_row(
            method,
            pair(f["mase"], f["mase_median"]),
            pair(f["rel_mae"], f["rel_mae_median"]),
            fmt(f["series_scored"]),
            pair(f.get("coverage80"), f.get("pit_coverage80"), True),
            pair(f.get("coverage90"), f.get("pit_coverage90"), True),
            fmt(f.get("below_upper90"), True),
            fmt(f.get("above_lower90"), True),
            pair(f.get("buy90"), f.get("buy90_pit"), True),
        )
    return table


def eval_forecast(
    data: DataOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """Rolling-origin backtest: MASE, relative MAE and interval coverage (plain and randomised
    PIT), the served ridge + TSB blend, the ridge, TSB and the seasonal naive."""
    from lookalike.forecast.evaluation import backtest, summarise
    from lookalike.forecast.series import weekly_demand

    try:
        source = rentals_for(data)
        demand = weekly_demand(source.rentals)
        with console.status("backtesting") as status:
            bt = backtest(demand, progress=status.update)
    except ValueError as exc:  # a series too short to backtest: the user's data, not a bug
        raise InvalidInput(str(exc)) from exc
    figures = summarise(bt, demand)
    origins = figures["origins"]
    out = Console(width=max(console.width, 150))  # the tables are wide: never wrap a figure
    out.print(
        f"{source.label}: {demand.item_ids.size} items, {demand.categories.size} categories, "
        f"{demand.weeks} weeks to {demand.end}; {len(origins)} origins {origins[0]} → "
        f"{origins[-1]}, 1–8 weeks ahead. Unit: reviews per week ({LOWER_BOUND})."
    )
    out.print(_figure_table("categories", figures["categories"]))
    out.print(_figure_table("items (≥ 65 weeks of history)", figures["items"]))
    out.print(
        _figure_table(
            f"dense items (≥ 1 review a week over the data's last year: {figures['dense_items']};"
            " chosen with a look at the weeks forecast)",
            figures["items_dense"],
        )
    )
    out.print(
        _figure_table(
            "dense at the origin (≥ 1 review a week over the 52 weeks before each origin)",
            figures["items_dense_at_origin"],
        )
    )
    served = figures.get("served", "ridge")
    per = Table(title=f"largest categories ({served} and ridge vs seasonal naive)")
    for col in (
        "category", "reviews last year", f"{served} MASE", "ridge MASE", "naive MASE",
        f"{served} rel MAE", f"{served} cover 80 % (PIT)",
    ):  # fmt: skip
        per.add_column(col, justify="left" if col == "category" else "right")

    def num(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "—"

    for name, f in figures["per_category"].items():
        per.add_row(
            name,
            str(f["reviews_last_year"]),
            num(f.get(f"{served}_mase")),
            num(f["ridge_mase"]),
            num(f["seasonal_naive_mase"]),
            num(f.get(f"{served}_rel_mae")),
            f"{f[f'{served}_coverage80']:.1%} ({f[f'{served}_pit_coverage80']:.1%})",
        )
    out.print(per)
    w = figures.get("ridge_weight", {})
    if w:
        out.print(
            "mean weight of the ridge in the blend, h = 1..8 (fitted at each origin on the 52 "
            "origins before it): "
            + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v) for k, v in w.items())
        )
    s = figures["sparsity"]
    out.print(
        f"sparsity (last {s['weeks']} weeks): {s['items_with_reviews']} items reviewed, "
        f"{s['zero_item_weeks_share']:.1%} of item-weeks have no review, median "
        f"{s['median_reviews_per_week']:.2f} reviews a week per item, "
        f"{s['items_under_one_per_week_share']:.1%} of items under one a week"
    )
    if json_out:
        write_output(json_out, json.dumps({"data": source.source, **figures}, indent=2))
        out.print(f"wrote {json_out}")


def add_eval_commands(eval_app: typer.Typer) -> None:
    """Add this product's metric command to ``lookalike eval``."""
    eval_app.command("forecast")(eval_forecast)
