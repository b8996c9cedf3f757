"""Hypothesis properties of decode_image: any size, mode and format; any mutation of the bytes.

Properties: a valid image of an accepted format decodes to RGB of its own size (or is refused
for its aspect ratio); a mutated file (bytes flipped, cut, inserted, header fields rewritten)
either decodes to RGB within the decoded-pixel cap or raises one of our errors (``BadImage``,
``UnsupportedImage``, ``TooLarge``) and nothing else. Bounded and derandomized for CI.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.core.errors import BadImage, InvalidInput, TooLarge
from lookalike.core.images import MAX_ASPECT_RATIO, MIN_SIDE, DecodeBudget, decode_image

# Modes each writer accepts (Pillow converts or refuses others).
MODES = {
    "JPEG": ["L", "RGB", "CMYK"],
    "PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"],
    "WEBP": ["RGB", "RGBA"],
    "GIF": ["L", "P"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["RGB"],
}
CAP = 1_000_000  # decoded pixels allowed in these properties
PROPS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    base = Image.fromarray(rgba, "RGBA")
    if mode == "P":
        return base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return base.convert(mode)


@st.composite
def encoded(draw: st.DrawFn) -> tuple[str, tuple[int, int], bytes]:
    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    width = draw(st.integers(1, 96))
    height = draw(st.integers(1, 96))
    img = make_image(mode, width, height, draw(st.integers(0, 2**16)))
    buf = io.BytesIO()
    params: dict[str, object] = {}
    if fmt == "JPEG":
        params = {"quality": draw(st.integers(30, 95)), "progressive": draw(st.booleans())}
    img.save(buf, fmt, **params)
    return fmt, (width, height), buf.getvalue()


def decode(data: bytes) -> Image.Image:
    return decode_image(data, max_decoded_pixels=CAP, budget=DecodeBudget(2**30, wait_s=0))


@PROPS
@given(encoded())
def test_valid_images_decode_to_rgb_of_their_size(case: tuple[str, tuple[int, int], bytes]) -> None:
    fmt, (width, height), data = case
    refusal = None  # (status, a word of the message) when the decoder must refuse it
    if fmt == "TIFF":
        refusal = (415, "")
    elif min(width, height) < MIN_SIDE:
        refusal = (422, "too small")
    elif max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        refusal = (422, "aspect")
    if refusal is not None:
        with pytest.raises(BadImage) as info:
            decode(data)
        assert info.value.status == refusal[0] and refusal[1] in info.value.message
        return
    img = decode(data)
    assert img.mode == "RGB"
    assert img.size == (width, height)
    img.load()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    _, _, data = draw(encoded())
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "field", "zero"]))
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "zero":
            end = pos + draw(st.integers(1, 256))
            out[pos:end] = bytes(len(out[pos:end]))
        else:  # rewrite a 16/32-bit header field near the start with a hostile value
            pos = min(pos, 40)
            value = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFF, 0xFFFFFFFF, 0x10000]))
            width = 2 if value <= 0xFFFF else 4
            order = draw(st.sampled_from(["big", "little"]))
            out[pos : pos + width] = value.to_bytes(width, order)
    return bytes(out)


@PROPS
@given(mutated())
def test_mutated_files_decode_or_raise_only_our_errors(data: bytes) -> None:
    try:
        img = decode(data)
    except InvalidInput as exc:
        # BadImage (422), UnsupportedImage (415) or TooLarge (413); never a bare 400 or 500.
        assert isinstance(exc, (BadImage, TooLarge)), type(exc)
        assert exc.status in (413, 415, 422)
        assert exc.message
        return
    assert img.mode == "RGB"
    assert 0 < img.width * img.height <= CAP
    img.load()


@PROPS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_our_errors(data: bytes) -> None:
    try:
        img = decode(data)
    except InvalidInput as exc:
        assert exc.status in (413, 415, 422)
        return
    assert img.mode == "RGB" and img.width * img.height <= CAP
