"""The moderator's page and API, and published photo reviews.

Pages: ``/moderation/login`` (public; form POST with a CSRF token), ``/moderation`` (the queue;
moderator), ``/moderation/admin`` (the audit log; admin), ``POST /moderation/logout``.

API (moderator unless noted; a session cookie needs ``X-CSRF-Token`` on every POST):

- ``GET /v1/moderation/session``: who is signed in, the CSRF token, decisions this session and
  per hour, the queue's size.
- ``GET /v1/moderation/queue?n=2``: the next posts, leased to the caller (the page shows the
  first and preloads the others' photos).
- ``POST /v1/moderation/posts/{post_id}/decision`` ``{"action", "item_id", "with_duplicates"}``.
- ``POST /v1/moderation/undo``: undo the caller's last decision (a batch as a whole).
- ``GET /v1/moderation/posts/{post_id}/image``: a post's stored photo.
- ``GET /v1/moderation/audit`` and ``/v1/moderation/audit/counts`` (admin).

Public: ``GET /v1/items/{item_id}/reviews`` (approved posts, newest first) and
``GET /v1/reviews/{post_id}/photo`` (the photo of an approved post only; anything else 404).
Every answer names what served it (``served_by``, ``model_version``, ``fallback``).
"""

from __future__ import annotations

import html
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lookalike.catalog.rental_store import RentalStore
from lookalike.core.errors import InvalidInput, NotFound, Unavailable
from lookalike.moderation.posts import Decision, QueuedPost
from lookalike.serve.fit_routes import fit_reviews
from lookalike.serve.schemas import ErrorResponse
from lookalike.serve.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    end_session,
    login_csrf_ok,
    moderation_store,
    principal,
    require_csrf,
    start_session,
)

__all__ = ["build_moderation_router"]

STATIC = Path(__file__).parent / "static"
SERVED_BY = "moderation-store"
_NO_STORE = {"Cache-Control": "no-store"}


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject", "skip"]
    item_id: str | None = Field(None, max_length=64, description="approve: the chosen dress")
    with_duplicates: bool = Field(False, description="decide the queued near-duplicates too")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _decision_out(d: Decision) -> dict[str, Any]:
    return {
        "id": d.id,
        "post_id": d.post_id,
        "moderator": d.moderator,
        "action": d.action,
        "item_id": d.item_id,
        "at": _iso(d.at),
        "classifier_version": d.classifier_version,
        "model_version": d.model_version,
        "undoes": d.undoes,
        "batch_id": d.batch_id,
    }


def _queued_out(q: QueuedPost) -> dict[str, Any]:
    post = q.post
    return {
        "post_id": post.post_id,
        "image_url": f"/v1/moderation/posts/{post.post_id}/image",
        "caption": post.caption,
        "author": post.author,
        "permalink": post.permalink,
        "timestamp": _iso(post.timestamp),
        "source": post.source,
        "score": round(q.score, 4),
        "safe": q.safe,
        "matches": [
            {
                "item_id": i,
                "score": round(s, 4),
                "image_url": f"/v1/items/{i}/image",
                "url": f"/items/{i}",
            }
            for i, s in q.matches[:3]
        ],
        "duplicate_of": q.duplicate_of,
        "duplicates": q.duplicates,
        "classifier_version": q.classifier_version,
        "model_version": q.model_version,
    }


def _login_page(csrf: str, message: str = "") -> str:
    page = (STATIC / "moderation_login.html").read_text(encoding="utf-8")
    note = f'<p class="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    return page.replace("{{CSRF}}", html.escape(csrf, quote=True)).replace("{{MESSAGE}}", note)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_response(request: Request, message: str = "", status: int = 200) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    response = HTMLResponse(_login_page(csrf, message), status_code=status, headers=_NO_STORE)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/moderation/login",
    )
    return response


# Every route here names a post or an item, a decision to undo, or a filter: each may be absent.
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such post, item or decision"},
}


