"""Results of automated analysis: SR and SEG instances found in the index, summarised, linked
to their study, and a critical finding raised once per study.

Found reliably: a periodic job (``scan_results``) looks at the instances stored after the
last one it saw (a watermark in ``analysis_result_scan``, not an in-memory message), so a
result stored over C-STORE, STOW or any other path, while the worker was down or not, is
found at the next tick. The watermark moves by a conditional UPDATE in the transaction that
records the batch's results, so of several workers only one records a batch; a batch whose
objects cannot be read (the store is down) is left for the next tick. The scan stops before
the first instance stored within the last ``SETTLE_SECONDS``, and looks again at recent result
instances just below the watermark that have no record (on PostgreSQL an id is taken before
its transaction commits, so a slow commit can land behind the watermark).

Each result's header is read through ``runtime.store`` with the index's object key, bounded:
a SEG up to its pixel data (``pixel_data_offset``, never the segment frames), an SR whole only
if it is within ``results_max_header_mb``. What counts as critical is documented in
``noctis.dicom.analysis``; a critical result calls ``core.workflow.flag_critical`` (the study
becomes STAT, one critical-result notification, once per study).

Who sent it comes from the audit trail: the first store (C-STORE, per association and study)
or STOW event of the study written at or after the instance was stored. A C-STORE's event is
written when its association ends, so results still without a sender are looked at again for
``SENDER_PATIENCE``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, flag_critical
from noctis.dicom.analysis import RESULT_CLASSES, SEG_CLASSES, ResultSummary, summarise
from noctis.dicom.header import MalformedDicom, read_header
from noctis.index.accounts import AuditRow
from noctis.index.models import Facility, Instance, Series, Study, utcnow
from noctis.index.reports import ReportVersion
from noctis.index.results import AnalysisResult, ResultScan
from noctis.storage import ObjectNotFound, StorageUnavailable

log = logging.getLogger(__name__)

RESULTS_ACTOR = Actor.system("results")
# An instance is looked at once stored this long ago: on PostgreSQL a transaction that took a
# lower id may commit after one that took a higher id, and the scan must not pass it unseen.
SETTLE_SECONDS = 0.5
SENDER_PATIENCE = timedelta(minutes=15)
# Instances below the watermark without a result are looked at again while this recent.
LATE_WINDOW = timedelta(minutes=10)
STORE_ACTIONS = ("store", "stow")  # audit actions of C-STORE (per association) and STOW-RS


@dataclass(frozen=True)
class _Candidate:
    instance_pk: int
    facility_id: int
    study_pk: int
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    object_key: str
    pixel_data_offset: int | None
    size_bytes: int


def critical_codes(facility: Facility, settings_codes: Iterable[str]) -> list[str]:
    """The codes that make a result critical in ``facility``: its spec's
    ``criticalFindingCodes`` and the archive's ``results_critical_codes``."""
    listed = (facility.spec or {}).get("criticalFindingCodes") or []
    return [*listed, *settings_codes]


def scan_results(runtime: Runtime) -> int:
    """Record the results among the instances stored since the last scan (and those a late
    commit hid from an earlier scan); how many."""
    settings = runtime.settings
    batch = settings.results_scan_batch
    with runtime.reader() as session:  # a read: on SQLite no write lock while nothing is new
        scanned_to = _watermark(runtime, session)
        upper = _window_end(session, scanned_to, batch)
        late = _late_candidates(session, scanned_to, batch)
        fresh = _candidates(session, scanned_to, upper) if upper is not None else []
        facility_ids = {c.facility_id for c in [*late, *fresh]}
        codes = _codes_by_facility(session, facility_ids, settings)
    summaries: list[tuple[_Candidate, ResultSummary]] = []
    for candidate in late:
        summary = _try_summary(runtime, candidate, codes[candidate.facility_id])
        if summary is not None and summary is not _UNREADABLE_NOW:
            summaries.append((candidate, summary))
    end = scanned_to if upper is None else upper
    for candidate in fresh:
        summary = _try_summary(runtime, candidate, codes[candidate.facility_id])
        if summary is _UNREADABLE_NOW:
            end = candidate.instance_pk - 1  # the next scan starts with this one
            break
        if summary is not None:
            summaries.append((candidate, summary))
    recorded = 0
    if end > scanned_to or summaries:
        recorded = _record(runtime, scanned_to, end, summaries)
    fill_senders(runtime)
    return recorded


