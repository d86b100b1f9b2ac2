"""Login and logout pages, and the OpenID Connect redirect and callback."""

from __future__ import annotations

import logging
import math
import secrets
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool

from noctis.api.auth.context import AuthContext, AuthContextDep, safe_next
from noctis.api.auth.credentials import close_session, open_session
from noctis.api.auth.flood import HashingBusy
from noctis.api.auth.oidc import OidcError, OidcProvider, pkce_pair
from noctis.api.auth.pages import login_page, message_page
from noctis.api.auth.password_login import (
    abandon_attempt,
    begin_attempt,
    open_login_session,
    verify,
)
from noctis.api.security import client_address
from noctis.core.accounts import AccountError, create_user, get_user
from noctis.core.accounts import set_facilities as grant_facilities
from noctis.core.audit import AuditAction, AuditEvent, AuditOutcome
from noctis.core.roles import Role

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

OIDC_STATE_COOKIE = "noctis_oidc"
OIDC_STATE_MAX_AGE = 600
_NO_STORE = {"Cache-Control": "no-store"}


def _login_form(context: AuthContext, next_url: str, **kwargs: Any) -> str:
    oidc_name = context.auth.oidc_provider_name if context.oidc else None
    return login_page(next_url=next_url, oidc_name=oidc_name, **kwargs)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, context: AuthContextDep, next: str = "/") -> Response:
    next_url = safe_next(next)
    if context.authenticator.authenticate(request) is not None:
        return RedirectResponse(next_url, status.HTTP_303_SEE_OTHER)
    return HTMLResponse(_login_form(context, next_url), headers=_NO_STORE)


