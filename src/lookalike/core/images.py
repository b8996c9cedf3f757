"""Safe decoding of untrusted image bytes into RGB Pillow images, with the work bounded.

Every photo a shopper, the browser extension or an Instagram post sends comes through
:func:`decode_image`. It returns a loaded RGB image with EXIF orientation applied, or raises
one of the project errors below; no Pillow, OS or parser exception escapes.

    TooLarge (413)          more than ``max_bytes``, more than ``max_pixels``
                            declared by the header, more than ``max_decoded_pixels`` to decode
                            (after JPEG draft reduction), or a decode that would need more than
                            ``max_decoded_bytes`` of memory; all checked before any pixel is
                            decoded, so a decompression bomb costs nothing
    UnsupportedImage (415)  not an image, or a format we do not read; the message names the
                            type we detected ("PDF document", "HEIC image", "HTML text", ...)
    BadImage (422)          an empty payload (code ``empty``); an accepted format that is
                            truncated or corrupt, zero-sized, under ``MIN_SIDE`` pixels on a
                            side, or of an absurd aspect ratio (longer side more than
                            ``MAX_ASPECT_RATIO`` times the shorter)
    Unavailable (503)       the process-wide :class:`DecodeBudget` stayed full for its short wait
                            (code ``busy``): many large images are being decoded at once

Why the bytes are not enough: a 175 KB 16-bit PNG declares 8900×8900 pixels and used to cost
seconds and gigabytes. The cost of a decode is known from the header (size, mode, progressive
JPEG coefficient buffers), so it is priced before ``load()`` and reserved from a budget shared by
every thread of the process; the conversions to RGB work in place or in row chunks, so the peak
stays close to that price.

Accepted formats: JPEG (baseline, progressive, CMYK; Pillow reports phone photos with a
multi-picture segment as MPO), PNG (incl. APNG), WebP, GIF and BMP. Animated images give their
first frame only (later frames are never decoded). TIFF, HEIC/AVIF, ICO, PSD, SVG and the rest
are refused with 415: phones and browsers upload the accepted ones, and each extra parser is
extra attack surface.

Global Pillow state (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) is read
by Pillow but never changed here, and our own pixel limit does not depend on it; when Pillow's
own bomb guard fires first, it becomes the same 413. The one global change: the first decode
adds two narrow warning filters (Pillow's EXIF-tag and bomb warnings), because a hostile EXIF
block otherwise writes thousands of warning lines per request.
"""

from __future__ import annotations

import hashlib
import io
import math
import stat
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lookalike.core.errors import (
    BadImage,
    InvalidInput,
    LookalikeError,
    TooLarge,
    Unavailable,
    UnsupportedImage,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_BUDGET_BYTES",
    "DEFAULT_BUDGET_WAIT_SECONDS",
    "DEFAULT_DRAFT_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_DECODE_BYTES",
    "DEFAULT_MAX_UPLOAD_PIXELS",
    "MAX_ASPECT_RATIO",
    "MIN_SIDE",
    "draft_for_box",
    "UPLOAD_BUDGET_WAIT_SECONDS",
    "DecodeBudget",
    "decode_cost",
    "decode_image",
    "detect_type",
    "image_sha256",
    "load_image_file",
    "missing_photo",
    "photo_problem",
    "process_budget",
    "read_named_photo",
]

DEFAULT_MAX_BYTES = 30 * 1024 * 1024
# Declared by the header: catalog photos up to this are imported (then shrunk).
DEFAULT_MAX_PIXELS = 80_000_000
# Actually decoded for a search upload (after JPEG draft, so a 50 MP phone JPEG decodes at
# 1/8 scale and passes); a PNG/WebP/GIF/BMP of more than this is refused from its header.
DEFAULT_MAX_UPLOAD_PIXELS = 24_000_000
# One image's decode buffers (see decode_cost): an 80 MP RGB catalog photo fits, a 16-bit
# 8900x8900 PNG for a search does not get that far (pixel cap).
DEFAULT_MAX_DECODED_BYTES = 1 << 30
# Decode buffers of all images in flight in this process together, and how long an image
# waits for room before it gets 503 "busy".
DEFAULT_BUDGET_BYTES = 1 << 30
# Batch callers (catalog import, index build) wait this long for room; a search upload passes
# UPLOAD_BUDGET_WAIT_SECONDS and is answered 503 "busy" sooner.
DEFAULT_BUDGET_WAIT_SECONDS = 30.0
UPLOAD_BUDGET_WAIT_SECONDS = 1.0
# One search upload's decode buffers: a 24 MP WebP or a 50 MP progressive JPEG fits, a
# progressive JPEG declaring 8900x8900 (450 MiB of DCT coefficients) does not.
DEFAULT_MAX_UPLOAD_DECODE_BYTES = 400 * 2**20
DEFAULT_DRAFT_SIZE: tuple[int, int] = (224, 224)
MAX_ASPECT_RATIO = 20.0
# Under this many pixels on its shorter side a photo shows no garment (a 1×1 "photo" would
# still get 20 confident-looking neighbours): refused with 422.
MIN_SIDE = 16

