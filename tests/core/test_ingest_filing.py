"""Filing: patients keyed by (PatientID, IssuerOfPatientID), studies answering with the patient
attributes they arrived with, conflicts recorded for reconciliation, UIDs never re-parented,
duplicates told apart by their data set. On SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydicom import dcmread
from sqlalchemy import func, select, update

from noctis.core.audit import SQLITE_WAIT, AuditFilter, query_audit
from noctis.core.ingest import FacilityRef, IngestError, IngestFailure, IngestOutcome
from noctis.core.reconciliation import Sender
from noctis.core.runtime import Runtime
from noctis.index.models import Instance, Patient, Study
from noctis.index.query import Level, MatchQuery, find
from support.archive import stored_object_keys
from support.dicomdata import dataset_bytes
from support.incoming import ingest_file

DicomFactory = Callable[..., Path]
BACKENDS = pytest.mark.parametrize("runtime", ["sqlite", "postgres"], indirect=True)
MODALITY = Sender("CT_ROOM_1", "ae", "127.0.0.1")


def _studies(runtime: Runtime, **filters: str) -> dict[str, str]:
    """StudyInstanceUID -> PatientName, as a study-level search answers them."""
    with runtime.reader() as session:
        found = find(session, MatchQuery(Level.STUDY, filters))
    return {m.values["StudyInstanceUID"]: m.values["PatientName"] for m in found}


def _count(runtime: Runtime, model: type) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _events(runtime: Runtime, action: str) -> list:
    with runtime.sessions() as session:
        return list(query_audit(session, AuditFilter(action=action)))


def _counter(name: str, facility: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"facility": facility}) or 0.0


@BACKENDS
def test_an_empty_patient_id_never_merges_two_patients(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    """The issue's case: SMITH's study must not show as DOE^JANE."""
    smith = make_dicom(PatientID="", PatientName="SMITH^JOHN", PatientSex="M")
    doe = make_dicom(PatientID="", PatientName="DOE^JANE", PatientSex="F")
    smith_study = ingest_file(runtime, default_facility, smith).header.study_instance_uid
    doe_study = ingest_file(runtime, default_facility, doe).header.study_instance_uid
    # A second instance of SMITH's study (empty PatientID too) joins SMITH's study.
    ingest_file(
        runtime,
        default_facility,
        make_dicom(
            PatientID="", PatientName="SMITH^JOHN", PatientSex="M", StudyInstanceUID=smith_study
        ),
    )

    assert _studies(runtime) == {smith_study: "SMITH^JOHN", doe_study: "DOE^JANE"}
    assert _studies(runtime, PatientName="SMITH*") == {smith_study: "SMITH^JOHN"}
    assert _count(runtime, Patient) == 2
    with runtime.reader() as session:
        patients = find(session, MatchQuery(Level.PATIENT, {}))
    assert sorted(p.values["PatientName"] for p in patients) == ["DOE^JANE", "SMITH^JOHN"]
    assert _events(runtime, "demographics-conflict") == []


@BACKENDS
def test_patients_are_told_apart_by_issuer_of_patient_id(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    for issuer, name in (("HOSP_A", "Roe^Ann"), ("HOSP_B", "Poe^Bob"), ("HOSP_A", "Roe^Ann")):
        path = make_dicom(PatientID="12345", IssuerOfPatientID=issuer, PatientName=name)
        ingest_file(runtime, default_facility, path)

    with runtime.reader() as session:
        patients = find(session, MatchQuery(Level.PATIENT, {"PatientID": "12345"}))
        a_studies = find(session, MatchQuery(Level.STUDY, {"IssuerOfPatientID": "HOSP_A"}))
    found = {
        p.values["IssuerOfPatientID"]: (
            p.values["PatientName"],
            p.values["NumberOfPatientRelatedStudies"],
        )
        for p in patients
    }
    assert found == {"HOSP_A": ("Roe^Ann", 2), "HOSP_B": ("Poe^Bob", 1)}
    assert {m.values["PatientName"] for m in a_studies} == {"Roe^Ann"}
    assert len(a_studies) == 2


@BACKENDS
def test_a_demographics_conflict_is_recorded_and_changes_no_other_study(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    first = make_dicom(PatientID="P7", PatientName="SMITH^JOHN", PatientBirthDate="19700101")
    second = make_dicom(PatientID="P7", PatientName="SMYTHE^JOHN", PatientBirthDate="19700101")
    before = _counter("noctis_demographics_conflicts", default_facility.name)
    first_study = ingest_file(runtime, default_facility, first).header.study_instance_uid
    second_study = ingest_file(runtime, default_facility, second, sender=MODALITY)

    assert second_study.outcome is IngestOutcome.STORED
    second_uid = second_study.header.study_instance_uid
    assert _studies(runtime) == {first_study: "SMITH^JOHN", second_uid: "SMYTHE^JOHN"}
    with runtime.sessions() as session:  # one patient, with the demographics first stored
        assert session.scalars(select(Patient.patient_name)).all() == ["SMITH^JOHN"]
    [event] = _events(runtime, "demographics-conflict")
    assert (event.actor, event.actor_type, event.study_instance_uid) == (
        "CT_ROOM_1",
        "ae",
        second_uid,
    )
    assert event.detail["compared_with"] == "patient"
    assert event.detail["stored"]["PatientName"] == "SMITH^JOHN"
    assert event.detail["received"]["PatientName"] == "SMYTHE^JOHN"
    assert _counter("noctis_demographics_conflicts", default_facility.name) == before + 1

    # Another instance of the first study with other demographics: stored, the study keeps
    # what it arrived with, and the difference is recorded against the study.
    third = make_dicom(PatientID="P7", PatientName="SMITH^JON", StudyInstanceUID=first_study)
    assert ingest_file(runtime, default_facility, third).outcome is IngestOutcome.STORED
    assert _studies(runtime)[first_study] == "SMITH^JOHN"
    assert [e.detail["compared_with"] for e in _events(runtime, "demographics-conflict")] == [
        "study",
        "patient",
    ]
    assert _counter("noctis_demographics_conflicts", default_facility.name) == before + 2


@BACKENDS
def test_a_study_filed_under_another_patient_is_refused(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    first = ingest_file(runtime, default_facility, make_dicom(PatientID="P1"))
    study = first.header.study_instance_uid
    for other in ({"PatientID": "P2"}, {"PatientID": "P1", "IssuerOfPatientID": "ELSEWHERE"}):
        with pytest.raises(IngestError) as refused:
            ingest_file(runtime, default_facility, make_dicom(StudyInstanceUID=study, **other))
        assert refused.value.failure is IngestFailure.STUDY_OF_ANOTHER_PATIENT
        assert "another patient" in refused.value.message

    assert (_count(runtime, Study), _count(runtime, Patient), _count(runtime, Instance)) == (
        1,
        1,
        1,
    )
    assert [k for k in stored_object_keys(runtime.store) if k.endswith(".dcm")] == [
        first.object_key
    ]


@BACKENDS
def test_another_data_set_under_a_stored_uid_keeps_the_first_and_is_audited(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    """keep-first, the default: Success for the sender, the first data set kept, the copy
    audited and counted."""
    original = make_dicom(SOPInstanceUID="1.2.3.4.50", PatientName="First^Version")
    changed = make_dicom(SOPInstanceUID="1.2.3.4.50", PatientName="Second^Version")
    before = _counter("noctis_duplicates_discarded", default_facility.name)
    kept = ingest_file(runtime, default_facility, original)
    again = ingest_file(runtime, default_facility, changed, sender=MODALITY)

    assert again.outcome is IngestOutcome.DISCARDED
    assert again.object_key == kept.object_key
    assert runtime.store.get(kept.object_key) == original.read_bytes()
    assert [k for k in stored_object_keys(runtime.store) if k.endswith(".dcm")] == [kept.object_key]
    assert _studies(runtime) == {kept.header.study_instance_uid: "First^Version"}
    [event] = _events(runtime, "duplicate-discarded")
    assert event.actor == "CT_ROOM_1"
    assert event.detail["sop_instance_uid"] == "1.2.3.4.50"
    assert event.detail["kept_sha256"] == kept.sha256
    assert event.detail["discarded_sha256"] == again.sha256 != kept.sha256
    assert _counter("noctis_duplicates_discarded", default_facility.name) == before + 1


@BACKENDS
def test_the_same_data_set_under_another_file_meta_is_the_same_instance(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory, tmp_path: Path
) -> None:
    """What another sender writes into the File Meta (implementation, source AE) is not the
    instance: the re-send is a plain duplicate, not a discarded copy."""
    original = make_dicom()
    other_meta = tmp_path / "other-meta.dcm"
    ds = dcmread(original)
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.9999.1"
    ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
    ds.file_meta.SourceApplicationEntityTitle = "WORKSTATION"
    ds.save_as(other_meta, enforce_file_format=True)
    assert other_meta.read_bytes() != original.read_bytes()
    assert dataset_bytes(other_meta) == dataset_bytes(original)

    first = ingest_file(runtime, default_facility, original)
    again = ingest_file(runtime, default_facility, other_meta)

    assert again.outcome is IngestOutcome.DUPLICATE
    assert again.sha256 == first.sha256
    assert _events(runtime, "duplicate-discarded") == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_0004_gives_the_studies_already_stored_their_patients_attributes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from alembic import command
    from sqlalchemy import MetaData, create_engine

    from noctis.index.migrate import alembic_config, upgrade

    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    upgrade(url, "0003")
    engine = create_engine(url)
    tables = MetaData()
    tables.reflect(engine)
    now = datetime.now(UTC)
    study = {
        "study_date": "20240101",
        "study_time": "",
        "accession_number": "",
        "study_id": "",
        "study_description": "",
        "referring_physician_name": "",
        "modalities_in_study": "CT",
        "number_of_series": 1,
        "number_of_instances": 1,
        "size_bytes": 1,
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        conn.execute(
            tables.tables["facility"].insert(),
            {
                "id": 1,
                "name": "old",
                "display_name": "",
                "enabled": True,
                "idp_groups": [],
                "spec": {},
                "created_at": now,
                "updated_at": now,
            },
        )
        conn.execute(
            tables.tables["patient"].insert(),
            {
                "id": 1,
                "facility_id": 1,
                "patient_id": "P9",
                "patient_name": "Old^Timer",
                "patient_birth_date": "19500101",
                "patient_sex": "F",
            },
        )
        for pk in (1, 2):
            row = {**study, "id": pk, "facility_id": 1, "patient_pk": 1}
            conn.execute(
                tables.tables["study"].insert(), {**row, "study_instance_uid": f"1.9.{pk}"}
            )
    engine.dispose()

    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Study.study_instance_uid,
                Study.patient_id,
                Study.issuer_of_patient_id,
                Study.patient_name,
                Study.patient_birth_date,
                Study.patient_sex,
            ).order_by(Study.id)
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("1.9.1", "P9", "", "Old^Timer", "19500101", "F"),
        ("1.9.2", "P9", "", "Old^Timer", "19500101", "F"),
    ]
    command.downgrade(alembic_config(url), "0003")  # and back, while no patients would merge
    upgrade(url)


@BACKENDS
def test_writers_of_one_new_study_with_an_empty_patient_id_make_one_patient(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    """Eight senders start the same new study at once: whoever loses the race for the study
    files under the winner's, and leaves no patient of its own behind."""
    study = "1.2.826.0.1.3680043.8.498.4242"
    files = [
        make_dicom(PatientID="", PatientName="NO^ID", StudyInstanceUID=study, InstanceNumber=n)
        for n in range(1, 9)
    ]
    start = threading.Barrier(len(files))

    def store(path: Path) -> IngestOutcome:
        start.wait()
        return ingest_file(runtime, default_facility, path).outcome

    with ThreadPoolExecutor(len(files)) as pool:
        outcomes = list(pool.map(store, files))

    assert outcomes == [IngestOutcome.STORED] * len(files)
    assert (_count(runtime, Patient), _count(runtime, Study), _count(runtime, Instance)) == (
        1,
        1,
        len(files),
    )
    assert _events(runtime, "demographics-conflict") == []


