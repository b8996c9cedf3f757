"""Fit and register a recommendations model (training side; serving never imports this).

:func:`fit_recs_model` turns :class:`~lookalike.recs.interactions.Interactions` into a
:class:`~lookalike.recs.model.RecsModel`: every interaction weighs ``weight × 0.5^(age /
half_life)`` (age in days before the newest one), co-rental similarity is the cosine of two
items' columns in the user × item matrix of those weights, shrunk by ``co / (co + SHRINK)``
(``co``: how many people rented both) and, time-aware, each pair of one user's items weighs
``exp(-days apart / PAIR_DAYS)`` (two dresses rented in one season say more than two rented
years apart). :func:`build_recs_model` fits it twice — on the past of the time split (the
``eval/`` copy the deploy gate measures on ``holdout.json``, the next rentals of the later
months) and on everything (what serves) — and writes ``recommendations:N``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalog.rentals import Rentals, time_split
from lookalike.recs.evaluation import evaluate_all, home_cases, similar_cases
from lookalike.recs.home import build_page
from lookalike.recs.interactions import Interactions
from lookalike.recs.kind import ARTIFACT_NAME, EVAL_DIR, HOLDOUT_FILE, TASK
from lookalike.recs.model import STATIC_FILE, RecsModel
from lookalike.registry import Ref, Registry

__all__ = [
    "HALF_LIFE_DAYS",
    "build_recs_model",
    "fit_recs_model",
    "write_static",
]

HALF_LIFE_DAYS = 90.0
PAIR_DAYS = 180.0
SHRINK = 20.0
NEIGHBOURS = 50
CAROUSEL_CATEGORIES = 8
KERNEL = (0.25, 0.5, 1.0, 0.5, 0.25)  # months -2 … +2


def _most_common(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """For each key 0..n-1, its most frequent non-empty value ('' when none)."""
    out = np.full(n, "", dtype=object)
    keep = values != ""
    if not keep.any():
        return out
    names, codes = np.unique(values[keep].astype(str), return_inverse=True)
    counts = np.zeros((n, len(names)))
    np.add.at(counts, (keys[keep], codes), 1.0)
    has = counts.sum(axis=1) > 0
    out[has] = names[counts[has].argmax(axis=1)]
    return out


def _seasonal(month: np.ndarray, item: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    base = np.bincount(month * n + item, weights=w, minlength=12 * n).reshape(12, n)
    out = np.zeros_like(base)
    for shift, k in zip(range(-2, 3), KERNEL, strict=True):
        out += k * np.roll(base, shift, axis=0)
    return out.astype(np.float32)


def _corental(
    u: np.ndarray, i: np.ndarray, w: np.ndarray, day: np.ndarray, n_items: int, neighbours: int
) -> tuple[np.ndarray, np.ndarray]:
    """(items, N) neighbour indices (-1 padded) and cosines from (user, item, weight, last day)
    rows with one row per (user, item), sorted by user."""
    norms = np.sqrt(np.bincount(i, weights=w * w, minlength=n_items))
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)]
    a_parts, b_parts, v_parts = [], [], []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        if hi - lo < 2:
            continue
        ii, ww, dd = i[lo:hi], w[lo:hi], day[lo:hi].astype(np.float64)
        a, b = np.meshgrid(np.arange(hi - lo), np.arange(hi - lo), indexing="ij")
        off = a != b
        a, b = a[off], b[off]
        a_parts.append(ii[a])
        b_parts.append(ii[b])
        v_parts.append(ww[a] * ww[b] * np.exp(-np.abs(dd[a] - dd[b]) / PAIR_DAYS))
    idx = np.full((n_items, neighbours), -1, dtype=np.int32)
    sim = np.zeros((n_items, neighbours), dtype=np.float32)
    if not a_parts:
        return idx, sim
    a, b, v = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(v_parts)
    key = a.astype(np.int64) * n_items + b
    uniq, inv = np.unique(key, return_inverse=True)
    co = np.bincount(inv, weights=v)
    people = np.bincount(inv)
    a, b = uniq // n_items, uniq % n_items
    cos = co / (norms[a] * norms[b]) * (people / (people + SHRINK))
    order = np.lexsort((b, -cos, a))
    a, b, cos = a[order], b[order], cos[order]
    first = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    rank = np.arange(len(a)) - np.repeat(first, np.diff(np.r_[first, len(a)]))
    keep = rank < neighbours
    idx[a[keep], rank[keep]] = b[keep]
    sim[a[keep], rank[keep]] = cos[keep]
    return idx, sim


def fit_recs_model(
    inter: Interactions,
    *,
    half_life_days: float = HALF_LIFE_DAYS,
    neighbours: int = NEIGHBOURS,
    occasions: tuple[str, ...] | None = None,
) -> RecsModel:
    """The model of every interaction in ``inter`` (module doc)."""
    if not len(inter):
        raise ValueError("no interactions to fit a recommendations model on")
    as_of = inter.day.max()
    items, item = np.unique(inter.item.astype(str), return_inverse=True)
    users, user = np.unique(inter.user.astype(str), return_inverse=True)
    n = len(items)
    age = (as_of - inter.day).astype(np.float64)
    w = inter.weight * 0.5 ** (age / half_life_days)
    month = inter.day.astype("datetime64[M]").astype(np.int64) % 12
    if occasions is None:
        names, counts = np.unique(inter.occasion[inter.occasion != ""].astype(str), True)
        occasions = tuple(str(x) for x in names[np.argsort(-counts, kind="stable")])
    occ_pos = {o: k for k, o in enumerate(occasions)}
    occ = np.array([occ_pos.get(str(o), -1) for o in inter.occasion], dtype=np.int64)
    has = occ >= 0
    o = len(occasions)
    item_occ = np.bincount(item[has] * o + occ[has], weights=w[has], minlength=n * o)
    item_occ = item_occ.reshape(n, o)
    totals = item_occ.sum(axis=1, keepdims=True)
    item_occ = np.divide(item_occ, totals, out=np.zeros_like(item_occ), where=totals > 0)
    occ_month = (
        np.stack([_seasonal(month[occ == k], item[occ == k], w[occ == k], n) for k in range(o)])
        if o
        else np.zeros((0, 12, n), np.float32)
    )
    item_category = _most_common(item, inter.category, n)
    cat_names, cat_counts = np.unique(item_category[item_category != ""].astype(str), True)
    categories = tuple(
        str(c) for c in cat_names[np.argsort(-cat_counts, kind="stable")][:CAROUSEL_CATEGORIES]
    )
    # one row per (user, item): summed weight, last day
    pair = user.astype(np.int64) * n + item
    uniq, inv = np.unique(pair, return_inverse=True)
    uw = np.bincount(inv, weights=w)
    last = np.full(len(uniq), np.iinfo(np.int64).min)
    np.maximum.at(last, inv, inter.day.astype(np.int64))
    pu, pi = uniq // n, uniq % n
    nb_idx, nb_sim = _corental(pu, pi, uw, last, n, neighbours)
    u_ptr = np.searchsorted(pu, np.arange(len(users) + 1)).astype(np.int64)
    return RecsModel(
        items=items.astype(object),
        item_category=item_category,
        item_occ=item_occ.astype(np.float32),
        pop_month=_seasonal(month, item, w, n),
        occ_month=occ_month.astype(np.float32),
        nb_idx=nb_idx,
        nb_sim=nb_sim,
        users=users.astype(object),
        u_ptr=u_ptr,
        u_items=pi.astype(np.int32),
        u_w=uw.astype(np.float32),
        occasions=occasions,
        categories=categories,
        meta={
            "as_of": str(as_of),
            "half_life_days": half_life_days,
            "pair_days": PAIR_DAYS,
            "shrink": SHRINK,
            "neighbours": neighbours,
            "interactions": len(inter),
        },
    )


def write_static(model: RecsModel, folder: Path, month: int, per_carousel: int = 10) -> None:
    """The last fallback: the popular layout of ``month`` and the popular list, as JSON."""
    import json

    page = build_page(model, {}, month, per_carousel)
    popular = [str(model.items[j]) for j in model.top(model.pop_month.sum(axis=0), 100)]
    doc = {
        "month": month,
        "popular": popular,
        "layout": [
            {"id": c.id, "title": c.title, "kind": c.kind, "items": [s.item_id for s in c.items]}
            for c in page
        ],
    }
    (folder / STATIC_FILE).write_text(json.dumps(doc, indent=1))


def build_recs_model(
    registry: Registry,
    rentals: Rentals,
    *,
    events: Interactions | None = None,
    test_months: int = 6,
    source: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Ref:
    """Fit (past and all), evaluate on the later months, write ``recommendations:N``."""
    import json

    say = progress or (lambda _m: None)
    past, later = time_split(rentals, test_months=test_months)
    if not len(past) or not len(later):
        raise ValueError("the time split left no past or no later rentals: give more months")
    cut = str(later.review_date.min())
    all_inter = Interactions.from_rentals(rentals)
    past_inter = Interactions.from_rentals(past)
    if events is not None and len(events):
        all_inter = Interactions.concat([all_inter, events])
        past_inter = Interactions.concat([past_inter, events.take(events.day < np.datetime64(cut))])
    say(f"fitting on the past ({len(past_inter)} interactions before {cut})")
    eval_model = fit_recs_model(past_inter)
    sim_cases = similar_cases(past, later)
    page_cases = home_cases(past, later)
    say(f"evaluating on {len(sim_cases)} next rentals")
    figures = evaluate_all(eval_model, sim_cases, page_cases)
    say(f"fitting on everything ({len(all_inter)} interactions)")
    model = fit_recs_model(all_inter, occasions=eval_model.occasions)
    as_of_month = int(str(all_inter.day.max())[5:7])
    manifest = {
        "task": TASK,
        "metrics": figures["gated"],
        "evaluation": figures,
        "split": f"time: past < {cut} ≤ later ({test_months} months)",
        "data": source or {},
        "interactions": len(all_inter),
        "events": 0 if events is None else len(events),
        "settings": model.meta,
        "note": "reviews are a lower bound on rentals: every count here under-counts demand",
    }
    with registry.create(ARTIFACT_NAME, manifest) as writer:
        model.save(writer.path)
        write_static(model, writer.path, as_of_month)
        (writer.path / EVAL_DIR).mkdir()
        eval_model.save(writer.path / EVAL_DIR)
        (writer.path / HOLDOUT_FILE).write_text(
            json.dumps({"split": manifest["split"], "similar": sim_cases, "home": page_cases})
        )
    return writer.ref
