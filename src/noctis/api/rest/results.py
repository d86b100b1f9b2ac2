"""Results of automated analysis of a study (``noctis.core.results``).

``GET /api/studies/{facility}/{study}/results``: the study's SR and SEG results, oldest first,
with their summary, sender and critical flag. For the worklist's roles (403 otherwise); a
study of a facility the caller may not see is 404, as an unknown one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from noctis.api.rest.deps import SessionDep
from noctis.api.rest.visible import visible_study
from noctis.api.security import PrincipalDep
from noctis.core.results import results_of_study
from noctis.core.roles import WORKLIST_ROLES
from noctis.dicom.analysis import RESULT_CLASSES
from noctis.index.results import AnalysisResult

router = APIRouter(tags=["results"])


class ResultOut(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_class: str = Field(description="the SOP class's name, e.g. Comprehensive SR")
    kind: str = Field(description="sr or seg")
    sender: str | None = Field(description="the AE title or user that sent it, once known")
    sender_type: str | None = Field(description="ae, user or token")
    title: str = Field(description="the SR's document title, or the SEG's content label")
    findings: list[str] = Field(description="the findings' text and codes, or segment labels")
    codes: list[str] = Field(description="coded findings asserted, as SCHEME:VALUE")
    critical: bool = Field(description="it declares a critical finding")
    critical_reason: str
    recorded_at: datetime


def result_out(result: AnalysisResult) -> ResultOut:
    recorded = result.recorded_at
    return ResultOut(
        sop_instance_uid=result.sop_instance_uid,
        series_instance_uid=result.series_instance_uid,
        sop_class_uid=result.sop_class_uid,
        sop_class=RESULT_CLASSES.get(result.sop_class_uid, result.sop_class_uid),
        kind=result.kind,
        sender=result.sender,
        sender_type=result.sender_type,
        title=result.title,
        findings=list(result.summary.get("findings", [])),
        codes=list(result.summary.get("codes", [])),
        critical=result.critical,
        critical_reason=result.critical_reason,
        recorded_at=recorded if recorded.tzinfo else recorded.replace(tzinfo=UTC),
    )


@router.get("/studies/{facility}/{study}/results")
def list_results(
    facility: str, study: str, principal: PrincipalDep, session: SessionDep
) -> list[ResultOut]:
    if principal.role not in WORKLIST_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="not a role of the worklist")
    found = visible_study(session, principal, facility, study)
    return [result_out(r) for r in results_of_study(session, found.id)]
