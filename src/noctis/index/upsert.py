"""The index half of the write path: patient, study, series and instance in one transaction.

On SQLite, statements are SQLAlchemy Core, built once with bind parameters, so each store
pays only for execution (the ORM's per-statement construction cost ~9 ms an instance).
The common case, one more instance of a known series, runs five statements: find patient,
find study, find series, insert instance, count it in series and study. A new study runs
seven: find and insert patient, find and insert study, insert series and instance, count
them in the study. (SQLite's write transaction holds the whole database, so writers of one
study take turns.)

On PostgreSQL the same steps run in the server, in one call of the function that migration
0003 defines (`noctis.index.pg_write`): a round trip costs more there than all the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from noctis.dicom.header import InstanceHeader
from noctis.index.driver import DriverStatement
from noctis.index.models import Instance, Patient, Series, Study
from noctis.index.pg_write import (
    MOVED_INSTANCE,
    SAME_CONTENT,
    AlreadyIndexed,
    call_write_instance,
)

_PATIENT = Patient.__table__
_STUDY = Study.__table__
_SERIES = Series.__table__
_INSTANCE = Instance.__table__


class SameContent(Exception):
    """The instance is already indexed with these very bytes (a concurrent duplicate)."""

    def __init__(self, object_key: str) -> None:
        self.object_key = object_key


class DifferentContent(Exception):
    """The instance is already indexed with other bytes and replacing is not allowed."""


class MovedInstance(Exception):
    """A replacement would move the instance to another series."""


@dataclass(frozen=True)
class StoredContent:
    """What the index holds for a SOP Instance UID: enough to tell a duplicate."""

    object_key: str
    sha256: str


def find_content(conn: Connection, facility_id: int, sop_uid: str) -> StoredContent | None:
    row = _statements(conn.dialect.name).instance_get.first(
        conn, {"facility_id": facility_id, "sop_instance_uid": sop_uid}
    )
    if row is None:
        return None
    existing = _Existing(*row)
    return StoredContent(existing.object_key, existing.sha256)


class _Existing(NamedTuple):
    """An indexed instance's row, as `_Statements.instance_get` selects it."""

    id: int
    sha256: str
    object_key: str
    size_bytes: int
    series_pk: int


def _found(value: Any) -> int:
    """The primary key a conflicting insert guarantees is there."""
    if value is None:
        raise LookupError("row vanished between a conflicting insert and its look-up")
    return int(value)


def _found_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise LookupError("row vanished between a conflicting insert and its look-up")
    return row


@dataclass(frozen=True)
class IndexedInstance:
    replaced_key: str | None  # the object the index no longer references, if any
    series_instances: int | None = None  # the series' instance count after this write


