"""The one progress type of long-running work: counted steps and lines of text.

Lower layers report through a :class:`Progress` they are given and never draw anything
themselves; the CLI turns the reports into a bar or lines, the jobs into log lines. One shape
for every caller, so that a bar, a cron log and a test can listen to any of them:

- ``progress("embedding", 64, 1000)``: stage ``embedding``, 64 of 1,000 done;
- ``progress("epoch 3/40 loss 0.4123")``: a line of text (no count).
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["Progress", "logged", "relabelled"]


class Progress(Protocol):
    """``(stage, done, total)``; ``done`` and ``total`` are None for a line of text."""

    def __call__(
        self, stage: str, done: int | None = None, total: int | None = None, /
    ) -> None: ...


def logged(log: logging.Logger, prefix: str) -> Progress:
    """A :class:`Progress` that writes INFO lines ``prefix: stage [done/total]`` to ``log``."""

    def report(stage: str, done: int | None = None, total: int | None = None, /) -> None:
        if done is None:
            log.info("%s: %s", prefix, stage)
        else:
            log.info("%s: %s %d/%s", prefix, stage, done, total)

    return report


def relabelled(
    progress: Progress | None,
    stage: str | None = None,
    *,
    offset: int = 0,
    total: int | None = None,
) -> Progress | None:
    """``progress`` with its counted reports renamed to ``stage`` and/or shifted by ``offset``
    out of ``total``: one count over several parts of a job (gallery, then queries).

    Lines of text pass through unchanged. None stays None, so callers can pass it along.
    """
    if progress is None:
        return None
    report = progress

    def shifted(name: str, done: int | None = None, of: int | None = None, /) -> None:
        if done is None:
            report(name)
        else:
            report(stage or name, offset + done, of if total is None else total)

    return shifted
