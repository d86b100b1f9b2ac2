"""Two small ASGI middlewares every response and every state-changing request pass:

- `SecurityHeaders`: no framing by another site (``frame-ancestors 'none'`` and
  ``X-Frame-Options: DENY``), no MIME sniffing, no referrer to other sites, and a
  Content-Security-Policy for what has none of its own: our server-rendered pages may
  load nothing but their own stylesheet (by hash) and post forms only to us.
- `CrossOriginGuard`: a POST/PUT/PATCH/DELETE made by a browser on behalf of another
  site is refused with 403 (the login form included: no login CSRF). Browsers say where a
  request comes from in ``Sec-Fetch-Site``, or else in ``Origin`` (compared with
  ``Host``); a request with neither is not from a browser page and passes, as does one
  carrying its own ``Authorization`` (no ambient cookie to abuse). The design of Go's
  ``net/http.CrossOriginProtection``; stateless, so any number of API replicas agree.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noctis.api.auth.pages import STYLE_HASH

PAGE_CSP = (
    "default-src 'none'; "
    f"style-src '{STYLE_HASH}'; "
    "img-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'"
)
# FastAPI's /docs and /redoc load Swagger UI and ReDoc from their CDN with an inline
# bootstrap script: only framing is restricted there (they are behind login).
DOCS_CSP = "frame-ancestors 'none'"
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_COMMON = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in ("/docs", "/redoc", "/docs/oauth2-redirect")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _COMMON if n not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", _policy(headers, docs)))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _policy(headers: list[tuple[bytes, bytes]], docs: bool) -> bytes:
    if docs:
        return DOCS_CSP.encode()
    content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
    return (PAGE_CSP if content_type.startswith(b"text/html") else OTHER_CSP).encode()


class CrossOriginGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        unsafe = scope["type"] == "http" and scope["method"] not in _SAFE_METHODS
        if unsafe and is_cross_origin(dict(scope["headers"])):
            await _forbidden(send)
            return
        await self.app(scope, receive, send)


def is_cross_origin(headers: dict[bytes, bytes]) -> bool:
    """True for a browser request sent on behalf of another origin."""
    if b"authorization" in headers:
        return False
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None:
        return False
    return urlsplit(origin.decode("latin-1")).netloc != headers.get(b"host", b"").decode("latin-1")


async def _forbidden(send: Send) -> None:
    body = b"cross-origin request refused: this form or call did not come from this site\n"
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
