"""Deletion in the index: tombstones, legal holds and consistency findings.

A deletion removes the instance rows (and the series, study and patient rows left empty) in
one transaction and, in the same transaction, writes a tombstone per object key to remove:
the instance objects and the prefixes of their derived data. Reads need no change (the rows
are gone), and an object is never unreachable: until a sweep has removed it, its key is in a
tombstone. The sweep claims tombstones with a conditional UPDATE (a lease), so replicas
sweeping at once remove each object once, and a sweeper killed mid-way leaves its lease to
expire for another.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from noctis.index.models import Base, Instance, Patient, Series, Study, utcnow
from noctis.index.routing import forget_transfers


class Tombstone(Base):
    """An object (or, ``prefix``, every object under a key prefix) that the index no longer
    references and that a sweep must remove."""

    __tablename__ = "tombstone"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(Integer)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(512))
    prefix: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The sweeper holding it (a claim) and until when; another may take it after that.
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class LegalHold(Base):
    """A study that may not be deleted (nor any of its series or instances) until cleared."""

    __tablename__ = "legal_hold"
    __table_args__ = (UniqueConstraint("facility_id", "study_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(Integer)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(1024))
    placed_by: Mapped[str] = mapped_column(String(255))
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsistencyFinding(Base):
    """What the consistency check found: an object no index row references (``orphan``) or
    an instance row whose object is missing (``missing``), and what was done about it."""

    __tablename__ = "consistency_finding"
    __table_args__ = (UniqueConstraint("kind", "object_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # orphan | missing
    object_key: Mapped[str] = mapped_column(String(512))
    facility_id: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    found_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # removed (orphans, after the grace period) | open (missing rows: an administrator decides)
    state: Mapped[str] = mapped_column(String(16), default="open")


class JobLease(Base):
    """One owner at a time for a whole-archive job (the consistency check) across replicas."""

    __tablename__ = "job_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(32))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass
class DeletedRows:
    """What one deletion removed from the index."""

    facility_id: int
    study_instance_uid: str
    instances: int = 0
    size_bytes: int = 0
    object_keys: list[str] = field(default_factory=list)
    series_removed: list[str] = field(default_factory=list)  # Series Instance UIDs
    series_kept: list[str] = field(default_factory=list)  # touched, with instances left
    # (Series Instance UID, object key) of each removed instance whose series is kept: its
    # derived data (a thumbnail) goes, the series' does not.
    removed_in_kept_series: list[tuple[str, str]] = field(default_factory=list)
    study_removed: bool = False


@dataclass(frozen=True)
class ClaimedTombstone:
    id: int
    object_key: str
    prefix: bool


def locked_study(session: Session, facility_id: int, study: str) -> int | None:
    """The study row's key, locked until the transaction ends on PostgreSQL (a concurrent
    store into the study waits for the deletion, then files into a fresh study row)."""
    query = select(Study.id).where(
        Study.facility_id == facility_id, Study.study_instance_uid == study
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def _series_pks(session: Session | Connection, study_pk: int, series: str | None) -> list[int]:
    query = select(Series.id).where(Series.study_pk == study_pk)
    if series is not None:
        query = query.where(Series.series_instance_uid == series)
    return [int(pk) for pk in session.execute(query).scalars()]


def instance_rows(
    session: Session | Connection, study_pk: int, series: str | None, sop: str | None
) -> list[tuple[int, str, int, int]]:
    """(instance id, object key, size, series pk) of the study's instances under the path.

    The series first, then their instances by series key: each step an index look-up,
    whatever the planner thinks of a join over a freshly loaded table."""
    series_pks = _series_pks(session, study_pk, series)
    if not series_pks:
        return []
    query = select(Instance.id, Instance.object_key, Instance.size_bytes, Instance.series_pk).where(
        Instance.series_pk.in_(series_pks)
    )
    if sop is not None:
        query = query.where(Instance.sop_instance_uid == sop)
    return [(int(i), str(k), int(s), int(p)) for i, k, s, p in session.execute(query)]


def object_keys(
    conn: Session | Connection, facility_id: int, study: str, series: str | None, sop: str | None
) -> list[str]:
    """The object keys under a path (no lock taken: the object-lock check before a deletion)."""
    study_pk = conn.execute(
        select(Study.id).where(Study.facility_id == facility_id, Study.study_instance_uid == study)
    ).scalar_one_or_none()
    if study_pk is None:
        return []
    return [key for _, key, _, _ in instance_rows(conn, study_pk, series, sop)]


def delete_rows(
    session: Session,
    facility_id: int,
    study: str,
    series: str | None,
    sop: str | None,
) -> DeletedRows:
    """Remove the instance rows under the path (and the parents left empty), writing a
    tombstone for each object; the caller's transaction commits both or neither (and adds the
    derived data's tombstones with `add_tombstones`). Nothing found: an empty result."""
    deleted = DeletedRows(facility_id, study)
    study_pk = locked_study(session, facility_id, study)
    if study_pk is None:
        return deleted
    rows = instance_rows(session, study_pk, series, sop)
    if not rows:
        return deleted
    now = utcnow()
    deleted.instances = len(rows)
    deleted.size_bytes = sum(size for _, _, size, _ in rows)
    deleted.object_keys = [key for _, key, _, _ in rows]
    add_tombstones(session, facility_id, study, deleted.object_keys, prefix=False)
    forget_transfers(session, facility_id, study, series, sop)
    ids = [row[0] for row in rows]
    for start in range(0, len(ids), 500):
        session.execute(delete(Instance).where(Instance.id.in_(ids[start : start + 500])))
    series_pks = sorted({row[3] for row in rows})
    kept: dict[int, str] = {}
    _recount(session, study_pk, series_pks, now, deleted, kept)
    deleted.removed_in_kept_series = [(kept[pk], key) for _, key, _, pk in rows if pk in kept]
    deleted.study_removed = _remove_empty(session, study_pk)
    return deleted


