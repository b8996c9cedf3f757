"""A rich progress bar for the lower layers' reports (:class:`lookalike.core.progress.Progress`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lookalike.core import progress as core_progress

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(label: str) -> Iterator[core_progress.Progress]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(stage: str, done: int | None = None, total: int | None = None, /) -> None:
            if done is None:  # a line of text goes above the bar
                bar.console.print(stage)
            else:
                bar.update(task, completed=done, total=total)

        yield update
