"""The reading workflow of one study: its state, priority and assignment, and the only
functions that change them.

States and the transitions allowed (anything else is `TransitionRefused`):

    arrived ──> ready ──> in-reading ──> preliminary ──> final ──> amended ─┐
       │          │  <──────┘  │              │            ^   <────────────┘
       │          │            └──────────────┼──> final ──┘
       └──────────┴──> cancelled <────────────┘   (cancelled ──> ready: reinstated)

- arrived: instances are arriving (the study is not yet stable); ready: stable, waiting to be
  read; in-reading: a radiologist claimed it (it may be claimed while still arriving);
  preliminary / final / amended: the state of its report (`noctis.core.reports` moves it);
  cancelled: not to be read (an order withdrawn, a test study), reinstated to ready.
- Priority is routine, urgent or STAT. It only rises by itself (an order's priority, a critical
  result); a person may lower it. A study that becomes STAT raises a notification.

Every change is made in the caller's session with an `Actor` and recorded in the audit trail
in that same transaction, so a change and its audit entry commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import DateTime, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis.core.audit import Actor, record_change
from noctis.core.notifications import NotificationKind, notify
from noctis.dicom.person_names import readable_person_name
from noctis.index.models import Study, utcnow
from noctis.index.workflow import StudyWorkflow

WORKFLOW_AUDIT_ACTION = "workflow"


class StudyState(StrEnum):
    ARRIVED = "arrived"
    READY = "ready"
    IN_READING = "in-reading"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CANCELLED = "cancelled"


class Priority(IntEnum):
    ROUTINE = 0
    URGENT = 1
    STAT = 2

    @property
    def label(self) -> str:
        return "STAT" if self is Priority.STAT else self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Priority:
        """``routine``/``urgent``/``stat`` (any case), or DICOM's Requested Procedure
        Priority / Scheduled Procedure Step Priority (STAT, HIGH, ROUTINE, MEDIUM, LOW)."""
        value = text.strip().upper()
        if value == "STAT":
            return cls.STAT
        if value in ("URGENT", "HIGH"):
            return cls.URGENT
        if value in ("ROUTINE", "MEDIUM", "LOW", ""):
            return cls.ROUTINE
        raise ValueError(f"unknown priority {text!r} (routine, urgent or stat)")


_S = StudyState
TRANSITIONS: dict[StudyState, frozenset[StudyState]] = {
    _S.ARRIVED: frozenset({_S.READY, _S.IN_READING, _S.CANCELLED}),
    _S.READY: frozenset({_S.IN_READING, _S.CANCELLED}),
    _S.IN_READING: frozenset({_S.READY, _S.PRELIMINARY, _S.FINAL, _S.CANCELLED}),
    _S.PRELIMINARY: frozenset({_S.IN_READING, _S.FINAL, _S.CANCELLED}),
    _S.FINAL: frozenset({_S.AMENDED}),
    _S.AMENDED: frozenset({_S.AMENDED}),
    _S.CANCELLED: frozenset({_S.READY}),
}
# States in which a study waits for, or is under, a radiologist's reading.
OPEN_STATES = frozenset({_S.ARRIVED, _S.READY, _S.IN_READING, _S.PRELIMINARY})


class WorkflowError(Exception):
    """A change the study's workflow does not allow (the API answers 409)."""


class TransitionRefused(WorkflowError):
    pass


class AlreadyAssigned(WorkflowError):
    pass


def workflow_of(session: Session, study: Study) -> StudyWorkflow | None:
    return session.get(StudyWorkflow, study.id)


def ensure_workflow(
    session: Session, study: Study, *, arrived_at: datetime | None = None
) -> StudyWorkflow:
    """The study's workflow row, made in state ``arrived`` if it has none (idempotent, safe
    when several processes do it at once)."""
    ensure_workflows(session, [study.id], arrived_at=arrived_at)
    row = session.get(StudyWorkflow, study.id, populate_existing=True)
    assert row is not None
    return row


def ensure_workflows(
    session: Session, study_keys: Sequence[int], *, arrived_at: datetime | None = None
) -> None:
    """Workflow rows in state ``arrived`` for the studies that have none, in one statement
    (arrived when the study was created, unless ``arrived_at``). The arrival scan gives a
    batch at once: one ORM insert per study held the GIL from a process's associations a
    third of the time while 2,000 small studies arrived."""
    if not study_keys:
        return
    now = utcnow()
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    at = literal(now, DateTime(timezone=True))
    arriving = select(
        Study.id,
        Study.facility_id,
        literal(StudyState.ARRIVED.value),
        literal(int(Priority.ROUTINE)),
        literal(""),
        literal(False),
        literal(arrived_at, DateTime(timezone=True))
        if arrived_at is not None
        else func.coalesce(Study.created_at, at),
        at,
        at,
    ).where(Study.id.in_(list(study_keys)))
    columns = [
        StudyWorkflow.study_pk,
        StudyWorkflow.facility_id,
        StudyWorkflow.state,
        StudyWorkflow.priority,
        StudyWorkflow.priority_reason,
        StudyWorkflow.critical,
        StudyWorkflow.arrived_at,
        StudyWorkflow.state_changed_at,
        StudyWorkflow.updated_at,
    ]
    session.execute(
        dialect.insert(StudyWorkflow)
        .from_select(columns, arriving)
        .on_conflict_do_nothing(index_elements=["study_pk"])
    )