# Pillow plugin names handed to Image.open(formats=...): only these parsers ever see the bytes.
# The JPEG plugin also yields MPO images (phone photos with a multi-picture segment).
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ACCEPTED_FORMATS = frozenset({*_OPEN_FORMATS, "MPO"})

_WHITE = (255, 255, 255)
_MIB = 2**20
# Rows of a 16-bit/int/float image converted at a time: about this many pixels per chunk.
_CHUNK_PIXELS = 1 << 20
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class DecodeBudget:
    """Bytes of decode buffers in flight, shared by every thread that decodes images.

    :func:`decode_image` reserves an image's :func:`decode_cost` before it decodes a pixel and
    returns it when the RGB image is ready. An image that does not fit waits up to ``wait_s``
    for others to finish, then gets ``Unavailable`` (503, code ``busy``) rather than queueing:
    two large images at once must not add up to an out-of-memory kill.
    """

    def __init__(self, total_bytes: int, *, wait_s: float = DEFAULT_BUDGET_WAIT_SECONDS) -> None:
        if total_bytes <= 0:
            raise ValueError(f"a decode budget needs a positive size, got {total_bytes}")
        self.total_bytes = int(total_bytes)
        self.wait_s = float(wait_s)
        self._in_flight = 0
        self._peak = 0
        self._cond = threading.Condition()

    @property
    def in_flight(self) -> int:
        """Bytes reserved right now."""
        with self._cond:
            return self._in_flight

    @property
    def peak(self) -> int:
        """The most bytes reserved at once since creation or :meth:`reset_peak`."""
        with self._cond:
            return self._peak

    def reset_peak(self) -> None:
        with self._cond:
            self._peak = self._in_flight

    @contextmanager
    def reserve(self, nbytes: int, *, wait_s: float | None = None) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the ``with`` block.

        ``wait_s`` overrides the budget's own wait: a search waits a moment, a batch job longer.
        """
        nbytes = max(0, int(nbytes))
        if nbytes > self.total_bytes:
            raise TooLarge(
                f"decoding the image would need {nbytes / _MIB:.0f} MiB; the limit is "
                f"{self.total_bytes / _MIB:.0f} MiB: send a smaller photo"
            )
        deadline = time.monotonic() + (self.wait_s if wait_s is None else wait_s)
        with self._cond:
            while self._in_flight + nbytes > self.total_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        "the server is busy decoding other large images; retry in a few "
                        "seconds or send a smaller photo",
                        code="busy",
                    )
                self._cond.wait(left)
            self._in_flight += nbytes
            self._peak = max(self._peak, self._in_flight)
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= nbytes
                self._cond.notify_all()


_PROCESS_BUDGET = DecodeBudget(DEFAULT_BUDGET_BYTES)
_QUIET_LOCK = threading.Lock()
# (category, module pattern) of the warnings decode_image keeps quiet; see below.
_QUIET_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"PIL\.TiffImagePlugin"),
    (Image.DecompressionBombWarning, ""),
)


def _quiet_pillow_warnings() -> None:
    """Silence Pillow's per-tag EXIF warnings and its bomb warning (filters added if missing).

    One hostile EXIF block makes Pillow warn once per odd tag (thousands of distinct lines, each
    also remembered by the warnings registry): small input must not amplify into logs or memory.
    Our own caps, not Pillow's warning, decide what is too large.
    """
    present = {
        (category, module.pattern if module is not None else "")
        for action, _, category, module, _ in warnings.filters
        if action == "ignore"
    }
    missing = [entry for entry in _QUIET_WARNINGS if entry not in present]
    if missing:
        with _QUIET_LOCK:
            for category, module in missing:
                warnings.filterwarnings("ignore", category=category, module=module)


def process_budget() -> DecodeBudget:
    """The budget :func:`decode_image` uses when it is given none: one per process."""
    return _PROCESS_BUDGET


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
    max_decoded_pixels: int | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    budget: DecodeBudget | None = None,
    budget_wait_s: float | None = None,
) -> Image.Image:
    """Decode untrusted bytes into a loaded RGB image, upright per its EXIF orientation.

    ``max_bytes`` bounds the payload (checked first); ``max_pixels`` bounds width × height as
    declared by the header. ``max_decoded_pixels`` bounds the pixels actually decoded, after the
    JPEG draft reduction below (``None``: same as ``max_pixels``); search uploads pass the
    lower upload cap here (``Limits.max_upload_pixels``), so a 50 MP phone JPEG that decodes at
    1/8 scale passes while a 79 MP PNG is refused. ``max_decoded_bytes`` bounds the memory the
    decode and the RGB conversion need (:func:`decode_cost`), and that amount is reserved from
    ``budget`` (default: :func:`process_budget`) while the image decodes, waiting at most
    ``budget_wait_s`` for room (default: the budget's own wait, made for batch jobs; a search
    passes ``UPLOAD_BUDGET_WAIT_SECONDS`` and gets ``Unavailable`` "busy" past it). Every check
    happens before a pixel is decoded.

    ``draft_size`` lets JPEGs decode at a reduced DCT scale (1/2, 1/4 or 1/8), which makes a
    50-megapixel phone photo decode in a few tens of milliseconds. The box is read as a letterbox
    target: the reduction is the strongest one that keeps the image from being *smaller than the
    box on both sides*, i.e. at least one side stays ≥ its box side. With the default (224, 224)
    the longer side stays ≥ 224, so letterboxing the longest side to 224 never upsamples. (Pillow's
    own rule keeps *both* sides ≥ the box, i.e. decodes elongated photos larger than needed.)
    The reduction is never weaker than the one that fits ``max_decoded_pixels``: a large box
    (:func:`draft_for_box`) asked of a huge photo decodes as large as the cap allows.
    Pass ``None`` to decode at full size, e.g. to crop a garment from the photo first.
    Other formats are always decoded at full size.

    Transparent images (RGBA, LA, palette with transparency) are composited on white; 16-bit
    and float grayscale are scaled to 8 bits (see :func:`_to_rgb`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image takes bytes, not {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise BadImage("the upload is empty (0 bytes): send the image file itself", code="empty")
    if size > max_bytes:
        raise TooLarge(
            f"the image is {size / _MIB:.1f} MiB; the limit is {max_bytes / _MIB:.0f} MiB: "
            "send a smaller photo"
        )
    data = bytes(data)
    kind = detect_type(data)
    _quiet_pillow_warnings()
    caps = _Caps(
        max_pixels=max_pixels,
        max_decoded_pixels=max_pixels if max_decoded_pixels is None else max_decoded_pixels,
        max_decoded_bytes=max_decoded_bytes,
        budget=process_budget() if budget is None else budget,
        budget_wait_s=budget_wait_s,
    )
    try:
        return _decode(data, kind, caps=caps, draft_size=draft_size)
    except LookalikeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        # Pillow's own global guard (if still set) fired before ours could; same meaning.
        raise TooLarge(
            f"the {_label(kind)} image has too many pixels to decode safely; the limit is "
            f"{min(max_pixels, caps.max_decoded_pixels) / 1e6:.0f} megapixels"
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
    max_decoded_pixels: int | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    budget: DecodeBudget | None = None,
    budget_wait_s: float | None = None,
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
            f"{path} is {st.st_size / _MIB:.1f} MiB; the limit is {max_bytes / _MIB:.0f} MiB"
        )
    with path.open("rb") as fh:
        # Read one byte past the limit so a file that grew since stat() is still refused.
        data = fh.read(max_bytes + 1)
    return decode_image(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        draft_size=draft_size,
        max_decoded_pixels=max_decoded_pixels,
        max_decoded_bytes=max_decoded_bytes,
        budget=budget,
        budget_wait_s=budget_wait_s,
    )


def decode_cost(mode: str, size: tuple[int, int], *, coefficients: int = 0) -> int:
    """Peak bytes to decode an image of ``mode`` and ``size`` and convert it to RGB.

    Pillow stores "1"/"L"/"P" in 1 byte a pixel, "I;16*" in 2 and every other mode in 4. The
    peak is the decoded image, plus the larger of an EXIF transposition (a second copy) and the
    conversion's buffers (see :func:`_to_rgb`), plus ``coefficients``: bytes the codec holds
    besides the image (a progressive JPEG keeps every DCT coefficient of the full-size image).
    """
    width, height = size
    pixels = max(0, width) * max(0, height)
    stored = _stored_bytes(mode)
    return pixels * (stored + max(stored, _conversion_bytes(mode))) + coefficients + _MIB


def _stored_bytes(mode: str) -> int:
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _conversion_bytes(mode: str) -> int:
    """Bytes per pixel that :func:`_to_rgb` allocates on top of the source image."""
    if mode == "RGB":
        return 0
    if mode in ("P", "PA"):  # may carry transparency: RGBA copy, then the RGBA path
        return 4 + 6
    if mode in ("RGBA", "RGBa"):  # RGB copy + alpha + inverted alpha
        return 6
    if mode in ("LA", "La"):  # L copy + alpha + inverted alpha, then RGB
        return 3 + 4
    if mode.startswith("I;16") or mode in ("I", "F"):  # uint8 rows, L image, then RGB
        return 2 + 4
    return 4


def _label(kind: str) -> str:
    return kind if kind in ACCEPTED_FORMATS else "image"


def _unreadable(kind: str) -> BadImage:
    if kind in ACCEPTED_FORMATS:
        return BadImage(f"the {kind} file is corrupt: its header cannot be read")
    accepted = "JPEG, PNG, WebP, GIF or BMP"
    if kind in ("unknown binary data", "plain text", "HTML text", "XML text", "JSON text"):
        return UnsupportedImage(f"the upload is not an image ({kind}); send a {accepted} photo")
    return UnsupportedImage(f"{kind} is not a format we read; send a {accepted} photo")


class _Caps:
    """The limits one decode_image call enforces, checked in _decode."""

    __slots__ = ("budget", "budget_wait_s", "max_decoded_bytes", "max_decoded_pixels", "max_pixels")

    def __init__(
        self,
        *,
        max_pixels: int,
        max_decoded_pixels: int,
        max_decoded_bytes: int,
        budget: DecodeBudget,
        budget_wait_s: float | None,
    ) -> None:
        self.max_pixels = max_pixels
        self.max_decoded_pixels = max_decoded_pixels
        self.max_decoded_bytes = max_decoded_bytes
        self.budget = budget
        self.budget_wait_s = budget_wait_s


def _decode(
    data: bytes, kind: str, *, caps: _Caps, draft_size: tuple[int, int] | None
) -> Image.Image:
    if kind == "WEBP" and (declared := _webp_size(data)) is not None:
        # libwebp allocates its canvases when Pillow opens the file: check the size first.
        _check_webp(declared, caps)
    img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    fmt = img.format or kind
    if fmt not in ACCEPTED_FORMATS:  # defensive: formats= already restricts the parsers
        raise UnsupportedImage(f"{fmt} is not a format we read")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadImage(f"the {fmt} image is zero-sized ({width}×{height})")
    if width * height > caps.max_pixels:
        raise TooLarge(
            f"the {fmt} image is {width}×{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {caps.max_pixels / 1e6:.0f} megapixels"
        )
    if min(width, height) < MIN_SIDE:
        raise BadImage(
            f"the {fmt} image is {width}×{height} pixels, too small to show a garment: send a "
            f"photo at least {MIN_SIDE} pixels on each side"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(
            f"the {fmt} image is {width}×{height}, an aspect ratio over {MAX_ASPECT_RATIO:.0f}:1; "
            "send a photo of the garment"
        )
    coefficients = 0
    if fmt in ("JPEG", "MPO"):
        if draft_size is not None:
            request = _draft_request((width, height), draft_size, caps.max_decoded_pixels)
            img.draft("RGB", request)
        if img.info.get("progressive") or img.info.get("progression"):
            # libjpeg buffers every 16-bit coefficient of the full-size image, draft or not.
            coefficients = width * height * len(img.getbands()) * 2
    elif fmt == "WEBP":
        coefficients = width * height * 4 * 2  # libwebp's own canvas (two when animated)
    decoded_w, decoded_h = img.size
    decoded = decoded_w * decoded_h
    if decoded > caps.max_decoded_pixels:
        raise TooLarge(
            f"the {fmt} image is {decoded_w}×{decoded_h} = {decoded / 1e6:.0f} megapixels "
            f"to decode; the limit is {caps.max_decoded_pixels / 1e6:.0f} megapixels: "
            "send a smaller photo"
        )
    cost = decode_cost(img.mode, (decoded_w, decoded_h), coefficients=coefficients)
    if cost > caps.max_decoded_bytes:
        raise TooLarge(
            f"decoding the {fmt} image ({decoded_w}×{decoded_h}, mode {img.mode}) would need "
            f"{cost / _MIB:.0f} MiB; the limit is {caps.max_decoded_bytes / _MIB:.0f} MiB: "
            "send a smaller photo"
        )
    with caps.budget.reserve(cost, wait_s=caps.budget_wait_s):
        img.load()  # the current (first) frame only: later frames are never decoded
        upright = _upright(img)
        if upright is not img:
            img.close()  # free the stored copy before the conversion allocates
        return _to_rgb(upright)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size from a WebP's first chunk header (VP8X, VP8L or VP8), or None."""
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    return None


def _check_webp(size: tuple[int, int], caps: _Caps) -> None:
    width, height = size
    limit = min(caps.max_pixels, caps.max_decoded_pixels)
    if width * height > limit:
        raise TooLarge(
            f"the WEBP image is {width}×{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {limit / 1e6:.0f} megapixels: send a smaller photo"
        )
    cost = decode_cost("RGBA", size, coefficients=width * height * 8)
    if cost > caps.max_decoded_bytes:
        raise TooLarge(
            f"decoding the WEBP image ({width}×{height}) would need {cost / _MIB:.0f} MiB; "
            f"the limit is {caps.max_decoded_bytes / _MIB:.0f} MiB: send a smaller photo"
        )


def draft_for_box(
    box: tuple[float, float, float, float], target: tuple[int, int] = DEFAULT_DRAFT_SIZE
) -> tuple[int, int]:
    """The ``draft_size`` that keeps the area ``box`` (normalised x0, y0, x1, y1) of a JPEG at
    least ``target`` on one side once decoded.

    The default draft decodes the *whole photo* to about 224 px, right for embedding it whole;
    a box a shopper drew round a fifth of it would then reach the model as a 45 px crop to
    upsample. The decode still stays under its pixel cap (:func:`_draft_request`).
    """
    x0, y0, x1, y1 = box
    width, height = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
    return math.ceil(target[0] / width), math.ceil(target[1] / height)


_JPEG_SCALES = (1, 2, 4, 8)  # the DCT reductions libjpeg offers


def _draft_request(
    size: tuple[int, int], box: tuple[int, int], max_pixels: int | None = None
) -> tuple[int, int]:
    """Translate a letterbox target into the request Pillow's JPEG draft understands.

    Pillow reduces by ``min(W // rw, H // rh)`` (rounded down to 8, 4, 2 or 1). We want the
    strongest reduction that still keeps one side ≥ its box side, i.e. ``max(W // bw, H // bh)``
    — but at least the one that brings the decode under ``max_pixels`` (a box asked of a 50 MP
    photo decodes at 1/2, under a 24 MP cap, instead of being refused). Asking for
    ``(W // r, H // r)`` gives exactly the reduction ``r``.
    """
    width, height = size
    bw, bh = max(1, int(box[0])), max(1, int(box[1]))
    keep = max(width // bw, height // bh)
    scale = max(s for s in _JPEG_SCALES if s <= max(1, keep))
    if max_pixels is not None:
        fits = [s for s in _JPEG_SCALES if -(-width // s) * -(-height // s) <= max_pixels]
        scale = max(scale, fits[0] if fits else _JPEG_SCALES[-1])
    return max(1, width // scale), max(1, height // scale)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8), or 1 when it is absent, out of range or unreadable."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:
        # A broken EXIF block does not make the pixels unusable: keep them as stored.
        return 1


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; the image itself when there is nothing to do (no copy)."""
    method = _TRANSPOSE.get(_orientation(img))
    return img if method is None else img.transpose(method)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB, allocating as little as it can.

    Alpha is composited on white (catalog photos are shot on white) in place on the RGB copy.
    16-bit grayscale ("I;16*", or "I" within 0..65535 with values above 255) is scaled by
    1/257; other "I" and "F" images are stretched from their min..max to 0..255 ("F" within
    0..1 is read as 0..1); these are converted a few rows at a time.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if (mode == "P" and "transparency" in img.info) or mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        alpha = img.getchannel("A")
        base = img.convert("RGB" if mode in ("RGBA", "RGBa") else "L")
        # paste(colour, mask) blends the colour in by the mask: white where alpha is 0.
        base.paste(255 if base.mode == "L" else _WHITE, None, alpha.point(_INVERT))
        del alpha
        return base if base.mode == "RGB" else base.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(img), mode="L").convert("RGB")
    return img.convert("RGB")


_INVERT = [255 - v for v in range(256)]


def _row_chunks(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows as an array) for a few rows at a time, never the whole image at once."""
    width, height = img.size
    step = max(1, _CHUNK_PIXELS // max(1, width))
    for top in range(0, height, step):
        bottom = min(height, top + step)
        yield top, np.asarray(img.crop((0, top, width, bottom)))


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    width, height = img.size
    if width * height == 0:
        raise BadImage("the image has no pixels")
    out = np.empty((height, width), dtype=np.uint8)
    if mode.startswith("I;16"):
        for top, rows in _row_chunks(img):
            # round(v / 257) in integers: 0 -> 0, 32896 -> 128, 65535 -> 255
            scaled = (rows.astype(np.uint32) * 2 + 257) // 514
            out[top : top + rows.shape[0]] = scaled.astype(np.uint8)
        return out
    lo, hi = np.inf, -np.inf
    for _, rows in _row_chunks(img):
        finite = rows[np.isfinite(rows)] if rows.dtype.kind == "f" else rows
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if lo > hi:  # no finite value at all
        lo = hi = 0.0
    if mode == "I" and lo >= 0 and 255 < hi <= 65535:
        scale, offset = 1 / 257.0, 0.0
    elif mode == "I" and lo >= 0 and hi <= 255:
        scale, offset = 1.0, 0.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0
    elif hi > lo:
        scale, offset = 255.0 / (hi - lo), lo
    else:
        scale, offset = 0.0, 0.0
    for top, rows in _row_chunks(img):
        scaled = (rows.astype(np.float64) - offset) * scale
        out[top : top + rows.shape[0]] = np.clip(np.nan_to_num(scaled), 0, 255).round()
    return out


def missing_photo(path: str | Path) -> InvalidInput:
    """The error for a photo that a user's data file names but that is not there."""
    return InvalidInput(f"{path}: no such photo", code="photo_missing")


def read_named_photo(
    path: str | Path, *, draft_size: tuple[int, int] | None = DEFAULT_DRAFT_SIZE
) -> Image.Image:
    """:func:`load_image_file` for a photo that a user's data file names (a pairs or labels
    CSV): a missing file, or one that does not decode, is the user's input, so it raises
    an error whose message starts with the path: :class:`InvalidInput` for a missing file, the
    decode error's own class (``BadImage``, ``TooLarge``, …) otherwise.
    """
    try:
        return load_image_file(path, draft_size=draft_size)
    except FileNotFoundError:
        raise missing_photo(path) from None
    except LookalikeError as exc:
        raise type(exc)(f"{path}: {exc.message}", code=exc.code) from exc


def photo_problem(path: str | Path) -> str | None:
    """Why the photo at ``path`` cannot be used (missing, not an image, truncated, too large), or
    ``None``: :func:`read_named_photo`'s checks, decoding a JPEG at 1/8 scale (its whole
    entropy-coded data is still read, so a truncated file is caught) for a fraction of the cost.
    """
    try:
        read_named_photo(path, draft_size=(32, 32))
    except LookalikeError as exc:
        return exc.message
    except OSError as exc:  # unreadable for the OS (permissions, an I/O error)
        return f"{path}: {exc.strerror or exc}"
    return None
