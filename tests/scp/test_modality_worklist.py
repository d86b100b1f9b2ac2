"""The Modality Worklist SCP as a modality sees it: dcmtk's ``findscu -W`` and pynetdicom,
on both DIMSE paths. A modality gets its facility's scheduled steps only, matched on station
AE, modality, date range, patient name (wildcards), patient ID and accession number, with
the order's Study Instance UID to stamp on its images."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from scp_support import AE_TITLE, MODALITY, RunningScp

from noctis.core.facilities import apply_facility
from noctis.core.ingest import FacilityRef
from noctis.core.modality_worklist import MODALITY_WORKLIST_FIND
from noctis.core.orders import OrderFields, cancel_order, create_order
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor
from noctis.index import accounts
from noctis.index.orders import Order
from noctis.specs.facility import FacilitySpec
from support.archive import register_facility
from support.dcmtk import final_status, run_tool
from support.ports import LOOPBACK

pytestmark = pytest.mark.both_dimse_paths

TECH = Actor("tech")
NO_WORKLIST = "NOWORKLIST"  # st-mary's AE without the worklist service


def add_order(runtime: Runtime, facility_id: int, **fields: str) -> str:
    values = {
        "accession_number": "ACC1",
        "patient_id": "P1",
        "patient_name": "Doe^Jane",
        "modality": "CT",
        "scheduled_station_ae_title": "CT_ROOM_1",
        "scheduled_date": "20261207",
        "scheduled_time": "0900",
        "requested_procedure_description": "CT head",
    } | fields
    with runtime.sessions.begin() as session:
        order = create_order(session, facility_id, OrderFields.model_validate(values), actor=TECH)
        return order.study_instance_uid


@pytest.fixture
def orders(runtime: Runtime, facility: FacilityRef) -> dict[str, str]:
    """Accession number -> Study Instance UID of st-mary's orders, and one of another
    facility's (which no st-mary modality may see)."""
    register_facility(
        runtime,
        "st-mary",
        [
            {"aeTitle": MODALITY},
            {"aeTitle": NO_WORKLIST, "services": ["echo", "find", "store"]},
        ],
    )
    uids = {
        "ACC1": add_order(runtime, facility.id),
        "ACC2": add_order(
            runtime,
            facility.id,
            accession_number="ACC2",
            patient_id="P2",
            patient_name="Smith^John",
            modality="MR",
            scheduled_station_ae_title="MR_ROOM",
            scheduled_date="20261208",
            priority="stat",
        ),
        "ACC3": add_order(
            runtime,
            facility.id,
            accession_number="ACC3",
            patient_id="P3",
            patient_name="Dorian^Gray",
            scheduled_date="20261210",
        ),
        "GONE": add_order(runtime, facility.id, accession_number="GONE", patient_id="P9"),
    }
    with runtime.sessions.begin() as session:
        gone = session.query(Order).filter_by(accession_number="GONE").one()
        cancel_order(session, gone, actor=TECH)
        other = apply_facility(session, "elsewhere", FacilitySpec())
        other_id = other.id
    add_order(runtime, other_id, accession_number="ACC1", patient_name="Doe^Other")
    return uids


def findscu_worklist(port: int, keys: list[str], workdir: Path, calling: str = MODALITY):
    out = workdir / f"mwl-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    args = ["-d", "-W", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = run_tool("findscu", [*args, "-aet", calling, "-aec", AE_TITLE, LOOPBACK, str(port)])
    return result, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


RETURN_KEYS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "RequestedProcedurePriority",
    "ReferringPhysicianName",
    "(0040,0100)[0].ScheduledStationAETitle",
    "(0040,0100)[0].Modality",
    "(0040,0100)[0].ScheduledProcedureStepStartDate",
    "(0040,0100)[0].ScheduledProcedureStepStartTime",
    "(0040,0100)[0].ScheduledProcedureStepID",
    "(0040,0100)[0].ScheduledProcedureStepDescription",
]


