"""Layer 1: versioned artifacts (``name:version``), manifests, aliases, promote and rollback."""

from __future__ import annotations

from lookalike.registry.store import (
    ALIASES,
    ArtifactWriter,
    BrokenAliases,
    Ref,
    Registry,
    atomic_write_text,
    sha256_file,
)

__all__ = [
    "ALIASES",
    "ArtifactWriter",
    "BrokenAliases",
    "Ref",
    "Registry",
    "atomic_write_text",
    "sha256_file",
]
