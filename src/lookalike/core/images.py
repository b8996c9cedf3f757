"""Safe decoding of untrusted image bytes into RGB Pillow images.

Every photo a shopper, the browser extension or an Instagram post sends comes through
:func:`decode_image`. It returns a loaded RGB image with EXIF orientation applied, or raises
one of the project errors below; no Pillow, OS or parser exception escapes.

    TooLarge (413)          empty payload, more than ``max_bytes``, or more than ``max_pixels``
                            (read from the header, before any pixel is decoded)
    UnsupportedImage (415)  not an image, or a format we do not read; the message names the
                            type we detected ("PDF document", "HEIC image", "HTML text", ...)
    BadImage (422)          an accepted format that is truncated or corrupt, zero-sized, or of an
                            absurd aspect ratio (longer side more than ``MAX_ASPECT_RATIO`` times
                            the shorter)

Accepted formats: JPEG (baseline, progressive, CMYK; Pillow reports phone photos with a
multi-picture segment as MPO), PNG (incl. APNG), WebP, GIF and BMP. Animated images give their
first frame. TIFF, HEIC/AVIF, ICO, PSD, SVG and the rest are refused with 415: phones and
browsers upload the accepted ones, and each extra parser is extra attack surface.

Global Pillow state (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) is read
by Pillow but never changed here, and our own pixel limit does not depend on it.
"""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.core.errors import BadImage, LookalikeError, TooLarge, UnsupportedImage

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_DRAFT_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MAX_ASPECT_RATIO",
    "decode_image",
    "detect_type",
    "image_sha256",
    "load_image_file",
]

DEFAULT_MAX_BYTES = 30 * 1024 * 1024
DEFAULT_MAX_PIXELS = 80_000_000
DEFAULT_DRAFT_SIZE: tuple[int, int] = (224, 224)
MAX_ASPECT_RATIO = 20.0

# Pillow plugin names handed to Image.open(formats=...): only these parsers ever see the bytes.
# The JPEG plugin also yields MPO images (phone photos with a multi-picture segment).
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ACCEPTED_FORMATS = frozenset({*_OPEN_FORMATS, "MPO"})

_WHITE = (255, 255, 255)


def image_sha256(data: bytes) -> str:
    """Hex SHA-256 of the raw bytes: a stable key for caching and de-duplicating uploads."""
    return hashlib.sha256(data).hexdigest()