def test_findscu_gets_the_facilitys_scheduled_steps_with_their_study_uids(
    scp: RunningScp, orders: dict[str, str], tmp_path: Path
) -> None:
    result, answers = findscu_worklist(scp.port, RETURN_KEYS, tmp_path)
    assert result.ok, result.output
    assert final_status(result.output) == 0x0000
    # Scheduled ones only (not the cancelled order), of st-mary only, by scheduled time.
    assert [a.AccessionNumber for a in answers] == ["ACC1", "ACC2", "ACC3"]
    first = answers[0]
    assert first.StudyInstanceUID == orders["ACC1"]
    assert str(first.PatientName) == "Doe^Jane"
    step = first.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledStationAETitle, step.Modality) == ("CT_ROOM_1", "CT")
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20261207",
        "090000",
    )
    assert step.ScheduledProcedureStepDescription == "CT head"
    assert answers[1].RequestedProcedurePriority == "STAT"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["(0040,0100)[0].ScheduledStationAETitle=CT_ROOM_1"], ["ACC1", "ACC3"]),
        (["(0040,0100)[0].Modality=MR"], ["ACC2"]),
        (["(0040,0100)[0].ScheduledProcedureStepStartDate=20261207-20261208"], ["ACC1", "ACC2"]),
        (["(0040,0100)[0].ScheduledProcedureStepStartDate=20261209-"], ["ACC3"]),
        (["PatientName=do*"], ["ACC1", "ACC3"]),
        (["PatientName=Sm?th^John"], ["ACC2"]),
        (["PatientID=P3"], ["ACC3"]),
        (["AccessionNumber=ACC2"], ["ACC2"]),
        (["AccessionNumber=GONE"], []),
        (
            [
                "(0040,0100)[0].Modality=CT",
                "(0040,0100)[0].ScheduledProcedureStepStartDate=20261207",
            ],
            ["ACC1"],
        ),
    ],
)
def test_findscu_matches_station_modality_dates_and_patient(
    scp: RunningScp,
    orders: dict[str, str],
    tmp_path: Path,
    keys: list[str],
    expected: list[str],
) -> None:
    asked = (
        keys if any(k.startswith("AccessionNumber") for k in keys) else [*keys, "AccessionNumber"]
    )
    result, answers = findscu_worklist(scp.port, asked, tmp_path)
    assert final_status(result.output) == 0x0000, result.output
    assert [a.AccessionNumber for a in answers] == expected


def test_an_ae_without_the_worklist_service_is_refused_and_a_bad_range_explained(
    scp: RunningScp, orders: dict[str, str], tmp_path: Path
) -> None:
    result, answers = findscu_worklist(scp.port, ["PatientName"], tmp_path, calling=NO_WORKLIST)
    assert answers == []
    assert final_status(result.output) == 0x0124, result.output
    result, answers = findscu_worklist(
        scp.port, ["(0040,0100)[0].ScheduledProcedureStepStartDate=2026-"], tmp_path
    )
    assert answers == []
    assert final_status(result.output) == 0xA900, result.output


def test_pynetdicom_gets_only_the_keys_it_asked_for_and_the_query_is_audited(
    scp: RunningScp, orders: dict[str, str], runtime: Runtime
) -> None:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    query = Dataset()
    query.PatientName = "Smith*"
    query.StudyInstanceUID = ""
    query.ScheduledProcedureStepSequence = [Dataset()]
    query.ScheduledProcedureStepSequence[0].Modality = ""
    assoc = ae.associate(LOOPBACK, scp.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(query, MODALITY_WORKLIST_FIND))
    finally:
        assoc.release()
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses == [0xFF00, 0x0000]
    answer = responses[0][1]
    assert answer.StudyInstanceUID == orders["ACC2"]
    assert answer.ScheduledProcedureStepSequence[0].Modality == "MR"
    assert "PatientID" not in answer and "AccessionNumber" not in answer
    runtime.audit.flush()
    with runtime.sessions() as session:
        rows = session.query(accounts.AuditRow).filter_by(action="query").all()
    details = [row.detail for row in rows if row.detail.get("level") == "WORKLIST"]
    assert details and details[-1]["results"] == 1
    assert details[-1]["keys"] == {"PatientName": "Smith*"}


def test_a_modality_reads_the_worklist_then_sends_the_study_which_is_linked_as_stat(
    scp: RunningScp, orders: dict[str, str], runtime: Runtime, tmp_path: Path
) -> None:
    """The modality's day: a worklist query for its station, an exam under the answer's
    Study Instance UID and accession number sent with storescu, and the arrival linked to
    the STAT order: the study is STAT on the radiologists' worklist, with its notification."""
    from sqlalchemy import select

    from noctis.core.orders import link_arrivals
    from noctis.index.models import Study
    from noctis.index.workflow import NotificationEvent, StudyWorkflow
    from support.dcmtk import storescu
    from support.dicomdata import small_ct

    result, answers = findscu_worklist(
        scp.port,
        [
            "(0040,0100)[0].ScheduledStationAETitle=MR_ROOM",
            "PatientName",
            "PatientID",
            "AccessionNumber",
            "StudyInstanceUID",
        ],
        tmp_path,
    )
    assert [a.AccessionNumber for a in answers] == ["ACC2"], result.output
    scheduled = answers[0]
    image = tmp_path / "mr.dcm"
    small_ct(
        StudyInstanceUID=scheduled.StudyInstanceUID,
        AccessionNumber=scheduled.AccessionNumber,
        PatientID=scheduled.PatientID,
        PatientName=scheduled.PatientName,
        Modality="MR",
    ).save_as(image, enforce_file_format=True)
    sent = storescu(scp.port, [image], calling=MODALITY, called=AE_TITLE)
    assert sent.ok, sent.output
    assert link_arrivals(runtime) == 1
    with runtime.sessions() as session:
        order = session.scalars(select(Order).where(Order.accession_number == "ACC2")).first()
        study = session.get(Study, order.study_pk)
        assert study.study_instance_uid == orders["ACC2"]
        assert session.get(StudyWorkflow, study.id).priority == 2  # STAT
        kinds = [e.kind for e in session.scalars(select(NotificationEvent))]
        assert kinds == ["stat-arrived"]
