"""Projection heads: the centring tower, the category signature, and their file format."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.heads import ProjectionHead, Tower, fit_softmax, l2_normalise


def _blobs(n: int = 120, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three separable clusters on a shared offset (like ImageNet features: all positive)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dim)) + 5.0
    labels = [("dress", "top", "shoe")[i % 3] for i in range(n)]
    x = np.stack([centres[i % 3] + 0.3 * rng.standard_normal(dim) for i in range(n)])
    return l2_normalise(x), labels


def test_fit_softmax_learns_separable_kinds_and_is_deterministic() -> None:
    x, y = _blobs()
    w, b, classes = fit_softmax(x, y)
    assert classes == ("dress", "shoe", "top")
    pred = np.asarray(classes)[(x @ w + b).argmax(axis=1)]
    assert (pred == np.asarray(y)).mean() > 0.95
    w2, b2, _ = fit_softmax(x, y)
    assert np.array_equal(w, w2) and np.array_equal(b, b2)
    with pytest.raises(InvalidInput, match="at least 2"):
        fit_softmax(x, ["dress"] * len(x))


def test_centring_removes_the_shared_direction() -> None:
    x, _ = _blobs()
    centre = x.mean(axis=0)
    head = ProjectionHead(Tower([], centre=centre), Tower([], centre=centre.copy()))
    raw = x @ x.T
    out = head.apply(x)
    centred = out @ out.T
    # All-positive features: every raw cosine is high; centred, other kinds fall below zero.
    assert raw.min() > 0.5
    assert np.median(centred) < 0.1
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_category_signature_favours_the_same_kind(tmp_path) -> None:
    x, y = _blobs()
    w, b, classes = fit_softmax(x, y)
    centre = x.mean(axis=0)
    kw = dict(category=(w, b), categories=classes)
    plain = ProjectionHead(Tower([], centre=centre), Tower([], centre=centre))
    kinds = ProjectionHead(
        Tower([], centre=centre), Tower([], centre=centre), category_weight=1.0, **kw
    )
    assert kinds.out_dim == x.shape[1] + 3
    # The appended signature adds weight² × the Bhattacharyya overlap of the two kinds to the
    # centred cosine: the same inner-product search now favours items of the query's kind.
    a, g = kinds.apply(x[:1]), kinds.apply(x)
    c = plain.apply(x)
    p = kinds.category_probabilities(x)
    overlap = np.sqrt(p[:1]) @ np.sqrt(p).T
    norm = np.sqrt(1.0 + 1.0**2 * (np.sqrt(p) ** 2).sum(axis=1))  # |[unit, w·sqrt(p)]|
    expected = (c[:1] @ c.T + overlap) / (norm[0] * norm)
    assert np.allclose(a @ g.T, expected, atol=1e-5)
    same = np.asarray(y) == y[0]
    assert overlap[0, same].min() > overlap[0, ~same].max()
    probs = kinds.category_probabilities(x[:5])
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    kinds.save(tmp_path / "head.npz")
    back = ProjectionHead.load(tmp_path / "head.npz")
    assert back.categories == classes and back.category_weight == 1.0
    assert np.allclose(back.apply(x), kinds.apply(x), atol=1e-6)


def test_a_category_classifier_of_the_wrong_shape_is_refused() -> None:
    centre = np.zeros(4, np.float32)
    with pytest.raises(ConfigError, match="category classifier"):
        ProjectionHead(
            Tower([], centre=centre),
            Tower([], centre=centre),
            category=(np.zeros((5, 2), np.float32), np.zeros(2, np.float32)),
            categories=("a", "b"),
            category_weight=1.0,
        )
    with pytest.raises(ConfigError, match="layer or a centre"):
        Tower([])


def test_a_worn_garment_gets_no_signature_from_a_head_that_trusts_it_on_flat_photos(
    tmp_path,
) -> None:
    """``kind_on_worn`` false: catalog rows and flat queries carry the signature; a worn query
    row carries zeros there, and ranks the catalog exactly as the head without a signature."""
    x, y = _blobs()
    w, b, classes = fit_softmax(x, y)
    centre = x.mean(axis=0)
    plain = ProjectionHead(Tower([], centre=centre), Tower([], centre=centre))
    flat_only = ProjectionHead(
        Tower([], centre=centre),
        Tower([], centre=centre),
        category=(w, b),
        categories=classes,
        category_weight=0.75,
        extra={"kind_on_worn": False},
    )
    gallery = flat_only.apply(x)
    worn = flat_only.apply(x[:5], "query", worn=True)
    assert np.all(worn[:, -3:] == 0) and np.allclose(np.linalg.norm(worn, axis=1), 1.0)
    assert np.array_equal(
        np.argsort(-(worn @ gallery.T), axis=1),
        np.argsort(-(plain.apply(x[:5]) @ plain.apply(x).T), axis=1),
    )
    flat = flat_only.apply(x[:5], "query")
    assert flat[:, -3:].min() >= 0 and flat[:, -3:].max() > 0.3
    assert np.allclose(flat, flat_only.apply(x[:5], "query", worn=False))
    # a head that trusts its classifier everywhere (the default) gives worn rows the signature
    everywhere = ProjectionHead(
        Tower([], centre=centre), Tower([], centre=centre), category=(w, b),
        categories=classes, category_weight=0.75,
    )  # fmt: skip
    assert everywhere.kind_on_worn
    assert np.allclose(everywhere.apply(x[:5], "query", worn=True), flat)
    flat_only.save(tmp_path / "head.npz")
    back = ProjectionHead.load(tmp_path / "head.npz")
    assert not back.kind_on_worn
    assert np.allclose(back.apply(x[:5], "query", worn=True), worn, atol=1e-6)


def test_a_shipped_kind_classifier_is_used_only_where_it_fits(tmp_path) -> None:
    """`build-default` reads demo/catalog/kind_classifier.npz (fitted on more photos of the same
    kinds); it is the head's classifier only with the same classes and width and when it names
    the build's own labelled photos right; otherwise the build fits one on them, and says why."""
    from lookalike.embed.garment_default import (
        _kind_classifier,
        load_kind_classifier,
        save_kind_classifier,
    )

    x, y = _blobs()
    w, b, classes = fit_softmax(x, y)
    path = tmp_path / "kind_classifier.npz"
    save_kind_classifier(path, w, b, classes, {"fitted_on": {"clothing_photos": 7}})
    shipped = load_kind_classifier(path)
    assert shipped.classes == classes and shipped.figures["fitted_on"]["clothing_photos"] == 7
    used, why = _kind_classifier(x, y, shipped)
    assert why.startswith("shipped") and "7 clothing photos" in why and used.classes == classes
    assert np.allclose(used.w, w) and used.figures == shipped.figures
    # other classes, another width, or weights that misname the photos: fit on the photos
    renamed = [{"dress": "gown"}.get(v, v) for v in y]
    assert "classes" in _kind_classifier(x, renamed, shipped)[1]
    wide = np.concatenate([x, x], axis=1)
    assert "features" in _kind_classifier(wide, y, shipped)[1]
    shipped.w = -shipped.w
    used, why = _kind_classifier(x, y, shipped)
    assert why.startswith("fitted on the 120 labelled photos") and "names" in why
    assert used.figures == {"fitted_on": {"labelled_photos": 120}} and used.classes == classes
    assert "no shipped classifier" in _kind_classifier(x, y, None)[1]
    # a file that is not one is a clear error, not a crash inside numpy
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInput, match="not a kind classifier file"):
        load_kind_classifier(tmp_path / "bad.npz")
