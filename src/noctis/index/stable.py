"""Study-stable state: which version of each study was declared stable, and the claim that
declares it.

A study's version is its ``updated_at``, which every instance write sets (on both backends,
in the write path as it is: nothing is added to it). A study is stable once its version is
older than its facility's quiet time and no ``study_stable`` row names that version yet.

Declaring is a read (``find_quiet``: the quiet studies whose row is missing or names an
older version; no write lock while there is nothing to declare), then one statement for
those (``claim_stable``): an INSERT ... SELECT that checks the same conditions again, ON
CONFLICT DO UPDATE only WHERE the row still names another version, RETURNING what it wrote.
Two sweeps running it at once (two worker replicas) cannot both write the same (study,
version): on PostgreSQL the second waits on the first's row or index entry and then finds
the version already written; SQLite runs one writer at a time. So each version of a study
is claimed once, whatever the number of workers, and the claim survives restarts.

``done_at`` is set when the STUDY_STABLE task has finished (derivatives built, routing
sent); a claim left unfinished (its task lost with a worker, or a send that failed) is
claimed again (``reclaim_unfinished``) after a lease, so nothing waits for ever.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    Select,
    and_,
    bindparam,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from noctis.index.models import Base, Facility, Study


class StudyStable(Base):
    """The version of a study last declared stable (one row per study, rewritten each time
    the study becomes stable again)."""

    __tablename__ = "study_stable"

    study_pk: Mapped[int] = mapped_column(
        ForeignKey("study.id", ondelete="CASCADE"), primary_key=True
    )
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    # The study's updated_at when it was declared stable: a later instance changes the
    # study's, and the study becomes stable again once that one is quiet.
    version: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stable_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # declared (UTC)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # last (re)sent
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # task finished
    times: Mapped[int] = mapped_column(Integer, default=1)  # versions declared so far


@dataclass(frozen=True)
class ClaimedStudy:
    study_pk: int
    facility: str
    study_instance_uid: str
    version: datetime


_TABLE = StudyStable.__table__


def _undeclared(facility_ids: Collection[int] | None, quiet_before: datetime) -> Select[Any]:
    """The studies last written before ``quiet_before`` whose current version is not
    declared (of ``facility_ids``, when given), in study order."""
    row = _TABLE.alias("declared")
    statement = (
        select(Study.id, Study.facility_id, Study.updated_at)
        .outerjoin(row, row.c.study_pk == Study.id)
        .where(
            Study.updated_at <= bindparam("quiet_before", quiet_before, DateTime(timezone=True)),
            or_(row.c.study_pk.is_(None), row.c.version != Study.updated_at),
        )
        .order_by(Study.id)  # one order for every sweep: concurrent claims never deadlock
    )
    if facility_ids is not None:
        statement = statement.where(Study.facility_id.in_(sorted(facility_ids)))
    return statement


def find_quiet(
    session: Session, facility_ids: Collection[int], quiet_before: datetime, limit: int
) -> list[int]:
    """Studies to declare stable (their pks, at most ``limit``): a read, so that a sweep
    with nothing to declare never takes a write lock (SQLite has one for every writer)."""
    if not facility_ids:
        return []
    statement = _undeclared(facility_ids, quiet_before).limit(limit)
    return [int(pk) for pk, _, _ in session.execute(statement)]


def claim_stable(
    session: Session,
    insert: Any,
    study_pks: Collection[int],
    quiet_before: datetime,
    now: datetime,
) -> list[ClaimedStudy]:
    """Declare stable those of ``study_pks`` that still are quiet and undeclared (another
    sweep may have declared them, an instance may have arrived since ``find_quiet``); what
    this call declared. ``insert`` is the backend's dialect INSERT (``IndexBackend.insert``)."""
    if not study_pks:
        return []
    found = _undeclared(None, quiet_before).where(Study.id.in_(sorted(study_pks))).subquery()
    stamp = literal(now, DateTime(timezone=True))
    candidates = select(
        found.c.id, found.c.facility_id, found.c.updated_at, stamp, stamp, literal(1, Integer)
    )
    # A WHERE (SQLite's upsert after INSERT ... SELECT needs one), and one order for every
    # sweep, so that concurrent claims on PostgreSQL never deadlock.
    candidates = candidates.where(found.c.id.is_not(None)).order_by(found.c.id)
    statement = insert(_TABLE).from_select(
        ["study_pk", "facility_id", "version", "stable_at", "claimed_at", "times"], candidates
    )
    statement = statement.on_conflict_do_update(
        index_elements=[_TABLE.c.study_pk],
        set_={
            "version": statement.excluded.version,
            "stable_at": statement.excluded.stable_at,
            "claimed_at": statement.excluded.claimed_at,
            "done_at": None,
            "times": _TABLE.c.times + 1,
        },
        where=_TABLE.c.version != statement.excluded.version,
    ).returning(_TABLE.c.study_pk, _TABLE.c.version)
    claimed = {int(pk): version for pk, version in session.execute(statement)}
    return _describe(session, claimed)


