"""Instagram Graph API connector: hashtag search → recent media; media the business is tagged in.

The documented wire format (Instagram Graph API, "Instagram API with Facebook Login"):

* ``GET /ig_hashtag_search?user_id={ig-user-id}&q={tag}`` → ``{"data": [{"id": "178..."}]}``
* ``GET /{ig-hashtag-id}/recent_media?user_id={ig-user-id}&fields=...`` → a page of IG Media
  (at most 50, newest first; ``username`` is not available on hashtag media)
* ``GET /{ig-user-id}/tags?fields=...`` → a page of the IG Media the account is tagged in
* a page is ``{"data": [...], "paging": {"cursors": {"before", "after"}, "next": URL}}``; the
  last page has no ``paging.next``
* an error is an HTTP 4xx/5xx with ``{"error": {"message", "type", "code", "error_subcode",
  "fbtrace_id"}}``; codes 4 (app), 17 (user), 32 (page) and 613 (custom) are rate limits, 1
  and 2 temporary outages (as is an error marked ``"is_transient": true``, HTTP 429 or 5xx):
  those are retried with exponential back-off up to a cap, then :class:`RateLimited` says so;
  anything else (190: token expired, 10/200-299: permission, 100: bad parameter) fails at once
  with Graph's message.

Paging uses the ``after`` cursor against our own ``api_base`` (never the ``next`` URL, so the
token is only ever sent to the configured host). After every page is stored the ``after``
cursor is saved (``ingest_cursors``): a crawl interrupted by an error or ``max_pages`` resumes
after the last stored page; a crawl that reached the end clears its cursor, so the next run
starts again from the newest posts (known ones are counted as duplicates, not re-downloaded).

The access token comes from ``LOOKALIKE_INSTAGRAM_TOKEN`` and is sent as the documented
``access_token`` query parameter; it never appears in a log line, an error message or a stored
row (URLs are logged without their query, and every message is scrubbed of it).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lookalike.core.errors import (
    ConfigError,
    InvalidInput,
    LookalikeError,
    NotFound,
    TooLarge,
    Unavailable,
)
from lookalike.moderation.importer import MAX_IMAGE_BYTES, PostBatch, parse_timestamp, store_image
from lookalike.moderation.posts import ImportResult, Post

if TYPE_CHECKING:
    from pathlib import Path

    from lookalike.moderation.store import ModerationStore

__all__ = [
    "DEFAULT_API_BASE",
    "HASHTAG_FIELDS",
    "RATE_LIMIT_CODES",
    "TAGGED_FIELDS",
    "TOKEN_ENV",
    "Crawl",
    "GraphAPIError",
    "GraphClient",
    "IngestResult",
    "RateLimited",
    "download",
    "hashtag_edge",
    "ingest",
    "media_to_post",
    "tagged_edge",
    "token_from_env",
]

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://graph.facebook.com/v21.0"
TOKEN_ENV = "LOOKALIKE_INSTAGRAM_TOKEN"
USER_ID_ENV = "LOOKALIKE_INSTAGRAM_USER_ID"
# Hashtag media do not return ``username`` (Graph refuses the field there).
HASHTAG_FIELDS = "id,caption,media_type,media_url,permalink,timestamp"
TAGGED_FIELDS = "id,caption,media_type,media_url,permalink,timestamp,username"
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
TEMPORARY_CODES = frozenset({1, 2})
PAGE_LIMIT = 50  # the documented maximum of recent_media
PHOTO_TYPES = frozenset({"IMAGE", "CAROUSEL_ALBUM"})


class GraphAPIError(LookalikeError):
    """Graph answered with its error body; ``code``/``subcode``/``fbtrace_id`` as it sent them."""

    status = 502
    code = "instagram_error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        graph_code: int | None = None,
        subcode: int | None = None,
        error_type: str | None = None,
        fbtrace_id: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.http_status, self.graph_code, self.subcode = http_status, graph_code, subcode
        self.error_type, self.fbtrace_id, self.transient = error_type, fbtrace_id, transient

    @property
    def retryable(self) -> bool:
        return (
            self.transient
            or self.graph_code in RATE_LIMIT_CODES
            or self.graph_code in TEMPORARY_CODES
            or self.http_status == 429
            or self.http_status >= 500
        )


class RateLimited(Unavailable):
    """Still rate-limited (or down) after the last retry."""

    code = "instagram_rate_limited"


def token_from_env(environ: dict[str, str] | None = None) -> str:
    token = (environ if environ is not None else os.environ).get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"set {TOKEN_ENV} to an Instagram Graph API access token")
    return token


@dataclass
class GraphClient:
    """A minimal Graph API client: GET with the token, error bodies parsed, back-off retries.

    Retries wait ``backoff_s · 2^attempt`` (capped at ``max_backoff_s``, with up to 10 % jitter)
    for at most ``max_retries`` retries; ``sleep`` is ``time.sleep``.
    """

    token: str = field(repr=False)  # never in a repr, a log line or an error
    user_id: str
    api_base: str = DEFAULT_API_BASE
    max_retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 120.0
    timeout_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigError(f"no Instagram access token (set {TOKEN_ENV})")
        if not self.user_id:
            raise ConfigError(f"no Instagram business account id (--user-id or {USER_ID_ENV})")
        scheme = urllib.parse.urlsplit(self.api_base).scheme
        if scheme not in ("http", "https"):
            raise InvalidInput(f"api base {self.api_base!r} is not an http(s) URL")
        self.api_base = self.api_base.rstrip("/")
        self.requests = 0

    def scrub(self, text: str) -> str:
        """``text`` with the token (and its URL-quoted form) replaced by ``***``."""
        for form in {self.token, urllib.parse.quote(self.token, safe="")}:
            text = text.replace(form, "***")
        return text

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET ``api_base/path`` (``params`` plus the token); retries rate limits and outages."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = f"{self.api_base}/{path.lstrip('/')}"
        full = f"{url}?{urllib.parse.urlencode({**query, 'access_token': self.token})}"
        for attempt in range(self.max_retries + 1):
            try:
                return self._once(full)
            except GraphAPIError as exc:
                if not exc.retryable:
                    raise
                if attempt == self.max_retries:
                    raise RateLimited(
                        f"Instagram Graph API still refused {path} after {self.max_retries} "
                        f"retries with back-off: {exc.message}"
                    ) from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                delay *= 1 + 0.1 * random.random()
                log.warning(
                    "instagram %s: %s (code %s); retry %d of %d in %.2fs",
                    path, exc.message, exc.graph_code, attempt + 1, self.max_retries, delay,
                )  # fmt: skip
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, full_url: str) -> dict[str, Any]:
        self.requests += 1
        request = urllib.request.Request(full_url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read(16 * 1024 * 1024)
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(1024 * 1024), exc.code
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GraphAPIError(
                self.scrub(f"cannot reach the Instagram Graph API: {reason}"), http_status=599
            ) from None
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise GraphAPIError(
                f"Instagram Graph API answered HTTP {status} with a body that is not JSON",
                http_status=status if status >= 400 else 502,
            )
        error = doc.get("error")
        if status >= 400 or isinstance(error, dict):
            error = error if isinstance(error, dict) else {}
            code = error.get("code")
            subcode = error.get("error_subcode")
            raise GraphAPIError(
                self.scrub(
                    f"Instagram Graph API error {code}"
                    + (f"/{subcode}" if subcode is not None else "")
                    + f" (HTTP {status}): {str(error.get('message') or 'no message')[:300]}"
                    + (f" [fbtrace_id {error['fbtrace_id']}]" if error.get("fbtrace_id") else "")
                ),
                http_status=status,
                graph_code=code if isinstance(code, int) else None,
                subcode=subcode if isinstance(subcode, int) else None,
                error_type=error.get("type"),
                fbtrace_id=error.get("fbtrace_id"),
                transient=error.get("is_transient") is True,
            )
        return doc

    def hashtag_id(self, tag: str) -> str:
        """The IG Hashtag id of ``tag`` (with or without the leading ``#``)."""
        name = tag.strip().lstrip("#")
        if not name or any(c.isspace() for c in name):
            raise InvalidInput(f"hashtag {tag!r} must be one word")
        doc = self.get("ig_hashtag_search", {"user_id": self.user_id, "q": name})
        data = doc.get("data") or []
        if not data or not isinstance(data[0], dict) or not data[0].get("id"):
            raise NotFound(f"Instagram knows no hashtag #{name}")
        return str(data[0]["id"])


@dataclass(frozen=True)
class Crawl:
    """One edge to page through, and the name its resumable cursor is stored under."""

    name: str
    path: str
    params: dict[str, Any]
    source: str


def hashtag_edge(client: GraphClient, tag: str, store: ModerationStore | None = None) -> Crawl:
    """The recent-media crawl of ``tag``. Graph allows 30 distinct hashtag searches a week, so
    with a ``store`` the hashtag's id (static and global) is looked up once and kept there."""
    name = tag.strip().lstrip("#").lower()
    key = f"instagram:hashtag-id:{name}"
    hashtag = store.get_cursor(key) if store is not None else None
    if not hashtag:
        hashtag = client.hashtag_id(name)
        if store is not None:
            store.set_cursor(key, hashtag)
    return Crawl(
        name=f"instagram:hashtag:{name}",
        path=f"{hashtag}/recent_media",
        params={"user_id": client.user_id, "fields": HASHTAG_FIELDS, "limit": PAGE_LIMIT},
        source=f"instagram:#{name}",
    )


def tagged_edge(client: GraphClient) -> Crawl:
    return Crawl(
        name=f"instagram:tags:{client.user_id}",
        path=f"{client.user_id}/tags",
        params={"fields": TAGGED_FIELDS, "limit": PAGE_LIMIT},
        source="instagram:tagged",
    )


def pages(
    client: GraphClient, crawl: Crawl, after: str | None, max_pages: int | None
) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
    """(media of one page, the cursor after it or None on the last page), from ``after`` on."""
    count = 0
    while max_pages is None or count < max_pages:
        doc = client.get(crawl.path, {**crawl.params, "after": after})
        data = doc.get("data")
        if not isinstance(data, list):
            raise GraphAPIError(
                f"Instagram Graph API page of {crawl.path} has no data list", http_status=502
            )
        paging = doc.get("paging") if isinstance(doc.get("paging"), dict) else {}
        cursors = paging.get("cursors") if isinstance(paging.get("cursors"), dict) else {}
        nxt = cursors.get("after") if paging.get("next") else None
        count += 1
        yield [m for m in data if isinstance(m, dict)], (str(nxt) if nxt else None)
        if not nxt:
            return
        after = str(nxt)


def media_to_post(media: dict[str, Any], source: str) -> tuple[Post, str | None]:
    """The post of one IG Media object, and why it has no photo to score (or None)."""
    media_type = str(media.get("media_type") or "IMAGE").upper()
    url = media.get("media_url")
    reason = None
    try:
        timestamp = parse_timestamp(media.get("timestamp"))
    except InvalidInput as exc:
        timestamp, reason = None, exc.message
    if media_type not in PHOTO_TYPES:
        reason = f"{media_type.lower()} post: no photo to score"
    elif not url:
        reason = "no media_url (copyrighted or removed media)"
    post = Post(
        post_id=f"ig:{media['id']}",
        source=source,
        media_type=media_type,
        caption=str(media.get("caption") or ""),
        author=str(media.get("username") or ""),
        permalink=media.get("permalink") or None,
        timestamp=timestamp,
        media_url=str(url) if url else None,
    )
    return post, reason


def download(url: str, *, max_bytes: int = MAX_IMAGE_BYTES, timeout_s: float = 30.0) -> bytes:
    """The bytes at an http(s) URL, at most ``max_bytes`` (a bigger file is ``TooLarge``)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise InvalidInput("media URL is not http(s)")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise Unavailable(f"media download failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise Unavailable(f"media download failed: {getattr(exc, 'reason', exc)}") from None
    if len(data) > max_bytes:
        raise TooLarge(f"media is over {max_bytes >> 20} MiB")
    return data


@dataclass(frozen=True)
class IngestResult:
    crawl: str
    pages: int
    media: int
    imported: ImportResult
    finished: bool  # reached the last page (the cursor was cleared)
    resumed_from: str | None


def ingest(
    client: GraphClient,
    crawl: Crawl,
    store: ModerationStore,
    media_dir: Path,
    *,
    max_pages: int | None = None,
    fetch: Callable[[str], bytes] = download,
    on_page: Callable[[int, ImportResult], None] | None = None,
) -> IngestResult:
    """Page through ``crawl`` from its stored cursor, storing each page's posts and then the
    cursor after it (module docstring). New photos are downloaded and decoded safely; an
    unreadable one, a video or a post without media is recorded as rejected with the reason."""
    start = store.get_cursor(crawl.name)
    if start:
        log.info("instagram %s: resuming after the stored cursor", crawl.name)
    batch = PostBatch(store)
    seen = count = 0
    finished = False
    for media, after in pages(client, crawl, start, max_pages):
        for item in media:
            if not item.get("id"):
                batch.count(ImportResult(rejected=1, reasons=["media without an id"]))
                continue
            post, reason = media_to_post(item, crawl.source)
            if batch.is_known(post.post_id):
                batch.count(ImportResult(duplicates=1))
                continue
            stored = None
            if reason is None and post.media_url:
                try:
                    stored = store_image(fetch(post.media_url), media_dir)
                except LookalikeError as exc:
                    reason = f"unreadable image: {client.scrub(exc.message)}"
            batch.add(post, stored, reason)
        result = batch.flush()
        seen += len(media)
        count += 1
        store.set_cursor(crawl.name, after)
        finished = after is None
        log.info(
            "instagram %s: page %d, %d media, %d new so far",
            crawl.name, count, len(media), result.added,
        )  # fmt: skip
        if on_page is not None:
            on_page(count, result)
    return IngestResult(crawl.name, count, seen, batch.result, finished, start)
