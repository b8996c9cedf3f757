"""You may also like: items rented by the same people, blended with items that look alike.

:func:`corental_items` is the recommendations model's list for one item: its co-rental
neighbours (cosine on the time-decayed user × item matrix), filled up with what is popular in
its category this season, then what is popular overall — so a list is always full, and each
entry says which of the three it came from. :func:`blend` mixes that list with the visual
neighbours from the search index::

    score = (1 - blend) * visual / max(visual) + blend * corental / max(corental)

``blend`` 0 is visual only, 1 co-rental only. An item with no rentals has no co-rental part: it
gets its visual neighbours only (and says so). Fill entries (popular in category, popular) never
enter a blend: they are a fallback, not a signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lookalike.recs.model import RecsModel

__all__ = ["DEFAULT_BLEND", "Scored", "blend", "corental_items"]

# Chosen from `lookalike eval similar` (docs/recs.md): co-rental beats popularity on the RTR time
# split; visual similarity cannot be measured there (RTR has no photos), so it gets the smaller
# share and fills in for items with few or no co-rentals.
DEFAULT_BLEND = 0.7
CORENTAL = 0.7  # share of co-rental in the item list (module doc of corental_items)
POOL = 50


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float
    source: str  # co-rental | category-popular | popular | visual | blend


def corental_items(
    model: RecsModel, item_id: str, k: int, month: int, *, fill: bool = True
) -> list[Scored]:
    """Up to ``k`` items for ``item_id`` (not itself); [] for an item the model never saw.

    Candidates: its co-rental neighbours, the season's most popular items in its category and
    overall. Score ``CORENTAL × cos/max(cos) × √season + (1 − CORENTAL) × season × (2 if same
    category)``, ``season`` the season's popularity scaled to 1: on the RTR split a pure
    cosine list loses to popularity (rare items co-occur by chance), this mix does not
    (docs/recs.md). ``fill=False``: co-rental neighbours only.
    """
    item = model.item_index.get(item_id)
    if item is None:
        return []
    near = dict(model.corental(item, model.nb_idx.shape[1]))
    season = model.seasonal(month)
    top = float(season.max()) or 1.0
    category = str(model.item_category[item])
    among = model.category_items.get(category)
    pool = set(near)
    if fill:
        pool |= set(model.top(season, POOL))
        if among is not None:
            pool |= set(model.top(season, POOL, among))
    pool.discard(item)
    cmax = max(near.values(), default=0.0) or 1.0
    scored = []
    for j in pool:
        sn = float(season[j]) / top
        same = str(model.item_category[j]) == category
        score = CORENTAL * near.get(j, 0.0) / cmax * math.sqrt(sn) + (1 - CORENTAL) * sn * (
            2.0 if same else 1.0
        )
        source = "co-rental" if j in near else ("category-popular" if same else "popular")
        scored.append((-score, str(model.items[j]), source))
    scored.sort()
    return [Scored(i, round(-s, 6), src) for s, i, src in scored[:k]]


def blend(
    visual: list[tuple[str, float]], corental: list[Scored], weight: float, k: int
) -> list[Scored]:
    """The top ``k`` of both lists by the blended score (module doc); ``weight`` = blend."""
    signal = [s for s in corental if s.source == "co-rental"]
    if not signal or weight <= 0:
        return [Scored(i, s, "visual") for i, s in visual[:k]]
    vmax = max((s for _, s in visual), default=0.0)
    cmax = max(s.score for s in signal) or 1.0
    scores: dict[str, list[float]] = {}
    for item_id, s in visual:
        scores.setdefault(item_id, [0.0, 0.0])[0] = s / vmax if vmax > 0 else 0.0
    for s in signal:
        scores.setdefault(s.item_id, [0.0, 0.0])[1] = s.score / cmax
    ranked = sorted(
        scores.items(), key=lambda kv: (-((1 - weight) * kv[1][0] + weight * kv[1][1]), kv[0])
    )
    out = []
    for item_id, (v, c) in ranked[:k]:
        source = "blend" if v > 0 and c > 0 else ("visual" if v > 0 else "co-rental")
        out.append(Scored(item_id, round((1 - weight) * v + weight * c, 6), source))
    return out