def find_unfinished(session: Session, claimed_before: datetime, limit: int) -> list[int]:
    """Declared studies whose task has not finished since ``claimed_before`` (a read)."""
    stale = (
        select(_TABLE.c.study_pk)
        .where(_TABLE.c.done_at.is_(None), _TABLE.c.claimed_at < claimed_before)
        .order_by(_TABLE.c.study_pk)
        .limit(limit)
    )
    return [int(pk) for pk in session.scalars(stale)]


def reclaim_unfinished(
    session: Session, study_pks: Collection[int], claimed_before: datetime, now: datetime
) -> list[ClaimedStudy]:
    """Claim again those of ``study_pks`` whose task still has not finished (a conditional
    UPDATE: one sweep gets each)."""
    if not study_pks:
        return []
    statement = (
        update(_TABLE)
        .where(
            _TABLE.c.study_pk.in_(sorted(study_pks)),
            _TABLE.c.done_at.is_(None),
            _TABLE.c.claimed_at < claimed_before,
        )
        .values(claimed_at=now)
        .returning(_TABLE.c.study_pk, _TABLE.c.version)
    )
    claimed = {int(pk): version for pk, version in session.execute(statement)}
    return _describe(session, claimed)


def mark_done(session: Session, study_pk: int, version: datetime | None, now: datetime) -> bool:
    """Record that the STUDY_STABLE task of this version finished (False: the study has been
    declared stable again since, or is gone)."""
    condition = _TABLE.c.study_pk == study_pk
    if version is not None:
        condition = and_(condition, _TABLE.c.version == version)
    result = session.execute(update(_TABLE).where(condition).values(done_at=now))
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Stability:
    """A study's stable state: ``stable`` when its current version has been declared."""

    stable: bool
    stable_at: datetime | None  # when its last declared version became stable
    times: int  # versions declared stable so far
    derivatives_done: bool  # the task of the current version finished


def study_stability(session: Session, study_pk: int) -> Stability:
    row = session.execute(
        select(
            Study.updated_at,
            _TABLE.c.version,
            _TABLE.c.stable_at,
            _TABLE.c.times,
            _TABLE.c.done_at,
        )
        .outerjoin(_TABLE, _TABLE.c.study_pk == Study.id)
        .where(Study.id == study_pk)
    ).first()
    if row is None or row.version is None:
        return Stability(False, None, 0, False)
    current = row.version == row.updated_at
    return Stability(current, row.stable_at, row.times, current and row.done_at is not None)


def _describe(session: Session, claimed: dict[int, datetime]) -> list[ClaimedStudy]:
    if not claimed:
        return []
    rows = session.execute(
        select(Study.id, Facility.name, Study.study_instance_uid)
        .join(Facility, Study.facility_id == Facility.id)
        .where(Study.id.in_(sorted(claimed)))
        .order_by(Study.id)
    )
    return [ClaimedStudy(pk, name, uid, claimed[pk]) for pk, name, uid in rows]
