"""A hostile-image corpus, built deterministically by code: bombs, oddities and non-images.

Why built and not checked in: every file is a few lines of intent (a PNG that declares 8900×8900
16-bit pixels in 150 KB, a JPEG whose frame header says 65500×65500, an EXIF block whose IFD
points past its end ...), and binary blobs in git hide that intent. ``build_corpus(folder)``
writes every case once (same bytes on every run) and returns them with what each must give.

``expect`` is the answer for a search upload (``Limits`` upload caps: 24 MP decoded after JPEG
draft, 400 MiB of decode buffers): ``"ok"`` or the HTTP status of the refusal ("413" too large,
"415" not an image / unsupported, "422" truncated or corrupt). ``catalog`` is the answer for a
catalog import (80 MP declared, 1 GiB of decode buffers), where a few large-but-real images pass.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SPECS", "UPLOAD", "Case", "Spec", "build_corpus"]

Outcome = str  # "ok" | "413" | "415" | "422"


@dataclass(frozen=True)
class Spec:
    """How to build one case: its file name, what it must give, and the bytes."""

    name: str
    suffix: str
    expect: Outcome
    build: Callable[[], bytes]
    catalog: Outcome | None = None  # None: same as ``expect``
    note: str = ""

    @property
    def catalog_expect(self) -> Outcome:
        return self.expect if self.catalog is None else self.catalog


@dataclass(frozen=True)
class Case:
    """A built case: the file on disk and the expected outcomes."""

    name: str
    path: Path
    expect: Outcome
    catalog: Outcome
    note: str

    @property
    def status(self) -> int:
        """The HTTP status a search upload of this file must get."""
        return 200 if self.expect == "ok" else int(self.expect)


# The upload settings the expectations are written for (Limits defaults); keyword arguments of
# lookalike.core.images.decode_image.
UPLOAD: dict[str, int] = {
    "max_bytes": 30 * 1024 * 1024,
    "max_pixels": 80_000_000,
    "max_decoded_pixels": 24_000_000,
    "max_decoded_bytes": 400 * 2**20,
}


# --- building blocks ---------------------------------------------------------------------------


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic photo-like RGB image: smooth colour fields and a few blocks."""
    rng = np.random.default_rng(seed)
    small_w, small_h = max(1, min(width, 64)), max(1, min(height, 64))
    base = rng.integers(0, 256, (small_h, small_w, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    return img


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def zeros_zlib(nbytes: int) -> bytes:
    """A zlib stream that inflates to ``nbytes`` zero bytes, built in milliseconds.

    After a full flush deflate restarts from nothing, so one compressed MiB of zeros can be
    repeated; the Adler-32 of n zeros is ``(n mod 65521) << 16 | 1``.
    """
    block = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert piece == again, "deflate output after a full flush is expected to repeat"
    full, rest = divmod(nbytes, len(block))
    tail = deflate.compress(bytes(rest)) + deflate.flush(zlib.Z_FINISH)
    adler = ((nbytes % 65521) << 16) | 1
    return b"\x78\xda" + piece * full + tail + struct.pack(">I", adler)


def png_raw(
    width: int,
    height: int,
    *,
    depth: int = 8,
    color: int = 0,
    extra_zeros: int = 0,
    before_idat: bytes = b"",
    rows: int | None = None,
) -> bytes:
    """A valid PNG of all-zero pixels (or only ``rows`` rows of data), built without Pillow.

    A few hundred KB declare any size; ``extra_zeros`` appends that many inflated zero bytes
    past the image's end (a "huge IDAT"); ``before_idat`` adds chunks between IHDR and IDAT.
    """
    row_bytes = 1 + (width * _CHANNELS[color] * depth + 7) // 8
    idat = zeros_zlib(row_bytes * (height if rows is None else rows) + extra_zeros)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    plte = png_chunk(b"PLTE", bytes(range(256)) * 3) if color == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + plte
        + before_idat
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0/SOF1/SOF2) of a JPEG to declare another size."""
    out = bytearray(data)
    i = 2
    while i + 9 < len(out):
        if out[i] != 0xFF:
            raise ValueError("not at a JPEG marker")
        marker = out[i + 1]
        length = struct.unpack(">H", out[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no frame header")


def gif_with_screen(data: bytes, width: int, height: int) -> bytes:
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def gif_with_frame(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the first image descriptor's size (the frame, not the logical screen)."""
    i = data.index(b"\x2c", 13)  # after the header and logical screen descriptor
    return data[: i + 5] + struct.pack("<HH", width, height) + data[i + 9 :]


def bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def bmp_rle8(width: int, height: int) -> bytes:
    """An 8-bit RLE BMP whose pixel data is only "end of bitmap": tiny, any declared size."""
    palette = b"".join(struct.pack("<BBBB", v, v, v, 0) for v in range(256))
    pixels = b"\x00\x01"
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    file_header = b"BM" + struct.pack("<IHHI", header_size + len(pixels), 0, 0, header_size)
    return file_header + info + palette + pixels


def webp_lossless_with_size(data: bytes, width: int, height: int) -> bytes:
    if data[12:16] != b"VP8L":
        raise ValueError("not a simple lossless WebP")
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    return data[:21] + bits.to_bytes(4, "little") + data[25:]


def webp_vp8x_with_size(data: bytes, width: int, height: int) -> bytes:
    if data[12:16] != b"VP8X":
        raise ValueError("not an extended WebP")
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return data[:24] + dims + data[30:]


def tiff_ifd(entries: list[tuple[int, int, int, int]]) -> bytes:
    """A little-endian TIFF whose first IFD holds ``(tag, type, count, value)`` entries."""
    body = struct.pack("<H", len(entries))
    body += b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0)


