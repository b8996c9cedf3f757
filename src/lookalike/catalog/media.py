"""Normalised, content-addressed copies of catalog images.

A source image becomes ``<sha256 of source bytes>.jpg`` in the media folder: RGB, upright,
longest side at most ``MEDIA_MAX_SIDE``, JPEG quality ``MEDIA_JPEG_QUALITY``.

Large JPEGs are decoded at a reduced DCT scale (1/2, 1/4, 1/8): the strongest one that keeps the
longest side at least ``MEDIA_MIN_SIDE``. When that already lands at or under 512 pixels the
image is stored as decoded, because a Pillow resample costs about twice the decode itself; so a
1000×1500 photo is stored at 250×375 and a 4032×3024 one at 504×378. Only sources whose scaled
size is still above 512 are resampled down to 512. The same bytes
imported twice, or used by two items, are stored once. Files appear atomically (temp + rename),
so a reader never sees half a JPEG.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput, TooLarge
from lookalike.core.images import decode_image

__all__ = ["MEDIA_JPEG_QUALITY", "MEDIA_MAX_SIDE", "MEDIA_MIN_SIDE", "StoredMedia", "store_media"]

MEDIA_MAX_SIDE = 512
# Enough for the 224-pixel embedder input and for result thumbnails.
MEDIA_MIN_SIDE = 320
MEDIA_JPEG_QUALITY = 90


@dataclass(frozen=True, slots=True)
class StoredMedia:
    """A normalised image in the media folder; ``created`` is True when this call wrote it."""

    sha256: str
    media: str
    width: int
    height: int
    created: bool


def _read_source(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{path} is not a regular file")
            if st.st_size > max_bytes:
                raise TooLarge(
                    f"image is {st.st_size / 2**20:.1f} MiB; the limit is "
                    f"{max_bytes / 2**20:.0f} MiB"
                )
            return fh.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read image: {exc.strerror or exc}") from exc


def _write_atomically(dest: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            # The database will point at this file once the batch commits; make it durable first.
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_media(
    source: Path,
    media_dir: Path,
    *,
    max_bytes: int,
    max_pixels: int,
) -> StoredMedia:
    """Copy ``source`` into ``media_dir`` as a normalised JPEG, unless that copy exists.

    Raises ``InvalidInput`` (or its subclasses ``BadImage``, ``UnsupportedImage``, ``TooLarge``)
    when the source cannot be read or decoded: a problem with that image. Raises ``ConfigError``
    when the media folder cannot be written: a problem with the whole import.
    Thread-safe; Pillow and hashlib release the GIL, so a thread pool scales over cores.
    """
    data = _read_source(source, max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    name = f"{digest}.jpg"
    dest = media_dir / name
    if dest.is_file():
        # Same bytes were imported before: they decoded then, so reuse the copy.
        try:
            with Image.open(dest) as existing:
                width, height = existing.size
            return StoredMedia(digest, name, width, height, created=False)
        except OSError:
            pass  # an unreadable copy is rewritten below
    image = decode_image(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        draft_size=(MEDIA_MIN_SIDE, MEDIA_MIN_SIDE),
    )
    if max(image.size) > MEDIA_MAX_SIDE:
        image.thumbnail((MEDIA_MAX_SIDE, MEDIA_MAX_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=MEDIA_JPEG_QUALITY)
    try:
        _write_atomically(dest, buffer.getvalue())
    except OSError as exc:
        raise ConfigError(
            f"cannot write catalog media into {media_dir}: {exc.strerror or exc}; "
            "check that the folder exists and is writable (LOOKALIKE_HOME)"
        ) from exc
    return StoredMedia(digest, name, image.width, image.height, created=True)
