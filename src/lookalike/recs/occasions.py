"""Occasions: what a shopper rents for (the reviews' ``rented_for``: wedding, formal affair,
party, work, vacation, date, everyday, other).

A route's name may be written ``formal-affair``, ``formal_affair`` or ``Formal Affair``;
:func:`occasion_name` gives the stored spelling. ``GET /v1/occasions/{name}/items`` ranks the
season's most rented items for it (personalised when a ``user_id`` is given).
"""

from __future__ import annotations

import re

from lookalike.core.errors import InvalidInput

__all__ = ["occasion_name"]

_NAME = re.compile(r"^[a-z][a-z ]{0,39}$")


def occasion_name(raw: str) -> str:
    """``Formal-Affair`` → ``formal affair``; InvalidInput for anything that is not a name."""
    name = " ".join(raw.strip().lower().replace("-", " ").replace("_", " ").split())
    if not _NAME.match(name):
        raise InvalidInput(
            f"an occasion is a few letters, e.g. wedding or formal-affair; got {raw[:40]!r}"
        )
    return name
