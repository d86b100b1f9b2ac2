"""Facilities (filtered by the caller's grants), who am I, the audit trail, system status."""

from __future__ import annotations

import platform
from datetime import datetime
from importlib import metadata
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from noctis.api.auth.context import AuthContext, AuthContextDep
from noctis.api.rest.deps import AdminDep, SessionDep
from noctis.api.security import PrincipalDep
from noctis.core.audit import AuditFilter, DatabaseAuditSink, query_audit
from noctis.core.facilities import facility_usage
from noctis.core.quota import quota_exceeded
from noctis.core.roles import Role
from noctis.index.accounts import AuditRow, User
from noctis.index.models import Facility, Instance, Patient, Series, Study

router = APIRouter()

MAX_PAGE = 1000


class Me(BaseModel):
    username: str
    role: Role
    method: str
    facilities: list[str] | None = Field(description="null: every facility (administrators)")


class FacilityQuotaOut(BaseModel):
    max_bytes: int | None = Field(description="null: no quota")
    max_studies: int | None = Field(description="null: no quota")
    exceeded: list[str] = Field(
        description="the quotas the facility is at or over (maxBytes, maxStudies): its new "
        "instances are refused (C-STORE 0xA700, STOW-RS 507)"
    )


class FacilityOut(BaseModel):
    name: str
    display_name: str
    enabled: bool
    studies: int
    size_bytes: int
    last_association_at: datetime | None
    quota: FacilityQuotaOut
    storage_pool: str | None = Field(description="null: the Archive's default pool")
    ae_titles: list[str] | None = Field(None, description="administrators only")
    identity_provider_groups: list[str] | None = Field(None, description="administrators only")


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_type: str
    client: str
    action: str
    outcome: str
    study_instance_uid: str | None
    facility_id: int | None
    detail: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


@router.get("/me", tags=["session"])
def me(principal: PrincipalDep, session: SessionDep) -> Me:
    names = None
    if principal.facility_ids is not None:
        names = sorted(
            session.scalars(select(Facility.name).where(Facility.id.in_(principal.facility_ids)))
        )
    return Me(
        username=principal.subject, role=principal.role, method=principal.method, facilities=names
    )


def _facility_out(session: SessionDep, facility: Facility, admin: bool) -> FacilityOut:
    studies, size = facility_usage(session, facility.id)
    return FacilityOut(
        name=facility.name,
        display_name=facility.display_name,
        enabled=facility.enabled,
        studies=studies,
        size_bytes=size,
        last_association_at=facility.last_association_at,
        quota=FacilityQuotaOut(
            max_bytes=facility.quota_bytes,
            max_studies=facility.quota_studies,
            exceeded=quota_exceeded(facility.quota_bytes, facility.quota_studies, size, studies),
        ),
        storage_pool=facility.storage_pool,
        ae_titles=[ae.ae_title for ae in facility.application_entities] if admin else None,
        identity_provider_groups=list(facility.idp_groups) if admin else None,
    )


@router.get("/facilities", tags=["facilities"])
def list_facilities(principal: PrincipalDep, session: SessionDep) -> list[FacilityOut]:
    query = select(Facility).order_by(Facility.name)
    if principal.facility_ids is not None:
        query = query.where(Facility.id.in_(principal.facility_ids))
    return [_facility_out(session, f, principal.is_admin) for f in session.scalars(query)]


@router.get("/facilities/{name}", tags=["facilities"])
def get_facility(name: str, principal: PrincipalDep, session: SessionDep) -> FacilityOut:
    facility = session.scalar(select(Facility).where(Facility.name == name))
    if facility is None or not principal.can_read(facility.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no facility named {name!r}")
    return _facility_out(session, facility, principal.is_admin)


@router.get("/audit", tags=["audit"])
def audit_events(
    _: AdminDep,
    request: Request,
    context: AuthContextDep,
    user: Annotated[str | None, Query(description="actor: user name or AE title")] = None,
    actor_type: Annotated[str | None, Query(pattern="^(user|token|ae)$")] = None,
    study: Annotated[str | None, Query(description="Study Instance UID")] = None,
    action: str | None = None,
    outcome: str | None = None,
    facility: Annotated[str | None, Query(description="facility name")] = None,
    since: Annotated[datetime | None, Query(description="from this time (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditPage:
    """Audit events, newest first, one page at a time."""
    sink = getattr(request.app.state, "audit", None)
    if isinstance(sink, DatabaseAuditSink):
        sink.flush(timeout=5.0)  # what this process recorded so far is in the answer
    with context.runtime.sessions() as session:
        facility_id = None
        if facility is not None:
            facility_id = session.scalar(select(Facility.id).where(Facility.name == facility))
            if facility_id is None:
                return AuditPage(items=[], limit=limit, offset=offset, next_offset=None)
        where = AuditFilter(
            actor=user,
            actor_type=actor_type,
            action=action,
            outcome=outcome,
            study_instance_uid=study,
            facility_id=facility_id,
            since=since,
            until=until,
        )
        rows = query_audit(session, where, limit=limit + 1, offset=offset)
    items = [AuditEventOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(
        items=items, limit=limit, offset=offset, next_offset=offset + limit if more else None
    )


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@router.get("/system", tags=["system"])
def system_status(_: AdminDep, context: AuthContextDep) -> dict[str, Any]:
    """Versions, readiness of the index and object store, and counts."""
    readiness = context.runtime.readiness()  # before our own transaction (SQLite: one writer)
    with context.runtime.sessions() as session:
        return _system_status(session, context, readiness)


def _system_status(
    session: Session, context: AuthContext, readiness: dict[str, str]
) -> dict[str, Any]:
    from noctis.api.viewer import installed_viewer_version

    def count(column: Any) -> int:
        return int(session.scalar(select(func.count(column))) or 0)

    return {
        "mode": context.settings.mode,
        "versions": {
            "noctis": _version("noctis"),
            "python": platform.python_version(),
            "fastapi": _version("fastapi"),
            "sqlalchemy": _version("sqlalchemy"),
            "pydicom": _version("pydicom"),
            "database": context.runtime.index.name,
            "viewer": installed_viewer_version(context.settings),
        },
        "ready": all(v == "ok" for v in readiness.values()),
        "readiness": readiness,
        "counts": {
            "facilities": count(Facility.id),
            "patients": count(Patient.id),
            "studies": count(Study.id),
            "series": count(Series.id),
            "instances": count(Instance.id),
            "bytes": int(
                session.scalar(select(func.coalesce(func.sum(Instance.size_bytes), 0))) or 0
            ),
            "users": count(User.id),
            "audit_events": count(AuditRow.id),
        },
        "oidc": context.oidc is not None,
    }
