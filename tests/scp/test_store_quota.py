"""Facility quotas over DIMSE, as dcmtk's storescu sees them (embedded and PostgreSQL + S3, on
both DIMSE paths): a facility at its quota gets 0xA700 with an ErrorComment naming the quota
and the usage; nothing of the refused instance is stored, what was stored stays, and a re-send
of a stored instance still succeeds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import dcmread
from scp_support import AE_TITLE, MODALITY, RunningScp, make_instance
from sqlalchemy import update

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.scp import status
from noctis.scp.client import store_files
from support import dcmtk
from support.archive import index_counts, stored_object_keys
from support.ports import LOOPBACK

pytestmark = [pytest.mark.dcmtk, pytest.mark.both_dimse_paths]


def _set_quota(
    runtime: Runtime,
    facility: FacilityRef,
    *,
    max_bytes: int | None = None,
    max_studies: int | None = None,
) -> None:
    with runtime.sessions.begin() as session:
        session.execute(
            update(Facility)
            .where(Facility.id == facility.id)
            .values(quota_bytes=max_bytes, quota_studies=max_studies)
        )
    # Read the usage on every store: the test must not wait out the refresh interval.
    runtime.quotas.refresh_seconds = 0
    runtime.quotas.forget()


def test_a_facility_at_its_byte_quota_gets_out_of_resources(
    scp: RunningScp, facility: FacilityRef, tmp_path: Path
) -> None:
    first = make_instance(tmp_path / "send", PatientID="P1")
    size = first.stat().st_size
    _set_quota(scp.runtime, facility, max_bytes=size + size // 2)  # room for one, not two
    result = dcmtk.storescu(scp.port, [first], calling=MODALITY, called=AE_TITLE)
    assert result.ok, result.output
    stored = stored_object_keys(scp.runtime.store)
    assert len(stored) == 1

    second = make_instance(tmp_path / "send", PatientID="P1")
    # storescu's debug output shows the response's status and ErrorComment as it got them.
    peer = ["-aet", MODALITY, "-aec", AE_TITLE, LOOPBACK, str(scp.port)]
    result = dcmtk.run_tool("storescu", ["-d", *peer, str(second)])
    assert re.search(r"DIMSE Status +: 0xa700: Refused: Out of resources", result.output)
    limit = size + size // 2
    assert re.search(
        rf"\(0000,0902\) LO \[quota maxBytes: \d+ of {limit} bytes used\] .* ErrorComment",
        result.output,
    ), result.output
    report = store_files(LOOPBACK, scp.port, [second], AE_TITLE, MODALITY)
    assert report.statuses == {second: status.OUT_OF_RESOURCES}
    assert re.search(rf"quota maxBytes: \d+ of {limit} bytes used$", report.failures[0][1])

    # Nothing of the refused instance, everything of the first.
    assert index_counts(scp.runtime)["instance"] == 1
    assert stored_object_keys(scp.runtime.store) == stored
    # The same instance again stores no new bytes: still Success.
    result = dcmtk.storescu(scp.port, [first], calling=MODALITY, called=AE_TITLE)
    assert "Received Store Response (Success)" in result.output, result.output


def test_a_facility_at_its_study_quota_takes_only_instances_of_its_studies(
    scp: RunningScp, facility: FacilityRef, tmp_path: Path
) -> None:
    _set_quota(scp.runtime, facility, max_studies=1)
    first = make_instance(tmp_path / "send", PatientID="P1")
    result = dcmtk.storescu(scp.port, [first], calling=MODALITY, called=AE_TITLE)
    assert result.ok, result.output

    study = str(dcmread(first, stop_before_pixels=True).StudyInstanceUID)
    same_study = make_instance(tmp_path / "send", PatientID="P1", StudyInstanceUID=study)
    new_study = make_instance(tmp_path / "send", PatientID="P1")
    report = store_files(LOOPBACK, scp.port, [same_study, new_study], AE_TITLE, MODALITY)
    assert report.statuses == {same_study: status.SUCCESS, new_study: status.OUT_OF_RESOURCES}
    assert report.failures[0][1].endswith("quota maxStudies: 1 of 1 studies used")
    assert index_counts(scp.runtime) == {"patient": 1, "study": 1, "series": 2, "instance": 2}