def _window_end(session: Session, scanned_to: int, batch: int) -> int | None:
    """The last instance id this scan looks at: at most ``batch`` instances after the
    watermark, all settled, stopping before the first one that is not."""
    settled = utcnow() - timedelta(seconds=SETTLE_SECONDS)
    first_unsettled = session.scalar(
        select(func.min(Instance.id)).where(Instance.id > scanned_to, Instance.created_at > settled)
    )
    window = select(Instance.id).where(Instance.id > scanned_to)
    if first_unsettled is not None:
        window = window.where(Instance.id < first_unsettled)
    ids = window.order_by(Instance.id).limit(batch).subquery()
    upper = session.scalar(select(func.max(ids.c.id)))
    return None if upper is None else int(upper)


def _late_candidates(session: Session, scanned_to: int, batch: int) -> list[_Candidate]:
    """Results just below the watermark that have no record: on PostgreSQL an instance whose
    transaction committed after the scan passed its id (a sequence number is taken before the
    commit). Only recent ones, so an upgrade never raises old results as new."""
    recent = utcnow() - LATE_WINDOW
    return _candidates(
        session,
        scanned_to - batch,
        scanned_to,
        AnalysisResult.id.is_(None),
        Instance.created_at >= recent,
    )


_UNREADABLE_NOW = ResultSummary("")  # the store could not say: try again at the next scan


def _try_summary(runtime: Runtime, candidate: _Candidate, codes: list[str]) -> ResultSummary | None:
    try:
        return _read_summary(runtime, candidate, codes)
    except (StorageUnavailable, OSError):
        log.warning(
            "results: cannot read %s now; trying again at the next scan",
            candidate.sop_instance_uid,
            exc_info=True,
        )
        return _UNREADABLE_NOW


def _watermark(runtime: Runtime, session: Session) -> int:
    scanned_to = session.scalar(select(ResultScan.scanned_to).where(ResultScan.id == 1))
    if scanned_to is None:  # the migration writes the row; a test may have removed it
        try:
            with runtime.sessions.begin() as writer:
                writer.add(ResultScan(id=1, scanned_to=0))
        except IntegrityError:  # another worker wrote it first
            pass
        return 0
    return int(scanned_to)


def _candidates(session: Session, after: int, upper: int, *conditions: Any) -> list[_Candidate]:
    rows = session.execute(
        select(
            Instance.id,
            Instance.facility_id,
            Series.study_pk,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.sop_class_uid,
            Instance.object_key,
            Instance.pixel_data_offset,
            Instance.size_bytes,
        )
        .join(Series, Series.id == Instance.series_pk)
        .outerjoin(AnalysisResult, AnalysisResult.instance_pk == Instance.id)
        .where(
            Instance.id > after,
            Instance.id <= upper,
            Instance.sop_class_uid.in_(sorted(RESULT_CLASSES)),
            # A report's own Basic Text SR is the radiologist's, not an analysis result.
            ~exists().where(ReportVersion.sr_sop_instance_uid == Instance.sop_instance_uid),
            *conditions,
        )
        .order_by(Instance.id)
    )
    return [_Candidate(*row) for row in rows]


def _codes_by_facility(
    session: Session, facility_ids: Collection[int], settings: Any
) -> dict[int, list[str]]:
    if not facility_ids:
        return {}
    facilities = session.scalars(select(Facility).where(Facility.id.in_(sorted(facility_ids))))
    return {f.id: critical_codes(f, settings.results_critical_codes) for f in facilities}


def _read_summary(
    runtime: Runtime, candidate: _Candidate, codes: list[str]
) -> ResultSummary | None:
    """The result's summary from its stored header; None if the object is gone (deleted
    since the scan read the index). Raises StorageUnavailable/OSError when it cannot say."""
    limit = runtime.settings.results_max_header_mb << 20
    kind = "seg" if candidate.sop_class_uid in SEG_CLASSES else "sr"
    header_size = candidate.pixel_data_offset or candidate.size_bytes
    if header_size > limit:
        return ResultSummary(kind, findings=[f"header over {limit >> 20} MB: not summarised"])
    try:
        if candidate.pixel_data_offset:
            data = runtime.store.get_range(candidate.object_key, 0, candidate.pixel_data_offset)
        else:
            data = runtime.store.get(candidate.object_key)
    except ObjectNotFound:
        return None
    try:
        dataset, _ = read_header(io.BytesIO(data))
    except MalformedDicom as exc:
        return ResultSummary(kind, findings=[f"unreadable: {exc}"[:200]])
    return summarise(dataset, codes)


