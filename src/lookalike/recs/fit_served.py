"""One served fit release and its fallback chain.

    fit:  the model (P(small/fit/large) per size)  →  the item's own label shares  →  the prior

The item's label shares need only ``fit_arrays.npz``'s item counts and the prior only
``fit_model.json``'s ``prior``, so a damaged weight array still answers from the item's shares
and a damaged array file from the prior (a static answer: the same for everyone); that
generation reports itself degraded. An item the model has never seen is a 404 unless the
shopper names a size: then every step answers for that size with the item unknown.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import IntegrityError, NotFound, short_reason
from lookalike.lifecycle import LoadContext, Release, Step
from lookalike.lifecycle.single import ChainedGeneration, Unbuilt, product_chain
from lookalike.recs.fit import CLASSES, PRIOR_STRENGTH, FitModel, FitQuery, ItemStats
from lookalike.recs.likeme import Shopper, cup_index

__all__ = [
    "BUILD_FIX",
    "FitAnswer",
    "FitAsk",
    "FitGeneration",
    "UnbuiltFit",
    "check_probabilities",
]

log = logging.getLogger("lookalike.fit")
BUILD_FIX = "lookalike fit build"


@dataclass(frozen=True)
class FitAsk:
    """One request: the shopper, the item id, and the size she asks about (None: every size)."""

    shopper: Shopper
    item_id: str
    size: int | None = None


@dataclass(frozen=True)
class FitAnswer:
    sizes: list[dict[str, Any]]
    recommended_size: int | None
    item_known: bool
    reason: str


def check_probabilities(proba: np.ndarray) -> list[str]:
    problems = []
    if not np.all(np.isfinite(proba)):
        problems.append("probabilities have NaN or inf")
    elif np.any(proba < -1e-9) or np.any(np.abs(proba.sum(axis=1) - 1) > 1e-6):
        problems.append("probabilities are not shares summing to 1")
    return problems


def _sizes(stats: ItemStats | None, item: int, ask: FitAsk) -> list[int]:
    if ask.size is not None:
        return [ask.size]
    if stats is None or item < 0:
        raise NotFound(
            f"item {ask.item_id[:64]!r} has no rental reviews the fit model knows: name a "
            "`size` to get a prediction for it"
        )
    return stats.sizes_of(item)


def _answer(sizes: list[int], proba: np.ndarray, known: bool, reason: str) -> FitAnswer:
    rows = [
        {"size": s, **{c: round(float(proba[i, k]), 4) for k, c in enumerate(CLASSES)}}
        for i, s in enumerate(sizes)
    ]
    best = int(np.argmax(proba[:, 1])) if len(sizes) else -1
    return FitAnswer(rows, sizes[best] if best >= 0 else None, known, reason)


@dataclass
class ModelEngine:
    model: FitModel
    served_by: str = "fit-logistic"

    def query(self, ask: FitAsk, item: int, sizes: list[int]) -> FitQuery:
        s = ask.shopper
        n = len(sizes)

        def col(v: float | None) -> np.ndarray:
            return np.full(n, math.nan if v is None else float(v))

        body = np.empty(n, dtype=object)
        body[:] = s.body_type or ""
        return FitQuery(
            item=np.full(n, item, dtype=np.int64),
            size=np.array(sizes, dtype=np.float64),
            height=col(s.height_in),
            weight=col(s.weight_lbs),
            bust=col(s.bust_size_num),
            cup=col(None if s.bust_cup is None else cup_index(s.bust_cup)),
            body_type=body,
            usual_size=col(s.size),
            loo=np.full(n, -1, dtype=np.int64),
        )

    def answer(self, ask: FitAsk) -> FitAnswer:
        item = self.model.item_index(ask.item_id)
        sizes = _sizes(self.model.stats, item, ask)
        proba = self.model.predict_proba(self.query(ask, item, sizes))
        if item >= 0:
            n = int(self.model.stats.counts[item].sum())
            reason = f"logistic model: your measurements against the item's {n} reviews"
        else:
            reason = "logistic model; no reviews of the item, so your size and measurements only"
        return _answer(sizes, proba, item >= 0, reason)


@dataclass
class ItemShareEngine:
    """The item's smoothed label shares, the same for every size (the baseline)."""

    stats: ItemStats
    prior: np.ndarray
    index: dict[str, int]
    served_by: str = "item-majority"

    def answer(self, ask: FitAsk) -> FitAnswer:
        item = self.index.get(ask.item_id, -1)
        sizes = _sizes(self.stats, item, ask)
        counts = self.stats.counts[item] if item >= 0 else np.zeros(3)
        shares = (counts + PRIOR_STRENGTH * self.prior) / (counts.sum() + PRIOR_STRENGTH)
        reason = f"the item's own reviews: {int(counts.sum())} (no measurements used)"
        return _answer(sizes, np.tile(shares, (len(sizes), 1)), item >= 0, reason)


