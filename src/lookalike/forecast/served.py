"""One served forecast release, and its fallback chains (a lookup: nothing is fitted here).

    items:       ridge  →  seasonal naive  →  category share  →  static zero
    categories:  ridge  →  seasonal naive  →  static zero

Each step reads its own file (``ridge.npz``, ``naive.npz``); a file that cannot be read or
fails its checks disables that step (the generation reports itself degraded, with the reason).
"category share" is the item's share of its category's last 13 weeks × the category's forecast
(ridge, else naive). "static zero" answers 0 with a [0, 0] interval and says so in
``fallback``: it needs only the series list. When even ``series.npz`` or ``model.json`` cannot
be read the release does not load and the slot serves ``previous``; with nothing loadable the
routes answer 503 naming ``lookalike forecast build``.

Counts are reviews per week, a lower bound on rentals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import InvalidInput, NotFound, short_reason
from lookalike.forecast.tables import (
    METHOD_FILES,
    ForecastSeries,
    ForecastTable,
    read_meta,
)
from lookalike.lifecycle import Chain, LoadContext, Release, Step
from lookalike.lifecycle.single import ChainedGeneration, Unbuilt, product_chain

__all__ = [
    "BUILD_FIX",
    "UNIT",
    "CategoryShareEngine",
    "ForecastGeneration",
    "Query",
    "StaticZeroEngine",
    "TableEngine",
    "UnbuiltForecast",
]

log = logging.getLogger("lookalike.forecast")
BUILD_FIX = "lookalike forecast build"
UNIT = "reviews per week: a lower bound on rentals (not every renter writes a review)"


@dataclass(frozen=True)
class Query:
    """One request: ``level`` is ``items`` or ``categories``, ``row`` the series' row."""

    level: str
    row: int
    weeks: int
    level_index: int
    weeks_of: tuple[str, ...]


def _answer(
    q: Query, mu: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: tuple[float, ...]
) -> dict[str, Any]:
    return {
        "forecast": [
            {
                "week_start": q.weeks_of[h],
                "point": round(float(mu[h]), 3),
                "lower": round(float(lo[h]), 3),
                "upper": round(float(hi[h]), 3),
            }
            for h in range(q.weeks)
        ],
        "total": {
            "point": round(float(total[0]), 3),
            "lower": round(float(total[1]), 3),
            "upper": round(float(total[2]), 3),
        },
    }


@dataclass
class TableEngine:
    """Precomputed forecasts of one method (ridge or seasonal naive)."""

    tables: dict[str, ForecastTable]
    served_by: str

    def forecast(self, q: Query) -> dict[str, Any]:
        t = self.tables[q.level]
        r, w, li = q.row, q.weeks, q.level_index
        total = (
            float(t.mu[r, :w].sum()),
            float(t.cum_lower[r, li, w - 1]),
            float(t.cum_upper[r, li, w - 1]),
        )
        return _answer(q, t.mu[r], t.lower[r, li], t.upper[r, li], total)


@dataclass
class CategoryShareEngine:
    """An item's share of its category × the category's forecast (items only)."""

    series: ForecastSeries
    category: TableEngine
    served_by: str = "category-share"

    def forecast(self, q: Query) -> dict[str, Any]:
        if q.level != "items":
            raise InvalidInput("category share answers items only")
        cat = int(self.series.item_category[q.row])
        share = float(self.series.item_share[q.row])
        t = self.category.tables["categories"]
        w, li = q.weeks, q.level_index
        total = (
            share * float(t.mu[cat, :w].sum()),
            share * float(t.cum_lower[cat, li, w - 1]),
            share * float(t.cum_upper[cat, li, w - 1]),
        )
        return _answer(q, share * t.mu[cat], share * t.lower[cat, li], share * t.upper[cat, li],
                       total)  # fmt: skip


@dataclass
class StaticZeroEngine:
    """The last step: no forecast could load; 0 with a [0, 0] interval, said in ``fallback``."""

    served_by: str = "static-zero"

    def forecast(self, q: Query) -> dict[str, Any]:
        zeros = np.zeros(q.weeks)
        return _answer(q, zeros, zeros, zeros, (0.0, 0.0, 0.0))


