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

import base64
import binascii
import json
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from noctis.api.audit import actor_type, web_event
from noctis.api.auth.context import AuthContextDep
from noctis.api.rest.deps import SessionDep
from noctis.api.security import AuditDep, Principal, PrincipalDep, client_address
from noctis.core.roles import ASSIGN_ROLES, READING_ROLES, WORKLIST_ROLES, Role
from noctis.core.workflow import (
    Actor,
    Priority,
    StudyState,
    WorkflowError,
    advance,
    assign,
    ensure_workflow,
    set_priority,
)
from noctis.core.worklist import (
    WorklistRefused,
    add_note,
    check_assignee,
    facility_ids_named,
    find_study,
    parse_modalities,
)
from noctis.index.models import Study
from noctis.index.worklist import (
    NOTE_MAX_CHARS,
    OPEN_STATE_VALUES,
    Cursor,
    WorklistEntry,
    WorklistQuery,
    notes_of,
    worklist_entry,
    worklist_page,
)

router = APIRouter(prefix="/worklist", tags=["worklist"])

MAX_LIMIT = 200
ANY_STATE = "any"


class WorklistItem(BaseModel):
    facility: str
    study_instance_uid: str
    patient_name: str
    patient_id: str
    accession_number: str
    modalities: list[str]
    study_description: str
    study_date: str = Field(description="YYYYMMDD, as the study says (may be empty)")
    number_of_series: int
    number_of_instances: int
    state: StudyState
    priority: str = Field(description="routine, urgent or STAT")
    priority_reason: str
    critical: bool
    assignee: str | None = Field(description="who reads it (a user name), if anyone")
    arrived_at: datetime
    state_changed_at: datetime
    notes: int = Field(description="how many notes the study has")
    viewer_url: str
    report_url: str
    page_url: str


class WorklistPage(BaseModel):
    items: list[WorklistItem]
    next: str | None = Field(description="cursor of the next page (None: this is the last)")


class NoteOut(BaseModel):
    id: int
    author: str
    text: str
    created_at: datetime


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=NOTE_MAX_CHARS)


class AssignIn(BaseModel):
    assignee: str | None = Field(description="a radiologist's user name; null: nobody")


class PriorityIn(BaseModel):
    priority: Literal["routine", "urgent", "stat", "STAT"]
    reason: str = Field("", max_length=255)


class StateIn(BaseModel):
    state: Literal["cancelled", "ready"] = Field(
        description="cancelled: not to be read; ready: a cancelled study reinstated"
    )