def write_instance(
    conn: Connection,
    facility_id: int,
    header: InstanceHeader,
    *,
    object_key: str,
    size: int,
    sha256: str,
    now: datetime,
    replace: bool,
) -> IndexedInstance:
    """Index one stored object; the caller owns the transaction (on PostgreSQL, an
    autocommit connection makes the one function call its own transaction)."""
    if conn.dialect.name == "postgresql":
        return _write_on_postgresql(
            conn,
            facility_id,
            header,
            object_key=object_key,
            size=size,
            sha256=sha256,
            now=now,
            replace=replace,
        )
    statements = _statements(conn.dialect.name)
    patient_pk = _patient(conn, statements, facility_id, header)
    study_pk, study_is_new = _get_or_insert(
        conn,
        statements.study_get,
        statements.study_insert,
        {"facility_id": facility_id, "study_instance_uid": header.study_instance_uid},
        {
            "patient_pk": patient_pk,
            "study_date": header.study_date,
            "study_time": header.study_time,
            "accession_number": header.accession_number,
            "study_id": header.study_id,
            "study_description": header.study_description,
            "referring_physician_name": header.referring_physician_name,
            "created_at": now,
            "updated_at": now,
        },
    )
    series_key = {"facility_id": facility_id, "series_instance_uid": header.series_instance_uid}
    series_values = {
        "study_pk": study_pk,
        "modality": header.modality,
        "series_number": header.series_number,
        "series_description": header.series_description,
        "body_part_examined": header.body_part_examined,
        "series_date": header.series_date,
        "series_time": header.series_time,
        "created_at": now,
        "updated_at": now,
    }
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
        "object_key": object_key,
        "size_bytes": size,
        "sha256": sha256,
        "created_at": now,
    }
    if study_is_new:
        # A new study's series is new too (unless the sender reused its UID in another study):
        # insert it with its first instance counted, and count the study once.
        series_pk = statements.series_insert.scalar(
            conn, {**series_key, **series_values, "number_of_instances": 1}
        )
        if series_pk is not None:
            values["series_pk"] = series_pk
            if statements.instance_insert.scalar(conn, values) is None:
                return _replace(conn, statements, values, study_pk, replace=replace)
            statements.study_first_instance.run(
                conn,
                {"pk": study_pk, "size": size, "modalities": header.modality},
            )
            return IndexedInstance(replaced_key=None, series_instances=1)
    series_pk, series_is_new = _get_or_insert(
        conn, statements.series_get, statements.series_insert, series_key, series_values
    )
    values["series_pk"] = series_pk
    if statements.instance_insert.scalar(conn, values) is None:
        return _replace(conn, statements, values, study_pk, replace=replace)
    series_instances = statements.series_count.scalar(conn, {"pk": series_pk, "now": now})
    statements.study_count.run(
        conn,
        {"pk": study_pk, "size": size, "new_series": int(series_is_new), "now": now},
    )
    if series_is_new:
        if study_is_new:  # its only series
            joined = header.modality
        else:
            modalities = conn.execute(statements.modalities, {"study_pk": study_pk}).scalars()
            joined = "\\".join(sorted(m for m in modalities if m))
        statements.study_modalities.run(conn, {"pk": study_pk, "modalities": joined})
    return IndexedInstance(replaced_key=None, series_instances=int(series_instances))


def _write_on_postgresql(
    conn: Connection,
    facility_id: int,
    header: InstanceHeader,
    *,
    object_key: str,
    size: int,
    sha256: str,
    now: datetime,
    replace: bool,
) -> IndexedInstance:
    try:
        replaced_key, series_instances = call_write_instance(
            conn,
            facility_id,
            header,
            object_key=object_key,
            size=size,
            sha256=sha256,
            now=now,
            replace=replace,
        )
    except AlreadyIndexed as refused:
        if refused.sqlstate == SAME_CONTENT:
            raise SameContent(refused.object_key or "") from refused
        if refused.sqlstate == MOVED_INSTANCE:
            raise MovedInstance(header.sop_instance_uid) from refused
        raise DifferentContent(header.sop_instance_uid) from refused
    return IndexedInstance(replaced_key=replaced_key, series_instances=series_instances)


def _patient(
    conn: Connection, statements: _Statements, facility_id: int, header: InstanceHeader
) -> int:
    wanted = (header.patient_name, header.patient_birth_date, header.patient_sex)
    key = {"facility_id": facility_id, "patient_id": header.patient_id}
    row = statements.patient_get.first(conn, key)
    if row is None:
        values = dict(
            zip(("patient_name", "patient_birth_date", "patient_sex"), wanted, strict=True)
        )
        pk = statements.patient_insert.scalar(conn, {**key, **values})
        if pk is not None:
            return int(pk)
        # A concurrent writer inserted the patient since our look-up.
        return _found(statements.patient_get_id.scalar(conn, key))
    if tuple(row[1:]) != wanted:  # the latest demographics win, as the modality sent them
        statements.patient_update.run(
            conn,
            {"pk": row[0], "name": wanted[0], "birth": wanted[1], "sex": wanted[2]},
        )
    return int(row[0])


