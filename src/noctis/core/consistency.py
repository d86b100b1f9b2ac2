"""The consistency check: objects without index rows, and index rows without objects.

Policy (the README's "Consistency sweep"):
- **An object no index row references** (an orphan: a crash between the object's commit and
  the index's) is removed once it is older than ``orphan_grace_seconds``, so an instance being
  stored is never touched. Removed, not moved aside: ingest acknowledges an instance only after
  its index row commits, so an orphan was never acknowledged to anyone (its sender got a failure
  or no answer and sends again); keeping it elsewhere would keep patient data that nobody can
  find, audit or delete. Each removal is a finding (state ``removed``) and the run is audited.
  Only keys under a registered facility's prefix are considered (nothing else in the bucket),
  and never a key a tombstone names (the deletion sweep's). Derived data
  (``derived/{facility}/{study}/{series}/...``) of a series the index no longer has (a bundle
  written while its series was being deleted) is an orphan too, under the same grace period.
- **An index row whose object is missing** is marked (a finding, state ``open``) and
  reported, never deleted: an administrator decides (restore the object from a backup, or
  delete the instance through the deletion path). A finding whose object reappears is closed.

One owner at a time across replicas: the run takes the ``consistency`` job lease in the index
(a conditional UPDATE); a replica that finds it taken, or (periodic runs) finds the next check
not yet due, skips its turn.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from noctis.core.audit import AuditEvent
from noctis.core.runtime import Runtime
from noctis.index import deletion as rows
from noctis.index.deletion import ConsistencyFinding
from noctis.index.models import Facility, Instance, Series, Study
from noctis.storage import StoredObject

log = logging.getLogger(__name__)

LEASE = "consistency"
ORPHAN = "orphan"
MISSING = "missing"
REPORTED_KEYS = 100  # keys listed per kind in a report


@dataclass
class ConsistencyReport:
    checked_objects: int = 0
    checked_rows: int = 0
    orphans_removed: list[str] = field(default_factory=list)
    orphans_young: int = 0  # within the grace period: left alone this time
    missing: list[str] = field(default_factory=list)
    skipped: bool = False  # another replica holds the lease


def check_consistency(
    runtime: Runtime,
    *,
    grace: timedelta | None = None,
    repair: bool = True,
    scheduled: bool = False,
) -> ConsistencyReport:
    """Compare the store with the index, per facility; repair per the module's policy.

    ``scheduled`` (the periodic job): skipped unless the archive's next check is due, so that
    N replicas check once per interval between them, not N times. Otherwise (on demand)
    skipped only while another check runs. Either way the next scheduled check is due one
    interval after this one began."""
    settings = runtime.settings
    grace = grace if grace is not None else timedelta(seconds=settings.orphan_grace_seconds)
    interval = timedelta(seconds=settings.consistency_check_seconds)
    holder = uuid.uuid4().hex
    began = datetime.now(UTC)
    with runtime.sessions.begin() as session:
        # Held at most this long by a checker that dies mid-way.
        lease = max(interval, timedelta(hours=1))
        if not rows.claim_lease(session, LEASE, holder, lease, scheduled=scheduled):
            return ConsistencyReport(skipped=True)
    try:
        report = _check(runtime, grace, repair)
    finally:
        with runtime.sessions.begin() as session:
            rows.release_lease(session, LEASE, holder, began + interval)
    if report.orphans_removed or report.missing:
        runtime.audit.record_durably(
            AuditEvent(
                action="consistency",
                outcome="success",
                actor="noctis",
                actor_type="user",
                client="worker",
                detail={
                    "orphans_removed": len(report.orphans_removed),
                    "missing": len(report.missing),
                    "orphan_keys": report.orphans_removed[:REPORTED_KEYS],
                    "missing_keys": report.missing[:REPORTED_KEYS],
                },
            )
        )
    return report


def _check(runtime: Runtime, grace: timedelta, repair: bool) -> ConsistencyReport:
    report = ConsistencyReport()
    with runtime.reader() as session:
        facilities = list(session.execute(select(Facility.id, Facility.name)))
    for facility_id, name in facilities:
        _check_facility(runtime, report, facility_id, name, grace, repair)
    return report


def _check_facility(
    runtime: Runtime,
    report: ConsistencyReport,
    facility_id: int,
    name: str,
    grace: timedelta,
    repair: bool,
) -> None:
    # The listing first, the index second: an instance stored in between is in the index
    # (not an orphan), and one stored after the listing is simply not seen this time.
    listed = {o.key: o for o in runtime.store.list_objects(f"{name}/")}
    with runtime.reader() as session:
        indexed = dict(
            session.execute(
                select(Instance.object_key, Instance.id).where(Instance.facility_id == facility_id)
            ).all()
        )
        tombstoned = rows.tombstoned_keys(session)
    report.checked_objects += len(listed)
    report.checked_rows += len(indexed)
    old = datetime.now(UTC) - grace
    for key, stored in listed.items():
        if key in indexed or key in tombstoned:
            continue
        if stored.modified > old:
            report.orphans_young += 1
            continue
        _orphan(runtime, report, facility_id, stored, repair)
    for key in indexed.keys() - listed.keys():
        # Deleted since we read the index, or stored since the listing: look again.
        if runtime.store.exists(key) or not _still_indexed(runtime, key):
            continue
        report.missing.append(key)
        _found(runtime, MISSING, key, facility_id, None, "open")
    _close_resolved(runtime, facility_id, listed.keys(), indexed.keys())
    _check_derived(runtime, report, facility_id, name, old, repair)


def _check_derived(
    runtime: Runtime,
    report: ConsistencyReport,
    facility_id: int,
    name: str,
    old: datetime,
    repair: bool,
) -> None:
    """Derived objects of series the index does not have (older than the grace period)."""
    prefix = f"derived/{name}/"
    listed = list(runtime.store.list_objects(prefix))
    if not listed:
        return
    with runtime.reader() as session:
        series = {
            (str(study), str(uid))
            for study, uid in session.execute(
                select(Study.study_instance_uid, Series.series_instance_uid)
                .join(Series, Series.study_pk == Study.id)
                .where(Study.facility_id == facility_id)
            )
        }
        tombstoned = rows.tombstoned_keys(session)
    for stored in listed:
        parts = stored.key.removeprefix(prefix).split("/")
        if len(parts) < 3 or (parts[0], parts[1]) in series or stored.modified > old:
            continue
        if any(stored.key.startswith(t) for t in tombstoned):
            continue  # the deletion sweep's
        _orphan(runtime, report, facility_id, stored, repair)


def _orphan(
    runtime: Runtime,
    report: ConsistencyReport,
    facility_id: int,
    stored: StoredObject,
    repair: bool,
) -> None:
    """Remove an orphan (``repair``) and record the finding; a refusal is retried next time."""
    if repair:
        try:
            runtime.store.purge(stored.key)
        except Exception as exc:
            log.warning("could not remove orphan object %s: %s", stored.key, exc)
            return
    report.orphans_removed.append(stored.key)
    state = "removed" if repair else "open"
    _found(runtime, ORPHAN, stored.key, facility_id, stored.size, state)


def _still_indexed(runtime: Runtime, key: str) -> bool:
    with runtime.reading() as conn:
        found = conn.execute(select(Instance.id).where(Instance.object_key == key)).first()
    return found is not None


def _found(
    runtime: Runtime, kind: str, key: str, facility_id: int, size: int | None, state: str
) -> None:
    with runtime.sessions.begin() as session:
        finding = session.execute(
            select(ConsistencyFinding).where(
                ConsistencyFinding.kind == kind, ConsistencyFinding.object_key == key
            )
        ).scalar_one_or_none()
        if finding is None:
            session.add(
                ConsistencyFinding(
                    kind=kind, object_key=key, facility_id=facility_id, size_bytes=size, state=state
                )
            )
        else:
            finding.state = state


def _close_resolved(
    runtime: Runtime, facility_id: int, listed: Collection[str], indexed: Collection[str]
) -> None:
    """Close the missing-object findings whose object is back, or whose row was deleted."""
    with runtime.sessions.begin() as session:
        open_missing = session.execute(
            select(ConsistencyFinding.id, ConsistencyFinding.object_key).where(
                ConsistencyFinding.kind == MISSING,
                ConsistencyFinding.state == "open",
                ConsistencyFinding.facility_id == facility_id,
            )
        ).all()
        back = [
            finding_id for finding_id, key in open_missing if key in listed or key not in indexed
        ]
        if back:
            session.execute(
                update(ConsistencyFinding)
                .where(ConsistencyFinding.id.in_(back))
                .values(state="resolved")
            )


@dataclass(frozen=True)
class FindingCounts:
    """Counts for metrics and the REST summary."""

    by_kind_and_state: dict[tuple[str, str], int]
    tombstones_pending: int
    tombstones_failing: int  # the store refused their last removal; retried at each sweep


def finding_counts(runtime: Runtime) -> FindingCounts:
    with runtime.reader() as session:
        counted = session.execute(
            select(ConsistencyFinding.kind, ConsistencyFinding.state, func.count()).group_by(
                ConsistencyFinding.kind, ConsistencyFinding.state
            )
        ).all()
        pending = rows.pending_tombstones(session)
        failing = rows.failing_tombstones(session)
    return FindingCounts({(k, s): int(n) for k, s, n in counted}, pending, failing)


def facility_findings(session: Session, facility_id: int) -> dict[tuple[str, str], int]:
    """The consistency check's findings in one facility, counted by (kind, state)."""
    counted = session.execute(
        select(ConsistencyFinding.kind, ConsistencyFinding.state, func.count())
        .where(ConsistencyFinding.facility_id == facility_id)
        .group_by(ConsistencyFinding.kind, ConsistencyFinding.state)
    ).all()
    return {(kind, state): int(number) for kind, state, number in counted}


