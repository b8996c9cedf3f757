"""The demo catalog's colour words come from the garment's pixels (scripts/make_demo_catalog.py)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "demo" / "catalog"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_demo_catalog", ROOT / "scripts" / "make_demo_catalog.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_script()


def _photo(background: tuple[int, int, int], size: int = 128) -> np.ndarray:
    """A flat background, float so garments can be painted on before :func:`_finish`."""
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = background
    return img


def _finish(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """Add a little sensor noise (a real photo is never one value) and make it uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def test_red_garment_on_white() -> None:
    img = _photo((245, 245, 242))
    img[20:118, 34:94] = (190, 28, 40)  # a dress from the neckline to the hem
    assert demo.garment_colour(_finish(img)) == "red"


def test_navy_garment_on_grey_with_skin_arms() -> None:
    img = _photo((150, 150, 150))
    img[10:30, 50:78] = (224, 172, 140)  # face and neck
    img[30:110, 44:84] = (18, 24, 60)  # the navy top and skirt
    img[30:90, 26:44] = (224, 172, 140)  # bare arms either side
    img[30:90, 84:102] = (224, 172, 140)
    assert demo.garment_colour(_finish(img)) == "navy"


def test_two_colour_print_is_multicolour() -> None:
    img = _photo((240, 240, 240))
    yy, xx = np.mgrid[0:98, 0:64]
    checks = ((yy // 8 + xx // 8) % 2).astype(bool)
    patch = np.where(checks[..., None], (200, 30, 40), (40, 70, 180))
    img[15:113, 32:96] = patch
    assert demo.garment_colour(_finish(img)) == "multicolour"


def test_garment_touching_the_frame_is_not_background() -> None:
    # A dress that runs off the bottom of the photo shows in the border; it is still the garment.
    img = _photo((235, 225, 205))
    img[20:, 30:98] = (40, 110, 60)
    assert demo.garment_colour(_finish(img)) == "green"


def test_named_colours_cover_the_hue_circle() -> None:
    cases = {
        (230, 200, 20): "yellow",
        (40, 150, 70): "green",
        (30, 140, 150): "teal",
        (40, 70, 200): "blue",
        (110, 40, 140): "purple",
        (240, 150, 180): "pink",
        (200, 30, 40): "red",
        (120, 75, 40): "brown",
        (215, 195, 160): "beige",
        (15, 15, 15): "black",
        (245, 245, 245): "white",
        (128, 128, 128): "grey",
    }
    for rgb, word in cases.items():
        lab = demo._lab(np.array(rgb, dtype=np.uint8))
        assert demo.name_colour(lab, max(rgb) / 255) == word, rgb


def test_committed_titles_agree_with_the_photos() -> None:
    """Every third item (a fixed sample, to keep this fast) plus every override."""
    rows = list(csv.DictReader(open(CATALOG / "items.csv", encoding="utf-8")))
    if not rows:
        pytest.skip("demo/catalog/items.csv is empty")
    sample = [r for i, r in enumerate(rows) if i % 3 == 0 or r["item_id"] in demo.OVERRIDES]
    wrong = []
    for r in sample:
        word = demo.colour_name(CATALOG / r["image"], r["item_id"])
        if not r["title"].startswith(word.capitalize() + " "):
            wrong.append((r["item_id"], r["title"], word))
    assert not wrong, f"titles disagree with colour_name() (run --retitle): {wrong[:5]}"
    assert set(demo.OVERRIDES.values()) <= {r["title"].split(" ", 1)[0].lower() for r in rows}
