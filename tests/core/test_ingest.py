"""The one write path: what a sender and the archive's users would notice."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from noctis.core.ingest import FacilityRef, IngestError, IngestFailure, IngestOutcome
from noctis.core.runtime import Runtime
from noctis.index.models import Instance, Patient, Series, Study
from noctis.settings import DuplicatePolicy
from noctis.storage import IncomingObject, StorageUnavailable
from support.archive import stored_object_keys
from support.incoming import ingest_file

DicomFactory = Callable[..., Path]


def _objects(runtime: Runtime) -> list[str]:
    return sorted(key for key in stored_object_keys(runtime.store) if key.endswith(".dcm"))


def _count(runtime: Runtime, model: type) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _wrap_commits(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    wrapper: Callable[[Callable[[str], None], str], None],
) -> None:
    """Every incoming object's commit goes through ``wrapper(commit, key)``."""
    make_incoming = runtime.store.incoming

    def incoming() -> IncomingObject:
        made = make_incoming()
        commit = made.commit
        monkeypatch.setattr(made, "commit", lambda key: wrapper(commit, key))
        return made

    monkeypatch.setattr(runtime.store, "incoming", incoming)


def test_stores_bytes_as_received_and_indexes_them(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    path = make_dicom(PatientName="Roe^Richard")
    result = ingest_file(runtime, default_facility, path)

    assert result.outcome is IngestOutcome.STORED
    assert runtime.store.get(result.object_key) == path.read_bytes()
    with runtime.sessions() as session:
        instance = session.scalar(select(Instance))
        assert instance is not None
        assert instance.sop_instance_uid == result.header.sop_instance_uid
        assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
        assert instance.pixel_data_offset is not None
        patient = session.scalar(select(Patient))
        assert patient is not None and patient.patient_name == "Roe^Richard"
    # The recorded pixel data offset points at the Pixel Data element in the stored object.
    assert runtime.store.get_range(result.object_key, instance.pixel_data_offset, 4) == (
        b"\xe0\x7f\x10\x00"
    )


def test_study_counters_and_modalities_follow_what_was_stored(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    study = "1.2.826.0.1.3680043.8.498.1"
    for series, modality, count in (("1.2.3.1", "CT", 2), ("1.2.3.2", "PT", 1)):
        for _ in range(count):
            ingest_file(
                runtime,
                default_facility,
                make_dicom(StudyInstanceUID=study, SeriesInstanceUID=series, Modality=modality),
            )
    with runtime.sessions() as session:
        row = session.scalar(select(Study))
        assert row is not None
        assert (row.number_of_series, row.number_of_instances) == (2, 3)
        assert row.modalities_in_study == "CT\\PT"
        counts = dict(session.execute(select(Series.modality, Series.number_of_instances)).all())
        assert counts == {"CT": 2, "PT": 1}


def test_a_new_study_counts_its_first_instance(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    path = make_dicom(Modality="MR")
    ingest_file(runtime, default_facility, path)
    with runtime.sessions() as session:
        study = session.scalar(select(Study))
        series = session.scalar(select(Series))
        assert study is not None and series is not None
        assert (study.number_of_series, study.number_of_instances) == (1, 1)
        assert study.size_bytes == path.stat().st_size
        assert study.modalities_in_study == "MR"
        assert series.number_of_instances == 1


def test_a_series_uid_reused_by_another_study_is_refused_and_nothing_is_stored(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    """A sender bug: the same Series Instance UID in two studies. The second instance is
    refused (never filed under the first study) and leaves no object, study or patient."""
    series = "1.2.3.99"
    first = ingest_file(
        runtime, default_facility, make_dicom(StudyInstanceUID="1.2.3.1", SeriesInstanceUID=series)
    )
    with pytest.raises(IngestError) as refused:
        ingest_file(
            runtime,
            default_facility,
            make_dicom(StudyInstanceUID="1.2.3.2", SeriesInstanceUID=series),
        )

    assert refused.value.failure is IngestFailure.SERIES_OF_ANOTHER_STUDY
    assert "belongs to study 1.2.3.1" in refused.value.message
    assert _objects(runtime) == [first.object_key]
    assert (_count(runtime, Study), _count(runtime, Patient), _count(runtime, Instance)) == (
        1,
        1,
        1,
    )
    with runtime.sessions() as session:
        assert session.scalar(select(Series.number_of_instances)) == 1


def test_same_instance_same_bytes_is_a_no_op(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    path = make_dicom()
    first = ingest_file(runtime, default_facility, path)
    again = ingest_file(runtime, default_facility, path)

    assert again.outcome is IngestOutcome.DUPLICATE
    assert again.object_key == first.object_key
    assert len(_objects(runtime)) == 1
    assert _count(runtime, Instance) == 1
    with runtime.sessions() as session:
        assert session.scalar(select(Study.number_of_instances)) == 1


def test_reject_policy_refuses_another_data_set_and_keeps_the_first(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    runtime.settings.duplicate_policy = DuplicatePolicy.REJECT
    original = make_dicom(SOPInstanceUID="1.2.3.4.5", PatientName="First^Version")
    changed = make_dicom(SOPInstanceUID="1.2.3.4.5", PatientName="Second^Version")
    kept = ingest_file(runtime, default_facility, original)

    with pytest.raises(IngestError) as failure:
        ingest_file(runtime, default_facility, changed)

    assert failure.value.failure is IngestFailure.CONFLICT
    assert runtime.store.get(kept.object_key) == original.read_bytes()
    assert len(_objects(runtime)) == 1


def test_replace_policy_switches_to_the_new_bytes_and_removes_the_old_object(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    runtime.settings.duplicate_policy = DuplicatePolicy.REPLACE
    study, series = "1.2.3.10", "1.2.3.11"
    original = make_dicom(
        SOPInstanceUID="1.2.3.4.6", StudyInstanceUID=study, SeriesInstanceUID=series
    )
    changed = make_dicom(
        SOPInstanceUID="1.2.3.4.6",
        StudyInstanceUID=study,
        SeriesInstanceUID=series,
        StudyDescription="corrected",
    )
    first = ingest_file(runtime, default_facility, original)
    second = ingest_file(runtime, default_facility, changed)

    assert second.outcome is IngestOutcome.REPLACED
    assert not runtime.store.exists(first.object_key)
    assert runtime.store.get(second.object_key) == changed.read_bytes()
    with runtime.sessions() as session:
        assert session.scalar(select(Study.size_bytes)) == changed.stat().st_size
        assert session.scalar(select(Study.number_of_instances)) == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"not dicom at all", b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00garbage"],
    ids=["empty", "text", "truncated-meta"],
)
def test_malformed_files_are_refused_and_nothing_is_stored(
    runtime: Runtime, default_facility: FacilityRef, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(content)

    with pytest.raises(IngestError) as failure:
        ingest_file(runtime, default_facility, path)

    assert failure.value.failure is IngestFailure.MALFORMED
    assert _objects(runtime) == []
    assert _count(runtime, Instance) == 0


def test_a_data_set_without_a_study_uid_is_malformed(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    with pytest.raises(IngestError) as failure:
        ingest_file(runtime, default_facility, make_dicom(StudyInstanceUID=None))
    assert failure.value.failure is IngestFailure.MALFORMED
    assert "StudyInstanceUID" in failure.value.message
    assert _objects(runtime) == []


def test_a_data_set_that_does_not_match_the_request_is_refused(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    path = make_dicom()
    with pytest.raises(IngestError) as failure:
        ingest_file(
            runtime, default_facility, path, expected_sop_class_uid="1.2.840.10008.5.1.4.1.1.4"
        )
    assert failure.value.failure is IngestFailure.MISMATCH
    assert _objects(runtime) == []


def test_when_the_index_refuses_the_object_is_removed(
    runtime: Runtime, make_dicom: DicomFactory
) -> None:
    # A facility the index does not know: the foreign key makes the index write fail
    # after the object was put.
    ghost = FacilityRef(id=424242, name="ghost")
    with pytest.raises(IngestError) as failure:
        ingest_file(runtime, ghost, make_dicom())
    assert failure.value.failure is IngestFailure.INDEX_UNAVAILABLE
    assert _objects(runtime) == []
    assert _count(runtime, Study) == 0


def test_the_stored_object_keeps_its_transfer_syntax(
    runtime: Runtime, default_facility: FacilityRef
) -> None:
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]
    result = ingest_file(runtime, default_facility, source)
    stored = runtime.store.get(result.object_key)
    assert stored == source.read_bytes()
    assert result.header.transfer_syntax_uid == str(dcmread(source).file_meta.TransferSyntaxUID)


def test_the_index_commits_only_once_the_object_is_stored(
    runtime: Runtime,
    default_facility: FacilityRef,
    make_dicom: DicomFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No reader ever sees an instance whose object is not stored yet."""
    indexed_while_storing: list[int] = []

    def slow_commit(commit: Callable[[str], None], key: str) -> None:
        time.sleep(0.2)  # time for an index write that would not wait for the PUT
        indexed_while_storing.append(_count(runtime, Instance))
        commit(key)
        indexed_while_storing.append(_count(runtime, Instance))

    _wrap_commits(runtime, monkeypatch, slow_commit)
    result = ingest_file(runtime, default_facility, make_dicom())
    assert indexed_while_storing == [0, 0]
    assert _count(runtime, Instance) == 1
    assert _objects(runtime) == [result.object_key]


def test_a_failed_put_leaves_nothing_indexed(
    runtime: Runtime,
    default_facility: FacilityRef,
    make_dicom: DicomFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_commit(commit: Callable[[str], None], key: str) -> None:
        time.sleep(0.1)  # time for an index write that would not wait for the PUT
        raise StorageUnavailable("connection refused")

    _wrap_commits(runtime, monkeypatch, failing_commit)
    with pytest.raises(IngestError) as failure:
        ingest_file(runtime, default_facility, make_dicom())
    assert failure.value.failure is IngestFailure.STORAGE_UNAVAILABLE
    assert "connection refused" in failure.value.message
    assert [_count(runtime, model) for model in (Patient, Study, Series, Instance)] == [0] * 4
    assert _objects(runtime) == []
