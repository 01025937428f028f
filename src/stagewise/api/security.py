"""Security headers on every response of `stagewise server`.

The dashboard holds a token that can abort or promote a production delivery,
so a page of it must never run script it did not ship, be framed by another
site (clickjacking a "promote fully" button), or leak its URLs to other
origins. The policy is therefore strict: scripts, styles, images and
connections from the server itself only — no inline script, no `eval` — and
no framing at all. This is a plain ASGI middleware, not Starlette's
`BaseHTTPMiddleware`, so that the server-sent event stream passes through
unbuffered.

FastAPI's own `/docs` and `/redoc` pages load Swagger UI and ReDoc from a CDN
and bootstrap them with an inline script; they get a policy that allows
exactly that (and still no framing), since the strict one would only leave a
blank page. The dashboard never links to them.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
"""For everything the server serves: only its own files; no inline script, no eval, no framing."""

DOCS_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
    "font-src https://fonts.gstatic.com",
    "connect-src 'self'",
    "worker-src blob:",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
"""For FastAPI's interactive API pages only, which need their CDN and an inline bootstrap."""

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


class SecurityHeaders:
    """Adds the policy headers to every HTTP response; leaves any the route set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope.get("path") in DOCS_PATHS else CONTENT_SECURITY_POLICY
        extra = ((b"content-security-policy", policy.encode()), *COMMON_HEADERS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