def open_findings(runtime: Runtime, kind: str, limit: int = 1000) -> list[ConsistencyFinding]:
    with runtime.reader() as session:
        return list(
            session.execute(
                select(ConsistencyFinding)
                .where(ConsistencyFinding.kind == kind)
                .order_by(ConsistencyFinding.found_at.desc())
                .limit(limit)
            ).scalars()
        )


def metrics_text(runtime: Runtime) -> bytes:
    """Prometheus text: findings by kind and state, tombstones waiting for the sweep."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    try:
        counts = finding_counts(runtime)
    except SQLAlchemyError as exc:  # /metrics still answers while the index is down
        log.warning("consistency metrics unavailable: %s", type(exc).__name__)
        return b""
    registry = CollectorRegistry()
    findings = Gauge(
        "noctis_consistency_findings",
        "Objects without index rows (orphan) and index rows without objects (missing) found "
        "by the consistency check, by what was done (removed, open, resolved)",
        ("kind", "state"),
        registry=registry,
    )
    for kind in (ORPHAN, MISSING):
        findings.labels(kind, "open").set(0)
    for (kind, state), count in counts.by_kind_and_state.items():
        findings.labels(kind, state).set(count)
    Gauge(
        "noctis_deletion_tombstones_pending",
        "Objects of deleted studies, series and instances the sweep has yet to remove",
        registry=registry,
    ).set(counts.tombstones_pending)
    Gauge(
        "noctis_deletion_tombstones_failing",
        "Objects of deletions the store refused to remove at the last try (retried each sweep)",
        registry=registry,
    ).set(counts.tombstones_failing)
    return generate_latest(registry)
