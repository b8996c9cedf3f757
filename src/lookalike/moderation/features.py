"""What the pre-filter reads from one post: one backbone, one detector, one caption.

A post's features come in named blocks (the classifier's manifest lists the blocks it uses, so a
served artifact computes exactly what it was trained on):

=========  ===========================================================================  ======
block      what                                                                          width
=========  ===========================================================================  ======
whole      the CNN embedding of the whole photo (unit row of the ImageNet backbone)      1280
crop       the embedding of the ``full`` garment box (shoulders → feet) the body-part    1280
           detector implies; the whole photo again when it finds no person
parts      detector evidence: the best score of each of its 18 classes, "a person"       21
           (:func:`~lookalike.embed.bodyparts.garment_boxes` found one), the full box's
           height and width (0 without a person)
caption    log(1 + hashtags), a brand mention, a dress word (all 0 without a caption)    3
=========  ===========================================================================  ======

The backbone and the detector are the search's own runtimes (:class:`LoadedEmbedder` over an
ONNX session, :class:`BodyPartDetector`): one detector pass gives the garment box *and* the
nudity check (:func:`~lookalike.embed.bodyparts.exposure`), so safety costs nothing extra.
:class:`PostFeatures` is the per-batch result; :class:`Extractor` makes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.core.errors import ConfigError
from lookalike.embed.bodyparts import (
    LABELS,
    BodyPartDetector,
    Part,
    exposure,
    garment_boxes,
    may_show_person,
)
from lookalike.embed.localize import Garment
from lookalike.embed.preprocess import PreprocessConfig
from lookalike.embed.regions import crop_box
from lookalike.embed.runtime import EmbedderInfo, LoadedEmbedder
from lookalike.embed.session import onnx_session

__all__ = [
    "BLOCKS",
    "BRAND_WORDS",
    "DRESS_WORDS",
    "Extractor",
    "PostFeatures",
    "caption_features",
    "parts_features",
    "stack_blocks",
]

BLOCKS: tuple[str, ...] = ("whole", "crop", "parts", "caption")
DRESS_WORDS = ("dress", "gown", "frock", "maxi", "midi", "sundress", "kleid", "vestido")
BRAND_WORDS = ("lookalike",)
_HASHTAG = re.compile(r"#\w+")
_INPUT = "pixels"
PARTS_WIDTH = len(LABELS) + 3


def caption_features(caption: str | None, brands: Sequence[str] = BRAND_WORDS) -> np.ndarray:
    """``[log(1 + hashtags), brand mentioned, dress word]`` of a caption (zeros for none)."""
    text = (caption or "").lower()
    tags = len(_HASHTAG.findall(text))
    brand = any(b.lower() in text for b in brands)
    dress = any(re.search(rf"\b{w}", text) for w in DRESS_WORDS)
    return np.array([math.log1p(tags), float(brand), float(dress)], np.float32)


def parts_features(parts: Sequence[Part], garments: Sequence[Garment]) -> np.ndarray:
    """The detector block: best score per class, person found, full box height and width."""
    best = np.zeros(PARTS_WIDTH, np.float32)
    index = {label: i for i, label in enumerate(LABELS)}
    for p in parts:
        i = index[p.label]
        best[i] = max(best[i], p.score)
    full = next((g for g in garments if g.label == "full"), None)
    if full is not None:
        x0, y0, x1, y1 = full.box
        best[len(LABELS) :] = (1.0, y1 - y0, x1 - x0)
    return best


@dataclass
class PostFeatures:
    """One batch's features: the blocks as ``(n, width)`` rows plus what safety needs.

    ``match_rows`` are the backbone rows of what a catalog match of each post embeds: its
    ``full`` garment crop, the whole photo without a person (the ``crop`` block's rows, also
    when the classifier does not read that block). ``detector`` is the key of the detector
    that found the garments (:attr:`~lookalike.embed.bodyparts.BodyPartDetector.key`);
    ``people`` whether each photo may show a person even where no garment was placed
    (:func:`~lookalike.embed.bodyparts.may_show_person`).
    """

    blocks: dict[str, np.ndarray]
    exposure: list[dict[str, float]] = field(default_factory=list)
    garments: list[list[Garment]] = field(default_factory=list)
    match_rows: np.ndarray | None = None
    detector: str | None = None
    people: list[bool] = field(default_factory=list)

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        return stack_blocks(self.blocks, names)


def stack_blocks(blocks: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The named blocks side by side, ``(n, sum of widths)`` float32."""
    missing = [n for n in names if n not in blocks]
    if missing:
        raise ConfigError(f"unknown feature blocks {missing}; known: {sorted(blocks)}")
    return np.concatenate([np.asarray(blocks[n], np.float32) for n in names], axis=1)


