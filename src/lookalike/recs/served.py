"""One served recommendations release and its fallback chains.

    similar:    co-rental (popularity-weighted) → popular in category → popular → static list
    home:       personalised (history + recent events) → popular for the season → static layout
    occasions:  the season's most rented for the occasion (personalised) → static layout

``static.json`` is read on its own, so the static step answers when the arrays are damaged;
that generation reports itself degraded. When even it cannot be read the release does not load
(the slot serves ``previous``; with nothing loadable the routes answer 503 naming
``lookalike recs build``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.errors import NotFound, short_reason
from lookalike.lifecycle import Chain, LoadContext, Release, Step
from lookalike.lifecycle.single import ChainedGeneration, Unbuilt, product_chain
from lookalike.recs.events import ShopperEvent
from lookalike.recs.home import Carousel, build_page
from lookalike.recs.interactions import EVENT_WEIGHTS
from lookalike.recs.model import RecsModel, read_static
from lookalike.recs.occasions import occasion_name
from lookalike.recs.similar import Scored, corental_items

__all__ = ["BUILD_FIX", "RecsGeneration", "UnbuiltRecs"]

log = logging.getLogger("lookalike.recs")
BUILD_FIX = "lookalike recs build"


def _history(model: RecsModel, user_id: str, events: list[ShopperEvent]) -> tuple[dict, set]:
    """Her model history plus her recent events (weights of EVENT_WEIGHTS); items rented."""
    history = model.history(user_id)
    rented = set(history)
    for item_id, event, _at in events:
        j = model.item_index.get(item_id)
        if j is None:
            continue
        history[j] = history.get(j, 0.0) + EVENT_WEIGHTS[event]
        if event == "rented":
            rented.add(j)
    return history, rented


@dataclass
class ModelEngine:
    model: RecsModel
    personal: bool = True

    @property
    def served_by(self) -> str:
        return "recs-personalised" if self.personal else "recs-popular"

    def similar(self, item_id: str, k: int, month: int) -> list[Scored]:
        if self.personal:
            return corental_items(self.model, item_id, k, month)
        m = self.model
        item = m.item_index.get(item_id)
        among = None if item is None else m.category_items.get(str(m.item_category[item]))
        out: list[Scored] = []
        taken = set() if item is None else {item}
        for source, pool in (("category-popular", among), ("popular", None)):
            if source == "category-popular" and pool is None:
                continue
            for j in m.top(m.seasonal(month), k - len(out), pool, taken):
                out.append(Scored(str(m.items[j]), 0.0, source))
                taken.add(j)
        return out

    def home(self, user_id: str, events: list[ShopperEvent], month: int, k: int) -> list[Carousel]:
        history, rented = _history(self.model, user_id, events) if self.personal else ({}, set())
        return build_page(self.model, history, month, k, rented=rented)

    def occasion(
        self, name: str, user_id: str | None, events: list[ShopperEvent], month: int, k: int
    ) -> list[Scored]:
        m = self.model
        try:
            o = m.occasions.index(name)
        except ValueError:
            raise NotFound(f"no occasion {name!r}; known: {', '.join(m.occasions)}") from None
        scores = m.seasonal(month, o)
        top = float(scores.max()) or 1.0
        scores = scores / top
        exclude: set[int] = set()
        if self.personal and user_id:
            history, exclude = _history(m, user_id, events)
            if history:
                aff = m.affinity(history)
                if aff.max() > 0:
                    scores = scores + 0.3 * aff / aff.max()
        return [
            Scored(str(m.items[j]), round(float(scores[j]), 6), "occasion")
            for j in m.top(scores, k, None, exclude)
        ]


@dataclass
class StaticEngine:
    """The lists written at build time: no arrays, no personalisation."""

    doc: dict[str, Any]
    served_by: str = "static"

    def similar(self, item_id: str, k: int, month: int) -> list[Scored]:
        return [Scored(i, 0.0, "static") for i in self.doc["popular"] if i != item_id][:k]

    def home(self, user_id: str, events: list[ShopperEvent], month: int, k: int) -> list[Carousel]:
        return [
            Carousel(
                c["id"],
                c["title"],
                c["kind"],
                0.0,
                [Scored(i, 0.0, "static") for i in c["items"][:k]],
            )
            for c in self.doc["layout"]
        ]

    def occasion(
        self, name: str, user_id: str | None, events: list[ShopperEvent], month: int, k: int
    ) -> list[Scored]:
        for c in self.doc["layout"]:
            if c["id"] == f"occasion:{name}":
                return [Scored(i, 0.0, "static") for i in c["items"][:k]]
        known = [c["id"].split(":", 1)[1] for c in self.doc["layout"] if c["kind"] == "occasion"]
        raise NotFound(f"no occasion {name!r}; known: {', '.join(known)}")


Engine = ModelEngine | StaticEngine


class RecsGeneration(ChainedGeneration):
    product = "recs"

    def __init__(
        self,
        release: Release,
        context: LoadContext,
        model: RecsModel | None,
        why: str | None,
        static: StaticEngine,
        manifest: dict[str, Any],
    ) -> None:
        self.release = release
        self.model = model
        self.model_why = why
        self.static = static
        self.manifest = manifest
        self.version = str(release.members["model"])
        personal = None if model is None else ModelEngine(model, True)
        popular = None if model is None else ModelEngine(model, False)
        self.chains: dict[str, Chain[Any]] = {}
        for stage, first in (
            ("similar", "co-rental"),
            ("home", "personalised"),
            ("occasions", "personalised"),
        ):
            steps = [Step(first, personal, why, label=f"recs {first} {self.version}")]
            if stage != "occasions":
                steps.append(Step("popular", popular, why, label="popular for the season"))
            steps.append(Step("static", static, label="static list"))
            self.chains[stage] = product_chain("recs", stage, steps, context, BUILD_FIX)

    @classmethod
    def load(
        cls, release: Release, context: LoadContext, folder: Path, manifest: dict[str, Any]
    ) -> RecsGeneration:
        static = StaticEngine(read_static(folder))  # raises: nothing can serve
        model: RecsModel | None = None
        why: str | None = None
        try:
            model = RecsModel.load(folder)
            if not build_page(model, {}, 1, 3):
                raise ValueError("the popular layout is empty")
        except Exception as exc:  # noqa: BLE001 - the static lists answer; the reason is shown
            why = f"recs model {release.members['model']} could not load: {short_reason(exc, 200)}"
            log.warning("%s — serving the static lists", why)
            model = None
        return cls(release, context, model, why, static, manifest)

    # -- answers: (result, served_by, fallback reasons) -----------------------------------------
    def knows_item(self, item_id: str) -> bool:
        return self.model is not None and item_id in self.model.item_index

    def item_category(self, item_id: str) -> str | None:
        if self.model is None or item_id not in self.model.item_index:
            return None
        return str(self.model.item_category[self.model.item_index[item_id]])

    def similar(self, item_id: str, k: int, month: int) -> tuple[list[Scored], str, list[str]]:
        out, engine, reasons = self.chains["similar"].run(lambda e: e.similar(item_id, k, month))
        return out, engine.served_by, reasons

    def home(
        self, user_id: str, events: list[ShopperEvent], month: int, k: int
    ) -> tuple[list[Carousel], str, list[str]]:
        out, engine, reasons = self.chains["home"].run(lambda e: e.home(user_id, events, month, k))
        return out, engine.served_by, reasons

    def occasion(
        self, name: str, user_id: str | None, events: list[ShopperEvent], month: int, k: int
    ) -> tuple[list[Scored], str, list[str]]:
        name = occasion_name(name)
        known = self.occasions()
        if name not in known:  # before the chain: a wrong name is the caller's, not a failure
            raise NotFound(f"no occasion {name!r}; known: {', '.join(known)}")
        out, engine, reasons = self.chains["occasions"].run(
            lambda e: e.occasion(name, user_id, events, month, k)
        )
        return out, engine.served_by, reasons

    def occasions(self) -> list[str]:
        if self.model is not None:
            return list(self.model.occasions)
        return [
            c["id"].split(":", 1)[1] for c in self.static.doc["layout"] if c["kind"] == "occasion"
        ]

    # -- Generation ------------------------------------------------------------------------------
    @property
    def served_by(self) -> str:
        return "recs-personalised" if self.model is not None else "static"

    def health(self) -> dict[str, Any]:
        metrics = self.manifest.get("metrics", {})
        down = self.model is None
        why = f"{self.model_why} — serving the static lists; run `{BUILD_FIX}`"
        return self.health_body(
            {
                "items": None if self.model is None else len(self.model.items),
                "users": None if self.model is None else len(self.model.users),
                **{k: metrics.get(k) for k in ("ndcg@10", "hit@10", "home_hit@20")},
            },
            {
                stage: [step.label or step.name for step in chain.steps]
                for stage, chain in self.chains.items()
            },
            fell_back=down,
            problems=[why] if down else [],
        )


class UnbuiltRecs(Unbuilt):
    """The recs slot before any recommendations model was promoted (an optional product)."""

    product = "recs"
    build_fix = BUILD_FIX
