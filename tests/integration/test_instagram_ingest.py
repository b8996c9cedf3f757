"""The Instagram Graph API connector against a fake Graph API: a real HTTP server on 127.0.0.1.

The fake speaks the documented wire format: ``/ig_hashtag_search`` → ``{"data": [{"id"}]}``,
``/{hashtag-id}/recent_media`` and ``/{ig-user-id}/tags`` pages of IG Media with
``paging.cursors.after`` and ``paging.next`` (absent on the last page), the error body
``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`` for a bad token (190),
a field hashtag media do not have (100) and rate limits (4, 17, 32, 613). Media URLs serve real
demo photos (and one corrupt file). Then the CLI commands, as subprocesses.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from live import LOOKALIKE, run_cli

# The store on SQLite and on the suite's PostgreSQL (a fresh database each), shared with the
# moderation API's tests.
from test_moderation_api import any_store  # noqa: F401

from lookalike.catalog import CatalogStore
from lookalike.core.settings import Settings
from lookalike.moderation.instagram import (
    GraphAPIError,
    GraphClient,
    RateLimited,
    hashtag_edge,
    ingest,
    tagged_edge,
)
from lookalike.moderation.posts import Post, PostScore
from lookalike.moderation.store import ModerationStore
from lookalike.search.evaluation import read_pairs

TOKEN = "EAAtestTOKEN-4f1c9a7e2b-never-logged"
USER_ID = "17841405309211844"
HASHTAG_ID = "17843853986012965"
RATE_LIMITS = {  # code: (HTTP status, message), as Graph sends them
    4: (403, "(#4) Application request limit reached"),
    17: (400, "(#17) User request limit reached"),
    32: (400, "(#32) Page request limit reached"),
    613: (400, "(#613) Calls to this api have exceeded the rate limit."),
    2: (500, "An unexpected error has occurred. Please retry your request later."),
}


@dataclass
class FakeGraph:
    """State of the fake Graph API; the handler below serves it."""

    photos: list[Path]
    page_size: int = 3
    hashtag_media: list[dict[str, Any]] = field(default_factory=list)
    tagged_media: list[dict[str, Any]] = field(default_factory=list)
    throttle: list[int] = field(default_factory=list)  # rate-limit codes to answer next
    expire_token_at_page: int | None = None  # answer 190 once on the Nth page request
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    media_hits: int = 0
    base: str = ""
    pages_served: int = 0

    def media(self, n: int, prefix: str, *, username: bool) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            item: dict[str, Any] = {
                "id": f"{prefix}{1000 + i}",
                "caption": f"my new dress #lookalike {i}",
                "media_type": "IMAGE",
                "media_url": f"{self.base}/media/{i % len(self.photos)}.jpg",
                "permalink": f"https://www.instagram.com/p/{prefix}{i}/",
                "timestamp": f"2026-11-{(i % 28) + 1:02d}T10:00:00+0000",
            }
            if username:
                item["username"] = f"fan_{i}"
            out.append(item)
        return out


def _error(message: str, code: int, etype: str = "OAuthException", sub: int | None = None) -> dict:
    body: dict[str, Any] = {"message": message, "type": etype, "code": code}
    if sub is not None:
        body["error_subcode"] = sub
    body["fbtrace_id"] = "AbCdEf123"
    return {"error": body}


def make_handler(graph: FakeGraph) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

        def _json(self, status: int, doc: dict) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            if parts and parts[0] == "v21.0":
                parts = parts[1:]
            if parts[:1] == ["media"]:
                graph.media_hits += 1
                name = parts[1]
                data = b"\xff\xd8\xff corrupt" if name == "corrupt.jpg" else (
                    graph.photos[int(name.split(".")[0])].read_bytes()
                )  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            graph.requests.append(("/".join(parts), {k: v for k, v in query.items()}))
            if query.get("access_token") != TOKEN:
                return self._json(
                    400, _error("Invalid OAuth access token - Cannot parse access token", 190)
                )
            if graph.throttle:
                code = graph.throttle.pop(0)
                status, message = RATE_LIMITS[code]
                return self._json(status, {"error": {**_error(message, code)["error"],
                                                     "is_transient": code == 2}})  # fmt: skip
            if parts == ["ig_hashtag_search"]:
                if query.get("user_id") != USER_ID:
                    return self._json(400, _error("(#100) The parameter user_id is required", 100))
                found = [{"id": HASHTAG_ID}] if query.get("q") == "lookalikedress" else []
                return self._json(200, {"data": found})
            if len(parts) == 2 and parts[1] in ("recent_media", "tags"):
                if parts[1] == "recent_media":
                    if parts[0] != HASHTAG_ID or query.get("user_id") != USER_ID:
                        return self._json(400, _error("Unsupported get request.", 100, sub=33))
                    media = graph.hashtag_media
                else:
                    if parts[0] != USER_ID:
                        return self._json(400, _error("Unsupported get request.", 100, sub=33))
                    media = graph.tagged_media
                fields = query.get("fields", "id").split(",")
                if parts[1] == "recent_media" and "username" in fields:
                    return self._json(
                        400, _error("(#100) Tried accessing nonexisting field (username)", 100)
                    )
                graph.pages_served += 1
                if graph.expire_token_at_page == graph.pages_served:
                    graph.expire_token_at_page = None
                    expired = "Error validating access token: Session has expired"
                    return self._json(400, _error(expired, 190, sub=463))
                limit = min(int(query.get("limit", 25)), graph.page_size)
                after = query.get("after")
                start = int(base64.b64decode(after)) if after else 0
                page = [{k: m[k] for k in fields if k in m} for m in media[start : start + limit]]
                end = start + len(page)
                doc: dict[str, Any] = {"data": page}
                if page:
                    doc["paging"] = {
                        "cursors": {
                            "before": base64.b64encode(str(start).encode()).decode(),
                            "after": base64.b64encode(str(end).encode()).decode(),
                        }
                    }
                    if end < len(media):
                        nxt = {**query, "after": doc["paging"]["cursors"]["after"]}
                        doc["paging"]["next"] = f"{graph.base}/{url.path.lstrip('/')}?" + urlencode(
                            nxt
                        )
                return self._json(200, doc)
            return self._json(400, _error("Unknown path components", 2500))

    return Handler


@pytest.fixture()
def graph(demo_images: list[Path]) -> Iterator[FakeGraph]:
    state = FakeGraph(photos=demo_images[:8])
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    state.hashtag_media = state.media(7, "h", username=False)
    state.tagged_media = state.media(4, "t", username=True)
    state.tagged_media[1]["media_type"] = "VIDEO"
    state.tagged_media[2]["media_url"] = f"{state.base}/media/corrupt.jpg"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def store(settings: Settings) -> ModerationStore:
    made = ModerationStore.from_settings(settings)
    made.create_schema()
    return made


def client_for(graph: FakeGraph, **kw: Any) -> GraphClient:
    waits: list[float] = kw.pop("waits", [])

    def sleep(seconds: float) -> None:  # really waits, and remembers how long
        waits.append(seconds)
        time.sleep(seconds)

    return GraphClient(
        token=TOKEN,
        user_id=USER_ID,
        api_base=f"{graph.base}/v21.0",
        backoff_s=kw.pop("backoff_s", 0.01),
        sleep=sleep,
        **kw,
    )


def page_requests(graph: FakeGraph) -> list[dict[str, str]]:
    return [q for path, q in graph.requests if path.endswith(("recent_media", "tags"))]


def test_hashtag_recent_media_to_the_end(
    graph: FakeGraph,
    any_store: ModerationStore,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = client_for(graph)
    crawl = hashtag_edge(client, "#LookalikeDress")
    assert crawl.path == f"{HASHTAG_ID}/recent_media"
    result = ingest(client, crawl, any_store, tmp_path / "media")
    assert (result.pages, result.media, result.finished) == (3, 7, True)
    assert (result.imported.added, result.imported.rejected) == (7, 0)
    # every page request carried user_id, the documented fields and the previous page's cursor
    pages = page_requests(graph)
    assert [q.get("after") for q in pages] == [None, "Mw==", "Ng=="]
    assert all(q["user_id"] == USER_ID and "username" not in q["fields"] for q in pages)
    post = any_store.post("ig:h1003")
    assert post.source == "instagram:#lookalikedress" and post.caption.endswith("#lookalike 3")
    assert post.permalink == "https://www.instagram.com/p/h3/" and post.timestamp.day == 4
    assert post.image_path is not None and post.image_path.is_file()
    assert any_store.get_cursor(crawl.name) is None  # reached the end: next run starts anew
    hits = graph.media_hits
    assert hashtag_edge(client, "lookalikedress", any_store) == crawl
    searches = sum(path == "ig_hashtag_search" for path, _ in graph.requests)
    assert hashtag_edge(client, "lookalikedress", any_store) == crawl  # the id is kept
    assert sum(path == "ig_hashtag_search" for path, _ in graph.requests) == searches
    again = ingest(client, crawl, any_store, tmp_path / "media")
    assert (again.imported.added, again.imported.duplicates) == (0, 7)
    assert graph.media_hits == hits  # known posts are not downloaded again


def test_unknown_hashtag_is_a_clear_error(graph: FakeGraph) -> None:
    from lookalike.core.errors import InvalidInput, NotFound

    with pytest.raises(NotFound, match="no hashtag #nosuchtag"):
        hashtag_edge(client_for(graph), "nosuchtag")
    with pytest.raises(InvalidInput, match="one word"):
        hashtag_edge(client_for(graph), "two words")


def test_tagged_media_keep_the_username_and_reject_what_cannot_be_scored(
    graph: FakeGraph, store: ModerationStore, tmp_path: Path
) -> None:
    client = client_for(graph)
    result = ingest(client, tagged_edge(client), store, tmp_path / "media")
    assert (result.pages, result.imported.added, result.imported.rejected) == (2, 2, 2)
    assert store.post("ig:t1000").author == "fan_0"
    assert store.post("ig:t1000").source == "instagram:tagged"
    status, reason = store.status_of("ig:t1001")
    assert status == "rejected_unreadable" and "video" in reason
    status, reason = store.status_of("ig:t1002")
    assert status == "rejected_unreadable" and reason.startswith("unreadable image")
    assert "username" in page_requests(graph)[0]["fields"].split(",")


def test_rate_limits_are_retried_with_back_off(
    graph: FakeGraph, store: ModerationStore, tmp_path: Path
) -> None:
    waits: list[float] = []
    client = client_for(graph, waits=waits, max_retries=5)
    crawl = hashtag_edge(client, "lookalikedress")
    graph.throttle = [4, 17, 32, 613, 2]
    result = ingest(client, crawl, store, tmp_path / "media")
    assert result.finished and result.imported.added == 7
    assert len(waits) == 5
    # exponential: each wait doubles (up to 10 % jitter)
    for i, w in enumerate(waits):
        assert 0.01 * 2**i <= w <= 0.011 * 2**i


def test_rate_limit_past_the_cap_is_a_clear_error_and_keeps_the_cursor(
    graph: FakeGraph, store: ModerationStore, tmp_path: Path
) -> None:
    client = client_for(graph, max_retries=2, max_backoff_s=0.02)
    crawl = hashtag_edge(client, "lookalikedress")
    ingest(client, crawl, store, tmp_path / "media", max_pages=1)
    cursor = store.get_cursor(crawl.name)
    assert cursor == "Mw=="
    graph.throttle = [17] * 10
    with pytest.raises(RateLimited, match=r"after 2 retries.*\(#17\) User request limit") as exc:
        ingest(client, crawl, store, tmp_path / "media")
    assert exc.value.status == 503 and isinstance(exc.value.__cause__, GraphAPIError)
    assert exc.value.__cause__.fbtrace_id == "AbCdEf123"
    assert store.get_cursor(crawl.name) == cursor


def test_an_interrupted_crawl_resumes_after_the_last_stored_page(
    graph: FakeGraph,
    any_store: ModerationStore,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = client_for(graph)
    crawl = hashtag_edge(client, "lookalikedress")
    graph.expire_token_at_page = 2  # Graph says the token expired on the second page
    with pytest.raises(GraphAPIError, match="190/463.*Session has expired") as exc:
        ingest(client, crawl, any_store, tmp_path / "media")
    assert not exc.value.retryable
    assert any_store.get_cursor(crawl.name) == "Mw=="
    first_requests = len(page_requests(graph))
    resumed = ingest(client, crawl, any_store, tmp_path / "media")
    assert resumed.resumed_from == "Mw==" and resumed.finished
    assert page_requests(graph)[first_requests]["after"] == "Mw=="
    assert (resumed.imported.added, resumed.imported.duplicates) == (4, 0)
    assert len(any_store.posts_to_score(100)) == 7


def test_the_token_is_never_logged_nor_stored(
    graph: FakeGraph, store: ModerationStore, settings: Settings, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    client = client_for(graph, max_retries=1)
    crawl = hashtag_edge(client, "lookalikedress")
    graph.throttle = [613]
    ingest(client, crawl, store, tmp_path / "media", max_pages=1)
    graph.throttle = [4, 4]
    with pytest.raises(RateLimited) as exc:
        ingest(client, crawl, store, tmp_path / "media")
    ingest(client, tagged_edge(client), store, tmp_path / "media")
    # a wrong token: Graph's own message, scrubbed of whatever token we sent
    bad = GraphClient(token=TOKEN + "x", user_id=USER_ID, api_base=graph.base)
    with pytest.raises(GraphAPIError, match="190") as bad_exc:
        bad.hashtag_id("lookalikedress")
    assert "retry 1 of 1" in caplog.text  # the back-off was logged
    assert TOKEN not in caplog.text and TOKEN not in str(exc.value)
    assert TOKEN not in bad_exc.value.message and TOKEN not in repr(client)
    db = Path(settings.db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert "ig:h1000" in dump and TOKEN not in dump


def test_scrub_hides_the_token_in_any_form() -> None:
    client = GraphClient(token="a/b+c=d", user_id="1", api_base="http://127.0.0.1:9")
    assert client.scrub("x a/b+c=d y a%2Fb%2Bc%3Dd") == "x *** y ***"


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_ingest_import_users_and_export_pairs(
    graph: FakeGraph, tmp_path: Path, demo_catalog: Path, demo_images: list[Path]
) -> None:
    home = tmp_path / "home"
    env = {"LOOKALIKE_INSTAGRAM_TOKEN": TOKEN}
    api = f"--api-base={graph.base}/v21.0"
    args = ["moderation", "ingest", "--hashtag", "lookalikedress", "--tagged", api,
            "--user-id", USER_ID, "--max-pages", "1", "--backoff", "0.01"]  # fmt: skip
    first = run_cli(home, *args, **env)
    assert first.returncode == 0, first.stderr
    assert "instagram:#lookalikedress: 1 pages, 3 media" in first.stdout
    assert "3 added" in first.stdout and "the next run resumes" in first.stdout
    graph.throttle = [4]
    second = run_cli(home, *args[:-4], "--backoff", "0.01", **env)
    assert second.returncode == 0, second.stderr
    assert "instagram:#lookalikedress: 2 pages, 4 media (resumed, to the end)" in second.stdout
    for out in (first, second):
        assert TOKEN not in out.stdout + out.stderr
    missing = run_cli(home, "moderation", "ingest", "--tagged", "--user-id", USER_ID, api)
    assert missing.returncode == 1 and "LOOKALIKE_INSTAGRAM_TOKEN" in missing.stderr

    # import: a JSONL export and its photos; the second run adds nothing
    folder = tmp_path / "photos"
    folder.mkdir()
    lines = []
    for i, photo in enumerate(demo_images[:3]):
        (folder / photo.name).write_bytes(photo.read_bytes())
        lines.append({"post_id": f"f{i}", "image": photo.name, "author": "ana"})
    lines.append({"post_id": "f9", "image": "gone.jpg"})
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines))
    imported = run_cli(home, "moderation", "import", str(jsonl), "--images", str(folder))
    assert imported.returncode == 0, imported.stderr
    assert "3 added, 0 already known, 1 rejected" in imported.stdout
    assert "gone.jpg" in imported.stdout
    again = run_cli(home, "moderation", "import", str(jsonl), "--images", str(folder))
    # a post whose photo is still missing stays rejected (one row), counted as known
    assert "0 added, 4 already known, 0 rejected" in again.stdout
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"sku": 1}\n')
    refused = run_cli(home, "moderation", "import", str(wrong))
    assert refused.returncode == 1 and "not a post export" in refused.stderr

    # users create: the password from stdin, never echoed
    password = "correct horse battery"
    made = run_cli_stdin(home, password + "\n", "moderation", "users", "create", "mia",
                         "--role", "admin", "--password-stdin")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created admin mia" in made.stdout and password not in made.stdout + made.stderr
    settings = Settings(home=home)
    store = ModerationStore.from_settings(settings)
    assert store.verify_password("mia", password).role == "admin"
    short = run_cli_stdin(
        home, "short\n", "moderation", "users", "create", "bo", "--password-stdin"
    )
    assert short.returncode == 1 and "10 characters" in short.stderr

    # export-pairs: approved posts with their chosen dress, read back by eval retrieval's reader
    catalog = CatalogStore(settings.db_url, settings.media_dir)
    catalog.create_schema()
    assert catalog.import_file(demo_catalog / "items.csv", demo_catalog).ok
    items = sorted(catalog.get_items([f"LK-{i:04d}" for i in range(1, 4)]))
    _approve(store, ["f0", "f1"], items, "mia")
    out = tmp_path / "pairs.csv"
    exported = run_cli(home, "moderation", "export-pairs", str(out), "--root", str(home))
    assert exported.returncode == 0, exported.stderr
    pairs = read_pairs(out)
    assert [(p.item_id, (home / p.person).is_file(), (home / p.product).is_file())
            for p in pairs] == [(items[0], True, True), (items[1], True, True)]  # fmt: skip
    assert all(not Path(p.person).is_absolute() for p in pairs)
    assert pairs[0].person == str(store.post("f0").image_path.relative_to(home))
    store.decide("f1", "mia", "reject")  # rejected after approval: no longer a pair
    assert (
        run_cli(home, "moderation", "export-pairs", str(out), "--root", str(home)).returncode == 0
    )
    assert [p.item_id for p in read_pairs(out)] == [items[0]]


def _approve(store: ModerationStore, ids: list[str], items: list[str], who: str) -> None:
    store.record_scores([
        PostScore(pid, 0.9, True, 0.0, [(it, 0.8) for it in items], None, "post_prefilter:1",
                  "effnet_lite0:1", True, 1.0)
        for pid in ids
    ])  # fmt: skip
    for pid, item in zip(ids, items, strict=False):
        store.decide(pid, who, "approve", item_id=item)


def run_cli_stdin(home: Path, stdin: str, *args: str):  # noqa: ANN201
    import os
    import subprocess

    env = {**os.environ, "LOOKALIKE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*LOOKALIKE, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_post_is_the_shared_record() -> None:
    # the connector builds the same Post the store and the scorer use
    from lookalike.moderation.instagram import media_to_post

    post, reason = media_to_post(
        {"id": "1", "media_type": "CAROUSEL_ALBUM", "media_url": "http://127.0.0.1/x.jpg",
         "timestamp": "2026-11-30T18:02:11+0000", "username": "ana"}, "instagram:tagged"
    )  # fmt: skip
    assert reason is None and isinstance(post, Post) and post.author == "ana"
    assert post.post_id == "ig:1" and post.timestamp.hour == 18
    _, reason = media_to_post({"id": "2", "media_type": "IMAGE"}, "s")
    assert "no media_url" in reason
