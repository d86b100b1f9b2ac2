"""Attribute matching for queries: one implementation serves DIMSE C-FIND and QIDO-RS.

Matching follows PS3.4 C.2.2.2: an empty value is universal matching; UI values may be a
backslash-separated list; DA/TM/DT values may be ranges (``a-b``, ``-b``, ``a-``); string
values may use ``*`` and ``?`` wildcards. Person names match case-insensitively (what users
expect from a PACS search box). Keys the index does not hold are not matched on: callers
decide whether to ignore them (C-FIND) or refuse them (QIDO).

Patient attributes come from the study row at STUDY, SERIES and IMAGE level (each study keeps
those it arrived with, and is matched on them), and from the patient row at PATIENT level.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Select, and_, exists, func, literal, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.functions import FunctionElement

from noctis.index.models import Facility, Instance, Patient, Series, Study


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


_MAX_INTEGER = 2**31 - 1  # IS values are 32-bit; larger ones overflow the database drivers


class QueryError(ValueError):
    """A matching value the archive cannot interpret (bad date range, non-numeric IS...)."""


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: int
    vr: str
    level: Level
    column: Any  # a mapped column, or None for computed attributes
    matchable: bool = True
    study_column: Any = None  # a patient attribute's copy on the study row

    def column_at(self, level: Level) -> Any:
        """The column holding this attribute in results at ``level``."""
        if self.study_column is not None and level is not Level.PATIENT:
            return self.study_column
        return self.column


_STUDY_COPIES = {
    "PatientName": Study.patient_name,
    "PatientID": Study.patient_id,
    "IssuerOfPatientID": Study.issuer_of_patient_id,
    "PatientBirthDate": Study.patient_birth_date,
    "PatientSex": Study.patient_sex,
}


def _attributes() -> dict[str, Attribute]:
    rows = [
        ("PatientName", 0x00100010, "PN", Level.PATIENT, Patient.patient_name),
        ("PatientID", 0x00100020, "LO", Level.PATIENT, Patient.patient_id),
        (
            "IssuerOfPatientID",
            0x00100021,
            "LO",
            Level.PATIENT,
            Patient.issuer_of_patient_id,
        ),
        ("PatientBirthDate", 0x00100030, "DA", Level.PATIENT, Patient.patient_birth_date),
        ("PatientSex", 0x00100040, "CS", Level.PATIENT, Patient.patient_sex),
        ("StudyInstanceUID", 0x0020000D, "UI", Level.STUDY, Study.study_instance_uid),
        ("StudyDate", 0x00080020, "DA", Level.STUDY, Study.study_date),
        ("StudyTime", 0x00080030, "TM", Level.STUDY, Study.study_time),
        ("AccessionNumber", 0x00080050, "SH", Level.STUDY, Study.accession_number),
        ("StudyID", 0x00200010, "SH", Level.STUDY, Study.study_id),
        ("StudyDescription", 0x00081030, "LO", Level.STUDY, Study.study_description),
        ("ReferringPhysicianName", 0x00080090, "PN", Level.STUDY, Study.referring_physician_name),
        ("ModalitiesInStudy", 0x00080061, "CS", Level.STUDY, Study.modalities_in_study),
        ("NumberOfStudyRelatedSeries", 0x00201206, "IS", Level.STUDY, Study.number_of_series),
        ("NumberOfStudyRelatedInstances", 0x00201208, "IS", Level.STUDY, Study.number_of_instances),
        ("SeriesInstanceUID", 0x0020000E, "UI", Level.SERIES, Series.series_instance_uid),
        ("Modality", 0x00080060, "CS", Level.SERIES, Series.modality),
        ("SeriesNumber", 0x00200011, "IS", Level.SERIES, Series.series_number),
        ("SeriesDescription", 0x0008103E, "LO", Level.SERIES, Series.series_description),
        ("BodyPartExamined", 0x00180015, "CS", Level.SERIES, Series.body_part_examined),
        ("SeriesDate", 0x00080021, "DA", Level.SERIES, Series.series_date),
        ("SeriesTime", 0x00080031, "TM", Level.SERIES, Series.series_time),
        (
            "NumberOfSeriesRelatedInstances",
            0x00201209,
            "IS",
            Level.SERIES,
            Series.number_of_instances,
        ),
        ("SOPInstanceUID", 0x00080018, "UI", Level.IMAGE, Instance.sop_instance_uid),
        ("SOPClassUID", 0x00080016, "UI", Level.IMAGE, Instance.sop_class_uid),
        ("InstanceNumber", 0x00200013, "IS", Level.IMAGE, Instance.instance_number),
        ("Rows", 0x00280010, "US", Level.IMAGE, Instance.rows),
        ("Columns", 0x00280011, "US", Level.IMAGE, Instance.columns),
        ("NumberOfFrames", 0x00280008, "IS", Level.IMAGE, Instance.number_of_frames),
        (
            "AvailableTransferSyntaxUID",
            0x00083002,
            "UI",
            Level.IMAGE,
            Instance.transfer_syntax_uid,
        ),
    ]
    table = {
        kw: Attribute(kw, tag, vr, level, column, study_column=_STUDY_COPIES.get(kw))
        for kw, tag, vr, level, column in rows
    }
    table["NumberOfPatientRelatedStudies"] = Attribute(
        "NumberOfPatientRelatedStudies", 0x00201200, "IS", Level.PATIENT, None, matchable=False
    )
    return table


ATTRIBUTES: dict[str, Attribute] = _attributes()
BY_TAG: dict[int, Attribute] = {a.tag: a for a in ATTRIBUTES.values()}


def attributes_for(level: Level) -> list[Attribute]:
    """Attributes a result at ``level`` can carry: its own and its parents'."""
    depth = _DEPTH[level]
    return [a for a in ATTRIBUTES.values() if _DEPTH[a.level] <= depth and _returnable(a, level)]


