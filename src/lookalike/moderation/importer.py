"""Post import from files: a JSONL export plus an image folder; the stored copy of each photo.

Each line of the JSONL file is one post::

    {"post_id": "17912345", "image": "17912345.jpg", "caption": "#lookalike dress",
     "author": "ana", "timestamp": "2026-11-30T18:02:11+0000", "permalink": "https://..."}

``image`` (or ``image_path``) is relative to the image folder; ``image_url`` (or
``media_url``) is downloaded instead when there is no file. Every photo goes through the safe
decoder (``lookalike.core.images``): a hostile, oversize, truncated or missing image makes the
post ``rejected_unreadable`` with the reason, never a crash. Readable photos are stored once as
normalised JPEGs named by content hash under the media folder, with a 64-bit dHash for
near-duplicate detection. Re-importing the same file adds nothing (post ids are unique).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lookalike.core.errors import InvalidInput, LookalikeError
from lookalike.core.images import decode_image
from lookalike.core.textfiles import read_text_file
from lookalike.moderation.posts import ImportResult, Post

if TYPE_CHECKING:
    from lookalike.moderation.store import ModerationStore

__all__ = [
    "MAX_IMAGE_BYTES",
    "PostBatch",
    "StoredImage",
    "dhash",
    "fingerprint_file",
    "import_jsonl",
    "parse_timestamp",
    "read_jsonl",
    "store_image",
]

log = logging.getLogger(__name__)

# Instagram serves at most 1440 px wide photos, a few MB; anything far above is not a post.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
# The stored copy: large enough for the moderator's page, small enough to keep thousands.
STORED_SIDE = 1080
_BATCH = 200
# A first line with neither is not a post export (a wrong file, or misspelt columns).
_REQUIRED_ONE_OF = frozenset({"post_id", "id"})


@dataclass(frozen=True)
class StoredImage:
    path: Path
    sha256: str
    phash: int  # unsigned 64-bit dHash


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: 9×8 grey thumbnail, one bit per horizontal neighbour pair.

    Survives re-encoding, resizing and small colour changes (distance 0-4 bits), while two
    different photos differ in about half of the bits.
    """
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def fingerprint_file(path: Path) -> tuple[str, int]:
    """(sha256 of the file's bytes, dHash of its picture) of an already stored image."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), dhash(decode_image(data, max_bytes=MAX_IMAGE_BYTES))


def store_image(data: bytes, media_dir: Path) -> StoredImage:
    """Decode untrusted bytes safely and keep a normalised JPEG copy (named by its hash).

    Raises the decoder's errors (``BadImage``, ``UnsupportedImage``, ``TooLarge``) with a
    message that says what is wrong.
    """
    image = decode_image(
        data, max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_PIXELS, draft_size=(STORED_SIDE,) * 2
    )
    image.thumbnail((STORED_SIDE, STORED_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    sha = hashlib.sha256(jpeg).hexdigest()
    media_dir.mkdir(parents=True, exist_ok=True)
    path = media_dir / f"{sha[:2]}" / f"{sha}.jpg"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(jpeg)
        tmp.replace(path)
    return StoredImage(path, sha, dhash(image))


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 (Graph API's ``2026-11-30T18:02:11+0000`` too) or Unix seconds; None if empty."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).strip()
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit() and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"  # +0000 -> +00:00 for Python 3.10 compatibility
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"timestamp {text[:40]!r} is not ISO 8601") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record, error) for each non-empty line."""
    for number, line in enumerate(read_text_file(path, "JSONL").split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"line {number}: not JSON ({exc.msg})"
            continue
        if not isinstance(record, dict):
            yield number, None, f"line {number}: not a JSON object"
            continue
        yield number, record, None


Fetch = Callable[[str], bytes]


class PostBatch:
    """Posts on their way into the store, written ``size`` at a time (one transaction each).

    Used by both importers: each post comes with its stored photo or the reason it has none
    (then it is recorded as ``rejected_unreadable`` with that reason).
    """

    def __init__(self, store: ModerationStore, size: int = _BATCH) -> None:
        self.store, self.size = store, size
        self.result = ImportResult()
        self._posts: list[Post] = []
        self._fingerprints: dict[str, tuple[str, int]] = {}
        self._rejections: dict[str, str] = {}

    def is_known(self, post_id: str) -> bool:
        """Already stored (and readable): a re-import counts it as a duplicate, reads nothing."""
        if any(p.post_id == post_id for p in self._posts):
            return True
        store = self.store
        return store.has_post(post_id) and store.status_of(post_id)[0] != "rejected_unreadable"

    def count(self, result: ImportResult) -> None:
        self.result = self.result + result

    def add(self, post: Post, stored: StoredImage | None, reason: str | None) -> None:
        if stored is not None:
            post = replace(post, image_path=stored.path)
            self._fingerprints[post.post_id] = (stored.sha256, stored.phash)
        else:
            self._rejections[post.post_id] = reason or "no image"
        self._posts.append(post)
        if len(self._posts) >= self.size:
            self.flush()

    def flush(self) -> ImportResult:
        """Write what is pending; returns the counts of everything so far."""
        if self._posts:
            self.count(
                self.store.upsert_posts(
                    self._posts, fingerprints=self._fingerprints, rejections=self._rejections
                )
            )
        self._posts, self._fingerprints, self._rejections = [], {}, {}
        return self.result


def import_jsonl(
    store: ModerationStore,
    path: Path,
    images: Path | None,
    media_dir: Path,
    *,
    source: str = "file",
    fetch: Fetch | None = None,
    on_post: Callable[[], None] | None = None,
) -> ImportResult:
    """Import the posts of a JSONL file (module docstring); returns the counts and reasons.

    ``fetch(url) -> bytes`` downloads ``image_url`` photos (``None``: such posts are rejected
    with a reason). Known post ids are counted as duplicates without reading their image. A
    file whose first record has no ``post_id`` is not a post export: ``InvalidInput`` names
    its fields and the expected ones, and nothing is imported.
    """
    batch = PostBatch(store)
    first = True
    for number, record, error in read_jsonl(path):
        if on_post is not None:
            on_post()
        if record is None:
            batch.count(ImportResult(rejected=1, reasons=[error or f"line {number}"]))
            continue
        if first and not set(record) & _REQUIRED_ONE_OF:
            raise InvalidInput(
                f"{path} line {number}: fields {sorted(record)[:8]} are not a post export; "
                "expected post_id, image (or image_url), caption, author, timestamp, permalink"
            )
        first = False
        post_id = str(record.get("post_id") or record.get("id") or "").strip()
        if not post_id:
            batch.count(ImportResult(rejected=1, reasons=[f"line {number}: no post_id"]))
            continue
        if batch.is_known(post_id):
            batch.count(ImportResult(duplicates=1))
            continue
        try:
            timestamp = parse_timestamp(record.get("timestamp"))
        except InvalidInput as exc:
            batch.count(ImportResult(rejected=1, reasons=[f"line {number}: {exc.message}"]))
            continue
        url = record.get("image_url") or record.get("media_url")
        stored, reason = _read_photo(record, images, media_dir, fetch)
        post = Post(
            post_id=post_id,
            source=str(record.get("source") or source),
            media_type=str(record.get("media_type") or "IMAGE"),
            caption=str(record.get("caption") or ""),
            author=str(record.get("author") or record.get("username") or ""),
            permalink=record.get("permalink") or None,
            timestamp=timestamp,
            media_url=str(url) if url else None,
        )
        batch.add(post, stored, reason)
    return batch.flush()


def _read_photo(
    record: dict, images: Path | None, media_dir: Path, fetch: Fetch | None
) -> tuple[StoredImage | None, str | None]:
    """The stored copy of a record's photo, or None and why it could not be read."""
    name = record.get("image") or record.get("image_path") or record.get("file")
    url = record.get("image_url") or record.get("media_url")
    try:
        if name:
            if images is None:
                return None, f"image {str(name)[:80]!r} given but no --images folder"
            root = images.resolve()
            file = (root / str(name)).resolve()
            if not file.is_relative_to(root):
                return None, f"image {str(name)[:80]!r} is outside the images folder"
            if not file.is_file():
                return None, f"image file {str(name)[:80]!r} is missing"
            if file.stat().st_size > MAX_IMAGE_BYTES:
                return None, f"image file {str(name)[:80]!r} is over {MAX_IMAGE_BYTES >> 20} MiB"
            return store_image(file.read_bytes(), media_dir), None
        if url:
            if fetch is None:
                return None, "image_url given but downloads are off"
            return store_image(fetch(str(url)), media_dir), None
    except LookalikeError as exc:
        return None, f"unreadable image: {exc.message}"
    except OSError as exc:
        return None, f"unreadable image: {exc.strerror or type(exc).__name__}"
    return None, "no image, image_path or image_url field"
