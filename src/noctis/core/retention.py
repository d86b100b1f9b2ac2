"""Retention: studies older than their facility's `retention` are deleted, through the
deletion path (index rows and tombstones at once, objects by the sweep; audited), never one on
legal hold, never by bucket rules. Run by a periodic job in every worker process and in
`noctis serve`; two replicas picking the same study delete it once (the deletion's own
transaction decides: the second finds nothing).

``after: received`` counts from when the archive received the study's first instance;
``after: studyDate`` from its Study Date (a study without one, from its receipt).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, exists, or_, select

from noctis.core.deletion import Actor, DeletionRefused, NothingToDelete, Target, delete
from noctis.core.runtime import Runtime
from noctis.index.deletion import LegalHold, claim_lease, release_lease
from noctis.index.models import Facility, Study
from noctis.specs.facility import RetentionSpec

log = logging.getLogger(__name__)

RETENTION_ACTOR = Actor("retention", "user", "worker")
LEASE = "retention"


@dataclass
class RetentionReport:
    deleted: dict[str, int] = field(default_factory=dict)  # facility -> studies deleted
    refused: int = 0  # protected by an object lock: tried again next time
    skipped: bool = False  # not due: another replica ran it less than an interval ago


def expire_studies(
    runtime: Runtime, *, now: datetime | None = None, batch: int = 500, scheduled: bool = False
) -> RetentionReport:
    """Delete up to ``batch`` expired studies per facility (the next run takes the rest).

    ``scheduled`` (the periodic job): run only when the archive's next run is due, so that N
    replicas apply retention once per interval between them (a job lease in the index)."""
    now = now or datetime.now(UTC)
    if not scheduled:
        return _expire(runtime, now, batch)
    holder = uuid.uuid4().hex
    interval = timedelta(seconds=runtime.settings.retention_check_seconds)
    with runtime.sessions.begin() as session:
        lease = max(interval, timedelta(hours=1))
        if not claim_lease(session, LEASE, holder, lease, scheduled=True):
            return RetentionReport(skipped=True)
    try:
        return _expire(runtime, now, batch)
    finally:
        with runtime.sessions.begin() as session:
            release_lease(session, LEASE, holder, now + interval)


def _expire(runtime: Runtime, now: datetime, batch: int) -> RetentionReport:
    report = RetentionReport()
    with runtime.reader() as session:
        facilities = [
            (facility_id, name, RetentionSpec.model_validate(spec["retention"]))
            for facility_id, name, spec in session.execute(
                select(Facility.id, Facility.name, Facility.spec)
            )
            if isinstance(spec, dict) and spec.get("retention")
        ]
    for facility_id, name, retention in facilities:
        for study in _expired(runtime, facility_id, retention, now, batch):
            try:
                delete(runtime, Target(facility_id, study), RETENTION_ACTOR)
            except NothingToDelete:
                continue  # another replica (or an administrator) deleted it first
            except DeletionRefused as exc:
                report.refused += 1
                log.info("retention of %s in %s: %s", study, name, exc)
                continue
            report.deleted[name] = report.deleted.get(name, 0) + 1
    if report.deleted:
        log.info("retention deleted %s", report.deleted)
    return report


def _expired(
    runtime: Runtime, facility_id: int, retention: RetentionSpec, now: datetime, batch: int
) -> list[str]:
    cutoff = now - timedelta(days=retention.days)
    received_before = Study.created_at < cutoff
    if retention.after == "studyDate":
        dated = and_(Study.study_date != "", Study.study_date < cutoff.strftime("%Y%m%d"))
        old = or_(dated, and_(Study.study_date == "", received_before))
    else:
        old = received_before
    held = exists().where(
        LegalHold.facility_id == Study.facility_id,
        LegalHold.study_instance_uid == Study.study_instance_uid,
    )
    with runtime.reader() as session:
        return list(
            session.execute(
                select(Study.study_instance_uid)
                .where(Study.facility_id == facility_id, old, ~held)
                .order_by(Study.id)
                .limit(batch)
            ).scalars()
        )
