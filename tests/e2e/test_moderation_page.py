"""The moderator's page in real Chromium against a real `lookalike serve` on 127.0.0.1.

A moderator signs in, chooses a match with a digit key and approves with A, undoes with U,
rejects with R, approves the next post; the approved post then shows on the item's public
reviews and the admin's audit page lists every decision. The posts are demo catalog photos
(always present), queued through the store's public API; the server needs no model for this.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import extension_harness as harness
import pytest

from lookalike.core.settings import Settings
from lookalike.moderation.posts import Post, PostScore
from lookalike.moderation.store import ModerationStore

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
ITEMS = ("LK-0001", "LK-0002", "LK-0003")


@pytest.fixture(scope="module")
def moderation_server(
    chromium: Path, tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path
) -> Iterator[harness.ApiServer]:
    home = tmp_path_factory.mktemp("moderation-e2e")
    harness.run_cli(home, "catalog", "import", str(demo_catalog / "items.csv"))
    store = ModerationStore(Settings(home=home).db_url)
    store.create_schema()
    images = sorted((demo_catalog / "images").glob("*.jpg"))[:3]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    posts = [
        Post(
            f"ig-{i}",
            "test",
            caption=f"Wore it to a wedding #{i}",
            author=f"ana{i}",
            permalink=f"https://www.instagram.com/p/ig{i}/",
            timestamp=start + timedelta(days=i),
            image_path=p,
        )
        for i, p in enumerate(images)
    ]
    assert store.upsert_posts(posts).added == len(posts)
    matches = [(m, 0.8 - 0.1 * k) for k, m in enumerate(ITEMS)]
    versions = {"classifier_version": "prefilter:1", "model_version": "effnet_lite0:1"}
    store.record_scores(
        [
            PostScore(
                p.post_id,
                0.9,
                True,
                0.0,
                matches,
                None,
                **versions,
                enqueue=True,
                priority=float(10 - i),
            )
            for i, p in enumerate(posts)
        ]
    )
    store.create_account("alice", PASSWORD, "moderator")
    store.create_account("root", PASSWORD, "admin")
    store.create_account("bob", PASSWORD, "moderator")
    server = harness.start_server(home, home / "serve.log")
    try:
        yield harness.ApiServer(server.url, "", home)
    finally:
        server.stop()


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/moderation/login")
    page.fill("[data-testid=username]", username)
    page.fill("[data-testid=password]", PASSWORD)
    page.click("[data-testid=sign-in]")


def _shown(page: Any) -> str:
    page.wait_for_selector("[data-testid=post]:not([hidden])", timeout=15_000)
    return str(page.get_attribute("[data-testid=post]", "data-post-id"))


def _wait_shown_other_than(page: Any, post_id: str) -> str:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=post]')?.dataset.postId !== '{post_id}'",
        timeout=15_000,
    )
    return _shown(page)


def _wait_saved(page: Any, text: str) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=status]').textContent.includes('{text}')",
        timeout=15_000,
    )


def test_decide_with_the_keyboard_then_the_review_and_the_audit_log(
    shopper_context: Any, moderation_server: harness.ApiServer, artifacts_dir: Path
) -> None:
    base = moderation_server.url
    page = shopper_context.new_page()
    try:
        _sign_in(page, base, "alice")
        page.wait_for_url(f"{base}/moderation")
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        first = _shown(page)
        assert first == "ig-0"  # highest priority first
        assert page.locator("[data-testid=matches] li").count() == 3
        assert page.inner_text("[data-testid=caption]") == "Wore it to a wedding #0"
        # the next post's photo is preloaded before it is shown
        preloads = page.eval_on_selector_all(
            "link[rel=preload][as=image]", "els => els.map(e => e.getAttribute('href'))"
        )
        assert "/v1/moderation/posts/ig-1/image" in preloads
        page.screenshot(path=str(artifacts_dir / "moderation-page.png"))

        # ? opens the keys overlay, and closes it again
        page.keyboard.press("?")
        page.wait_for_selector("[data-testid=help][open]")
        assert "undo your last decision" in page.inner_text("[data-testid=help]")
        page.keyboard.press("?")
        page.wait_for_selector("[data-testid=help]:not([open])", state="attached")

        # choose the second suggestion, approve: the next post shows at once
        page.keyboard.press("2")
        assert page.get_attribute("[data-testid=match-2]", "class") == "chosen"
        page.keyboard.press("a")
        assert _wait_shown_other_than(page, first) == "ig-1"
        _wait_saved(page, "approve ig-0 saved")
        reviews = _get_json(f"{base}/v1/items/LK-0002/reviews")
        assert [r["post_id"] for r in reviews["reviews"]] == ["ig-0"]

        # undo brings the post back and unpublishes it; then reject it
        page.keyboard.press("u")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=post]')?.dataset.postId === 'ig-0'",
            timeout=15_000,
        )
        assert _get_json(f"{base}/v1/items/LK-0002/reviews")["reviews"] == []
        page.keyboard.press("r")
        assert _wait_shown_other_than(page, "ig-0") == "ig-1"
        _wait_saved(page, "reject ig-0 saved")

        # approve without choosing is refused on the page; with 1 it goes through
        page.keyboard.press("a")
        _wait_saved(page, "Choose the matching dress first")
        page.keyboard.press("1")
        page.keyboard.press("a")
        _wait_saved(page, "approve ig-1 saved")
        reviews = _get_json(f"{base}/v1/items/LK-0001/reviews")
        assert [r["post_id"] for r in reviews["reviews"]] == ["ig-1"]
        assert reviews["reviews"][0]["author"] == "ana1"
        with urllib.request.urlopen(base + reviews["reviews"][0]["photo_url"], timeout=10) as r:
            assert r.headers["content-type"] == "image/jpeg"
        # S skips the last post: the queue is empty for this moderator now
        assert _shown(page) == "ig-2"
        page.keyboard.press("s")
        page.wait_for_selector("[data-testid=post]", state="hidden")
        _wait_saved(page, "The queue is empty")
        # the session counter: approve (later undone), reject, approve, skip; undos not counted
        page.wait_for_function("() => document.querySelector('#count').textContent === '4'")

        # the admin's page lists every decision, newest first
        page.click("#logout-form button")
        page.wait_for_url(f"{base}/moderation/login")
        _sign_in(page, base, "root")
        page.wait_for_url(f"{base}/moderation/admin")
        page.wait_for_selector("[data-testid=audit] tbody tr", timeout=15_000)
        rows = page.eval_on_selector_all(
            "[data-testid=audit] tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
        )
        assert [(r[2], r[3], r[4], r[5]) for r in rows] == [
            ("alice", "skip", "ig-2", ""),
            ("alice", "approve", "ig-1", "LK-0001"),
            ("alice", "reject", "ig-0", ""),
            ("alice", "undo", "ig-0", ""),
            ("alice", "approve", "ig-0", "LK-0002"),
        ]
        counts = page.eval_on_selector_all(
            "[data-testid=counts] tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
        )
        assert counts[0][:6] == ["alice", "2", "1", "1", "1", "5"]
        # the log filters by action
        page.select_option("#audit-filter select[name=action]", "approve")
        page.click("#audit-filter button")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=audit] tbody tr')]"
            ".every(r => r.dataset.action === 'approve')"
        )
        assert page.locator("[data-testid=audit] tbody tr").count() == 2
        page.screenshot(path=str(artifacts_dir / "moderation-admin.png"))
    finally:
        page.close()


def test_the_moderation_page_needs_a_sign_in(
    shopper_context: Any, moderation_server: harness.ApiServer
) -> None:
    page = shopper_context.new_page()
    try:
        # a signed-out browser is sent to the sign-in form (an API client gets a JSON 401)
        page.goto(f"{moderation_server.url}/moderation")
        assert page.url == f"{moderation_server.url}/moderation/login"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{moderation_server.url}/moderation", timeout=10)
        assert refused.value.code == 401
        page.fill("[data-testid=username]", "alice")
        page.fill("[data-testid=password]", "not the password")
        page.click("[data-testid=sign-in]")
        page.wait_for_selector("[role=alert]")
        assert "Wrong username or password" in page.inner_text("[role=alert]")
        assert page.url.endswith("/moderation/login")
    finally:
        page.close()


def test_near_duplicates_are_decided_together_with_d(
    shopper_context: Any, moderation_server: harness.ApiServer, demo_catalog: Path
) -> None:
    assert moderation_server.home is not None
    store = ModerationStore(Settings(home=moderation_server.home).db_url)
    photo = sorted((demo_catalog / "images").glob("*.jpg"))[10]
    posts = [
        Post(f"dup-{c}", "test", caption="again", author="ana", image_path=photo) for c in "ab"
    ]
    store.upsert_posts(posts)
    assert store.near_duplicate_of("dup-b") == "dup-a"
    store.record_scores(
        [
            PostScore(
                p.post_id,
                0.9,
                True,
                0.0,
                [(ITEMS[0], 0.9)],
                dup,
                "prefilter:1",
                "effnet_lite0:1",
                enqueue=True,
                priority=prio,
            )
            for p, dup, prio in ((posts[0], None, 50.0), (posts[1], "dup-a", 49.0))
        ]
    )
    page = shopper_context.new_page()
    try:
        _sign_in(page, moderation_server.url, "bob")
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert _shown(page) == "dup-a"
        assert "1 near-duplicate(s) queued" in page.inner_text("[data-testid=dups]")
        page.keyboard.press("d")
        assert "decided together" in page.inner_text("[data-testid=dups]")
        page.keyboard.press("r")
        # the re-post is decided with it: the page moves past both
        assert _wait_shown_other_than(page, "dup-a") not in ("dup-a", "dup-b")
        _wait_saved(page, "reject dup-a saved")
        rows = store.audit(moderator="bob")
        assert sorted((d.post_id, d.action) for d in rows) == [
            ("dup-a", "reject"),
            ("dup-b", "reject"),
        ]
        assert len({d.batch_id or d.id for d in rows}) == 1  # one batch
        # U undoes the batch as a whole: the first of the group is shown again
        page.keyboard.press("u")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=post]')?.dataset.postId === 'dup-a'",
            timeout=15_000,
        )
        assert store.status_of("dup-a")[0] == store.status_of("dup-b")[0] == "queued"
    finally:
        page.close()
