"""The index backend's interface, the same on SQLite and on a real PostgreSQL: what a write
files, what it refuses, what it reports, and the other operations callers ask of it."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from noctis.dicom.header import InstanceHeader
from noctis.index.accounts import AuditRow
from noctis.index.backend import (
    DemographicsConflict,
    DifferentContent,
    IndexBackend,
    InstanceRecord,
    MovedInstance,
    SameContent,
    SeriesOfAnotherStudy,
    StoredContent,
    StudyOfAnotherPatient,
)
from noctis.index.db import open_index
from noctis.index.migrate import upgrade
from noctis.index.models import Facility, Instance, Series, Study
from noctis.index.postgresql import PostgresqlIndex
from noctis.index.sqlite import SqliteIndex

_UIDS = itertools.count(1)
RECEIVED = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)


def _uid() -> str:
    return f"1.2.826.0.1.3680043.10.1{next(_UIDS)}"


def _header(**overrides: object) -> InstanceHeader:
    header = InstanceHeader(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=_uid(),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.3.study",
        series_instance_uid="1.2.3.series",
        patient_id="P001",
        issuer_of_patient_id="",
        patient_name="Doe^Jane",
        patient_birth_date="19700101",
        patient_sex="F",
        study_date="20261206",
        study_time="180000",
        accession_number="A1",
        study_id="1",
        study_description="CT chest",
        referring_physician_name="",
        modality="CT",
        series_number=1,
        series_description="",
        body_part_examined="CHEST",
        series_date="20261206",
        series_time="180000",
        instance_number=1,
        rows=4,
        columns=4,
        number_of_frames=None,
        pixel_data_offset=300,
    )
    return dataclasses.replace(header, **overrides)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexBackend]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(url)
    opened = open_index(url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_file_index(tmp_path: Path) -> Iterator[IndexBackend]:
    """SQLite in a file, where ingest's writes share one kept connection."""
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(url)
    opened = open_index(url)
    yield opened
    opened.close()


def _add_facility(index: IndexBackend) -> int:
    with index.sessions.begin() as session:
        facility = Facility(name="north")
        session.add(facility)
        session.flush()
        return facility.id


@pytest.fixture
def facility_id(index: IndexBackend) -> int:
    return _add_facility(index)


def _record(facility_id: int, header: InstanceHeader, **overrides: object) -> InstanceRecord:
    record = InstanceRecord(
        facility_id=facility_id,
        header=header,
        object_key=f"north/{header.sop_instance_uid}.{next(_UIDS)}.dcm",
        size=1000,
        sha256="a" * 64,
        received_at=RECEIVED,
        replace=False,
    )
    return dataclasses.replace(record, **overrides)  # type: ignore[arg-type]


def _study(index: IndexBackend, uid: str) -> tuple[int, int, int, str]:
    with index.reader() as session:
        row = session.execute(
            select(
                Study.number_of_series,
                Study.number_of_instances,
                Study.size_bytes,
                Study.modalities_in_study,
            ).where(Study.study_instance_uid == uid)
        ).one()
    return tuple(row)  # type: ignore[return-value]


def test_the_url_picks_the_backend(index: IndexBackend) -> None:
    expected = SqliteIndex if index.name == "sqlite" else PostgresqlIndex
    assert type(index) is expected
    assert index.engine.dialect.name == index.name
    index.check()


def test_a_write_files_and_counts_the_instance(index: IndexBackend, facility_id: int) -> None:
    first = index.write_instance(_record(facility_id, _header()))
    second = index.write_instance(_record(facility_id, _header(instance_number=2)))
    other = _header(series_instance_uid="1.2.3.other", modality="SR", instance_number=1)
    third = index.write_instance(_record(facility_id, other, size=10))

    assert (first.series_instances, second.series_instances, third.series_instances) == (1, 2, 1)
    assert first.replaced_key is None and first.conflict is None
    assert _study(index, "1.2.3.study") == (2, 3, 2010, "CT\\SR")


def test_find_content_tells_what_is_indexed(index: IndexBackend, facility_id: int) -> None:
    header = _header()
    record = _record(facility_id, header, sha256="b" * 64)
    assert index.find_content(facility_id, header.sop_instance_uid) is None
    index.write_instance(record)
    found = index.find_content(facility_id, header.sop_instance_uid)
    assert found == StoredContent(record.object_key, "b" * 64)
    assert index.find_content(facility_id + 1, header.sop_instance_uid) is None


