"""The ``/ui`` pages: the shared static files, and each workflow part's router (one line each
in ``ROUTERS``)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from noctis.api.web import notifications, orders, reports, worklist
from noctis.api.web.render import LoginRequired, PagePrincipalDep, login_redirect_url
from noctis.core.roles import WORKLIST_ROLES

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

shell = APIRouter(include_in_schema=False)


@shell.get("/ui")
def home(principal: PagePrincipalDep) -> Response:
    """The worklist, or for a role without one (a referring physician) the notifications,
    where its final reports are announced."""
    page = "/ui/worklist" if principal.role in WORKLIST_ROLES else "/ui/notifications"
    return RedirectResponse(page, status_code=303)


@shell.get("/ui/static/{name}")
def static(name: str) -> Response:
    """Our stylesheet and script (no login needed: they hold no data)."""
    root = files("noctis.api.web") / "static"
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in _STATIC_TYPES:
        raise HTTPException(404)
    target = root / name
    if not target.is_file():
        raise HTTPException(404)
    return FileResponse(
        str(target), media_type=_STATIC_TYPES[suffix], headers={"Cache-Control": "no-cache"}
    )


ROUTERS: tuple[APIRouter, ...] = (
    shell,
    worklist.router,
    reports.router,
    notifications.router,
    orders.router,
)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)

    async def to_login(request: Request, error: Exception) -> Response:
        assert isinstance(error, LoginRequired)
        return RedirectResponse(login_redirect_url(error), status_code=303)

    app.add_exception_handler(LoginRequired, to_login)
