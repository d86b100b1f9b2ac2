"""The API's own description behind login: ``/openapi.json``, ``/docs`` and ``/redoc``.

FastAPI serves them to anyone by default; `install` replaces those routes with ones that
need a login (a signed-out browser is sent to ``/login``, anything else gets 401), so the
routes and their parameters are no map for an anonymous visitor.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request, status
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from noctis.api.security import get_principal

OPENAPI_URL = "/openapi.json"
_FASTAPI_DOC_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def install(app: FastAPI) -> None:
    app.router.routes[:] = [r for r in app.router.routes if not _is_fastapi_doc_route(r)]
    app.openapi_url = app.docs_url = app.redoc_url = None
    app.add_api_route(OPENAPI_URL, openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def _is_fastapi_doc_route(route: BaseRoute) -> bool:
    return isinstance(route, Route) and route.path in _FASTAPI_DOC_PATHS


def openapi_json(request: Request) -> Response:
    get_principal(request)  # 401 without a login
    return JSONResponse(request.app.openapi())


def swagger_ui(request: Request) -> Response:
    return _page(request) or get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - API"
    )


def redoc(request: Request) -> Response:
    return _page(request) or get_redoc_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - API"
    )


def _page(request: Request) -> Response | None:
    """A redirect to the login page for a signed-out browser, None for a signed-in one."""
    authenticator = getattr(request.app.state, "authenticator", None)
    if authenticator is not None and authenticator.authenticate(request) is not None:
        return None
    here = quote(request.url.path, safe="")
    return RedirectResponse(f"/login?next={here}", status.HTTP_303_SEE_OTHER)
