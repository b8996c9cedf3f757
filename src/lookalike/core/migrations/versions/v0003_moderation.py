"""Moderation: imported posts, their scores, the review queue, the append-only decision log,
moderator accounts and sessions, and the ingestion cursors.

The tables are prefixed ``moderation_`` (``ingest_cursors`` is generic) so that they cannot be
confused with the rental reviews of 0004. The decision log is append-only in the database
itself: a trigger refuses every UPDATE and DELETE of ``moderation_decisions`` (SQLite and
PostgreSQL), so no code path, ours or a hand-typed SQL session, can rewrite history; an undo is
a new row that names the row it undoes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_TZ = sa.DateTime(timezone=True)


def _posts() -> None:
    op.create_table(
        "moderation_posts",
        sa.Column("post_id", sa.String(128), primary_key=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("media_url", sa.Text, nullable=True),
        sa.Column("image_path", sa.Text, nullable=True),  # as given by the import (file name)
        sa.Column("stored_path", sa.Text, nullable=True),  # the local normalised copy
        sa.Column("caption", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("permalink", sa.Text, nullable=True),
        sa.Column("posted_at", _TZ, nullable=True),
        sa.Column("imported_at", _TZ, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("reject_reason", sa.String(500), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        # 64-bit dHash of the photo as a signed 64-bit integer (near-duplicates)
        sa.Column("phash", sa.BigInteger, nullable=True),
        # the standing decision (approve/reject, not undone); None while undecided
        sa.Column("decision_id", _ID, nullable=True),
        # a short lease so that two moderators are not shown the same post at once
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", _TZ, nullable=True),
    )
    op.create_index("ix_moderation_posts_status", "moderation_posts", ["status"])
    op.create_index("ix_moderation_posts_sha256", "moderation_posts", ["sha256"])


def _scores() -> None:
    op.create_table(
        "moderation_scores",
        sa.Column(
            "post_id",
            sa.String(128),
            sa.ForeignKey("moderation_posts.post_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("safe", sa.Boolean, nullable=False),
        sa.Column("exposure", sa.Double, nullable=False),
        sa.Column("matches", sa.Text, nullable=False),  # JSON [[item_id, score], ...]
        sa.Column("duplicate_of", sa.String(128), nullable=True),
        sa.Column("classifier_version", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("priority", sa.Double, nullable=False),
        sa.Column("queued", sa.Boolean, nullable=False),
        sa.Column("scored_at", _TZ, nullable=False),
    )
    op.create_index("ix_moderation_scores_duplicate_of", "moderation_scores", ["duplicate_of"])
    op.create_index("ix_moderation_scores_priority", "moderation_scores", ["priority"])


def _decisions() -> None:
    op.create_table(
        "moderation_decisions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "post_id",
            sa.String(128),
            sa.ForeignKey("moderation_posts.post_id"),
            nullable=False,
        ),
        sa.Column("moderator", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=True),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("classifier_version", sa.String(200), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("undoes", _ID, sa.ForeignKey("moderation_decisions.id"), nullable=True),
        # decisions taken together (a post and its near-duplicates) share the first one's id
        sa.Column("batch_id", _ID, nullable=True),
        sa.CheckConstraint(
            "action IN ('approve', 'reject', 'skip', 'undo')", name="ck_moderation_action"
        ),
        sa.CheckConstraint(
            "action <> 'approve' OR item_id IS NOT NULL", name="ck_moderation_approve_item"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_moderation_decisions_post_id", "moderation_decisions", ["post_id"])
    op.create_index("ix_moderation_decisions_moderator", "moderation_decisions", ["moderator"])
    op.create_index("ix_moderation_decisions_at", "moderation_decisions", ["at"])


def _accounts() -> None:
    op.create_table(
        "moderation_accounts",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(300), nullable=False),  # argon2id, PHC string
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", _TZ, nullable=True),
    )
    op.create_table(
        "moderation_sessions",
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
        sa.Column("expires_at", _TZ, nullable=False),
    )
    op.create_index("ix_moderation_sessions_expires_at", "moderation_sessions", ["expires_at"])


def _cursors() -> None:
    op.create_table(
        "ingest_cursors",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("updated_at", _TZ, nullable=False),
    )


_APPEND_ONLY_SQLITE = (
    "CREATE TRIGGER moderation_decisions_no_{verb} BEFORE {VERB} ON moderation_decisions "
    "BEGIN SELECT RAISE(ABORT, 'moderation_decisions is append-only'); END"
)
_APPEND_ONLY_PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION moderation_decisions_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'moderation_decisions is append-only'; END; $$ LANGUAGE plpgsql"
)
_APPEND_ONLY_PG_TRIGGER = (
    "CREATE TRIGGER moderation_decisions_append_only BEFORE UPDATE OR DELETE ON "
    "moderation_decisions FOR EACH ROW EXECUTE FUNCTION moderation_decisions_append_only()"
)


def _append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_APPEND_ONLY_PG_FUNCTION)
        op.execute(_APPEND_ONLY_PG_TRIGGER)
    else:
        for verb in ("update", "delete"):
            op.execute(_APPEND_ONLY_SQLITE.format(verb=verb, VERB=verb.upper()))


def upgrade() -> None:
    _posts()
    _scores()
    _decisions()
    _accounts()
    _cursors()
    _append_only()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP TRIGGER IF EXISTS moderation_decisions_append_only ON moderation_decisions"
        )
        op.execute("DROP FUNCTION IF EXISTS moderation_decisions_append_only()")
    for name in (
        "ingest_cursors",
        "moderation_sessions",
        "moderation_accounts",
        "moderation_decisions",
        "moderation_scores",
        "moderation_posts",
    ):
        op.drop_table(name)