def jpeg_with_exif(exif: bytes, size: tuple[int, int] = (300, 200)) -> bytes:
    """A JPEG carrying ``exif`` (starting with ``Exif\\0\\0``) as its APP1 segment."""
    return encode(picture(*size, seed=7), "JPEG", quality=85, exif=exif)


def _exif_orientation(value: int, type_: int = 3) -> bytes:
    value_field = value if type_ == 4 else value & 0xFFFF
    return b"Exif\x00\x00" + tiff_ifd([(0x0112, type_, 1, value_field)])


def _exif_corrupt() -> bytes:
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 0xFFFFFF00) + bytes(range(256)) * 4


def _exif_huge() -> bytes:
    # 5000 entries whose values point far outside the block, in a 60 KB APP1 segment.
    entries = [(0x0100 + i % 4000, 4, 0x10000000, 0xFFFFFFF0) for i in range(5000)]
    return b"Exif\x00\x00" + tiff_ifd(entries)[:65000]


def _exif_loop() -> bytes:
    # An IFD whose "next IFD" offset points back at itself.
    body = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 8)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + body


def _frames(n: int, size: tuple[int, int]) -> list[Image.Image]:
    return [
        Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)) for i in range(n)
    ]


def _animated(fmt: str, n: int, size: tuple[int, int] = (64, 48)) -> bytes:
    first, *rest = _frames(n, size)
    params: dict[str, object] = {"save_all": True, "append_images": rest, "duration": 40}
    if fmt == "WEBP":
        params["lossless"] = True
    return encode(first, fmt, **params)


def _gray16(width: int, height: int) -> bytes:
    ramp = np.linspace(0, 65535, width * height, dtype=np.float64).reshape(height, width)
    return encode(Image.fromarray(ramp.astype(np.uint16)), "PNG")


def _la(width: int, height: int) -> bytes:
    img = picture(width, height, seed=3).convert("LA")
    img.putalpha(Image.linear_gradient("L").resize((width, height)))
    return encode(img, "PNG")


def _rgba(width: int, height: int, fmt: str = "PNG", **params: object) -> bytes:
    img = picture(width, height, seed=4).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((width, height)))
    return encode(img, fmt, **params)


def _palette(transparent: bool) -> bytes:
    img = picture(320, 240, seed=5).convert("P", palette=Image.Palette.ADAPTIVE)
    return encode(img, "PNG", **({"transparency": 0} if transparent else {}))


def _png_rgba16(width: int, height: int) -> bytes:
    arr = np.zeros((height, width, 4), dtype=">u2")
    arr[..., 0] = np.linspace(0, 65535, width, dtype=np.uint16)[None, :]
    arr[..., 3] = 65535
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw, 6))
        + png_chunk(b"IEND", b"")
    )


def _fifty_megapixel_jpeg() -> bytes:
    return encode(picture(8660, 5773, seed=1), "JPEG", quality=80)


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def _bad_crc(data: bytes) -> bytes:
    out = bytearray(data)
    out[29] ^= 0xFF  # last byte of the IHDR CRC
    return bytes(out)


def _small_jpeg(**params: object) -> bytes:
    return encode(picture(64, 64, seed=2), "JPEG", quality=80, **params)


