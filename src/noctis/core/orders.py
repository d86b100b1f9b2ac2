"""Orders: scheduled procedures, from creation to the study that fulfils them.

An order is created (REST, the orders page) with its patient, accession number (unique per
facility), requested procedure, modality, scheduled station and time. It is given a Study
Instance UID at once: the Modality Worklist hands it to the modality, which stamps it on the
images. Its status:

    scheduled ──> in-progress ──> completed
        │              │    └───> discontinued
        │              └──> cancelled
        └──> completed / discontinued / cancelled

``in-progress``, ``completed`` and ``discontinued`` come from the modality's MPPS
(`record_step`); ``cancelled`` from a person. completed, discontinued and cancelled are final.
Only a scheduled order may be edited (the modality may have read it from the worklist
already, but nothing was done under it yet).

A study that arrives with the order's Study Instance UID or accession number (same facility)
is linked to it by `link_arrivals`, a periodic job over the open orders without a study:
linking raises the study's priority to the order's. Every change is audited (action
``order``) in the caller's transaction.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.uid import generate_uid
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from noctis.core.audit import record_change
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority, ensure_workflow, set_priority
from noctis.index.models import Study, utcnow
from noctis.index.orders import Order, PerformedProcedureStep

ORDER_AUDIT_ACTION = "order"
MPPS_AUDIT_ACTION = "mpps"


class OrderStatus(StrEnum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.DISCONTINUED, OrderStatus.CANCELLED})
# MPPS Performed Procedure Step Status -> the order's status.
STEP_STATUSES = {
    "IN PROGRESS": OrderStatus.IN_PROGRESS,
    "COMPLETED": OrderStatus.COMPLETED,
    "DISCONTINUED": OrderStatus.DISCONTINUED,
}


class OrderError(ValueError):
    """An order change that cannot be made as asked (the API answers 409)."""


class OrderConflict(OrderError):
    """The accession number is taken in that facility."""


_DICOM_TEXT = re.compile(r"^[^\\\x00-\x1f]*$")  # no backslash (a value separator), no controls
_CODE_STRING = re.compile(r"^[A-Z0-9 _]*$")


def _text(value: str, what: str) -> str:
    value = value.strip()
    if not _DICOM_TEXT.match(value):
        raise ValueError(f"{what} may not hold a backslash or control characters")
    return value


class OrderFields(BaseModel):
    """An order as a client writes it (REST body, the orders page's form)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    accession_number: str = Field(min_length=1, max_length=16)
    patient_id: str = Field(min_length=1, max_length=64)
    issuer_of_patient_id: str = Field("", max_length=64)
    patient_name: str = Field("", max_length=324, description="DICOM PN: Family^Given")
    patient_birth_date: str = Field("", pattern=r"^(\d{8})?$", description="YYYYMMDD")
    patient_sex: str = Field("", pattern=r"^(M|F|O)?$")
    requested_procedure_id: str = Field("", max_length=16, description="default: accession")
    requested_procedure_description: str = Field("", max_length=64)
    procedure_code_value: str = Field("", max_length=16)
    procedure_code_scheme: str = Field("", max_length=16)
    procedure_code_meaning: str = Field("", max_length=64)
    modality: str = Field(min_length=1, max_length=16)
    scheduled_station_ae_title: str = Field("", max_length=16)
    scheduled_date: str = Field(pattern=r"^\d{8}$", description="YYYYMMDD")
    scheduled_time: str = Field("", pattern=r"^(\d{4}|\d{6})?$", description="HHMM[SS]")
    priority: str = Field("routine", description="routine, urgent or stat")
    referring_physician_name: str = Field("", max_length=324)

    @field_validator(
        "accession_number",
        "patient_id",
        "issuer_of_patient_id",
        "patient_name",
        "requested_procedure_id",
        "requested_procedure_description",
        "procedure_code_value",
        "procedure_code_scheme",
        "procedure_code_meaning",
        "scheduled_station_ae_title",
        "referring_physician_name",
    )
    @classmethod
    def _dicom_text(cls, value: str) -> str:
        return _text(value, "a value")

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        value = value.upper()
        if not _CODE_STRING.match(value):
            raise ValueError("modality is a DICOM code string (e.g. CT, MR, US)")
        return value

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: str) -> str:
        return Priority.parse(value).name.lower()

    @field_validator("scheduled_date")
    @classmethod
    def _date(cls, value: str) -> str:
        from datetime import date

        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            raise ValueError(f"not a date: {value}") from None
        return value

    def columns(self) -> dict[str, Any]:
        values = self.model_dump()
        values["priority"] = int(Priority.parse(values["priority"]))
        values["requested_procedure_id"] = (
            values["requested_procedure_id"] or (values["accession_number"])
        )
        if len(values["scheduled_time"]) == 4:
            values["scheduled_time"] += "00"
        return values


