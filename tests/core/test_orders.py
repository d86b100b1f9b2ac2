"""Orders on each index backend: created, edited, cancelled, moved by MPPS, linked to the
study that arrives for them (which takes the order's priority), and every change audited."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from noctis.core.facilities import apply_facility
from noctis.core.ingest import FacilityRef
from noctis.core.orders import (
    OrderChanges,
    OrderConflict,
    OrderError,
    OrderFields,
    StepRefused,
    cancel_order,
    create_order,
    create_step,
    link_arrivals,
    list_orders,
    update_order,
    update_step,
)
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority
from noctis.index import accounts
from noctis.index.models import Study
from noctis.index.orders import Order
from noctis.index.workflow import NotificationEvent, StudyWorkflow
from noctis.specs.facility import FacilitySpec
from support.incoming import ingest_file

TECH = Actor("tech", client="10.0.0.7")


def order_fields(**changes: str) -> OrderFields:
    fields = {
        "accession_number": "A1001",
        "patient_id": "P1",
        "patient_name": "DOE^JANE",
        "patient_birth_date": "19800101",
        "patient_sex": "F",
        "requested_procedure_description": "CT HEAD",
        "modality": "ct",
        "scheduled_station_ae_title": "CT_ROOM_1",
        "scheduled_date": "20261207",
        "scheduled_time": "0930",
        "priority": "routine",
    }
    return OrderFields.model_validate(fields | changes)


@pytest.fixture
def other_facility(runtime: Runtime) -> FacilityRef:
    with runtime.sessions.begin() as session:
        facility = apply_facility(session, "other", FacilitySpec())
        return FacilityRef(facility.id, facility.name)


def audit_changes(runtime: Runtime, action: str = "order") -> list[dict]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(accounts.AuditRow)
            .where(accounts.AuditRow.action == action)
            .order_by(accounts.AuditRow.id)
        )
        return [{"actor": row.actor, **(row.detail or {})} for row in rows]


def test_an_order_is_created_with_its_own_study_uid_and_an_accession_unique_per_facility(
    runtime: Runtime, default_facility: FacilityRef, other_facility: FacilityRef
) -> None:
    with runtime.sessions.begin() as session:
        order = create_order(session, default_facility.id, order_fields(), actor=TECH)
        assert order.status == "scheduled"
        assert order.modality == "CT"
        assert order.scheduled_time == "093000"
        assert order.requested_procedure_id == "A1001"  # defaults to the accession number
        assert order.study_instance_uid.startswith("1.2.")
    with runtime.sessions.begin() as session, pytest.raises(OrderConflict, match="A1001"):
        create_order(session, default_facility.id, order_fields(), actor=TECH)
    with runtime.sessions.begin() as session:
        elsewhere = create_order(session, other_facility.id, order_fields(), actor=TECH)
        assert elsewhere.study_instance_uid != order.study_instance_uid
    with runtime.sessions() as session:
        mine = list_orders(session, facility_ids=frozenset({default_facility.id}))
        assert [o.facility_id for o in mine] == [default_facility.id]
    assert [c["change"] for c in audit_changes(runtime)] == ["create", "create"]
    assert audit_changes(runtime)[0]["actor"] == "tech"


def test_bad_order_fields_are_refused_with_a_reason() -> None:
    for bad, field in (
        ({"scheduled_date": "20261332"}, "scheduled_date"),
        ({"accession_number": "A\\B"}, "accession_number"),
        ({"priority": "whenever"}, "priority"),
        ({"modality": "C-T"}, "modality"),
        ({"accession_number": "X" * 17}, "accession_number"),
    ):
        with pytest.raises(ValidationError, match=field):
            order_fields(**bad)


def test_only_a_scheduled_order_is_edited_and_a_cancelled_one_stays_cancelled(
    runtime: Runtime, default_facility: FacilityRef
) -> None:
    with runtime.sessions.begin() as session:
        order = create_order(session, default_facility.id, order_fields(), actor=TECH)
        update_order(
            session,
            order,
            OrderChanges.model_validate({"scheduled_time": "1015", "priority": "stat"}),
            actor=TECH,
        )
        assert (order.scheduled_time, order.priority) == ("101500", int(Priority.STAT))
        cancel_order(session, order, actor=TECH, reason="patient left")
        assert order.status == "cancelled"
        with pytest.raises(OrderError, match="cancelled cannot be edited"):
            update_order(
                session, order, OrderChanges.model_validate({"modality": "MR"}), actor=TECH
            )
    changes = audit_changes(runtime)
    assert [c["change"] for c in changes] == ["create", "update", "status"]
    assert changes[1]["fields"] == ["priority", "scheduled_time"]
    assert changes[2]["status"] == "cancelled"


def test_mpps_moves_the_order_and_a_final_step_cannot_change(
    runtime: Runtime, default_facility: FacilityRef
) -> None:
    with runtime.sessions.begin() as session:
        order = create_order(session, default_facility.id, order_fields(), actor=TECH)
        create_step(
            session,
            default_facility.id,
            "1.2.3.4",
            status="IN PROGRESS",
            order=order,
            calling_ae_title="CT_ROOM_1",
            attributes={},
        )
        assert order.status == "in-progress"
        with pytest.raises(StepRefused, match="exists already"):
            create_step(
                session,
                default_facility.id,
                "1.2.3.4",
                status="IN PROGRESS",
                order=order,
                calling_ae_title="CT_ROOM_1",
                attributes={},
            )
    with runtime.sessions.begin() as session:
        update_step(
            session, default_facility.id, "1.2.3.4", status="COMPLETED", calling_ae_title="CT"
        )
    with runtime.sessions.begin() as session:
        assert session.get(Order, order.id).status == "completed"
        with pytest.raises(StepRefused) as refused:
            update_step(
                session,
                default_facility.id,
                "1.2.3.4",
                status="DISCONTINUED",
                calling_ae_title="CT",
            )
        assert refused.value.reason == "final"
        with pytest.raises(StepRefused) as unknown:
            update_step(session, default_facility.id, "9.9", status=None, calling_ae_title="CT")
        assert unknown.value.reason == "unknown"
    assert [c["change"] for c in audit_changes(runtime, "mpps")] == ["create", "completed"]


def test_an_arriving_study_is_linked_to_its_order_and_takes_its_stat_priority(
    runtime: Runtime, default_facility: FacilityRef, other_facility: FacilityRef, make_dicom
) -> None:
    with runtime.sessions.begin() as session:
        stat = create_order(
            session, default_facility.id, order_fields(priority="stat"), actor=TECH
        ).id
        waiting = create_order(
            session, default_facility.id, order_fields(accession_number="A2"), actor=TECH
        ).id
    # The same accession number in another facility is not this order's study.
    ingest_file(runtime, other_facility, make_dicom(AccessionNumber="A1001"))
    assert link_arrivals(runtime) == 0
    arrived = ingest_file(
        runtime, default_facility, make_dicom(AccessionNumber="A1001", PatientName="DOE^JANE")
    )
    assert link_arrivals(runtime) == 1
    assert link_arrivals(runtime) == 0  # linked once
    with runtime.sessions() as session:
        study = session.scalars(
            select(Study).where(
                Study.study_instance_uid == arrived.header.study_instance_uid,
                Study.facility_id == default_facility.id,
            )
        ).one()
        assert session.get(Order, stat).study_pk == study.id
        assert session.get(Order, waiting).study_pk is None
        assert session.get(StudyWorkflow, study.id).priority == int(Priority.STAT)
        events = session.scalars(select(NotificationEvent)).all()
        assert [(e.kind, e.study_instance_uid) for e in events] == [
            ("stat-arrived", study.study_instance_uid)
        ]
    assert [c["change"] for c in audit_changes(runtime)][-1] == "link"


def test_a_study_sent_with_the_orders_study_uid_is_linked_without_an_accession(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    with runtime.sessions.begin() as session:
        order = create_order(session, default_facility.id, order_fields(), actor=TECH)
        uid, order_id = order.study_instance_uid, order.id
    ingest_file(runtime, default_facility, make_dicom(StudyInstanceUID=uid, AccessionNumber=""))
    assert link_arrivals(runtime) == 1
    with runtime.sessions() as session:
        assert session.get(Order, order_id).study_pk is not None
        assert session.get(StudyWorkflow, session.get(Order, order_id).study_pk).priority == 0