def add_tombstones(
    session: Session, facility_id: int, study: str, keys: Sequence[str], *, prefix: bool
) -> None:
    """Tombstones for object keys (``prefix``: for every object under each key prefix)."""
    if not keys:
        return
    now = utcnow()
    session.execute(
        Tombstone.__table__.insert(),
        [
            {
                "facility_id": facility_id,
                "study_instance_uid": study,
                "object_key": key,
                "prefix": prefix,
                "created_at": now,
                "attempts": 0,
            }
            for key in keys
        ],
    )


def _recount(
    session: Session,
    study_pk: int,
    series_pks: list[int],
    now: datetime,
    deleted: DeletedRows,
    kept: dict[int, str],
) -> None:
    """Series and study counts, sizes and modalities after instances were removed; the series
    kept (key -> UID) are added to ``kept``."""
    for series_pk in series_pks:
        remaining = session.execute(
            select(func.count(Instance.id)).where(Instance.series_pk == series_pk)
        ).scalar_one()
        uid = session.execute(
            select(Series.series_instance_uid).where(Series.id == series_pk)
        ).scalar_one()
        (deleted.series_kept if remaining else deleted.series_removed).append(uid)
        if remaining:
            kept[series_pk] = uid
        if remaining:
            session.execute(
                update(Series)
                .where(Series.id == series_pk)
                .values(number_of_instances=remaining, updated_at=now)
            )
        else:
            session.execute(delete(Series).where(Series.id == series_pk))
    left = _series_pks(session, study_pk, None)
    instances, size = session.execute(
        select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0)).where(
            Instance.series_pk.in_(left or [-1])
        )
    ).one()
    modalities = session.execute(
        select(Series.modality).where(Series.study_pk == study_pk).distinct()
    ).scalars()
    series_count = session.execute(
        select(func.count(Series.id)).where(Series.study_pk == study_pk)
    ).scalar_one()
    session.execute(
        update(Study)
        .where(Study.id == study_pk)
        .values(
            number_of_instances=instances,
            size_bytes=size,
            number_of_series=series_count,
            modalities_in_study="\\".join(sorted(m for m in modalities if m)),
            updated_at=now,
        )
    )


