"""Filing over real HTTP: what a STOW-RS sender, a QIDO-RS reader and an administrator see.

- two studies with an empty PatientID answer QIDO with their own names;
- a misfiling instance fails with 409 and a FailureReason, and nothing of it is stored;
- the same instance sent by storescu and then over STOW-RS is one instance (its data set is
  compared, not the sender's File Meta);
- a demographics conflict is listed at /api/audit and counted on /metrics.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from noctis.core.runtime import Runtime
from noctis.index.models import Instance
from noctis.scp.server import Scp
from support import dcmtk
from support.archive import index_counts, register_facility, stored_object_keys
from support.dicomdata import small_ct
from support.ports import LOOPBACK
from support.web import client_for

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
PATIENT_NAME = "00100010"
STUDY_UID = "0020000D"


def _part(**attributes: object) -> bytes:
    out = io.BytesIO()
    small_ct(**attributes).save_as(out, enforce_file_format=True)
    return out.getvalue()


def _names(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return {
        item[STUDY_UID]["Value"][0]: item[PATIENT_NAME]["Value"][0]["Alphabetic"]
        for item in response.json()
    }


@pytest.fixture
def north(live_server: str, tokens: dict[str, str]) -> Iterator:  # type: ignore[type-arg]
    with client_for(live_server, tokens["rad_north"]) as client:
        yield client


def test_studies_with_an_empty_patient_id_answer_qido_with_their_own_names(north, dw) -> None:
    smith, doe = generate_uid(), generate_uid()
    parts = [
        _part(PatientID="", PatientName="SMITH^JOHN", StudyInstanceUID=smith),
        _part(PatientID="", PatientName="DOE^JANE", StudyInstanceUID=doe),
    ]
    assert dw.stow(north, parts).status_code == 200

    assert _names(north.get("/dicom-web/studies")) == {smith: "SMITH^JOHN", doe: "DOE^JANE"}
    assert _names(north.get("/dicom-web/studies", params={"PatientName": "SMITH*"})) == {
        smith: "SMITH^JOHN"
    }
    series = north.get("/dicom-web/series", params={"includefield": "PatientName"})
    assert _names(series) == {smith: "SMITH^JOHN", doe: "DOE^JANE"}


def test_an_instance_of_a_series_of_another_study_fails_with_409(north, dw, runtime) -> None:
    series = generate_uid()
    assert dw.stow(north, [_part(SeriesInstanceUID=series)]).status_code == 200
    misfiled = _part(SeriesInstanceUID=series)
    sop_uid = str(dcmread(io.BytesIO(misfiled)).SOPInstanceUID)

    response = dw.stow(north, [misfiled])

    assert response.status_code == 409
    [failed] = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0xC110]
    assert failed["00081155"]["Value"] == [sop_uid]
    assert "belongs to study" in response.headers["Warning"]
    assert index_counts(runtime) == {"patient": 1, "study": 1, "series": 1, "instance": 1}
    assert len([k for k in stored_object_keys(runtime.store) if k.endswith(".dcm")]) == 1


def test_a_study_of_another_patient_fails_with_409(north, dw, runtime) -> None:
    study = generate_uid()
    assert dw.stow(north, [_part(StudyInstanceUID=study, PatientID="P1")]).status_code == 200

    response = dw.stow(north, [_part(StudyInstanceUID=study, PatientID="P2")])

    assert response.status_code == 409
    [failed] = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0xC111]
    assert "another patient" in response.headers["Warning"]
    assert index_counts(runtime)["instance"] == 1


@pytest.mark.dcmtk
def test_the_same_instance_by_storescu_then_stow_is_one_instance(
    north, dw, runtime: Runtime, tmp_path: Path, live_server: str, tokens: dict[str, str]
) -> None:
    register_facility(runtime, "north", [{"aeTitle": "MODALITY"}])
    path = tmp_path / "ct.dcm"
    small_ct(PatientName="Same^Instance").save_as(path, enforce_file_format=True)
    scp = Scp(runtime, host=LOOPBACK, port=0).start()
    try:
        result = dcmtk.storescu(scp.port, [path], calling="MODALITY", called="NOCTIS")
    finally:
        scp.stop()
    assert result.ok, result.output

    response = dw.stow(north, [path.read_bytes()])  # another File Meta: STOW sends the file

    assert response.status_code == 200, response.text
    assert FAILED_SOP_SEQUENCE not in response.json()
    assert index_counts(runtime)["instance"] == 1
    assert len([k for k in stored_object_keys(runtime.store) if k.endswith(".dcm")]) == 1
    with runtime.sessions() as session:
        [stored] = session.query(Instance).all()
    assert runtime.store.get(stored.object_key) != path.read_bytes()  # storescu's was kept
    with client_for(live_server, tokens["admin"]) as admin:
        page = admin.get("/api/audit", params={"action": "duplicate-discarded"})
    events = page.json()["items"]
    assert events == []  # a plain duplicate: nothing discarded, nothing to reconcile


def test_a_demographics_conflict_is_listed_for_administrators_and_counted(
    north, dw, live_server: str, tokens: dict[str, str]
) -> None:
    first, second = generate_uid(), generate_uid()
    parts = [
        _part(PatientID="P7", PatientName="SMITH^JOHN", StudyInstanceUID=first),
        _part(PatientID="P7", PatientName="SMYTHE^JOHN", StudyInstanceUID=second),
    ]
    assert dw.stow(north, parts).status_code == 200

    assert _names(north.get("/dicom-web/studies", params={"PatientID": "P7"})) == {
        first: "SMITH^JOHN",
        second: "SMYTHE^JOHN",
    }
    with client_for(live_server, tokens["admin"]) as admin:
        page = admin.get("/api/audit", params={"action": "demographics-conflict"})
        metrics = admin.get("/metrics").text
    [event] = page.json()["items"]
    assert event["study_instance_uid"] == second
    assert event["actor"] == "rad_north"
    assert event["detail"]["stored"]["PatientName"] == "SMITH^JOHN"
    assert event["detail"]["received"]["PatientName"] == "SMYTHE^JOHN"
    assert 'noctis_demographics_conflicts_total{facility="north"}' in metrics