class OrderChanges(OrderFields):
    """An edit: any field may be left out."""

    accession_number: str = Field(None, min_length=1, max_length=16)  # type: ignore[assignment]
    patient_id: str = Field(None, min_length=1, max_length=64)  # type: ignore[assignment]
    modality: str = Field(None, min_length=1, max_length=16)  # type: ignore[assignment]
    scheduled_date: str = Field(None, pattern=r"^\d{8}$")  # type: ignore[assignment]

    def columns(self) -> dict[str, Any]:
        values = self.model_dump(exclude_unset=True)
        if "priority" in values:
            values["priority"] = int(Priority.parse(values["priority"]))
        if len(values.get("scheduled_time", "")) == 4:
            values["scheduled_time"] += "00"
        return values


def create_order(session: Session, facility_id: int, fields: OrderFields, *, actor: Actor) -> Order:
    """A new scheduled order with a Study Instance UID of its own (`OrderConflict` if the
    accession number is taken in the facility)."""
    columns = fields.columns()
    _check_accession_free(session, facility_id, columns["accession_number"])
    order = Order(
        facility_id=facility_id,
        status=OrderStatus.SCHEDULED.value,
        study_instance_uid=generate_uid(),
        created_by=actor.subject,
        **columns,
    )
    order.scheduled_procedure_step_id = columns["accession_number"]
    session.add(order)
    session.flush()
    _audit(session, order, actor, "create", accession=order.accession_number)
    return order


def update_order(session: Session, order: Order, changes: OrderChanges, *, actor: Actor) -> Order:
    columns = changes.columns()
    if OrderStatus(order.status) is not OrderStatus.SCHEDULED:
        raise OrderError(f"an order {order.status} cannot be edited")
    accession = columns.get("accession_number")
    if accession is not None and accession != order.accession_number:
        _check_accession_free(session, order.facility_id, accession)
    changed = {k: v for k, v in columns.items() if getattr(order, k) != v}
    for key, value in changed.items():
        setattr(order, key, value)
    if changed:
        order.updated_at = utcnow()
        _audit(session, order, actor, "update", fields=sorted(changed))
    return order


def cancel_order(session: Session, order: Order, *, actor: Actor, reason: str = "") -> Order:
    status = OrderStatus(order.status)
    if status is OrderStatus.CANCELLED:
        return order
    if status in FINAL_STATUSES:
        raise OrderError(f"an order {order.status} cannot be cancelled")
    _set_status(session, order, OrderStatus.CANCELLED, actor, reason=reason)
    return order


def list_orders(
    session: Session,
    *,
    facility_ids: frozenset[int] | None,
    status: str | None = None,
    modality: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    station: str | None = None,
    patient_id: str | None = None,
    accession_number: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Order]:
    statement = select(Order)
    if facility_ids is not None:
        statement = statement.where(Order.facility_id.in_(sorted(facility_ids)))
    for column, value in (
        (Order.status, status),
        (Order.modality, modality.upper() if modality else None),
        (Order.scheduled_station_ae_title, station),
        (Order.patient_id, patient_id),
        (Order.accession_number, accession_number),
    ):
        if value:
            statement = statement.where(column == value)
    if date_from:
        statement = statement.where(Order.scheduled_date >= date_from)
    if date_to:
        statement = statement.where(Order.scheduled_date <= date_to)
    statement = statement.order_by(Order.scheduled_date, Order.scheduled_time, Order.id)
    return list(session.scalars(statement.limit(limit).offset(offset)))


