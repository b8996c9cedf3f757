"""Layer 2: vector indexes behind the ``VectorIndex`` protocol (faiss by factory string).

index = create_index(suggest_factory(n, dim), dim)
if not index.is_trained:
    index.train(vectors)
index.add(vectors, ids)              # caller int64 ids
scores, ids = index.search(q, k=20, allowed=permitted_ids)
index.save(path); index = load_index(path, mmap=True)
"""

from __future__ import annotations

from lookalike.index.factory import suggest_factory
from lookalike.index.faiss_index import FaissIndex, create_index, load_index
from lookalike.index.protocol import VectorIndex

__all__ = ["FaissIndex", "VectorIndex", "create_index", "load_index", "suggest_factory"]
