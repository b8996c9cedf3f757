"""Layer 4: rental price suggestion — listings, features, models, evaluation and the kind.

Serving imports :mod:`~lookalike.price.listings`, :mod:`~lookalike.price.model` and
:mod:`~lookalike.price.kind` (numpy only); fitting and the evaluation table live in
:mod:`~lookalike.price.fit` and :mod:`~lookalike.price.evaluation` and are imported by the CLI.
See docs/price.md.
"""

from __future__ import annotations

from lookalike.price.listings import FABRICS, Listings, ReadReport, parse_price, read_listings
from lookalike.price.model import FeatureSpace, Neighbour, PriceModel, Suggestions

__all__ = [
    "FABRICS",
    "FeatureSpace",
    "Listings",
    "Neighbour",
    "PriceModel",
    "ReadReport",
    "Suggestions",
    "parse_price",
    "read_listings",
]
