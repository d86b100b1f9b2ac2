"""Filing over DIMSE: what storescu and findscu see (embedded and PostgreSQL + S3).

- two studies with an empty PatientID stay two patients, each answering C-FIND with its own
  name;
- an instance whose series is filed under another study, or whose study is filed under another
  patient, is refused with a failure status (C110, C111) and its comment, and nothing of it is
  stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from scp_support import AE_TITLE, MODALITY, RunningScp, make_instance

from noctis.scp import status
from noctis.scp.client import store_files
from support import dcmtk
from support.archive import index_counts, stored_object_keys
from support.ports import LOOPBACK

pytestmark = pytest.mark.dcmtk


def _find(scp: RunningScp, tmp_path: Path, level: str, **keys: str) -> dict[str, str]:
    """StudyInstanceUID -> PatientName of every C-FIND match (findscu)."""
    wanted = {"StudyInstanceUID": "", "PatientName": "", "PatientID": "", **keys}
    if level == "SERIES":
        wanted["SeriesInstanceUID"] = ""
    result = dcmtk.findscu(
        scp.port, wanted, level=level, calling=MODALITY, called=AE_TITLE, workdir=tmp_path
    )
    assert result.ok, result.output
    return {str(ds.StudyInstanceUID): str(ds.PatientName) for ds in result.responses}


def test_studies_with_an_empty_patient_id_answer_with_their_own_names(
    scp: RunningScp, tmp_path: Path
) -> None:
    smith = make_instance(tmp_path / "send", PatientID="", PatientName="SMITH^JOHN")
    doe = make_instance(tmp_path / "send", PatientID="", PatientName="DOE^JANE")
    result = dcmtk.storescu(scp.port, [smith, doe], calling=MODALITY, called=AE_TITLE)
    assert result.ok, result.output
    smith_study, doe_study = _study_uid(smith), _study_uid(doe)

    expected = {smith_study: "SMITH^JOHN", doe_study: "DOE^JANE"}
    assert _find(scp, tmp_path, "STUDY") == expected
    assert _find(scp, tmp_path, "SERIES") == expected
    assert _find(scp, tmp_path, "STUDY", PatientName="SMITH*") == {smith_study: "SMITH^JOHN"}
    assert index_counts(scp.runtime)["patient"] == 2


def test_an_instance_of_a_series_filed_under_another_study_is_refused(
    scp: RunningScp, tmp_path: Path
) -> None:
    first = make_instance(tmp_path / "send", PatientID="P1")
    result = dcmtk.storescu(scp.port, [first], calling=MODALITY, called=AE_TITLE)
    assert result.ok, result.output
    # Same Series Instance UID, another Study Instance UID: a sender's bug.
    misfiled = make_instance(
        tmp_path / "send", PatientID="P1", SeriesInstanceUID=_series_uid(first)
    )

    result = dcmtk.storescu(scp.port, [misfiled], calling=MODALITY, called=AE_TITLE)
    # dcmtk names the range: a failure the sender must not retry (not A7xx, "out of resources").
    assert "Received Store Response (Error: CannotUnderstand)" in result.output
    report = store_files(LOOPBACK, scp.port, [misfiled], AE_TITLE, MODALITY)
    assert report.statuses == {misfiled: status.SERIES_OF_ANOTHER_STUDY}
    assert report.failures[0][1].endswith("series is filed under another study; not stored")

    assert index_counts(scp.runtime) == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    assert len(stored_object_keys(scp.runtime.store)) == 1
    found = _find(scp, tmp_path, "STUDY")
    assert list(found) == [_study_uid(first)]


def test_an_instance_of_a_study_filed_under_another_patient_is_refused(
    scp: RunningScp, tmp_path: Path
) -> None:
    first = make_instance(tmp_path / "send", PatientID="P1", PatientName="ONE^PATIENT")
    assert store_files(LOOPBACK, scp.port, [first], AE_TITLE, MODALITY).succeeded == 1
    other = make_instance(
        tmp_path / "send",
        PatientID="P2",
        PatientName="OTHER^PATIENT",
        StudyInstanceUID=_study_uid(first),
    )

    result = dcmtk.storescu(scp.port, [other], calling=MODALITY, called=AE_TITLE)
    # dcmtk names the range: a failure the sender must not retry (not A7xx, "out of resources").
    assert "Received Store Response (Error: CannotUnderstand)" in result.output
    report = store_files(LOOPBACK, scp.port, [other], AE_TITLE, MODALITY)
    assert report.statuses == {other: status.STUDY_OF_ANOTHER_PATIENT}
    assert report.failures[0][1].endswith("study is filed under another patient; not stored")

    assert index_counts(scp.runtime) == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    assert len(stored_object_keys(scp.runtime.store)) == 1
    assert _find(scp, tmp_path, "STUDY") == {_study_uid(first): "ONE^PATIENT"}


def _study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _series_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
