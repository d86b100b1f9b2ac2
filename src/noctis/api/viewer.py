"""The OHIF viewer at ``/``: the prebuilt ``@ohif/app`` dist, our app-config.js, login first.

`mount(app, settings)` adds one catch-all GET route that never matches the API's own
prefixes (DICOMweb, REST, login, health, docs), so it may be mounted before or after them.
Paths that are files of the build are served as files; other extension-less paths are the
viewer's own routes (``/viewer?StudyInstanceUIDs=...``) and get ``index.html``. Without a
session, a browser asking for a page is sent to ``/login``; anything else gets 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import lru_cache
from html import escape
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from noctis.api.auth.pages import page
from noctis.api.security import Authenticator
from noctis.api.viewer_release import (  # noqa: F401 (re-exported)
    MARKER,
    OHIF_INTEGRITY,
    OHIF_VERSION,
    app_config,
    default_viewer_dir,
)
from noctis.settings import Settings

RESERVED_PREFIXES = (
    "/dicom-web",
    "/api",
    "/login",
    "/logout",
    "/auth",
    "/ui",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
)
# Icons and the web manifest carry nothing but OHIF's artwork, and browsers fetch the
# manifest without cookies: served to anyone.
PUBLIC_DIRS = ("assets/",)
PUBLIC_FILES = frozenset({"manifest.json", "favicon.ico"})
NO_CACHE = {"index.html", "app-config.js", "sw.js", "init-service-worker.js"}
_HASHED = re.compile(r"(^|\.)[0-9a-f]{16,}\.(js|css|wasm|woff2?)$")
MEDIA_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".xml": "application/xml",
}


# What OHIF needs and no more: its own scripts, WebAssembly codecs ('wasm-unsafe-eval'),
# workers (from its files and blob: URLs), images and fonts from data:/blob: URLs, inline
# styles (React and its UI kit set them), requests to this origin only; never framed.
_SCRIPT_SRC = "script-src 'self' 'wasm-unsafe-eval'"
VIEWER_CSP = "; ".join(
    [
        "default-src 'self'",
        _SCRIPT_SRC,
        "worker-src 'self' blob:",
        "child-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' data: blob:",
        "connect-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Scripts are served with the policy of the workers they may start: OHIF's image decoders
# (OpenJPEG, CharLS, libjpeg-turbo compiled with emscripten's embind) build functions with
# `new Function` as they load, in web workers; the page itself never needs eval.
WORKER_CSP = VIEWER_CSP.replace(_SCRIPT_SRC, _SCRIPT_SRC + " 'unsafe-eval'", 1)
_INLINE_SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.DOTALL | re.IGNORECASE)

# A missing path with one of these suffixes is a missing file (404), not a viewer route.
ASSET_SUFFIXES = set(MEDIA_TYPES) | {".map", ".txt", ".gz", ".jpg", ".gif", ".woff", ".ttf"}


def viewer_dir(settings: Settings) -> Path:
    return settings.viewer_dir or default_viewer_dir()


def installed_viewer_version(settings: Settings) -> str | None:
    try:
        marker = json.loads((viewer_dir(settings) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return str(marker.get("version")) if (viewer_dir(settings) / "index.html").is_file() else None


class ViewerRoute(Route):
    """A catch-all that leaves the API's prefixes to their own routes."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and is_reserved(scope["path"]):
            return Match.NONE, {}
        return super().matches(scope)


def is_reserved(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES)


