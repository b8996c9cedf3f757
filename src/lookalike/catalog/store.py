"""``CatalogStore``: items, their images and availability, in SQLite or PostgreSQL.

The URL picks the database (``sqlite:///path/catalog.db`` by default, or
``postgresql://user@host/db``); the engine, its timeouts and the migrations are the process's
own (``lookalike.core.db``); normalised image copies live in ``media_dir``.
Every method opens its own short transaction, so one store may be shared across threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from lookalike.core.db import get_engine, migrate, translate_errors
from lookalike.core.errors import NotFound
from lookalike.core.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from lookalike.core.settings import DatabaseSettings, Settings

from .ingest import MediaBatch
from .media import StoredMedia
from .records import CatalogImage, ImportReport, Item, Rejection
from .rows import ItemRow, read_rows
from .schema import images, items, state

__all__ = ["CatalogStore"]

_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit
_FIELDS = ("title", "category", "price", "available", "url")


_MISSING_TABLES = (
    "the catalog tables are missing: run `lookalike catalog import FILE` "
    "(or CatalogStore.create_schema())"
)


def _db_errors() -> contextlib.AbstractContextManager[None]:
    """Translate SQLAlchemy errors into the project's error tree (core.db does the work)."""
    return translate_errors("the catalog database", _MISSING_TABLES)


def _storable(item_id: str) -> bool:
    # PostgreSQL text cannot hold NUL, so no stored id has one; asking would be a driver error.
    return "\x00" not in item_id


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _image(row: Any) -> CatalogImage:
    return CatalogImage(
        image_id=int(row.image_id),
        item_id=row.item_id,
        media=row.media,
        sha256=row.sha256,
        width=int(row.width),
        height=int(row.height),
    )


def _shown(item_id: str) -> str:
    """An id as an error message quotes it: no stored id is longer than 64 characters, so a
    longer one is cut there (the API's 500-character cap on messages would keep 470 of them)."""
    return repr(item_id if len(item_id) <= 64 else item_id[:64] + "…")


