"""Report templates and snippets (``/api/report-templates``, ``/api/report-snippets``).

Each belongs to one facility or, with no facility, to every facility (global). Radiologists,
administrators and facility administrators read those of their facilities and the global ones;
administrators write any, facility administrators those of their own facilities only (never
global ones). Templates are chosen by modality and/or body part (a blank one matches any).
A template or snippet of a facility the caller may not read answers 404. Every change is
audited (action ``report-library``) in its own transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from noctis.api.audit import web_event
from noctis.api.rest.deps import SessionDep
from noctis.api.security import Principal, PrincipalDep, client_address
from noctis.core.audit import AuditOutcome, add_to_session
from noctis.core.roles import READING_ROLES, USER_ADMIN_ROLES, Role
from noctis.index.models import Facility, utcnow
from noctis.index.reports import ReportSnippet, ReportTemplate

router = APIRouter(tags=["report templates and snippets"])

READ_ROLES = READING_ROLES | USER_ADMIN_ROLES
Kind = Literal["templates", "snippets"]
_MODELS: dict[str, type[ReportTemplate] | type[ReportSnippet]] = {
    "templates": ReportTemplate,
    "snippets": ReportSnippet,
}


class SnippetIn(BaseModel):
    facility: str | None = Field(None, description="facility name; none: global")
    name: str = Field(min_length=1, max_length=128)
    text: str = Field(max_length=100_000)


class TemplateIn(SnippetIn):
    modality: str = Field("", max_length=16, description="e.g. CT; blank: any")
    body_part: str = Field("", max_length=64, description="e.g. HEAD; blank: any")


class SnippetOut(BaseModel):
    id: int
    facility: str | None
    name: str
    text: str
    created_by: str
    updated_at: datetime


class TemplateOut(SnippetOut):
    modality: str
    body_part: str


def _facility_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Facility.id, Facility.name)).tuples().all())


def _out(row: ReportTemplate | ReportSnippet, names: dict[int, str]) -> TemplateOut | SnippetOut:
    facility = names.get(row.facility_id) if row.facility_id is not None else None
    common = {
        "id": row.id,
        "facility": facility,
        "name": row.name,
        "text": row.text,
        "created_by": row.created_by,
        "updated_at": row.updated_at,
    }
    if isinstance(row, ReportTemplate):
        return TemplateOut(**common, modality=row.modality, body_part=row.body_part)
    return SnippetOut(**common)


def _may_read(principal: Principal) -> None:
    if principal.role not in READ_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="report templates: not your role")


def _writable_facility(session: Session, principal: Principal, name: str | None) -> int | None:
    """The facility id a write goes to (None: global), or 403/404."""
    if principal.role not in USER_ADMIN_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="administrators only")
    if name is None:
        if principal.role is not Role.ADMIN:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="only administrators write global ones"
            )
        return None
    facility_id = session.scalar(select(Facility.id).where(Facility.name == name))
    if facility_id is None or not principal.can_read(facility_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no facility {name!r}")
    return facility_id


def _row(
    session: Session, principal: Principal, kind: Kind, row_id: int
) -> ReportTemplate | ReportSnippet:
    row = session.get(_MODELS[kind], row_id)
    if row is None or (row.facility_id is not None and not principal.can_read(row.facility_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such {kind[:-1]}")
    return row


def _audit(
    session: Session,
    principal: Principal,
    request: Request,
    operation: str,
    row: ReportTemplate | ReportSnippet,
) -> None:
    add_to_session(
        session,
        web_event(
            principal,
            client_address(request),
            "report-library",
            AuditOutcome.SUCCESS,
            facility_id=row.facility_id,
            detail={
                "operation": operation,
                "kind": row.__tablename__,
                "id": row.id,
                "name": row.name,
            },
        ),
    )


def _list(
    session: Session,
    principal: Principal,
    kind: Kind,
    modality: str = "",
    body_part: str = "",
) -> list[TemplateOut | SnippetOut]:
    _may_read(principal)
    model = _MODELS[kind]
    query = select(model).order_by(model.name, model.id)
    if principal.facility_ids is not None:
        query = query.where(
            or_(model.facility_id.is_(None), model.facility_id.in_(principal.facility_ids))
        )
    if kind == "templates" and modality:
        query = query.where(ReportTemplate.modality.in_(("", modality.upper())))
    if kind == "templates" and body_part:
        query = query.where(ReportTemplate.body_part.in_(("", body_part.upper())))
    names = _facility_names(session)
    return [_out(row, names) for row in session.scalars(query)]


@router.get("/report-templates")
def list_templates(
    principal: PrincipalDep, session: SessionDep, modality: str = "", body_part: str = ""
) -> list[TemplateOut]:
    """Templates the caller may use; ``modality``/``body_part`` keep those that fit."""
    return _list(session, principal, "templates", modality, body_part)  # type: ignore[return-value]


@router.get("/report-snippets")
def list_snippets(principal: PrincipalDep, session: SessionDep) -> list[SnippetOut]:
    return _list(session, principal, "snippets")  # type: ignore[return-value]


@router.post("/report-templates", status_code=201)
def create_template(
    body: TemplateIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> TemplateOut:
    facility_id = _writable_facility(session, principal, body.facility)
    row = ReportTemplate(
        facility_id=facility_id,
        name=body.name,
        modality=body.modality.upper(),
        body_part=body.body_part.upper(),
        text=body.text,
        created_by=principal.subject,
    )
    session.add(row)
    session.flush()
    _audit(session, principal, request, "create", row)
    return _out(row, _facility_names(session))  # type: ignore[return-value]


@router.post("/report-snippets", status_code=201)
def create_snippet(
    body: SnippetIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> SnippetOut:
    facility_id = _writable_facility(session, principal, body.facility)
    row = ReportSnippet(
        facility_id=facility_id, name=body.name, text=body.text, created_by=principal.subject
    )
    session.add(row)
    session.flush()
    _audit(session, principal, request, "create", row)
    return _out(row, _facility_names(session))


@router.get("/report-templates/{row_id}")
def get_template(row_id: int, principal: PrincipalDep, session: SessionDep) -> TemplateOut:
    _may_read(principal)
    return _out(_row(session, principal, "templates", row_id), _facility_names(session))  # type: ignore[return-value]


@router.get("/report-snippets/{row_id}")
def get_snippet(row_id: int, principal: PrincipalDep, session: SessionDep) -> SnippetOut:
    _may_read(principal)
    return _out(_row(session, principal, "snippets", row_id), _facility_names(session))


@router.put("/report-templates/{row_id}")
def update_template(
    row_id: int, body: TemplateIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> TemplateOut:
    row = _row(session, principal, "templates", row_id)
    _writable_facility(session, principal, _facility_name(session, row.facility_id))
    row.facility_id = _writable_facility(session, principal, body.facility)
    row.name, row.text = body.name, body.text
    row.modality, row.body_part = body.modality.upper(), body.body_part.upper()
    row.updated_at = utcnow()
    _audit(session, principal, request, "update", row)
    return _out(row, _facility_names(session))  # type: ignore[return-value]


@router.put("/report-snippets/{row_id}")
def update_snippet(
    row_id: int, body: SnippetIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> SnippetOut:
    row = _row(session, principal, "snippets", row_id)
    _writable_facility(session, principal, _facility_name(session, row.facility_id))
    row.facility_id = _writable_facility(session, principal, body.facility)
    row.name, row.text = body.name, body.text
    row.updated_at = utcnow()
    _audit(session, principal, request, "update", row)
    return _out(row, _facility_names(session))


@router.delete("/report-templates/{row_id}", status_code=204)
def delete_template(
    row_id: int, request: Request, principal: PrincipalDep, session: SessionDep
) -> None:
    _delete(session, principal, request, "templates", row_id)


@router.delete("/report-snippets/{row_id}", status_code=204)
def delete_snippet(
    row_id: int, request: Request, principal: PrincipalDep, session: SessionDep
) -> None:
    _delete(session, principal, request, "snippets", row_id)


def _delete(
    session: Session, principal: Principal, request: Request, kind: Kind, row_id: int
) -> None:
    row = _row(session, principal, kind, row_id)
    _writable_facility(session, principal, _facility_name(session, row.facility_id))
    _audit(session, principal, request, "delete", row)
    session.delete(row)


def _facility_name(session: Session, facility_id: int | None) -> str | None:
    if facility_id is None:
        return None
    return session.scalar(select(Facility.name).where(Facility.id == facility_id))
