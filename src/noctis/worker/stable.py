"""Study-stable detection, and what the worker does when a study becomes stable.

``detect_stable_studies`` is a periodic job (``noctis.worker.periodic``): every worker
process runs it every ``NOCTIS_STABLE_SWEEP_SECONDS``, and each run declares stable, in the
index, the studies with no new instance for their facility's quiet time
(``stableAfterSeconds`` in the Facility spec, else ``NOCTIS_STABLE_AFTER_SECONDS``), with one
conditional upsert (``noctis.index.stable.claim_stable``), so that each version of a study is
declared once whichever replica's sweep gets there first. For each study it declared, the
sweep counts it (``noctis_studies_stabilised_total``) and sends ``STUDY_STABLE`` to the
facility's queue.

``study_stable`` (the task) makes the study's derivatives -- each series' metadata bundle
(made or checked) and thumbnail -- then routes it (the transfers its Routes want are
written to the index) and records that it finished.
A declared study whose task never finished (lost with its worker, a broker that refused the
send) is sent again after ``NOCTIS_STABLE_RETRY_SECONDS``: at least once, never lost; the task
is idempotent (derivatives already made are kept), routing counts what it sends.

Clocks: a study's ``updated_at`` is the UTC time the instance was received, from the clock
of the process that stored it; the sweep compares it with its own UTC clock. Machines kept
in time by NTP differ by milliseconds, which the quiet time (a minute by default) dwarfs.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from noctis.core.queue import STUDY_STABLE, facility_queue
from noctis.core.runtime import Runtime
from noctis.core.stability import count_stabilised
from noctis.core.worklist import ready_when_stable
from noctis.dicom.metadata import BUNDLE_MINIMUM
from noctis.index.models import Facility, Series, Study
from noctis.index.stable import (
    ClaimedStudy,
    claim_stable,
    find_quiet,
    find_unfinished,
    mark_done,
    reclaim_unfinished,
)
from noctis.settings import Settings
from noctis.worker.forward import route_study
from noctis.worker.periodic import PeriodicJob
from noctis.worker.series_metadata import series_metadata
from noctis.worker.thumbnails import study_thumbnails

log = logging.getLogger(__name__)


def detect_stable_studies(runtime: Runtime) -> list[ClaimedStudy]:
    """Declare stable the studies that went quiet, and send each one's STUDY_STABLE; what
    this run declared (or sent again)."""
    settings = runtime.settings
    now = datetime.now(UTC)
    with runtime.reader() as session:
        groups = _facilities_by_quiet_time(session, settings)
    batch = settings.stable_sweep_batch
    declared: list[ClaimedStudy] = []
    for quiet, facility_ids in sorted(groups.items()):
        quiet_before = now - timedelta(seconds=quiet)
        with runtime.reader() as session:
            found = find_quiet(session, facility_ids, quiet_before, batch)
        if found:
            with runtime.sessions.begin() as session:
                declared += claim_stable(session, runtime.index.insert, found, quiet_before, now)
    retry_before = now - timedelta(seconds=settings.stable_retry_seconds)
    with runtime.reader() as session:
        unfinished = find_unfinished(session, retry_before, batch)
    again: list[ClaimedStudy] = []
    if unfinished:
        with runtime.sessions.begin() as session:
            again = reclaim_unfinished(session, unfinished, retry_before, now)
    for facility, count in Counter(study.facility for study in declared).items():
        count_stabilised(facility, count)
    for study in declared + again:
        runtime.queue.send(
            STUDY_STABLE,
            queue=facility_queue(study.facility),
            facility=study.facility,
            study_instance_uid=study.study_instance_uid,
            version=study.version.isoformat(),
        )
    if declared or again:
        log.info("studies stable: %d declared, %d sent again", len(declared), len(again))
    return declared + again


def study_stable(
    runtime: Runtime,
    *,
    facility: str,
    study_instance_uid: str,
    version: str | None = None,
    **_: Any,
) -> str:
    """Make the stable study's derivatives, send it to routing, record that it is done
    (and, on the worklist, move it from arrived to ready).
        Returns what happened, e.g. ``done: 2 bundles, 3 thumbnails made`` or ``gone``."""
    with runtime.reader() as session:
        found = _study(session, facility, study_instance_uid)
    if found is None:
        return "gone"  # deleted since
    study_pk, series = found
    bundles = Counter(
        series_metadata(
            runtime,
            facility=facility,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_uid,
        )
        for series_uid, count in series
        if count >= BUNDLE_MINIMUM
    )
    thumbnails = Counter(study_thumbnails(runtime, facility, study_instance_uid).values())
    # Routed here, not through a ROUTE_STUDY message: the transfers are in the index before
    # the study is marked done, so a broker losing a message can never leave it unrouted
    # (the routing job sends again what a lost forwarding task did not).
    routed = route_study(runtime, facility=facility, study_instance_uid=study_instance_uid)
    with runtime.sessions.begin() as session:
        mark_done(
            session,
            study_pk,
            datetime.fromisoformat(version) if version else None,
            datetime.now(UTC),
        )
        study = session.get(Study, study_pk)
        if study is not None:
            ready_when_stable(session, study)  # on the worklist: arrived -> ready
    return (
        f"done: {bundles['built']} bundles built, {bundles['current']} current; "
        f"{thumbnails['made']} thumbnails made, {thumbnails['present']} present; "
        f"{sum(routed.values())} transfers queued"
    )


def _facilities_by_quiet_time(session: Any, settings: Settings) -> dict[float, list[int]]:
    """Quiet time (seconds) -> the facilities it applies to."""
    groups: dict[float, list[int]] = defaultdict(list)
    for facility_id, spec in session.execute(select(Facility.id, Facility.spec)):
        quiet = (spec or {}).get("stableAfterSeconds") or settings.stable_after_seconds
        groups[float(quiet)].append(facility_id)
    return groups


def _study(session: Any, facility: str, study_uid: str) -> tuple[int, list[tuple[str, int]]] | None:
    """(study pk, [(series UID, instances)]) or None when there is no such study."""
    study_pk = session.scalar(
        select(Study.id)
        .join(Facility, Study.facility_id == Facility.id)
        .where(Facility.name == facility, Study.study_instance_uid == study_uid)
    )
    if study_pk is None:
        return None
    rows = session.execute(
        select(Series.series_instance_uid, Series.number_of_instances)
        .where(Series.study_pk == study_pk)
        .order_by(Series.id)
    )
    return int(study_pk), [(uid, int(count)) for uid, count in rows]


def _sweep_interval(settings: Settings) -> float:
    return settings.stable_sweep_seconds


STABLE_SWEEP = PeriodicJob("study-stable", _sweep_interval, detect_stable_studies)