def _record(
    runtime: Runtime,
    scanned_to: int,
    upper: int,
    summaries: list[tuple[_Candidate, ResultSummary]],
) -> int:
    with runtime.sessions.begin() as session:
        moved = session.execute(
            update(ResultScan)
            .where(ResultScan.id == 1, ResultScan.scanned_to == scanned_to)
            .values(scanned_to=upper, updated_at=utcnow())
        )
        if not getattr(moved, "rowcount", 0):
            return 0  # another worker recorded this batch
        # The UPDATE holds the watermark's row: what another worker recorded before is
        # committed and visible now, and nobody records at the same time.
        done = set(
            session.scalars(
                select(AnalysisResult.instance_pk).where(
                    AnalysisResult.instance_pk.in_([c.instance_pk for c, _ in summaries])
                )
            )
        )
        recorded = 0
        for candidate, summary in summaries:
            if (
                candidate.instance_pk in done
                or session.get(Instance, candidate.instance_pk) is None
            ):
                continue  # recorded by another worker, or deleted since
            session.add(_row(candidate, summary))
            recorded += 1
            if summary.critical:
                study = session.get(Study, candidate.study_pk)
                if study is not None:
                    reason = f"{summary.title or 'analysis result'}: {summary.critical_reason}"
                    flag_critical(session, study, actor=RESULTS_ACTOR, reason=reason[:255])
        return recorded


def _row(candidate: _Candidate, summary: ResultSummary) -> AnalysisResult:
    return AnalysisResult(
        facility_id=candidate.facility_id,
        study_pk=candidate.study_pk,
        instance_pk=candidate.instance_pk,
        sop_instance_uid=candidate.sop_instance_uid,
        sop_class_uid=candidate.sop_class_uid,
        series_instance_uid=candidate.series_instance_uid,
        kind=summary.kind,
        title=summary.title[:255],
        summary=summary.as_json(),
        critical=summary.critical,
        critical_reason=summary.critical_reason[:255],
    )


def fill_senders(runtime: Runtime, now: datetime | None = None) -> int:
    """Name the sender of recent results that have none yet, from the audit trail."""
    since = (now or utcnow()) - SENDER_PATIENCE
    found: dict[int, tuple[str, str]] = {}
    with runtime.reader() as session:
        pending = session.execute(
            select(
                AnalysisResult.id,
                AnalysisResult.facility_id,
                Study.study_instance_uid,
                Instance.created_at,
            )
            .join(Study, Study.id == AnalysisResult.study_pk)
            .join(Instance, Instance.id == AnalysisResult.instance_pk)
            .where(AnalysisResult.sender.is_(None), AnalysisResult.recorded_at >= since)
            .limit(500)
        ).all()
        for result_id, facility_id, study_uid, stored_at in pending:
            sender = session.execute(
                select(AuditRow.actor, AuditRow.actor_type)
                .where(
                    AuditRow.facility_id == facility_id,
                    AuditRow.study_instance_uid == study_uid,
                    AuditRow.action.in_(STORE_ACTIONS),
                    AuditRow.at >= stored_at,
                )
                .order_by(AuditRow.at)
                .limit(1)
            ).first()
            if sender is not None:
                found[result_id] = (sender[0], sender[1])
    if found:
        with runtime.sessions.begin() as session:
            for result_id, (actor, actor_type) in found.items():
                session.execute(
                    update(AnalysisResult)
                    .where(AnalysisResult.id == result_id, AnalysisResult.sender.is_(None))
                    .values(sender=actor, sender_type=actor_type)
                )
    return len(found)


def result_summaries(session: Session, study_pks: Collection[int]) -> dict[int, tuple[int, bool]]:
    """``{study_pk: (results, any critical)}`` for the studies that have results (one query;
    for the worklist's rows)."""
    if not study_pks:
        return {}
    critical = func.max(case((AnalysisResult.critical, 1), else_=0))
    rows = session.execute(
        select(AnalysisResult.study_pk, func.count(AnalysisResult.id), critical)
        .where(AnalysisResult.study_pk.in_(sorted(study_pks)))
        .group_by(AnalysisResult.study_pk)
    )
    return {int(pk): (int(count), bool(flag)) for pk, count, flag in rows}


def results_of_study(session: Session, study_pk: int) -> list[AnalysisResult]:
    return list(
        session.scalars(
            select(AnalysisResult)
            .where(AnalysisResult.study_pk == study_pk)
            .order_by(AnalysisResult.id)
        )
    )