class ForecastGeneration(ChainedGeneration):
    """A loaded forecast release: :meth:`forecast` runs the level's chain."""

    product = "forecast"

    def __init__(
        self,
        release: Release,
        context: LoadContext,
        folder: Path,
        manifest: dict[str, Any],
    ) -> None:
        self.release = release
        self.manifest = manifest
        self.version = str(release.members["model"])
        self.meta = read_meta(folder)  # raises: nothing can serve
        self.series = ForecastSeries.load(folder)  # raises: nothing can serve
        self.levels = tuple(float(x) for x in self.meta["levels"])
        self.horizon = int(self.meta["horizon"])
        self.weeks_of = tuple(self.meta["forecast_weeks"])
        self.history_weeks = tuple(self.meta["history_weeks"])
        sizes = {"items": self.series.item_ids.size, "categories": self.series.categories.size}
        engines: dict[str, TableEngine | None] = {}
        self.problems: list[str] = []
        self.why: dict[str, str | None] = {}
        for method, file in METHOD_FILES.items():
            served_by = "forecast-ridge" if method == "ridge" else "seasonal-naive"
            try:
                tables = ForecastTable.load_all(
                    folder / file, sizes, self.horizon, len(self.levels)
                )
                engines[method] = TableEngine(tables, served_by)
                self.why[method] = None
            except Exception as exc:  # noqa: BLE001 - the next step answers; the reason is shown
                why = f"{method} forecasts of {self.version} could not load: {short_reason(exc)}"
                log.warning("%s", why)
                engines[method] = None
                self.why[method] = why
                self.problems.append(why)
        self.ridge, self.naive = engines["ridge"], engines["naive"]
        share_source = self.ridge or self.naive
        share = None if share_source is None else CategoryShareEngine(self.series, share_source)
        zero = StaticZeroEngine()

        def chain(stage: str, steps: list[Step[Any]]) -> Chain[Any]:
            return product_chain("forecast", stage, steps, context, BUILD_FIX)

        ridge_step = Step("ridge", self.ridge, self.why["ridge"], label=f"ridge {self.version}")
        naive_step = Step("seasonal-naive", self.naive, self.why["naive"], label="seasonal naive")
        zero_step = Step("static-zero", zero, label="static zero")
        self.chains: dict[str, Chain[Any]] = {
            "items": chain(
                "items",
                [
                    ridge_step,
                    naive_step,
                    Step(
                        "category-share",
                        share,
                        "no category forecast loaded",
                        label="category share",
                    ),  # fmt: skip
                    zero_step,
                ],
            ),
            "categories": chain("categories", [ridge_step, naive_step, zero_step]),
        }

    @classmethod
    def load(
        cls, release: Release, context: LoadContext, folder: Path, manifest: dict[str, Any]
    ) -> ForecastGeneration:
        return cls(release, context, folder, manifest)

    def query(self, level: str, key: str, weeks: int, level_value: float) -> Query:
        """Validate a request: NotFound for an unknown series, InvalidInput for bad options."""
        if not 1 <= weeks <= self.horizon:
            raise InvalidInput(f"weeks must be between 1 and {self.horizon}, got {weeks}")
        matches = [i for i, lv in enumerate(self.levels) if abs(lv - level_value) < 1e-9]
        if not matches:
            known = " or ".join(f"{lv:g}" for lv in self.levels)
            raise InvalidInput(f"level must be {known}, got {level_value:g}")
        index = self.series.item_index if level == "items" else self.series.category_index
        row = index.get(key.strip().lower() if level == "categories" else key.strip())
        if row is None:
            what = "item" if level == "items" else "category"
            raise NotFound(
                f"no demand forecast for {what} {key[:60]!r}: it has no rental reviews up to "
                f"{self.meta['trained_until']} (ids are the rental data's item ids)"
            )
        return Query(level, row, weeks, matches[0], self.weeks_of)

    def history(self, q: Query) -> list[dict[str, Any]]:
        hist = (
            self.series.item_history[q.row]
            if q.level == "items"
            else self.series.category_history[q.row]
        )
        return [
            {"week_start": w, "reviews": int(round(float(v)))}
            for w, v in zip(self.history_weeks, hist, strict=True)
        ]

    def forecast(self, q: Query) -> tuple[dict[str, Any], str, list[str]]:
        """(answer, served_by, fallback reasons) for a validated query."""
        answer, engine, reasons = self.chains[q.level].run(lambda e: e.forecast(q))
        return answer, engine.served_by, reasons

    def category_of(self, row: int) -> str:
        return str(self.series.categories[int(self.series.item_category[row])])

    @property
    def served_by(self) -> str:
        if self.ridge is not None:
            return self.ridge.served_by
        return self.naive.served_by if self.naive is not None else "static-zero"

    def health(self) -> dict[str, Any]:
        metrics = self.manifest.get("metrics", {})
        have_naive = self.naive is not None
        naive = {"step": "seasonal naive", "ready": have_naive, "why": self.why.get("naive")}
        either = have_naive or self.ridge is not None
        share = {"step": "category share", "ready": either, "why": None}
        zero = {"step": "static zero", "ready": True, "why": None}
        down = self.ridge is None
        return self.health_body(
            {
                "trained_until": self.meta["trained_until"],
                "items": int(self.series.item_ids.size),
                "categories": int(self.series.categories.size),
                "backtest_mase_items": metrics.get("mase"),
                "backtest_mase_categories": metrics.get("mase_categories"),
                "unit": UNIT,
            },
            {"items": [naive, share, zero], "categories": [naive, zero]},
            fell_back=down,
            problems=[f"{p} — run `{BUILD_FIX}`" if down else p for p in self.problems],
        )


class UnbuiltForecast(Unbuilt):
    """What the forecast slot holds when no forecast was ever promoted (an optional product)."""

    product = "forecast"
    build_fix = BUILD_FIX