def order_document(order: Order, study_instance_uid_linked: str | None = None) -> dict[str, Any]:
    """The order as REST shows it."""
    return {
        "id": order.id,
        "facility_id": order.facility_id,
        "accession_number": order.accession_number,
        "patient_id": order.patient_id,
        "issuer_of_patient_id": order.issuer_of_patient_id,
        "patient_name": order.patient_name,
        "patient_birth_date": order.patient_birth_date,
        "patient_sex": order.patient_sex,
        "requested_procedure_id": order.requested_procedure_id,
        "requested_procedure_description": order.requested_procedure_description,
        "procedure_code_value": order.procedure_code_value,
        "procedure_code_scheme": order.procedure_code_scheme,
        "procedure_code_meaning": order.procedure_code_meaning,
        "scheduled_procedure_step_id": order.scheduled_procedure_step_id,
        "modality": order.modality,
        "scheduled_station_ae_title": order.scheduled_station_ae_title,
        "scheduled_date": order.scheduled_date,
        "scheduled_time": order.scheduled_time,
        "priority": Priority(order.priority).name.lower(),
        "referring_physician_name": order.referring_physician_name,
        "study_instance_uid": order.study_instance_uid,
        "status": order.status,
        "study_linked": order.study_pk is not None,
        "created_by": order.created_by,
        "created_at": order.created_at.isoformat() if order.created_at else None,
        "updated_at": order.updated_at.isoformat() if order.updated_at else None,
    }


# --- MPPS ---------------------------------------------------------------------------------


