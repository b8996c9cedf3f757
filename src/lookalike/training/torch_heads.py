"""Torch twins of the numpy projection head, and the loss both trainers use (imports torch).

Load this module lazily: only training (:mod:`lookalike.training.head`,
:mod:`lookalike.training.finetune`) needs it; serving runs the exported numpy
:class:`~lookalike.embed.heads.Tower`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lookalike.embed.heads import ProjectionHead, Tower, l2_normalise, random_projection

if TYPE_CHECKING:
    from lookalike.training.head import TrainConfig

__all__ = ["TorchTower", "TwoTowers", "check_export", "info_nce", "take_step"]


class TorchTower(nn.Module):
    """A linear map (``kind="linear"``) or linear + residual MLP (``"mlp"``), unit outputs.

    Starts as ``init`` (``(in_dim, dim)``): both towers begin as the same projection, so the
    untrained head keeps the backbone's geometry.
    """

    def __init__(
        self, init: np.ndarray, kind: str = "linear", hidden: int = 1024, dropout: float = 0.1
    ) -> None:
        super().__init__()
        in_dim, dim = init.shape
        self.skip = nn.Linear(in_dim, dim, bias=True)
        with torch.no_grad():
            self.skip.weight.copy_(torch.from_numpy(init).T)
            self.skip.bias.zero_()
        self.mlp: nn.Sequential | None = None
        self.first: nn.Linear | None = None
        self.last: nn.Linear | None = None
        if kind == "mlp":
            self.first = nn.Linear(in_dim, hidden)
            self.last = nn.Linear(hidden, dim)
            self.mlp = nn.Sequential(self.first, nn.ReLU(), nn.Dropout(dropout), self.last)
            with torch.no_grad():  # start as the linear map; the MLP adds a residual
                self.last.weight.mul_(0.1)
                self.last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.skip(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        return nn.functional.normalize(out, dim=1)

    def export(self) -> Tower:
        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        if self.first is None or self.last is None:
            return Tower([(np_(self.skip.weight.T), np_(self.skip.bias))])
        first, last = self.first, self.last
        # skip bias folds into the last layer's bias: out = mlp(x) + x @ Ws + bs
        return Tower(
            [
                (np_(first.weight.T), np_(first.bias)),
                (np_(last.weight.T), np_(last.bias + self.skip.bias)),
            ],
            skip=np_(self.skip.weight.T),
        )


def info_nce(q: torch.Tensor, c: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``q`` matches row ``i`` of ``c``; the rest are negatives."""
    logits = q @ c.T / log_t.exp().clamp(min=0.01)
    target = torch.arange(len(q), device=q.device)
    ce = nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


def take_step(opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor) -> float:
    """One optimiser step (and scheduler step, when there is one) on ``loss``; its value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return float(loss.item())


def check_export(tower: TorchTower, head: ProjectionHead, probe: torch.Tensor) -> None:
    """The numpy head must reproduce the torch catalog tower: serving runs the numpy one."""
    with torch.no_grad():
        want = tower(probe).cpu().numpy()
    got = l2_normalise(head.catalog(probe.cpu().numpy()))
    if not np.allclose(want, got, atol=1e-4):
        raise RuntimeError("exported head disagrees with the trained torch head")


class TwoTowers(nn.Module):
    """The query and catalog towers of a head and the InfoNCE temperature, as trained.

    Both towers start as the same random projection of ``in_dim`` (built in this order, after
    the caller seeded torch, so a seed gives the same towers).
    """

    def __init__(self, in_dim: int, cfg: TrainConfig) -> None:
        super().__init__()
        init = random_projection(in_dim, cfg.dim, cfg.seed)
        self.query = TorchTower(init, cfg.kind, cfg.hidden, cfg.dropout)
        self.catalog = TorchTower(init, cfg.kind, cfg.hidden, cfg.dropout)
        self.log_t = nn.Parameter(torch.tensor(float(np.log(cfg.temperature))))
        self.cfg = cfg

    def tower_parameters(self) -> list[nn.Parameter]:
        """The towers' weights (the temperature is its own optimiser group)."""
        return [*self.query.parameters(), *self.catalog.parameters()]

    def loss(self, queries: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of backbone rows: ``queries[i]`` and ``catalog[i]`` match."""
        return info_nce(self.query(queries), self.catalog(catalog), self.log_t)

    @property
    def temperature(self) -> float:
        return round(self.log_t.exp().item(), 4)

    def export(self, extra: dict[str, object] | None = None) -> ProjectionHead:
        """The numpy head that serving runs (towers as they are now)."""
        return ProjectionHead(
            self.query.export(),
            self.catalog.export(),
            kind=self.cfg.kind,
            colour_weight=self.cfg.colour_weight,
            colour_bins=self.cfg.colour_bins,
            extra=dict(extra or {}),
        )
