"""One served price release, and its fallback chain.

    price:  the model (ridge / knn / blend)  →  the rule of thumb stored with it, floored

The rule of thumb needs only ``model.json``'s ratio and floor, so it still answers when the
model's arrays are damaged or its output fails the load check; that generation reports itself
degraded. When even ``model.json`` cannot be read the release does not load: the slot serves
``previous``, and with no loadable version the route answers 503 naming ``lookalike price
build``. No constant price is ever invented: that 503 is the last step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import IntegrityError, short_reason
from lookalike.lifecycle import LoadContext, Release, Step
from lookalike.lifecycle.single import ChainedGeneration, Unbuilt, product_chain
from lookalike.price.listings import CATEGORICAL, FABRICS, Listings
from lookalike.price.model import PriceModel, bounds

__all__ = [
    "BUILD_FIX",
    "ModelEngine",
    "PriceGeneration",
    "RuleEngine",
    "UnbuiltPrice",
    "probe_listings",
]

log = logging.getLogger("lookalike.price")
BUILD_FIX = "lookalike price build"
NEIGHBOURS = 5


def probe_listings(model: PriceModel, n: int = 3) -> Listings:
    """A few dresses shaped like the training ones (for load checks): retail at quantiles."""
    retail = np.quantile(model.train_retail, np.linspace(0.1, 0.9, n))
    brands = [model.train_brand[i % len(model.train_brand)] for i in range(n)]
    cats = {
        k: [model.space.cats[k][0] if model.space.cats[k] else "unknown"] * n for k in CATEGORICAL
    }
    return Listings(
        brand=brands,
        description=[""] * n,
        retail=retail,
        rent=np.full(n, np.nan),
        reviews=np.full(n, 10.0),
        fabrics=np.tile(np.eye(len(FABRICS))[0] * 100.0, (n, 1)),
        cats=cats,
    )


def check_output(model: PriceModel, listings: Listings) -> list[str]:
    """What is wrong with the model's answers on ``listings`` (empty: finite, floored, coherent)."""
    out = model.suggest(listings)
    problems = []
    for name, arr in (("price", out.price), ("low", out.low), ("high", out.high)):
        if not np.all(np.isfinite(arr)):
            problems.append(f"{name} has NaN or inf")
    if not problems:
        if np.any(out.price < model.floor - 1e-9):
            problems.append(f"a price is below the floor ${model.floor:g}")
        if np.any(out.low > out.price + 1e-9) or np.any(out.high < out.price - 1e-9):
            problems.append("an interval does not contain its price")
    return problems


@dataclass
class ModelEngine:
    model: PriceModel
    version: str

    @property
    def served_by(self) -> str:
        return f"price-{self.model.method}"

    def price(self, listings: Listings) -> list[dict[str, Any]]:
        out = self.model.suggest(listings)
        similar = self.model.similar(listings, NEIGHBOURS)
        answers = []
        for i in range(len(listings)):
            neighbours = similar[i]
            answers.append(
                {
                    "suggested_price": round(float(out.price[i]), 2),
                    "interval": {
                        "low": round(float(out.low[i]), 2),
                        "high": round(float(out.high[i]), 2),
                        "level": round(self.model.interval_level, 3),
                    },
                    "floor": self.model.floor,
                    "floor_applied": bool(out.floor_applied[i]),
                    "rounded_to": self.model.step,
                    "similar": [n.to_dict() for n in neighbours],
                    "reason": PriceModel.reason(
                        listings.brand[i], listings.cats["length"][i], neighbours
                    ),
                }
            )
        return answers


@dataclass
class RuleEngine:
    """median(rent/retail) × retail, floored: what the business did before any model."""

    ratio: float
    floor: float
    interval: tuple[float, float]
    version: str
    served_by: str = "rule-of-thumb"

    def price(self, listings: Listings) -> list[dict[str, Any]]:
        raw = self.ratio * listings.retail
        price = np.maximum(raw, self.floor)
        low, high = bounds(raw, price, self.interval, 0.0, self.floor)
        return [
            {
                "suggested_price": round(float(price[i]), 2),
                "interval": {
                    "low": round(float(low[i]), 2),
                    "high": round(float(high[i]), 2),
                    "level": 0.8,
                },
                "floor": self.floor,
                "floor_applied": bool(raw[i] < self.floor),
                "rounded_to": 0.0,
                "similar": [],
                "reason": (
                    f"rule of thumb: {self.ratio:.1%} of the retail price"
                    f" (floor ${self.floor:g}); no similar dresses: the model is not answering"
                ),
            }
            for i in range(len(listings))
        ]


class PriceGeneration(ChainedGeneration):
    """A loaded price release: :meth:`price` runs the chain model → rule of thumb."""

    product = "price"

    def __init__(
        self,
        release: Release,
        context: LoadContext,
        model: ModelEngine | None,
        model_why: str | None,
        rule: RuleEngine,
        manifest: dict[str, Any],
    ) -> None:
        self.release = release
        self.model = model
        self.model_why = model_why
        self.rule = rule
        self.manifest = manifest
        self.version = rule.version
        engine: ModelEngine | RuleEngine | None = model
        steps: list[Step[Any]] = [
            Step("model", engine, model_why, label=f"price model {self.version}"),
            Step("rule-of-thumb", rule, label="rule of thumb"),
        ]
        self.chain = product_chain("price", "price", steps, context, BUILD_FIX)
        self.chains = {"price": self.chain}

    @classmethod
    def load(
        cls, release: Release, context: LoadContext, folder: Path, manifest: dict[str, Any]
    ) -> PriceGeneration:
        version = str(release.members["model"])
        ratio, floor, interval = PriceModel.read_rule(folder)  # raises: nothing can serve
        rule = RuleEngine(ratio, floor, interval, version)
        model: ModelEngine | None = None
        why: str | None = None
        try:
            loaded = PriceModel.load(folder)
            problems = check_output(loaded, probe_listings(loaded))
            if problems:
                raise IntegrityError("; ".join(problems))
            model = ModelEngine(loaded, version)
        except Exception as exc:  # noqa: BLE001 - the rule of thumb answers; the reason is shown
            why = f"price model {version} could not load: {short_reason(exc, 200)}"
            log.warning("%s — serving the rule of thumb", why)
        return cls(release, context, model, why, rule, manifest)

    def price(self, listings: Listings) -> tuple[list[dict[str, Any]], str, list[str]]:
        """(answers, served_by, fallback reasons)."""
        answers, engine, reasons = self.chain.run(lambda e: e.price(listings))
        return answers, engine.served_by, reasons

    @property
    def served_by(self) -> str:
        return self.model.served_by if self.model is not None else self.rule.served_by

    def health(self) -> dict[str, Any]:
        metrics = self.manifest.get("metrics", {})
        down = self.model is None
        why = f"{self.model_why} — serving the rule of thumb; run `{BUILD_FIX}`"
        return self.health_body(
            {
                "method": None if self.model is None else self.model.model.method,
                "holdout_mape": metrics.get("mape"),
                "floor": self.rule.floor,
            },
            {"price": [{"step": "rule of thumb", "ready": True, "why": None}]},
            fell_back=down,
            problems=[why] if down else [],
        )


class UnbuiltPrice(Unbuilt):
    """The price slot before any price model was promoted: ``POST /v1/price`` is a 503."""

    product = "price"
    build_fix = BUILD_FIX

    def price(self, listings: Listings) -> tuple[list[dict[str, Any]], str, list[str]]:
        raise self.unavailable()