class CatalogStore:
    """The catalog: items with images, in SQLite or PostgreSQL, and their normalised media.

    Call ``create_schema()`` once (it is idempotent) before first use of a new database.
    Image → item lookups: every ``CatalogImage`` carries its ``item_id``, and
    ``item_ids_for_images`` maps many image ids (e.g. vector search hits) in one query.
    """

    def __init__(self, url: str, media_dir: Path, *, db: DatabaseSettings | None = None) -> None:
        # Nothing connects here: a store made while the database is down works once it is up.
        self.url = url
        self.media_dir = Path(media_dir)
        self._db = db
        self._engine = get_engine(url, db)

    @classmethod
    def for_settings(cls, settings: Settings) -> CatalogStore:
        """The store of ``settings``' database and media folder, with its timeouts."""
        return cls(settings.db_url, settings.media_dir, db=settings.db)

    def __repr__(self) -> str:
        return f"CatalogStore({self._engine.url.render_as_string(hide_password=True)!r})"

    # ---- schema and bookkeeping -------------------------------------------------------------

    def create_schema(self) -> None:
        """Migrate the database to the newest schema and make the media folder (idempotent)."""
        self.media_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.url, self._db)
        with _db_errors(), self._engine.begin() as conn:
            if conn.scalar(select(state.c.value).where(state.c.key == "revision")) is None:
                conn.execute(insert(state).values(key="revision", value=0))

    def close(self) -> None:
        """Close the idle pooled connections (the process's engine stays usable)."""
        self._engine.dispose()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def revision(self) -> int:
        """A counter bumped by every change to items or images; cache filters against it."""
        with _db_errors(), self._engine.connect() as conn:
            value = conn.scalar(select(state.c.value).where(state.c.key == "revision"))
        return int(value or 0)

    @staticmethod
    def _bump(conn: Connection) -> None:
        conn.execute(update(state).where(state.c.key == "revision").values(value=state.c.value + 1))

    # ---- import -----------------------------------------------------------------------------

    def import_file(
        self,
        path: Path,
        images_root: Path | None = None,
        *,
        strict: bool = False,
        progress: Callable[[int, int], None] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        workers: int | None = None,
    ) -> ImportReport:
        """Import a CSV or JSONL catalog file; see ``lookalike.catalog.rows`` for its columns.

        Bad rows (missing or invalid fields, duplicate ids, missing, non-regular or undecodable
        images) are skipped and listed in ``report.rejected``; the valid rows are written in one
        transaction. With ``strict=True`` nothing is written if any row is rejected. If the batch
        fails (database error, unwritable media folder, an exception from ``progress``) nothing
        is committed, the media files it created are removed, and the error propagates.

        Re-importing is idempotent: unchanged items are left alone, changed fields are updated,
        and an item whose image list changed gets its images replaced (new image ids).
        ``progress(done, total)`` is called from this thread as images are normalised.
        """
        parsed = read_rows(Path(path), images_root)
        report = ImportReport(rows_read=parsed.rows_read, rejected=list(parsed.rejected))
        self.media_dir.mkdir(parents=True, exist_ok=True)
        batch = MediaBatch(self.media_dir, max_bytes=max_bytes, max_pixels=max_pixels)
        try:
            batch.run(parsed.rows, workers=workers, progress=progress)
            good: list[tuple[ItemRow, list[StoredMedia]]] = []
            for row in parsed.rows:
                results = [(image.given, batch.results[image.path]) for image in row.images]
                stored = [r for _, r in results if isinstance(r, StoredMedia)]
                if len(stored) == len(results):
                    good.append((row, stored))
                else:
                    problems = "; ".join(f"{g}: {r}" for g, r in results if isinstance(r, str))
                    report.rejected.append(Rejection(row.line, row.item_id, problems))
            report.rejected.sort(key=lambda r: r.line)
            if (strict and report.rejected) or not good:
                batch.discard()
                return report
            with _db_errors():
                self._write_batch(good, report)
        except BaseException:
            batch.discard()
            raise
        return report

    def _write_batch(
        self,
        rows: list[tuple[ItemRow, list[StoredMedia]]],
        report: ImportReport,
    ) -> None:
        now = datetime.now(UTC)
        added = updated = unchanged = images_added = 0
        with self._engine.begin() as conn:
            existing: dict[str, dict[str, Any]] = {}
            shas: dict[str, list[str]] = {}
            ids = [row.item_id for row, _ in rows]
            for chunk in _chunks(ids):
                for rec in conn.execute(select(items).where(items.c.item_id.in_(chunk))):
                    existing[rec.item_id] = dict(rec._mapping)
                    shas[rec.item_id] = []
                query = (
                    select(images.c.item_id, images.c.sha256)
                    .where(images.c.item_id.in_(chunk))
                    .order_by(images.c.item_id, images.c.position)
                )
                for rec in conn.execute(query):
                    shas[rec.item_id].append(rec.sha256)

            new_items: list[dict[str, Any]] = []
            changed: list[dict[str, Any]] = []
            replace: list[str] = []
            new_images: list[dict[str, Any]] = []
            for row, stored in rows:
                fields = {name: getattr(row, name) for name in _FIELDS}
                old = existing.get(row.item_id)
                images_changed = old is None or shas[row.item_id] != [s.sha256 for s in stored]
                if old is None:
                    new_items.append({"item_id": row.item_id, "updated_at": now, **fields})
                    added += 1
                elif images_changed or any(old[k] != v for k, v in fields.items()):
                    changed.append({"b_item_id": row.item_id, "updated_at": now, **fields})
                    updated += 1
                else:
                    unchanged += 1
                if old is not None and images_changed:
                    replace.append(row.item_id)
                if images_changed:
                    for position, s in enumerate(stored):
                        new_images.append(
                            {
                                "item_id": row.item_id,
                                "position": position,
                                "media": s.media,
                                "sha256": s.sha256,
                                "width": s.width,
                                "height": s.height,
                            }
                        )
            if new_items:
                conn.execute(insert(items), new_items)
            if changed:
                stmt = (
                    update(items)
                    .where(items.c.item_id == bindparam("b_item_id"))
                    .values({name: bindparam(name) for name in (*_FIELDS, "updated_at")})
                )
                conn.execute(stmt, changed)
            for chunk in _chunks(replace):
                conn.execute(delete(images).where(images.c.item_id.in_(chunk)))
            if new_images:
                conn.execute(insert(images), new_images)
                images_added = len(new_images)
            if new_items or changed:
                self._bump(conn)
        report.items_added, report.items_updated = added, updated
        report.items_unchanged, report.images_added = unchanged, images_added

    # ---- reads ------------------------------------------------------------------------------

    def _load_items(self, conn: Connection, ids: Sequence[str]) -> dict[str, Item]:
        query = (
            select(
                items,
                images.c.image_id,
                images.c.media,
                images.c.sha256,
                images.c.width,
                images.c.height,
            )
            .outerjoin(images, images.c.item_id == items.c.item_id)
            .where(items.c.item_id.in_(ids))
            .order_by(items.c.item_id, images.c.position)
        )
        fields: dict[str, Any] = {}
        pictures: dict[str, list[CatalogImage]] = {}
        for rec in conn.execute(query):
            if rec.item_id not in fields:
                fields[rec.item_id] = rec
                pictures[rec.item_id] = []
            if rec.image_id is not None:
                pictures[rec.item_id].append(_image(rec))
        return {
            item_id: Item(
                item_id=item_id,
                title=rec.title,
                category=rec.category,
                price=float(rec.price),
                available=bool(rec.available),
                url=rec.url,
                images=tuple(pictures[item_id]),
                updated_at=_aware(rec.updated_at),
            )
            for item_id, rec in fields.items()
        }

    def get_item(self, item_id: str) -> Item:
        """The item with this id; raises ``NotFound`` naming the id."""
        if not _storable(item_id):
            raise NotFound(f"catalog item {_shown(item_id)} not found")
        with _db_errors(), self._engine.connect() as conn:
            found = self._load_items(conn, [item_id])
        if item_id not in found:
            raise NotFound(f"catalog item {_shown(item_id)} not found")
        return found[item_id]

    def get_items(self, ids: Sequence[str]) -> dict[str, Item]:
        """Items by id, in one query; ids that do not exist are absent from the result."""
        unique = [i for i in dict.fromkeys(ids) if _storable(i)]
        if not unique:
            return {}
        out: dict[str, Item] = {}
        with _db_errors(), self._engine.connect() as conn:
            # One query for any realistic result page; huge lists are split to stay under the
            # database's bound-parameter limit.
            for chunk in _chunks(unique, 10_000):
                out.update(self._load_items(conn, chunk))
        return out

    def iter_images(self) -> Iterator[CatalogImage]:
        """Every image, ordered by ``image_id``, read in pages (no long-held cursor)."""
        last = -1
        while True:
            query = (
                select(images).where(images.c.image_id > last).order_by(images.c.image_id)
            ).limit(2000)
            with _db_errors(), self._engine.connect() as conn:
                page = [_image(rec) for rec in conn.execute(query)]
            yield from page
            if len(page) < 2000:
                return
            last = page[-1].image_id

    def media_path(self, image: CatalogImage) -> Path:
        """Where the normalised JPEG of ``image`` lives."""
        return self.media_dir / image.media

    def image_ids_matching(
        self, category: str | None = None, available: bool | None = None
    ) -> np.ndarray:
        """Sorted int64 ids of the images whose item matches (exact category; availability).

        ``None`` means no constraint; with both ``None`` it returns every image id.
        """
        query = select(images.c.image_id).order_by(images.c.image_id)
        if category is not None or available is not None:
            query = query.join(items, items.c.item_id == images.c.item_id)
        if category is not None:
            query = query.where(items.c.category == category)
        if available is not None:
            query = query.where(items.c.available == available)
        with _db_errors(), self._engine.connect() as conn:
            ids = conn.scalars(query).all()
        return np.asarray(ids, dtype=np.int64)

    def item_ids_for_images(self, image_ids: Iterable[int]) -> dict[int, str]:
        """``image_id -> item_id`` for the ids that exist (e.g. mapping vector hits to items)."""
        wanted = sorted({int(i) for i in image_ids})
        out: dict[int, str] = {}
        with _db_errors(), self._engine.connect() as conn:
            for chunk in _chunks(wanted, 10_000):
                query = select(images.c.image_id, images.c.item_id).where(
                    images.c.image_id.in_(chunk)
                )
                out.update({int(rec.image_id): rec.item_id for rec in conn.execute(query)})
        return out

    def categories(self) -> list[tuple[str, int]]:
        """``(category, item count)`` pairs, most items first."""
        count = func.count(items.c.item_id)
        query = select(items.c.category, count).group_by(items.c.category)
        with _db_errors(), self._engine.connect() as conn:
            rows = [(rec[0], int(rec[1])) for rec in conn.execute(query.order_by(count.desc()))]
        return sorted(rows, key=lambda r: (-r[1], r[0]))

    def count_items(self) -> int:
        with _db_errors(), self._engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(items)) or 0)

    def count_images(self) -> int:
        with _db_errors(), self._engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(images)) or 0)

    # ---- changes ----------------------------------------------------------------------------

    def set_available(self, item_id: str, available: bool) -> None:
        """Mark an item (un)available; raises ``NotFound``. A no-op leaves ``revision`` as is."""
        if not _storable(item_id):
            raise NotFound(f"catalog item {_shown(item_id)} not found")
        with _db_errors(), self._engine.begin() as conn:
            result = conn.execute(
                update(items)
                .where(items.c.item_id == item_id, items.c.available != available)
                .values(available=available, updated_at=datetime.now(UTC))
            )
            if result.rowcount:
                self._bump(conn)
                return
            if conn.scalar(select(items.c.item_id).where(items.c.item_id == item_id)) is None:
                raise NotFound(f"catalog item {_shown(item_id)} not found")

    def delete_item(self, item_id: str) -> None:
        """Delete an item and its image rows; raises ``NotFound``.

        Media files stay: they are shared by content hash and cheap to keep.
        """
        if not _storable(item_id):
            raise NotFound(f"catalog item {_shown(item_id)} not found")
        with _db_errors(), self._engine.begin() as conn:
            conn.execute(delete(images).where(images.c.item_id == item_id))
            result = conn.execute(delete(items).where(items.c.item_id == item_id))
            if not result.rowcount:
                raise NotFound(f"catalog item {_shown(item_id)} not found")
            self._bump(conn)