def test_an_instance_indexed_again(index: IndexBackend, facility_id: int) -> None:
    header = _header()
    first = _record(facility_id, header)
    index.write_instance(first)

    with pytest.raises(SameContent) as same:
        index.write_instance(_record(facility_id, header))
    assert same.value.object_key == first.object_key
    with pytest.raises(DifferentContent):
        index.write_instance(_record(facility_id, header, sha256="c" * 64))
    moved = dataclasses.replace(header, series_instance_uid="1.2.3.elsewhere")
    with pytest.raises(MovedInstance):
        index.write_instance(_record(facility_id, moved, sha256="c" * 64, replace=True))

    replacement = _record(facility_id, header, sha256="c" * 64, size=1500, replace=True)
    replaced = index.write_instance(replacement)
    assert replaced.replaced_key == first.object_key
    assert index.find_content(facility_id, header.sop_instance_uid) == StoredContent(
        replacement.object_key, "c" * 64
    )
    # Counted once, with the new size; the refused move left no series behind.
    assert _study(index, "1.2.3.study") == (1, 1, 1500, "CT")
    with index.reader() as session:
        assert session.scalar(select(func.count()).select_from(Series)) == 1
        assert session.scalar(select(func.count()).select_from(Instance)) == 1


def test_refusals_of_misfiled_instances_leave_nothing(
    index: IndexBackend, facility_id: int
) -> None:
    index.write_instance(_record(facility_id, _header()))
    with pytest.raises(SeriesOfAnotherStudy) as series:
        index.write_instance(_record(facility_id, _header(study_instance_uid="1.2.3.new")))
    assert series.value.study_instance_uid == "1.2.3.study"
    with pytest.raises(StudyOfAnotherPatient):
        other_patient = _header(series_instance_uid="1.2.3.s2", patient_id="P002")
        index.write_instance(_record(facility_id, other_patient))
    with index.reader() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        assert session.scalar(select(func.count()).select_from(Instance)) == 1


def test_differing_demographics_are_reported_not_written(
    index: IndexBackend, facility_id: int
) -> None:
    index.write_instance(_record(facility_id, _header()))
    renamed = _header(patient_name="Doe^Janet", instance_number=2)
    in_study = index.write_instance(_record(facility_id, renamed))
    assert in_study.conflict == DemographicsConflict("study", "Doe^Jane", "19700101", "F")
    new_study = _header(
        study_instance_uid="1.2.3.study2", series_instance_uid="1.2.3.s3", patient_sex="O"
    )
    of_patient = index.write_instance(_record(facility_id, new_study))
    assert of_patient.conflict == DemographicsConflict("patient", "Doe^Jane", "19700101", "F")


def test_login_attempts_are_counted_per_window(index: IndexBackend) -> None:
    window = timedelta(minutes=15)
    counts = []
    for minutes in (0, 1, 2, 20):  # the fourth attempt begins a new window
        moment = RECEIVED + timedelta(minutes=minutes)
        with index.sessions.begin() as session:
            counts.append(index.count_login_attempt(session, "ann", "10.0.0.1", moment, window))
    assert [attempts for attempts, _ in counts] == [1, 2, 3, 1]
    starts = [started.replace(tzinfo=started.tzinfo or UTC) for _, started in counts]
    assert starts == [RECEIVED] * 3 + [RECEIVED + timedelta(minutes=20)]
    with index.sessions.begin() as session:
        elsewhere = index.count_login_attempt(session, "ann", "10.0.0.2", RECEIVED, window)
    assert elsewhere[0] == 1


def test_best_effort_sessions_write_to_the_same_index(index: IndexBackend) -> None:
    sessions = index.best_effort_sessions(0.25)
    try:
        with sessions.begin() as session:
            session.add(
                AuditRow(actor="ann", actor_type="user", client="", action="t", outcome="ok")
            )
    finally:
        index.close_sessions(sessions)
    with index.reader() as session:
        assert session.scalar(select(func.count()).select_from(AuditRow)) == 1


def test_sqlite_writes_from_many_threads_are_all_counted(sqlite_file_index: IndexBackend) -> None:
    """Ingest's writes share one connection per process (`noctis.index.sqlite._IngestWriter`),
    taking turns under the write lock: none is lost or counted twice."""
    import threading

    index = sqlite_file_index
    facility_id = _add_facility(index)
    failures: list[BaseException] = []

    def send(series: str) -> None:
        try:
            for number in range(1, 26):
                header = _header(series_instance_uid=series, instance_number=number)
                index.write_instance(_record(facility_id, header))
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(f"1.2.3.s{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert _study(index, "1.2.3.study") == (4, 100, 100_000, "CT")


def test_sqlite_a_write_after_the_connection_broke_goes_to_a_new_one(
    sqlite_file_index: IndexBackend,
) -> None:
    index = sqlite_file_index
    facility_id = _add_facility(index)
    index.write_instance(_record(facility_id, _header()))
    # The database goes away under the kept connection (a disk error would do as much).
    writer = index._writer  # type: ignore[attr-defined]
    writer._conn.connection.driver_connection.close()
    with pytest.raises(Exception, match="closed database"):
        index.write_instance(_record(facility_id, _header(instance_number=2)))
    index.write_instance(_record(facility_id, _header(instance_number=3)))
    assert _study(index, "1.2.3.study") == (1, 2, 2000, "CT")