def _returnable(attribute: Attribute, level: Level) -> bool:
    if attribute.keyword == "NumberOfPatientRelatedStudies":
        return level is Level.PATIENT
    return True


@dataclass
class MatchQuery:
    level: Level
    filters: Mapping[str, str] = field(default_factory=dict)
    facility_ids: Collection[int] | None = None  # None: every facility (administrators)
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False


@dataclass(frozen=True)
class Match:
    """One matching entity: DICOM values by keyword, and where its data lives."""

    values: dict[str, Any]
    facility: str
    study_pk: int | None = None
    series_pk: int | None = None
    instance_pk: int | None = None
    object_key: str | None = None
    transfer_syntax_uid: str | None = None


def find(session: Session, query: MatchQuery) -> list[Match]:
    with _planned_for_its_values(session):
        if query.level is Level.PATIENT:
            return _find_patients(session, query)
        statement = _base_statement(query.level)
        statement = _apply_filters(statement, query)
        statement = _order(statement, query.level)
        if query.offset:
            statement = statement.offset(query.offset)
        if query.limit is not None:
            statement = statement.limit(query.limit)
        keywords = _column_keywords(query.level)
        return [_to_match(row, keywords) for row in session.execute(statement)]


def count(session: Session, query: MatchQuery) -> int:
    with _planned_for_its_values(session):
        if query.level is Level.PATIENT:
            return len(_find_patients(session, query))
        statement = _apply_filters(_base_statement(query.level), query)
        return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)


@contextmanager
def _planned_for_its_values(session: Session) -> Iterator[None]:
    """PostgreSQL: run the search unprepared, so that it is planned for its own values.

    psycopg prepares a query it has run five times on a connection, and PostgreSQL then plans
    it once for any values (a generic plan) from the statistics of that moment: a QIDO search
    prepared while a new archive was filling up kept a plan for near-empty tables and took
    1.7 s instead of 40 ms until the next analyze. The write path's statements, simple and
    hot, stay prepared.
    """
    driver = session.connection().connection.driver_connection
    threshold = getattr(driver, "prepare_threshold", _NOT_PSYCOPG)
    if threshold is _NOT_PSYCOPG:
        yield
        return
    driver.prepare_threshold = None  # type: ignore[union-attr]
    try:
        yield
    finally:
        driver.prepare_threshold = threshold  # type: ignore[union-attr]


_NOT_PSYCOPG = object()


