"""The worklist's pages: ``/ui/worklist`` (the table, its filters as a GET form, claim and
release as POST forms) and ``/ui/worklist/{facility}/{study}`` (one study: its notes and the
actions the caller's role allows). Plain HTML forms, no script: each action posts, then the
browser is sent back where it was (303), or shown the page again with what was refused.

The pages use the REST API's filters and actions (`noctis.api.rest.worklist_params`,
``worklist_actions``), so a page and ``/api/worklist`` always agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from noctis.api.rest.visible import visible_study
from noctis.api.rest.worklist_actions import (
    actor_of,
    assign_study,
    change_study_state,
    claim_study,
    current_item,
    note_study,
    prioritise_study,
    record_listing,
    refused,
    release_study,
)
from noctis.api.rest.worklist_params import (
    WorklistItem,
    WorklistParams,
    encode_cursor,
    items,
    worklist_query,
)
from noctis.api.security import Principal, client_address, get_audit
from noctis.api.web.render import PagePrincipalDep, render
from noctis.core.roles import ASSIGN_ROLES, READING_ROLES, WORKLIST_ROLES
from noctis.core.runtime import Runtime
from noctis.core.workflow import OPEN_STATES, Priority, StudyState
from noctis.core.worklist import WorklistRefused, readers_of
from noctis.dicom.person_names import readable_person_name
from noctis.index.models import Facility
from noctis.index.worklist import notes_of, worklist_page

router = APIRouter(include_in_schema=False)

PAGE = "/ui/worklist"
_LISTS = ("state", "priority", "facility", "modality")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def dicom_date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def moment(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def can_claim(principal: Principal, row: WorklistItem) -> bool:
    return (
        principal.role in READING_ROLES
        and row.assignee is None
        and StudyState(row.state) in OPEN_STATES
    )


def can_release(principal: Principal, row: WorklistItem) -> bool:
    return row.assignee is not None and (
        row.assignee == principal.subject or principal.role in ASSIGN_ROLES
    )


HELPERS = {
    "person": readable_person_name,
    "dicom_date": dicom_date,
    "moment": moment,
    "can_claim": can_claim,
    "can_release": can_release,
    "states": [s.value for s in StudyState],
    "priorities": [p.label for p in sorted(Priority, reverse=True)],
}


def _params(request: Request) -> dict[str, Any]:
    """The filter form's fields (empty ones dropped: an empty date means no bound)."""
    values: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if value == "":
            continue
        if key in _LISTS:
            values.setdefault(key, []).append(value)
        else:
            values[key] = value
    return values


def _visible_facilities(session: Session, principal: Principal) -> list[str]:
    names = session.query(Facility.name, Facility.id).order_by(Facility.name)
    return [name for name, fid in names if principal.can_read(fid)]


def _forbidden(request: Request, principal: Principal) -> Response:
    return render(
        request,
        "worklist_error.html",
        principal,
        status_code=403,
        error="The worklist is for radiologists, technologists and administrators.",
    )


@router.get(PAGE)
def worklist(request: Request, principal: PagePrincipalDep) -> Response:
    if principal.role not in WORKLIST_ROLES:
        return _forbidden(request, principal)
    form = _params(request)
    rows: list[WorklistItem] = []
    next_url = error = None
    status_code = 200
    with _runtime(request).reader() as session:
        facilities = _visible_facilities(session, principal)
        try:
            params = WorklistParams.model_validate(form)
            query = worklist_query(session, principal, params)
            entries = worklist_page(session, query)
            rows = items(session, entries)
            record_listing(
                get_audit(request), principal, client_address(request), params, len(rows)
            )
            if len(entries) == query.limit:
                following = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
                following.append(("cursor", encode_cursor(entries[-1].cursor)))
                next_url = f"{PAGE}?{urlencode(following)}"
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            status_code = 422
        except WorklistRefused as exc:
            error, status_code = str(exc), refused(exc).status_code
    return render(
        request,
        "worklist_list.html",
        principal,
        status_code=status_code,
        rows=rows,
        form=form,
        facilities=facilities,
        next_url=next_url,
        error=error,
        here=_here(request),
        **HELPERS,
    )


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _back(next_url: str, fallback: str) -> str:
    """Where to send the browser after an action: a worklist page of ours, never elsewhere."""
    if next_url.startswith(PAGE) and not next_url.startswith("//"):
        return next_url
    return fallback