@router.post("/login", response_class=HTMLResponse)
async def login_submit(
    request: Request,
    context: AuthContextDep,
    username: Annotated[str, Form(max_length=150)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Rate limit by address (in memory, before anything costs), count the attempt in the
    shared lockout, check the password through the hashing gate, open the session."""
    next_url = safe_next(next)
    client = client_address(request)
    username = username.strip()

    def page(message: str, code: int, retry_after: float | None = None) -> Response:
        headers = dict(_NO_STORE)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        body = _login_form(context, next_url, error=message, username=username)
        return HTMLResponse(body, status_code=code, headers=headers)

    async def refuse(message: str, reason: str, code: int, retry: float | None = None) -> Response:
        await run_in_threadpool(
            _audit_login, context, username, client, AuditOutcome.DENIED, {"reason": reason}
        )
        return page(message, code, retry)

    wait = context.rate_limiter.take(client)
    if wait is not None:  # no audit row per refusal: a flood must not turn into writes
        log.info("login attempts from %s are over the rate limit", client)
        return page(
            "Too many sign-in attempts from your address. Wait a moment and try again.",
            status.HTTP_429_TOO_MANY_REQUESTS,
            wait,
        )
    attempt = await run_in_threadpool(
        begin_attempt, context.runtime, context.auth, username, client
    )
    if attempt.locked_for is not None:
        return await refuse(
            "Too many failed attempts. Wait a few minutes and try again.",
            "locked-out",
            status.HTTP_429_TOO_MANY_REQUESTS,
            attempt.locked_for,
        )
    try:
        verdict = await context.hashing.run(partial(verify, attempt.password_hash, password))
    except HashingBusy:
        # Not checked, so not a failure: it must not count towards the account's lockout.
        await run_in_threadpool(abandon_attempt, context.runtime, username, client, attempt)
        return page(
            "The archive is busy signing other users in. Try again in a moment.",
            status.HTTP_503_SERVICE_UNAVAILABLE,
            1,
        )
    cookie = None
    if verdict.matched:
        cookie = await run_in_threadpool(
            partial(
                open_login_session,
                context.runtime,
                context.auth,
                attempt,
                verdict,
                username=username,
                client=client,
                user_agent=request.headers.get("user-agent", ""),
            )
        )
    if cookie is None:
        return await refuse(
            "Wrong user name or password.", "bad-credentials", status.HTTP_401_UNAUTHORIZED
        )
    await run_in_threadpool(
        _audit_login, context, username, client, AuditOutcome.SUCCESS, {"method": "password"}
    )
    response = RedirectResponse(next_url, status.HTTP_303_SEE_OTHER)
    context.set_session_cookie(request, response, cookie)
    return response


@router.post("/logout")
def logout(request: Request, context: AuthContextDep) -> Response:
    """POST only (a GET answers 405): a link or an image on another page cannot log
    anyone out, and the cross-origin guard refuses a form posted from another site."""
    principal = context.authenticator.authenticate(request)
    cookie = request.cookies.get(context.auth.cookie_name)
    if cookie:
        with context.runtime.sessions.begin() as session:
            close_session(session, cookie)
    if principal is not None:
        context.runtime.audit.record(
            AuditEvent(
                action=AuditAction.LOGOUT,
                outcome=AuditOutcome.SUCCESS,
                actor=principal.subject,
                actor_type="user",
                client=client_address(request),
            )
        )
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    context.clear_session_cookie(request, response)
    return response


def _audit_login(
    context: AuthContext, username: str, client: str, outcome: str, detail: dict[str, Any]
) -> None:
    context.runtime.audit.record(
        AuditEvent(
            action=AuditAction.LOGIN,
            outcome=outcome,
            actor=username or "(empty)",
            actor_type="user",
            client=client,
            detail=detail,
        )
    )


# -- OpenID Connect -----------------------------------------------------------------------


def _redirect_uri(request: Request, context: AuthContext) -> str:
    return context.auth.oidc_redirect_url or str(request.url_for("oidc_callback"))


def _oidc_failed(message: str) -> HTMLResponse:
    page = message_page("Sign-in failed", message, link="/login", link_text="Back to sign in")
    return HTMLResponse(page, status_code=status.HTTP_401_UNAUTHORIZED, headers=_NO_STORE)


@router.get("/auth/oidc/login", name="oidc_login")
def oidc_login(request: Request, context: AuthContextDep, next: str = "/") -> Response:
    if context.oidc is None:
        return HTMLResponse(message_page("Not configured", "Single sign-on is off."), 404)
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    try:
        url = context.oidc.authorization_url(
            redirect_uri=_redirect_uri(request, context),
            state=state,
            nonce=nonce,
            challenge=challenge,
        )
    except OidcError as exc:
        return _oidc_failed(str(exc))
    response = RedirectResponse(url, status.HTTP_302_FOUND)
    cookie = context.signer.dumps(
        {"state": state, "nonce": nonce, "verifier": verifier, "next": safe_next(next)}
    )
    response.set_cookie(
        OIDC_STATE_COOKIE,
        cookie,
        max_age=OIDC_STATE_MAX_AGE,
        path="/auth/oidc",
        secure=context.cookie_secure(request),
        httponly=True,
        samesite="lax",  # the provider's redirect back is a top-level GET: Lax sends it
    )
    return response


@router.get("/auth/oidc/callback", name="oidc_callback")
def oidc_callback(
    request: Request,
    context: AuthContextDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    if context.oidc is None:
        return HTMLResponse(message_page("Not configured", "Single sign-on is off."), 404)
    if error:
        return _oidc_failed(f"The identity provider said: {error}")
    try:
        saved = context.signer.loads(
            request.cookies.get(OIDC_STATE_COOKIE, ""), max_age=OIDC_STATE_MAX_AGE
        )
    except BadSignature:
        return _oidc_failed("The sign-in took too long or was not started here. Try again.")
    if not code or not state or not secrets.compare_digest(state, saved["state"]):
        return _oidc_failed("The sign-in response does not match this browser's request.")
    client = client_address(request)
    try:
        id_token = context.oidc.exchange_code(
            code=code, redirect_uri=_redirect_uri(request, context), verifier=saved["verifier"]
        )
        claims = context.oidc.verify(
            id_token, audience=context.oidc.client_id, nonce=saved["nonce"]
        )
        cookie = _provision_and_open_session(request, context, context.oidc, claims, client)
    except (OidcError, AccountError) as exc:
        _audit_login(
            context, "", client, AuditOutcome.DENIED, {"method": "oidc", "reason": str(exc)}
        )
        return _oidc_failed(str(exc))
    _audit_login(
        context, context.oidc.username(claims), client, AuditOutcome.SUCCESS, {"method": "oidc"}
    )
    response = RedirectResponse(saved["next"], status.HTTP_303_SEE_OTHER)
    response.delete_cookie(OIDC_STATE_COOKIE, path="/auth/oidc")
    context.set_session_cookie(request, response, cookie)
    return response


def _provision_and_open_session(
    request: Request,
    context: AuthContext,
    oidc: OidcProvider,
    claims: dict[str, Any],
    client: str,
) -> str:
    """Create or refresh the user row of an identity-provider user; a session cookie value.

    Role and facilities follow the groups at every login; a local account of the same name
    is never taken over."""
    username, groups = oidc.username(claims), oidc.groups(claims)
    role = oidc.role_for(groups)
    if role is None:
        raise AccountError("Your account is in no group that may use this archive.")
    with context.runtime.sessions.begin() as session:
        user = get_user(session, username)
        if user is not None and user.source != "oidc":
            raise AccountError(f"A local account named {username!r} exists; ask an administrator.")
        if user is None:
            user = create_user(session, username, role, source="oidc")
        if not user.enabled:
            raise AccountError("Your account is disabled.")
        user.role = role.value
        user.display_name = str(claims.get("name") or user.display_name)
        facility_ids = [] if role is Role.ADMIN else sorted(oidc.facilities_for(session, groups))
        grant_facilities(session, user, facility_ids)
        return open_session(
            session,
            user,
            lifetime=timedelta(seconds=context.auth.session_lifetime_seconds),
            method="oidc",
            client=client,
            user_agent=request.headers.get("user-agent", ""),
        )
