"""Garment localiser: a per-cell classifier on the CNN's last feature map, and its boxes.

The backbone's last feature map (``(1280, 7, 7)`` for a 224 px input, before global pooling) is
exposed as a second ONNX output, ``fmap`` (:func:`add_fmap_output`: graph surgery on the same
weights, no re-export). A linear softmax over each cell's 1280 features predicts background,
upper garment, lower garment or full-body garment (dress, romper, suit); a box per garment class
is the extent of the upsampled probability map above a threshold, mapped back from the
letterboxed square to the photo. Serving needs numpy only; training needs torch.

Trained from ``street/`` (Clothing Co-Parsing): ``masks/NAME.png`` hold per-pixel indices into
``labels.txt``. :data:`GARMENT_GROUPS` says which labels count as which garment.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.regions import Box, expand_box

__all__ = [
    "CLASSES",
    "FMAP_OUTPUT",
    "GARMENT_GROUPS",
    "Garment",
    "LocalizerHead",
    "add_fmap_output",
    "letterbox_geometry",
]

FMAP_OUTPUT = "fmap"
CLASSES = ("background", "upper", "lower", "full")
GARMENT_GROUPS: dict[str, tuple[str, ...]] = {
    "upper": (
        "blazer",
        "blouse",
        "bodysuit",
        "cape",
        "cardigan",
        "coat",
        "hoodie",
        "jacket",
        "jumper",
        "shirt",
        "sweater",
        "sweatshirt",
        "t-shirt",
        "top",
        "vest",
    ),
    "lower": ("jeans", "leggings", "pants", "shorts", "skirt"),
    "full": ("dress", "romper", "suit", "swimwear"),
}


@dataclass(frozen=True)
class Garment:
    """One garment found in a photo: ``label`` (upper/lower/full), normalised box, confidence."""

    label: str
    box: Box
    score: float


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """Where a ``width``×``height`` photo lands in the letterboxed square: (x, y, w, h) in 0..1.

    Mirrors :func:`lookalike.embed.preprocess.letterbox` (longest side scaled to ``size``,
    centred, rounded the same way).
    """
    scale = size / max(width, height)
    nw = max(1, min(size, round(width * scale)))
    nh = max(1, min(size, round(height * scale)))
    return ((size - nw) // 2 / size, (size - nh) // 2 / size, nw / size, nh / size)


def add_fmap_output(src: Path, dest: Path) -> None:
    """Copy an embedder ONNX graph, adding the pre-pool feature map as output ``fmap``.

    The feature map is the input of the graph's global pooling node (``ReduceMean`` or
    ``GlobalAveragePool``); the embedding stays the first output, so callers that read only
    output 0 see no change.
    """
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    pools = [n for n in graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    if len(pools) != 1:
        raise ConfigError(f"{src}: expected one global pooling node, found {len(pools)}")
    if any(o.name == FMAP_OUTPUT for o in graph.output):
        raise ConfigError(f"{src} already has an {FMAP_OUTPUT!r} output")
    fmap = pools[0].input[0]
    graph.node.append(onnx.helper.make_node("Identity", [fmap], [FMAP_OUTPUT], name="fmap_out"))
    out = onnx.helper.make_tensor_value_info(FMAP_OUTPUT, onnx.TensorProto.FLOAT, None)
    graph.output.append(out)
    onnx.save(model, str(dest))


class LocalizerHead:
    """Per-cell softmax ``w (C_in, K)``, ``b (K,)`` over :data:`CLASSES`, and box rules."""

    def __init__(
        self,
        w: np.ndarray,
        b: np.ndarray,
        *,
        # Chosen on a split of the localiser's own training photos (box IoU 0.36 vs 0.19 at
        # threshold 0.4): a narrow street figure rarely fills a 32 px cell.
        threshold: float = 0.2,
        min_share: float = 0.01,
        margin: float = 0.0,
        upsample: int = 4,
    ) -> None:
        if w.ndim != 2 or w.shape[1] != len(CLASSES) or b.shape != (len(CLASSES),):
            raise ConfigError(f"localiser weights must be (C, {len(CLASSES)}), got {w.shape}")
        self.w, self.b = w.astype(np.float32), b.astype(np.float32)
        self.threshold, self.min_share = threshold, min_share
        self.margin, self.upsample = margin, upsample

    @property
    def in_dim(self) -> int:
        return int(self.w.shape[0])

    def probabilities(self, fmap: np.ndarray) -> np.ndarray:
        """``(n, C, H, W)`` feature maps → ``(n, K, H, W)`` class probabilities per cell."""
        if fmap.ndim != 4 or fmap.shape[1] != self.in_dim:
            raise InvalidInput(f"expected (n, {self.in_dim}, H, W) feature maps, got {fmap.shape}")
        logits = np.einsum("nchw,ck->nkhw", fmap.astype(np.float32), self.w)
        logits += self.b[None, :, None, None]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def boxes(self, probs: np.ndarray, image_size: tuple[int, int], size: int) -> list[Garment]:
        """Garment boxes of one photo from its ``(K, H, W)`` probabilities, best first."""
        x0, y0, w, h = letterbox_geometry(image_size[0], image_size[1], size)
        found: list[Garment] = []
        for k, label in enumerate(CLASSES[1:], start=1):
            cells = probs[k]
            up = np.asarray(
                Image.fromarray(cells.astype(np.float32), "F").resize(
                    (cells.shape[1] * self.upsample, cells.shape[0] * self.upsample),
                    Image.Resampling.BILINEAR,
                )
            )
            mask = up > self.threshold
            if not mask.any() or mask.mean() < self.min_share:
                continue
            ys, xs = np.nonzero(mask)
            gh, gw = mask.shape
            sq = (xs.min() / gw, ys.min() / gh, (xs.max() + 1) / gw, (ys.max() + 1) / gh)
            # square coordinates → photo coordinates (undo the letterbox padding)
            box = ((sq[0] - x0) / w, (sq[1] - y0) / h, (sq[2] - x0) / w, (sq[3] - y0) / h)
            try:
                box = expand_box(box, self.margin)
            except InvalidInput:
                continue  # the region fell entirely in the padding
            found.append(Garment(label, box, round(float(up[mask].mean()), 4)))
        return sorted(found, key=lambda g: -g.score)

    # -- files ------------------------------------------------------------------------------
    def to_meta(self) -> dict[str, float | int | list[str]]:
        return {
            "classes": list(CLASSES),
            "threshold": self.threshold,
            "min_share": self.min_share,
            "margin": self.margin,
            "upsample": self.upsample,
        }

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, w=self.w, b=self.b, meta=np.asarray(json.dumps(self.to_meta())))
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> LocalizerHead:
        try:
            with np.load(path, allow_pickle=False) as data:
                w, b, meta = data["w"], data["b"], json.loads(str(data["meta"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read localiser file {path}: {exc}") from exc
        if tuple(meta.get("classes", CLASSES)) != CLASSES:
            raise ConfigError(f"{path}: localiser classes {meta.get('classes')} are not {CLASSES}")
        return cls(
            w,
            b,
            threshold=float(meta["threshold"]),
            min_share=float(meta["min_share"]),
            margin=float(meta["margin"]),
            upsample=int(meta["upsample"]),
        )


def mask_targets(
    masks: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    labels: Sequence[str],
    size: int,
    cells: int,
) -> np.ndarray:
    """Per-cell class shares ``(n, K, cells, cells)`` of letterboxed label masks."""
    lookup = np.zeros(max(len(labels), 256), dtype=np.int64)
    for k, group in enumerate(CLASSES[1:], start=1):
        for i, name in enumerate(labels):
            if name in GARMENT_GROUPS[group]:
                lookup[i] = k
    out = np.zeros((len(masks), len(CLASSES), cells, cells), dtype=np.float32)
    for n, (mask, (w, h)) in enumerate(zip(masks, sizes, strict=True)):
        cls = lookup[mask]
        img = Image.fromarray(cls.astype(np.uint8), "L").resize(
            _letterboxed_size(w, h, size), Image.Resampling.NEAREST
        )
        canvas = np.zeros((size, size), np.uint8)
        nw, nh = img.size
        ox, oy = (size - nw) // 2, (size - nh) // 2
        canvas[oy : oy + nh, ox : ox + nw] = np.asarray(img)
        step = size // cells
        for k in range(len(CLASSES)):
            hit = (canvas == k).astype(np.float32)[: step * cells, : step * cells]
            out[n, k] = hit.reshape(cells, step, cells, step).mean(axis=(1, 3))
    return out


def _letterboxed_size(w: int, h: int, size: int) -> tuple[int, int]:
    scale = size / max(w, h)
    return max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