def advance(session: Session, study: Study, state: StudyState, *, actor: Actor) -> StudyWorkflow:
    """Move the study to ``state`` (`TransitionRefused` if its current state does not allow
    it). Moving to the state it is in already is a no-op, except amended (each amendment)."""
    row = ensure_workflow(session, study)
    current = StudyState(row.state)
    if current == state and state is not StudyState.AMENDED:
        return row
    if state not in TRANSITIONS[current]:
        raise TransitionRefused(f"a study {current.value} cannot become {state.value}")
    row.state = state.value
    row.state_changed_at = row.updated_at = utcnow()
    if state in (StudyState.READY, StudyState.CANCELLED):
        row.assignee = None
    _audit(session, study, actor, "state", previous=current.value, state=state.value)
    return row


def set_priority(
    session: Session,
    study: Study,
    priority: Priority,
    *,
    actor: Actor,
    reason: str = "",
    only_raise: bool = False,
) -> bool:
    """Set the study's priority (``only_raise``: never lower it). True if it changed; a study
    that becomes STAT raises a ``stat-arrived`` notification."""
    row = ensure_workflow(session, study)
    previous = Priority(row.priority)
    if priority == previous or (only_raise and priority < previous):
        return False
    row.priority = int(priority)
    row.priority_reason = reason[:255]
    row.updated_at = utcnow()
    _audit(session, study, actor, "priority", previous=previous.label, priority=priority.label)
    if priority is Priority.STAT:
        notify(
            session,
            NotificationKind.STAT_ARRIVED,
            facility_id=study.facility_id,
            study_instance_uid=study.study_instance_uid,
            title=f"STAT study: {describe_study(study)}",
            actor=actor.subject,
            reason=reason,
        )
    return True


def flag_critical(session: Session, study: Study, *, actor: Actor, reason: str) -> bool:
    """Flag a critical finding on the study: it becomes STAT and a ``critical-result``
    notification is raised. False if it was flagged already (nothing raised twice)."""
    row = ensure_workflow(session, study)
    if row.critical:
        return False
    row.critical = True
    row.updated_at = utcnow()
    _audit(session, study, actor, "critical", reason=reason)
    notify(
        session,
        NotificationKind.CRITICAL_RESULT,
        facility_id=study.facility_id,
        study_instance_uid=study.study_instance_uid,
        title=f"Critical result: {describe_study(study)}",
        actor=actor.subject,
        reason=reason,
    )
    set_priority(session, study, Priority.STAT, actor=actor, reason=reason, only_raise=True)
    return True


def assign(
    session: Session,
    study: Study,
    assignee: str | None,
    *,
    actor: Actor,
    only_if_free: bool = False,
) -> StudyWorkflow:
    """Assign the study to ``assignee`` (None: nobody). ``only_if_free`` (a radiologist
    claiming it): `AlreadyAssigned` if someone else has it, decided by one conditional UPDATE
    so two radiologists claiming at once cannot both get it. An assigned study that was
    waiting (arrived, ready) goes in-reading."""
    row = ensure_workflow(session, study)
    if StudyState(row.state) not in OPEN_STATES:
        raise TransitionRefused(f"a study {row.state} is not assigned to anyone")
    statement = update(StudyWorkflow).where(StudyWorkflow.study_pk == study.id)
    if only_if_free and assignee is not None:
        statement = statement.where(
            (StudyWorkflow.assignee.is_(None)) | (StudyWorkflow.assignee == assignee)
        )
    result: Any = session.execute(
        statement.values(assignee=assignee, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        holder = session.scalar(
            select(StudyWorkflow.assignee).where(StudyWorkflow.study_pk == study.id)
        )
        raise AlreadyAssigned(f"the study is assigned to {holder}")
    session.refresh(row)
    _audit(session, study, actor, "assign", assignee=assignee)
    if assignee is not None and row.state in (StudyState.ARRIVED, StudyState.READY):
        advance(session, study, StudyState.IN_READING, actor=actor)
    elif assignee is None and row.state == StudyState.IN_READING:
        advance(session, study, StudyState.READY, actor=actor)
    return row


def describe_study(study: Study) -> str:
    """A study in a few words, for notification titles: patient, modalities, description."""
    parts = [
        readable_person_name(study.patient_name) or study.patient_id,
        study.modalities_in_study,
    ]
    parts.append(study.study_description or study.accession_number)
    return " · ".join(part for part in parts if part) or study.study_instance_uid


def _audit(session: Session, study: Study, actor: Actor, change: str, **detail: Any) -> None:
    record_change(
        session,
        actor,
        WORKFLOW_AUDIT_ACTION,
        change,
        facility_id=study.facility_id,
        study_instance_uid=study.study_instance_uid,
        **detail,
    )
