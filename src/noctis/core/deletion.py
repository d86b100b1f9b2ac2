"""Deleting studies, series and instances, and the legal holds that prevent it.

A deletion is two steps, so a crash at any point loses nothing and leaves nothing behind:

1. `delete` removes the index rows (they vanish at once from QIDO, WADO, C-FIND, C-MOVE,
   C-GET and the counts) and, in the same transaction, writes a tombstone per object key to
   remove (the instances' objects, and the key prefix of their derived data: metadata bundles,
   thumbnails). The caller answers, and kicks a sweep.
2. `sweep_tombstones` (a task kicked by each deletion, and a periodic job) claims tombstones,
   removes their objects, then the tombstones. Killed mid-way, its claim expires
   (``deletion_sweep_lease_seconds``) and the next sweep finishes the work.

Refused, with nothing changed: a study on legal hold (`LegalHold`, placed and cleared by an
administrator, audited), and objects the store's object lock still retains (S3 object lock:
the answer names the retain-until date).

The SOP Instance UIDs of deleted instances are free at once: a re-sent instance is stored
again under a new object key, which no tombstone names.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from noctis.core.audit import ActorType, AuditEvent, add_to_session
from noctis.core.runtime import Runtime
from noctis.dicom.thumbnail import thumbnail_key
from noctis.index import deletion as rows
from noctis.index.models import Facility, Study

log = logging.getLogger(__name__)

DELETE_ACTION = "delete"
HOLD_ACTION = "legal-hold"
# The task that sweeps tombstones (handled by noctis.worker.sweep; kicked after each deletion).
SWEEP_DELETIONS = "noctis.sweep_deletions"
SWEEP_CONCURRENCY = 8  # object removals at once (S3 round trips overlap)


@dataclass(frozen=True)
class Actor:
    """Who asks: the audit trail's actor."""

    name: str
    type: ActorType
    client: str


@dataclass(frozen=True)
class Target:
    """A study, one of its series, or one instance, in one facility."""

    facility_id: int
    study: str
    series: str | None = None
    sop: str | None = None

    @property
    def level(self) -> str:
        return "instance" if self.sop else "series" if self.series else "study"


@dataclass(frozen=True)
class Deleted:
    instances: int
    size_bytes: int
    study_removed: bool


class NothingToDelete(LookupError):
    """The study, series or instance is not (or no longer) in the index."""


class DeletionRefused(Exception):
    """A legal hold or an object lock protects what was to be deleted; nothing changed."""

    def __init__(self, message: str, *, retain_until: datetime | None = None) -> None:
        super().__init__(message)
        self.retain_until = retain_until


def delete(runtime: Runtime, target: Target, actor: Actor) -> Deleted:
    """Delete the target's index rows and tombstone its objects; kick the sweep.

    Raises NothingToDelete (404), DeletionRefused (409). Audited durably either way."""
    try:
        _check_object_lock(runtime, target)
        with runtime.sessions.begin() as session:
            hold = rows.hold_of(session, target.facility_id, target.study)
            if hold is not None:
                raise DeletionRefused(
                    f"study {target.study} is on legal hold since "
                    f"{hold.placed_at:%Y-%m-%d} ({hold.reason}); clear the hold first"
                )
            facility = session.get(Facility, target.facility_id)
            facility_name = facility.name if facility is not None else str(target.facility_id)
            removed = rows.delete_rows(
                session, target.facility_id, target.study, target.series, target.sop
            )
            if not removed.instances:
                raise NothingToDelete(f"{target.level} not found")
            rows.add_tombstones(
                session,
                target.facility_id,
                target.study,
                _derived_prefixes(facility_name, target.study, removed),
                prefix=True,
            )
            rows.add_tombstones(
                session,
                target.facility_id,
                target.study,
                _derived_keys(facility_name, target.study, removed),
                prefix=False,
            )
            # The audit row commits with the deletion: both are durable, or neither.
            event = _event(
                actor,
                target,
                "success",
                instances=removed.instances,
                bytes=removed.size_bytes,
                study_removed=removed.study_removed,
            )
            add_to_session(session, event)
    except DeletionRefused as exc:
        runtime.audit.record_durably(_event(actor, target, "failure", reason=str(exc)))
        raise
    except NothingToDelete:
        reason = f"{target.level} not found"
        runtime.audit.record_durably(_event(actor, target, "failure", reason=reason))
        raise
    runtime.queue.send(SWEEP_DELETIONS)
    return Deleted(removed.instances, removed.size_bytes, removed.study_removed)


def _derived_prefixes(facility: str, study: str, removed: rows.DeletedRows) -> list[str]:
    """Derived data lives under ``derived/{facility}/{study}/{series}/``: all of the study's
    when it is gone, else the removed series'. A series that keeps instances keeps its bundle
    (the API reads only the fragments of the instances the index lists); the thumbnails of
    its removed instances go (`_derived_keys`)."""
    if removed.study_removed:
        return [f"derived/{facility}/{study}/"]
    return [f"derived/{facility}/{study}/{series}/" for series in removed.series_removed]


def _derived_keys(facility: str, study: str, removed: rows.DeletedRows) -> list[str]:
    """The thumbnails of removed instances whose series stays (the series' others stay)."""
    return [
        thumbnail_key(facility, study, series, key)
        for series, key in removed.removed_in_kept_series
    ]


def _check_object_lock(runtime: Runtime, target: Target) -> None:
    """DeletionRefused if the store's object lock still retains one of the target's objects."""
    with runtime.reading() as conn:
        keys = rows.object_keys(conn, target.facility_id, target.study, target.series, target.sop)
    for key in keys:
        until = runtime.store.retained_until(key)
        if until is not None:
            raise DeletionRefused(
                f"the storage pool's object lock retains this {target.level}'s objects "
                f"until {until.isoformat()}; it cannot be deleted before then",
                retain_until=until,
            )


