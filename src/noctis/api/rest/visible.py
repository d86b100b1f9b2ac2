"""A study named by facility and Study Instance UID, as the caller may see it.

Every workflow route (worklist, reports, attachments, results, the study's REST record) finds
its study here. A study the caller may not see answers exactly like one that does not exist
(404), so its existence is not disclosed; when it exists in a facility the caller is not
granted, the audit trail records the refusal ("denied", with the facility that holds it), as
DICOMweb does.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.api.audit import web_event
from noctis.api.security import Principal, client_address, get_principal
from noctis.core.audit import AuditOutcome, AuditSink
from noctis.index.models import Facility, Study


class StudyNotVisible(HTTPException):
    def __init__(self, facility: str, study_uid: str, hidden_in: int | None) -> None:
        super().__init__(
            status.HTTP_404_NOT_FOUND, detail=f"no study {study_uid} in facility {facility!r}"
        )
        self.study_uid = study_uid
        self.hidden_in = hidden_in  # the facility holding it, when it exists but is not visible


def visible_study(session: Session, principal: Principal, facility: str, study_uid: str) -> Study:
    """The study as filed in ``facility``, or `StudyNotVisible` (404)."""
    found = session.scalar(
        select(Study)
        .join(Facility, Study.facility_id == Facility.id)
        .where(Facility.name == facility, Study.study_instance_uid == study_uid)
    )
    if found is None or not principal.can_read(found.facility_id):
        raise StudyNotVisible(facility, study_uid, found.facility_id if found else None)
    return found


def record_refusal(request: Request, refused: StudyNotVisible) -> None:
    """Audit a request refused a study of another facility (nothing for an unknown study)."""
    sink: AuditSink | None = getattr(request.app.state, "audit", None)
    if refused.hidden_in is None or sink is None:
        return
    sink.record(
        web_event(
            get_principal(request),
            client_address(request),
            "study",
            AuditOutcome.DENIED,
            study_instance_uid=refused.study_uid,
            facility_id=refused.hidden_in,
            detail={
                "method": request.method,
                "path": request.url.path,
                "reason": "study of another facility",
            },
        )
    )


def install(app: FastAPI) -> None:
    async def not_visible(request: Request, refused: Exception) -> Response:
        assert isinstance(refused, StudyNotVisible)
        record_refusal(request, refused)
        return JSONResponse({"detail": refused.detail}, status_code=refused.status_code)

    app.add_exception_handler(StudyNotVisible, not_visible)
