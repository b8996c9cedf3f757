"""Train a projection head on frozen backbone features with a symmetric InfoNCE loss.

Needs torch (the ``build`` extra), imported inside :func:`train_head` only; the epochs run in
the shared loop (:mod:`lookalike.training.loop`). Inputs are cached backbone rows
(:mod:`lookalike.embed.cache`): one or more *views* of each shopper photo (crops, mirrored
crops: augmentation computed once) and the catalog photo of the same item. Each step draws a
batch of pairs, one random view per pair, and pulls each query towards its own catalog photo
and away from the batch's other catalog photos (and vice versa). Two towers: one for shopper
photos, one for catalog photos, initialised to the same random projection so that the untrained
head keeps the backbone's geometry.

On two CPU cores a linear head on 4,500 pairs trains in seconds; the MLP in well under a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.core.progress import Progress, logged
from lookalike.embed.heads import ProjectionHead, Tower, random_projection

if TYPE_CHECKING:
    from lookalike.training.loop import LoopResult
    from lookalike.training.torch_heads import TwoTowers

__all__ = ["TrainConfig", "TrainResult", "check_pairs", "identity_head", "train_head"]

log = logging.getLogger("lookalike.training")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; chosen on a held-out part of the training pairs, never on val."""

    kind: Literal["linear", "mlp"] = "linear"
    dim: int = 256
    hidden: int = 1024
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    learn_temperature: bool = True
    dropout: float = 0.1
    colour_weight: float = 0.0
    colour_bins: int = 4
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a head trainer (frozen or fine-tuning) returns."""

    head: ProjectionHead
    seconds: float
    final_loss: float
    temperature: float
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch
    best_epoch: int | None = None  # with keep_best: the epoch whose weights were kept

    @classmethod
    def of(
        cls, head: ProjectionHead, towers: TwoTowers, loop: LoopResult, started: float
    ) -> TrainResult:
        return cls(
            head=head,
            seconds=round(time.perf_counter() - started, 2),
            final_loss=loop.final_loss,
            temperature=towers.temperature,
            epochs=len(loop.history),
            history=loop.history,
            best_epoch=loop.best_epoch,
        )


def identity_head(in_dim: int, dim: int, seed: int = 0) -> ProjectionHead:
    """The untrained head: both towers are the same random projection (the baseline)."""
    w = random_projection(in_dim, dim, seed)
    b = np.zeros(dim, np.float32)
    return ProjectionHead(Tower([(w, b)]), Tower([(w.copy(), b.copy())]), kind="untrained")


def check_pairs(query_views: Sequence[np.ndarray], catalog: np.ndarray) -> tuple[int, int]:
    """``(pairs, row width)`` of training rows, or InvalidInput saying what does not fit."""
    if not query_views:
        raise InvalidInput("need at least one view of the query photos")
    n, in_dim = catalog.shape
    if any(v.shape != (n, in_dim) for v in query_views):
        raise InvalidInput("every query view must have the catalog's shape")
    if n < 4:
        raise InvalidInput(f"need at least 4 training pairs, got {n}")
    return n, in_dim


def train_head(
    query_views: Sequence[np.ndarray],
    catalog: np.ndarray,
    cfg: TrainConfig = TrainConfig(),
    *,
    progress: Progress | None = None,
    monitor: Callable[[ProjectionHead], dict[str, float]] | None = None,
    keep_best: str | None = None,
) -> TrainResult:
    """Fit a two-tower head: ``query_views[v][i]`` and ``catalog[i]`` show the same item.

    ``monitor(head)`` (optional) measures each epoch's head on held-out training pairs (never
    on val) into ``history``; with ``keep_best`` (one of its figures, higher is better) the
    best epoch's head is returned instead of the last one's.
    """
    n, in_dim = check_pairs(query_views, catalog)
    import torch

    from lookalike.embed.measure import cpu_threads
    from lookalike.training.loop import Batch, run_epochs
    from lookalike.training.torch_heads import TwoTowers, check_export

    torch.set_num_threads(cpu_threads())
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    towers = TwoTowers(in_dim, cfg)
    groups = [{"params": towers.tower_parameters(), "weight_decay": cfg.weight_decay}]
    if cfg.learn_temperature:
        groups.append({"params": [towers.log_t], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    views = torch.from_numpy(np.stack([np.asarray(v, np.float32) for v in query_views]))
    cat = torch.from_numpy(np.asarray(catalog, np.float32))

    def loss_of(batch: Batch) -> torch.Tensor:
        return towers.loss(views[batch.views, batch.rows], cat[batch.rows])

    loop = run_epochs(
        loss_of,
        cfg,
        rows=n,
        modules=[towers],
        optimizer=opt,
        scheduler=sched,
        views=len(views),
        evaluate=(lambda: monitor(towers.export())) if monitor is not None else None,
        keep_best=keep_best,
        status=lambda: {"t": towers.temperature},
        report_every=10,
        progress=progress or logged(log, "train"),
    )
    head = towers.export()
    check_export(towers.catalog, head, cat[:8])
    return TrainResult.of(head, towers, loop, started)