def _event(actor: Actor, target: Target, outcome: str, **detail: Any) -> AuditEvent:
    return AuditEvent(
        action=DELETE_ACTION,
        outcome=outcome,
        actor=actor.name,
        actor_type=actor.type,
        client=actor.client,
        study_instance_uid=target.study,
        facility_id=target.facility_id,
        detail={
            "level": target.level,
            **({"series": target.series} if target.series else {}),
            **({"instance": target.sop} if target.sop else {}),
            **detail,
        },
    )


@dataclass(frozen=True)
class SweepReport:
    removed: int  # tombstones done (objects, or prefixes emptied)
    failed: int  # given back for a later sweep


def sweep_tombstones(runtime: Runtime, *, batch: int = 200) -> SweepReport:
    """Remove the objects of every tombstone nobody else is sweeping, then the tombstones."""
    lease = timedelta(seconds=runtime.settings.deletion_sweep_lease_seconds)
    removed = failed = 0
    with ThreadPoolExecutor(SWEEP_CONCURRENCY, thread_name_prefix="noctis-sweep") as pool:
        while True:
            with runtime.sessions.begin() as session:
                claimed = rows.claim_tombstones(session, batch, lease)
            if not claimed:
                break
            outcomes = list(pool.map(lambda t: _remove(runtime, t), claimed))
            done = [t.id for t, error in zip(claimed, outcomes, strict=True) if error is None]
            with runtime.sessions.begin() as session:
                rows.finish_tombstones(session, done)
                for tombstone, error in zip(claimed, outcomes, strict=True):
                    if error is not None:
                        rows.release_tombstone(session, tombstone.id, error)
            removed += len(done)
            failed += len(claimed) - len(done)
            if len(done) < len(claimed):
                break  # the store refuses: try again at the next sweep, not in a tight loop
    if removed or failed:
        log.info("deletion sweep: %d removed, %d to retry", removed, failed)
    return SweepReport(removed, failed)


def _remove(runtime: Runtime, tombstone: rows.ClaimedTombstone) -> str | None:
    """None once the object (or every object under the prefix) is gone; else the error."""
    try:
        if tombstone.prefix:
            for stored in list(runtime.store.list_objects(tombstone.object_key)):
                runtime.store.purge(stored.key)
        else:
            runtime.store.purge(tombstone.object_key)
    except Exception as exc:
        log.warning("could not remove %s: %s", tombstone.object_key, exc)
        return f"{type(exc).__name__}: {exc}"
    return None


# Legal holds


@dataclass(frozen=True)
class Hold:
    study_instance_uid: str
    facility: str
    reason: str
    placed_by: str
    placed_at: datetime


class HoldError(LookupError):
    """No such study (placing) or no hold on it (clearing)."""


def place_hold(runtime: Runtime, facility_id: int, study: str, reason: str, actor: Actor) -> Hold:
    """Put the study on legal hold (or change the reason of its hold); audited durably."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a legal hold needs a reason")
    with runtime.sessions.begin() as session:
        exists = session.execute(
            select(Study.id).where(
                Study.facility_id == facility_id, Study.study_instance_uid == study
            )
        ).first()
        if exists is None:
            raise HoldError(f"study {study} not found")
        hold = rows.hold_of(session, facility_id, study)
        if hold is None:
            hold = rows.LegalHold(facility_id=facility_id, study_instance_uid=study)
            session.add(hold)
        hold.reason = reason[:1024]
        hold.placed_by = actor.name[:255]
        hold.placed_at = rows.utcnow()
        session.flush()
        placed = _hold(session, hold)
    _audit_hold(runtime, actor, facility_id, study, "place", reason=reason)
    return placed


def clear_hold(runtime: Runtime, facility_id: int, study: str, actor: Actor) -> None:
    with runtime.sessions.begin() as session:
        hold = rows.hold_of(session, facility_id, study)
        if hold is None:
            raise HoldError(f"study {study} is not on legal hold")
        reason = hold.reason
        session.delete(hold)
    _audit_hold(runtime, actor, facility_id, study, "clear", reason=reason)


def get_hold(runtime: Runtime, facility_id: int, study: str) -> Hold | None:
    with runtime.reader() as session:
        hold = rows.hold_of(session, facility_id, study)
        return _hold(session, hold) if hold is not None else None


def _hold(session: Any, hold: rows.LegalHold) -> Hold:
    facility = session.get(Facility, hold.facility_id)
    return Hold(
        hold.study_instance_uid,
        facility.name if facility is not None else "",
        hold.reason,
        hold.placed_by,
        hold.placed_at,
    )


def _audit_hold(
    runtime: Runtime, actor: Actor, facility_id: int, study: str, operation: str, **detail: Any
) -> None:
    runtime.audit.record_durably(
        AuditEvent(
            action=HOLD_ACTION,
            outcome="success",
            actor=actor.name,
            actor_type=actor.type,
            client=actor.client,
            study_instance_uid=study,
            facility_id=facility_id,
            detail={"operation": operation, **detail},
        )
    )


def facilities_holding(runtime: Runtime, study: str) -> list[tuple[int, str]]:
    """(id, name) of the facilities that hold a study (the CLI's choice of facility)."""
    with runtime.reading() as conn:
        return [
            (int(i), str(n))
            for i, n in conn.execute(
                select(Facility.id, Facility.name)
                .join(Study, Study.facility_id == Facility.id)
                .where(Study.study_instance_uid == study)
                .order_by(Facility.name)
            )
        ]
