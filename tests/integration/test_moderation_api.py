"""The moderator's API on the real app: who may call what, sessions, CSRF, decisions, reviews.

The moderation and admin routes are read from ``create_app(...).routes`` (as in
test_route_classes.py), so a route added later is checked here without editing this file.
Posts are demo catalog photos, imported with the real importer and queued through the store's
public API (``record_scores(..., enqueue=True)``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from lookalike.catalog import CatalogStore
from lookalike.core.settings import Settings
from lookalike.moderation.importer import import_jsonl
from lookalike.moderation.posts import PostScore
from lookalike.moderation.store import ModerationStore
from lookalike.serve.access import ROUTE_ACCESS, RouteClass, flat_routes
from lookalike.serve.app import create_app
from lookalike.serve.auth import ApiKeyStore

PASSWORD = "correct horse battery"
ITEMS = ["LK-0001", "LK-0002", "LK-0003"]


def _score(
    post_id: str, priority: float, duplicate_of: str | None = None, items: list[str] = ITEMS
) -> PostScore:
    """What the pre-filter would say: queue it, with ``items`` as the suggested dresses."""
    return PostScore(
        post_id=post_id,
        score=0.9,
        safe=True,
        exposure=0.0,
        matches=[(m, 0.8 - 0.1 * k) for k, m in enumerate(items)],
        duplicate_of=duplicate_of,
        classifier_version="prefilter:1",
        model_version="effnet_lite0:1",
        enqueue=True,
        priority=priority,
    )


def _seed(settings: Settings, demo_catalog: Path, tmp: Path, n: int = 4) -> ModerationStore:
    images = sorted((demo_catalog / "images").glob("*.jpg"))[:n]
    lines = [
        {
            "post_id": f"post-{i}",
            "image": p.name,
            "caption": f"my dress #{i}",
            "author": f"ana{i}",
            "timestamp": f"2026-11-{10 + i:02d}T12:00:00+0000",
            "permalink": f"https://www.instagram.com/p/X{i}/",
        }
        for i, p in enumerate(images)
    ]
    # a re-post of the first photo: a near-duplicate
    lines.append({**lines[0], "post_id": "post-dup", "timestamp": "2026-11-20T12:00:00+0000"})
    (tmp / "posts.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    store = ModerationStore.from_settings(settings)
    store.create_schema()
    result = import_jsonl(
        store,
        tmp / "posts.jsonl",
        demo_catalog / "images",
        settings.var_dir / "moderation" / "media",
    )
    assert result.added == n + 1, result
    scores = []
    for i, post in enumerate(store.posts_to_score(100)):
        scores.append(_score(post.post_id, float(10 - i), store.near_duplicate_of(post.post_id)))
    store.record_scores(scores)
    assert store.queue_size() == n + 1
    for name, role in (("alice", "moderator"), ("bob", "moderator"), ("root", "admin")):
        store.create_account(name, PASSWORD, role)
    return store


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Path) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("moderation-home")
    settings = Settings(home=home)
    settings.var_dir.mkdir(parents=True)
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    catalog.create_schema()
    report = catalog.import_file(demo_catalog / "items.csv", demo_catalog)
    assert report.ok, report.rejected
    catalog.close()
    store = _seed(settings, demo_catalog, home)
    keys = ApiKeyStore(settings.db_url)
    keys.create_schema()
    secrets = {
        role: keys.create(f"{role}-key", role=role)[1]
        for role in ("extension", "moderator", "admin")
    }
    with TestClient(create_app(settings)) as client:
        yield {"client": client, "store": store, "keys": secrets, "home": home}


def _login(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    """A fresh client on the same app, signed in as ``username``."""
    browser = TestClient(client.app)
    page = browser.get("/moderation/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = browser.post(
        "/moderation/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return browser


def _csrf(browser: TestClient) -> str:
    return browser.get("/v1/moderation/session").json()["csrf_token"]


def _moderation_routes(client: TestClient) -> list[tuple[str, str, RouteClass]]:
    found = []
    for path, route in flat_routes(client.app.routes):
        if isinstance(route, Mount):
            continue
        access = ROUTE_ACCESS[path].route_class
        if access not in (RouteClass.MODERATOR, RouteClass.ADMIN):
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method not in ("HEAD", "OPTIONS"):
                found.append((path, method, access))
    return found


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "post-1", path)


def test_every_moderation_route_refuses_strangers_and_wrong_roles(app) -> None:
    client, keys = app["client"], app["keys"]
    routes = _moderation_routes(client)
    paths = {p for p, _, _ in routes}
    # the ones the issue names are all there; anything added later is enumerated with them
    for path in (
        "/moderation",
        "/moderation/admin",
        "/v1/moderation/queue",
        "/v1/moderation/posts/{post_id}/decision",
        "/v1/moderation/undo",
        "/v1/moderation/audit",
        "/v1/moderation/audit/counts",
    ):
        assert path in paths
    moderator = _login(client, "alice")
    admin = _login(client, "root")
    stale = TestClient(client.app, cookies={"lk_session": "not-a-session-token"})
    for path, method, access in routes:
        url, where = _url(path), f"{method} {path}"
        assert client.request(method, url).status_code == 401, where
        r = stale.request(method, url)
        assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired", where
        r = client.request(method, url, headers={"X-API-Key": keys["extension"]})
        assert r.status_code == 403, where
        if access is RouteClass.ADMIN:
            assert moderator.request(method, url).status_code == 403, where
            r = client.request(method, url, headers={"X-API-Key": keys["moderator"]})
            assert r.status_code == 403, where
            assert admin.request(method, url).status_code not in (401, 403), where
        elif method == "GET":
            assert moderator.request(method, url).status_code not in (401, 403), where
            assert admin.request(method, url).status_code not in (401, 403), where


def test_login_sets_a_strict_http_only_cookie_and_refuses_bad_passwords(app) -> None:
    client = TestClient(app["client"].app)
    page = client.get("/moderation/login")
    assert page.status_code == 200 and "csrf_token" in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    # no login CSRF token: refused before the password is looked at
    r = client.post(
        "/moderation/login",
        data={"username": "alice", "password": PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 400
    page = client.get("/moderation/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post(
        "/moderation/login",
        data={"username": "alice", "password": "wrong one!!", "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 401 and "lk_session" not in r.headers.get("set-cookie", "")
    browser = _login(app["client"], "alice")
    cookie = browser.cookies.get("lk_session")
    assert cookie and len(cookie) >= 40
    page = TestClient(app["client"].app)
    token = re.search(r'value="([^"]+)"', page.get("/moderation/login").text).group(1)
    r = page.post(
        "/moderation/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    header = r.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header
    # the token is stored hashed: the raw cookie value is nowhere in the database
    db = (app["home"] / "var" / "catalog.db").read_bytes()
    assert cookie.encode() not in db
    # logout needs the CSRF token too, then the cookie is dead
    assert browser.post("/moderation/logout", follow_redirects=False).status_code == 403
    r = browser.post(
        "/moderation/logout", headers={"X-CSRF-Token": _csrf(browser)}, follow_redirects=False
    )
    assert r.status_code == 303
    dead = TestClient(app["client"].app, cookies={"lk_session": cookie})
    assert dead.get("/v1/moderation/session").status_code == 401


def test_signing_in_while_the_database_is_gone_is_a_page_that_says_so(app) -> None:
    """A moderator at the login form while the database is unreachable: the form again, 503,
    with a sentence, not a JSON error body; once it is back the same form signs her in."""
    client = TestClient(app["client"].app)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/moderation/login").text)
    db = app["home"] / "var" / "catalog.db"
    db.rename(db.with_suffix(".away"))
    try:
        r = client.post(
            "/moderation/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token.group(1)},
            follow_redirects=False,
        )
    finally:
        db.with_suffix(".away").rename(db)
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert "database cannot be reached" in r.text and 'name="csrf_token"' in r.text
    assert "lk_session" not in r.headers.get("set-cookie", "")
    assert _login(app["client"], "alice").cookies.get("lk_session")


def test_state_changing_posts_need_the_csrf_token(app) -> None:
    browser = _login(app["client"], "bob")
    body = {"action": "skip"}
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        r = browser.post("/v1/moderation/posts/post-2/decision", json=body, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
        r = browser.post("/v1/moderation/undo", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
    assert not app["store"].audit(moderator="bob")  # nothing was recorded
    r = browser.post(
        "/v1/moderation/posts/post-2/decision", json=body, headers={"X-CSRF-Token": _csrf(browser)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["decisions"][0]["action"] == "skip"
    assert (
        browser.post("/v1/moderation/undo", headers={"X-CSRF-Token": _csrf(browser)}).status_code
        == 200
    )


def test_decisions_publish_reviews_and_fill_the_audit_log(app) -> None:
    client = app["client"]
    alice = _login(client, "alice")
    token = _csrf(alice)
    queue = alice.get("/v1/moderation/queue?n=3").json()
    assert queue["served_by"] and queue["model_version"] == "effnet_lite0:1"
    first = queue["posts"][0]
    assert [m["item_id"] for m in first["matches"]] == ITEMS
    assert alice.get(first["image_url"]).headers["content-type"] == "image/jpeg"
    post_id = first["post_id"]
    # approve needs a chosen match, and one of the suggestions
    r = alice.post(
        f"/v1/moderation/posts/{post_id}/decision",
        json={"action": "approve"},
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 400 and "choose" in r.json()["error"]["message"]
    r = alice.post(
        f"/v1/moderation/posts/{post_id}/decision",
        json={"action": "approve", "item_id": "LK-0999"},
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 400
    r = alice.post(
        f"/v1/moderation/posts/{post_id}/decision",
        json={"action": "approve", "item_id": "LK-0002"},
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 200, r.text
    assert r.json()["decisions"][0]["classifier_version"] == "prefilter:1"
    reviews = client.get("/v1/items/LK-0002/reviews").json()
    assert reviews["fit_reviews"] == []
    assert [x["post_id"] for x in reviews["reviews"]] == [post_id]
    photo = client.get(reviews["reviews"][0]["photo_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    # an unapproved post's photo is not public
    other = queue["posts"][1]["post_id"]
    assert client.get(f"/v1/reviews/{other}/photo").status_code == 404
    assert client.get("/v1/items/NO-SUCH-ITEM/reviews").status_code == 404
    # the session counter counts it
    assert alice.get("/v1/moderation/session").json()["decisions"] >= 1
    # an admin rejects it later: it disappears from the reviews
    root = _login(client, "root")
    r = root.post(
        f"/v1/moderation/posts/{post_id}/decision",
        json={"action": "reject"},
        headers={"X-CSRF-Token": _csrf(root)},
    )
    assert r.status_code == 200
    assert client.get("/v1/items/LK-0002/reviews").json()["reviews"] == []
    audit = root.get(f"/v1/moderation/audit?post_id={post_id}").json()["decisions"]
    assert [(d["moderator"], d["action"]) for d in audit] == [
        ("root", "reject"),
        ("alice", "approve"),
    ]
    counts = {
        r["moderator"]: r for r in root.get("/v1/moderation/audit/counts").json()["moderators"]
    }
    assert counts["alice"]["approve"] >= 1 and counts["root"]["reject"] >= 1


def test_near_duplicates_are_decided_together_and_undone_together(app) -> None:
    client, store = app["client"], app["store"]
    assert store.queued_post("post-dup").duplicate_of == "post-0"
    alice = _login(client, "alice")
    token = _csrf(alice)
    assert "post-dup" in store.queued_post("post-0").duplicates
    r = alice.post(
        "/v1/moderation/posts/post-0/decision",
        json={"action": "approve", "item_id": "LK-0001", "with_duplicates": True},
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 200
    assert {d["post_id"] for d in r.json()["decisions"]} == {"post-0", "post-dup"}
    assert {x["post_id"] for x in client.get("/v1/items/LK-0001/reviews").json()["reviews"]} == {
        "post-0",
        "post-dup",
    }
    r = alice.post("/v1/moderation/undo", headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert {p["post_id"] for p in r.json()["posts"]} == {"post-0", "post-dup"}
    # each post goes back to its earlier standing: the re-post to the queue, post-0 to the
    # admin's reject of the previous test (an undo never erases someone else's decision)
    status = {p["post_id"]: p["status"] for p in r.json()["posts"]}
    assert status == {"post-dup": "queued", "post-0": "decided"}
    assert client.get("/v1/items/LK-0001/reviews").json()["reviews"] == []


def test_an_api_key_of_the_moderator_role_works_without_a_cookie(app) -> None:
    client, keys = app["client"], app["keys"]
    r = client.get("/v1/moderation/queue", headers={"X-API-Key": keys["moderator"]})
    assert r.status_code == 200
    # a key is not ambient: no CSRF token needed
    post_id = r.json()["posts"][0]["post_id"]
    r = client.post(
        f"/v1/moderation/posts/{post_id}/decision",
        json={"action": "skip"},
        headers={"X-API-Key": keys["moderator"]},
    )
    assert r.status_code == 200 and r.json()["decisions"][0]["moderator"].startswith("key:")


# ---- the store on both databases: one transaction per decision, an append-only log ----------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModerationStore]:
    """An empty migrated store on SQLite, or in a fresh database of the suite's PostgreSQL."""
    if request.param == "sqlite":
        store = ModerationStore(Settings(home=tmp_path).db_url)
        store.create_schema()
        yield store
        return
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    server = make_url(request.getfixturevalue("postgres_url"))
    name = f"lk_moderation_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        store = ModerationStore(server.set(database=name).render_as_string(hide_password=False))
        store.create_schema()
        yield store
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _queue_two(store: ModerationStore, demo_catalog: Path) -> None:
    from lookalike.moderation.posts import Post

    images = sorted((demo_catalog / "images").glob("*.jpg"))[:2]
    posts = [
        Post(f"q{i}", "test", caption=f"#{i}", author="ana", image_path=p)
        for i, p in enumerate(images)
    ]
    assert store.upsert_posts(posts).added == 2
    store.record_scores([_score(p.post_id, 1.0, items=["LK-0001"]) for p in posts])


