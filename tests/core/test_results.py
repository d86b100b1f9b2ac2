"""Results of automated analysis on each index backend: SR and SEG instances found by the
periodic scan, summarised, linked to their study, and a critical finding raised once."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select, update

from noctis.core.deletion import Actor as DeletionActor
from noctis.core.deletion import Target, delete
from noctis.core.ingest import FacilityRef
from noctis.core.results import SETTLE_SECONDS, result_summaries, results_of_study, scan_results
from noctis.core.runtime import Runtime
from noctis.core.workflow import Priority
from noctis.index.models import Instance, Study, utcnow
from noctis.index.results import AnalysisResult, ResultScan
from noctis.index.workflow import NotificationEvent, StudyWorkflow
from noctis.specs.facility import FacilitySpec
from support import analysis as an
from support.archive import register_facility
from support.incoming import ingest_file


@pytest.fixture
def facility(runtime: Runtime) -> FacilityRef:
    return register_facility(runtime, "north")


@pytest.fixture
def study_uid(runtime: Runtime, facility: FacilityRef, make_dicom) -> str:
    return ingest_file(runtime, facility, make_dicom()).header.study_instance_uid


def _scan(runtime: Runtime) -> int:
    """One scan, as the periodic job runs it, once the instances have settled."""
    time.sleep(SETTLE_SECONDS)  # the scan leaves the last half second's instances for later
    return scan_results(runtime)


def _workflow(runtime: Runtime, study_uid: str) -> tuple[StudyWorkflow | None, list[str]]:
    with runtime.sessions() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        row = session.get(StudyWorkflow, study.id)
        session.expunge_all()
        kinds = list(session.scalars(select(NotificationEvent.kind).order_by(NotificationEvent.id)))
    return row, kinds


def test_a_critical_sr_makes_the_study_stat_with_one_notification(
    runtime: Runtime, facility: FacilityRef, study_uid: str, tmp_path: Path
) -> None:
    critical = an.sr(
        tmp_path,
        study_uid,
        an.container(an.FINDINGS, an.text(an.FINDING, "Large left pleural effusion")),
        an.container(an.CRITICAL_HEADING, an.text(an.FINDING, "Tension pneumothorax, right")),
    )
    ingest_file(runtime, facility, critical)
    assert _scan(runtime) == 1
    row, kinds = _workflow(runtime, study_uid)
    assert row is not None and row.critical and row.priority == Priority.STAT
    assert "Tension pneumothorax" in row.priority_reason
    assert kinds == ["critical-result", "stat-arrived"]

    # a second critical result of the same study raises nothing more
    again = an.sr(tmp_path, study_uid, an.container(an.CRITICAL_HEADING, an.text(an.FINDING, "x")))
    ingest_file(runtime, facility, again)
    assert _scan(runtime) == 1
    assert _workflow(runtime, study_uid)[1] == ["critical-result", "stat-arrived"]
    with runtime.sessions() as session:
        study_pk = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        results = results_of_study(session, study_pk)
        assert [r.critical for r in results] == [True, True]
        assert results[0].title == "Imaging Measurement Report"
        assert results[0].summary["findings"] == [
            "Finding: Large left pleural effusion",
            "Finding: Tension pneumothorax, right",
        ]
        assert result_summaries(session, [study_pk, study_pk + 1000]) == {study_pk: (2, True)}


def test_a_result_without_a_critical_finding_changes_nothing(
    runtime: Runtime, facility: FacilityRef, study_uid: str, tmp_path: Path
) -> None:
    # "Hemorrhage: absent" names the critical concept but asserts its absence; "significant"
    # is not "highly significant".
    routine = an.sr(
        tmp_path,
        study_uid,
        an.coded(an.HEMORRHAGE, an.ABSENT),
        an.coded(an.LEVEL_OF_SIGNIFICANCE, ("SCT", "386134007", "Significant")),
    )
    register_facility_codes(runtime, ["SCT:50960005"])
    ingest_file(runtime, facility, routine)
    assert _scan(runtime) == 1
    row, kinds = _workflow(runtime, study_uid)
    assert (row is None or not row.critical) and kinds == []
    with runtime.sessions() as session:
        study_pk = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        (result,) = results_of_study(session, study_pk)
        assert result.summary["codes"] == ["SCT:2667000", "SCT:386134007"]
        assert "Hemorrhage: Absent (SCT:2667000)" in result.summary["findings"]
        assert result_summaries(session, [study_pk]) == {study_pk: (1, False)}
    assert _scan(runtime) == 0  # nothing new: nothing recorded twice


def register_facility_codes(runtime: Runtime, codes: list[str]) -> FacilityRef:
    spec = FacilitySpec.model_validate({"criticalFindingCodes": codes})
    assert spec.critical_finding_codes == codes
    return register_facility_with(runtime, {"criticalFindingCodes": codes})


def register_facility_with(runtime: Runtime, extra: dict) -> FacilityRef:
    from noctis.core.facilities import apply_facility

    with runtime.sessions.begin() as session:
        facility = apply_facility(session, "north", FacilitySpec.model_validate(extra))
        return FacilityRef(facility.id, facility.name)


def test_significance_and_listed_codes_are_critical(
    runtime: Runtime, facility: FacilityRef, make_dicom, tmp_path: Path
) -> None:
    register_facility_codes(runtime, ["sct:27925004"])  # the scheme in any case
    significant = ingest_file(runtime, facility, make_dicom()).header.study_instance_uid
    listed = ingest_file(runtime, facility, make_dicom()).header.study_instance_uid
    ingest_file(
        runtime,
        facility,
        an.sr(tmp_path, significant, an.coded(an.LEVEL_OF_SIGNIFICANCE, an.HIGHLY_SIGNIFICANT)),
    )
    ingest_file(runtime, facility, an.sr(tmp_path, listed, an.coded(an.FINDING, an.NODULE)))
    assert _scan(runtime) == 2
    for uid in (significant, listed):
        row, _ = _workflow(runtime, uid)
        assert row is not None and row.critical, uid


def test_a_seg_is_summarised_from_its_header_and_its_listed_segment_is_critical(
    runtime: Runtime, facility: FacilityRef, study_uid: str, tmp_path: Path
) -> None:
    register_facility_codes(runtime, ["SCT:50960005"])
    runtime.settings.results_max_header_mb = 1
    # 24 frames of 1024 x 1024 bits: 3 MB of pixel data, over the 1 MB header bound
    big = an.seg(
        tmp_path, study_uid, [("Bleed", an.HEMORRHAGE)] + [("Nodule", an.NODULE)] * 23, size=1024
    )
    assert big.stat().st_size > 3 << 20
    ingest_file(runtime, facility, big)
    assert _scan(runtime) == 1
    row, kinds = _workflow(runtime, study_uid)
    assert row is not None and row.critical and kinds == ["critical-result", "stat-arrived"]
    with runtime.sessions() as session:
        study_pk = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        (result,) = results_of_study(session, study_pk)
    assert (result.kind, result.title) == ("seg", "AI_SEG")
    assert result.summary["findings"][:2] == [
        "Bleed: Hemorrhage (SCT:50960005)",
        "Nodule: Nodule (SCT:27925004)",
    ]
    assert result.critical_reason == "segment Bleed: Hemorrhage (SCT:50960005)"


def test_the_scan_resumes_where_it_stopped_and_skips_images(
    runtime: Runtime, facility: FacilityRef, study_uid: str, make_dicom, tmp_path: Path
) -> None:
    for _ in range(3):
        ingest_file(runtime, facility, make_dicom(StudyInstanceUID=study_uid))
    ingest_file(runtime, facility, an.sr(tmp_path, study_uid, an.coded(an.FINDING, an.NODULE)))
    runtime.settings.results_scan_batch = 2
    time.sleep(SETTLE_SECONDS)
    found = [scan_results(runtime) for _ in range(4)]
    assert found == [0, 0, 1, 0]  # 5 instances, 2 per scan: the SR is the fifth


def test_a_result_whose_commit_came_after_the_scan_passed_it_is_still_found(
    runtime: Runtime, facility: FacilityRef, study_uid: str, tmp_path: Path
) -> None:
    late = an.sr(tmp_path, study_uid, an.coded(an.FINDING, an.NODULE))
    old = an.sr(tmp_path, study_uid, an.coded(an.FINDING, an.NODULE))
    ingest_file(runtime, facility, late)
    ingest_file(runtime, facility, old)
    with runtime.sessions.begin() as session:
        # as if the scan had passed both ids before their transactions committed; "old" was
        # stored long ago (an archive upgraded to this version: not raised as new)
        newest = session.scalar(select(func.max(Instance.id)))
        session.execute(update(ResultScan).values(scanned_to=newest))
        session.execute(
            update(Instance)
            .where(Instance.id == newest)
            .values(created_at=utcnow() - timedelta(hours=1))
        )
    assert _scan(runtime) == 1
    with runtime.sessions() as session:
        recorded = session.scalars(select(AnalysisResult.instance_pk)).all()
    assert recorded == [newest - 1]
    assert _scan(runtime) == 0


def test_results_go_with_their_instance_and_their_study(
    runtime: Runtime, facility: FacilityRef, study_uid: str, tmp_path: Path
) -> None:
    first = an.sr(tmp_path, study_uid, an.coded(an.FINDING, an.NODULE))
    second = an.seg(tmp_path, study_uid, [("Nodule", an.NODULE)])
    ingest_file(runtime, facility, first)
    ingest_file(runtime, facility, second)
    assert _scan(runtime) == 2
    admin = DeletionActor("admin", "user", "127.0.0.1")
    sop = str(dcmread(first, stop_before_pixels=True).SOPInstanceUID)
    series = str(dcmread(first, stop_before_pixels=True).SeriesInstanceUID)
    delete(runtime, Target(facility.id, study_uid, series, sop), admin)
    with runtime.sessions() as session:
        assert [r.kind for r in session.scalars(select(AnalysisResult))] == ["seg"]
    delete(runtime, Target(facility.id, study_uid), admin)
    with runtime.sessions() as session:
        assert session.scalars(select(AnalysisResult)).all() == []