def utc(moment: datetime) -> datetime:
    """Times are stored in UTC; SQLite hands them back without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def item(entry: WorklistEntry) -> WorklistItem:
    here = f"{entry.facility}/{entry.study_instance_uid}"
    return WorklistItem(
        facility=entry.facility,
        study_instance_uid=entry.study_instance_uid,
        patient_name=entry.patient_name,
        patient_id=entry.patient_id,
        accession_number=entry.accession_number,
        modalities=entry.modalities,
        study_description=entry.study_description,
        study_date=entry.study_date,
        number_of_series=entry.number_of_series,
        number_of_instances=entry.number_of_instances,
        state=StudyState(entry.state),
        priority=Priority(entry.priority).label,
        priority_reason=entry.priority_reason,
        critical=entry.critical,
        assignee=entry.assignee,
        arrived_at=utc(entry.arrived_at),
        state_changed_at=utc(entry.state_changed_at),
        notes=entry.notes,
        viewer_url=f"/viewer?StudyInstanceUIDs={entry.study_instance_uid}",
        report_url=f"/ui/reports/{here}",
        page_url=f"/ui/worklist/{here}",
    )


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor.priority, utc(cursor.arrived_at).isoformat(), cursor.study_pk])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        priority, arrived, pk = json.loads(raw)
        return Cursor(int(priority), datetime.fromisoformat(arrived), int(pk))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise WorklistRefused("not a worklist cursor (use the `next` of the page before)") from exc


class WorklistParams(BaseModel):
    """The worklist's filters, as query parameters (the REST API and the page's form)."""

    mine: bool = False
    unassigned: bool = False
    state: list[str] = Field(default_factory=list)
    priority: list[str] = Field(default_factory=list)
    facility: list[str] = Field(default_factory=list)
    modality: list[str] = Field(default_factory=list)
    study_date_from: date | None = None
    study_date_to: date | None = None
    arrived_from: datetime | None = None
    arrived_to: datetime | None = None
    q: str = Field("", max_length=200)
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    cursor: str | None = None


def _states(values: Collection[str]) -> tuple[str, ...]:
    chosen = [v for value in values for v in value.replace(",", " ").split()]
    if not chosen:
        return OPEN_STATE_VALUES
    if ANY_STATE in chosen:
        return ()
    try:
        return tuple(StudyState(v).value for v in chosen)
    except ValueError:
        names = ", ".join(s.value for s in StudyState)
        raise WorklistRefused(f"states are {names} (or {ANY_STATE})") from None


def _priorities(values: Collection[str]) -> tuple[int, ...]:
    chosen = [v for value in values for v in value.replace(",", " ").split()]
    try:
        return tuple(sorted({int(Priority.parse(v)) for v in chosen}))
    except ValueError as exc:
        raise WorklistRefused(str(exc)) from None


def worklist_query(session: Session, principal: Principal, params: WorklistParams) -> WorklistQuery:
    """The index query for these filters, within the facilities the caller may see
    (`WorklistRefused` for a filter that makes no sense)."""
    visible = principal.facility_ids
    facility_ids = visible
    if params.facility:
        names = [n for value in params.facility for n in value.replace(",", " ").split()]
        facility_ids = facility_ids_named(session, names, visible)

    def day(value: date | None) -> str | None:
        return value.strftime("%Y%m%d") if value else None

    return WorklistQuery(
        facility_ids=facility_ids,
        states=_states(params.state),
        priorities=_priorities(params.priority),
        assignee=principal.subject if params.mine else None,
        unassigned=params.unassigned,
        modalities=parse_modalities(params.modality),
        study_date_from=day(params.study_date_from),
        study_date_to=day(params.study_date_to),
        arrived_from=utc(params.arrived_from) if params.arrived_from else None,
        arrived_to=utc(params.arrived_to) if params.arrived_to else None,
        words=tuple(params.q.split())[:8],
        after=decode_cursor(params.cursor) if params.cursor else None,
        limit=params.limit,
    )


def require_role(principal: Principal, roles: Collection[Role], what: str) -> None:
    if principal.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{what}: only {allowed}")


def worklist_reader(principal: PrincipalDep) -> Principal:
    require_role(principal, WORKLIST_ROLES, "the worklist")
    return principal


WorklistPrincipalDep = Annotated[Principal, Depends(worklist_reader)]


def get_reader(context: AuthContextDep) -> Iterator[Session]:
    with context.runtime.reader() as session:
        yield session


ReaderDep = Annotated[Session, Depends(get_reader)]


def actor_of(principal: Principal, request: Request) -> Actor:
    return Actor(principal.subject, actor_type(principal), client_address(request))


def refused(exc: WorklistRefused) -> HTTPException:
    text = str(exc)
    if text.startswith("no facility named"):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=text)
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=text)


def study_or_404(session: Session, principal: Principal, facility: str, study: str) -> Study:
    found = find_study(session, facility, study, principal.facility_ids)
    if found is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no study {study} in facility {facility!r}"
        )
    return found


def current_item(session: Session, study: Study) -> WorklistItem:
    session.flush()
    entry = worklist_entry(session, study.id)
    assert entry is not None  # every change ensures the row first
    return item(entry)


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
    audit.record(
        web_event(
            principal,
            client_address(request),
            "worklist.list",
            "success",
            detail={
                "query": params.model_dump(exclude_defaults=True, mode="json"),
                "results": len(entries),
            },
        )
    )
    more = len(entries) == query.limit
    return WorklistPage(
        items=[item(e) for e in entries],
        next=encode_cursor(entries[-1].cursor) if more else None,
    )


@router.get("/{facility}/{study}")
def get_worklist_item(
    facility: str, study: str, principal: WorklistPrincipalDep, session: SessionDep
) -> WorklistItem:
    found = study_or_404(session, principal, facility, study)
    ensure_workflow(session, found)  # a study the arrival scan has not reached yet
    return current_item(session, found)


def _change(change: Any) -> None:
    try:
        change()
    except WorkflowError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    except WorklistRefused as exc:
        raise refused(exc) from exc


@router.post("/{facility}/{study}/claim")
def claim(
    facility: str, study: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> WorklistItem:
    """Take the study to read it (409 naming who holds it, if someone else does)."""
    require_role(principal, READING_ROLES, "claiming a study")
    found = study_or_404(session, principal, facility, study)
    actor = actor_of(principal, request)
    _change(
        lambda: assign(session, found, principal.subject, actor=actor, only_if_free=True),
    )
    return current_item(session, found)


@router.post("/{facility}/{study}/release")
def release(
    facility: str, study: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> WorklistItem:
    """Give the study back (it is ready again): its reader, or who may assign."""
    require_role(principal, READING_ROLES | ASSIGN_ROLES, "releasing a study")
    found = study_or_404(session, principal, facility, study)
    row = ensure_workflow(session, found)
    if row.assignee not in (None, principal.subject) and principal.role not in ASSIGN_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{row.assignee} reads it")
    actor = actor_of(principal, request)
    _change(lambda: assign(session, found, None, actor=actor))
    return current_item(session, found)


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
    require_role(principal, ASSIGN_ROLES, "assigning a study")
    found = study_or_404(session, principal, facility, study)
    actor = actor_of(principal, request)

    def change() -> None:
        if body.assignee is not None:
            check_assignee(session, body.assignee, found.facility_id)
        assign(session, found, body.assignee, actor=actor)

    _change(change)
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
    require_role(principal, ASSIGN_ROLES, "changing a study's priority")
    found = study_or_404(session, principal, facility, study)
    priority = Priority.parse(body.priority)
    actor = actor_of(principal, request)
    _change(
        lambda: set_priority(session, found, priority, actor=actor, reason=body.reason),
    )
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
    require_role(principal, ASSIGN_ROLES, "cancelling or reinstating a study")
    found = study_or_404(session, principal, facility, study)
    row = ensure_workflow(session, found)
    if body.state == "ready" and row.state != StudyState.CANCELLED.value:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"only a cancelled study is reinstated ({row.state})"
        )
    actor = actor_of(principal, request)
    _change(lambda: advance(session, found, StudyState(body.state), actor=actor))
    return current_item(session, found)


@router.get("/{facility}/{study}/notes")
def list_notes(
    facility: str, study: str, principal: WorklistPrincipalDep, session: ReaderDep
) -> list[NoteOut]:
    found = study_or_404(session, principal, facility, study)
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
    principal: WorklistPrincipalDep,
    session: SessionDep,
) -> NoteOut:
    found = study_or_404(session, principal, facility, study)
    try:
        note = add_note(session, found, body.text, actor=actor_of(principal, request))
    except WorklistRefused as exc:
        raise refused(exc) from exc
    return NoteOut(id=note.id, author=note.author, text=note.text, created_at=utc(note.created_at))
