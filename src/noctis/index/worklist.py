"""The reading worklist's table and statements: notes on a study, the worklist query (one
statement per page, ordered by an index) and the arrival scan's look-up.

The worklist's order is priority (highest first), then arrival (oldest first), then the
study's key (a total order, so keyset paging never skips or repeats a row). Migration 0013
adds the indexes that give that order without a sort: ``ix_study_workflow_open`` over the
studies still to be read (a partial index: at 100,000 studies most are read already) and
``ix_study_workflow_order`` over all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Select,
    String,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from noctis.index.models import Base, Facility, Study, utcnow
from noctis.index.workflow import StudyWorkflow

# The states a study waits in, or is read in (noctis.core.workflow.OPEN_STATES): the
# default worklist, and the predicate of the partial index.
OPEN_STATE_VALUES = ("arrived", "ready", "in-reading", "preliminary")
_OPEN_PREDICATE = text("state IN ('arrived', 'ready', 'in-reading', 'preliminary')")
NOTE_MAX_CHARS = 10_000


class StudyNote(Base):
    """A note on a study by someone reading or handling it (free text, never edited)."""

    __tablename__ = "study_note"
    __table_args__ = (Index("ix_study_note_study", "study_pk", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"))
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    author: Mapped[str] = mapped_column(String(255))  # the principal's subject
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# Declared here (on the shared table) so the metadata matches migration 0013.
Index(
    "ix_study_workflow_open",
    StudyWorkflow.priority.desc(),
    StudyWorkflow.arrived_at,
    StudyWorkflow.study_pk,
    postgresql_where=_OPEN_PREDICATE,
    sqlite_where=_OPEN_PREDICATE,
)
Index(
    "ix_study_workflow_order",
    StudyWorkflow.priority.desc(),
    StudyWorkflow.arrived_at,
    StudyWorkflow.study_pk,
)


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last row's (priority, arrived_at, study key)."""

    priority: int
    arrived_at: datetime
    study_pk: int


@dataclass(frozen=True)
class WorklistQuery:
    """What to list. ``facility_ids`` None: every facility (the caller may see all)."""

    facility_ids: frozenset[int] | None
    states: tuple[str, ...] = OPEN_STATE_VALUES
    priorities: tuple[int, ...] = ()
    assignee: str | None = None
    unassigned: bool = False
    modalities: tuple[str, ...] = ()
    study_date_from: str | None = None  # YYYYMMDD, inclusive
    study_date_to: str | None = None
    arrived_from: datetime | None = None  # inclusive
    arrived_to: datetime | None = None  # exclusive
    words: tuple[str, ...] = ()  # each matches patient name, patient ID or accession number
    after: Cursor | None = None
    limit: int = 50


@dataclass(frozen=True)
class WorklistEntry:
    facility: str
    study_pk: int
    study_instance_uid: str
    patient_name: str
    patient_id: str
    accession_number: str
    modalities: list[str]
    study_description: str
    study_date: str
    number_of_series: int
    number_of_instances: int
    state: str
    priority: int
    priority_reason: str
    critical: bool
    assignee: str | None
    arrived_at: datetime
    state_changed_at: datetime
    notes: int
    facility_id: int = field(default=0)

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.priority, self.arrived_at, self.study_pk)


def _note_count() -> Any:
    return (
        select(func.count(StudyNote.id))
        .where(StudyNote.study_pk == StudyWorkflow.study_pk)
        .scalar_subquery()
    )


def _entries_statement() -> Select[Any]:
    return (
        select(
            Facility.name,
            Study.id,
            Study.study_instance_uid,
            Study.patient_name,
            Study.patient_id,
            Study.accession_number,
            Study.modalities_in_study,
            Study.study_description,
            Study.study_date,
            Study.number_of_series,
            Study.number_of_instances,
            StudyWorkflow.state,
            StudyWorkflow.priority,
            StudyWorkflow.priority_reason,
            StudyWorkflow.critical,
            StudyWorkflow.assignee,
            StudyWorkflow.arrived_at,
            StudyWorkflow.state_changed_at,
            _note_count().label("notes"),
            Study.facility_id,
        )
        .select_from(StudyWorkflow)
        .join(Study, Study.id == StudyWorkflow.study_pk)
        .join(Facility, Facility.id == StudyWorkflow.facility_id)
    )


def _modality_matches(modalities: Collection[str]) -> Any:
    # ModalitiesInStudy is stored backslash-separated ("CT\SR"): match whole values.
    padded = literal("\\") + Study.modalities_in_study + literal("\\")
    return or_(*(padded.like(f"%\\{m}\\%", escape="!") for m in modalities))


