"""Normalising the images of an import batch in parallel, with cleanup on failure.

Only paths ``rows.read_rows`` resolved and confined to the images folder reach this module;
each is re-resolved just before it is opened, so a symlink swapped in since is refused too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from lookalike.core.errors import InvalidInput
from lookalike.core.progress import Progress

from .media import StoredMedia, store_media
from .rows import ItemRow

__all__ = ["MediaBatch", "default_workers"]


def default_workers() -> int:
    """Threads for decode + resize + write: one per core, plus one to hide file I/O."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) + 1)


class MediaBatch:
    """The media files of one import batch.

    ``run`` normalises every distinct source path once; ``results`` maps each path to its
    ``StoredMedia`` or to the reason it was refused. ``discard`` removes the files this batch
    created (not those that existed before), for a batch that is not committed.
    """

    def __init__(self, media_dir: Path, *, max_bytes: int, max_pixels: int) -> None:
        self.media_dir = media_dir
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.results: dict[Path, StoredMedia | str] = {}
        self._created: set[Path] = set()
        self._lock = threading.Lock()

    def _one(self, path: Path) -> StoredMedia | str:
        # Rows hold resolved paths checked to lie inside the images folder; a path that no
        # longer resolves to itself had a symlink swapped in since, so it is not opened.
        if Path(os.path.realpath(path)) != path:
            return "image path changed since it was checked (a symlink appeared); not opened"
        try:
            stored = store_media(
                path, self.media_dir, max_bytes=self.max_bytes, max_pixels=self.max_pixels
            )
        except InvalidInput as exc:
            return exc.message
        if stored.created:
            with self._lock:
                self._created.add(self.media_dir / stored.media)
        return stored

    def run(
        self,
        rows: Iterable[ItemRow],
        *,
        workers: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Normalise all images of ``rows``. Errors other than bad images (an unwritable media
        folder, an exception from ``progress``) propagate after running work has stopped."""
        paths = list(dict.fromkeys(image.path for row in rows for image in row.images))
        total = len(paths)
        if progress is not None:
            progress("importing", 0, total)
        if not paths:
            return
        executor = ThreadPoolExecutor(max_workers=workers or default_workers())
        try:
            pending: dict[Future[StoredMedia | str], Path] = {}
            queue = iter(paths)
            # Bounded submission: a million-row file does not become a million futures at once.
            window = 4 * (workers or default_workers())
            for path in queue:
                pending[executor.submit(self._one, path)] = path
                if len(pending) >= window:
                    break
            done_count = 0
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    path = pending.pop(future)
                    self.results[path] = future.result()
                    done_count += 1
                    next_path = next(queue, None)
                    if next_path is not None:
                        pending[executor.submit(self._one, next_path)] = next_path
                if progress is not None:
                    progress("importing", done_count, total)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def discard(self) -> None:
        """Remove every file this batch created."""
        with self._lock:
            created, self._created = self._created, set()
        for path in created:
            path.unlink(missing_ok=True)