@dataclass
class PriorEngine:
    """How often each label happens overall: the static answer."""

    prior: np.ndarray
    stats: ItemStats | None = None
    index: dict[str, int] | None = None
    served_by: str = "global-prior"

    def answer(self, ask: FitAsk) -> FitAnswer:
        item = -1 if self.index is None else self.index.get(ask.item_id, -1)
        sizes = _sizes(self.stats, item, ask)
        return _answer(
            sizes,
            np.tile(self.prior, (len(sizes), 1)),
            item >= 0,
            "how often each label happens over every review (the same for everyone)",
        )


class FitGeneration(ChainedGeneration):
    """A loaded fit release: :meth:`answer` runs the chain model → item shares → prior."""

    product = "fit"

    def __init__(
        self,
        release: Release,
        context: LoadContext,
        steps: list[Step[Any]],
        problems: list[str],
        manifest: dict[str, Any],
    ) -> None:
        self.release = release
        self.version = str(release.members["model"])
        self.manifest = manifest
        self.problems = problems
        self.steps = steps
        self.index: dict[str, int] | None = None
        self.stats: ItemStats | None = None
        self.chain = product_chain("fit", "fit", steps, context, BUILD_FIX)
        self.chains = {"fit": self.chain}

    @classmethod
    def load(
        cls, release: Release, context: LoadContext, folder: Path, manifest: dict[str, Any]
    ) -> FitGeneration:
        version = str(release.members["model"])
        prior = FitModel.read_prior(folder)  # raises: nothing can serve
        problems: list[str] = []
        model: ModelEngine | None = None
        shares: ItemShareEngine | None = None
        stats: ItemStats | None = None
        model_why = share_why = None
        try:
            stats = FitModel.read_stats(folder)
            shares = ItemShareEngine(stats, prior, stats.index())
        except Exception as exc:  # noqa: BLE001 - the prior answers; the reason is shown
            share_why = f"fit item statistics of {version} could not load: {short_reason(exc)}"
            problems.append(share_why)
        try:
            loaded = FitModel.load(folder)
            probe = ModelEngine(loaded)
            ids = loaded.stats.ids
            sample = FitAsk(Shopper(height_in=65.0, weight_lbs=135.0, size=8), str(ids[0]))
            item = loaded.item_index(sample.item_id)
            bad = check_probabilities(
                loaded.predict_proba(probe.query(sample, item, loaded.stats.sizes_of(item) or [8]))
            )
            if bad:
                raise IntegrityError("; ".join(bad))
            model = probe
        except Exception as exc:  # noqa: BLE001
            model_why = f"fit model {version} could not load: {short_reason(exc, 200)}"
            problems.append(model_why)
        for why in problems:
            log.warning("%s — falling back", why)
        index = None if stats is None else stats.index()
        steps: list[Step[Any]] = [
            Step("model", model, model_why, label=f"fit model {version}"),
            Step("item-majority", shares, share_why, label="the item's label shares"),
            Step("global-prior", PriorEngine(prior, stats, index), label="the label prior"),
        ]
        generation = cls(release, context, steps, problems, manifest)
        generation.index = index
        generation.stats = stats
        return generation

    def answer(self, ask: FitAsk) -> tuple[FitAnswer, str, list[str]]:
        """(answer, served_by, fallback reasons); NotFound for an item the model does not know
        when no size is named (checked before the chain: it is the answer, not a failure)."""
        item = -1 if self.index is None else self.index.get(ask.item_id, -1)
        _sizes(self.stats, item, ask)
        answer, engine, reasons = self.chain.run(lambda e: e.answer(ask))
        return answer, engine.served_by, reasons

    @property
    def served_by(self) -> str:
        return next(s.engine.served_by for s in self.steps if s.engine is not None)

    def health(self) -> dict[str, Any]:
        metrics = self.manifest.get("metrics", {})
        return self.health_body(
            {k: metrics.get(k) for k in ("macro_f1", "mean_auc", "items")},
            {
                "fit": [
                    {"step": s.name, "ready": s.engine is not None, "why": s.why}
                    for s in self.steps
                ]
            },
            fell_back=bool(self.problems),
            problems=[f"{p} — run `{BUILD_FIX}`" for p in self.problems],
        )


class UnbuiltFit(Unbuilt):
    """The fit slot before any fit model was promoted: /health says how; /v1/fit is a 503."""

    product = "fit"
    build_fix = BUILD_FIX

    def answer(self, ask: FitAsk) -> tuple[FitAnswer, str, list[str]]:
        raise self.unavailable()
