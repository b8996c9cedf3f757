"""Layer 2: images → embeddings. ``load_embedder`` serves a registry model on the best runtime.

Building a model (``lookalike.embed.build``) needs torch; nothing imported here does.
"""

from __future__ import annotations

from lookalike.embed.preprocess import PreprocessConfig, letterbox, preprocess_batch
from lookalike.embed.runtime import RUNTIMES, Embedder, EmbedderInfo, load_embedder

__all__ = [
    "RUNTIMES",
    "Embedder",
    "EmbedderInfo",
    "PreprocessConfig",
    "letterbox",
    "load_embedder",
    "preprocess_batch",
]