def _remove_empty(session: Session, study_pk: int) -> bool:
    """Remove the study if it has no series left, and its patient if it has no study left."""
    if session.execute(select(Series.id).where(Series.study_pk == study_pk).limit(1)).first():
        return False
    patient_pk = session.execute(select(Study.patient_pk).where(Study.id == study_pk)).scalar_one()
    session.execute(delete(Study).where(Study.id == study_pk))
    if not session.execute(select(Study.id).where(Study.patient_pk == patient_pk).limit(1)).first():
        session.execute(delete(Patient).where(Patient.id == patient_pk))
    return True


def claim_tombstones(session: Session, limit: int, lease: timedelta) -> list[ClaimedTombstone]:
    """Claim up to ``limit`` tombstones nobody holds (or whose holder's lease ran out) with one
    conditional UPDATE; the claim commits with the caller's transaction."""
    now = utcnow()
    holder = uuid.uuid4().hex
    free = or_(Tombstone.claimed_until.is_(None), Tombstone.claimed_until < now)
    candidates = select(Tombstone.id).where(free).order_by(Tombstone.id).limit(limit)
    session.execute(
        update(Tombstone)
        .where(Tombstone.id.in_(candidates.scalar_subquery()), free)
        .values(claimed_by=holder, claimed_until=now + lease, attempts=Tombstone.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        select(Tombstone.id, Tombstone.object_key, Tombstone.prefix)
        .where(Tombstone.claimed_by == holder)
        .order_by(Tombstone.id)
    )
    return [ClaimedTombstone(int(i), str(k), bool(p)) for i, k, p in rows]


def finish_tombstones(session: Session, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), 500):
        session.execute(delete(Tombstone).where(Tombstone.id.in_(ids[start : start + 500])))


def release_tombstone(session: Session, tombstone_id: int, error: str) -> None:
    """Give a tombstone back after a failed removal (retried at a later sweep)."""
    session.execute(
        update(Tombstone)
        .where(Tombstone.id == tombstone_id)
        .values(claimed_by=None, claimed_until=None, last_error=error[:2000])
    )


def pending_tombstones(session: Session) -> int:
    return int(session.execute(select(func.count(Tombstone.id))).scalar_one())


def failing_tombstones(session: Session) -> int:
    """Tombstones whose last removal failed (the store refused: an object lock, an outage)."""
    query = select(func.count(Tombstone.id)).where(Tombstone.last_error.is_not(None))
    return int(session.execute(query).scalar_one())


def tombstoned_keys(session: Session) -> set[str]:
    return set(session.execute(select(Tombstone.object_key)).scalars())


def hold_of(session: Session, facility_id: int, study: str) -> LegalHold | None:
    return session.execute(
        select(LegalHold).where(
            LegalHold.facility_id == facility_id, LegalHold.study_instance_uid == study
        )
    ).scalar_one_or_none()


def claim_lease(
    session: Session, name: str, holder: str, lease: timedelta, *, scheduled: bool
) -> bool:
    """Take the named job's lease with a conditional UPDATE: when nobody holds it (or the
    holder's lease ran out) and, for a ``scheduled`` run, when its next run is due (``until``
    also keeps the time of the next run once a run is done)."""
    now = utcnow()
    if session.get(JobLease, name) is None:
        session.add(JobLease(name=name, holder=None, until=None))
        session.flush()
    due = or_(JobLease.until.is_(None), JobLease.until < now)
    free = due if scheduled else or_(due, JobLease.holder.is_(None))
    taken = session.execute(
        update(JobLease)
        .where(JobLease.name == name, free)
        .values(holder=holder, until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, name: str, holder: str, next_run: datetime | None) -> None:
    """Give the lease back; scheduled runs wait until ``next_run`` (None: due at once)."""
    session.execute(
        update(JobLease)
        .where(JobLease.name == name, JobLease.holder == holder)
        .values(holder=None, until=next_run)
        .execution_options(synchronize_session=False)
    )
