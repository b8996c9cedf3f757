"""Women like me: how similar a reviewer is to a shopper, with a reason per review.

A shopper gives any of height (in), weight (lbs), bust (``34c``), body type and usual size; a
reviewer has any of the same. Their distance is standardised over the features **both** have::

    z_f = (reviewer_f - shopper_f) / SCALE_f        (body type: 0 same, 1 different)
    similarity = exp(-mean(z_f²) / 2) × shared / given

``SCALE_f`` is the spread of that measurement over the 192,544 RTR reviews (height 2.7 in,
weight 22 lbs, bust band 1.75, cup 1.1 steps, size 8.5), so one standard deviation away on every
shared feature gives ``exp(-1/2) ≈ 0.61``. The factor ``shared / given`` (features in common
over features the shopper gave) keeps a reviewer who shares one measurement from outranking one
who matches on all five. No feature in common: similarity 0, reason "no measurements in common".

The query format (``?like_me=`` of ``GET /v1/items/{id}/reviews``) is comma-separated
``name:value`` pairs, any subset, e.g. ``height:66,weight:135,bust:34c,body_type:hourglass,size:8``;
:func:`parse_like_me` raises :class:`~lookalike.core.errors.InvalidInput` naming the bad field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lookalike.catalog.rental_store import RentalReview
from lookalike.catalog.rentals import PLAUSIBLE
from lookalike.core.errors import InvalidInput

__all__ = [
    "BODY_TYPES",
    "CUPS",
    "SCALES",
    "SIZE_RANGE",
    "Reviewers",
    "Shopper",
    "cup_index",
    "parse_bust",
    "parse_like_me",
    "rank_reviewers",
    "reason_for",
]

BODY_TYPES = (
    "apple",
    "athletic",
    "full bust",
    "hourglass",
    "pear",
    "petite",
    "straight & narrow",
)
# Cup letters in order; UK/US double letters sit where the single letter after them does.
CUPS = {
    "aa": 0, "a": 1, "b": 2, "c": 3, "d": 4, "dd": 5, "e": 5, "ddd": 6, "f": 6,
    "g": 7, "h": 8, "i": 9, "j": 10, "k": 11,
}  # fmt: skip
# One standard deviation of each measurement over the shared RTR reviews.
SCALES = {"height": 2.66, "weight": 21.9, "bust": 1.75, "cup": 1.10, "size": 8.49}
SIZE_RANGE = (0, 60)
_FIELDS = ("height", "weight", "bust", "body_type", "size")
_MAX_QUERY = 200


def cup_index(letter: str) -> float:
    """'c' → 3; '' or unknown → NaN."""
    return float(CUPS.get(letter.strip().lower(), math.nan))


@dataclass(frozen=True)
class Shopper:
    """What a shopper told us (None: not given)."""

    height_in: float | None = None
    weight_lbs: float | None = None
    bust_size_num: float | None = None
    bust_cup: str | None = None
    body_type: str | None = None
    size: int | None = None

    @property
    def given(self) -> int:
        """How many of the five features (height, weight, bust, body type, size) she gave."""
        return sum(
            v is not None
            for v in (
                self.height_in,
                self.weight_lbs,
                self.bust_size_num,
                self.body_type,
                self.size,
            )
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _number(name: str, raw: str, lo: float, hi: float, unit: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"like_me {name} must be a number ({unit}), got {raw[:20]!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InvalidInput(f"like_me {name} must be between {lo:g} and {hi:g} {unit}")
    return value


def parse_bust(raw: str, field: str = "bust") -> tuple[float, str | None]:
    """'34c' → (34.0, 'c'); '34' → (34.0, None). InvalidInput naming ``field`` otherwise."""
    text = raw.strip().lower()
    digits = "".join(ch for ch in text[:2] if ch.isdigit())
    letter = text[len(digits) :].strip()
    lo, hi = PLAUSIBLE["bust_size_num"]
    if not digits or (letter and letter not in CUPS):
        raise InvalidInput(
            f"{field} must be a band and an optional cup, e.g. 34c (cups: "
            f"{', '.join(CUPS)}), got {raw[:20]!r}"
        )
    band = float(digits)
    if not lo <= band <= hi:
        raise InvalidInput(f"{field} band must be between {lo:g} and {hi:g}")
    return band, letter or None


def parse_like_me(query: str) -> Shopper:
    """Parse ``height:66,weight:135,bust:34c,body_type:hourglass,size:8`` (any subset)."""
    if len(query) > _MAX_QUERY:
        raise InvalidInput(f"like_me is longer than {_MAX_QUERY} characters")
    values: dict[str, object] = {}
    for part in query.split(","):
        if not part.strip():
            continue
        name, sep, raw = part.partition(":")
        name = name.strip().lower().replace(" ", "_")
        raw = raw.strip()
        if not sep or not raw:
            raise InvalidInput(f"like_me needs name:value pairs, got {part.strip()[:30]!r}")
        if name not in _FIELDS:
            raise InvalidInput(
                f"like_me has an unknown field {name[:30]!r}; known: {', '.join(_FIELDS)}"
            )
        if name in values or (name == "bust" and "bust_size_num" in values):
            raise InvalidInput(f"like_me gives {name} twice")
        if name == "height":
            values["height_in"] = _number(name, raw, *PLAUSIBLE["height_in"], "in")
        elif name == "weight":
            values["weight_lbs"] = _number(name, raw, *PLAUSIBLE["weight_lbs"], "lbs")
        elif name == "bust":
            values["bust_size_num"], values["bust_cup"] = parse_bust(raw, "like_me bust")
        elif name == "body_type":
            body = raw.lower().replace("_", " ")
            if body not in BODY_TYPES:
                raise InvalidInput(
                    f"like_me body_type must be one of {', '.join(BODY_TYPES)}, got {raw[:30]!r}"
                )
            values["body_type"] = body
        else:
            size = _number(name, raw, *SIZE_RANGE, "(the store's size numbers)")
            if size != int(size):
                raise InvalidInput("like_me size must be a whole number")
            values["size"] = int(size)
    if not values:
        raise InvalidInput("like_me is empty: give at least one of " + ", ".join(_FIELDS))
    return Shopper(**values)  # type: ignore[arg-type]


def _arr(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class Reviewers:
    """The reviewers of one item, columnar (NaN / '' when unknown), in the reviews' order."""

    height: np.ndarray
    weight: np.ndarray
    bust: np.ndarray
    cup: np.ndarray
    body_type: np.ndarray
    size: np.ndarray
    cup_letter: np.ndarray  # as the reviewer gave it ('' when unknown): dd and e share an index

    @classmethod
    def of(cls, reviews: Sequence[RentalReview]) -> Reviewers:
        body = np.empty(len(reviews), dtype=object)
        body[:] = [r.body_type for r in reviews]
        letters = [(r.bust_size_letter or "").strip().lower() for r in reviews]
        cup_letter = np.empty(len(reviews), dtype=object)
        cup_letter[:] = [c if c in CUPS else "" for c in letters]
        return cls(
            height=_arr([r.height_in for r in reviews]),
            weight=_arr([r.weight_lbs for r in reviews]),
            bust=_arr([r.bust_size_num for r in reviews]),
            cup=np.array([cup_index(c) for c in letters]),
            body_type=body,
            size=_arr([r.size for r in reviews]),
            cup_letter=cup_letter,
        )

    def __len__(self) -> int:
        return int(self.height.shape[0])