def _base_statement(level: Level) -> Select[Any]:
    # Plain columns, not ORM entities: a thousand study rows load ~7x faster.
    depth = _DEPTH[level]
    columns: list[Any] = [
        Facility.name.label("_facility"),
        Study.id.label("_study_pk"),
    ]
    if depth >= 2:
        columns.append(Series.id.label("_series_pk"))
    if depth >= 3:
        columns += [
            Instance.id.label("_instance_pk"),
            Instance.object_key.label("_object_key"),
            Instance.transfer_syntax_uid.label("_transfer_syntax_uid"),
        ]
    columns += [
        a.column_at(level).label(a.keyword) for a in attributes_for(level) if a.column is not None
    ]
    statement = select(*columns).select_from(Study)
    statement = statement.join(Facility, Study.facility_id == Facility.id)
    if depth >= 2:
        statement = statement.join(Series, Series.study_pk == Study.id)
    if depth >= 3:
        statement = statement.join(Instance, Instance.series_pk == Series.id)
    return statement


def _apply_filters(
    statement: Select[Any], query: MatchQuery, facility: Any = Study.facility_id
) -> Select[Any]:
    if query.facility_ids is not None:
        statement = statement.where(facility.in_(list(query.facility_ids)))
    depth = _DEPTH[query.level]
    for keyword, raw in query.filters.items():
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None or not attribute.matchable or raw is None:
            continue
        value = str(raw).strip()
        if value in ("", "*"):
            continue
        if _DEPTH[attribute.level] > depth:
            continue  # a lower-level key cannot constrain a higher-level result
        condition = _condition(attribute, value, level=query.level, fuzzy=query.fuzzy)
        statement = statement.where(condition)
    return statement


def _condition(
    attribute: Attribute, value: str, *, level: Level, fuzzy: bool
) -> ColumnElement[bool]:
    column = attribute.column_at(level)
    if attribute.keyword == "ModalitiesInStudy":
        wanted = [v.strip() for v in value.split("\\") if v.strip()]
        if not wanted:
            return true()
        # An alias: at SERIES/IMAGE level the outer query has its own Series row.
        other = aliased(Series)
        return exists().where(other.study_pk == Study.id, other.modality.in_(wanted))
    if attribute.vr == "UI":
        uids = [v.strip() for v in value.split("\\") if v.strip()]
        if not uids:
            return true()
        return column.in_(uids) if len(uids) > 1 else column == uids[0]
    if attribute.vr in ("DA", "TM", "DT"):
        return _range_condition(column, value, attribute.vr)
    if attribute.vr in ("IS", "US"):
        try:
            numbers = [int(v) for v in value.split("\\")]
        except ValueError as exc:
            raise QueryError(f"{attribute.keyword} must be a number, got {value!r}") from exc
        if any(abs(n) > _MAX_INTEGER for n in numbers):
            raise QueryError(f"{attribute.keyword} is out of range: {value!r}")
        return column.in_(numbers)
    if attribute.vr == "PN":
        pattern = _like_pattern(value)
        if fuzzy and not pattern.endswith("%"):
            pattern += "%"
        return _CaseInsensitiveLike(column, literal(pattern))
    if "*" in value or "?" in value:
        return column.like(_like_pattern(value), escape="\\")
    alternatives = value.split("\\")
    return column.in_(alternatives) if len(alternatives) > 1 else column == value


class _CaseInsensitiveLike(FunctionElement[bool]):
    """``column LIKE pattern`` ignoring case (pattern escaped with a backslash), written so
    that the study's PatientName index (migration 0004) serves a prefix such as ``A*``:
    ``lower(column) LIKE lower(pattern)`` for PostgreSQL's index on lower(patient_name); a
    plain LIKE for SQLite, whose LIKE ignores ASCII case (its lower() folds nothing more) and
    uses an index in NOCASE collation."""

    type = Boolean()
    inherit_cache = True
    name = "case_insensitive_like"


@compiles(_CaseInsensitiveLike)
def _lower_like(element: _CaseInsensitiveLike, compiler: Any, **kw: Any) -> str:
    column, pattern = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"lower({column}) LIKE lower({pattern}) ESCAPE '\\'"


