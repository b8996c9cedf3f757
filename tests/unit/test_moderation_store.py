"""The moderation store on SQLite: posts, scores, the queue, the decision log, accounts, sessions.

Real SQLite files and real demo photos; the queue is seeded through the public API
(``upsert_posts`` then ``record_scores`` with ``enqueue=True``). The same store on PostgreSQL, the
crash-safety of a decision and the append-only log are in
``tests/integration/test_moderation_api.py``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from lookalike.core.errors import ConfigError, InvalidInput, NotFound
from lookalike.core.settings import Settings
from lookalike.moderation.posts import Post, PostScore
from lookalike.moderation.store import ModerationStore, hash_token, phash_distance

ITEMS = ("LK-0001", "LK-0002", "LK-0003")


def score_for(post_id: str, priority: float = 0.5, duplicate_of: str | None = None) -> PostScore:
    return PostScore(
        post_id=post_id,
        score=0.9,
        safe=True,
        exposure=0.05,
        matches=[(item, 0.8 - 0.1 * i) for i, item in enumerate(ITEMS)],
        duplicate_of=duplicate_of,
        classifier_version="prefilter:1",
        model_version="effnet_lite0:1",
        enqueue=True,
        priority=priority,
    )


def make_posts(images: list[Path], n: int, start: datetime | None = None) -> list[Post]:
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    return [
        Post(
            post_id=f"p{i}",
            source="test",
            caption=f"my dress #{i}",
            author=f"user{i}",
            permalink=f"https://www.instagram.com/p/p{i}/",
            timestamp=start + timedelta(days=i),
            image_path=images[i],
        )
        for i in range(n)
    ]


@pytest.fixture()
def store(settings: Settings) -> ModerationStore:
    made = ModerationStore.from_settings(settings)
    made.create_schema()
    return made


def queue(store: ModerationStore, images: list[Path], n: int) -> list[Post]:
    posts = make_posts(images, n)
    assert store.upsert_posts(posts).added == n
    store.record_scores([score_for(p.post_id, priority=1.0 - i / 10) for i, p in enumerate(posts)])
    return posts


def test_import_is_idempotent_and_unreadable_posts_are_kept_with_a_reason(
    store: ModerationStore, demo_images: list[Path]
) -> None:
    posts = make_posts(demo_images, 3)
    first = store.upsert_posts(posts)
    assert (first.added, first.duplicates, first.rejected) == (3, 0, 0)
    again = store.upsert_posts(posts)
    assert (again.added, again.duplicates, again.rejected) == (0, 3, 0)

    broken = Post(post_id="bad", source="test", caption="x")
    result = store.upsert_posts([broken], rejections={"bad": "not an image: truncated JPEG"})
    assert result.rejected == 1 and "truncated JPEG" in result.reasons[0]
    assert store.status_of("bad") == ("rejected_unreadable", "not an image: truncated JPEG")
    # a readable copy arriving later is imported after all
    fixed = Post(post_id="bad", source="test", caption="x", image_path=demo_images[5])
    assert store.upsert_posts([fixed]).added == 1
    assert store.status_of("bad")[0] == "imported"

    store.reject_post("p2", "decoder said: image is 40000x40000, over the pixel limit")
    assert store.status_of("p2")[0] == "rejected_unreadable"
    with pytest.raises(NotFound):
        store.reject_post("nope", "x")
    assert sorted(p.post_id for p in store.posts_to_score(10)) == ["bad", "p0", "p1"]


def test_posts_to_score_then_record_scores_moves_them_on(
    store: ModerationStore, demo_images: list[Path]
) -> None:
    posts = make_posts(demo_images, 4)
    store.upsert_posts(posts)
    todo = store.posts_to_score(10)
    assert {p.post_id for p in todo} == {"p0", "p1", "p2", "p3"}
    assert all(p.image_path is not None and p.image_path.is_file() for p in todo)
    assert len(store.posts_to_score(2)) == 2
    kept_out = PostScore(**{**score_for("p3").__dict__, "enqueue": False})
    store.record_scores([score_for("p0"), score_for("p1"), kept_out])
    assert [p.post_id for p in store.posts_to_score(10)] == ["p2"]
    assert store.status_of("p0")[0] == "queued"
    assert store.status_of("p3")[0] == "scored"
    assert store.queue_size() == 2
    with pytest.raises(NotFound):
        store.record_scores([score_for("never-imported")])


def test_near_duplicates_by_perceptual_hash(
    store: ModerationStore, demo_images: list[Path], tmp_path: Path
) -> None:
    # the same photo, resized and re-encoded, is a near-duplicate; another photo is not
    copy = tmp_path / "copy.jpg"
    with Image.open(demo_images[0]) as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2)).save(copy, quality=70)
    posts = make_posts(demo_images, 2) + [
        Post(post_id="p0-again", source="test", caption="", image_path=copy)
    ]
    store.upsert_posts(posts)
    assert store.near_duplicate_of("p0-again") == "p0"
    assert store.near_duplicate_of("p0") is None  # the earliest one is the original
    assert store.near_duplicate_of("p1") is None
    assert store.near_duplicate_of("p0-again", max_distance=-1) is None
    assert phash_distance(0, -1) == 64
    with pytest.raises(NotFound):
        store.near_duplicate_of("nope")


def test_queue_order_leases_and_skips(store: ModerationStore, demo_images: list[Path]) -> None:
    queue(store, demo_images, 4)
    alice = store.next_posts("alice", 2)
    assert [q.post.post_id for q in alice] == ["p0", "p1"]  # highest priority first
    assert alice[0].matches[0][0] == ITEMS[0] and alice[0].model_version == "effnet_lite0:1"
    # leased to alice: bob gets the next ones, alice gets hers again
    assert [q.post.post_id for q in store.next_posts("bob", 2)] == ["p2", "p3"]
    assert [q.post.post_id for q in store.next_posts("alice", 2)] == ["p0", "p1"]
    store.decide("p0", "alice", "skip")
    assert store.status_of("p0")[0] == "queued"  # skipped: still there for the others
    assert [q.post.post_id for q in store.next_posts("alice", 1)] == ["p1"]
    # an expired lease frees the post
    assert [q.post.post_id for q in store.next_posts("carol", 4, lease_s=0.0)] == ["p0"]


def test_decide_undo_and_what_the_decisions_feed(
    store: ModerationStore, demo_images: list[Path]
) -> None:
    queue(store, demo_images, 3)
    with pytest.raises(InvalidInput, match="choose one of LK-0001"):
        store.decide("p0", "alice", "approve")
    with pytest.raises(InvalidInput, match="not one of the suggestions"):
        store.decide("p0", "alice", "approve", item_id="LK-9999")
    with pytest.raises(InvalidInput):
        store.decide("p0", "alice", "delete")
    with pytest.raises(NotFound):
        store.decide("nope", "alice", "reject")

    [approved] = store.decide("p0", "alice", "approve", item_id="LK-0002")
    store.decide("p1", "alice", "reject")
    store.decide("p2", "bob", "approve", item_id="LK-0002")
    assert store.status_of("p0")[0] == "decided"
    assert [p.post_id for p, _ in store.reviews("LK-0002")] == ["p2", "p0"]  # newest first
    assert store.approved_post("p0") is not None and store.approved_post("p1") is None
    labels = {d.post_id: d for d in store.decisions()}
    assert {k: v.action for k, v in labels.items()} == {
        "p0": "approve",
        "p1": "reject",
        "p2": "approve",
    }
    assert labels["p0"].item_id == "LK-0002" and labels["p0"].image_path == demo_images[0]
    assert labels["p0"].decided_at == labels["p0"].at
    assert sorted(i for _, i in store.approved_pairs()) == ["LK-0002", "LK-0002"]

    # undo: alice's last (the reject of p1) goes, p1 is queued again
    [undo] = store.undo_last("alice")
    assert undo.action == "undo" and undo.post_id == "p1"
    assert store.status_of("p1")[0] == "queued"
    assert "p1" not in {d.post_id for d in store.decisions()}
    # a post rejected after its approval leaves the reviews
    store.decide("p2", "carol", "reject")
    assert [p.post_id for p, _ in store.reviews("LK-0002")] == ["p0"]
    # ... and undoing that rejection brings it back
    store.undo_last("carol")
    assert [p.post_id for p, _ in store.reviews("LK-0002")] == ["p2", "p0"]

    log = store.audit()
    assert [d.action for d in log][:2] == ["undo", "reject"]  # newest first
    assert [d.id for d in store.audit(moderator="alice", action="approve")] == [approved.id]
    counts = {c["moderator"]: c for c in store.counts_by_moderator()}
    assert counts["alice"]["approve"] == 1 and counts["alice"]["undo"] == 1
    assert counts["carol"]["total"] == 2
    assert store.count_decisions("alice", datetime.now(UTC) - timedelta(hours=1)) == 2
    with pytest.raises(NotFound):
        store.undo_last("nobody")


def test_batch_decision_over_near_duplicates_is_undone_as_one(
    store: ModerationStore, demo_images: list[Path]
) -> None:
    posts = make_posts(demo_images, 3)
    store.upsert_posts(posts)
    store.record_scores(
        [score_for("p0", 0.9), score_for("p1", 0.5, "p0"), score_for("p2", 0.4, "p0")]
    )
    head = store.next_posts("alice", 1)[0]
    assert head.post.post_id == "p0" and head.duplicates == ["p1", "p2"]
    made = store.decide("p0", "alice", "reject", with_duplicates=True)
    assert [d.post_id for d in made] == ["p0", "p1", "p2"]
    assert {d.batch_id for d in made[1:]} == {made[0].id}
    assert store.queue_size() == 0
    undone = store.undo_last("alice")
    assert sorted(d.post_id for d in undone) == ["p0", "p1", "p2"]
    assert store.queue_size() == 3


def test_the_decision_log_is_append_only_in_the_database(
    store: ModerationStore, demo_images: list[Path], settings: Settings
) -> None:
    queue(store, demo_images, 1)
    store.decide("p0", "alice", "reject")
    with sqlite3.connect(settings.db_url.removeprefix("sqlite:///")) as raw:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("UPDATE moderation_decisions SET action = 'approve'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("DELETE FROM moderation_decisions")
    assert [d.action for d in store.audit()] == ["reject"]


def test_accounts_hash_with_argon2id_and_lock_after_failures(
    store: ModerationStore, settings: Settings
) -> None:
    account = store.create_account("alice", "correct horse battery", "moderator")
    assert account.role == "moderator" and account.active
    with pytest.raises(ConfigError, match="exists already"):
        store.create_account("alice", "another long password", "moderator")
    with pytest.raises(ConfigError, match="role"):
        store.create_account("bob", "correct horse battery", "owner")
    with pytest.raises(ConfigError, match="10 characters"):
        store.create_account("bob", "short", "admin")
    with sqlite3.connect(settings.db_url.removeprefix("sqlite:///")) as raw:
        [(stored,)] = raw.execute("SELECT password_hash FROM moderation_accounts").fetchall()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored

    assert store.verify_password("alice", "correct horse battery") is not None
    assert store.verify_password("alice", "wrong") is None
    assert store.verify_password("mallory", "correct horse battery") is None
    for _ in range(5):
        store.verify_password("alice", "wrong")
    # locked now, even with the right password
    assert store.verify_password("alice", "correct horse battery") is None
    store.set_active("alice", False)
    assert [a.active for a in store.accounts()] == [False]


def test_sessions_are_stored_hashed_and_expire(store: ModerationStore, settings: Settings) -> None:
    store.create_account("alice", "correct horse battery", "admin")
    token = "a-random-session-token"
    store.create_session(hash_token(token), "alice", "csrf-1", timedelta(hours=8))
    row = store.session(hash_token(token), timedelta(hours=8))
    assert row is not None
    assert (row.username, row.role, row.csrf_token) == ("alice", "admin", "csrf-1")
    with sqlite3.connect(settings.db_url.removeprefix("sqlite:///")) as raw:
        stored = [r[0] for r in raw.execute("SELECT token_sha256 FROM moderation_sessions")]
    assert stored == [hash_token(token)] and token not in stored
    assert store.session(hash_token("other"), timedelta(hours=8)) is None
    store.create_session(hash_token("gone"), "alice", "csrf-2", timedelta(seconds=-1))
    assert store.session(hash_token("gone"), timedelta(hours=8)) is None
    store.delete_session(hash_token(token))
    assert store.session(hash_token(token), timedelta(hours=8)) is None


def test_ingest_cursors(store: ModerationStore) -> None:
    assert store.get_cursor("hashtag:dress") is None
    store.set_cursor("hashtag:dress", "QVFIUmx1")
    store.set_cursor("hashtag:dress", "QVFIUmx2")
    assert store.get_cursor("hashtag:dress") == "QVFIUmx2"
    store.set_cursor("hashtag:dress", None)
    assert store.get_cursor("hashtag:dress") is None