def _fail_status_updates(store: ModerationStore, post_id: str) -> None:
    """A real database failure at the status update of ``post_id`` (after the log row)."""
    import sqlalchemy as sa

    from lookalike.core.db import get_engine

    with get_engine(store.url).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION fail_decided_status() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'disk failed'; END; $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER fail_decided BEFORE UPDATE ON moderation_posts FOR EACH ROW "
                    f"WHEN (NEW.status = 'decided' AND NEW.post_id = '{post_id}') "
                    "EXECUTE FUNCTION fail_decided_status()"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER fail_decided BEFORE UPDATE ON moderation_posts "
                    f"WHEN NEW.status = 'decided' AND NEW.post_id = '{post_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'disk failed'); END"
                )
            )


def test_a_failure_mid_decision_leaves_nothing_behind(
    any_store: ModerationStore, demo_catalog: Path
) -> None:
    from lookalike.core.errors import LookalikeError

    store = any_store
    _queue_two(store, demo_catalog)
    _fail_status_updates(store, "q1")
    # q1 fails at its status update, after its log row was written: neither stays
    with pytest.raises(LookalikeError, match="disk failed"):
        store.decide("q1", "alice", "approve", item_id="LK-0001")
    assert store.audit(post_id="q1") == []
    assert store.status_of("q1")[0] == "queued"
    assert store.reviews("LK-0001") == []
    # a batch where the second post fails: the first one's decision is rolled back too
    store.record_scores([_score("q1", 0.5, "q0", items=["LK-0001"])])
    with pytest.raises(LookalikeError, match="disk failed"):
        store.decide("q0", "alice", "reject", with_duplicates=True)
    assert store.audit() == []
    assert store.status_of("q0")[0] == "queued"
    # the other post decides normally
    [made] = store.decide("q0", "alice", "approve", item_id="LK-0001")
    assert [p.post_id for p, _ in store.reviews("LK-0001")] == ["q0"]
    assert store.audit()[0].id == made.id


