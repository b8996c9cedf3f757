"""Offline figures on the time split: the model on the past, each user's next rental later.

You may also like (``lookalike eval similar``): for every user with a rental in the past and one
in the later months, the query is her last past rental and the target her first later rental
of another item. Hit rate@10 (the target is in the item's top 10) and NDCG@10 (1/log2(1+rank))
of the co-rental list against two baselines: the season's most popular items, and the season's
most popular items in the query item's category.

Home (``lookalike eval home``): for every user with a later rental, the target is her first
later rental; hit rate@20 of the first 20 items her page shows (:func:`~lookalike.recs.home.
page_items`: 4 of each carousel in page order, then the next 4…) against the popular layout of
the same month. A user the past never saw gets the popular layout on both sides: figures are
given for users with a history and for all.

RTR items have no photos, so visual similarity cannot be measured here. Reviews are a lower
bound on rentals: a "next rental" is the next reviewed one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lookalike.catalog.rentals import Rentals
from lookalike.recs.home import build_page, page_items
from lookalike.recs.model import RecsModel
from lookalike.recs.similar import corental_items

__all__ = ["evaluate_all", "evaluate_home", "evaluate_similar", "home_cases", "similar_cases"]

K_SIMILAR = 10
K_HOME = 20


def _first_rows(user: np.ndarray, day: np.ndarray, last: bool) -> dict[str, int]:
    """Row of each user's first (or last) rental by date, row order breaking ties."""
    order = np.lexsort((np.arange(len(user)), day))
    if last:
        order = order[::-1]
    out: dict[str, int] = {}
    for row in order.tolist():
        out.setdefault(str(user[row]), row)
    return out


def similar_cases(past: Rentals, later: Rentals) -> list[list[Any]]:
    """``[query item, target item, month]`` per user (module doc)."""
    last_past = _first_rows(past.user_id, past.review_date, last=True)
    order = np.lexsort((np.arange(len(later)), later.review_date))
    cases: dict[str, list[Any]] = {}
    for row in order.tolist():
        u = str(later.user_id[row])
        if u in cases or u not in last_past:
            continue
        query = str(past.item_id[last_past[u]])
        target = str(later.item_id[row])
        if target != query:
            cases[u] = [query, target, int(str(later.review_date[row])[5:7])]
    return list(cases.values())


def home_cases(past: Rentals, later: Rentals) -> list[list[Any]]:
    """``[user, target item, month]`` per later user (module doc)."""
    first = _first_rows(later.user_id, later.review_date, last=False)
    return [
        [u, str(later.item_id[r]), int(str(later.review_date[r])[5:7])] for u, r in first.items()
    ]


def _score(ranked: list[str], target: str, k: int) -> tuple[float, float]:
    try:
        rank = ranked[:k].index(target)
    except ValueError:
        return 0.0, 0.0
    return 1.0, 1.0 / math.log2(rank + 2)


def _row(hits: list[tuple[float, float]], k: int) -> dict[str, float]:
    arr = np.array(hits) if hits else np.zeros((0, 2))
    return {
        f"hit@{k}": round(float(arr[:, 0].mean()), 4) if len(arr) else float("nan"),
        f"ndcg@{k}": round(float(arr[:, 1].mean()), 4) if len(arr) else float("nan"),
    }


def evaluate_similar(
    model: RecsModel, cases: list[list[Any]], k: int = K_SIMILAR
) -> dict[str, Any]:
    """Rows ``co-rental`` (what serves: co-rental, filled), ``co-rental only``, ``popular``,
    ``category popular``; each hit@k and ndcg@k; plus how many queries had k co-rentals."""
    out: dict[str, list[tuple[float, float]]] = {
        "co-rental": [], "co-rental only": [], "popular": [], "category popular": []
    }  # fmt: skip
    full = 0
    popular: dict[tuple[int, str], list[str]] = {}
    for query, target, month in cases:
        served = corental_items(model, query, k, month)
        own = corental_items(model, query, k, month, fill=False)
        full += len(own) >= k
        out["co-rental"].append(_score([s.item_id for s in served], target, k))
        out["co-rental only"].append(_score([s.item_id for s in own], target, k))
        q = model.item_index.get(query)
        category = str(model.item_category[q]) if q is not None else ""
        for name, among_key in (("popular", ""), ("category popular", category)):
            key = (month, among_key)
            if key not in popular:
                among = None
                if among_key:
                    among = np.flatnonzero(model.item_category == among_key)
                popular[key] = [
                    str(model.items[j]) for j in model.top(model.seasonal(month), k + 1, among)
                ]
            ranked = [i for i in popular[key] if i != query]
            out[name].append(_score(ranked, target, k))
    return {
        "cases": len(cases),
        "queries_with_full_corental_list": full,
        "rows": {name: _row(h, k) for name, h in out.items()},
    }


def evaluate_home(model: RecsModel, cases: list[list[Any]], n: int = K_HOME) -> dict[str, Any]:
    """hit@n of the page's first n items, personalised vs the popular layout (module doc)."""
    layouts: dict[int, list[str]] = {}
    anywhere: dict[int, set[str]] = {}
    mine: list[float] = []
    pop: list[float] = []
    mine_any: list[float] = []
    known: list[bool] = []
    for user, target, month in cases:
        if month not in layouts:
            page = build_page(model, {}, month)
            layouts[month] = page_items(page, n)
            anywhere[month] = {s.item_id for c in page for s in c.items}
        pop.append(float(target in layouts[month]))
        history = model.history(user)
        known.append(bool(history))
        if history:
            page = build_page(model, history, month)
            mine.append(float(target in page_items(page, n)))
            mine_any.append(float(target in {s.item_id for c in page for s in c.items}))
        else:
            mine.append(pop[-1])
            mine_any.append(float(target in anywhere[month]))
    k = np.array(known, dtype=bool)
    m, p = np.array(mine), np.array(pop)

    def rate(v: np.ndarray) -> float:
        return round(float(v.mean()), 4) if len(v) else float("nan")

    return {
        "cases": len(cases),
        "users_with_history": int(k.sum()),
        "rows": {
            "personalised": {f"hit@{n}": rate(m), f"hit@{n} (users with history)": rate(m[k])},
            "popular layout": {f"hit@{n}": rate(p), f"hit@{n} (users with history)": rate(p[k])},
        },
        "anywhere_on_page": {
            "personalised": rate(np.array(mine_any)),
            "items_on_popular_page": len(next(iter(anywhere.values()), ())),
        },
    }


def evaluate_all(
    model: RecsModel, sim_cases: list[list[Any]], page_cases: list[list[Any]]
) -> dict[str, Any]:
    """Both evaluations and ``gated``: the figures the deploy checks hold a candidate to."""
    sim = evaluate_similar(model, sim_cases)
    home = evaluate_home(model, page_cases)
    return {
        "similar": sim,
        "home": home,
        "gated": {
            "ndcg@10": sim["rows"]["co-rental"]["ndcg@10"],
            "hit@10": sim["rows"]["co-rental"]["hit@10"],
            "home_hit@20": home["rows"]["personalised"]["hit@20 (users with history)"],
        },
    }
