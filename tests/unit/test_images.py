"""decode_image on real demo photos re-encoded by Pillow, and on hostile payloads built here."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.core.errors import BadImage, TooLarge, Unavailable, UnsupportedImage
from lookalike.core.images import (
    DEFAULT_MAX_BYTES,
    DecodeBudget,
    decode_cost,
    decode_image,
    detect_type,
    draft_for_box,
    image_sha256,
    load_image_file,
)


@pytest.fixture(scope="module")
def photo(demo_images: list[Path]) -> Image.Image:
    """A real catalog photo (landscape or portrait, not square)."""
    for path in demo_images:
        with Image.open(path) as img:
            if img.width != img.height:
                return img.convert("RGB")
    pytest.fail("the demo catalog has no non-square photo")


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def expect(exc_type: type[Exception], status: int, data: bytes, **kwargs: object) -> str:
    """Decode and require exactly ``exc_type`` with ``status``; returns the message."""
    with pytest.raises(exc_type) as info:
        decode_image(data, **kwargs)
    assert type(info.value) is exc_type, f"{type(info.value).__name__}: {info.value}"
    assert info.value.status == status
    return info.value.message


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of all-black pixels: a few KiB that inflate to width×height."""
    row = b"\x00" + bytes((width + 7) // 8)
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# --- real photos in every accepted format and mode ---------------------------------------------


def test_demo_catalog_photos_decode_to_rgb_of_the_same_size(demo_images: list[Path]) -> None:
    for path in demo_images[::20]:
        img = load_image_file(path)
        with Image.open(path) as original:
            assert img.size == original.size
        assert img.mode == "RGB"


@pytest.mark.parametrize(
    ("fmt", "mode", "params"),
    [
        ("JPEG", "RGB", {"quality": 90}),
        ("JPEG", "RGB", {"progressive": True, "quality": 85}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("PNG", "RGB", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("PNG", "1", {}),
        ("PNG", "I;16", {}),
        ("PNG", "LA", {}),
        ("PNG", "RGBA", {}),
        ("WEBP", "RGB", {"quality": 80}),
        ("WEBP", "RGBA", {"lossless": True}),
        ("GIF", "P", {}),
        ("BMP", "RGB", {}),
        ("BMP", "L", {}),
    ],
)
def test_format_and_mode_decode_to_rgb_with_the_right_shape(
    photo: Image.Image, fmt: str, mode: str, params: dict[str, object]
) -> None:
    if mode == "I;16":
        source = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
        assert source.mode.startswith("I;16")
    elif mode in ("LA", "RGBA"):
        source = photo.convert(mode)
        source.putalpha(200)
    else:
        source = photo.convert(mode)
    img = decode_image(encode(source, fmt, **params))
    assert img.mode == "RGB"
    assert img.size == photo.size
    # The picture survives: same brightness layout as the original, not a blank or noise.
    # (Compared at 1/8 size, where 1-bit dithering averages out.)
    small = (photo.width // 8, photo.height // 8)
    got = np.asarray(img.convert("L").resize(small, Image.Resampling.BOX), float).ravel()
    want = np.asarray(photo.convert("L").resize(small, Image.Resampling.BOX), float).ravel()
    assert np.corrcoef(got, want)[0, 1] > 0.8


def test_cmyk_jpeg_keeps_its_colours(photo: Image.Image) -> None:
    img = decode_image(encode(photo.convert("CMYK"), "JPEG", quality=95))
    diff = np.abs(np.asarray(img, dtype=np.int16) - np.asarray(photo, dtype=np.int16))
    assert diff.mean() < 12


def test_exif_orientation_6_turns_the_photo_upright() -> None:
    stored = Image.new("RGB", (300, 200), "white")
    stored.paste((255, 0, 0), (0, 0, 30, 30))  # red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img = decode_image(encode(stored, "JPEG", exif=exif, quality=95))
    assert img.size == (200, 300)
    r, g, b = img.getpixel((200 - 10, 10))  # the mark is now top-right
    assert r > 200 and g < 60 and b < 60
    assert img.getpixel((10, 10))[1] > 200  # and top-left is white


def test_sixteen_bit_png_scales_to_eight_bits() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    img = decode_image(data)
    values = np.asarray(img)[0, :, 0]
    assert values[0] == 0 and values[-1] == 255
    assert abs(int(values[128]) - 128) <= 1
    assert np.all(np.diff(values.astype(int)) >= 0)


def test_int32_and_float_modes_scale_to_eight_bits() -> None:
    # No accepted format stores these, but Pillow may hand them over (e.g. "I" from a 16-bit
    # file in older Pillow); the conversion must not clip them to black and white.
    from lookalike.core.images import _to_rgb

    ramp16 = np.linspace(0, 65535, 256).astype(np.int32).reshape(16, 16)
    assert _to_rgb(Image.fromarray(ramp16, mode="I")).getpixel((15, 15)) == (255, 255, 255)
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    got = np.asarray(_to_rgb(Image.fromarray(unit, mode="F")))[..., 0].ravel()
    assert got[0] == 0 and got[-1] == 255 and abs(int(got[128]) - 128) <= 1
    signed = np.linspace(-1000, 1000, 256).astype(np.float32).reshape(16, 16)
    got = np.asarray(_to_rgb(Image.fromarray(signed, mode="F")))[..., 0].ravel()
    assert got[0] == 0 and got[-1] == 255


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (20, 0, 40, 20))  # right half fully transparent blue
    img = decode_image(encode(rgba, "PNG"))
    assert img.getpixel((5, 5)) == (255, 0, 0)
    assert img.getpixel((35, 5)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white() -> None:
    pal = Image.new("P", (40, 20), 1)
    pal.putpalette([0, 0, 0, 0, 128, 0] + [0] * (254 * 3))
    pal.paste(0, (0, 0, 20, 20))  # index 0 (black) is the transparent one
    data = encode(pal, "PNG", transparency=0)
    img = decode_image(data)
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((35, 5)) == (0, 128, 0)
    # the same through GIF
    img = decode_image(encode(pal, "GIF", transparency=0))
    assert img.getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (30, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.n_frames == 3
    img = decode_image(data)
    assert img.size == (30, 20)
    assert img.getpixel((15, 10)) == (255, 0, 0)


def test_fifty_megapixel_jpeg_decodes_at_reduced_scale(photo: Image.Image) -> None:
    big = photo.resize((8660, 5773), Image.Resampling.BILINEAR)
    data = encode(big, "JPEG", quality=80)
    del big
    img = decode_image(data)
    assert img.size == (1083, 722)  # 1/8 DCT scale
    assert img.mode == "RGB"
    assert max(decode_image(data, draft_size=(2000, 2000)).size) >= 2000


def test_draft_keeps_the_longer_side_at_least_the_target() -> None:
    # Pillow's own rule (both sides >= 224) would only halve this 2000×600 photo.
    img = decode_image(encode(Image.new("RGB", (2000, 600), "gray"), "JPEG"))
    assert img.size == (250, 75)
    portrait = decode_image(encode(Image.new("RGB", (600, 2000), "gray"), "JPEG"))
    assert portrait.size == (75, 250)
    # Small photos are not reduced at all, and draft_size=None means full size.
    assert decode_image(encode(Image.new("RGB", (400, 300)), "JPEG")).size == (400, 300)
    full = decode_image(encode(Image.new("RGB", (2000, 600)), "JPEG"), draft_size=None)
    assert full.size == (2000, 600)


def test_a_box_draft_decodes_as_large_as_the_pixel_cap_allows() -> None:
    """A box round a tenth of the photo asks for the whole photo at full size (draft_for_box);
    under a pixel cap the decode takes the weakest reduction that fits, not a refusal."""
    data = encode(Image.new("RGB", (3000, 2000), "gray"), "JPEG")
    box = (0.45, 0.45, 0.55, 0.55)
    assert draft_for_box(box) == (2240, 2240)
    assert decode_image(data, draft_size=draft_for_box(box)).size == (3000, 2000)
    capped = decode_image(data, draft_size=draft_for_box(box), max_decoded_pixels=2_000_000)
    assert capped.size == (1500, 1000)  # 1/2: 1.5 MP fits, the full 6 MP does not
    tight = decode_image(data, draft_size=draft_for_box(box), max_decoded_pixels=200_000)
    assert tight.size == (375, 250)  # 1/8
    assert decode_image(data).size == (375, 250)  # the whole-photo draft, cap or not
    with pytest.raises(TooLarge):  # no draft asked for: the full size, refused under the cap
        decode_image(data, draft_size=None, max_decoded_pixels=2_000_000)


# --- hostile and broken payloads ---------------------------------------------------------------


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert "not an image" in expect(UnsupportedImage, 415, data)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"<!DOCTYPE html><html><body>hello</body></html>", "HTML"),
        (b"just some words, not a photo\n", "plain text"),
        (b'{"image": "no"}', "JSON"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
    ],
)
def test_non_images_are_refused_naming_their_type(data: bytes, named: str) -> None:
    assert named in expect(UnsupportedImage, 415, data)


def test_a_real_tiff_is_refused_as_unsupported(photo: Image.Image) -> None:
    assert "TIFF" in expect(UnsupportedImage, 415, encode(photo, "TIFF"))


def test_truncated_jpeg_is_a_bad_image(photo: Image.Image) -> None:
    data = encode(photo, "JPEG", quality=90)
    assert "truncated" in expect(BadImage, 422, data[: len(data) // 2])


def test_truncated_png_is_a_bad_image(photo: Image.Image) -> None:
    data = encode(photo, "PNG")
    expect(BadImage, 422, data[: len(data) // 2])


def test_jpeg_with_corrupted_header_is_a_bad_image(photo: Image.Image) -> None:
    data = bytearray(encode(photo, "JPEG"))
    data[3:200] = bytes(range(197))  # keep the SOI magic, wreck the segments after it
    assert "JPEG" in expect(BadImage, 422, bytes(data))
    only_magic = b"\xff\xd8\xff" + b"\x00" * 20
    expect(BadImage, 422, only_magic)


def test_png_bomb_is_refused_from_the_header_without_allocating() -> None:
    data = png_bomb(20_000, 20_000)
    assert len(data) < 200_000  # tiny on the wire, 400 megapixels when decoded
    tracemalloc.start()
    try:
        message = expect(TooLarge, 413, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "megapixels" in message or "pixels" in message
    assert peak < 5 * len(data) + 1_000_000


def test_pixel_limit_is_ours_not_pillows_global(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as if some library turned it off
    assert "megapixels" in expect(TooLarge, 413, png_bomb(20_000, 20_000))
    assert "megapixels" in expect(TooLarge, 413, png_bomb(2_000, 2_000), max_pixels=1_000_000)
    assert decode_image(png_bomb(2_000, 2_000), max_pixels=4_000_000).size == (2000, 2000)


def test_decoding_leaves_pillow_global_state_alone(photo: Image.Image) -> None:
    from PIL import ImageFile

    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    decode_image(encode(photo, "JPEG"))
    with pytest.raises(TooLarge):
        decode_image(png_bomb(20_000, 20_000))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_too_many_bytes_are_too_large_and_no_bytes_a_bad_image(photo: Image.Image) -> None:
    expect(TooLarge, 413, b"\xff\xd8\xff" + bytes(DEFAULT_MAX_BYTES))
    expect(TooLarge, 413, encode(photo, "PNG"), max_bytes=1000)
    with pytest.raises(BadImage) as info:
        decode_image(b"")
    assert info.value.status == 422 and info.value.code == "empty"


def test_gif_without_frames_or_with_a_broken_stream_is_a_bad_image() -> None:
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    expect(BadImage, 422, screen + b"\x3b")  # header, then the trailer: zero frames
    good = encode(Image.new("P", (64, 64), 3), "GIF")
    expect(BadImage, 422, good[: len(good) - 12])  # cut inside the LZW stream
    expect(BadImage, 422, b"GIF89a")


def test_absurd_aspect_tiny_and_zero_size_are_bad_images() -> None:
    assert "aspect" in expect(BadImage, 422, encode(Image.new("L", (20, 100_000)), "PNG"))
    assert "aspect" in expect(BadImage, 422, encode(Image.new("RGB", (4000, 100)), "JPEG"))
    for size in ((1, 1), (15, 400), (300, 8)):
        message = expect(BadImage, 422, encode(Image.new("RGB", size), "PNG"))
        assert f"{size[0]}×{size[1]} pixels, too small" in message and "at least 16" in message
    assert decode_image(encode(Image.new("RGB", (16, 16)), "PNG")).size == (16, 16)
    zero = png_bomb(0, 10)
    expect(BadImage, 422, zero)


def test_load_image_file_refuses_what_is_not_a_regular_file(
    tmp_path: Path, photo: Image.Image
) -> None:
    path = tmp_path / "photo.webp"
    path.write_bytes(encode(photo, "WEBP"))
    assert load_image_file(path).size == photo.size
    with pytest.raises(TooLarge):
        load_image_file(path, max_bytes=100)
    with pytest.raises(BadImage) as info:
        load_image_file(tmp_path)
    assert type(info.value) is BadImage
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.jpg"
        os.mkfifo(fifo)
        with pytest.raises(BadImage):
            load_image_file(fifo)  # must not block reading a pipe
    with pytest.raises(FileNotFoundError):
        load_image_file(tmp_path / "missing.jpg")


def test_detect_type_and_sha256(photo: Image.Image) -> None:
    assert detect_type(encode(photo, "JPEG")) == "JPEG"
    assert detect_type(encode(photo, "PNG")) == "PNG"
    assert detect_type(encode(photo, "WEBP")) == "WEBP"
    assert detect_type(encode(photo, "GIF")) == "GIF"
    assert image_sha256(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_error_dict_is_what_the_api_returns() -> None:
    with pytest.raises(UnsupportedImage) as info:
        decode_image(b"hello there")
    body = info.value.to_dict()
    assert body["error"]["code"] == "unsupported_media_type"
    assert "not an image" in body["error"]["message"]


# --- bounded work: decoded-pixel cap, memory price, process budget -----------------------------


def test_upload_cap_counts_decoded_pixels_so_big_phone_jpegs_pass(photo: Image.Image) -> None:
    big = encode(photo.resize((8660, 5773), Image.Resampling.BILINEAR), "JPEG", quality=80)
    img = decode_image(big, max_decoded_pixels=24_000_000)
    assert img.size == (1083, 722)
    # The same pixel count as a PNG would decode in full: refused from the header, naming the cap.
    message = expect(TooLarge, 413, png_bomb(8660, 5773), max_decoded_pixels=24_000_000)
    assert "24 megapixels" in message and "8660×5773" in message
    # At full size (draft_size=None) the JPEG too is over the upload cap.
    expect(TooLarge, 413, big, max_decoded_pixels=24_000_000, draft_size=None)


def test_decode_memory_is_priced_from_the_header_and_capped() -> None:
    assert decode_cost("L", (1000, 1000)) < decode_cost("I;16", (1000, 1000))
    assert decode_cost("I;16", (1000, 1000)) < decode_cost("RGBA", (1000, 1000))
    data = encode(Image.new("RGBA", (1000, 1000), (1, 2, 3, 4)), "PNG")
    message = expect(TooLarge, 413, data, max_decoded_bytes=decode_cost("RGBA", (1000, 1000)) - 1)
    assert "MiB" in message and "RGBA" in message
    assert decode_image(data, max_decoded_bytes=decode_cost("RGBA", (1000, 1000))).size == (
        1000,
        1000,
    )


def test_budget_makes_a_second_large_image_wait_then_answers_busy() -> None:
    data = encode(Image.new("RGB", (800, 600), "gray"), "PNG")
    cost = decode_cost("RGB", (800, 600))
    budget = DecodeBudget(cost + cost // 2, wait_s=0.05)
    with budget.reserve(cost):  # another request is decoding a large image
        with pytest.raises(Unavailable) as info:
            decode_image(data, budget=budget)
        assert info.value.status == 503 and info.value.code == "busy"
        assert "retry" in info.value.message
    assert budget.in_flight == 0
    assert decode_image(data, budget=budget).size == (800, 600)  # room again
    assert budget.in_flight == 0 and budget.peak == cost  # never both at once
    expect(TooLarge, 413, data, budget=DecodeBudget(cost // 2))  # can never fit


def test_a_waiting_image_proceeds_when_room_is_freed() -> None:
    import threading

    data = encode(Image.new("RGB", (400, 300), "gray"), "PNG")
    cost = decode_cost("RGB", (400, 300))
    budget = DecodeBudget(cost, wait_s=10)
    results: list[tuple[int, int]] = []
    holder = budget.reserve(cost)
    holder.__enter__()
    worker = threading.Thread(target=lambda: results.append(decode_image(data, budget=budget).size))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive() and not results  # waiting for room, not failing
    holder.__exit__(None, None, None)
    worker.join(10)
    assert results == [(400, 300)]


def test_pillows_own_bomb_error_becomes_our_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow raises above 2000 pixels
    message = expect(TooLarge, 413, encode(Image.new("RGB", (100, 100)), "PNG"))
    assert "megapixels" in message


def test_alpha_composite_in_place_matches_pillows_composite() -> None:
    rng = np.random.default_rng(5)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "RGBA")
    want = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    got = decode_image(encode(rgba, "PNG"))
    diff = np.abs(np.asarray(got, int) - np.asarray(want.convert("RGB"), int))
    assert diff.max() <= 1
    la = rgba.convert("LA")
    white = Image.new("RGBA", la.size, (255, 255, 255, 255))
    want_la = Image.alpha_composite(white, la.convert("RGBA")).convert("L")
    got_la = decode_image(encode(la, "PNG")).convert("L")
    assert np.abs(np.asarray(got_la, int) - np.asarray(want_la, int)).max() <= 1


def test_hostile_exif_neither_crashes_nor_floods_warnings() -> None:
    import warnings

    entries = b"".join(
        struct.pack("<HHII", 0x100 + i, 4, 0x10000000, 0xFFFFFFF0) for i in range(3000)
    )
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 3000) + entries + bytes(4)
    data = encode(Image.new("RGB", (60, 40), "blue"), "JPEG", exif=exif)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = decode_image(data)
    assert img.size == (60, 40)
    assert [w for w in caught if "PIL" in w.filename] == []
    for orientation in (0, 9, 65535):
        ifd = struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x0112, 3, 1, orientation) + bytes(4)
        data = encode(Image.new("RGB", (60, 40)), "JPEG", exif=b"Exif\x00\x00II*\x00" + ifd)
        assert decode_image(data).size == (60, 40)


def test_sixteen_bit_conversion_works_in_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import lookalike.core.images as images

    monkeypatch.setattr(images, "_CHUNK_PIXELS", 100)  # many chunks for a small image
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    values = np.asarray(decode_image(encode(Image.fromarray(ramp), "PNG")))[:, :, 0]
    assert (values == values[0]).all()  # every chunk scaled alike
    assert values[0, 0] == 0 and values[0, -1] == 255 and abs(int(values[0, 128]) - 128) <= 1
