"""Layer 2: images → embeddings. ``load_embedder`` serves a registry model on the best runtime.

A model may carry a learned projection head (two towers: ``embed(images, role="query")`` for
shopper photos, ``role="catalog"`` for catalog photos) and a garment localiser
(``embed_and_locate``). Building the default model (``lookalike.embed.build``) needs torch, and
so does training (``lookalike.training``, apart from serving); nothing imported here does.
"""

from __future__ import annotations

from lookalike.embed.heads import ROLES, ProjectionHead, Role
from lookalike.embed.localize import Garment, LocalizerHead
from lookalike.embed.preprocess import PreprocessConfig, letterbox, preprocess_batch
from lookalike.embed.regions import FIXED_REGIONS, Box, colour_histogram, crop_box
from lookalike.embed.runtime import RUNTIMES, Embedder, EmbedderInfo, load_embedder

__all__ = [
    "FIXED_REGIONS",
    "ROLES",
    "RUNTIMES",
    "Box",
    "Embedder",
    "EmbedderInfo",
    "Garment",
    "LocalizerHead",
    "PreprocessConfig",
    "ProjectionHead",
    "Role",
    "colour_histogram",
    "crop_box",
    "letterbox",
    "load_embedder",
    "preprocess_batch",
]
