"""The reading worklist's REST API (``/api/worklist``).

``GET /api/worklist`` lists the studies the caller may see, STAT first, then oldest arrival,
one page at a time: ``limit`` rows and a ``next`` cursor (keyset paging: a page costs the
same at the end of the list as at its start, and claims or arrivals between two pages never
make a row appear twice or go missing, as an offset would). Filters: ``mine``,
``unassigned``, ``state`` (repeatable; default the states still to be read; ``any`` for
all), ``priority``, ``facility``, ``modality`` (repeatable), ``study_date_from``/``_to``,
``arrived_from``/``_to``, ``q`` (words, each found in the patient's name or ID or the
accession number).

Actions on ``/api/worklist/{facility}/{study}``: ``claim`` and ``release`` (radiologists),
``assign``, ``priority`` and ``state`` (cancel or reinstate; ASSIGN_ROLES), ``notes`` (read
and add). Referring physicians get 403 on all of it; a study of a facility the caller may not
see is 404, as an unknown one is. Every change is audited with the change, in its transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.orm import Session

from noctis.api.auth.context import AuthContextDep
from noctis.api.rest.deps import SessionDep
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
    require_role,
)
from noctis.api.rest.worklist_params import (
    AssignIn,
    NoteIn,
    NoteOut,
    PriorityIn,
    StateIn,
    WorklistItem,
    WorklistPage,
    WorklistParams,
    encode_cursor,
    items,
    utc,
    worklist_query,
)
from noctis.api.security import AuditDep, Principal, PrincipalDep, client_address
from noctis.core.roles import WORKLIST_ROLES
from noctis.core.workflow import Priority, StudyState
from noctis.core.worklist import WorklistRefused
from noctis.index.worklist import notes_of, worklist_page

router = APIRouter(prefix="/worklist", tags=["worklist"])


def worklist_reader(principal: PrincipalDep) -> Principal:
    require_role(principal, WORKLIST_ROLES, "the worklist")
    return principal


WorklistPrincipalDep = Annotated[Principal, Depends(worklist_reader)]


def get_reader(context: AuthContextDep) -> Iterator[Session]:
    with context.runtime.reader() as session:
        yield session


ReaderDep = Annotated[Session, Depends(get_reader)]


@router.get("")
def list_worklist(
    request: Request,
    params: Annotated[WorklistParams, Query()],
    principal: WorklistPrincipalDep,
    session: ReaderDep,
    audit: AuditDep,
) -> WorklistPage:
    try:
        query = worklist_query(session, principal, params)
    except WorklistRefused as exc:
        raise refused(exc) from exc
    entries = worklist_page(session, query)
    record_listing(audit, principal, client_address(request), params, len(entries))
    more = len(entries) == query.limit
    return WorklistPage(
        items=items(session, entries),
        next=encode_cursor(entries[-1].cursor) if more else None,
    )


@router.get("/{facility}/{study}")
def get_worklist_item(
    facility: str, study: str, principal: WorklistPrincipalDep, session: SessionDep
) -> WorklistItem:
    return current_item(session, visible_study(session, principal, facility, study))


@router.post("/{facility}/{study}/claim")
def claim(
    facility: str, study: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> WorklistItem:
    """Take the study to read it (radiologists; 409 naming who holds it, if someone does)."""
    actor = actor_of(principal, client_address(request))
    return current_item(session, claim_study(session, principal, actor, facility, study))


@router.post("/{facility}/{study}/release")
def release(
    facility: str, study: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> WorklistItem:
    """Give the study back: it is ready again."""
    actor = actor_of(principal, client_address(request))
    return current_item(session, release_study(session, principal, actor, facility, study))


@router.post("/{facility}/{study}/assign")
def assign_to(
    facility: str,
    study: str,
    body: AssignIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
) -> WorklistItem:
    """Give the study to a radiologist who may see its facility (null: nobody)."""
    actor = actor_of(principal, client_address(request))
    found = assign_study(session, principal, actor, facility, study, body.assignee)
    return current_item(session, found)


@router.post("/{facility}/{study}/priority")
def change_priority(
    facility: str,
    study: str,
    body: PriorityIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
) -> WorklistItem:
    actor = actor_of(principal, client_address(request))
    priority = Priority.parse(body.priority)
    found = prioritise_study(session, principal, actor, facility, study, priority, body.reason)
    return current_item(session, found)


@router.post("/{facility}/{study}/state")
def change_state(
    facility: str,
    study: str,
    body: StateIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
) -> WorklistItem:
    """Cancel the study (not to be read) or reinstate a cancelled one (ready again)."""
    actor = actor_of(principal, client_address(request))
    found = change_study_state(session, principal, actor, facility, study, StudyState(body.state))
    return current_item(session, found)


@router.get("/{facility}/{study}/notes")
def list_notes(
    facility: str, study: str, principal: WorklistPrincipalDep, session: ReaderDep
) -> list[NoteOut]:
    found = visible_study(session, principal, facility, study)
    return [
        NoteOut(id=n.id, author=n.author, text=n.text, created_at=utc(n.created_at))
        for n in notes_of(session, found.id)
    ]


@router.post("/{facility}/{study}/notes", status_code=status.HTTP_201_CREATED)
def create_note(
    facility: str,
    study: str,
    body: NoteIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
) -> NoteOut:
    actor = actor_of(principal, client_address(request))
    note = note_study(session, principal, actor, facility, study, body.text)
    return NoteOut(id=note.id, author=note.author, text=note.text, created_at=utc(note.created_at))
