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
The epochs run in the shared loop (:mod:`lookalike.training.loop`), as the frozen head's do.
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
from lookalike.core.progress import Progress, logged
from lookalike.embed.heads import ProjectionHead
from lookalike.embed.measure import cpu_threads
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.torch_model import EfficientNetLiteEmbedder
from lookalike.training.head import TrainConfig, TrainResult, check_pairs
from lookalike.training.loop import Batch, run_epochs
from lookalike.training.torch_heads import TwoTowers, check_export

__all__ = ["BLOCKS", "FinetuneConfig", "FinetuneResult", "Tail", "finetune", "stem_runner"]

log = logging.getLogger("lookalike.training")
BLOCKS = 16  # MBConv blocks in EfficientNet-Lite0


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """The head's hyperparameters plus the cut and the backbone's learning rate.

    Chosen on a held-out part of the training pairs, never on val.
    """

    at: int = 15  # first trained block: 15 = the last stage (one block), 13 = three blocks
    epochs: int = 12
    batch_size: int = 128
    backbone_lr: float = 2e-4  # tail blocks and head convolution (the towers use ``lr``)


FinetuneResult = TrainResult  # one result type for both head trainers


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
    keep_best: str | None = None,
) -> TrainResult:
    """Train the tail of ``model`` (in place) and a two-tower head on cached stem rows.

    ``query_views[v][i]`` (a crop of shopper photo ``i``, e.g. mirrored) and ``catalog[i]``
    show the same item. ``monitor(tail, head)`` (optional) is called after each epoch and its
    figures go into ``history``: measure on held-out training pairs, never on val. With
    ``keep_best`` (one of the monitor's figures, higher is better) the model and head of the
    best epoch are kept instead of the last one's.
    """
    n, _ = check_pairs(query_views, catalog)
    torch.set_num_threads(cpu_threads())
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    tail = Tail(model, cfg.at)
    towers = TwoTowers(int(model._bn1.num_features), cfg)
    groups: list[dict] = [
        {"params": list(tail.parameters()), "lr": cfg.backbone_lr},
        {"params": towers.tower_parameters(), "lr": cfg.lr},
    ]
    if cfg.learn_temperature:
        groups.append({"params": [towers.log_t], "lr": cfg.lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in groups],
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.1,
    )
    views = [np.asarray(v) for v in query_views]
    extra: dict[str, object] = {"finetuned_from_block": cfg.at}

    def loss_of(batch: Batch) -> torch.Tensor:
        # Sorted rows read a memory-mapped cache in order; each keeps the view drawn for its slot.
        assert batch.views is not None  # run_epochs draws them: views=len(views)
        idx, pick = np.sort(batch.rows.numpy()), batch.views.numpy()
        q_rows = np.stack([views[v][i] for v, i in zip(pick, idx, strict=True)])
        rows = torch.from_numpy(np.concatenate([q_rows, catalog[idx]]).astype(np.float32))
        feats = tail(rows)  # one pass for both sides: batch norm is frozen
        return towers.loss(feats[: len(idx)], feats[len(idx) :])

    evaluate = (lambda: monitor(tail, towers.export(extra))) if monitor is not None else None
    loop = run_epochs(
        loss_of,
        cfg,
        rows=n,
        modules=[tail, towers],
        optimizer=opt,
        scheduler=sched,
        views=len(views),
        evaluate=evaluate,
        keep_best=keep_best,
        progress=progress or logged(log, "finetune"),
    )
    head = towers.export(extra)
    with torch.inference_mode():
        probe = tail(torch.from_numpy(np.asarray(catalog[:8], np.float32)))
    check_export(towers.catalog, head, probe)
    return TrainResult.of(head, towers, loop, started)