def _since(value: str | None) -> datetime | None:
    """An ISO 8601 time (a bare number is not one: it would read as seconds since 1970)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"since must be an ISO 8601 time, got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def build_moderation_router() -> APIRouter:
    router = APIRouter(responses=_RESPONSES)

    # ---- pages ------------------------------------------------------------------------------

    @router.get("/moderation/login", include_in_schema=False)
    async def login_page(request: Request) -> HTMLResponse:
        return _login_response(request)

    @router.post("/moderation/login", include_in_schema=False)
    async def login(
        request: Request,
        username: Annotated[str, Form(max_length=64)] = "",
        password: Annotated[str, Form(max_length=1024)] = "",
        csrf_token: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        if not login_csrf_ok(request.scope, csrf_token):
            return _login_response(request, "The form expired: please sign in again.", 400)
        try:
            store = await run_in_threadpool(moderation_store, request.app)
            account = await run_in_threadpool(store.verify_password, username.strip(), password)
            if account is None:
                return _login_response(request, "Wrong username or password.", 401)
            token, _ = await run_in_threadpool(start_session, request.app, account.username)
        except Unavailable:  # the page a moderator reads, not a JSON error body
            return _login_response(
                request, "Signing in is unavailable: the database cannot be reached. Try "
                "again in a minute.", 503,
            )  # fmt: skip
        target = "/moderation/admin" if account.role == "admin" else "/moderation"
        response = RedirectResponse(target, status_code=303, headers=_NO_STORE)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            # no Max-Age: the server's sliding idle expiry decides (a fixed cookie lifetime
            # would sign out a moderator who has been busy for 8 hours)
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/",
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/moderation/login")
        return response

    @router.post("/moderation/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        who = principal(request)
        await require_csrf(request, who)
        await run_in_threadpool(end_session, request.app, request.scope)
        response = RedirectResponse("/moderation/login", status_code=303, headers=_NO_STORE)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/moderation", include_in_schema=False)
    async def queue_page() -> FileResponse:
        return FileResponse(STATIC / "moderation.html", headers=_NO_STORE)

    @router.get("/moderation/admin", include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(STATIC / "moderation.html", headers=_NO_STORE)

    # ---- the moderator's API ----------------------------------------------------------------

    @router.get("/v1/moderation/session", tags=["moderation"])
    async def session_info(request: Request) -> dict[str, Any]:
        """Who is signed in, the CSRF token for POSTs, and the session's decision counter."""
        who = principal(request)
        store = await run_in_threadpool(moderation_store, request.app)
        now = datetime.now(UTC)
        started = who.session.created_at if who.session is not None else now
        count = await run_in_threadpool(store.count_decisions, who.name, started)
        queued = await run_in_threadpool(store.queue_size)
        hours = max((now - started).total_seconds() / 3600, 1 / 60)
        return {
            "username": who.name,
            "role": who.role,
            "via": who.via,
            "csrf_token": who.session.csrf_token if who.session is not None else None,
            "session_started": _iso(started),
            "decisions": count,
            "decisions_per_hour": round(count / hours, 1),
            "queued": queued,
            "served_by": SERVED_BY,
        }

    @router.get("/v1/moderation/queue", tags=["moderation"])
    async def next_posts(request: Request, n: Annotated[int, Query(ge=1, le=10)] = 2) -> Response:
        """The next ``n`` posts (leased to the caller); the first is shown, the rest preloaded."""
        who = principal(request)
        store = await run_in_threadpool(moderation_store, request.app)
        lease = request.app.state.serving.settings.moderation.lease_seconds
        posts = await run_in_threadpool(store.next_posts, who.name, n, lease)
        body = {
            "posts": [_queued_out(q) for q in posts],
            "model_version": posts[0].model_version if posts else None,
            "classifier_version": posts[0].classifier_version if posts else None,
            "served_by": SERVED_BY,
            "fallback": None,
        }

        return JSONResponse(body, headers=_NO_STORE)

    @router.post("/v1/moderation/posts/{post_id}/decision", tags=["moderation"])
    async def decide(request: Request, post_id: str, body: DecisionRequest) -> dict[str, Any]:
        """Approve (with the chosen ``item_id``), reject or skip a post; in one transaction."""
        who = principal(request)
        await require_csrf(request, who)
        store = await run_in_threadpool(moderation_store, request.app)
        made = await run_in_threadpool(
            lambda: store.decide(
                post_id,
                who.name,
                body.action,
                item_id=body.item_id,
                with_duplicates=body.with_duplicates,
            )
        )
        return {
            "decisions": [_decision_out(d) for d in made],
            "model_version": made[0].model_version,
            "classifier_version": made[0].classifier_version,
            "served_by": SERVED_BY,
            "fallback": None,
        }

    @router.post("/v1/moderation/undo", tags=["moderation"])
    async def undo(request: Request) -> dict[str, Any]:
        """Undo the caller's last decision (all posts decided with it)."""
        who = principal(request)
        await require_csrf(request, who)
        store = await run_in_threadpool(moderation_store, request.app)
        made = await run_in_threadpool(store.undo_last, who.name)
        ids = list(dict.fromkeys(d.post_id for d in made))
        back = [await run_in_threadpool(store.queued_post, i) for i in ids]
        return {
            "decisions": [_decision_out(d) for d in made],
            # the posts as they stand now (queued again, or their earlier decision)
            "posts": [{**_queued_out(q), "status": q.status} for q in back],
            "model_version": made[0].model_version,
            "served_by": SERVED_BY,
            "fallback": None,
        }

    @router.get("/v1/moderation/posts/{post_id}/image", tags=["moderation"])
    async def post_image(request: Request, post_id: str) -> FileResponse:
        store = await run_in_threadpool(moderation_store, request.app)
        post = await run_in_threadpool(store.post, post_id)
        return _photo(post.image_path, post_id, "private, max-age=3600")

    @router.get("/v1/moderation/audit", tags=["moderation"])
    async def audit(
        request: Request,
        moderator: Annotated[str | None, Query(max_length=64)] = None,
        action: Annotated[Literal["approve", "reject", "skip", "undo"] | None, Query()] = None,
        post_id: Annotated[str | None, Query(max_length=128)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The append-only decision log, newest first (admin)."""
        store = await run_in_threadpool(moderation_store, request.app)
        rows = await run_in_threadpool(
            lambda: store.audit(
                moderator=moderator,
                action=action,
                post_id=post_id,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )
        return {"decisions": [_decision_out(d) for d in rows], "served_by": SERVED_BY}

    @router.get(
        "/v1/moderation/audit/counts",
        tags=["moderation"],
        responses={400: {"model": ErrorResponse, "description": "`since` is not a time"}},
    )
    async def audit_counts(
        request: Request,
        since: Annotated[
            str | None,
            Query(max_length=40, description="ISO 8601 time, e.g. `2026-12-01T00:00:00Z`"),
        ] = None,
    ) -> dict[str, Any]:
        """Decisions per moderator and action (admin)."""
        store = await run_in_threadpool(moderation_store, request.app)
        rows = await run_in_threadpool(store.counts_by_moderator, _since(since))
        return {
            "moderators": [{**r, "last_at": _iso(r["last_at"])} for r in rows],
            "served_by": SERVED_BY,
        }

    # ---- published reviews (public) ---------------------------------------------------------

    @router.get("/v1/items/{item_id}/reviews", tags=["items"])
    async def reviews(
        request: Request,
        item_id: str,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
        like_me: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> dict[str, Any]:
        """Approved customer photos of a dress, newest first, and its rental (fit) reviews
        (most like the shopper first with ``like_me``); 404 for an item neither the catalog
        nor the rentals know."""
        settings = request.app.state.serving.settings
        rentals = RentalStore.for_settings(settings)
        try:
            await run_in_threadpool(request.app.state.serving.catalog.get_item, item_id)
        except NotFound:
            if not await run_in_threadpool(rentals.has_item, item_id):
                raise
        fit, fit_total = await run_in_threadpool(fit_reviews, rentals, item_id, like_me)
        store = await run_in_threadpool(moderation_store, request.app)
        rows = await run_in_threadpool(store.reviews, item_id, limit, offset)
        return {
            "item_id": item_id,
            "reviews": [
                {
                    "post_id": post.post_id,
                    "photo_url": f"/v1/reviews/{post.post_id}/photo",
                    "author": post.author,
                    "permalink": post.permalink,
                    "date": _iso(post.timestamp),
                    "approved_at": _iso(approved_at),
                }
                for post, approved_at in rows
            ],
            "fit_reviews": fit,
            "fit_reviews_total": fit_total,
            "served_by": SERVED_BY,
            "model_version": None,
            "fallback": None,
        }

    @router.get("/v1/reviews/{post_id}/photo", tags=["items"])
    async def review_photo(request: Request, post_id: str) -> FileResponse:
        """The photo of an approved post; 404 for any other post (unapproved ones stay private)."""
        store = await run_in_threadpool(moderation_store, request.app)
        post = await run_in_threadpool(store.approved_post, post_id)
        if post is None:
            raise NotFound(f"no published review photo {post_id!r}")
        return _photo(post.image_path, post_id, "public, max-age=300")

    return router


def _photo(path: Path | None, post_id: str, cache: str) -> FileResponse:
    if path is None or not path.is_file():
        raise NotFound(f"post {post_id!r} has no stored photo")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": cache})
