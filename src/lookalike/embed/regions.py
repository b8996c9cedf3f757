"""Named image regions and the colour signature of a region (numpy + Pillow only).

A box is ``(x0, y0, x1, y1)`` in normalised image coordinates (0..1, origin top left). The fixed
regions are priors for a shopper photo of one person: ``upper`` covers the torso of a
standing, roughly centred person, ``lower`` the hips and legs. The garment localiser
(:mod:`lookalike.embed.localize`) replaces them with boxes found in the photo. Training, the
offline evaluation and the search service all cut crops with :func:`crop_box`, so a model is
always queried with the same crops it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.core.errors import InvalidInput

__all__ = [
    "FIXED_REGIONS",
    "Box",
    "box_iou",
    "colour_histogram",
    "crop_box",
    "expand_box",
]

Box = tuple[float, float, float, float]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# Chosen by eye on viton-dev *train* person photos (torso-centred, 3:4), never tuned on val.
FIXED_REGIONS: dict[str, Box] = {
    "whole": (0.0, 0.0, 1.0, 1.0),
    "upper": (0.0, 0.2, 1.0, 0.8),
    "lower": (0.0, 0.5, 1.0, 1.0),
}


def _check_box(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise InvalidInput(f"a box has 4 numbers (x0, y0, x1, y1), got {len(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(1.0, x1), min(1.0, y1)
    if not (x1 > x0 and y1 > y0):
        raise InvalidInput(f"empty box {tuple(box)}")
    return (x0, y0, x1, y1)


def expand_box(box: Sequence[float], margin: float) -> Box:
    """Grow a box by ``margin`` of its width/height on each side, clipped to the image."""
    x0, y0, x1, y1 = _check_box(box)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return _check_box((x0 - dx, y0 - dy, x1 + dx, y1 + dy))


def crop_box(image: Image.Image, box: Sequence[float], *, flip: bool = False) -> Image.Image:
    """Cut normalised ``box`` out of ``image`` (at least one pixel); ``flip`` mirrors it."""
    x0, y0, x1, y1 = _check_box(box)
    w, h = image.size
    left, top = min(w - 1, int(round(x0 * w))), min(h - 1, int(round(y0 * h)))
    right, bottom = max(left + 1, int(round(x1 * w))), max(top + 1, int(round(y1 * h)))
    out = (
        image
        if (left, top, right, bottom) == (0, 0, w, h)
        else image.crop((left, top, right, bottom))
    )
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out


def colour_histogram(image: Image.Image, bins: int = 4, size: int = 64) -> np.ndarray:
    """A ``bins**3`` HSV histogram of the central part of ``image``, L2-normalised (float32).

    The image is shrunk to ``size`` pixels square first (cheap and enough for colour); the
    outer 15% on each side is ignored because crops keep some background at their borders.
    Near-white pixels (the catalog's studio background) are dropped when they are not the
    majority, so a product shot and a worn garment compare on the garment's colour.
    """
    small = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    m = int(size * 0.15)
    hsv = np.asarray(small.convert("HSV"), dtype=np.int32)[m : size - m, m : size - m]
    rgb = np.asarray(small, dtype=np.int32)[m : size - m, m : size - m]
    pix = hsv.reshape(-1, 3)
    white = rgb.reshape(-1, 3).min(axis=1) > 235
    if white.mean() < 0.7:
        pix = pix[~white]
    idx = (pix * bins) // 256
    flat = (idx[:, 0] * bins + idx[:, 1]) * bins + idx[:, 2]
    hist = np.bincount(flat, minlength=bins**3).astype(np.float32)
    hist = np.sqrt(hist)  # Hellinger: inner products of sqrt-histograms compare distributions
    return hist / max(float(np.linalg.norm(hist)), 1e-12)