@compiles(_CaseInsensitiveLike, "sqlite")
def _sqlite_like(element: _CaseInsensitiveLike, compiler: Any, **kw: Any) -> str:
    column, pattern = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} LIKE {pattern} ESCAPE '\\'"


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _range_condition(column: Any, value: str, vr: str) -> ColumnElement[bool]:
    low, dash, high = value.partition("-")
    low, high = _normalize(low, vr), _normalize(high, vr)
    if not dash:
        if vr == "TM":  # a single time matches the whole second / minute it names
            return and_(column >= low, column < _successor(low))
        return column == low
    if not low and not high:
        raise QueryError(f"empty range {value!r}")
    conditions: list[ColumnElement[bool]] = [column != ""]
    if low:
        conditions.append(column >= low)
    if high:
        conditions.append(column <= high if vr == "DA" else column < _successor(high))
    return and_(*conditions)


def _normalize(value: str, vr: str) -> str:
    value = value.strip()
    if not value:
        return ""
    if vr == "DA":
        value = value.replace("-", "").replace(".", "")
        if len(value) != 8 or not value.isdigit():
            raise QueryError(f"dates are YYYYMMDD, got {value!r}")
        return value
    value = value.replace(":", "")
    head = value.split(".")[0]
    if not head.isdigit() or len(head) not in (2, 4, 6):
        raise QueryError(f"times are HHMMSS[.ffffff], got {value!r}")
    return value


def _successor(value: str) -> str:
    # The smallest string greater than every string starting with ``value``.
    return value + "\x7f"


def _order(statement: Select[Any], level: Level) -> Select[Any]:
    if level is Level.STUDY:
        return statement.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id)
    if level is Level.SERIES:
        return statement.order_by(Study.id, Series.series_number, Series.id)
    return statement.order_by(Series.id, Instance.instance_number, Instance.id)


def _column_keywords(level: Level) -> list[str]:
    """The attributes a result row at ``level`` holds in columns."""
    return [a.keyword for a in attributes_for(level) if a.column is not None]


def _to_match(row: Any, keywords: list[str]) -> Match:
    mapping = row._mapping
    values = {keyword: mapping[keyword] for keyword in keywords}
    return Match(
        values=values,
        facility=mapping["_facility"],
        study_pk=mapping["_study_pk"],
        series_pk=mapping.get("_series_pk"),
        instance_pk=mapping.get("_instance_pk"),
        object_key=mapping.get("_object_key"),
        transfer_syntax_uid=mapping.get("_transfer_syntax_uid"),
    )


def _find_patients(session: Session, query: MatchQuery) -> list[Match]:
    """Patients with at least one study, matched on the patient row."""
    statement = (
        select(Facility.name, Patient, func.count(Study.id))
        .select_from(Patient)
        .join(Facility, Patient.facility_id == Facility.id)
        .join(Study, Study.patient_pk == Patient.id)
    )
    statement = _apply_filters(
        statement,
        MatchQuery(Level.PATIENT, _patient_filters(query), query.facility_ids, fuzzy=query.fuzzy),
        facility=Patient.facility_id,
    )
    statement = (
        statement.group_by(Facility.name, Patient.id)
        .order_by(Patient.patient_name, Patient.id)
        .offset(query.offset)
    )
    if query.limit is not None:
        statement = statement.limit(query.limit)
    matches = []
    for facility_name, patient, study_count in session.execute(statement):
        values = {
            a.keyword: getattr(patient, a.column.key)
            for a in attributes_for(Level.PATIENT)
            if a.column is not None
        }
        values["NumberOfPatientRelatedStudies"] = int(study_count)
        matches.append(Match(values=values, facility=facility_name))
    return matches


def _patient_filters(query: MatchQuery) -> dict[str, str]:
    return {
        k: v
        for k, v in query.filters.items()
        if k in ATTRIBUTES and ATTRIBUTES[k].level is Level.PATIENT
    }


def value_condition(column: Any, value: str, vr: str) -> ColumnElement[bool]:
    """One matching key on a column of another table, matched as C-FIND and QIDO match the
    study hierarchy: date/time ranges, person names ignoring case with ``*``/``?``, other
    wildcards, backslash-separated lists (the Modality Worklist's orders use it)."""
    if vr in ("DA", "TM"):
        return _range_condition(column, value, vr)
    if vr == "PN":
        return _CaseInsensitiveLike(column, literal(_like_pattern(value)))
    if "*" in value or "?" in value:
        return column.like(_like_pattern(value), escape="\\")
    alternatives = value.split("\\")
    return column.in_(alternatives) if len(alternatives) > 1 else column == value
