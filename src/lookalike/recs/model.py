"""The served recommendations model: arrays in, ranked item ids out (numpy only).

A folder holds ``model.json`` (settings, occasions, carousel categories) and ``arrays.npz``:

=============  ================================================================================
items          item ids (text), sorted; ``item_category`` the category most of its rentals say
item_occ       (items, occasions) share of an item's rentals per occasion (``rented_for``)
pop_month      (12, items) time-decayed rentals per month of the year, smoothed over ±2 months:
               "popular for the season"
occ_month      (occasions, 12, items) the same per occasion
nb_idx/nb_sim  (items, N) each item's N nearest items by co-rental cosine ("rented by the same
               people", time-decayed), -1 padded
users          user ids (text), sorted; ``u_ptr``/``u_items``/``u_w`` her items and their
               decayed weights (CSR)
=============  ================================================================================

and ``static.json``: the popular layout and list written at build time, the last fallback (it
needs no arrays). :mod:`lookalike.recs.build` writes all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.errors import IntegrityError

__all__ = ["ARRAYS", "MODEL_FILE", "STATIC_FILE", "RecsModel", "read_static"]

MODEL_FILE = "model.json"
ARRAYS = "arrays.npz"
STATIC_FILE = "static.json"
_ARRAY_NAMES = (
    "items", "item_category", "item_occ", "pop_month", "occ_month", "nb_idx", "nb_sim",
    "users", "u_ptr", "u_items", "u_w",
)  # fmt: skip


def read_static(folder: Path) -> dict[str, Any]:
    """``static.json``: ``{"popular": [ids], "layout": [{"id", "title", "kind", "items"}]}``."""
    try:
        doc = json.loads((folder / STATIC_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{STATIC_FILE} cannot be read: {exc}") from exc
    if not isinstance(doc.get("popular"), list) or not isinstance(doc.get("layout"), list):
        raise IntegrityError(f"{STATIC_FILE} needs the lists popular and layout")
    return doc


@dataclass
class RecsModel:
    items: np.ndarray
    item_category: np.ndarray
    item_occ: np.ndarray
    pop_month: np.ndarray
    occ_month: np.ndarray
    nb_idx: np.ndarray
    nb_sim: np.ndarray
    users: np.ndarray
    u_ptr: np.ndarray
    u_items: np.ndarray
    u_w: np.ndarray
    occasions: tuple[str, ...]
    categories: tuple[str, ...]
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        self.item_index = {str(v): i for i, v in enumerate(self.items.tolist())}
        self.user_index = {str(v): i for i, v in enumerate(self.users.tolist())}
        self.category_items = {c: np.flatnonzero(self.item_category == c) for c in self.categories}

    # -- files -----------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        arrays = {name: getattr(self, name) for name in _ARRAY_NAMES}
        arrays["items"] = np.asarray(self.items, dtype=str)
        arrays["item_category"] = np.asarray(self.item_category, dtype=str)
        arrays["users"] = np.asarray(self.users, dtype=str)
        np.savez_compressed(folder / ARRAYS, **arrays)
        doc = {"occasions": list(self.occasions), "categories": list(self.categories), **self.meta}
        (folder / MODEL_FILE).write_text(json.dumps(doc, indent=2))

    @classmethod
    def load(cls, folder: Path) -> RecsModel:
        """Load and check shapes and values; IntegrityError says what is wrong."""
        try:
            doc = json.loads((folder / MODEL_FILE).read_text())
            with np.load(folder / ARRAYS, allow_pickle=False) as z:
                arrays = {name: z[name] for name in _ARRAY_NAMES}
        except (OSError, ValueError, KeyError) as exc:
            raise IntegrityError(
                f"recommendations model in {folder.name} unreadable: {exc}"
            ) from exc
        occasions = tuple(doc.pop("occasions"))
        categories = tuple(doc.pop("categories"))
        n, o = len(arrays["items"]), len(occasions)
        shapes = {
            "item_occ": (n, o),
            "pop_month": (12, n),
            "occ_month": (o, 12, n),
            "item_category": (n,),
            "u_ptr": (len(arrays["users"]) + 1,),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise IntegrityError(f"{name} has shape {arrays[name].shape}, expected {shape}")
        if arrays["nb_idx"].shape != arrays["nb_sim"].shape or len(arrays["nb_idx"]) != n:
            raise IntegrityError("nb_idx and nb_sim must be (items, N) alike")
        for name in ("item_occ", "pop_month", "occ_month", "nb_sim", "u_w"):
            if not np.all(np.isfinite(arrays[name])):
                raise IntegrityError(f"{name} has NaN or inf")
        if arrays["nb_idx"].size and (arrays["nb_idx"].max() >= n or arrays["nb_idx"].min() < -1):
            raise IntegrityError("nb_idx points outside the items")
        return cls(**arrays, occasions=occasions, categories=categories, meta=doc)

    # -- lookups ---------------------------------------------------------------------------------
    def corental(self, item: int, n: int) -> list[tuple[int, float]]:
        """Up to ``n`` (item, cosine) rented by the same people as ``item``, best first."""
        idx = self.nb_idx[item]
        keep = idx >= 0
        return list(zip(idx[keep][:n].tolist(), self.nb_sim[item][keep][:n].tolist(), strict=True))

    def history(self, user_id: str) -> dict[int, float]:
        """Her items and their time-decayed weights (empty for an unknown user)."""
        u = self.user_index.get(user_id)
        if u is None:
            return {}
        lo, hi = int(self.u_ptr[u]), int(self.u_ptr[u + 1])
        return dict(zip(self.u_items[lo:hi].tolist(), self.u_w[lo:hi].tolist(), strict=True))

    def seasonal(self, month: int, occasion: int | None = None) -> np.ndarray:
        """Popularity of every item in ``month`` (1–12), overall or for one occasion."""
        if occasion is None:
            return self.pop_month[month - 1]
        return self.occ_month[occasion, month - 1]

    def affinity(self, history: dict[int, float]) -> np.ndarray:
        """(items,) sum over her items of weight × co-rental cosine: what people like her rent."""
        out = np.zeros(len(self.items), dtype=np.float32)
        for item, w in history.items():
            idx = self.nb_idx[item]
            keep = idx >= 0
            np.add.at(out, idx[keep], w * self.nb_sim[item][keep])
        return out

    def top(
        self,
        scores: np.ndarray,
        n: int,
        among: np.ndarray | None = None,
        exclude: frozenset[int] | set[int] = frozenset(),
    ) -> list[int]:
        """The ``n`` best items by ``scores`` (only ``among`` when given), ``exclude`` left out."""
        cand = np.arange(len(scores)) if among is None else among
        if not len(cand):
            return []
        want = min(len(cand), n + len(exclude))
        s = scores[cand]
        part = np.argpartition(-s, want - 1)[:want] if want < len(cand) else np.arange(len(cand))
        order = part[np.lexsort((cand[part], -s[part]))]
        return [int(i) for i in cand[order] if int(i) not in exclude][:n]
