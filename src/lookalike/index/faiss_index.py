"""``FaissIndex``: a faiss index built from a factory string, behind the ``VectorIndex`` protocol.

Metric is inner product (vectors are L2-normalised, so scores are cosines). How caller ids and
removal are handled depends on what faiss supports for the index type (``mode``):

- ``native``: IVF indexes (``IVF…,Flat``, ``IVF…,PQ…``, ``OPQ…,IVF…``) store caller ids in their
  inverted lists and remove them in place; a hash-table direct map lets us reconstruct by id.
- ``idmap``: flat-code indexes (``Flat``, ``PQ…``, ``SQ8``) are wrapped in ``IndexIDMap2``, whose
  removal compacts the storage.
- ``tombstone``: indexes faiss cannot remove from (``HNSW…``, ``…,Refine(…)``, fast-scan
  ``IVF…,PQ…x4fs``) are wrapped in ``IndexIDMap2``; removed ids go into a tombstone set that is
  filtered out at search time. ``ntotal`` counts live vectors, ``tombstones`` reports the dead
  ones and ``compact()`` rebuilds the index without them (for HNSW that re-inserts every vector:
  minutes for a million). Re-adding a tombstoned id compacts first, so an id never has two
  vectors.

Filtered search (``allowed=``) passes an ``IDSelectorBatch`` to faiss. Graph and IVF searches
can miss hits under a very selective filter, so for approximate indexes a small allowed set
(<= ``exact_filter_max``) is searched exactly over its reconstructed vectors, and any query that
comes back with fewer than ``k`` hits is redone the same way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from lookalike.core.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
)
from lookalike.index.checks import check_ids, check_vectors, fsync_and_rename
from lookalike.index.factory import (
    DEFAULT_EF_SEARCH,
    DEFAULT_REFINE_K_FACTOR,
    MIN_POINTS_PER_LIST,
    default_nprobe,
    parse_nlist,
    with_nlist,
)

__all__ = ["INDEX_FILE", "META_FILE", "FaissIndex", "create_index", "load_index"]

log = logging.getLogger("lookalike.index")

INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
FORMAT_VERSION = 1
# Reconstructing and scanning 20k x 1280 floats costs a few ms: cheaper than a graph walk that
# must skip 98% of the nodes it meets.
EXACT_FILTER_MAX = 20_000
_CHUNK = 65_536

Mode = Literal["native", "idmap", "tombstone"]


def create_index(factory: str, dim: int) -> FaissIndex:
    """An empty inner-product index from a faiss factory string ("Flat", "HNSW32", "IVF1024,PQ32").

    Raises InvalidInput for a string faiss cannot parse or a non-positive ``dim``.
    """
    if not isinstance(dim, int) or dim <= 0:
        raise InvalidInput(f"index dim must be a positive int, got {dim!r}")
    raw = _make_raw(factory, dim)
    mode = _mode_of(raw)
    index = raw if mode == "native" else faiss.IndexIDMap2(raw)
    return FaissIndex(index, factory=factory, dim=dim, mode=mode)


def load_index(directory: Path, *, mmap: bool = False) -> FaissIndex:
    """Load an index written by ``FaissIndex.save``.

    ``mmap=True`` maps the index file instead of reading it (faiss ``IO_FLAG_MMAP``): fast start
    and shared pages for read-only serving; index types that cannot be mapped are read normally.
    Raises NotFound when the files are missing, IntegrityError when they disagree.
    """
    directory = Path(directory)
    meta_path, index_path = directory / META_FILE, directory / INDEX_FILE
    if not meta_path.is_file() or not index_path.is_file():
        raise NotFound(f"no index in {directory} (needs {INDEX_FILE} and {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{meta_path} is unreadable: {exc}") from exc
    index = None
    if mmap:
        try:
            index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP)
        except RuntimeError as exc:
            log.warning("cannot mmap %s (%s); reading it into memory", index_path, exc)
    if index is None:
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise IntegrityError(f"{index_path} is not a readable faiss index: {exc}") from exc
    tombstones = np.asarray(meta.get("tombstones", []), dtype=np.int64)
    loaded = FaissIndex(
        index,
        factory=meta["factory"],
        dim=int(meta["dim"]),
        mode=meta["mode"],
        tombstones=tombstones,
    )
    if loaded.dim != index.d or loaded.ntotal != int(meta["ntotal"]):
        raise IntegrityError(
            f"{directory}: meta.json says dim={meta['dim']} ntotal={meta['ntotal']}, the index "
            f"file has dim={index.d} ntotal={loaded.ntotal} — rebuild it with "
            "`lookalike index build`"
        )
    params = meta.get("search_params", {})
    loaded.ef_search = int(params.get("ef_search", loaded.ef_search))
    loaded.nprobe = int(params.get("nprobe", loaded.nprobe))
    loaded.refine_k_factor = float(params.get("refine_k_factor", loaded.refine_k_factor))
    return loaded


class FaissIndex:
    """A faiss index with caller int64 ids, removal, filtered search and atomic save.

    Search parameters are plain attributes, persisted by ``save``: ``ef_search`` (HNSW),
    ``nprobe`` (IVF), ``refine_k_factor`` (``Refine``), ``exact_filter_max`` (see module doc).
    Not thread-safe for concurrent writes; concurrent ``search`` calls are safe.
    """

    def __init__(
        self,
        index: faiss.Index,
        *,
        factory: str,
        dim: int,
        mode: Mode,
        tombstones: np.ndarray | None = None,
    ) -> None:
        self._index = index
        self.factory = factory
        self.dim = dim
        self.mode: Mode = mode
        self.ef_search = DEFAULT_EF_SEARCH
        nlist = parse_nlist(factory)
        self.nprobe = default_nprobe(nlist) if nlist else 1
        self.refine_k_factor = DEFAULT_REFINE_K_FACTOR
        self.exact_filter_max = EXACT_FILTER_MAX
        self._ids = np.sort(self._stored_ids())
        self._dead = np.unique(tombstones) if tombstones is not None else np.empty(0, np.int64)
        self._set_direct_map()

    # -- properties -------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return int(self._index.ntotal) - len(self._dead)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def tombstones(self) -> int:
        """Removed vectors still stored (``tombstone`` mode only); ``compact()`` drops them."""
        return len(self._dead)

    @property
    def ids(self) -> np.ndarray:
        """Sorted live ids (a copy)."""
        return np.setdiff1d(self._ids, self._dead, assume_unique=True)

    # -- writes -----------------------------------------------------------------------------

    def train(self, vectors: np.ndarray) -> None:
        """Train the quantizers (IVF/PQ) on representative vectors; a no-op if already trained.

        With fewer than 39 vectors per IVF list the list count is lowered to ``n // 39`` (and
        ``factory`` updated, with a warning) rather than training empty or degenerate lists.
        """
        x = check_vectors(self.dim, vectors, "training vectors")
        if self.is_trained:
            return
        nlist = parse_nlist(self.factory)
        if nlist and len(x) < nlist * MIN_POINTS_PER_LIST:
            smaller = max(1, len(x) // MIN_POINTS_PER_LIST)
            new_factory = with_nlist(self.factory, smaller)
            log.warning(
                "%d training vectors are too few for %s (needs %d per list): using %s",
                len(x), self.factory, MIN_POINTS_PER_LIST, new_factory,
            )  # fmt: skip
            fresh = create_index(new_factory, self.dim)
            self._index, self.factory, self.nprobe = fresh._index, new_factory, fresh.nprobe
        try:
            self._index.train(x)
        except RuntimeError as exc:
            raise InvalidInput(
                f"cannot train {self.factory} on {len(x)} vectors: {_faiss_message(exc)}"
            ) from exc
        self._set_direct_map()

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under caller ids. Ids must be unique and not already live.

        Raises InvalidInput (untrained index, duplicate ids, non-finite values, shape errors) or
        DimensionMismatch.
        """
        x = check_vectors(self.dim, vectors, "vectors")
        ids = check_ids(ids)
        if len(ids) != len(x):
            raise InvalidInput(f"got {len(x)} vectors but {len(ids)} ids")
        if not self.is_trained:
            raise InvalidInput(
                f"index {self.factory} is not trained: call train(vectors) before add()"
            )
        if len(np.unique(ids)) != len(ids):
            raise InvalidInput("ids passed to add() contain duplicates")
        live = self.contains(ids)
        if live.any():
            raise InvalidInput(
                f"{int(live.sum())} ids are already in the index (e.g. {int(ids[live][0])}): "
                "remove() them first"
            )
        if len(x) == 0:
            return
        if np.isin(ids, self._dead).any():
            self.compact()
        self._index.add_with_ids(x, ids)
        self._ids = np.union1d(self._ids, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; ids not in the index are ignored. Returns the number removed."""
        ids = np.unique(check_ids(ids))
        present = ids[self.contains(ids)]
        if len(present) == 0:
            return 0
        if self.mode == "tombstone":
            self._dead = np.union1d(self._dead, present)
            return len(present)
        # IVF's hash-table direct map only removes through an IDSelectorArray.
        removed = int(self._index.remove_ids(faiss.IDSelectorArray(present)))
        if removed != len(present):
            raise IntegrityError(f"faiss removed {removed} of {len(present)} ids")
        self._ids = np.setdiff1d(self._ids, present, assume_unique=True)
        return removed

    def compact(self) -> int:
        """Rebuild without tombstoned vectors; returns how many were dropped (0 if none).

        HNSW re-inserts every live vector (exact); ``Refine(SQ8)`` re-encodes from its 8-bit copy.
        """
        if len(self._dead) == 0:
            return 0
        live = self.ids
        vectors = self._reconstruct(live)
        dropped = len(self._dead)
        self._index.reset()
        if len(live):
            self._index.add_with_ids(vectors, live)
        self._ids, self._dead = live, np.empty(0, np.int64)
        log.info("compacted %s: dropped %d tombstoned vectors", self.factory, dropped)
        return dropped

    # -- reads ------------------------------------------------------------------------------

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = check_ids(ids)
        return np.isin(ids, self._ids) & ~np.isin(ids, self._dead)

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner-product hits per query; see ``VectorIndex.search``.

        ``queries`` may be one ``(dim,)`` vector or ``(m, dim)``. ``allowed`` ids not in the
        index are ignored; an empty allowed set gives all-padding rows.
        """
        q = check_vectors(self.dim, queries, "queries")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInput(f"k must be a positive int, got {k!r}")
        k = int(k)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        labels = np.full((len(q), k), -1, dtype=np.int64)
        if len(q) == 0 or self.ntotal == 0:
            return scores, labels
        exact = self.factory == "Flat"
        candidates: np.ndarray | None = None  # None: every live id
        if allowed is not None:
            allowed = np.unique(check_ids(allowed))
            candidates = allowed[self.contains(allowed)]
            if len(candidates) == 0:
                return scores, labels
            if not exact and len(candidates) <= self.exact_filter_max:
                return self._exact(q, candidates, k)
            selector = faiss.IDSelectorBatch(candidates)
        elif len(self._dead):
            inner = faiss.IDSelectorBatch(self._dead)
            selector = faiss.IDSelectorNot(inner)
            selector.referenced = inner  # keep the wrapped selector alive while searching
        else:
            selector = None
        if selector is not None and self._leaf_is_fast_scan_flat():
            # IndexPQFastScan takes no search parameters, hence no selector: scan exactly.
            pool = self.ids if candidates is None else candidates
            return self._exact(q, pool, k)
        params = self._params(selector)
        d, i = self._index.search(q, k, params=params)
        found = i >= 0
        scores[found], labels[found] = d[found], i[found]
        n_candidates = self.ntotal if candidates is None else len(candidates)
        short = found.sum(axis=1) < min(k, n_candidates)
        if not exact and short.any():
            pool = self.ids if candidates is None else candidates
            scores[short], labels[short] = self._exact(q[short], pool, k)
        return scores, labels

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        """Write ``index.faiss`` and ``meta.json`` atomically (temp name, fsync, rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "factory": self.factory,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "mode": self.mode,
            "metric": "inner_product",
            "faiss_version": faiss.__version__,
            "tombstones": [int(t) for t in self._dead],
            "search_params": {
                "ef_search": self.ef_search,
                "nprobe": self.nprobe,
                "refine_k_factor": self.refine_k_factor,
            },
        }
        tmp_index = directory / f".{INDEX_FILE}.{os.getpid()}.tmp"
        try:
            try:
                faiss.write_index(self._index, str(tmp_index))
            except RuntimeError as exc:  # faiss's C++ write error: the OS error it saw, as one
                full = "No space left on device" in str(exc)
                code = errno.ENOSPC if full else errno.EIO
                raise OSError(code, os.strerror(code), str(tmp_index)) from exc
            fsync_and_rename(tmp_index, directory / INDEX_FILE)
            tmp_meta = directory / f".{META_FILE}.{os.getpid()}.tmp"
            tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
            fsync_and_rename(tmp_meta, directory / META_FILE)
        finally:
            for leftover in directory.glob(f".*.{os.getpid()}.tmp"):
                leftover.unlink(missing_ok=True)
        return [INDEX_FILE, META_FILE]

    def __repr__(self) -> str:
        return (
            f"FaissIndex({self.factory!r}, dim={self.dim}, ntotal={self.ntotal}, "
            f"mode={self.mode!r}, tombstones={self.tombstones})"
        )

    # -- internals --------------------------------------------------------------------------

    def _params(self, selector: faiss.IDSelector | None) -> faiss.SearchParameters | None:
        """Search parameters for this index type, carrying ``selector``.

        faiss only reads a selector where the search happens: IndexIDMap translates a top-level
        one, but IndexRefine and IndexPreTransform pass only their ``*_index_params`` down.
        """
        if self.mode == "native":
            inner = faiss.downcast_index(self._index)
        else:
            inner = faiss.downcast_index(self._index.index)
            if selector is not None and not isinstance(
                inner, faiss.IndexFlatCodes | faiss.IndexHNSW
            ):
                # Nested params are out of IndexIDMap's reach: translate caller ids ourselves.
                translated = faiss.IDSelectorTranslated(self._index.id_map, selector)
                translated.referenced = selector
                selector = translated
        if isinstance(inner, faiss.IndexRefine):
            base = _leaf_params(faiss.downcast_index(inner.base_index), self, selector)
            params = faiss.IndexRefineSearchParameters(k_factor=self.refine_k_factor)
            params.base_index_params = base
            params.referenced = base
            return params
        if isinstance(inner, faiss.IndexPreTransform):
            leaf = _leaf_params(faiss.downcast_index(inner.index), self, selector)
            params = faiss.SearchParametersPreTransform()
            params.index_params = leaf
            params.referenced = leaf
            return params
        if selector is None and isinstance(inner, faiss.IndexFastScan):
            return None  # IndexPQFastScan rejects any params
        return _leaf_params(inner, self, selector)

    def _leaf_is_fast_scan_flat(self) -> bool:
        inner = faiss.downcast_index(self._index.index if self.mode != "native" else self._index)
        return isinstance(inner, faiss.IndexFastScan) and not isinstance(inner, faiss.IndexIVF)

    def _exact(self, q: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product top-k of ``q`` over the vectors of ``pool`` ids."""
        best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_i = np.full((len(q), 0), -1, dtype=np.int64)
        for start in range(0, len(pool), _CHUNK):
            chunk = pool[start : start + _CHUNK]
            kk = min(k, len(chunk))
            d, pos = faiss.knn(q, self._reconstruct(chunk), kk, metric=faiss.METRIC_INNER_PRODUCT)
            best_s = np.hstack([best_s, d])
            best_i = np.hstack([best_i, chunk[pos]])
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(best_s, order, axis=1)
        i = np.take_along_axis(best_i, order, axis=1)
        pad = k - s.shape[1]
        if pad > 0:
            s = np.hstack([s, np.full((len(q), pad), -np.inf, dtype=np.float32)])
            i = np.hstack([i, np.full((len(q), pad), -1, dtype=np.int64)])
        return s.astype(np.float32), i

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (approximate for compressed indexes), one row each."""
        return self._reconstruct(np.asarray(ids, dtype=np.int64))

    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for start in range(0, len(ids), _CHUNK):
            chunk = np.ascontiguousarray(ids[start : start + _CHUNK])
            out[start : start + len(chunk)] = self._index.reconstruct_batch(chunk)
        return out

    def _stored_ids(self) -> np.ndarray:
        if self.mode != "native":
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self._index)
        invlists = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
            for lst in range(ivf.nlist)
            if invlists.list_size(lst)
        ]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def _set_direct_map(self) -> None:
        # IVF reconstructs (and removes) by id only through a direct map: a hash table of caller
        # ids in native mode, an array of positions under IndexIDMap2 (fast-scan IVF).
        if not self.is_trained:
            return
        if self.mode == "native":
            wanted, ivf = faiss.DirectMap.Hashtable, faiss.extract_index_ivf(self._index)
        else:
            inner = faiss.downcast_index(self._index.index)
            if isinstance(inner, faiss.IndexPreTransform):
                inner = faiss.downcast_index(inner.index)
            if not isinstance(inner, faiss.IndexIVF):
                return
            wanted, ivf = faiss.DirectMap.Array, inner
        if ivf.direct_map.type != wanted:
            ivf.set_direct_map_type(wanted)


def _leaf_params(
    index: faiss.Index, owner: FaissIndex, selector: faiss.IDSelector | None
) -> faiss.SearchParameters:
    if isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(owner.ef_search, 1))
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=min(owner.nprobe, index.nlist))
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
        params.referenced = selector
    return params


def _make_raw(factory: str, dim: int) -> faiss.Index:
    if not isinstance(factory, str) or not factory.strip():
        raise InvalidInput(f"index factory must be a non-empty string, got {factory!r}")
    if "IDMap" in factory:
        raise InvalidInput("leave IDMap out of the factory string: ids are handled for you")
    try:
        raw = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InvalidInput(
            f"faiss cannot build {factory!r} at dim {dim}: {_faiss_message(exc)}"
        ) from exc
    # 8-bit PQ factories turn on polysemous training (a slow annealing that only helps Hamming
    # filtering, which we never use): it multiplies training time for no recall.
    ivf = faiss.try_extract_index_ivf(raw)
    for part in (raw, ivf, getattr(faiss.downcast_index(raw), "index", None)):
        part = faiss.downcast_index(part) if part is not None else None
        if part is not None and hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False
    return raw


def _mode_of(raw: faiss.Index) -> Mode:
    top = faiss.downcast_index(raw)
    if isinstance(top, faiss.IndexPreTransform):
        top = faiss.downcast_index(top.index)
    if isinstance(top, faiss.IndexIVFFastScan):
        return "tombstone"  # its block inverted lists cannot remove by id
    if isinstance(top, faiss.IndexIVF):
        return "native"
    if isinstance(top, faiss.IndexFlatCodes):
        return "idmap"
    return "tombstone"


def _faiss_message(exc: Exception) -> str:
    # faiss messages carry a C++ stack prefix ("Error in ... at file:line: msg"); keep the msg.
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    return text.split(": ", 1)[-1] if text.startswith("Error in") else text
