"""C-FIND at every level of Patient Root and Study Root, through dcmtk's findscu, and the
statuses of refused queries through pynetdicom.

The archive holds, for facility st-mary: Doe^Jane (P1) with a two-series CT study in January
and an MR study in March; Dow^John (P2) with a CT study on New Year's Eve 2023; Smith^Ann (P3)
with a CR study in January. Facility "other" holds Doe^Hidden's January CT, which st-mary
must never see.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from scp_support import (
    AE_TITLE,
    ECHO_ONLY,
    MODALITY,
    UNDECODABLE_IDENTIFIER,
    RunningScp,
    identifier,
    make_instance,
    query,
    raw_request,
)

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.scp import status
from support import dcmtk, wait
from support.archive import register_facility
from support.incoming import ingest_file
from support.ports import LOOPBACK

pytestmark = pytest.mark.dcmtk

OTHER = "OTHERPACS"


@dataclass
class Seeded:
    jan_ct: str
    jan_ct_series: list[str]
    jan_ct_instances: list[str]
    mar_mr: str
    eve_ct: str
    jan_cr: str
    hidden: str


def _store(runtime: Runtime, facility: FacilityRef, path: Path) -> str:
    return ingest_file(runtime, facility, path).header.sop_instance_uid


@pytest.fixture
def seeded(scp: RunningScp, facility: FacilityRef, tmp_path: Path) -> Seeded:
    runtime = scp.runtime
    other = register_facility(runtime, "other", [{"aeTitle": OTHER}])
    d = tmp_path / "seed"
    jane = {"PatientID": "P1", "PatientName": "Doe^Jane", "PatientBirthDate": "19800101"}
    jan_ct, series_a, series_b = "1.2.826.0.1.1", "1.2.826.0.1.1.1", "1.2.826.0.1.1.2"
    common = {"StudyInstanceUID": jan_ct, "StudyDate": "20240110", "StudyTime": "083000"}
    instances = [
        _store(
            runtime,
            facility,
            make_instance(
                d,
                **jane,
                **common,
                SeriesInstanceUID=series,
                SeriesNumber=number,
                InstanceNumber=index,
                StudyDescription="CT CHEST",
            ),
        )
        for series, number in ((series_a, 1), (series_b, 2))
        for index in (1, 2)
    ]
    mar_mr, eve_ct, jan_cr, hidden = (
        "1.2.826.0.1.2",
        "1.2.826.0.1.3",
        "1.2.826.0.1.4",
        "1.2.826.0.1.9",
    )
    _store(
        runtime,
        facility,
        make_instance(
            d,
            **jane,
            StudyInstanceUID=mar_mr,
            StudyDate="20240305",
            Modality="MR",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.4",
        ),
    )
    _store(
        runtime,
        facility,
        make_instance(
            d,
            PatientID="P2",
            PatientName="Dow^John",
            StudyInstanceUID=eve_ct,
            StudyDate="20231231",
            StudyTime="235900",
        ),
    )
    _store(
        runtime,
        facility,
        make_instance(
            d,
            PatientID="P3",
            PatientName="Smith^Ann",
            StudyInstanceUID=jan_cr,
            StudyDate="20240120",
            Modality="CR",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.1",
        ),
    )
    _store(
        runtime,
        other,
        make_instance(
            d,
            PatientID="P9",
            PatientName="Doe^Hidden",
            StudyInstanceUID=hidden,
            StudyDate="20240115",
        ),
    )
    return Seeded(jan_ct, [series_a, series_b], instances, mar_mr, eve_ct, jan_cr, hidden)


def find(scp: RunningScp, tmp_path: Path, keys: dict[str, str], **kwargs: str) -> list:
    result = dcmtk.findscu(
        scp.port,
        keys,
        calling=kwargs.pop("calling", MODALITY),
        called=AE_TITLE,
        workdir=tmp_path,
        **kwargs,
    )
    assert result.ok, result.output
    return result.responses


def values(responses: list, keyword: str) -> set[str]:
    return {str(r.get(keyword, "")) for r in responses}


def test_study_level_wildcards_ranges_and_uid_lists(
    scp: RunningScp, seeded: Seeded, tmp_path: Path
) -> None:
    keys = {
        "PatientName": "Do*",
        "StudyInstanceUID": "",
        "StudyDate": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedInstances": "",
        "NumberOfStudyRelatedSeries": "",
    }
    found = find(scp, tmp_path, keys, level="STUDY")
    assert values(found, "StudyInstanceUID") == {seeded.jan_ct, seeded.mar_mr, seeded.eve_ct}
    jan = next(r for r in found if r.StudyInstanceUID == seeded.jan_ct)
    assert jan.StudyDate == "20240110"
    assert jan.ModalitiesInStudy == "CT"
    assert int(jan.NumberOfStudyRelatedInstances) == 4
    assert int(jan.NumberOfStudyRelatedSeries) == 2

    one_char = find(
        scp, tmp_path, {"PatientName": "D?e^Jane", "StudyInstanceUID": ""}, level="STUDY"
    )
    assert values(one_char, "StudyInstanceUID") == {seeded.jan_ct, seeded.mar_mr}

    january = find(
        scp, tmp_path, {"StudyDate": "20240101-20240131", "StudyInstanceUID": ""}, level="STUDY"
    )
    assert values(january, "StudyInstanceUID") == {seeded.jan_ct, seeded.jan_cr}
    until = find(scp, tmp_path, {"StudyDate": "-20231231", "StudyInstanceUID": ""}, level="STUDY")
    assert values(until, "StudyInstanceUID") == {seeded.eve_ct}
    since = find(scp, tmp_path, {"StudyDate": "20240301-", "StudyInstanceUID": ""}, level="STUDY")
    assert values(since, "StudyInstanceUID") == {seeded.mar_mr}
    late = find(
        scp,
        tmp_path,
        {"StudyDate": "20231231", "StudyTime": "2300-", "StudyInstanceUID": ""},
        level="STUDY",
    )
    assert values(late, "StudyInstanceUID") == {seeded.eve_ct}

    uid_list = find(
        scp, tmp_path, {"StudyInstanceUID": f"{seeded.jan_ct}\\{seeded.eve_ct}"}, level="STUDY"
    )
    assert values(uid_list, "StudyInstanceUID") == {seeded.jan_ct, seeded.eve_ct}
    by_modality = find(
        scp, tmp_path, {"ModalitiesInStudy": "CR", "StudyInstanceUID": ""}, level="STUDY"
    )
    assert values(by_modality, "StudyInstanceUID") == {seeded.jan_cr}


def test_patient_root_patient_and_study_levels(
    scp: RunningScp, seeded: Seeded, tmp_path: Path
) -> None:
    patients = find(
        scp,
        tmp_path,
        {"PatientName": "D*", "PatientID": "", "NumberOfPatientRelatedStudies": ""},
        level="PATIENT",
        model="patient",
    )
    assert values(patients, "PatientID") == {"P1", "P2"}
    jane = next(p for p in patients if p.PatientID == "P1")
    assert int(jane.NumberOfPatientRelatedStudies) == 2

    studies = find(
        scp,
        tmp_path,
        {"PatientID": "P1", "StudyInstanceUID": ""},
        level="STUDY",
        model="patient",
    )
    assert values(studies, "StudyInstanceUID") == {seeded.jan_ct, seeded.mar_mr}


@pytest.mark.parametrize("model", ["study", "patient"])
def test_series_and_image_levels(
    scp: RunningScp, seeded: Seeded, tmp_path: Path, model: str
) -> None:
    patient = {"PatientID": "P1"} if model == "patient" else {}
    series = find(
        scp,
        tmp_path,
        {
            **patient,
            "StudyInstanceUID": seeded.jan_ct,
            "SeriesInstanceUID": "",
            "Modality": "",
            "SeriesNumber": "",
            "NumberOfSeriesRelatedInstances": "",
        },
        level="SERIES",
        model=model,
    )
    assert values(series, "SeriesInstanceUID") == set(seeded.jan_ct_series)
    assert values(series, "Modality") == {"CT"}
    assert {int(s.NumberOfSeriesRelatedInstances) for s in series} == {2}
    assert values(series, "StudyInstanceUID") == {seeded.jan_ct}  # higher unique keys too

    images = find(
        scp,
        tmp_path,
        {
            **patient,
            "StudyInstanceUID": seeded.jan_ct,
            "SeriesInstanceUID": seeded.jan_ct_series[0],
            "SOPInstanceUID": "",
            "SOPClassUID": "",
            "InstanceNumber": "",
        },
        level="IMAGE",
        model=model,
    )
    assert values(images, "SOPInstanceUID") == set(seeded.jan_ct_instances[:2])
    assert values(images, "InstanceNumber") == {"1", "2"}
    assert values(images, "SOPClassUID") == {"1.2.840.10008.5.1.4.1.1.2"}


def test_unsupported_keys_come_back_empty_with_ff01(scp: RunningScp, seeded: Seeded) -> None:
    asked = identifier(
        "STUDY",
        StudyInstanceUID=seeded.jan_ct,
        InstitutionName="",
        PatientComments="",
        ReferencedStudySequence=[],
    )
    answers = query(scp.port, asked)
    assert [code for code, _ in answers] == [status.PENDING_WITH_UNSUPPORTED_KEYS, status.SUCCESS]
    match = answers[0][1]
    assert match is not None
    assert match.StudyInstanceUID == seeded.jan_ct
    assert match.InstitutionName == "" and match.PatientComments == ""
    assert len(match.ReferencedStudySequence) == 0
    assert match.SpecificCharacterSet == "ISO_IR 192"

    supported = query(scp.port, identifier("STUDY", StudyInstanceUID=seeded.jan_ct))
    assert [code for code, _ in supported] == [status.PENDING, status.SUCCESS]


def test_a_facility_sees_only_its_own_studies(
    scp: RunningScp, seeded: Seeded, tmp_path: Path
) -> None:
    mine = find(scp, tmp_path, {"PatientName": "*", "StudyInstanceUID": ""}, level="STUDY")
    assert seeded.hidden not in values(mine, "StudyInstanceUID")
    assert len(mine) == 4
    direct = find(scp, tmp_path, {"StudyInstanceUID": seeded.hidden}, level="STUDY")
    assert direct == []
    theirs = find(
        scp, tmp_path, {"PatientName": "*", "StudyInstanceUID": ""}, level="STUDY", calling=OTHER
    )
    assert values(theirs, "StudyInstanceUID") == {seeded.hidden}
    patients = find(
        scp, tmp_path, {"PatientID": "", "PatientName": ""}, level="PATIENT", model="patient"
    )
    assert values(patients, "PatientID") == {"P1", "P2", "P3"}


@pytest.mark.parametrize(
    ("asked", "model", "expected"),
    [
        (identifier("PATIENT", PatientID=""), "study", status.DOES_NOT_MATCH_SOP_CLASS),
        (identifier("WARD", PatientID=""), "study", status.DOES_NOT_MATCH_SOP_CLASS),
        (identifier("", PatientID=""), "patient", status.DOES_NOT_MATCH_SOP_CLASS),
        (identifier("STUDY", StudyDate="2024-xx"), "study", status.DOES_NOT_MATCH_SOP_CLASS),
        (identifier("STUDY", StudyDate="-"), "study", status.DOES_NOT_MATCH_SOP_CLASS),
    ],
    ids=[
        "patient-level-in-study-root",
        "unknown-level",
        "no-level",
        "bad-date",
        "empty-range",
    ],
)
def test_invalid_identifiers_are_refused(
    scp: RunningScp, asked: object, model: str, expected: int
) -> None:
    answers = query(scp.port, asked, model=model)  # type: ignore[arg-type]
    assert [code for code, _ in answers] == [expected]


def test_find_refused_without_the_find_service(scp: RunningScp) -> None:
    answers = query(scp.port, identifier("STUDY", StudyInstanceUID=""), calling=ECHO_ONLY)
    assert [code for code, _ in answers] == [status.NOT_AUTHORIZED]


def test_undecodable_identifier(scp: RunningScp) -> None:
    request = C_FIND()
    request.MessageID = 7
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    request.Priority = 2
    request.Identifier = BytesIO(UNDECODABLE_IDENTIFIER)
    assert raw_request(scp.port, request) == [status.FIND_UNDECODABLE_IDENTIFIER]


MANY = 400  # matches that go out in several batches (noctis.scp.find.BATCH_BYTES)


@pytest.fixture
def many(scp: RunningScp, facility: FacilityRef, tmp_path: Path) -> list[str]:
    """MANY studies of MANY patients named Many^000, Many^001, ..."""
    names = [f"Many^{index:03d}" for index in range(MANY)]
    for index, name in enumerate(names):
        path = make_instance(
            tmp_path / "many",
            PatientID=f"M{index}",
            PatientName=name,
            StudyInstanceUID=f"1.2.826.0.1.77.{index}",
        )
        ingest_file(scp.runtime, facility, path)
    return names


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
def test_many_matches_all_come_back_to_findscu(
    scp: RunningScp, many: list[str], tmp_path: Path
) -> None:
    found = find(scp, tmp_path, {"PatientName": "Many*", "StudyInstanceUID": ""}, level="STUDY")
    assert sorted(str(r.PatientName) for r in found) == many
    assert len(values(found, "StudyInstanceUID")) == MANY


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
def test_a_c_cancel_stops_the_responses(scp: RunningScp, many: list[str]) -> None:
    """A C-CANCEL-RQ sent right after the request, before any response was read: the SCP
    answers Cancel instead of sending every match."""
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(LOOPBACK, scp.port, ae_title=AE_TITLE)
    assert assoc.is_established
    request = C_FIND()
    request.MessageID = 5
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    request.Priority = 2
    request.Identifier = BytesIO(
        encode(identifier("STUDY", PatientName="Many*", StudyInstanceUID=""), True, True)
    )
    codes: list[int] = []
    try:
        context_id = assoc.accepted_contexts[0].context_id
        assoc._reactor_checkpoint.clear()  # the responses come to us, as in send_c_find
        wait.until(lambda: assoc._is_paused, timeout=5, what="the reactor to pause", interval=0.001)
        assoc.dimse.send_msg(request, context_id)
        assoc.send_c_cancel(5, context_id)
        while True:
            _, response = assoc.dimse.get_msg(block=True)
            assert response is not None, "no final response"
            codes.append(int(response.Status))
            if codes[-1] not in (status.PENDING, status.PENDING_WITH_UNSUPPORTED_KEYS):
                break
        assoc._reactor_checkpoint.set()
    finally:
        assoc.release()
    assert codes[-1] == status.CANCEL
    assert len(codes) < MANY  # stopped early, not after every match
