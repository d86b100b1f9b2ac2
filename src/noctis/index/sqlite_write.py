"""The index write on SQLite: patient, study, series and instance in the caller's transaction.

The filing rules are `noctis.index.backend`'s. Statements are SQLAlchemy Core, built once with
bind parameters (`noctis.index.sqlite_statements`), so each store pays only for execution
(the ORM's per-statement construction cost ~9 ms an instance). The common case, one more
instance of a known series, runs four statements: find the series with its study, insert
the instance, count it in series and study. A new series of a known study runs seven, a new
study seven or eight. (SQLite's write transaction holds the whole database, so writers take
turns: `noctis.index.sqlite.SqliteIndex`.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection

from noctis.dicom.header import InstanceHeader
from noctis.index.backend import (
    DemographicsConflict,
    DifferentContent,
    IndexedInstance,
    InstanceRecord,
    MovedInstance,
    SameContent,
    SeriesOfAnotherStudy,
    StudyOfAnotherPatient,
)
from noctis.index.sqlite_statements import STATEMENTS, SqliteStatements


class _Existing(NamedTuple):
    """An indexed instance's row, as `SqliteStatements.instance_get` selects it."""

    id: int
    sha256: str
    object_key: str
    size_bytes: int
    series_pk: int


class _FiledStudy(NamedTuple):
    """A study's row as the filing checks need it (`SqliteStatements.series_get` after the series'
    own columns, and `SqliteStatements.study_get`)."""

    study_pk: int
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str


def _found(value: Any) -> int:
    """The primary key a conflicting insert guarantees is there."""
    if value is None:
        raise LookupError("row vanished between a conflicting insert and its look-up")
    return int(value)


def _found_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise LookupError("row vanished between a conflicting insert and its look-up")
    return row


def write_instance(conn: Connection, record: InstanceRecord) -> IndexedInstance:
    """Index one stored object; the caller owns the transaction and the write lock."""
    statements = STATEMENTS
    header, facility_id = record.header, record.facility_id
    now, size = record.received_at, record.size
    values = {
        "facility_id": facility_id,
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "instance_number": header.instance_number,
        "transfer_syntax_uid": header.transfer_syntax_uid,
        "rows": header.rows,
        "columns": header.columns,
        "number_of_frames": header.number_of_frames,
        "pixel_data_offset": header.pixel_data_offset,
        "object_key": record.object_key,
        "size_bytes": size,
        "sha256": record.sha256,
        "created_at": now,
    }
    series_key = {"facility_id": facility_id, "series_instance_uid": header.series_instance_uid}
    found = statements.series_get.first(conn, series_key)
    if found is not None:  # the usual case: another instance of a known series
        study = _FiledStudy(*found[1:])
        conflict = _check_filing(header, study)
        values["series_pk"] = found[0]
        if statements.instance_insert.scalar(conn, values) is None:
            return _replace(conn, statements, values, study.study_pk, replace=record.replace)
        series_instances = statements.series_count.scalar(conn, {"pk": found[0], "now": now})
        statements.study_count.run(
            conn, {"pk": study.study_pk, "size": size, "new_series": 0, "now": now}
        )
        return IndexedInstance(None, int(series_instances), conflict)

    study_key = {"facility_id": facility_id, "study_instance_uid": header.study_instance_uid}
    found = statements.study_get.first(conn, study_key)
    conflict = None
    study_is_new = found is None
    if found is None:
        patient_pk, conflict = _patient(conn, statements, facility_id, header)
        study_pk = statements.study_insert.scalar(
            conn, {**study_key, **_study_values(header, patient_pk, now)}
        )
        study_pk = _found(study_pk)  # one writer at a time on SQLite: no concurrent insert
    else:
        study = _FiledStudy(*found)
        conflict = _check_filing(header, study)
        study_pk = study.study_pk
    series_values = {
        "study_pk": study_pk,
        "modality": header.modality,
        "series_number": header.series_number,
        "series_description": header.series_description,
        "body_part_examined": header.body_part_examined,
        "series_date": header.series_date,
        "series_time": header.series_time,
        "number_of_instances": 1,  # counted here, with the instance inserted next
        "created_at": now,
        "updated_at": now,
    }
    values["series_pk"] = _found(
        statements.series_insert.scalar(conn, {**series_key, **series_values})
    )
    if statements.instance_insert.scalar(conn, values) is None:
        return _replace(conn, statements, values, study_pk, replace=record.replace)
    if study_is_new:
        statements.study_first_instance.run(
            conn, {"pk": study_pk, "size": size, "modalities": header.modality}
        )
        return IndexedInstance(None, 1, conflict)
    statements.study_count.run(conn, {"pk": study_pk, "size": size, "new_series": 1, "now": now})
    modalities = statements.modalities.rows(conn, {"study_pk": study_pk})
    joined = "\\".join(sorted(m for (m,) in modalities if m))
    statements.study_modalities.run(conn, {"pk": study_pk, "modalities": joined})
    return IndexedInstance(None, 1, conflict)


