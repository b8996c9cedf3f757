"""The moderation store: posts, scores, the queue, the append-only decision log, accounts,
sessions and ingestion cursors, on the shared database layer (``lookalike.core.db``).

    store = ModerationStore(settings.db_url, settings.db)
    store.create_schema()                        # Alembic to head (revision 0003 holds ours)
    store.upsert_posts(posts)                    # importers: new posts, known ones counted
    store.posts_to_score(500)                    # the pre-filter reads these ...
    store.record_scores(scores)                  # ... and writes these (enqueue=True: queued)
    store.next_posts("alice", 2)                 # the moderator's page: leased to alice
    store.decide("p1", "alice", "approve", item_id="LK-0001")
    store.undo_last("alice")

Guarantees:

- A decision is one transaction: its log row(s) and the post's new status commit together or
  not at all (the row is written first, so a failure at the status update rolls back both).
- The log is append-only in the database (triggers of migration 0003 refuse UPDATE/DELETE); an
  undo is a new row naming the row it undoes. A post's standing decision (``decision_id``) is
  its last approve/reject that no undo names; published reviews follow it, so a post rejected
  after its approval disappears from its item's reviews.
- Re-importing a post id never makes a second post (``post_id`` is the primary key); a post
  rejected as unreadable is retried when it comes again with a readable image.
- Two moderators are not shown the same post at once: ``next_posts`` leases what it returns
  (``lease_s``) with a conditional UPDATE, which is race-free on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from lookalike.core.db import get_engine, migrate, translate_errors
from lookalike.core.errors import ConfigError, InvalidInput, NotFound
from lookalike.core.settings import DatabaseSettings, Settings
from lookalike.moderation.posts import (
    Decision,
    DecisionLabel,
    ImportResult,
    Post,
    PostScore,
    QueuedPost,
)

__all__ = [
    "MODERATOR_ROLES",
    "Account",
    "ModerationStore",
    "SessionRow",
    "hash_token",
    "phash_distance",
]

log = logging.getLogger(__name__)

MODERATOR_ROLES = ("moderator", "admin")
_MISSING = (
    "the moderation tables are missing: run `lookalike moderation import` or start the server"
)
_MAX_FAILED_LOGINS = 5
_LOCKOUT = timedelta(minutes=5)
_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_TZ = sa.DateTime(timezone=True)

_metadata = sa.MetaData()
posts_t = sa.Table(
    "moderation_posts",
    _metadata,
    sa.Column("post_id", sa.String(128), primary_key=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("media_type", sa.String(32), nullable=False),
    sa.Column("media_url", sa.Text),
    sa.Column("image_path", sa.Text),
    sa.Column("stored_path", sa.Text),
    sa.Column("caption", sa.Text, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("permalink", sa.Text),
    sa.Column("posted_at", _TZ),
    sa.Column("imported_at", _TZ, nullable=False),
    sa.Column("status", sa.String(24), nullable=False, index=True),
    sa.Column("reject_reason", sa.String(500)),
    sa.Column("sha256", sa.String(64), index=True),
    sa.Column("phash", sa.BigInteger),
    sa.Column("decision_id", _ID),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", _TZ),
)
scores_t = sa.Table(
    "moderation_scores",
    _metadata,
    sa.Column(
        "post_id",
        sa.String(128),
        sa.ForeignKey("moderation_posts.post_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("safe", sa.Boolean, nullable=False),
    sa.Column("exposure", sa.Double, nullable=False),
    sa.Column("matches", sa.Text, nullable=False),
    sa.Column("duplicate_of", sa.String(128), index=True),
    sa.Column("classifier_version", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("priority", sa.Double, nullable=False, index=True),
    sa.Column("queued", sa.Boolean, nullable=False),
    sa.Column("scored_at", _TZ, nullable=False),
)
decisions_t = sa.Table(
    "moderation_decisions",
    _metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column(
        "post_id",
        sa.String(128),
        sa.ForeignKey("moderation_posts.post_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("moderator", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(8), nullable=False),
    sa.Column("item_id", sa.String(64)),
    sa.Column("at", _TZ, nullable=False, index=True),
    sa.Column("classifier_version", sa.String(200)),
    sa.Column("model_version", sa.String(200)),
    sa.Column("undoes", _ID, sa.ForeignKey("moderation_decisions.id")),
    sa.Column("batch_id", _ID),
)
accounts_t = sa.Table(
    "moderation_accounts",
    _metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(300), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", _TZ, nullable=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", _TZ),
)
sessions_t = sa.Table(
    "moderation_sessions",
    _metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("moderation_accounts.username", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", _TZ, nullable=False),
    sa.Column("last_seen", _TZ, nullable=False),
    sa.Column("expires_at", _TZ, nullable=False, index=True),
)
cursors_t = sa.Table(
    "ingest_cursors",
    _metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("updated_at", _TZ, nullable=False),
)


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class SessionRow:
    """A live session as stored (the token itself is never stored, only its SHA-256)."""

    username: str
    role: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; we only ever store UTC.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def phash_distance(a: int, b: int) -> int:
    """Hamming distance of two 64-bit perceptual hashes (signed or unsigned spelling)."""
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def _post(row: Any) -> Post:
    stored = row.stored_path
    return Post(
        post_id=row.post_id,
        source=row.source,
        media_type=row.media_type,
        caption=row.caption,
        author=row.author,
        permalink=row.permalink,
        timestamp=_aware(row.posted_at),
        image_path=Path(stored) if stored else None,
        media_url=row.media_url,
    )


def _decision(row: Any) -> Decision:
    return Decision(
        id=int(row.id),
        post_id=row.post_id,
        moderator=row.moderator,
        action=row.action,
        item_id=row.item_id,
        at=_aware(row.at),  # type: ignore[arg-type]
        classifier_version=row.classifier_version,
        model_version=row.model_version,
        undoes=None if row.undoes is None else int(row.undoes),
        batch_id=None if row.batch_id is None else int(row.batch_id),
    )


def _matches(text: str) -> list[tuple[str, float]]:
    return [(str(i), float(s)) for i, s in json.loads(text)]


def _known_shape(post_id: str) -> bool:
    """Whether ``post_id`` could be stored at all (PostgreSQL refuses NUL in text)."""
    return 0 < len(post_id) <= 128 and "\x00" not in post_id


def _text(value: str | None, limit: int) -> str:
    return (value or "")[:limit]


class ModerationStore:
    """Everything the moderation loop keeps, in the database at ``url`` (SQLite or PostgreSQL).

    Errors come out in the project's tree: an unreachable database is ``Unavailable`` (503),
    missing tables a ``ConfigError`` that names the fix, an unknown post ``NotFound``.
    """

    def __init__(self, url: str, options: DatabaseSettings | None = None) -> None:
        self.url, self._db = url, options
        self._engine = get_engine(url, options)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModerationStore:
        """The store of ``settings.db_url`` with ``settings.db``'s bounds."""
        return cls(settings.db_url, settings.db)

    def create_schema(self) -> None:
        """Migrate the database to the newest schema (safe to repeat)."""
        migrate(self.url, self._db)

    def _errors(self) -> Any:
        return translate_errors("the moderation database", _MISSING)

    # ---- posts ------------------------------------------------------------------------------

    def upsert_posts(
        self,
        posts: Iterable[Post],
        *,
        fingerprints: Mapping[str, tuple[str, int]] | None = None,
        rejections: Mapping[str, str] | None = None,
    ) -> ImportResult:
        """Add posts not seen before; count the known ones as duplicates.

        ``fingerprints``: post id → (sha256 of the stored image, 64-bit dHash), as
        :func:`lookalike.moderation.importer.store_image` computes them; a post with an
        ``image_path`` and no fingerprint gets one computed from the file. ``rejections``:
        post id → why its image could not be read; such posts are stored as
        ``rejected_unreadable``. A known post that was rejected as unreadable and now comes with
        a readable image is imported again (counted as added).
        """
        from lookalike.moderation.importer import fingerprint_file

        fingerprints = dict(fingerprints or {})
        rejections = rejections or {}
        added = duplicates = rejected = 0
        reasons: list[str] = []
        now = _now()
        batch = list(posts)
        for post in batch:
            if post.post_id not in fingerprints and post.image_path is not None:
                if post.post_id not in rejections:
                    fingerprints[post.post_id] = fingerprint_file(post.image_path)
        with self._errors(), self._engine.begin() as conn:
            for post in batch:
                if not post.post_id or len(post.post_id) > 128:
                    rejected += 1
                    reasons.append(f"post id {post.post_id[:40]!r}: empty or over 128 characters")
                    continue
                reason = rejections.get(post.post_id)
                sha, phash = fingerprints.get(post.post_id, (None, None))
                values = {
                    "source": _text(post.source, 200),
                    "media_type": _text(post.media_type, 32) or "IMAGE",
                    "media_url": post.media_url,
                    "stored_path": None if reason else _path_text(post.image_path),
                    "caption": post.caption or "",
                    "author": _text(post.author, 200),
                    "permalink": post.permalink,
                    "posted_at": post.timestamp,
                    "status": "rejected_unreadable" if reason else "imported",
                    "reject_reason": _text(reason, 500) if reason else None,
                    "sha256": None if reason else sha,
                    "phash": None if reason or phash is None else _signed64(phash),
                }
                existing = conn.execute(
                    sa.select(posts_t.c.status).where(posts_t.c.post_id == post.post_id)
                ).first()
                if existing is None:
                    conn.execute(
                        posts_t.insert().values(
                            post_id=post.post_id,
                            image_path=_path_text(post.image_path),
                            imported_at=now,
                            **values,
                        )
                    )
                elif existing.status == "rejected_unreadable" and not reason:
                    conn.execute(
                        posts_t.update().where(posts_t.c.post_id == post.post_id).values(**values)
                    )
                else:
                    duplicates += 1
                    continue
                if reason:
                    rejected += 1
                    reasons.append(f"post {post.post_id}: {reason}")
                else:
                    added += 1
        return ImportResult(added, duplicates, rejected, reasons)

    def reject_post(self, post_id: str, reason: str) -> None:
        """Mark a known post as unreadable (it is never scored or shown); says why."""
        with self._errors(), self._engine.begin() as conn:
            done = conn.execute(
                posts_t.update()
                .where(posts_t.c.post_id == post_id)
                .values(status="rejected_unreadable", reject_reason=_text(reason, 500))
            )
        if done.rowcount == 0:
            raise NotFound(f"no post {post_id!r}")

    def has_post(self, post_id: str) -> bool:
        with self._errors(), self._engine.connect() as conn:
            found = conn.execute(
                sa.select(posts_t.c.post_id).where(posts_t.c.post_id == post_id)
            ).first()
        return found is not None

    def post(self, post_id: str) -> Post:
        if not _known_shape(post_id):
            raise NotFound(f"no post {post_id[:40]!r}")
        with self._errors(), self._engine.connect() as conn:
            row = conn.execute(sa.select(posts_t).where(posts_t.c.post_id == post_id)).first()
        if row is None:
            raise NotFound(f"no post {post_id!r}")
        return _post(row)

    def status_of(self, post_id: str) -> tuple[str, str | None]:
        """(status, reject_reason) of a post."""
        with self._errors(), self._engine.connect() as conn:
            row = conn.execute(
                sa.select(posts_t.c.status, posts_t.c.reject_reason).where(
                    posts_t.c.post_id == post_id
                )
            ).first()
        if row is None:
            raise NotFound(f"no post {post_id!r}")
        return row.status, row.reject_reason

    def posts_to_score(self, limit: int) -> list[Post]:
        """Imported posts with a readable stored image that no scorer has seen, oldest first."""
        query = (
            sa.select(posts_t)
            .where(posts_t.c.status == "imported", posts_t.c.stored_path.is_not(None))
            .order_by(posts_t.c.imported_at, posts_t.c.post_id)
            .limit(max(0, int(limit)))
        )
        with self._errors(), self._engine.connect() as conn:
            return [_post(r) for r in conn.execute(query)]

    def near_duplicate_of(self, post_id: str, max_distance: int = 6) -> str | None:
        """The earliest other post imported before this one whose photo's dHash is within
        ``max_distance`` bits (0: the same picture re-encoded or resized), or None."""
        with self._errors(), self._engine.connect() as conn:
            me = conn.execute(
                sa.select(posts_t.c.phash, posts_t.c.imported_at).where(
                    posts_t.c.post_id == post_id
                )
            ).first()
            if me is None:
                raise NotFound(f"no post {post_id!r}")
            if me.phash is None:
                return None
            rows = conn.execute(
                sa.select(posts_t.c.post_id, posts_t.c.phash)
                .where(
                    posts_t.c.phash.is_not(None),
                    posts_t.c.post_id != post_id,
                    posts_t.c.status != "rejected_unreadable",
                    sa.or_(
                        posts_t.c.imported_at < me.imported_at,
                        sa.and_(
                            posts_t.c.imported_at == me.imported_at, posts_t.c.post_id < post_id
                        ),
                    ),
                )
                .order_by(posts_t.c.imported_at, posts_t.c.post_id)
            ).all()
        if not rows:
            return None
        hashes = np.fromiter((r.phash for r in rows), dtype=np.int64, count=len(rows))
        xor = np.bitwise_xor(hashes.view(np.uint64), np.uint64(me.phash & ((1 << 64) - 1)))
        close = np.flatnonzero(np.bitwise_count(xor) <= max_distance)
        return None if close.size == 0 else str(rows[int(close[0])].post_id)

    def record_scores(self, scores: Sequence[PostScore]) -> None:
        """Store the pre-filter's scores (replacing older ones) in one transaction.

        ``enqueue`` puts an undecided post in the queue (status ``queued``), else it is
        ``scored`` (kept, never shown). A decided post keeps its decision and status.
        """
        now = _now()
        with self._errors(), self._engine.begin() as conn:
            for s in scores:
                status = conn.execute(
                    sa.select(posts_t.c.status).where(posts_t.c.post_id == s.post_id)
                ).scalar()
                if status is None:
                    raise NotFound(f"no post {s.post_id!r}: import it before scoring it")
                if status == "rejected_unreadable":
                    raise InvalidInput(f"post {s.post_id!r} was rejected as unreadable")
                values = {
                    "score": float(s.score),
                    "safe": bool(s.safe),
                    "exposure": float(s.exposure),
                    "matches": json.dumps([[str(i), round(float(v), 6)] for i, v in s.matches]),
                    "duplicate_of": s.duplicate_of,
                    "classifier_version": s.classifier_version,
                    "model_version": s.model_version,
                    "priority": float(s.priority),
                    "queued": bool(s.enqueue),
                    "scored_at": now,
                }
                done = conn.execute(
                    scores_t.update().where(scores_t.c.post_id == s.post_id).values(**values)
                )
                if done.rowcount == 0:
                    conn.execute(scores_t.insert().values(post_id=s.post_id, **values))
                if status != "decided":
                    conn.execute(
                        posts_t.update()
                        .where(posts_t.c.post_id == s.post_id)
                        .values(status="queued" if s.enqueue else "scored")
                    )

    # ---- ingestion cursors ------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        with self._errors(), self._engine.connect() as conn:
            return conn.execute(
                sa.select(cursors_t.c.cursor).where(cursors_t.c.name == name)
            ).scalar()

    def set_cursor(self, name: str, value: str | None) -> None:
        with self._errors(), self._engine.begin() as conn:
            done = conn.execute(
                cursors_t.update()
                .where(cursors_t.c.name == name)
                .values(cursor=value, updated_at=_now())
            )
            if done.rowcount == 0:
                conn.execute(cursors_t.insert().values(name=name, cursor=value, updated_at=_now()))

    # ---- the queue --------------------------------------------------------------------------

    def _queued_rows(self, conn: sa.Connection, ids: Sequence[str]) -> list[QueuedPost]:
        if not ids:
            return []
        rows = conn.execute(
            sa.select(
                posts_t,
                scores_t.c.score,
                scores_t.c.safe,
                scores_t.c.matches,
                scores_t.c.duplicate_of,
                scores_t.c.classifier_version,
                scores_t.c.model_version,
                scores_t.c.priority,
            )
            .join(scores_t, scores_t.c.post_id == posts_t.c.post_id)
            .where(posts_t.c.post_id.in_(list(ids)))
        ).all()
        by_id = {r.post_id: r for r in rows}
        out = []
        for post_id in ids:
            r = by_id.get(post_id)
            if r is None:
                continue
            out.append(
                QueuedPost(
                    post=_post(r),
                    status=r.status,
                    score=float(r.score),
                    safe=bool(r.safe),
                    matches=_matches(r.matches),
                    duplicate_of=r.duplicate_of,
                    duplicates=self._group(conn, post_id, r.duplicate_of),
                    classifier_version=r.classifier_version,
                    model_version=r.model_version,
                    priority=float(r.priority),
                )
            )
        return out

    def _group(self, conn: sa.Connection, post_id: str, duplicate_of: str | None) -> list[str]:
        """Queued posts that are near-duplicates of ``post_id`` (same root), itself excluded."""
        root = duplicate_of or post_id
        rows = conn.execute(
            sa.select(posts_t.c.post_id)
            .join(scores_t, scores_t.c.post_id == posts_t.c.post_id)
            .where(
                posts_t.c.status == "queued",
                posts_t.c.post_id != post_id,
                sa.or_(scores_t.c.duplicate_of == root, posts_t.c.post_id == root),
            )
            .order_by(posts_t.c.post_id)
        ).all()
        return [r.post_id for r in rows]

    def queued_post(self, post_id: str) -> QueuedPost:
        """A scored post as a moderator sees it (any status); ``NotFound`` if never scored."""
        if not _known_shape(post_id):
            raise NotFound(f"no scored post {post_id[:40]!r}")
        with self._errors(), self._engine.connect() as conn:
            found = self._queued_rows(conn, [post_id])
        if not found:
            raise NotFound(f"no scored post {post_id!r}")
        return found[0]

    def next_posts(self, moderator: str, n: int = 2, lease_s: float = 120.0) -> list[QueuedPost]:
        """The next ``n`` queued posts for ``moderator``, leased to them for ``lease_s``.

        Order: highest priority first (the pre-filter sets it), then oldest score. Posts this
        moderator skipped (and did not undo) and posts leased to someone else are left out.
        """
        now = _now()
        d, u = decisions_t.alias("d"), decisions_t.alias("u")
        skipped = (
            sa.select(d.c.id)
            .where(
                d.c.post_id == posts_t.c.post_id,
                d.c.moderator == moderator,
                d.c.action == "skip",
                ~sa.exists(sa.select(u.c.id).where(u.c.undoes == d.c.id)),
            )
            .exists()
        )
        free = sa.or_(
            posts_t.c.claimed_until.is_(None),
            posts_t.c.claimed_until < now,
            posts_t.c.claimed_by == moderator,
        )
        query = (
            sa.select(posts_t.c.post_id)
            .join(scores_t, scores_t.c.post_id == posts_t.c.post_id)
            .where(posts_t.c.status == "queued", free, ~skipped)
            .order_by(scores_t.c.priority.desc(), scores_t.c.scored_at, posts_t.c.post_id)
            .limit(max(1, n) * 4)
        )
        taken: list[str] = []
        with self._errors(), self._engine.begin() as conn:
            for post_id in conn.execute(query).scalars().all():
                if len(taken) >= n:
                    break
                lease = conn.execute(
                    posts_t.update()
                    .where(posts_t.c.post_id == post_id, posts_t.c.status == "queued", free)
                    .values(claimed_by=moderator, claimed_until=now + timedelta(seconds=lease_s))
                )
                if lease.rowcount == 1:
                    taken.append(post_id)
            return self._queued_rows(conn, taken)

    def queue_size(self) -> int:
        with self._errors(), self._engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(posts_t.c.status == "queued")
                ).scalar_one()
            )

    # ---- decisions --------------------------------------------------------------------------

    def decide(
        self,
        post_id: str,
        moderator: str,
        action: str,
        *,
        item_id: str | None = None,
        with_duplicates: bool = False,
    ) -> list[Decision]:
        """Record a moderator's decision on a queued (or already decided) post, in one
        transaction; with ``with_duplicates`` the queued near-duplicates get the same one.

        ``approve`` needs ``item_id``, one of the post's suggested matches; ``skip`` leaves the
        post queued for the others. Returns the new log rows.
        """
        if action not in ("approve", "reject", "skip"):
            raise InvalidInput(f"action must be approve, reject or skip, not {action!r}")
        if not moderator:
            raise InvalidInput("a decision needs the moderator's name")
        if not _known_shape(post_id):
            raise NotFound(f"no scored post {post_id[:40]!r}")
        with self._errors(), self._engine.begin() as conn:
            found = self._queued_rows(conn, [post_id])
            if not found:
                raise NotFound(f"no scored post {post_id!r}")
            head = found[0]
            if head.status not in ("queued", "decided"):
                raise InvalidInput(f"post {post_id!r} is not in the queue (status {head.status})")
            if action == "approve":
                choices = [m for m, _ in head.matches]
                if item_id is None:
                    raise InvalidInput(
                        "approve needs the matching dress: choose one of "
                        + (", ".join(choices) or "(no suggestions)")
                    )
                if item_id not in choices:
                    raise InvalidInput(
                        f"item {item_id!r} is not one of the suggestions for post {post_id!r}: "
                        + ", ".join(choices)
                    )
            targets = [head]
            if with_duplicates and head.duplicates:
                targets += self._queued_rows(conn, head.duplicates)
            made = self._append(conn, moderator, action, item_id, targets)
            # The status update comes after the log rows: a failure here rolls both back.
            for target, row in zip(targets, made, strict=True):
                values: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
                if action != "skip":
                    values.update(status="decided", decision_id=row.id)
                conn.execute(
                    posts_t.update()
                    .where(posts_t.c.post_id == target.post.post_id)
                    .values(**values)
                )
        log.info("%s: %s post %s (+%d near-duplicates)", moderator, action, post_id, len(made) - 1)
        return made

    def _append(
        self,
        conn: sa.Connection,
        moderator: str,
        action: str,
        item_id: str | None,
        targets: Sequence[QueuedPost],
        undoes: Sequence[int | None] | None = None,
    ) -> list[Decision]:
        now = _now()
        made: list[Decision] = []
        batch_id: int | None = None
        for i, target in enumerate(targets):
            values = {
                "post_id": target.post.post_id,
                "moderator": moderator[:64],
                "action": action,
                "item_id": item_id,
                "at": now,
                "classifier_version": target.classifier_version,
                "model_version": target.model_version,
                "undoes": None if undoes is None else undoes[i],
                "batch_id": batch_id,
            }
            new_id = int(
                conn.execute(decisions_t.insert().values(**values)).inserted_primary_key[0]
            )
            made.append(_decision(_Row(id=new_id, **values)))
            # the rows after the first name it: the batch is the first row and those naming it
            if batch_id is None and len(targets) > 1:
                batch_id = new_id
        return made

    def undo_last(self, moderator: str) -> list[Decision]:
        """Undo ``moderator``'s last decision (all of it, near-duplicates included) that is not
        undone yet; the posts go back to their earlier standing. ``NotFound`` if none."""
        d, u = decisions_t.alias("d"), decisions_t.alias("u")
        not_undone = ~sa.exists(sa.select(u.c.id).where(u.c.undoes == d.c.id))
        with self._errors(), self._engine.begin() as conn:
            last = conn.execute(
                sa.select(d)
                .where(d.c.moderator == moderator, d.c.action != "undo", not_undone)
                .order_by(d.c.id.desc())
                .limit(1)
            ).first()
            if last is None:
                raise NotFound(f"{moderator} has no decision left to undo")
            rows = [last]
            if last.batch_id is not None:
                rows = conn.execute(
                    sa.select(d)
                    .where(
                        sa.or_(d.c.batch_id == last.batch_id, d.c.id == last.batch_id),
                        d.c.action != "undo",
                        not_undone,
                    )
                    .order_by(d.c.id)
                ).all()
            targets = self._queued_rows(conn, [r.post_id for r in rows])
            made = self._append(conn, moderator, "undo", None, targets, [int(r.id) for r in rows])
            for target in targets:
                standing = self._standing(conn, target.post.post_id)
                conn.execute(
                    posts_t.update()
                    .where(posts_t.c.post_id == target.post.post_id)
                    .values(
                        status="decided" if standing is not None else "queued",
                        decision_id=standing,
                    )
                )
        log.info("%s: undid %d decision(s) on post %s", moderator, len(made), last.post_id)
        return made

    def _standing(self, conn: sa.Connection, post_id: str) -> int | None:
        """The id of the post's last approve/reject that no undo names, or None."""
        d, u = decisions_t.alias("d"), decisions_t.alias("u")
        return conn.execute(
            sa.select(d.c.id)
            .where(
                d.c.post_id == post_id,
                d.c.action.in_(("approve", "reject")),
                ~sa.exists(sa.select(u.c.id).where(u.c.undoes == d.c.id)),
            )
            .order_by(d.c.id.desc())
            .limit(1)
        ).scalar()

    def audit(
        self,
        *,
        moderator: str | None = None,
        action: str | None = None,
        post_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Decision]:
        """The decision log, newest first, filtered."""
        query = sa.select(decisions_t)
        if moderator:
            query = query.where(decisions_t.c.moderator == moderator)
        if action:
            query = query.where(decisions_t.c.action == action)
        if post_id:
            query = query.where(decisions_t.c.post_id == post_id)
        if since is not None:
            query = query.where(decisions_t.c.at >= since)
        if until is not None:
            query = query.where(decisions_t.c.at < until)
        query = query.order_by(decisions_t.c.id.desc()).limit(limit).offset(offset)
        with self._errors(), self._engine.connect() as conn:
            return [_decision(r) for r in conn.execute(query)]

    def counts_by_moderator(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Per moderator: how many of each action, the total and the last decision's time."""
        query = sa.select(
            decisions_t.c.moderator,
            decisions_t.c.action,
            sa.func.count().label("n"),
            sa.func.max(decisions_t.c.at).label("last_at"),
        ).group_by(decisions_t.c.moderator, decisions_t.c.action)
        if since is not None:
            query = query.where(decisions_t.c.at >= since)
        out: dict[str, dict[str, Any]] = {}
        with self._errors(), self._engine.connect() as conn:
            for r in conn.execute(query):
                row = out.setdefault(
                    r.moderator,
                    {
                        "moderator": r.moderator,
                        "approve": 0,
                        "reject": 0,
                        "skip": 0,
                        "undo": 0,
                        "total": 0,
                        "last_at": None,
                    },
                )
                row[r.action] = int(r.n)
                row["total"] += int(r.n)
                last = _aware(r.last_at)
                if row["last_at"] is None or (last is not None and last > row["last_at"]):
                    row["last_at"] = last
        return sorted(out.values(), key=lambda r: (-r["total"], r["moderator"]))

    def count_decisions(self, moderator: str, since: datetime) -> int:
        """Approve/reject/skip rows by ``moderator`` since ``since`` (undos not counted)."""
        with self._errors(), self._engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        decisions_t.c.moderator == moderator,
                        decisions_t.c.action != "undo",
                        decisions_t.c.at >= since,
                    )
                ).scalar_one()
            )

    # ---- what the decisions feed: reviews, labels, pairs ------------------------------------

    def _approved(self) -> sa.Select:
        return (
            sa.select(posts_t, decisions_t.c.item_id, decisions_t.c.at.label("decided_at"))
            .join(decisions_t, decisions_t.c.id == posts_t.c.decision_id)
            .where(posts_t.c.status == "decided", decisions_t.c.action == "approve")
        )

    def reviews(
        self, item_id: str, limit: int = 50, offset: int = 0
    ) -> list[tuple[Post, datetime]]:
        """Approved posts of ``item_id`` (standing decision), newest post first, with the time
        of their approval."""
        query = (
            self._approved()
            .where(decisions_t.c.item_id == item_id)
            .order_by(
                sa.func.coalesce(posts_t.c.posted_at, posts_t.c.imported_at).desc(),
                posts_t.c.post_id,
            )
            .limit(limit)
            .offset(offset)
        )
        with self._errors(), self._engine.connect() as conn:
            return [(_post(r), _aware(r.decided_at)) for r in conn.execute(query)]  # type: ignore[misc]

    def approved_post(self, post_id: str) -> Post | None:
        """The post if its standing decision is an approval, else None."""
        if not _known_shape(post_id):
            return None
        with self._errors(), self._engine.connect() as conn:
            row = conn.execute(self._approved().where(posts_t.c.post_id == post_id)).first()
        return None if row is None else _post(row)

    def decisions(self, since: datetime | None = None) -> list[DecisionLabel]:
        """Every post's standing decision (approve/reject), oldest first: training labels."""
        query = (
            sa.select(posts_t, decisions_t.c.action, decisions_t.c.item_id, decisions_t.c.at)
            .join(decisions_t, decisions_t.c.id == posts_t.c.decision_id)
            .where(posts_t.c.status == "decided")
            .order_by(decisions_t.c.id)
        )
        if since is not None:
            query = query.where(decisions_t.c.at >= since)
        with self._errors(), self._engine.connect() as conn:
            return [
                DecisionLabel(
                    post_id=r.post_id,
                    image_path=Path(r.stored_path) if r.stored_path else None,
                    caption=r.caption,
                    action=r.action,
                    item_id=r.item_id,
                    at=_aware(r.at),  # type: ignore[arg-type]
                )
                for r in conn.execute(query)
            ]

    def approved_pairs(self) -> list[tuple[Path, str]]:
        """(stored post photo, chosen catalog item) of every approved post: consumer-to-shop
        training pairs for the search model."""
        query = (
            self._approved().where(posts_t.c.stored_path.is_not(None)).order_by(posts_t.c.post_id)
        )
        with self._errors(), self._engine.connect() as conn:
            return [(Path(r.stored_path), str(r.item_id)) for r in conn.execute(query)]

    # ---- accounts and sessions --------------------------------------------------------------

    def create_account(self, username: str, password: str, role: str) -> Account:
        """Make a moderator or admin account; the password is kept only as an Argon2id hash."""
        from argon2 import PasswordHasher

        username = username.strip()
        if (
            not username
            or len(username) > 64
            or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise ConfigError("a username is 1-64 letters, digits, '-', '_' or '.', e.g. `alice`")
        if role not in MODERATOR_ROLES:
            raise ConfigError(f"an account's role is moderator or admin, not {role!r}")
        if len(password) < 10:
            raise ConfigError("a password needs at least 10 characters")
        now = _now()
        with self._errors(), self._engine.begin() as conn:
            if conn.execute(
                sa.select(accounts_t.c.username).where(accounts_t.c.username == username)
            ).first():
                raise ConfigError(f"account {username!r} exists already")
            conn.execute(
                accounts_t.insert().values(
                    username=username,
                    password_hash=PasswordHasher().hash(password),
                    role=role,
                    active=True,
                    created_at=now,
                    failed_logins=0,
                )
            )
        log.info("created %s account %r", role, username)
        return Account(username, role, True, now)

    def set_active(self, username: str, active: bool) -> None:
        with self._errors(), self._engine.begin() as conn:
            done = conn.execute(
                accounts_t.update().where(accounts_t.c.username == username).values(active=active)
            )
            if not active:
                conn.execute(sessions_t.delete().where(sessions_t.c.username == username))
        if done.rowcount == 0:
            raise NotFound(f"no account {username!r}")

    def accounts(self) -> list[Account]:
        with self._errors(), self._engine.connect() as conn:
            rows = conn.execute(sa.select(accounts_t).order_by(accounts_t.c.username)).all()
        return [Account(r.username, r.role, bool(r.active), _aware(r.created_at)) for r in rows]  # type: ignore[arg-type]

    def verify_password(self, username: str, password: str) -> Account | None:
        """The active account if the password is right, else None.

        Unknown users cost one hash verification too (no timing oracle for which names
        exist). After 5 wrong passwords in a row an account is locked for 5 minutes.
        """
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = PasswordHasher()
        now = _now()
        with self._errors(), self._engine.connect() as conn:
            row = conn.execute(
                sa.select(accounts_t).where(accounts_t.c.username == username[:64])
            ).first()
        if row is None:
            try:
                hasher.verify(_dummy_hash(), password)
            except VerificationError:
                pass
            return None
        locked = _aware(row.locked_until)
        try:
            hasher.verify(row.password_hash, password)
            ok = True
        except (VerificationError, InvalidHashError):
            ok = False
        if locked is not None and locked > now:
            return None
        with self._errors(), self._engine.begin() as conn:
            if ok:
                values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
                if hasher.check_needs_rehash(row.password_hash):
                    values["password_hash"] = hasher.hash(password)
            else:
                failed = int(row.failed_logins) + 1
                values = {"failed_logins": failed}
                if failed >= _MAX_FAILED_LOGINS:
                    values = {"failed_logins": 0, "locked_until": now + _LOCKOUT}
                    log.warning("account %r locked for 5 minutes after failed logins", username)
            conn.execute(
                accounts_t.update().where(accounts_t.c.username == row.username).values(**values)
            )
        if not ok or not row.active:
            return None
        return Account(row.username, row.role, True, _aware(row.created_at))  # type: ignore[arg-type]

    def create_session(
        self, token_sha256: str, username: str, csrf_token: str, idle: timedelta
    ) -> None:
        now = _now()
        with self._errors(), self._engine.begin() as conn:
            conn.execute(sessions_t.delete().where(sessions_t.c.expires_at < now))
            conn.execute(
                sessions_t.insert().values(
                    token_sha256=token_sha256,
                    username=username,
                    csrf_token=csrf_token,
                    created_at=now,
                    last_seen=now,
                    expires_at=now + idle,
                )
            )

    def session(
        self, token_sha256: str, idle: timedelta, touch_after: timedelta = timedelta(seconds=60)
    ) -> SessionRow | None:
        """The live session with this token hash (its account active), sliding its idle
        expiry forward (written at most once per ``touch_after``); None if unknown or expired."""
        now = _now()
        query = (
            sa.select(sessions_t, accounts_t.c.role, accounts_t.c.active)
            .join(accounts_t, accounts_t.c.username == sessions_t.c.username)
            .where(sessions_t.c.token_sha256 == token_sha256)
        )
        with self._errors(), self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not row.active or _aware(row.expires_at) <= now:  # type: ignore[operator]
            return None
        expires = _aware(row.expires_at)
        if now - _aware(row.last_seen) >= touch_after:  # type: ignore[operator]
            expires = now + idle
            with self._errors(), self._engine.begin() as conn:
                conn.execute(
                    sessions_t.update()
                    .where(sessions_t.c.token_sha256 == token_sha256)
                    .values(last_seen=now, expires_at=expires)
                )
        return SessionRow(row.username, row.role, row.csrf_token, _aware(row.created_at), expires)  # type: ignore[arg-type]

    def delete_session(self, token_sha256: str) -> None:
        with self._errors(), self._engine.begin() as conn:
            conn.execute(sessions_t.delete().where(sessions_t.c.token_sha256 == token_sha256))


@dataclass(frozen=True)
class _Row:
    """The values of a log row just written (read back like a database row)."""

    id: int
    post_id: str
    moderator: str
    action: str
    item_id: str | None
    at: datetime
    classifier_version: str | None
    model_version: str | None
    undoes: int | None
    batch_id: int | None


def _path_text(path: Path | None) -> str | None:
    return None if path is None else str(path)


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    from argon2 import PasswordHasher

    if not _DUMMY:
        _DUMMY.append(PasswordHasher().hash("not-a-real-password"))
    return _DUMMY[0]
