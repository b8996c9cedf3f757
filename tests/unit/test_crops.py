"""Crops, colour signatures, heads and localiser geometry: numpy-only pieces, on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.heads import ProjectionHead, Tower
from lookalike.embed.localize import CLASSES, LocalizerHead, letterbox_geometry, mask_targets
from lookalike.embed.regions import (
    FIXED_REGIONS,
    box_iou,
    colour_histogram,
    crop_box,
    expand_box,
)
from lookalike.search.crops import merge_best


@pytest.fixture(scope="module")
def photo(demo_images: list[Path]) -> Image.Image:
    with Image.open(demo_images[0]) as img:
        return img.convert("RGB")


def test_box_iou() -> None:
    a = (0.0, 0.0, 0.5, 1.0)
    assert box_iou(a, a) == 1.0
    assert box_iou(a, (0.5, 0.0, 1.0, 1.0)) == 0.0  # touching, not overlapping
    assert box_iou(a, (0.25, 0.0, 0.75, 1.0)) == pytest.approx(0.25 / 0.75)
    assert box_iou((0.2, 0.2, 0.2, 0.2), (0.2, 0.2, 0.2, 0.2)) == 0.0  # empty boxes


def test_crop_box_cuts_the_named_region(photo: Image.Image) -> None:
    w, h = photo.size
    upper = crop_box(photo, FIXED_REGIONS["upper"])
    assert upper.size == (w, round(0.8 * h) - round(0.2 * h))
    assert crop_box(photo, FIXED_REGIONS["whole"]).size == photo.size
    mirrored = crop_box(photo, (0.0, 0.0, 0.5, 1.0), flip=True)
    left = np.asarray(crop_box(photo, (0.0, 0.0, 0.5, 1.0)))
    np.testing.assert_array_equal(np.asarray(mirrored), left[:, ::-1])


def test_crop_box_refuses_empty_and_clips_outside(photo: Image.Image) -> None:
    with pytest.raises(InvalidInput):
        crop_box(photo, (0.5, 0.5, 0.5, 0.9))
    with pytest.raises(InvalidInput):
        crop_box(photo, (0.1, 0.2, 0.3))  # type: ignore[arg-type]
    assert crop_box(photo, (-0.5, -0.5, 2.0, 2.0)).size == photo.size
    assert expand_box((0.4, 0.4, 0.6, 0.6), 0.5) == pytest.approx((0.3, 0.3, 0.7, 0.7))


def test_colour_histogram_tells_red_from_blue(photo: Image.Image) -> None:
    red = Image.new("RGB", (80, 120), (200, 20, 30))
    dark_red = Image.new("RGB", (60, 60), (215, 25, 35))
    blue = Image.new("RGB", (80, 120), (20, 40, 200))
    hr, hd, hb = (colour_histogram(i) for i in (red, dark_red, blue))
    assert hr.shape == (64,) and hr.dtype == np.float32
    assert np.linalg.norm(hr) == pytest.approx(1.0, abs=1e-5)
    assert float(hr @ hd) > float(hr @ hb)
    real = colour_histogram(photo)
    assert np.isfinite(real).all() and (real > 0).sum() > 1


def test_head_round_trips_and_roles_differ(tmp_path: Path, photo: Image.Image) -> None:
    rng = np.random.default_rng(0)
    q = Tower([(rng.standard_normal((32, 16)).astype(np.float32), np.zeros(16, np.float32))])
    c = Tower(
        [
            (rng.standard_normal((32, 8)).astype(np.float32), np.zeros(8, np.float32)),
            (rng.standard_normal((8, 16)).astype(np.float32), np.ones(16, np.float32)),
        ],
        skip=rng.standard_normal((32, 16)).astype(np.float32),
    )
    head = ProjectionHead(q, c, kind="mlp", colour_weight=0.5, colour_bins=4)
    assert head.out_dim == 16 + 64
    head.save(tmp_path / "head.npz")
    back = ProjectionHead.load(tmp_path / "head.npz")
    x = rng.standard_normal((3, 32)).astype(np.float32)
    colour = back.colours([photo] * 3)
    for role in ("query", "catalog"):
        np.testing.assert_allclose(
            back.apply(x, role, colour), head.apply(x, role, colour), atol=1e-6
        )
    out_q, out_c = back.apply(x, "query", colour), back.apply(x, "catalog", colour)
    assert out_q.shape == (3, 80)
    np.testing.assert_allclose(np.linalg.norm(out_q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out_q, out_c)
    with pytest.raises(InvalidInput):
        back.apply(x, "query")  # the colour rows are missing
    with pytest.raises(InvalidInput):
        back.apply(x, "shopper")  # type: ignore[arg-type]


def test_head_file_that_is_not_a_head_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "head.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ConfigError):
        ProjectionHead.load(bad)


def test_merge_best_keeps_each_items_best_crop() -> None:
    merged = merge_best([[("a", 0.9, 1), ("b", 0.5, 2)], [("b", 0.8, 3), ("c", 0.7, 4)]], k=3)
    assert merged == [("a", 0.9, 1, 0), ("b", 0.8, 3, 1), ("c", 0.7, 4, 1)]
    assert merge_best([[("a", 0.9, 1)], []], k=0) == []


def test_localiser_box_maps_back_through_the_letterbox() -> None:
    # A portrait photo 120x240 letterboxes to the middle half of the square.
    assert letterbox_geometry(120, 240, 224) == pytest.approx((0.25, 0.0, 0.5, 1.0), abs=0.01)
    k = len(CLASSES)
    w = np.zeros((2, k), np.float32)
    w[0, CLASSES.index("upper")] = 10.0  # channel 0 says "upper garment"
    loc = LocalizerHead(w, np.zeros(k, np.float32), threshold=0.4, margin=0.0)
    fmap = np.zeros((1, 2, 7, 7), np.float32)
    fmap[0, 0, 1:3, 3] = 1.0  # two cells in the middle column, rows 1-2
    found = loc.boxes(loc.probabilities(fmap)[0], (120, 240), 224)
    assert [g.label for g in found] == ["upper"]
    x0, y0, x1, y1 = found[0].box
    assert 0.0 <= x0 < 0.5 < x1 <= 1.0  # the column is centred in the photo
    assert 0.05 < y0 < 0.2 and 0.35 < y1 < 0.5


def test_mask_targets_are_class_shares() -> None:
    labels = ["null", "skin", "dress", "jeans", "top"]
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 4  # top half: a top
    mask[32:] = 3  # bottom half: jeans
    t = mask_targets([mask], [(64, 64)], labels, 224, 7)
    assert t.shape == (1, len(CLASSES), 7, 7)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    assert t[0, CLASSES.index("upper"), 0].mean() == pytest.approx(1.0)
    assert t[0, CLASSES.index("lower"), 6].mean() == pytest.approx(1.0)
