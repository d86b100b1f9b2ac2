"""A study's detail: what the index holds about it, and whether it is stable.

``GET /api/facilities/{name}/studies/{study}``: the study as filed in that facility (a Study
Instance UID is one study per facility), with its stable state (``noctis.index.stable``): a
study is stable when no instance has arrived for its facility's quiet time and the worker
has declared its current version; ``stable_at`` says when. Callers see only facilities they
may read (404 otherwise, as for an unknown study).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from noctis.api.rest.deps import SessionDep
from noctis.api.rest.visible import visible_study
from noctis.api.security import PrincipalDep
from noctis.index.stable import study_stability

router = APIRouter()


class StableOut(BaseModel):
    stable: bool = Field(description="no new instance for the quiet time, and declared so")
    stable_at: datetime | None = Field(
        description="when the study's last declared version became stable (UTC)"
    )
    times: int = Field(description="versions of the study declared stable so far")
    derivatives_done: bool = Field(
        description="the current version's thumbnails and metadata bundles are made and it "
        "was sent to routing"
    )


class StudyOut(BaseModel):
    facility: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str
    study_description: str
    modalities_in_study: list[str]
    number_of_series: int
    number_of_instances: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime = Field(description="when its last instance was stored (UTC)")
    stable: StableOut


@router.get("/facilities/{name}/studies/{study}", tags=["studies"])
def get_study(name: str, study: str, principal: PrincipalDep, session: SessionDep) -> StudyOut:
    row = visible_study(session, principal, name, study)
    stability = study_stability(session, row.id)
    return StudyOut(
        facility=name,
        study_instance_uid=row.study_instance_uid,
        patient_id=row.patient_id,
        patient_name=row.patient_name,
        study_date=row.study_date,
        accession_number=row.accession_number,
        study_description=row.study_description,
        modalities_in_study=[m for m in row.modalities_in_study.split("\\") if m],
        number_of_series=row.number_of_series,
        number_of_instances=row.number_of_instances,
        size_bytes=row.size_bytes,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        stable=StableOut(
            stable=stability.stable,
            stable_at=_utc(stability.stable_at) if stability.stable_at else None,
            times=stability.times,
            derivatives_done=stability.derivatives_done,
        ),
    )


def _utc(moment: datetime) -> datetime:
    """Times are stored in UTC; SQLite hands them back without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
