"""Statements run on the DBAPI cursor must write what SQLAlchemy's execute writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import String, bindparam, cast, select, update
from sqlalchemy.exc import IntegrityError

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.driver import DriverStatement
from noctis.index.models import Patient, Study

_STUDY = Study.__table__


def _study_values(facility: FacilityRef, uid: str, patient_pk: int) -> dict[str, object]:
    now = datetime(2026, 11, 23, 12, 30, 15, 123456, tzinfo=UTC)
    return {
        "facility_id": facility.id,
        "study_instance_uid": uid,
        "patient_pk": patient_pk,
        "study_date": "20261123",
        "created_at": now,
        "updated_at": now,
    }


def _stored_as_text(runtime: Runtime, uid: str) -> tuple[object, ...]:
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(
                cast(_STUDY.c.created_at, String),
                _STUDY.c.modalities_in_study,
                _STUDY.c.number_of_instances,
                _STUDY.c.study_date,
            ).where(_STUDY.c.study_instance_uid == uid)
        ).one()
    return tuple(row)


def _patient(runtime: Runtime, facility: FacilityRef) -> int:
    with runtime.sessions.begin() as session:
        patient = Patient(facility_id=facility.id, patient_id="P1")
        session.add(patient)
        session.flush()
        return patient.id


def test_insert_writes_what_core_writes(runtime: Runtime, default_facility: FacilityRef) -> None:
    """Same SQL, same bound values (datetimes as SQLAlchemy stores them), same defaults."""
    patient_pk = _patient(runtime, default_facility)
    insert = _STUDY.insert()
    with runtime.engine.begin() as conn:
        conn.execute(insert, _study_values(default_facility, "1.2.1", patient_pk))
        DriverStatement(insert).run(conn, _study_values(default_facility, "1.2.2", patient_pk))
    assert _stored_as_text(runtime, "1.2.1") == _stored_as_text(runtime, "1.2.2")


def test_update_with_constants_and_bound_values(
    runtime: Runtime, default_facility: FacilityRef
) -> None:
    patient_pk = _patient(runtime, default_facility)
    with runtime.engine.begin() as conn:
        conn.execute(_STUDY.insert(), _study_values(default_facility, "1.2.3", patient_pk))
        statement = (
            update(_STUDY)
            .where(_STUDY.c.study_instance_uid == bindparam("uid"))
            .values(number_of_instances=5, modalities_in_study=bindparam("modalities"))
        )
        DriverStatement(statement).run(conn, {"uid": "1.2.3", "modalities": "CT\\MR"})
    assert _stored_as_text(runtime, "1.2.3")[1:3] == ("CT\\MR", 5)


def test_errors_are_sqlalchemy_errors(runtime: Runtime, default_facility: FacilityRef) -> None:
    patient_pk = _patient(runtime, default_facility)
    insert = DriverStatement(_STUDY.insert())
    with pytest.raises(IntegrityError), runtime.engine.begin() as conn:
        insert.run(conn, _study_values(default_facility, "1.2.4", patient_pk))
        insert.run(conn, _study_values(default_facility, "1.2.4", patient_pk))
    with runtime.engine.connect() as conn:  # and the transaction was rolled back
        assert conn.execute(select(_STUDY.c.id)).first() is None
