"""The worklist's shapes and filters, shared by its REST API and its page: the rows as
returned, the query parameters (`WorklistParams`) and their translation into one index query
within the caller's facilities (`worklist_query`), and the keyset cursor."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from noctis.api.security import Principal
from noctis.core.results import result_summaries
from noctis.core.workflow import Priority, StudyState
from noctis.core.worklist import WorklistRefused, facility_ids_named, parse_modalities
from noctis.index.worklist import (
    NOTE_MAX_CHARS,
    OPEN_STATE_VALUES,
    Cursor,
    WorklistEntry,
    WorklistQuery,
)

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
    results: int = Field(description="results of automated analysis (SR, SEG) of the study")
    critical_result: bool = Field(description="one of those results declares a critical finding")
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


def items(session: Session, entries: list[WorklistEntry]) -> list[WorklistItem]:
    """The entries as rows, with their analysis results counted (one query for them all)."""
    results = result_summaries(session, [e.study_pk for e in entries])
    return [item(e, *results.get(e.study_pk, (0, False))) for e in entries]


def item(entry: WorklistEntry, results: int = 0, critical_result: bool = False) -> WorklistItem:
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
        results=results,
        critical_result=critical_result,
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