def test_a_decision_is_refused_while_the_sqlite_file_is_gone(
    tmp_path: Path, demo_catalog: Path
) -> None:
    """The database file deleted (or moved) under a running server: a pooled connection still
    holds the old file, so a decision would be written where nobody reads it again. It is
    refused with a 503 that says why, no empty database appears in its place, and once the
    file is back the decision goes through and stays."""
    from lookalike.core.errors import Unavailable

    settings = Settings(home=tmp_path)
    store = ModerationStore(settings.db_url)
    store.create_schema()
    _queue_two(store, demo_catalog)
    store.decide("q0", "alice", "reject")
    db = settings.var_dir / "catalog.db"
    db.rename(tmp_path / "moved.db")
    with pytest.raises(Unavailable, match="deleted or moved while the server ran") as refused:
        store.decide("q1", "alice", "reject")
    assert refused.value.status == 503
    assert not db.exists()  # no empty database was made at the path
    (tmp_path / "moved.db").rename(db)
    [made] = store.decide("q1", "alice", "reject")
    assert [d.post_id for d in store.audit()] == ["q1", "q0"] and store.audit()[0].id == made.id
    fresh = ModerationStore(settings.db_url)  # what a restarted server reads
    assert {d.post_id for d in fresh.audit()} == {"q0", "q1"}