@BACKENDS
def test_an_instance_indexed_before_0004_sent_again_unchanged_is_a_duplicate(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    """Rows indexed before migration 0004 hold the digest of the whole file (File Meta
    included): the same instance sent again must not be taken for another data set."""
    original = make_dicom()
    first = ingest_file(runtime, default_facility, original)
    whole_file = hashlib.sha256(original.read_bytes()).hexdigest()
    with runtime.sessions.begin() as session:
        session.execute(
            update(Instance)
            .where(Instance.sop_instance_uid == first.header.sop_instance_uid)
            .values(sha256=whole_file)
        )

    again = ingest_file(runtime, default_facility, original, sender=MODALITY)

    assert again.outcome is IngestOutcome.DUPLICATE
    assert again.object_key == first.object_key
    assert _events(runtime, "duplicate-discarded") == []


@pytest.mark.parametrize("runtime", ["sqlite"], indirect=True)
def test_a_reconciliation_event_is_written_before_it_returns_even_behind_another_writer(
    runtime: Runtime,
) -> None:
    # Another writer holds SQLite's write lock for longer than an inline audit insert waits
    # (SQLITE_WAIT): an ordinary event would be queued; one an administrator must reconcile is
    # written, synced, by the time the call returns.
    assert _events(runtime, "demographics-conflict") == []
    database = runtime.settings.resolved_database_url().removeprefix("sqlite:///")
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(4 * SQLITE_WAIT, lambda: holder.execute("COMMIT"))
    released.start()
    try:
        event = MODALITY.event(
            "demographics-conflict", outcome="success", study_instance_uid="1.2.3"
        )
        runtime.audit.record_durably(event)
    finally:
        released.join()
        holder.close()
    [row] = _events(runtime, "demographics-conflict")  # no flush: already in the table
    assert (row.actor, row.study_instance_uid) == ("CT_ROOM_1", "1.2.3")