def _z(values: np.ndarray, mine: float | None, scale: float) -> np.ndarray:
    if mine is None:
        return np.full(values.shape, np.nan)
    return (values - mine) / scale


def _describe(label: str, theirs: float, mine: float, unit: str, close: float) -> str:
    delta = theirs - mine
    if abs(delta) < close:
        return f"{label} {theirs:g}{unit} like you"
    more, less = ("taller", "shorter") if label == "height" else ("more", "less")
    word = more if delta > 0 else less
    if label == "size":
        return f"wore size {theirs:g} (you {mine:g})"
    return f"{label} {theirs:g}{unit} ({abs(delta):g}{unit} {word})"


def reason_for(shopper: Shopper, who: Reviewers, i: int) -> str:
    """Why review ``i`` is (or is not) like the shopper, one short line."""
    parts: list[str] = []
    s = shopper
    if s.height_in is not None and not math.isnan(who.height[i]):
        parts.append(_describe("height", float(who.height[i]), s.height_in, " in", 1.0))
    if s.weight_lbs is not None and not math.isnan(who.weight[i]):
        parts.append(_describe("weight", float(who.weight[i]), s.weight_lbs, " lbs", 5.0))
    if s.bust_size_num is not None and not math.isnan(who.bust[i]):
        # Her own letter, and "like you" by the cup's index: 34dd is a 34e.
        theirs = f"{who.bust[i]:g}{who.cup_letter[i]}"
        mine = f"{s.bust_size_num:g}{s.bust_cup or ''}"
        same = who.bust[i] == s.bust_size_num and (
            s.bust_cup is None or cup_index(s.bust_cup) == who.cup[i]
        )
        parts.append(f"bust {theirs} like you" if same else f"bust {theirs} (you {mine})")
    if s.body_type is not None and who.body_type[i]:
        same = who.body_type[i] == s.body_type
        parts.append(f"{who.body_type[i]}" + (" like you" if same else f" (you {s.body_type})"))
    if s.size is not None and not math.isnan(who.size[i]):
        parts.append(_describe("size", float(who.size[i]), float(s.size), "", 0.5))
    return "; ".join(parts) if parts else "no measurements in common"


def rank_reviewers(shopper: Shopper, who: Reviewers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order most similar first, similarity, features shared); the last two per review in the
    reviews' order. Ties keep the reviews' order (newest first). Reasons: :func:`reason_for`."""
    cup_z = _z(who.cup, None if shopper.bust_cup is None else cup_index(shopper.bust_cup), 1.0)
    bust_z = _z(who.bust, shopper.bust_size_num, SCALES["bust"])
    # A cup, when both have one, refines the bust: its z joins the band's as one feature.
    with np.errstate(invalid="ignore"):
        bust_both = np.where(
            np.isnan(cup_z), bust_z, np.sqrt((bust_z**2 + (cup_z / SCALES["cup"]) ** 2) / 2)
        )
    body = np.full(len(who), np.nan)
    if shopper.body_type is not None:
        known = who.body_type != ""
        body[known] = (who.body_type[known] != shopper.body_type).astype(np.float64)
    z = np.stack(
        [
            _z(who.height, shopper.height_in, SCALES["height"]),
            _z(who.weight, shopper.weight_lbs, SCALES["weight"]),
            bust_both,
            body,
            _z(who.size, None if shopper.size is None else float(shopper.size), SCALES["size"]),
        ]
    )
    present = ~np.isnan(z)
    shared = present.sum(axis=0)
    sq = np.where(present, z, 0.0) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sq = np.where(shared > 0, sq.sum(axis=0) / np.maximum(shared, 1), np.inf)
    similarity = np.exp(-mean_sq / 2) * shared / max(shopper.given, 1)
    order = np.argsort(-similarity, kind="stable")
    return order, similarity, shared