def _study_values(header: InstanceHeader, patient_pk: int, now: datetime) -> dict[str, Any]:
    return {
        "patient_pk": patient_pk,
        "patient_id": header.patient_id,
        "issuer_of_patient_id": header.issuer_of_patient_id,
        "patient_name": header.patient_name,
        "patient_birth_date": header.patient_birth_date,
        "patient_sex": header.patient_sex,
        "study_date": header.study_date,
        "study_time": header.study_time,
        "accession_number": header.accession_number,
        "study_id": header.study_id,
        "study_description": header.study_description,
        "referring_physician_name": header.referring_physician_name,
        "created_at": now,
        "updated_at": now,
    }


def _check_filing(header: InstanceHeader, study: _FiledStudy) -> DemographicsConflict | None:
    """Refuse an instance its study's filing does not admit; its demographics conflict, if
    any."""
    if study.study_instance_uid != header.study_instance_uid:
        raise SeriesOfAnotherStudy(study.study_instance_uid)
    if (study.patient_id, study.issuer_of_patient_id) != (
        header.patient_id,
        header.issuer_of_patient_id,
    ):
        raise StudyOfAnotherPatient(header.study_instance_uid)
    return _conflict(
        "study", (study.patient_name, study.patient_birth_date, study.patient_sex), header
    )


def _conflict(
    compared_with: str, stored: tuple[str, str, str], header: InstanceHeader
) -> DemographicsConflict | None:
    if stored == (header.patient_name, header.patient_birth_date, header.patient_sex):
        return None
    return DemographicsConflict(compared_with, *stored)


def _patient(
    conn: Connection, statements: SqliteStatements, facility_id: int, header: InstanceHeader
) -> tuple[int, DemographicsConflict | None]:
    """The new study's patient (inserted unless its PatientID names a known one), and the
    known patient's demographics if they differ from the study's."""
    key = {
        "facility_id": facility_id,
        "patient_id": header.patient_id,
        "issuer_of_patient_id": header.issuer_of_patient_id,
    }
    if header.patient_id:
        row = statements.patient_get.first(conn, key)
        if row is not None:
            return int(row[0]), _conflict("patient", tuple(row[1:]), header)  # type: ignore[arg-type]
    values = {
        "patient_name": header.patient_name,
        "patient_birth_date": header.patient_birth_date,
        "patient_sex": header.patient_sex,
    }
    return _found(statements.patient_insert.scalar(conn, {**key, **values})), None


def _replace(
    conn: Connection,
    statements: SqliteStatements,
    values: dict[str, Any],
    study_pk: int,
    *,
    replace: bool,
) -> IndexedInstance:
    row = statements.instance_get.first(
        conn,
        {"facility_id": values["facility_id"], "sop_instance_uid": values["sop_instance_uid"]},
    )
    existing = _Existing(*_found_row(row))
    if existing.sha256 == values["sha256"]:
        raise SameContent(existing.object_key)
    if not replace:
        raise DifferentContent(values["sop_instance_uid"])
    if existing.series_pk != values["series_pk"]:
        raise MovedInstance(values["sop_instance_uid"])
    statements.instance_replace.run(conn, {**values, "pk": existing.id})
    statements.study_resize.run(
        conn, {"pk": study_pk, "delta": values["size_bytes"] - existing.size_bytes}
    )
    return IndexedInstance(replaced_key=existing.object_key)
