"""Matching as a C-FIND or QIDO user sees it: the same code serves both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from noctis.core.facilities import apply_facility
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.models import Study
from noctis.index.query import Level, MatchQuery, QueryError, count, find
from noctis.specs.facility import FacilitySpec
from support.incoming import ingest_file

DicomFactory = Callable[..., Path]

STUDIES = [
    # patient name, patient id, study uid, date, time, accession, modality
    ("Anderson^Anna", "P1", "1.2.840.1.1", "20240110", "083000", "ACC1", "CT"),
    ("Andrews^Bob", "P2", "1.2.840.1.2", "20240215", "141500.25", "ACC2", "MR"),
    ("Baker^Carl", "P3", "1.2.840.1.3", "20231231", "235959", "ACC3", "CT"),
    ("anderson^dora", "P4", "1.2.840.1.4", "20240301", "000000", "ACC4", "US"),
]


@pytest.fixture
def populated(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> FacilityRef:
    for name, pid, uid, date, clock, accession, modality in STUDIES:
        for series_number in (1, 2):
            ingest_file(
                runtime,
                default_facility,
                make_dicom(
                    PatientName=name,
                    PatientID=pid,
                    StudyInstanceUID=uid,
                    SeriesInstanceUID=f"{uid}.{series_number}",
                    SeriesNumber=series_number,
                    StudyDate=date,
                    StudyTime=clock,
                    AccessionNumber=accession,
                    Modality=modality if series_number == 1 else "SR",
                ),
            )
    return default_facility


def _studies(runtime: Runtime, **filters: str) -> list[str]:
    with runtime.sessions() as session:
        matches = find(session, MatchQuery(Level.STUDY, filters))
    return sorted(m.values["StudyInstanceUID"] for m in matches)


@pytest.mark.usefixtures("populated")
@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientName": "And*"}, ["1.2.840.1.1", "1.2.840.1.2", "1.2.840.1.4"]),
        ({"PatientName": "anderson^anna"}, ["1.2.840.1.1"]),
        ({"PatientName": "B?ker*"}, ["1.2.840.1.3"]),
        ({"PatientID": "P2"}, ["1.2.840.1.2"]),
        ({"StudyDate": "20240101-20240228"}, ["1.2.840.1.1", "1.2.840.1.2"]),
        ({"StudyDate": "-20231231"}, ["1.2.840.1.3"]),
        ({"StudyDate": "20240301-"}, ["1.2.840.1.4"]),
        ({"StudyTime": "1400-1500"}, ["1.2.840.1.2"]),
        ({"StudyInstanceUID": "1.2.840.1.1\\1.2.840.1.3"}, ["1.2.840.1.1", "1.2.840.1.3"]),
        ({"AccessionNumber": "ACC4"}, ["1.2.840.1.4"]),
        ({"ModalitiesInStudy": "MR"}, ["1.2.840.1.2"]),
        ({"ModalitiesInStudy": "US\\MR"}, ["1.2.840.1.2", "1.2.840.1.4"]),
        ({"PatientName": "*", "StudyDate": ""}, [s[2] for s in STUDIES]),
        ({"PatientName": "Nobody*"}, []),
        ({"UnknownKeyword": "x"}, [s[2] for s in STUDIES]),
    ],
)
def test_study_matching(runtime: Runtime, filters: dict[str, str], expected: list[str]) -> None:
    assert _studies(runtime, **filters) == sorted(expected)


@pytest.mark.usefixtures("populated")
def test_study_results_carry_what_a_viewer_needs(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        (match,) = find(session, MatchQuery(Level.STUDY, {"AccessionNumber": "ACC1"}))
    assert match.values["ModalitiesInStudy"] == "CT\\SR"
    assert match.values["NumberOfStudyRelatedSeries"] == 2
    assert match.values["NumberOfStudyRelatedInstances"] == 2
    assert match.values["PatientName"] == "Anderson^Anna"


@pytest.mark.usefixtures("populated")
def test_series_and_image_levels(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        series = find(session, MatchQuery(Level.SERIES, {"StudyInstanceUID": "1.2.840.1.2"}))
        images = find(session, MatchQuery(Level.IMAGE, {"SeriesInstanceUID": "1.2.840.1.3.1"}))
        sr = count(session, MatchQuery(Level.SERIES, {"Modality": "SR"}))
    assert [s.values["Modality"] for s in series] == ["MR", "SR"]
    assert series[0].values["NumberOfSeriesRelatedInstances"] == 1
    assert len(images) == 1 and images[0].object_key and images[0].transfer_syntax_uid
    assert sr == 4


@pytest.mark.usefixtures("populated")
def test_patient_level_groups_studies(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        patients = find(session, MatchQuery(Level.PATIENT, {"PatientName": "and*"}))
    assert sorted(p.values["PatientID"] for p in patients) == ["P1", "P2", "P4"]
    assert all(p.values["NumberOfPatientRelatedStudies"] == 1 for p in patients)


@pytest.mark.usefixtures("populated")
def test_limit_and_offset_page_through_results(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        first = find(session, MatchQuery(Level.STUDY, {}, limit=3))
        rest = find(session, MatchQuery(Level.STUDY, {}, limit=3, offset=3))
    assert len(first) == 3 and len(rest) == 1
    seen = {m.values["StudyInstanceUID"] for m in first + rest}
    assert seen == {s[2] for s in STUDIES}


@pytest.mark.parametrize(
    "filters",
    [
        {"StudyDate": "2024-13"},
        {"StudyDate": "yesterday"},
        {"SeriesNumber": "one"},
        {"StudyTime": "25x"},
    ],
)
def test_values_that_cannot_be_interpreted_are_errors(
    runtime: Runtime, filters: dict[str, str]
) -> None:
    level = Level.SERIES if "SeriesNumber" in filters else Level.STUDY
    with runtime.sessions() as session, pytest.raises(QueryError):
        find(session, MatchQuery(level, filters))


def test_a_facility_sees_only_its_own_studies(runtime: Runtime, make_dicom: DicomFactory) -> None:
    with runtime.sessions.begin() as session:
        north = apply_facility(session, "north", FacilitySpec())
        south = apply_facility(session, "south", FacilitySpec())
        north_ref, south_ref = FacilityRef(north.id, north.name), FacilityRef(south.id, south.name)
    # The same study UID sent by both facilities is two studies.
    ingest_file(
        runtime, north_ref, make_dicom(StudyInstanceUID="1.2.3.99", PatientName="North^Pat")
    )
    ingest_file(
        runtime, south_ref, make_dicom(StudyInstanceUID="1.2.3.99", PatientName="South^Pat")
    )
    ingest_file(runtime, south_ref, make_dicom(PatientName="South^Other", PatientID="P002"))

    with runtime.sessions() as session:
        seen_by_north = find(session, MatchQuery(Level.STUDY, {}, facility_ids=[north_ref.id]))
        seen_by_south = find(session, MatchQuery(Level.IMAGE, {}, facility_ids=[south_ref.id]))
    assert [m.values["PatientName"] for m in seen_by_north] == ["North^Pat"]
    assert sorted(m.values["PatientName"] for m in seen_by_south) == ["South^Other", "South^Pat"]
    assert all(m.facility == "south" for m in seen_by_south)


@pytest.mark.usefixtures("populated")
def test_odd_but_valid_values_match_instead_of_failing(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        # A UID list made only of separators is universal matching.
        everything = find(session, MatchQuery(Level.STUDY, {"StudyInstanceUID": "\\\\"}))
        # ModalitiesInStudy also constrains series- and image-level queries.
        mr_series = find(session, MatchQuery(Level.SERIES, {"ModalitiesInStudy": "MR"}))
        mr_images = count(session, MatchQuery(Level.IMAGE, {"ModalitiesInStudy": "MR"}))
    assert len(everything) == len(STUDIES)
    assert {m.values["StudyInstanceUID"] for m in mr_series} == {"1.2.840.1.2"}
    assert mr_images == 2


def test_numbers_beyond_32_bits_are_errors(runtime: Runtime) -> None:
    with runtime.sessions() as session, pytest.raises(QueryError, match="out of range"):
        find(session, MatchQuery(Level.SERIES, {"SeriesNumber": "99999999999999999999"}))


def test_queries_do_not_wait_for_a_store_in_progress(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    ingest_file(runtime, default_facility, make_dicom(PatientName="Visible^Already"))
    with runtime.sessions.begin() as writer:
        # A write transaction is open (on SQLite it holds the database's write lock)...
        writer.execute(update(Study).values(study_description="being updated"))
        with runtime.reader() as session:
            found = find(session, MatchQuery(Level.STUDY, {"PatientName": "Visible*"}))
    # ...and a reader still answers while it is open (this thread holds it: a reader that
    # waited for it would never answer), with what was committed.
    assert [m.values["StudyDescription"] for m in found] == [""]


@pytest.mark.usefixtures("populated")
@pytest.mark.parametrize("runtime", ["postgres"], indirect=True)
def test_searches_are_planned_for_their_own_values(runtime: Runtime) -> None:
    """A search is never a prepared statement on PostgreSQL: psycopg would prepare it after
    five runs, and PostgreSQL would then plan it once for any values, from the statistics of
    that moment (a near-empty archive's plan made a QIDO over 2,000 studies 40 times slower).
    The write path's statements stay prepared."""
    with runtime.reader() as session:
        for level in (Level.STUDY, Level.SERIES, Level.PATIENT):
            for _ in range(12):
                assert find(session, MatchQuery(level, {"PatientName": "And*"}))
        driver = session.connection().connection.driver_connection
        prepared = session.connection().exec_driver_sql(
            "SELECT statement FROM pg_prepared_statements"
        )
        statements = [row[0] for row in prepared]
        assert driver.prepare_threshold == 5  # as it was: other statements are prepared
    assert not [s for s in statements if "ILIKE" in s], statements