def _rng_bytes(n: int, seed: int, prefix: bytes = b"") -> bytes:
    rng = np.random.default_rng(seed)
    return prefix + rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def _zip_tail() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("payload.txt", date_time=(2020, 1, 1, 0, 0, 0))
        zf.writestr(info, "not part of the photo\n" * 100)
    return buf.getvalue()


def _text_chunks(n: int) -> bytes:
    return b"".join(png_chunk(b"tEXt", b"k%d\x00v" % i) for i in range(n))


# --- the corpus --------------------------------------------------------------------------------

SPECS: tuple[Spec, ...] = (
    # real-ish images in every accepted format and mode: all decode
    Spec("jpeg_baseline", ".jpg", "ok", lambda: encode(picture(640, 480), "JPEG", quality=90)),
    Spec(
        "jpeg_progressive_12mp",
        ".jpg",
        "ok",
        lambda: encode(picture(4000, 3000, seed=8), "JPEG", quality=80, progressive=True),
        note="progressive: libjpeg buffers all DCT coefficients (72 MB)",
    ),
    Spec("jpeg_cmyk", ".jpg", "ok", lambda: encode(picture(400, 300).convert("CMYK"), "JPEG")),
    Spec("jpeg_gray", ".jpg", "ok", lambda: encode(picture(400, 300).convert("L"), "JPEG")),
    Spec(
        "jpeg_50mp_phone",
        ".jpg",
        "ok",
        _fifty_megapixel_jpeg,
        note="a normal phone photo: decodes at 1/8 scale",
    ),
    Spec("png_rgb", ".png", "ok", lambda: encode(picture(500, 400), "PNG")),
    Spec("png_rgba", ".png", "ok", lambda: _rgba(500, 400)),
    Spec("png_palette", ".png", "ok", lambda: _palette(False)),
    Spec("png_palette_transparent", ".png", "ok", lambda: _palette(True)),
    Spec("png_gray16_4000", ".png", "ok", lambda: _gray16(4000, 4000), note="I;16, 16 MP"),
    Spec("png_rgba16_3000x2000", ".png", "ok", lambda: _png_rgba16(3000, 2000)),
    Spec("png_la", ".png", "ok", lambda: _la(600, 400)),
    Spec("png_1bit", ".png", "ok", lambda: encode(picture(300, 300).convert("1"), "PNG")),
    Spec("webp_lossy", ".webp", "ok", lambda: encode(picture(500, 400), "WEBP", quality=80)),
    Spec("webp_lossless_rgba", ".webp", "ok", lambda: _rgba(300, 200, "WEBP", lossless=True)),
    Spec("gif_single", ".gif", "ok", lambda: encode(picture(300, 200).convert("P"), "GIF")),
    Spec("bmp_rgb", ".bmp", "ok", lambda: encode(picture(300, 200), "BMP")),
    Spec("bmp_palette", ".bmp", "ok", lambda: encode(picture(300, 200).convert("P"), "BMP")),
    Spec(
        "bmp_top_down",
        ".bmp",
        "ok",
        lambda: bmp_with_size(encode(picture(40, 30), "BMP"), 40, -30),
        note="negative height: rows stored top to bottom",
    ),
    # tiny and elongated
    Spec("png_1x1", ".png", "422", lambda: encode(Image.new("RGB", (1, 1), "red"), "PNG")),
    Spec("jpeg_1x1", ".jpg", "422", lambda: encode(Image.new("RGB", (1, 1), "red"), "JPEG")),
    Spec("gif_1x1", ".gif", "422", lambda: encode(Image.new("P", (1, 1)), "GIF")),
    Spec("webp_1x1", ".webp", "422", lambda: encode(Image.new("RGB", (1, 1)), "WEBP")),
    Spec("bmp_1x1", ".bmp", "422", lambda: encode(Image.new("RGB", (1, 1)), "BMP")),
    Spec("png_1x20", ".png", "422", lambda: encode(Image.new("L", (1, 20), 128), "PNG")),
    Spec("png_16x320", ".png", "ok", lambda: encode(Image.new("L", (16, 320), 128), "PNG")),
    Spec("png_15x32", ".png", "422", lambda: encode(Image.new("RGB", (15, 32), "red"), "PNG")),
    Spec("png_1x21", ".png", "422", lambda: encode(Image.new("L", (1, 21), 128), "PNG")),
    Spec("png_20000x1", ".png", "422", lambda: png_raw(20_000, 1)),
    Spec("jpeg_4000x10", ".jpg", "422", lambda: encode(Image.new("RGB", (4000, 10)), "JPEG")),
    # animated: only the first frame is decoded
    Spec("gif_300_frames", ".gif", "ok", lambda: _animated("GIF", 300)),
    Spec("webp_200_frames", ".webp", "ok", lambda: _animated("WEBP", 200)),
    Spec("apng_200_frames", ".png", "ok", lambda: _animated("PNG", 200)),
    # EXIF oddities: the pixels still decode
    Spec("exif_orientation_6", ".jpg", "ok", lambda: jpeg_with_exif(_exif_orientation(6))),
    Spec("exif_orientation_0", ".jpg", "ok", lambda: jpeg_with_exif(_exif_orientation(0))),
    Spec("exif_orientation_9", ".jpg", "ok", lambda: jpeg_with_exif(_exif_orientation(9))),
    Spec(
        "exif_orientation_huge",
        ".jpg",
        "ok",
        lambda: jpeg_with_exif(_exif_orientation(0xFFFFFFFF, type_=4)),
    ),
    Spec("exif_corrupt", ".jpg", "ok", lambda: jpeg_with_exif(_exif_corrupt())),
    Spec("exif_huge", ".jpg", "ok", lambda: jpeg_with_exif(_exif_huge())),
    Spec("exif_ifd_loop", ".jpg", "ok", lambda: jpeg_with_exif(_exif_loop())),
    Spec(
        "png_exif_orientation_8",
        ".png",
        "ok",
        lambda: encode(picture(200, 100), "PNG", exif=_exif_orientation(8)[6:]),
    ),
    # PNG bombs
    Spec(
        "png_gray16_8900",
        ".png",
        "413",
        lambda: png_raw(8900, 8900, depth=16),
        catalog="ok",
        note="the reported bomb: 150 KB, 79 MP of 16-bit gray",
    ),
    Spec("png_rgb_8900", ".png", "413", lambda: png_raw(8900, 8900, color=2), catalog="ok"),
    Spec("png_rgba_6000", ".png", "413", lambda: png_raw(6000, 6000, color=6), catalog="ok"),
    Spec("png_gray8_20000", ".png", "413", lambda: png_raw(20_000, 20_000)),
    Spec("png_palette_30000", ".png", "413", lambda: png_raw(30_000, 30_000, color=3)),
    Spec("png_rgba16_10000", ".png", "413", lambda: png_raw(10_000, 10_000, depth=16, color=6)),
    Spec(
        "png_huge_idat_zeros",
        ".png",
        "ok",
        lambda: png_raw(1000, 1000, color=2, extra_zeros=500 << 20),
        note="300 MB of inflated zeros past the image's end are never inflated",
    ),
    Spec("png_16x16_huge_idat", ".png", "ok", lambda: png_raw(16, 16, extra_zeros=500 << 20)),
    Spec(
        "png_ztxt_bomb",
        ".png",
        "422",
        lambda: png_raw(
            64,
            64,
            before_idat=png_chunk(b"zTXt", b"Comment\x00\x00" + zeros_zlib(200 << 20)),
        ),
        note="a 200 MB compressed comment: Pillow stops at its 1 MB text limit",
    ),
    Spec(
        "png_iccp_bomb",
        ".png",
        "422",
        lambda: png_raw(
            64, 64, before_idat=png_chunk(b"iCCP", b"icc\x00\x00" + zeros_zlib(200 << 20))
        ),
    ),
    Spec(
        "png_50000_text_chunks",
        ".png",
        "ok",
        lambda: png_raw(64, 64, before_idat=_text_chunks(50_000)),
    ),
    Spec(
        "png_short_idat_stream",
        ".png",
        "ok",
        lambda: png_raw(2000, 2000, color=2, rows=500),
        note="a complete zlib stream of 500 of 2000 rows: Pillow leaves the rest black",
    ),
    Spec("png_truncated_file", ".png", "422", lambda: _truncated(encode(picture(600, 400), "PNG"))),
    Spec("png_bad_crc", ".png", "422", lambda: _bad_crc(encode(picture(60, 40), "PNG"))),
    Spec("png_magic_then_noise", ".png", "422", lambda: _rng_bytes(4000, 11, b"\x89PNG\r\n\x1a\n")),
    # JPEG bombs
    Spec("jpeg_declared_65500", ".jpg", "413", lambda: jpeg_with_size(_small_jpeg(), 65500, 65500)),
    Spec(
        "jpeg_declared_8900_baseline",
        ".jpg",
        "ok",
        lambda: jpeg_with_size(_small_jpeg(), 8900, 8900),
        note="79 MP declared, 2 KB of scan data: decoded at 1/8, the rest is filled in",
    ),
    Spec(
        "jpeg_declared_8900_progressive",
        ".jpg",
        "413",
        lambda: jpeg_with_size(_small_jpeg(progressive=True), 8900, 8900),
        catalog="ok",
        note="progressive: 450 MiB of coefficient buffers for an upload",
    ),
    Spec(
        "jpeg_cmyk_declared_20000",
        ".jpg",
        "413",
        lambda: jpeg_with_size(encode(picture(64, 64).convert("CMYK"), "JPEG"), 20000, 20000),
    ),
    Spec(
        "jpeg_truncated",
        ".jpg",
        "422",
        lambda: _truncated(encode(picture(800, 600), "JPEG", quality=90)),
    ),
    Spec("jpeg_only_soi", ".jpg", "422", lambda: b"\xff\xd8\xff" + bytes(20)),
    Spec("jpeg_magic_then_noise", ".jpg", "422", lambda: _rng_bytes(4000, 12, b"\xff\xd8\xff")),
    # WebP, GIF, BMP bombs and breakage
    Spec(
        "webp_declared_16383",
        ".webp",
        "413",
        lambda: webp_lossless_with_size(
            encode(picture(64, 64), "WEBP", lossless=True), 16383, 16383
        ),
    ),
    Spec(
        "webp_animated_canvas_16000",
        ".webp",
        "413",
        lambda: webp_vp8x_with_size(_animated("WEBP", 3), 16000, 16000),
    ),
    Spec(
        "webp_truncated",
        ".webp",
        "422",
        lambda: _truncated(encode(picture(600, 400), "WEBP", quality=80)),
    ),
    Spec(
        "gif_screen_65535",
        ".gif",
        "413",
        lambda: gif_with_screen(encode(Image.new("P", (1, 1)), "GIF"), 65535, 65535),
    ),
    Spec(
        "gif_frame_60000",
        ".gif",
        "413",
        lambda: gif_with_frame(encode(Image.new("P", (8, 8)), "GIF"), 60000, 60000),
        note="a frame larger than its screen grows the image",
    ),
    Spec(
        "gif_truncated",
        ".gif",
        "422",
        lambda: _truncated(encode(picture(400, 300).convert("P"), "GIF"), 0.4),
    ),
    Spec(
        "bmp_declared_30000",
        ".bmp",
        "413",
        lambda: bmp_with_size(encode(picture(16, 16), "BMP"), 30000, 30000),
    ),
    Spec("bmp_rle8_5000", ".bmp", "413", lambda: bmp_rle8(5000, 5000), catalog="422"),
    Spec("bmp_truncated", ".bmp", "422", lambda: _truncated(encode(picture(300, 200), "BMP"))),
    # formats we do not read, non-images and polyglots
    Spec("tiff_real", ".tif", "415", lambda: encode(picture(100, 80), "TIFF")),
    Spec(
        "tiff_declared_100000",
        ".tif",
        "415",
        lambda: tiff_ifd([(256, 4, 1, 100_000), (257, 4, 1, 100_000), (258, 3, 1, 8)]),
    ),
    Spec("zero_bytes", ".jpg", "422", lambda: b""),
    Spec("random_bytes", ".jpg", "415", lambda: _rng_bytes(8192, 13)),
    Spec(
        "html_named_jpg",
        ".jpg",
        "415",
        lambda: b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
    ),
    Spec(
        "svg_named_jpg",
        ".jpg",
        "415",
        lambda: (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="99999" '
            b'height="99999"><rect width="100%" height="100%"/></svg>'
        ),
    ),
    Spec(
        "pdf_header", ".jpg", "415", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
    ),
    Spec("heic_header", ".jpg", "415", lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"),
    Spec("zip_archive", ".jpg", "415", _zip_tail),
    Spec("jpeg_then_zip", ".jpg", "ok", lambda: _small_jpeg() + _zip_tail()),
    Spec("png_then_html", ".png", "ok", lambda: encode(picture(50, 50), "PNG") + b"<html></html>"),
)


def build_corpus(folder: Path) -> list[Case]:
    """Write every case into ``folder`` (once: existing files are kept) and return them."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for spec in SPECS:
        path = folder / f"{spec.name}{spec.suffix}"
        if not path.is_file():
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(spec.build())
            tmp.replace(path)
        cases.append(Case(spec.name, path, spec.expect, spec.catalog_expect, spec.note))
    return cases
