"""The SQLite write path's SQL statements (`noctis.index.sqlite_write`), built once with bind
parameters and run on the DBAPI cursor (`noctis.index.driver`)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.sqlite import insert

from noctis.index.driver import DriverStatement
from noctis.index.models import Instance, Patient, Series, Study

_PATIENT = Patient.__table__
_STUDY = Study.__table__
_SERIES = Series.__table__
_INSTANCE = Instance.__table__


class SqliteStatements:
    """Every statement of the write path, with bind parameters."""

    def __init__(self) -> None:
        p, st, se, i = _PATIENT, _STUDY, _SERIES, _INSTANCE
        facility = bindparam("facility_id")
        filed_study = (
            st.c.id,
            st.c.study_instance_uid,
            st.c.patient_id,
            st.c.issuer_of_patient_id,
            st.c.patient_name,
            st.c.patient_birth_date,
            st.c.patient_sex,
        )
        patient_get = select(
            p.c.id, p.c.patient_name, p.c.patient_birth_date, p.c.patient_sex
        ).where(
            p.c.facility_id == facility,
            p.c.patient_id == bindparam("patient_id"),
            p.c.issuer_of_patient_id == bindparam("issuer_of_patient_id"),
        )
        # An empty PatientID is outside the unique index: such an insert never conflicts.
        patient_insert = (
            insert(p)
            .on_conflict_do_nothing(
                index_elements=["facility_id", "patient_id", "issuer_of_patient_id"],
                index_where=text("patient_id <> ''"),
            )
            .returning(p.c.id)
        )
        study_get = select(*filed_study).where(
            st.c.facility_id == facility,
            st.c.study_instance_uid == bindparam("study_instance_uid"),
        )
        study_insert = _insert_returning(st, ["facility_id", "study_instance_uid"])
        series_get = (
            select(se.c.id, *filed_study)
            .join_from(se, st, st.c.id == se.c.study_pk)
            .where(
                se.c.facility_id == facility,
                se.c.series_instance_uid == bindparam("series_instance_uid"),
            )
        )
        series_insert = _insert_returning(se, ["facility_id", "series_instance_uid"])
        instance_insert = _insert_returning(i, ["facility_id", "sop_instance_uid"])
        instance_get = select(
            i.c.id, i.c.sha256, i.c.object_key, i.c.size_bytes, i.c.series_pk
        ).where(i.c.facility_id == facility, i.c.sop_instance_uid == bindparam("sop_instance_uid"))
        series_count = (
            update(se)
            .where(se.c.id == bindparam("pk"))
            .values(number_of_instances=se.c.number_of_instances + 1, updated_at=bindparam("now"))
            .returning(se.c.number_of_instances)
        )
        study_count = (
            update(st)
            .where(st.c.id == bindparam("pk"))
            .values(
                number_of_instances=st.c.number_of_instances + 1,
                size_bytes=st.c.size_bytes + bindparam("size"),
                number_of_series=st.c.number_of_series + bindparam("new_series"),
                updated_at=bindparam("now"),
            )
        )
        study_first_instance = (
            update(st)
            .where(st.c.id == bindparam("pk"))
            .values(
                number_of_instances=1,
                number_of_series=1,
                size_bytes=bindparam("size"),
                modalities_in_study=bindparam("modalities"),
            )
        )
        modalities = select(se.c.modality).where(se.c.study_pk == bindparam("study_pk")).distinct()
        study_modalities = (
            update(st)
            .where(st.c.id == bindparam("pk"))
            .values(modalities_in_study=bindparam("modalities"))
        )
        # What the duplicate policy "replace" changes: the instance's row, its study's size.
        instance_replace = update(i).where(i.c.id == bindparam("pk"))
        study_resize = (
            update(st)
            .where(st.c.id == bindparam("pk"))
            .values(size_bytes=st.c.size_bytes + bindparam("delta"))
        )
        # All run on the DBAPI cursor (the writer's transaction is the driver's own).
        self.patient_get = DriverStatement(patient_get)
        self.patient_insert = DriverStatement(patient_insert)
        self.study_get = DriverStatement(study_get)
        self.study_insert = DriverStatement(study_insert)
        self.series_get = DriverStatement(series_get)
        self.series_insert = DriverStatement(series_insert)
        self.instance_insert = DriverStatement(instance_insert)
        self.instance_get = DriverStatement(instance_get)
        self.series_count = DriverStatement(series_count)
        self.study_count = DriverStatement(study_count)
        self.study_first_instance = DriverStatement(study_first_instance)
        self.modalities = DriverStatement(modalities)
        self.instance_replace = DriverStatement(instance_replace)
        self.study_resize = DriverStatement(study_resize)
        self.study_modalities = DriverStatement(study_modalities)


def _insert_returning(table: Any, unique: list[str]) -> Any:
    return insert(table).on_conflict_do_nothing(index_elements=unique).returning(table.c.id)


STATEMENTS: Final = SqliteStatements()
