"""The MPPS SCP as a modality drives it with pynetdicom, on both DIMSE paths: N-CREATE in
progress moves the order named by its Scheduled Step Attributes, N-SET completes or
discontinues it, and a final step, an unknown one or a malformed request gets its status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from scp_support import AE_TITLE, ECHO_ONLY, MODALITY, RunningScp

from noctis.core.ingest import FacilityRef
from noctis.core.orders import OrderFields, create_order
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor
from noctis.index import accounts
from noctis.index.orders import Order, PerformedProcedureStep
from noctis.scp.contexts import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from support.ports import LOOPBACK

pytestmark = pytest.mark.both_dimse_paths


@pytest.fixture
def order(runtime: Runtime, facility: FacilityRef) -> Order:
    fields = OrderFields(
        accession_number="ACC7",
        patient_id="P7",
        patient_name="Doe^Jane",
        modality="CT",
        scheduled_date="20261207",
    )
    with runtime.sessions.begin() as session:
        made = create_order(session, facility.id, fields, actor=Actor("tech"))
        session.expunge(made)
        return made


def associate(scp: RunningScp, calling: str = MODALITY) -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(MPPS)
    assoc = ae.associate(LOOPBACK, scp.port, ae_title=AE_TITLE)
    assert assoc.is_established
    return assoc


@pytest.fixture
def modality(scp: RunningScp) -> Iterator[Association]:
    assoc = associate(scp)
    yield assoc
    assoc.release()


def in_progress(**scheduled: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStartDate = "20261207"
    ds.PerformedProcedureStepStartTime = "091500"
    ds.PerformedStationAETitle = MODALITY
    ds.Modality = "CT"
    ds.PatientID = "P7"
    item = Dataset()
    for keyword, value in scheduled.items():
        setattr(item, keyword, value)
    ds.ScheduledStepAttributesSequence = [item] if scheduled else []
    return ds


def final(step_status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = step_status
    ds.PerformedProcedureStepEndDate = "20261207"
    ds.PerformedProcedureStepEndTime = "094500"
    return ds


def order_status(runtime: Runtime, order_id: int) -> str:
    with runtime.sessions() as session:
        return session.get(Order, order_id).status


def test_an_exam_moves_its_order_in_progress_then_completed(
    scp: RunningScp, runtime: Runtime, order: Order, modality: Association
) -> None:
    uid = generate_uid()
    status, _ = modality.send_n_create(
        in_progress(StudyInstanceUID=order.study_instance_uid), MPPS, uid
    )
    assert status.Status == 0x0000
    assert order_status(runtime, order.id) == "in-progress"
    status, _ = modality.send_n_set(final("COMPLETED"), MPPS, uid)
    assert status.Status == 0x0000
    assert order_status(runtime, order.id) == "completed"
    # Final: no change after that.
    status, _ = modality.send_n_set(final("DISCONTINUED"), MPPS, uid)
    assert status.Status == 0x0110
    assert "no longer be updated" in status.ErrorComment
    assert order_status(runtime, order.id) == "completed"
    with runtime.sessions() as session:
        step = session.query(PerformedProcedureStep).one()
        assert (step.status, step.order_id, step.calling_ae_title) == (
            "COMPLETED",
            order.id,
            MODALITY,
        )
        assert step.attributes["PerformedProcedureStepEndTime"] == "094500"
        changes = [
            (row.action, row.detail["change"], row.actor)
            for row in session.query(accounts.AuditRow).order_by(accounts.AuditRow.id)
            if row.action in ("order", "mpps")
        ]
    assert changes == [
        ("order", "create", "tech"),
        ("mpps", "create", MODALITY),
        ("order", "status", MODALITY),
        ("mpps", "completed", MODALITY),
        ("order", "status", MODALITY),
    ]


def test_a_discontinued_exam_found_by_accession_discontinues_its_order(
    scp: RunningScp, runtime: Runtime, order: Order, modality: Association
) -> None:
    uid = generate_uid()
    status, _ = modality.send_n_create(
        in_progress(AccessionNumber="ACC7", RequestedProcedureID="ACC7"), MPPS, uid
    )
    assert status.Status == 0x0000
    status, _ = modality.send_n_set(final("DISCONTINUED"), MPPS, uid)
    assert status.Status == 0x0000
    assert order_status(runtime, order.id) == "discontinued"


def test_bad_requests_get_their_dimse_statuses_and_change_nothing(
    scp: RunningScp, runtime: Runtime, order: Order, modality: Association
) -> None:
    uid = generate_uid()
    # unknown instance
    status, _ = modality.send_n_set(final("COMPLETED"), MPPS, generate_uid())
    assert status.Status == 0x0112
    # no Scheduled Step Attributes Sequence: missing attribute
    status, _ = modality.send_n_create(in_progress(), MPPS, uid)
    assert status.Status == 0x0120
    assert "Scheduled Step Attributes" in status.ErrorComment
    # created in another state than IN PROGRESS: invalid attribute value
    wrong = in_progress(AccessionNumber="ACC7")
    wrong.PerformedProcedureStepStatus = "COMPLETED"
    status, _ = modality.send_n_create(wrong, MPPS, uid)
    assert status.Status == 0x0106
    assert order_status(runtime, order.id) == "scheduled"
    # created twice: duplicate SOP instance
    status, _ = modality.send_n_create(in_progress(AccessionNumber="ACC7"), MPPS, uid)
    assert status.Status == 0x0000
    status, _ = modality.send_n_create(in_progress(AccessionNumber="ACC7"), MPPS, uid)
    assert status.Status == 0x0111
    # an unknown step status in N-SET
    status, _ = modality.send_n_set(final("DONE"), MPPS, uid)
    assert status.Status == 0x0106
    assert order_status(runtime, order.id) == "in-progress"


def test_a_step_for_no_known_order_is_kept_and_an_ae_without_mpps_is_refused(
    scp: RunningScp, runtime: Runtime, order: Order, modality: Association
) -> None:
    status, _ = modality.send_n_create(in_progress(AccessionNumber="NOPE"), MPPS, generate_uid())
    assert status.Status == 0x0000
    with runtime.sessions() as session:
        assert session.query(PerformedProcedureStep).one().order_id is None
    assert order_status(runtime, order.id) == "scheduled"
    # ECHOONLY may not use MPPS (its association still negotiates the context).
    refused = associate(scp, ECHO_ONLY)
    try:
        status, _ = refused.send_n_create(in_progress(AccessionNumber="ACC7"), MPPS, generate_uid())
        assert status.Status == 0x0124
    finally:
        refused.release()
    assert order_status(runtime, order.id) == "scheduled"


def test_a_step_created_without_an_instance_uid_gets_one_from_the_archive(
    scp: RunningScp, runtime: Runtime, order: Order, modality: Association
) -> None:
    status, _ = modality.send_n_create(in_progress(AccessionNumber="ACC7"), MPPS)
    assert status.Status == 0x0000
    with runtime.sessions() as session:
        step = session.query(PerformedProcedureStep).one()
    assert step.sop_instance_uid.startswith("1.2.")
    assert order_status(runtime, order.id) == "in-progress"