def test_the_store_on_both_databases(any_store: ModerationStore, demo_catalog: Path) -> None:
    import sqlalchemy as sa

    from lookalike.core.db import get_engine

    store = any_store
    _queue_two(store, demo_catalog)
    assert store.upsert_posts([store.post("q0")]).duplicates == 1
    leased = store.next_posts("alice", 1)
    assert [q.post.post_id for q in leased] == ["q0"]
    assert [q.post.post_id for q in store.next_posts("bob", 2)] == ["q1"]
    store.decide("q0", "alice", "approve", item_id="LK-0001")
    store.decide("q0", "bob", "reject")  # rejected after approval: no longer published
    assert store.reviews("LK-0001") == []
    store.undo_last("bob")
    assert [p.post_id for p, _ in store.reviews("LK-0001")] == ["q0"]
    assert [d.action for d in store.decisions()] == ["approve"]
    assert [i for _, i in store.approved_pairs()] == ["LK-0001"]
    # the log refuses rewriting, whoever asks
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with get_engine(store.url).begin() as conn:
            conn.execute(sa.text("DELETE FROM moderation_decisions"))
    assert len(store.audit()) == 3
    store.create_account("carol", PASSWORD, "admin")
    assert store.verify_password("carol", PASSWORD).role == "admin"
    from datetime import timedelta

    from lookalike.moderation.store import hash_token

    store.create_session(hash_token("tok"), "carol", "csrf", timedelta(hours=8))
    live = store.session(hash_token("tok"), timedelta(hours=8), touch_after=timedelta(0))
    assert live is not None and (live.username, live.role) == ("carol", "admin")
    store.set_active("carol", False)  # deactivating ends the sessions
    assert store.session(hash_token("tok"), timedelta(hours=8)) is None
    store.set_cursor("tags:me", "QVFI")
    assert store.get_cursor("tags:me") == "QVFI"
    # ids no database can hold (NUL, too long) are unknown posts, not database errors
    from lookalike.core.errors import NotFound

    for bad in ("q0\x00", "q" * 300):
        with pytest.raises(NotFound):
            store.post(bad)
        with pytest.raises(NotFound):
            store.decide(bad, "alice", "reject")
        assert store.approved_post(bad) is None


