"""Hypothesis properties of FaissIndex under any sequence of add / remove / search / save+load.

A plain dict (id -> vector) is the model. After every step: ``ntotal`` equals the live ids,
``ids`` and ``contains`` agree with the model, a removed id never comes back (unless re-added),
search returns only live ids (only allowed ones under a filter) and as many hits as it can,
``Flat`` search equals numpy brute force, and save/load gives the same index. One factory of
each removal mode: Flat (idmap), IVF (native), HNSW (tombstone). Bounded and derandomized.
"""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.index import FaissIndex, create_index, load_index

DIM = 8
ID_POOL = 60  # small, so removals and re-adds hit the same ids often
FACTORIES = ["Flat", "IVF4,Flat", "HNSW32"]
PROPS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def to_id(i: int) -> int:
    return i * 1_000_003 + 17  # large, sparse ids: positions are never mistaken for ids


add_op = st.tuples(st.just("add"), st.sets(st.integers(0, ID_POOL - 1), max_size=12))
remove_op = st.tuples(st.just("remove"), st.sets(st.integers(0, ID_POOL + 10), max_size=10))
search_op = st.tuples(
    st.just("search"),
    st.tuples(st.integers(1, 15), st.none() | st.sets(st.integers(0, ID_POOL + 5), max_size=8)),
)
save_op = st.tuples(st.just("save"), st.none())
ops = st.lists(st.one_of(add_op, remove_op, search_op, save_op), min_size=1, max_size=25)


def new_index(factory: str, rng: np.random.Generator) -> FaissIndex:
    index = create_index(factory, DIM)
    if not index.is_trained:
        index.train(unit(rng, 4 * 39))
    index.nprobe = 4  # all lists: IVF results are then exact
    return index


def check_invariants(index: FaissIndex, model: dict[int, np.ndarray], gone: set[int]) -> None:
    assert index.ntotal == len(model)
    assert sorted(index.ids.tolist()) == sorted(model)
    if gone:
        assert not index.contains(np.array(sorted(gone), dtype=np.int64)).any()
    if model:
        assert index.contains(np.array(sorted(model), dtype=np.int64)).all()


def check_search(
    index: FaissIndex,
    model: dict[int, np.ndarray],
    gone: set[int],
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = index.search(queries, k, allowed=allowed)
    assert scores.shape == labels.shape == (len(queries), k)
    pool = set(model) if allowed is None else set(model) & set(allowed.tolist())
    for row_scores, row in zip(scores, labels, strict=True):
        hits = row[row >= 0].tolist()
        assert set(hits) <= pool, "search returned an id that is not live (or not allowed)"
        assert not set(hits) & gone
        assert len(hits) == len(set(hits)) == min(k, len(pool))
        assert (row[len(hits) :] == -1).all() and np.isneginf(row_scores[len(hits) :]).all()
        # scores are the inner products of the returned vectors, best first
        want = [float(model[i] @ queries[0]) for i in hits] if len(queries) == 1 else None
        if want is not None:
            assert np.allclose(row_scores[: len(hits)], want, atol=1e-4)
        assert np.all(np.diff(row_scores[: len(hits)]) <= 1e-6)
    if index.factory == "Flat" and pool:
        ids = np.array(sorted(pool), dtype=np.int64)
        exact = queries @ np.stack([model[i] for i in ids.tolist()]).T
        top = np.sort(exact, axis=1)[:, ::-1][:, :k]
        assert np.allclose(scores[:, : top.shape[1]], top, atol=1e-5)
    return scores, labels


@pytest.mark.parametrize("factory", FACTORIES)
@PROPS
@given(steps=ops, seed=st.integers(0, 2**16))
def test_any_sequence_keeps_the_index_consistent(
    factory: str, steps: list[tuple[str, object]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    index = new_index(factory, rng)
    model: dict[int, np.ndarray] = {}
    gone: set[int] = set()
    with TemporaryDirectory() as tmp:
        for n, (op, arg) in enumerate(steps):
            if op == "add":
                fresh = [to_id(i) for i in sorted(arg) if to_id(i) not in model]  # type: ignore[call-overload]
                vectors = unit(rng, len(fresh))
                index.add(vectors, np.array(fresh, dtype=np.int64))
                model.update(zip(fresh, vectors, strict=True))
                gone -= set(fresh)
            elif op == "remove":
                ids = [to_id(i) for i in sorted(arg)]  # type: ignore[call-overload]
                removed = index.remove(np.array(ids, dtype=np.int64))
                assert removed == len(set(ids) & set(model))
                for i in ids:
                    if model.pop(i, None) is not None:
                        gone.add(i)
            elif op == "search":
                k, allowed_raw = arg  # type: ignore[misc]
                allowed = (
                    None
                    if allowed_raw is None
                    else np.array([to_id(i) for i in sorted(allowed_raw)], dtype=np.int64)
                )
                check_search(index, model, gone, unit(rng, 1), k, allowed)
                check_search(index, model, gone, unit(rng, 3), k, allowed)
            else:
                folder = Path(tmp) / str(n)
                index.save(folder)
                loaded = load_index(folder)
                assert loaded.factory == index.factory and loaded.mode == index.mode
                check_invariants(loaded, model, gone)
                queries = unit(rng, 2)
                k = max(1, min(10, len(model)))
                assert np.array_equal(loaded.search(queries, k)[1], index.search(queries, k)[1])
                loaded.nprobe = index.nprobe
                index = loaded  # carry on with the loaded copy
            check_invariants(index, model, gone)