def detect_type(data: bytes) -> str:
    """Name the kind of payload from its first bytes, for error messages and logs.

    Returns a Pillow-style format name for images we accept ("JPEG", "PNG", "WEBP", "GIF",
    "BMP") and a human description for anything else ("TIFF image", "PDF document", ...).
    """
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF image"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC image"
        return "MP4/QuickTime video"
    for magic, name in (
        (b"%PDF", "PDF document"),
        (b"PK\x03\x04", "ZIP archive"),
        (b"\x1f\x8b", "gzip archive"),
        (b"8BPS", "Photoshop document"),
        (b"\x00\x00\x01\x00", "ICO icon"),
        (b"\xff\x0a", "JPEG XL image"),
        (b"\x00\x00\x00\x0cJXL ", "JPEG XL image"),
        (b"qoif", "QOI image"),
        (b"\x7fELF", "executable"),
        (b"MZ", "executable"),
    ):
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML text"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG image"
    if text.startswith(b"<?xml"):
        return "XML text"
    if text.startswith((b"{", b"[")):
        return "JSON text"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary data"
    return "plain text"


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = DEFAULT_DRAFT_SIZE,
) -> Image.Image:
    """Decode untrusted bytes into a loaded RGB image, upright per its EXIF orientation.

    ``max_bytes`` bounds the payload (checked first); ``max_pixels`` bounds width × height as
    declared by the header (checked before decoding, so a decompression bomb costs nothing).

    ``draft_size`` lets JPEGs decode at a reduced DCT scale (1/2, 1/4 or 1/8), which makes a
    50-megapixel phone photo decode in a few tens of milliseconds. The box is read as a letterbox
    target: the reduction is the strongest one that keeps the image from being *smaller than the
    box on both sides*, i.e. at least one side stays ≥ its box side. With the default (224, 224)
    the longer side stays ≥ 224, so letterboxing the longest side to 224 never upsamples. (Pillow's
    own rule keeps *both* sides ≥ the box, i.e. decodes elongated photos larger than needed.)
    Pass ``None`` to decode at full size, e.g. to crop a garment from the photo first.
    Other formats are always decoded at full size.

    Transparent images (RGBA, LA, palette with transparency) are composited on white; 16-bit
    and float grayscale are scaled to 8 bits (see :func:`_to_rgb`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image takes bytes, not {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise TooLarge("the upload is empty (0 bytes): send the image file itself", code="empty")
    if size > max_bytes:
        raise TooLarge(
            f"the image is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB: "
            "send a smaller photo"
        )
    data = bytes(data)
    kind = detect_type(data)
    try:
        return _decode(data, kind, max_pixels=max_pixels, draft_size=draft_size)
    except LookalikeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        # Pillow's own global guard (if still set) fired before ours could; same meaning.
        raise TooLarge(
            f"the {_label(kind)} image has too many pixels to decode safely; the limit is "
            f"{max_pixels / 1e6:.0f} megapixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise _unreadable(kind) from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
        raise BadImage(f"the {_label(kind)} file is truncated or corrupt ({exc})") from exc
    except Exception as exc:  # hostile input reaches odd corners of the parsers
        raise BadImage(f"the {_label(kind)} file could not be decoded ({exc!r})") from exc


def load_image_file(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = DEFAULT_DRAFT_SIZE,
) -> Image.Image:
    """Read an image file from disk and decode it with :func:`decode_image`.

    Refuses anything that is not a regular file (directories, FIFOs, devices) with
    ``BadImage`` and files over ``max_bytes`` with ``TooLarge`` before reading them. A missing
    file raises ``FileNotFoundError`` unchanged: that is the caller's bug, not bad input.
    """
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(f"{path} is not a regular file")
    if st.st_size > max_bytes:
        raise TooLarge(
            f"{path} is {st.st_size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB"
        )
    with path.open("rb") as fh:
        # Read one byte past the limit so a file that grew since stat() is still refused.
        data = fh.read(max_bytes + 1)
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, draft_size=draft_size)


def _label(kind: str) -> str:
    return kind if kind in ACCEPTED_FORMATS else "image"


def _unreadable(kind: str) -> BadImage:
    if kind in ACCEPTED_FORMATS:
        return BadImage(f"the {kind} file is corrupt: its header cannot be read")
    accepted = "JPEG, PNG, WebP, GIF or BMP"
    if kind in ("unknown binary data", "plain text", "HTML text", "XML text", "JSON text"):
        return UnsupportedImage(f"the upload is not an image ({kind}); send a {accepted} photo")
    return UnsupportedImage(f"{kind} is not a format we read; send a {accepted} photo")


def _decode(
    data: bytes, kind: str, *, max_pixels: int, draft_size: tuple[int, int] | None
) -> Image.Image:
    img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    fmt = img.format or kind
    if fmt not in ACCEPTED_FORMATS:  # defensive: formats= already restricts the parsers
        raise UnsupportedImage(f"{fmt} is not a format we read")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadImage(f"the {fmt} image is zero-sized ({width}×{height})")
    if width * height > max_pixels:
        raise TooLarge(
            f"the {fmt} image is {width}×{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {max_pixels / 1e6:.0f} megapixels"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(
            f"the {fmt} image is {width}×{height}, an aspect ratio over {MAX_ASPECT_RATIO:.0f}:1; "
            "send a photo of the garment"
        )
    if draft_size is not None and fmt in ("JPEG", "MPO"):
        img.draft("RGB", _draft_request((width, height), draft_size))
    img.load()
    return _to_rgb(_upright(img))


def _draft_request(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """Translate a letterbox target into the request Pillow's JPEG draft understands.

    Pillow reduces by ``min(W // rw, H // rh)`` (rounded down to 8, 4, 2 or 1). We want the
    strongest reduction that still keeps one side ≥ its box side, i.e. ``max(W // bw, H // bh)``;
    asking for the box on that side and 1 pixel on the other gives exactly that.
    """
    width, height = size
    bw, bh = max(1, int(box[0])), max(1, int(box[1]))
    return (bw, 1) if width // bw >= height // bh else (1, bh)


def _upright(img: Image.Image) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:
        # A broken EXIF block does not make the pixels unusable: keep them as stored.
        return img
    return img if upright is None else upright


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB.

    Alpha is composited on white (catalog photos are shot on white). 16-bit grayscale ("I;16*",
    or "I" within 0..65535 with values above 255) is scaled by 1/257; other "I" and "F" images
    are stretched from their min..max to 0..255 ("F" within 0..1 is read as 0..1).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if (mode == "P" and "transparency" in img.info) or mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(img), mode="L").convert("RGB")
    return img.convert("RGB")


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    arr = np.asarray(img.convert("F") if mode == "F" else img, dtype=np.float64)
    if arr.size == 0:
        raise BadImage("the image has no pixels")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        scaled = arr / 257.0
    elif mode == "I" and lo >= 0 and hi <= 255:
        scaled = arr
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    elif hi > lo:
        scaled = (arr - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(arr)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