def _study_page(
    request: Request,
    principal: Principal,
    facility: str,
    study: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    runtime = _runtime(request)
    try:
        with runtime.sessions.begin() as session:
            found = visible_study(session, principal, facility, study)
            row = current_item(session, found)
            notes = notes_of(session, found.id)
            readers = readers_of(session, found.facility_id)
            session.expunge_all()
    except HTTPException as exc:
        return render(
            request, "worklist_error.html", principal, status_code=exc.status_code, error=exc.detail
        )
    return render(
        request,
        "worklist_study.html",
        principal,
        status_code=status_code,
        row=row,
        notes=notes,
        readers=readers,
        can_assign=principal.role in ASSIGN_ROLES,
        error=error,
        here=f"{PAGE}/{facility}/{study}",
        **HELPERS,
    )


@router.get(PAGE + "/{facility}/{study}")
def study_page(
    facility: str, study: str, request: Request, principal: PagePrincipalDep
) -> Response:
    if principal.role not in WORKLIST_ROLES:
        return _forbidden(request, principal)
    return _study_page(request, principal, facility, study)


def _act(
    request: Request,
    principal: Principal,
    facility: str,
    study: str,
    next_url: str,
    action: Any,
) -> Response:
    """Run ``action(session, actor)`` in one transaction, then back to ``next_url``; a
    refusal shows the study's page with the reason (and the refusal's status)."""
    if principal.role not in WORKLIST_ROLES:
        return _forbidden(request, principal)
    actor = actor_of(principal, client_address(request))
    try:
        with _runtime(request).sessions.begin() as session:
            action(session, actor)
    except HTTPException as exc:
        return _study_page(
            request, principal, facility, study, error=str(exc.detail), status_code=exc.status_code
        )
    return RedirectResponse(_back(next_url, f"{PAGE}/{facility}/{study}"), status_code=303)


NextField = Annotated[str, Form()]


@router.post(PAGE + "/{facility}/{study}/claim")
def claim(
    facility: str, study: str, request: Request, principal: PagePrincipalDep, next: NextField = ""
) -> Response:
    return _act(
        request,
        principal,
        facility,
        study,
        next,
        lambda session, actor: claim_study(session, principal, actor, facility, study),
    )


@router.post(PAGE + "/{facility}/{study}/release")
def release(
    facility: str, study: str, request: Request, principal: PagePrincipalDep, next: NextField = ""
) -> Response:
    return _act(
        request,
        principal,
        facility,
        study,
        next,
        lambda session, actor: release_study(session, principal, actor, facility, study),
    )


@router.post(PAGE + "/{facility}/{study}/assign")
def assign(
    facility: str,
    study: str,
    request: Request,
    principal: PagePrincipalDep,
    assignee: Annotated[str, Form(max_length=150)] = "",
    next: NextField = "",
) -> Response:
    return _act(
        request,
        principal,
        facility,
        study,
        next,
        lambda session, actor: assign_study(
            session, principal, actor, facility, study, assignee or None
        ),
    )


@router.post(PAGE + "/{facility}/{study}/priority")
def priority(
    facility: str,
    study: str,
    request: Request,
    principal: PagePrincipalDep,
    priority: Annotated[str, Form(max_length=16)],
    reason: Annotated[str, Form(max_length=255)] = "",
    next: NextField = "",
) -> Response:
    def change(session: Session, actor: Any) -> None:
        try:
            chosen = Priority.parse(priority)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        prioritise_study(session, principal, actor, facility, study, chosen, reason)

    return _act(request, principal, facility, study, next, change)


@router.post(PAGE + "/{facility}/{study}/state")
def state(
    facility: str,
    study: str,
    request: Request,
    principal: PagePrincipalDep,
    state: Annotated[str, Form(max_length=16)],
    next: NextField = "",
) -> Response:
    def change(session: Session, actor: Any) -> None:
        if state not in (StudyState.CANCELLED.value, StudyState.READY.value):
            raise HTTPException(422, detail="a study is cancelled or reinstated")
        change_study_state(session, principal, actor, facility, study, StudyState(state))

    return _act(request, principal, facility, study, next, change)


@router.post(PAGE + "/{facility}/{study}/notes")
def note(
    facility: str,
    study: str,
    request: Request,
    principal: PagePrincipalDep,
    text: Annotated[str, Form(max_length=10_000)],
    next: NextField = "",
) -> Response:
    return _act(
        request,
        principal,
        facility,
        study,
        next,
        lambda session, actor: note_study(session, principal, actor, facility, study, text),
    )
