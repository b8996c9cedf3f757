"""Fine-tune the backbone's last blocks together with the two-tower head (imports torch).

Load this module lazily. The frozen head alone stops at what ImageNet features can tell apart;
letting the last MBConv block(s) and the 1×1 head convolution learn fashion lifts recall (see
docs/search-quality.md). To make that cheap on two CPU cores the backbone is cut in two at
block ``at``:

- the **stem** (stem convolution and blocks ``[0, at)``) stays frozen; its output for every
  training crop is computed once and cached (:class:`~lookalike.embed.cache.FeatureCache`,
  rows are the flattened ``(C, 7, 7)`` activations);
- the **tail** (blocks ``[at, 16)``, the head convolution, pooling, L2 normalisation) trains
  with the towers. Its batch norms keep their ImageNet statistics (eval mode) and learn only
  their affine parameters: 4,500 pairs are too few to re-estimate them.

The tail's modules are the full model's own, so after training the full model carries the new
weights and is exported like the default one (:func:`lookalike.embed.build.export_variants`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lookalike.core.errors import InvalidInput
from lookalike.embed.heads import ProjectionHead, random_projection
from lookalike.embed.measure import cpu_threads
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.torch_heads import TorchTower, check_export, info_nce, take_step
from lookalike.embed.torch_model import EfficientNetLiteEmbedder
from lookalike.embed.train import TrainConfig, check_pairs

__all__ = ["BLOCKS", "FinetuneConfig", "FinetuneResult", "Tail", "finetune", "stem_runner"]

log = logging.getLogger("lookalike.embed")
BLOCKS = 16  # MBConv blocks in EfficientNet-Lite0
Progress = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """The head's hyperparameters plus the cut and the backbone's learning rate.

    Chosen on a held-out part of the training pairs, never on val.
    """

    at: int = 15  # first trained block: 15 = the last stage (one block), 13 = three blocks
    epochs: int = 12
    batch_size: int = 128
    backbone_lr: float = 2e-4  # tail blocks and head convolution (the towers use ``lr``)


@dataclass
class FinetuneResult:
    head: ProjectionHead
    seconds: float
    final_loss: float
    temperature: float
    history: list[dict[str, float]]


def _stem(model: EfficientNetLiteEmbedder, at: int, x: torch.Tensor) -> torch.Tensor:
    x = F.relu6(model._bn0(model._conv_stem(x)))
    for block in model._blocks[:at]:
        x = block(x)
    return x


class _Stem(nn.Module):
    def __init__(self, model: EfficientNetLiteEmbedder, at: int) -> None:
        super().__init__()
        self.model, self.at = model, at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _stem(self.model, self.at, x).flatten(1)


def stem_runner(
    model: EfficientNetLiteEmbedder,
    at: int,
    cfg: PreprocessConfig | None = None,
    *,
    onnx_dir: Path | None = None,
) -> Callable[[list[Image.Image]], np.ndarray]:
    """``images -> (n, C*H*W)`` float32 stem activations (what the tail trains on).

    With ``onnx_dir`` the stem is exported there and run by onnxruntime: about 5× faster than
    torch on the CPU, which matters for the first pass over 20,000 crops.
    """
    if not 0 < at < len(model._blocks):
        raise InvalidInput(f"the cut must be inside the {len(model._blocks)} blocks, got {at}")
    pre = cfg or PreprocessConfig()
    stem = _Stem(model, at).eval()
    if onnx_dir is not None:
        from lookalike.embed.build import export_onnx
        from lookalike.embed.runtime import onnx_session

        path = Path(onnx_dir) / f"stem{at}.onnx"
        export_onnx(stem, path, pre.size)
        session = onnx_session(path, ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(images: list[Image.Image]) -> np.ndarray:
            out = session.run(None, {name: preprocess_batch(images, pre)})[0]
            return np.asarray(out, np.float32)

        return run_onnx

    def run(images: list[Image.Image]) -> np.ndarray:
        with torch.inference_mode():
            return stem(torch.from_numpy(preprocess_batch(images, pre))).numpy()

    return run


class Tail(nn.Module):
    """Blocks ``[at, end)`` + head convolution + average pool + L2 normalise (shared modules)."""

    def __init__(self, model: EfficientNetLiteEmbedder, at: int, size: int = 224) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(model._blocks[at:]))
        self.conv_head, self.bn = model._conv_head, model._bn1
        with torch.inference_mode():
            probe = _stem(model, at, torch.zeros(1, 3, size, size))
        self.in_shape: tuple[int, int, int] = tuple(probe.shape[1:])  # type: ignore[assignment]

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        x = flat.reshape(-1, *self.in_shape)
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.bn(self.conv_head(x)))
        return F.normalize(x.mean(dim=(2, 3)), dim=1)

    def train(self, mode: bool = True) -> Tail:
        super().train(mode)
        for m in self.modules():  # frozen statistics: too few pairs to re-estimate them
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def features(self, rows: np.ndarray, batch: int = 256) -> np.ndarray:
        """``(n, 1280)`` unit backbone rows from cached stem rows (inference)."""
        self.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(rows), batch):
                out.append(self(torch.from_numpy(np.asarray(rows[i : i + batch], np.float32))))
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def finetune(
    model: EfficientNetLiteEmbedder,
    query_views: Sequence[np.ndarray],
    catalog: np.ndarray,
    cfg: FinetuneConfig = FinetuneConfig(),
    *,
    progress: Progress | None = None,
    monitor: Callable[[Tail, ProjectionHead], dict[str, float]] | None = None,
) -> FinetuneResult:
    """Train the tail of ``model`` (in place) and a two-tower head on cached stem rows.

    ``query_views[v][i]`` (a crop of shopper photo ``i``, e.g. mirrored) and ``catalog[i]``
    show the same item. ``monitor(tail, head)`` (optional) is called after each epoch and its
    figures go into ``history``: measure on held-out training pairs, never on val.
    """
    n, _ = check_pairs(query_views, catalog)
    torch.set_num_threads(cpu_threads())
    torch.manual_seed(cfg.seed)
    say = progress or (lambda msg: log.info("finetune: %s", msg))
    started = time.perf_counter()
    tail = Tail(model, cfg.at)
    init = random_projection(int(model._bn1.num_features), cfg.dim, cfg.seed)
    q_tower, c_tower = (TorchTower(init, cfg.kind, cfg.hidden, cfg.dropout) for _ in range(2))
    log_t = nn.Parameter(torch.tensor(float(np.log(cfg.temperature))))
    groups: list[dict] = [
        {"params": list(tail.parameters()), "lr": cfg.backbone_lr},
        {"params": [*q_tower.parameters(), *c_tower.parameters()], "lr": cfg.lr},
    ]
    if cfg.learn_temperature:
        groups.append({"params": [log_t], "lr": cfg.lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in groups],
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    views = [np.asarray(v) for v in query_views]
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    loss_value = float("nan")

    def export() -> ProjectionHead:
        return ProjectionHead(
            q_tower.export(),
            c_tower.export(),
            kind=cfg.kind,
            colour_weight=cfg.colour_weight,
            colour_bins=cfg.colour_bins,
            extra={"finetuned_from_block": cfg.at},
        )

    for epoch in range(cfg.epochs):
        tail.train()
        q_tower.train()
        c_tower.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen).numpy()
        total = 0.0
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            pick = torch.randint(len(views), (len(idx),), generator=gen).numpy()
            q_rows = np.stack([views[v][i] for v, i in zip(pick, idx, strict=True)])
            rows = torch.from_numpy(np.concatenate([q_rows, catalog[idx]]).astype(np.float32))
            feats = tail(rows)  # one pass for both sides: batch norm is frozen
            q = q_tower(feats[: len(idx)])
            c = c_tower(feats[len(idx) :])
            total += take_step(opt, sched, info_nce(q, c, log_t))
        loss_value = total / steps_per_epoch
        entry = {
            "epoch": epoch + 1,
            "loss": round(loss_value, 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if monitor is not None:
            q_tower.eval()
            c_tower.eval()
            entry.update(monitor(tail, export()))
        history.append(entry)
        say(" ".join(f"{k} {v}" for k, v in entry.items()))
    tail.eval()
    q_tower.eval()
    c_tower.eval()
    head = export()
    with torch.inference_mode():
        probe = tail(torch.from_numpy(np.asarray(catalog[:8], np.float32)))
    check_export(c_tower, head, probe)
    return FinetuneResult(
        head=head,
        seconds=round(time.perf_counter() - started, 1),
        final_loss=round(loss_value, 4),
        temperature=round(log_t.exp().item(), 4),
        history=history,
    )
