"""Moderator sessions: a login cookie, its CSRF token, and who a request is.

- ``POST /moderation/login`` checks the password (Argon2id, ``ModerationStore``) and sets the
  cookie ``lk_session``: a random 256-bit token, ``HttpOnly``, ``SameSite=Strict``, ``Secure``
  when the request came over HTTPS, ``Path=/``. Only its SHA-256 is stored. The session ends
  after ``settings.moderation.session_idle_hours`` without a request (default 8 h) or at
  logout.
- Each session has a CSRF token; every state-changing request made with the cookie must send it
  (``X-CSRF-Token`` header or a ``csrf_token`` form field), else 403 ``csrf``. The page reads it
  from ``GET /v1/moderation/session`` (same origin only: no CORS is granted for it). The login
  form itself carries a pre-session token in a double-submit cookie.
- ``serve/access.py`` asks :func:`session_principal` about a request to a moderator or admin
  route that has no API key, so a valid cookie counts as its account's role there.

A request with an API key (role moderator or admin) needs no CSRF token: a key is not sent by
the browser on its own.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from starlette.types import Scope, Send

from lookalike.core.errors import LookalikeError
from lookalike.moderation.store import ModerationStore, SessionRow, hash_token

__all__ = [
    "CSRF_HEADER",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "CsrfRefused",
    "Principal",
    "has_session_cookie",
    "send_login_redirect",
    "moderation_store",
    "principal",
    "require_csrf",
    "session_principal",
    "start_session",
]

SESSION_COOKIE = "lk_session"
LOGIN_CSRF_COOKIE = "lk_login_csrf"
CSRF_HEADER = "x-csrf-token"
_lock = threading.Lock()


class CsrfRefused(LookalikeError):
    status = 403
    code = "csrf"


@dataclass(frozen=True)
class Principal:
    """Who a moderator request is: an account's session, or an API key."""

    name: str
    role: str
    via: str  # "session" or "api_key"
    session: SessionRow | None = None


def moderation_store(app: object) -> ModerationStore:
    """The app's ``ModerationStore`` (made and migrated on first use, then kept)."""
    state = app.state  # type: ignore[attr-defined]
    store = getattr(state, "moderation_store", None)
    if store is None:
        with _lock:
            store = getattr(state, "moderation_store", None)
            if store is None:
                store = ModerationStore.from_settings(state.serving.settings)
                store.create_schema()
                state.moderation_store = store
    return store


def _idle(app: object) -> timedelta:
    hours = app.state.serving.settings.moderation.session_idle_hours  # type: ignore[attr-defined]
    return timedelta(hours=hours)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name and v:
                    return v
    return None


# The moderator's HTML pages: a browser that is not signed in is sent to the sign-in form there.
_PAGES = ("/moderation", "/moderation/admin")


async def send_login_redirect(scope: Scope, send: Send) -> bool:
    """Answer a signed-out browser's GET of a moderator page with a redirect to the sign-in
    form (True), instead of the JSON 401 that API clients get (False: nothing sent)."""
    accept = b"".join(v for k, v in scope.get("headers", []) if k == b"accept")
    if (
        scope.get("method") != "GET"
        or scope.get("path") not in _PAGES
        or b"text/html" not in accept
    ):
        return False
    headers = [
        (b"location", b"/moderation/login"),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    return True


def has_session_cookie(scope: Scope) -> bool:
    return _cookie(scope, SESSION_COOKIE) is not None


def session_principal(scope: Scope) -> Principal | None:
    """The account behind the request's session cookie, or None (none, unknown, expired).

    Blocking (one indexed read, a write at most once a minute): call it off the event loop.
    """
    token = _cookie(scope, SESSION_COOKIE)
    if token is None or len(token) > 200:
        return None
    app = scope["app"]
    row = moderation_store(app).session(hash_token(token), _idle(app))
    if row is None:
        return None
    return Principal(row.username, row.role, "session", row)


def principal(request: Request) -> Principal:
    """Who is calling a moderator route (the access policy already let them in)."""
    state = request.scope.get("state", {})
    found = state.get("moderator_session")
    if isinstance(found, Principal):
        return found
    key = state.get("api_key")
    if key is not None:
        return Principal(f"key:{key.key_id}", key.role, "api_key")
    raise CsrfRefused("not signed in: log in at /moderation/login")  # unreachable via policy


async def require_csrf(request: Request, who: Principal) -> None:
    """403 ``csrf`` unless a cookie-authenticated request carries its session's CSRF token."""
    if who.via != "session" or who.session is None:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, who.session.csrf_token):
        raise CsrfRefused(
            "this request needs the session's CSRF token in the X-CSRF-Token header "
            "(reload the moderation page)"
        )


def start_session(app: object, username: str) -> tuple[str, int]:
    """A new session for ``username``: (cookie token, max-age seconds)."""
    token = secrets.token_urlsafe(32)
    idle = _idle(app)
    moderation_store(app).create_session(
        hash_token(token), username, secrets.token_urlsafe(24), idle
    )
    return token, int(idle.total_seconds())


def end_session(app: object, scope: Scope) -> None:
    token = _cookie(scope, SESSION_COOKIE)
    if token is not None and len(token) <= 200:
        moderation_store(app).delete_session(hash_token(token))


def login_csrf_ok(scope: Scope, sent: str | None) -> bool:
    expected = _cookie(scope, LOGIN_CSRF_COOKIE)
    return bool(expected and sent and hmac.compare_digest(expected, sent))
