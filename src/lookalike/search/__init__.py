"""Layer 3: the query path (decode → embed → index → catalog → results) and index building."""

from __future__ import annotations

from lookalike.search.evaluation import RetrievalReport, evaluate_retrieval, read_pairs
from lookalike.search.indexing import build_index, load_production_index, update_index
from lookalike.search.service import Hit, SearchResult, SearchService

__all__ = [
    "Hit",
    "RetrievalReport",
    "SearchResult",
    "SearchService",
    "build_index",
    "evaluate_retrieval",
    "load_production_index",
    "read_pairs",
    "update_index",
]