class Extractor:
    """The backbone + detector of one artifact (or of the search model it copies), on CPU.

    ``backbone`` is an embedder ONNX file taking ``pixels`` (n, 3, S, S) and giving unit rows;
    ``preprocess`` its manifest constants; ``detector`` nudenet's ``best.onnx``.
    """

    def __init__(
        self,
        backbone: Path,
        preprocess: dict[str, Any],
        detector: Path,
        *,
        label: str = "prefilter-backbone",
        threads: int | None = None,
    ) -> None:
        try:
            sess = onnx_session(Path(backbone), threads=threads)
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ConfigError(f"cannot load the pre-filter backbone {backbone}: {exc}") from exc
        output = sess.get_outputs()[0].name
        dim = int(sess.get_outputs()[0].shape[-1])

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(sess.run([output], {_INPUT: x})[0], dtype=np.float32)

        info = EmbedderInfo(label, dim, Path(backbone).stem, "onnx-cpu", "the pre-filter's copy")
        self.embedder = LoadedEmbedder(run, PreprocessConfig(**preprocess), info)
        self.detector = BodyPartDetector(Path(detector), threads=threads)
        self.dim = dim

    def extract(
        self,
        images: Sequence[Image.Image],
        captions: Sequence[str | None] | None = None,
        blocks: Sequence[str] = BLOCKS,
    ) -> PostFeatures:
        """Every block in ``blocks`` (plus exposure and garment boxes) for a batch of photos."""
        n = len(images)
        captions = list(captions) if captions is not None else [None] * n
        parts = self.detector.detect(images)
        garments = [garment_boxes(p) for p in parts]
        # One backbone row per post for the ``crop`` block (and the catalog match): its garment
        # crop, or the whole photo without a person; the whole photo of a person only when the
        # ``whole`` block is read.
        regions: list[Image.Image] = []
        persons: list[int] = []
        for i, (img, found) in enumerate(zip(images, garments, strict=True)):
            full = next((g for g in found if g.label == "full"), None)
            regions.append(crop_box(img, full.box) if full is not None else img)
            if full is not None:
                persons.append(i)
        want_whole = "whole" in blocks
        batch = regions + ([images[i] for i in persons] if want_whole else [])
        rows = self.embedder.embed_backbone(batch)
        match_rows = rows[:n]
        out: dict[str, np.ndarray] = {"crop": match_rows}
        if want_whole:
            whole = match_rows.copy()
            whole[persons] = rows[n:]
            out["whole"] = whole
        out["parts"] = np.zeros((n, PARTS_WIDTH), np.float32)
        out["caption"] = np.zeros((n, 3), np.float32)
        for i in range(n):
            out["parts"][i] = parts_features(parts[i], garments[i])
            out["caption"][i] = caption_features(captions[i])
        return PostFeatures(
            {k: v for k, v in out.items() if k in blocks},
            [exposure(p) for p in parts],
            garments,
            match_rows,
            self.detector.key,
            [bool(g) or may_show_person(p) for p, g in zip(parts, garments, strict=True)],
        )
