"""Letterbox preprocessing on real demo photos: aspect kept, padding neutral, range bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput
from lookalike.embed.preprocess import PreprocessConfig, letterbox, preprocess_batch


def _open(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def _content_box(arr: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/cols that are not pure padding (padding normalises to exactly 0 in all channels)."""
    content = np.any(arr != 0.0, axis=0)
    rows, cols = np.where(content.any(axis=1))[0], np.where(content.any(axis=0))[0]
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_shape_dtype_and_range(demo_images: list[Path]) -> None:
    for path in demo_images[:20]:
        arr = letterbox(_open(path))
        assert arr.shape == (3, 224, 224)
        assert arr.dtype == np.float32
        # (0 - 127) / 128 and (255 - 127) / 128 bound every pixel.
        assert arr.min() >= -127 / 128 and arr.max() <= 1.0
        assert arr.std() > 0.05  # a real photo, not a flat canvas


def test_aspect_kept_and_padding_centred(demo_images: list[Path]) -> None:
    checked = 0
    for path in demo_images:
        img = _open(path)
        w, h = img.size
        if abs(w - h) < 40:  # need a clearly non-square photo to see padding
            continue
        # Nudge grey-127 pixels so photo content never equals the pad value by chance.
        arr = np.asarray(img).copy()
        arr[arr == 127] = 128
        arr = letterbox(Image.fromarray(arr))
        top, bottom, left, right = _content_box(arr)
        ch, cw = bottom - top + 1, right - left + 1
        assert max(ch, cw) == 224
        assert abs(cw / ch - w / h) < 0.02 * (w / h) + 1 / min(ch, cw)
        # Centred: the padding on both sides differs by at most one pixel.
        assert abs(top - (223 - bottom)) <= 1 and abs(left - (223 - right)) <= 1
        # Padding is exactly the normalised pad value, 0.
        if ch < 224:
            assert np.all(arr[:, :top, :] == 0.0) and np.all(arr[:, bottom + 1 :, :] == 0.0)
        else:
            assert np.all(arr[:, :, :left] == 0.0) and np.all(arr[:, :, right + 1 :] == 0.0)
        checked += 1
        if checked == 5:
            break
    assert checked > 0, "the demo catalog should hold some non-square photos"


def test_normalisation_matches_formula() -> None:
    img = Image.new("RGB", (50, 50), (0, 127, 255))
    arr = letterbox(img, size=32)
    assert arr.shape == (3, 32, 32)
    np.testing.assert_allclose(arr[:, 16, 16], [-127 / 128, 0.0, 1.0], atol=1e-6)


def test_grey_alpha_and_tall_images(demo_images: list[Path]) -> None:
    grey = _open(demo_images[0]).convert("L")
    arr = letterbox(grey)
    assert np.allclose(arr[0], arr[1]) and np.allclose(arr[1], arr[2])
    rgba = Image.new("RGBA", (40, 10), (0, 0, 0, 0))  # fully transparent → white
    arr = letterbox(rgba, size=40)
    assert np.allclose(arr[:, 20, 20], (255 - 127) / 128)
    tall = Image.new("RGB", (1, 500), (10, 10, 10))  # degenerate width still gets 1 column
    arr = letterbox(tall, size=64)
    assert np.any(arr != 0.0)


def test_batch_and_config_round_trip(demo_images: list[Path]) -> None:
    cfg = PreprocessConfig()
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict({"mean": 127, "std": 128}) == cfg
    imgs = [_open(p) for p in demo_images[:3]]
    batch = preprocess_batch(imgs, cfg)
    assert batch.shape == (3, 3, 224, 224)
    np.testing.assert_array_equal(batch[1], letterbox(imgs[1]))
    assert preprocess_batch([], cfg).shape == (0, 3, 224, 224)


def test_bad_input_and_bad_config() -> None:
    with pytest.raises(InvalidInput):
        letterbox(np.zeros((10, 10, 3)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PreprocessConfig(resize="stretch")
    with pytest.raises(ConfigError):
        PreprocessConfig.from_dict({"size": 224, "colour": "blue"})
