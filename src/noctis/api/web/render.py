"""Rendering a page: the shared layout, the login a page needs, and its security headers."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from noctis.api.security import Principal, get_principal
from noctis.core.roles import WORKLIST_ROLES

# Our pages load only our own script and stylesheet, send requests only to us, and are never
# framed. Nothing inline: a page that needs data gets it as data-* attributes or from /api.
WEB_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class LoginRequired(Exception):
    """A page asked for without a session: the browser goes to the login page, then back."""

    def __init__(self, here: str) -> None:
        super().__init__(here)
        self.here = here


def page_principal(request: Request) -> Principal:
    try:
        return get_principal(request)
    except HTTPException as refused:
        if refused.status_code != status.HTTP_401_UNAUTHORIZED:
            raise
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(here) from None


PagePrincipalDep = Annotated[Principal, Depends(page_principal)]


def login_redirect_url(error: LoginRequired) -> str:
    return f"/login?next={quote(error.here, safe='')}"


@cache
def environment() -> Environment:
    loader = FileSystemLoader(str(files("noctis.api.web") / "templates"))
    env = Environment(loader=loader, autoescape=select_autoescape(default=True))
    env.globals["worklist_roles"] = WORKLIST_ROLES  # the navigation links only what opens
    return env


def render(
    request: Request,
    template: str,
    principal: Principal,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """``template`` (under ``templates/``, extending ``base.html``) as an HTML response."""
    html = (
        environment().get_template(template).render(request=request, principal=principal, **context)
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={"Content-Security-Policy": WEB_CSP, "Cache-Control": "no-store"},
    )
