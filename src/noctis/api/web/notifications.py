"""The notifications page (``/ui/notifications``): the signed-in user's list, newest first,
with the unread ones marked, and their preferences (kinds, channels, e-mail address).
Plain HTML forms post back here; every change goes through ``noctis.core.notify_inbox`` and
is audited, as over REST."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response

from noctis.api.audit import actor_type
from noctis.api.rest.deps import SessionDep
from noctis.api.security import Principal, client_address
from noctis.api.web.render import PagePrincipalDep, render
from noctis.core import notify_inbox
from noctis.core.audit import AuditEvent, AuditOutcome, add_to_session
from noctis.core.notify_settings import eligible_kinds

router = APIRouter(include_in_schema=False)

PAGE = "/ui/notifications"
KIND_LABELS = {
    "stat-arrived": "STAT study arrived",
    "critical-result": "Critical result",
    "report-final": "Report final",
    "report-amended": "Report amended",
}


def _me(session: SessionDep, principal: Principal) -> int:
    user_id = notify_inbox.user_id_of(session, principal.subject)
    if user_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no account for this principal")
    return user_id


def _audit(session: SessionDep, request: Request, principal: Principal, **detail: object) -> None:
    add_to_session(
        session,
        AuditEvent(
            action="notification",
            outcome=AuditOutcome.SUCCESS,
            actor=principal.subject,
            actor_type=actor_type(principal),
            client=client_address(request),
            detail=dict(detail),
        ),
    )


@router.get(PAGE)
def notifications_page(
    request: Request,
    principal: PagePrincipalDep,
    session: SessionDep,
    unread: bool = False,
    saved: bool = False,
    error: str = "",
) -> Response:
    user_id = _me(session, principal)
    items, unread_count = notify_inbox.inbox(
        session, user_id, principal.facility_ids, unread_only=unread, limit=200
    )
    prefs = notify_inbox.describe(principal.role, notify_inbox.preferences(session, user_id))
    return render(
        request,
        "notifications_list.html",
        principal,
        items=items,
        unread=unread_count,
        only_unread=unread,
        prefs=prefs,
        kind_labels=KIND_LABELS,
        eligible=eligible_kinds(principal.role),
        saved=saved,
        error=error[:300],
    )


@router.post(PAGE + "/{notification_id}/read")
def read_one(
    notification_id: int, request: Request, principal: PagePrincipalDep, session: SessionDep
) -> Response:
    if not notify_inbox.mark_read(
        session, _me(session, principal), principal.facility_ids, notification_id
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such notification")
    _audit(session, request, principal, change="read", notification=notification_id)
    return RedirectResponse(PAGE, status_code=303)


@router.post(PAGE + "/read-all")
def read_all(request: Request, principal: PagePrincipalDep, session: SessionDep) -> Response:
    marked = notify_inbox.mark_all_read(session, _me(session, principal), principal.facility_ids)
    if marked:
        _audit(session, request, principal, change="read-all", marked=marked)
    return RedirectResponse(PAGE, status_code=303)


@router.post(PAGE + "/preferences")
def save_preferences(
    request: Request,
    principal: PagePrincipalDep,
    session: SessionDep,
    kinds: Annotated[list[str] | None, Form()] = None,
    channels: Annotated[list[str] | None, Form()] = None,
    email_address: Annotated[str, Form(max_length=254)] = "",
) -> Response:
    prefs = notify_inbox.Preferences(kinds or [], channels or [], email_address)
    try:
        notify_inbox.set_preferences(session, _me(session, principal), principal.role, prefs)
    except notify_inbox.PreferenceError as refused:
        return RedirectResponse(f"{PAGE}?error={quote(str(refused))}", status_code=303)
    _audit(
        session,
        request,
        principal,
        change="preferences",
        kinds=prefs.kinds,
        channels=prefs.channels,
    )
    return RedirectResponse(f"{PAGE}?saved=true", status_code=303)