def _get_or_insert(
    conn: Connection,
    get: DriverStatement,
    insert: DriverStatement,
    key: dict[str, Any],
    values: dict[str, Any],
) -> tuple[int, bool]:
    """(primary key, inserted?): look up first (the usual case), insert when missing."""
    pk = get.scalar(conn, key)
    if pk is not None:
        return int(pk), False
    pk = insert.scalar(conn, {**key, **values})
    if pk is not None:
        return int(pk), True
    # A concurrent writer inserted it between our look-up and insert.
    return _found(get.scalar(conn, key)), False


def _replace(
    conn: Connection,
    statements: _Statements,
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
    conn.execute(
        update(_INSTANCE).where(_INSTANCE.c.id == existing.id).values(**values),
    )
    conn.execute(
        update(_STUDY)
        .where(_STUDY.c.id == study_pk)
        .values(size_bytes=_STUDY.c.size_bytes + values["size_bytes"] - existing.size_bytes),
    )
    return IndexedInstance(replaced_key=existing.object_key)


class _Statements:
    """Every statement of the write path, with bind parameters, for one dialect."""

    def __init__(self, dialect: str) -> None:
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
        if insert is None:
            raise NotImplementedError(f"the index supports PostgreSQL and SQLite, not {dialect}")
        p, st, se, i = _PATIENT, _STUDY, _SERIES, _INSTANCE
        facility = bindparam("facility_id")
        patient_get = select(
            p.c.id, p.c.patient_name, p.c.patient_birth_date, p.c.patient_sex
        ).where(p.c.facility_id == facility, p.c.patient_id == bindparam("patient_id"))
        patient_get_id = select(p.c.id).where(
            p.c.facility_id == facility, p.c.patient_id == bindparam("patient_id")
        )
        patient_insert = _insert_returning(insert, p, ["facility_id", "patient_id"])
        patient_update = (
            update(p)
            .where(p.c.id == bindparam("pk"))
            .values(
                patient_name=bindparam("name"),
                patient_birth_date=bindparam("birth"),
                patient_sex=bindparam("sex"),
            )
        )
        study_get = select(st.c.id).where(
            st.c.facility_id == facility,
            st.c.study_instance_uid == bindparam("study_instance_uid"),
        )
        study_insert = _insert_returning(insert, st, ["facility_id", "study_instance_uid"])
        series_get = select(se.c.id).where(
            se.c.facility_id == facility,
            se.c.series_instance_uid == bindparam("series_instance_uid"),
        )
        series_insert = _insert_returning(insert, se, ["facility_id", "series_instance_uid"])
        instance_insert = _insert_returning(insert, i, ["facility_id", "sop_instance_uid"])
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
        # The hot statements run on the DBAPI cursor; this one, rarely run, through Core.
        self.patient_get = DriverStatement(patient_get)
        self.patient_get_id = DriverStatement(patient_get_id)
        self.patient_insert = DriverStatement(patient_insert)
        self.patient_update = DriverStatement(patient_update)
        self.study_get = DriverStatement(study_get)
        self.study_insert = DriverStatement(study_insert)
        self.series_get = DriverStatement(series_get)
        self.series_insert = DriverStatement(series_insert)
        self.instance_insert = DriverStatement(instance_insert)
        self.instance_get = DriverStatement(instance_get)
        self.series_count = DriverStatement(series_count)
        self.study_count = DriverStatement(study_count)
        self.study_first_instance = DriverStatement(study_first_instance)
        self.modalities = modalities
        self.study_modalities = DriverStatement(study_modalities)


def _insert_returning(insert: Any, table: Any, unique: list[str]) -> Any:
    return insert(table).on_conflict_do_nothing(index_elements=unique).returning(table.c.id)


@cache
def _statements(dialect: str) -> _Statements:
    return _Statements(dialect)
