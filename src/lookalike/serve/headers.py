"""Security headers on every answer: a strict CSP on HTML pages, ``nosniff`` everywhere.

The pages (``/``, ``/items/{id}``, ``/docs``) load only their own files from ``/static`` and
``/docs-assets``; no inline script or style attribute is left in them, so the policy can be
``'self'`` only, and a catalog title or URL that slips HTML into a page cannot run script.
Answers that are not HTML (JSON, images, metrics) get a policy that allows nothing at all:
they are never meant to render as a document, and if a browser is tricked into it, nothing
loads. Framing is refused both ways (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``
for older browsers), and the ``Referer`` leaves the origin only as the origin.

A pure ASGI middleware (the house pattern of ``serve.limits``): it touches only the
``http.response.start`` message, and leaves a header a route set itself alone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_POLICY", "PAGE_POLICY", "SecurityHeaders"]

# blob: for the shopper's photo preview (URL.createObjectURL); data: for Swagger UI's icons.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
API_POLICY = "default-src 'none'; frame-ancestors 'none'"

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
)


class SecurityHeaders:
    """Add CSP, ``X-Content-Type-Options``, ``X-Frame-Options`` and ``Referrer-Policy``."""

    def __init__(
        self, app: ASGIApp, page_policy: str = PAGE_POLICY, api_policy: str = API_POLICY
    ) -> None:
        self.app = app
        self.page_policy = page_policy.encode()
        self.api_policy = api_policy.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next(
                    (v for n, v in headers if n.lower() == b"content-type"), b""
                ).lower()
                is_html = content_type.startswith(b"text/html")
                policy = self.page_policy if is_html else self.api_policy
                for name, value in (*_ALWAYS, (b"content-security-policy", policy)):
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
