"""The one training loop the trainers share: epochs, batches, steps, held-out figures, best epoch.

A trainer says what one step's loss is (:class:`Batch` in, a scalar tensor out), which modules
train, and its optimiser (and scheduler); :func:`run_epochs` does the rest the same way for
every trainer: a seeded shuffle per epoch, optimiser steps, the mean loss, an optional
evaluation after each epoch on held-out rows (never on val), keeping the best epoch's weights
when asked, and one progress line per reported epoch. Imports torch: load it lazily.

The random stream is fixed by ``seed`` alone (a private generator: the shuffle, then per step
the view of each pair), so a trainer moved onto this loop keeps its figures bit for bit.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from lookalike.core.errors import InvalidInput
from lookalike.core.progress import Progress, logged
from lookalike.training.torch_heads import take_step

__all__ = ["Batch", "LoopResult", "Passes", "Schedule", "run_epochs"]

log = logging.getLogger("lookalike.training")


class Schedule(Protocol):
    """How long and in what steps to train: a trainer's config (``TrainConfig``) is one."""

    @property
    def epochs(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class Passes:
    """A :class:`Schedule` for a trainer without a config of its own."""

    epochs: int
    batch_size: int
    seed: int = 0


@dataclass(frozen=True)
class Batch:
    """One step's training rows, and which view of each row to use (None: one form only)."""

    rows: torch.Tensor
    views: torch.Tensor | None


@dataclass
class LoopResult:
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch whose weights were kept (None: the last)


def _steps(rows: int, batch_size: int, drop_last: bool) -> int:
    if drop_last:  # a short last batch would give InfoNCE fewer negatives than the rest
        return max(1, rows // batch_size)
    return -(-rows // batch_size)


def run_epochs(
    loss_of: Callable[[Batch], torch.Tensor],
    schedule: Schedule,
    *,
    rows: int,
    modules: Sequence[nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    views: int | None = None,
    drop_last: bool = True,
    evaluate: Callable[[], dict[str, float]] | None = None,
    keep_best: str | None = None,
    status: Callable[[], dict[str, float]] | None = None,
    report_every: int = 1,
    progress: Progress | None = None,
) -> LoopResult:
    """Train ``modules`` for ``schedule.epochs`` passes over ``rows`` training rows.

    ``views`` (pairs with several query views) draws one view per row each step. ``evaluate``
    runs after each epoch with the modules in eval mode and its figures go into ``history``;
    ``keep_best`` names one of them (higher is better): the weights of the best epoch are
    restored at the end. ``status`` adds figures to each progress line (e.g. the temperature).
    Epoch 1, every ``report_every``-th and the last epoch are reported.
    """
    if keep_best is not None and evaluate is None:
        raise InvalidInput("keep_best needs an evaluate function to pick the best epoch")
    say = progress or logged(log, "train")
    epochs, batch_size = schedule.epochs, schedule.batch_size
    steps = _steps(rows, batch_size, drop_last)
    gen = torch.Generator().manual_seed(schedule.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, list[dict[str, Any]]] | None = None
    loss_value = float("nan")
    for epoch in range(1, epochs + 1):
        for m in modules:
            m.train()
        started = time.perf_counter()
        order = torch.randperm(rows, generator=gen)
        total = 0.0
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            pick = None if views is None else torch.randint(views, (len(idx),), generator=gen)
            total += take_step(optimizer, scheduler, loss_of(Batch(idx, pick)))
        loss_value = total / steps
        entry: dict[str, float] = {
            "epoch": epoch,
            "loss": round(loss_value, 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        if evaluate is not None:
            for m in modules:
                m.eval()
            entry.update(evaluate())
            if keep_best is not None and keep_best not in entry:
                raise InvalidInput(f"keep_best {keep_best!r} is not a figure of {sorted(entry)}")
            if keep_best is not None and (best is None or entry[keep_best] > best[0]):
                best = (entry[keep_best], epoch, [copy.deepcopy(m.state_dict()) for m in modules])
        history.append(entry)
        if epoch == 1 or epoch % report_every == 0 or epoch == epochs:
            extra = {**(status() if status else {}), **entry}
            shown = " ".join(f"{k} {v}" for k, v in extra.items() if k not in ("epoch", "loss"))
            say(f"epoch {epoch}/{epochs} loss {loss_value:.4f} {shown}".rstrip())
    for m in modules:
        m.eval()
    best_epoch = None
    if best is not None:
        best_epoch = best[1]
        if best_epoch != epochs:
            for m, state in zip(modules, best[2], strict=True):
                m.load_state_dict(state)
            say(f"kept epoch {best_epoch} ({keep_best} {best[0]})")
    return LoopResult(final_loss=round(loss_value, 4), history=history, best_epoch=best_epoch)
