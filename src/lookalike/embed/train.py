"""Train a projection head on frozen backbone features with a symmetric InfoNCE loss.

Needs torch (the ``build`` extra), imported inside :func:`train_head` only. Inputs are cached
backbone rows (:mod:`lookalike.embed.cache`): one or more *views* of each shopper photo (crops,
mirrored crops: augmentation computed once) and the catalog photo of the same item. Each step
draws a batch of pairs, one random view per pair, and pulls each query towards its own catalog
photo and away from the batch's other catalog photos (and vice versa). Two towers: one for
shopper photos, one for catalog photos, initialised to the same random projection so that the
untrained head keeps the backbone's geometry.

On two CPU cores a linear head on 4,500 pairs trains in seconds; the MLP in well under a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from lookalike.core.errors import InvalidInput
from lookalike.embed.heads import ProjectionHead, Tower, random_projection

__all__ = [
    "KS",
    "TrainConfig",
    "TrainResult",
    "check_pairs",
    "identity_head",
    "retrieval_figures",
    "train_head",
]

log = logging.getLogger("lookalike.embed")

KS = (1, 5, 10, 20)
Progress = Callable[[str], None]


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
    head: ProjectionHead
    seconds: float
    final_loss: float
    temperature: float
    epochs: int


def retrieval_figures(
    queries: np.ndarray, gallery: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Recall@K and mAP of each query's one relevant gallery row (exact ranks).

    ``queries`` may be ``(n, d)`` or ``(views, n, d)``: with several views a gallery row scores
    the best of them (multi-crop search merges by the maximum in the same way).
    """
    q = queries[None] if queries.ndim == 2 else queries
    scores = np.max(np.stack([v @ gallery.T for v in q]), axis=0)
    own = scores[np.arange(scores.shape[0]), relevant]
    ranks = 1 + (scores > own[:, None]).sum(axis=1)
    out = {f"recall@{k}": round(float((ranks <= k).mean()), 4) for k in ks}
    out["map"] = round(float((1.0 / ranks).mean()), 4)
    return out


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
) -> TrainResult:
    """Fit a two-tower head: ``query_views[v][i]`` and ``catalog[i]`` show the same item."""
    n, in_dim = check_pairs(query_views, catalog)
    import torch
    from torch import nn

    from lookalike.embed.measure import cpu_threads
    from lookalike.embed.torch_heads import TorchTower, check_export, info_nce, take_step

    torch.set_num_threads(cpu_threads())
    torch.manual_seed(cfg.seed)
    say = progress or (lambda msg: log.info("train: %s", msg))
    started = time.perf_counter()
    init = random_projection(in_dim, cfg.dim, cfg.seed)

    def tower() -> TorchTower:
        return TorchTower(init, cfg.kind, cfg.hidden, cfg.dropout)

    q_tower, c_tower = tower(), tower()
    log_t = nn.Parameter(torch.tensor(float(np.log(cfg.temperature))))
    params = [*q_tower.parameters(), *c_tower.parameters()]
    groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    if cfg.learn_temperature:
        groups.append({"params": [log_t], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    views = torch.from_numpy(np.stack([np.asarray(v, np.float32) for v in query_views]))
    cat = torch.from_numpy(np.asarray(catalog, np.float32))
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_value = float("nan")
    for epoch in range(cfg.epochs):
        q_tower.train()
        c_tower.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            pick = torch.randint(len(views), (len(idx),), generator=gen)
            q = q_tower(views[pick, idx])
            c = c_tower(cat[idx])
            total += take_step(opt, sched, info_nce(q, c, log_t))
        loss_value = total / steps_per_epoch
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs:
            say(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_value:.4f} t {log_t.exp().item():.4f}")
    q_tower.eval()
    c_tower.eval()
    head = ProjectionHead(
        q_tower.export(),
        c_tower.export(),
        kind=cfg.kind,
        colour_weight=cfg.colour_weight,
        colour_bins=cfg.colour_bins,
    )
    check_export(c_tower, head, cat[:8])
    return TrainResult(
        head=head,
        seconds=round(time.perf_counter() - started, 2),
        final_loss=round(loss_value, 4),
        temperature=round(log_t.exp().item(), 4),
        epochs=cfg.epochs,
    )