def test_hostile_ids_get_a_404_not_a_500(app) -> None:
    client, keys = app["client"], app["keys"]
    moderator = {"X-API-Key": keys["moderator"]}
    for bad in ("%00", "x" * 300, "..%2F..%2Fetc%2Fpasswd"):
        assert client.get(f"/v1/reviews/{bad}/photo").status_code == 404
        assert client.get(f"/v1/items/{bad}/reviews").status_code == 404
        assert client.get(f"/v1/moderation/posts/{bad}/image", headers=moderator).status_code == 404
        r = client.post(
            f"/v1/moderation/posts/{bad}/decision", json={"action": "reject"}, headers=moderator
        )
        assert r.status_code == 404, r.text
    r = client.post(
        "/v1/moderation/posts/post-1/decision", json={"action": "delete"}, headers=moderator
    )
    assert r.status_code == 422 and "action" in r.text


@pytest.mark.shared_data
def test_reviews_carry_the_rental_fit_reviews_even_for_an_item_not_in_the_catalog(
    app, shared_data: Path
) -> None:
    from lookalike.catalog.rental_store import RentalStore
    from lookalike.catalog.rentals import read_checked_rentals

    client = app["client"]
    rentals = RentalStore.for_settings(Settings(home=app["home"]))
    rentals.create_schema()
    rows, _ = read_checked_rentals(shared_data / "rtr" / "fit_reviews.parquet", limit=300)
    assert rentals.import_rentals(rows, source="fit_reviews.parquet").added > 0
    item_id = str(rows.item_id[0])  # an RTR id, unknown to the catalog
    assert client.get(f"/v1/items/{item_id}").status_code == 404
    body = client.get(f"/v1/items/{item_id}/reviews").json()
    assert body["item_id"] == item_id and body["reviews"] == []
    assert body["fit_reviews_total"] == len(rentals.item_reviews(item_id)) > 0
    assert 0 < len(body["fit_reviews"]) <= body["fit_reviews_total"]
    mine = client.get(f"/v1/items/{item_id}/reviews?like_me=height:66,size:8").json()
    assert {"similarity", "reason"} <= set(mine["fit_reviews"][0])
    bad = client.get(f"/v1/items/{item_id}/reviews?like_me=shoe:9")
    assert bad.status_code in (400, 422) and "unknown field" in bad.text
    assert client.get("/v1/items/NO-SUCH-ITEM/reviews").status_code == 404