def normalised(path: str) -> str | None:
    """The path without empty, ``.`` and ``..`` segments; None if it climbs above the root."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        else:
            segments.append(segment)
    return "/".join(segments)


def is_public(relative: str) -> bool:
    """Served without a login (`relative` already normalised)."""
    return relative.startswith(PUBLIC_DIRS) or relative in PUBLIC_FILES


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve the viewer at ``/`` (call after `noctis.api.auth.install`)."""
    root = viewer_dir(settings)
    config_js = app_config()

    async def viewer(request: Request) -> Response:
        # Judge the path the file system will see: `/assets/../index.html`, its
        # percent-encoded and double-slashed forms are `index.html`, not an asset.
        relative = normalised(request.path_params.get("path", ""))
        if relative is None or is_reserved("/" + relative):
            return PlainTextResponse("not found", status_code=404)
        if not is_public(relative):
            authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
            principal = None
            if authenticator is not None:
                principal = await run_in_threadpool(authenticator.authenticate, request)
            if principal is None:
                return _unauthenticated(request)
        if relative == "app-config.js":
            return Response(
                config_js,
                media_type=MEDIA_TYPES[".js"],
                headers={"Cache-Control": "no-cache", "Content-Security-Policy": VIEWER_CSP},
            )
        if not (root / "index.html").is_file():
            return HTMLResponse(not_installed_page(root), status_code=503)
        target = _file_in(root, relative)
        if target is None:
            # A missing file, not a route: and a path public as a file is never the app page.
            if is_public(relative) or Path(relative).suffix.lower() in ASSET_SUFFIXES:
                return PlainTextResponse("not found", status_code=404)
            target = root / "index.html"
        return _file_response(request, target)

    app.router.routes.append(
        ViewerRoute("/{path:path}", viewer, methods=["GET", "HEAD"], include_in_schema=False)
    )


def _unauthenticated(request: Request) -> Response:
    wants_page = "text/html" in request.headers.get("accept", "")
    if wants_page and request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)
    return PlainTextResponse(
        "authentication required",
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="noctis"'},
    )


def _file_in(root: Path, relative: str) -> Path | None:
    if not relative or relative.startswith(".") or "\\" in relative or "\x00" in relative:
        return None
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate if candidate.is_file() else None


def _file_response(request: Request, target: Path) -> Response:
    name = target.name
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": VIEWER_CSP}
    if target.suffix == ".html":
        headers["Content-Security-Policy"] = viewer_page_csp(target)
    elif target.suffix in (".js", ".mjs"):  # a worker's policy is its own script's
        headers["Content-Security-Policy"] = WORKER_CSP
    if name in NO_CACHE or target.suffix == ".html":
        headers["Cache-Control"] = "no-cache"
    elif _HASHED.search(name):
        headers["Cache-Control"] = "private, max-age=31536000, immutable"
    else:
        headers["Cache-Control"] = "private, max-age=3600"
    media_type = MEDIA_TYPES.get(target.suffix.lower())
    gz = target.with_name(name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and gz.is_file():
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
        return FileResponse(gz, media_type=media_type, headers=headers)
    return FileResponse(target, media_type=media_type, headers=headers)


def viewer_page_csp(page: Path) -> str:
    """The viewer's policy plus the hashes of the page's own inline scripts (OHIF's
    index.html sets ``window.PUBLIC_URL`` inline)."""
    stat = page.stat()
    return _page_csp(str(page), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _page_csp(path: str, mtime_ns: int, size: int) -> str:
    html = Path(path).read_text(encoding="utf-8", errors="replace")
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for attributes, body in _INLINE_SCRIPT.findall(html)
        if "src=" not in attributes and body
    ]
    if not hashes:
        return VIEWER_CSP
    return VIEWER_CSP.replace(_SCRIPT_SRC, _SCRIPT_SRC + " " + " ".join(hashes), 1)


def not_installed_page(root: Path) -> str:
    return page(
        "Viewer not installed - Noctis",
        "<h1>Viewer not installed</h1>"
        "<p>The archive is running, but the OHIF web viewer has not been fetched into "
        f"<code>{escape(str(root))}</code>.</p>"
        "<p>Fetch it (pinned and checksum-verified, from the npm registry) with "
        "<code>scripts/fetch-viewer.sh</code> or <code>python -m noctis.api.viewer_fetch</code>"
        ", then reload this page.</p>"
        "<p class=note>DICOMweb at <code>/dicom-web</code> and the REST API at "
        "<code>/api</code> (<a href=/docs>/docs</a>) work without it.</p>",
    )