class StepRefused(ValueError):
    """An MPPS request the archive refuses: why, and which kind of refusal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # duplicate, unknown, final, invalid


def find_order_for_step(
    session: Session,
    facility_id: int,
    *,
    study_instance_uids: list[str],
    accession_numbers: list[str],
    requested_procedure_ids: list[str],
) -> Order | None:
    """The facility's order a performed step names in its Scheduled Step Attributes: by
    Study Instance UID first, then by accession number (and requested procedure ID)."""
    if study_instance_uids:
        order = session.scalars(
            select(Order).where(
                Order.facility_id == facility_id,
                Order.study_instance_uid.in_(study_instance_uids),
            )
        ).first()
        if order is not None:
            return order
    if accession_numbers:
        statement = select(Order).where(
            Order.facility_id == facility_id, Order.accession_number.in_(accession_numbers)
        )
        if requested_procedure_ids:
            statement = statement.where(Order.requested_procedure_id.in_(requested_procedure_ids))
        return session.scalars(statement).first()
    return None


def create_step(
    session: Session,
    facility_id: int,
    sop_instance_uid: str,
    *,
    status: str,
    order: Order | None,
    calling_ae_title: str,
    attributes: dict[str, Any],
) -> PerformedProcedureStep:
    """N-CREATE: a new performed step IN PROGRESS; its order goes in-progress."""
    if status != "IN PROGRESS":
        raise StepRefused("invalid", "Performed Procedure Step Status must be IN PROGRESS")
    exists = session.scalar(
        select(PerformedProcedureStep.id).where(
            PerformedProcedureStep.facility_id == facility_id,
            PerformedProcedureStep.sop_instance_uid == sop_instance_uid,
        )
    )
    if exists is not None:
        raise StepRefused("duplicate", f"MPPS {sop_instance_uid} exists already")
    step = PerformedProcedureStep(
        facility_id=facility_id,
        sop_instance_uid=sop_instance_uid,
        order_id=order.id if order is not None else None,
        status=status,
        calling_ae_title=calling_ae_title,
        attributes=attributes,
    )
    session.add(step)
    session.flush()
    actor = Actor(subject=calling_ae_title, type="ae")
    _audit_step(session, step, actor, order, "create")
    if order is not None and OrderStatus(order.status) is OrderStatus.SCHEDULED:
        _set_status(session, order, OrderStatus.IN_PROGRESS, actor, mpps=sop_instance_uid)
    return step


def update_step(
    session: Session,
    facility_id: int,
    sop_instance_uid: str,
    *,
    status: str | None,
    calling_ae_title: str,
    attributes: dict[str, Any] | None = None,
) -> PerformedProcedureStep:
    """N-SET: change a step IN PROGRESS; COMPLETED or DISCONTINUED is final and moves its
    order too."""
    step = session.scalars(
        select(PerformedProcedureStep)
        .where(
            PerformedProcedureStep.facility_id == facility_id,
            PerformedProcedureStep.sop_instance_uid == sop_instance_uid,
        )
        .with_for_update()
    ).first()
    if step is None:
        raise StepRefused("unknown", f"no MPPS {sop_instance_uid}")
    if step.status != "IN PROGRESS":
        raise StepRefused("final", f"the step is {step.status}: no change after that")
    if status is not None and status not in STEP_STATUSES:
        raise StepRefused("invalid", f"unknown Performed Procedure Step Status {status!r}")
    step.attributes = {**step.attributes, **(attributes or {})}
    step.updated_at = utcnow()
    actor = Actor(subject=calling_ae_title, type="ae")
    order = session.get(Order, step.order_id) if step.order_id is not None else None
    if status is not None and status != step.status:
        step.status = status
        _audit_step(session, step, actor, order, status.lower())
        target = STEP_STATUSES[status]
        if order is not None and OrderStatus(order.status) not in FINAL_STATUSES:
            _set_status(session, order, target, actor, mpps=sop_instance_uid)
    return step


# --- linking arrivals ------------------------------------------------------------------------


def link_arrivals(runtime: Runtime) -> int:
    """Link each order without a study (and not cancelled) to the study of its facility that
    arrived with its Study Instance UID, or else its accession number; the study's priority
    rises to the order's. How many were linked. Periodic: two indexed joins find the pairs,
    and a write transaction is opened only when there are some."""
    with runtime.sessions() as session:
        pairs = arrived_studies(session)
    if not pairs:
        return 0
    linked = 0
    with runtime.sessions.begin() as session:
        for order_id, study_pk in pairs.items():
            order, study = session.get(Order, order_id), session.get(Study, study_pk)
            if order is not None and study is not None and link(session, order, study):
                linked += 1
    return linked


def arrived_studies(session: Session) -> dict[int, int]:
    """Order id -> the study pk to link it to (its Study Instance UID's first, else the first
    study with its accession number)."""
    open_orders = (Order.study_pk.is_(None), Order.status != OrderStatus.CANCELLED.value)
    pairs: dict[int, int] = {}
    for match in (
        Study.study_instance_uid == Order.study_instance_uid,
        Study.accession_number == Order.accession_number,
    ):
        rows = session.execute(
            select(Order.id, Study.id)
            .join(Study, (Study.facility_id == Order.facility_id) & match)
            .where(*open_orders)
            .order_by(Order.id, Study.id)
        )
        for order_id, study_pk in rows:
            pairs.setdefault(order_id, study_pk)
    return pairs


def link(session: Session, order: Order, study: Study) -> bool:
    """Link ``study`` to ``order``: the order shows it, the study takes the order's priority
    (only ever raised: a STAT order makes a STAT study and its notification). False if the
    order was linked meanwhile (by another worker: one conditional UPDATE decides)."""
    actor = Actor.system("orders")
    now = utcnow()
    result: Any = session.execute(
        update(Order)
        .where(Order.id == order.id, Order.study_pk.is_(None))
        .values(study_pk=study.id, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        return False
    order.study_pk, order.updated_at = study.id, now
    _audit(session, order, actor, "link", study=study.study_instance_uid)
    ensure_workflow(session, study)
    set_priority(
        session,
        study,
        Priority(order.priority),
        actor=actor,
        reason=f"order {order.accession_number}",
        only_raise=True,
    )
    return True


def linked_study_uid(session: Session, order: Order) -> str | None:
    if order.study_pk is None:
        return None
    return session.scalar(select(Study.study_instance_uid).where(Study.id == order.study_pk))


def _check_accession_free(session: Session, facility_id: int, accession: str) -> None:
    taken = session.scalar(
        select(Order.id).where(
            Order.facility_id == facility_id, Order.accession_number == accession
        )
    )
    if taken is not None:
        raise OrderConflict(f"accession number {accession} is taken in this facility")


def _set_status(
    session: Session, order: Order, status: OrderStatus, actor: Actor, **detail: Any
) -> None:
    previous = order.status
    order.status = status.value
    order.updated_at = utcnow()
    _audit(session, order, actor, "status", previous=previous, status=status.value, **detail)


def _audit(session: Session, order: Order, actor: Actor, change: str, **detail: Any) -> None:
    record_change(
        session,
        actor,
        ORDER_AUDIT_ACTION,
        change,
        facility_id=order.facility_id,
        study_instance_uid=order.study_instance_uid,
        order=order.id,
        **detail,
    )


def _audit_step(
    session: Session,
    step: PerformedProcedureStep,
    actor: Actor,
    order: Order | None,
    change: str,
) -> None:
    record_change(
        session,
        actor,
        MPPS_AUDIT_ACTION,
        change,
        facility_id=step.facility_id,
        study_instance_uid=order.study_instance_uid if order is not None else None,
        mpps=step.sop_instance_uid,
        order=order.id if order is not None else None,
    )
