"""The home page: carousels (for you, occasions, categories), their order and their items.

The popular layout (an unknown user): one carousel per occasion (``rented_for``: wedding,
formal affair, party, work, vacation, date, everyday, other) and per carousel category, ordered
by their share of this season's rentals, each holding the items most rented for it this season
(month of the year, smoothed over ±2 months, time-decayed).

Personalised (a user with a history: her rentals in the model plus her recent events):

- carousel order: her own share of each occasion and category, shrunk towards the season's
  (``(hers + PRIOR × season's) / (her total + PRIOR)``);
- items: season's popularity in the carousel + :data:`AFFINITY` × what the people who rented
  her items also rented (co-rental cosine), each scaled to its maximum;
- a first carousel "for you" ranked by that co-rental affinity alone.

Items she has already rented are not shown again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.recs.model import RecsModel
from lookalike.recs.similar import Scored

__all__ = ["AFFINITY", "Carousel", "PRIOR", "build_page", "page_items", "title_of"]

PRIOR = 1.0
AFFINITY = 0.3
VISIBLE = 4  # items a carousel shows before a shopper scrolls it sideways


@dataclass(frozen=True)
class Carousel:
    id: str  # for-you | occasion:wedding | category:gown
    title: str
    kind: str  # for-you | occasion | category
    score: float
    items: list[Scored]


def title_of(name: str) -> str:
    return name[:1].upper() + name[1:]


def _scaled(v: np.ndarray) -> np.ndarray:
    top = float(v.max()) if v.size else 0.0
    return v / top if top > 0 else np.zeros_like(v)


def _shares(values: np.ndarray) -> np.ndarray:
    total = float(values.sum())
    return values / total if total > 0 else np.full(len(values), 1.0 / max(1, len(values)))


def build_page(
    model: RecsModel,
    history: dict[int, float],
    month: int,
    per_carousel: int = 10,
    *,
    rented: set[int] | None = None,
) -> list[Carousel]:
    """The carousels in page order; ``history`` {item: weight} (empty: the popular layout)."""
    exclude = set(history) if rented is None else rented
    season = model.pop_month[month - 1]
    occ_season = model.occ_month[:, month - 1, :]
    cats = model.categories
    cat_global = _shares(np.array([season[model.category_items[c]].sum() for c in cats]))
    occ_global = _shares(occ_season.sum(axis=1))
    her_occ = np.zeros(len(model.occasions))
    her_cat = np.zeros(len(cats))
    cat_pos = {c: i for i, c in enumerate(cats)}
    for item, w in history.items():
        her_occ += w * model.item_occ[item]
        pos = cat_pos.get(str(model.item_category[item]))
        if pos is not None:
            her_cat[pos] += w
    affinity = _scaled(model.affinity(history)) if history else None
    carousels: list[Carousel] = []
    if affinity is not None and affinity.max() > 0:
        scores = affinity + 1e-3 * _scaled(season)  # ties broken by the season
        items = _ranked(model, scores, per_carousel, None, exclude, "co-rental")
        carousels.append(Carousel("for-you", "For you", "for-you", float("inf"), items))
    groups = (
        ("occasion", model.occasions, her_occ, occ_global),
        ("category", cats, her_cat, cat_global),
    )
    for kind, names, hers, glob in groups:
        shares = (hers + PRIOR * glob) / (hers.sum() + PRIOR)
        for i, name in enumerate(names):
            if kind == "occasion":
                base, among = _scaled(occ_season[i]), None
            else:
                base, among = _scaled(season), model.category_items[name]
            scores = base if affinity is None else base + AFFINITY * affinity
            items = _ranked(model, scores, per_carousel, among, exclude, "popular")
            if items:
                carousels.append(
                    Carousel(f"{kind}:{name}", title_of(name), kind, float(shares[i]), items)
                )
    return sorted(carousels, key=lambda c: (-c.score, c.id))


def _ranked(
    model: RecsModel,
    scores: np.ndarray,
    n: int,
    among: np.ndarray | None,
    exclude: set[int],
    source: str,
) -> list[Scored]:
    return [
        Scored(str(model.items[j]), round(float(scores[j]), 6), source)
        for j in model.top(scores, n, among, exclude)
    ]


def page_items(carousels: list[Carousel], n: int = 20, visible: int = VISIBLE) -> list[str]:
    """The first ``n`` distinct items a shopper sees: ``visible`` of each carousel in page
    order, then the next ``visible`` of each, and so on."""
    seen: list[str] = []
    start = 0
    longest = max((len(c.items) for c in carousels), default=0)
    while len(seen) < n and start < longest:
        for c in carousels:
            for s in c.items[start : start + visible]:
                if s.item_id not in seen:
                    seen.append(s.item_id)
                if len(seen) >= n:
                    return seen
        start += visible
    return seen