def _word_matches(word: str) -> Any:
    return or_(
        Study.patient_name.icontains(word, autoescape=True),
        Study.patient_id.icontains(word, autoescape=True),
        Study.accession_number.icontains(word, autoescape=True),
    )


def _after(cursor: Cursor) -> Any:
    """Rows after ``cursor`` in the worklist's order (priority desc, arrival, key)."""
    w = StudyWorkflow
    return or_(
        w.priority < cursor.priority,
        and_(
            w.priority == cursor.priority,
            or_(
                w.arrived_at > cursor.arrived_at,
                and_(w.arrived_at == cursor.arrived_at, w.study_pk > cursor.study_pk),
            ),
        ),
    )


def worklist_statement(query: WorklistQuery) -> Select[Any]:
    w = StudyWorkflow
    statement = _entries_statement()
    if query.facility_ids is not None:
        statement = statement.where(w.facility_id.in_(sorted(query.facility_ids)))
    if set(query.states) == set(OPEN_STATE_VALUES):
        # Spelled as the partial index's predicate, so the planner can prove it uses it.
        statement = statement.where(_OPEN_PREDICATE)
    elif query.states:
        statement = statement.where(w.state.in_(query.states))
    if query.priorities:
        statement = statement.where(w.priority.in_(query.priorities))
    if query.assignee is not None:
        statement = statement.where(w.assignee == query.assignee)
    if query.unassigned:
        statement = statement.where(w.assignee.is_(None))
    if query.modalities:
        statement = statement.where(_modality_matches(query.modalities))
    if query.study_date_from:
        statement = statement.where(Study.study_date >= query.study_date_from)
    if query.study_date_to:
        statement = statement.where(Study.study_date <= query.study_date_to, Study.study_date != "")
    if query.arrived_from is not None:
        statement = statement.where(w.arrived_at >= query.arrived_from)
    if query.arrived_to is not None:
        statement = statement.where(w.arrived_at < query.arrived_to)
    for word in query.words:
        statement = statement.where(_word_matches(word))
    if query.after is not None:
        statement = statement.where(_after(query.after))
    return statement.order_by(w.priority.desc(), w.arrived_at, w.study_pk).limit(query.limit)


def _entry(row: Sequence[Any]) -> WorklistEntry:
    (facility, pk, uid, name, pid, accession, modalities, description, date, series) = row[:10]
    (instances, state, priority, reason, critical, assignee, arrived, changed, notes) = row[10:19]
    return WorklistEntry(
        facility=facility,
        study_pk=pk,
        study_instance_uid=uid,
        patient_name=name,
        patient_id=pid,
        accession_number=accession,
        modalities=[m for m in modalities.split("\\") if m],
        study_description=description,
        study_date=date,
        number_of_series=series,
        number_of_instances=instances,
        state=state,
        priority=priority,
        priority_reason=reason,
        critical=bool(critical),
        assignee=assignee,
        arrived_at=arrived,
        state_changed_at=changed,
        notes=int(notes or 0),
        facility_id=row[19],
    )


def worklist_page(session: Session, query: WorklistQuery) -> list[WorklistEntry]:
    """One page of the worklist (``query.limit`` rows at most), in the worklist's order."""
    return [_entry(row) for row in session.execute(worklist_statement(query))]


def worklist_entry(session: Session, study_pk: int) -> WorklistEntry | None:
    """One study's worklist row (None: it has no workflow row yet)."""
    row = session.execute(_entries_statement().where(StudyWorkflow.study_pk == study_pk)).first()
    return _entry(row) if row is not None else None


def notes_of(session: Session, study_pk: int) -> list[StudyNote]:
    """The study's notes, oldest first."""
    return list(
        session.scalars(
            select(StudyNote).where(StudyNote.study_pk == study_pk).order_by(StudyNote.id)
        )
    )


def studies_without_workflow(session: Session, above: int, limit: int) -> list[int]:
    """Keys (ascending) of studies with a key above ``above`` that have no workflow row:
    an anti-join over the study key's range, so a scan from a recent watermark reads only
    the studies that arrived since."""
    statement = (
        select(Study.id)
        .where(
            Study.id > above,
            ~select(StudyWorkflow.study_pk)
            .where(StudyWorkflow.study_pk == Study.id)
            .exists()
            .correlate(Study),
        )
        .order_by(Study.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def highest_study_key(session: Session) -> int:
    return int(session.scalar(select(func.max(Study.id))) or 0)
