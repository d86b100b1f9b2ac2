"""THE write path. DIMSE C-STORE and DICOMweb STOW-RS both store instances through `ingest`.

Each writes the instance as received into the store's writer for incoming data
(`noctis.storage.incoming`: spooled, sized and hashed as it arrives) and hands that over.
Order of events, and why:
1. Walk the data set's structure to its last byte, check its pixel data length and UIDs,
   parse the header (no pixels decoded) and hash the data set (not the sender's File Meta):
   a damaged data set is refused before anything is written.
2. Compare with what the index already holds for this SOP Instance UID: the same data set
   again is a no-op success; another one follows the duplicate policy (keep the first and
   answer Success, the default; reject; or replace).
3. Check the facility's quota (`noctis.core.quota`): a facility at or over it stores nothing
   new (a duplicate above stored no new bytes, so it still succeeds). Then commit the incoming
   object, as received (transfer syntax preserved), in the facility's storage pool
   (`noctis.storage.pools`), under a key no other attempt uses.
4. Upsert patient, study, series and instance in one transaction, filed only where the index
   admits it (`noctis.index.backend`: a series stays with its study, a study with its patient).
5. Success only after both are durable. If the index write fails, the object is removed, so
   no object is left that the index does not know, and nothing half-indexed remains.
6. What needs an administrator's eye (demographics that differ from those stored, a discarded
   duplicate) is audited and counted (`noctis.core.reconciliation`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError

from noctis.core import quota_metrics, reconciliation
from noctis.core.quota import FacilityUsage, QuotaExceeded
from noctis.core.reconciliation import UNKNOWN_SENDER, Sender
from noctis.core.runtime import Runtime
from noctis.dicom.data_set_digest import DataSetDigest
from noctis.dicom.header import InstanceHeader, MalformedDicom, read_checked_header
from noctis.index.backend import (
    DemographicsConflict,
    DifferentContent,
    IndexedInstance,
    InstanceRecord,
    MovedInstance,
    SameContent,
    SeriesOfAnotherStudy,
    StoredContent,
    StudyOfAnotherPatient,
)
from noctis.settings import DuplicatePolicy
from noctis.storage import IncomingObject, StorageUnavailable
from noctis.storage.pools import commit_incoming, key_for_pool

log = logging.getLogger(__name__)


class IngestOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same data set was already stored: nothing changed
    DISCARDED = "discarded"  # another data set was stored first and kept (policy "keep-first")
    REPLACED = "replaced"  # another data set replaced the earlier one (policy "replace")


class IngestFailure(StrEnum):
    MALFORMED = "malformed"  # damaged, cannot be parsed, invalid UIDs or required ones missing
    MISMATCH = "mismatch"  # the data set does not match what the request announced
    CONFLICT = "conflict"  # another data set under a stored SOP Instance UID (policy "reject")
    SERIES_OF_ANOTHER_STUDY = "series-of-another-study"  # the series is filed under another study
    STUDY_OF_ANOTHER_PATIENT = "study-of-another-patient"  # the study is another patient's
    STORAGE_UNAVAILABLE = "storage-unavailable"
    QUOTA_EXCEEDED = "quota-exceeded"  # the facility is at or over a quota (noctis.core.quota)
    POOL_UNAVAILABLE = "pool-unavailable"  # the facility's storage pool is not configured here
    INDEX_UNAVAILABLE = "index-unavailable"


class IngestError(Exception):
    def __init__(self, failure: IngestFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


@dataclass(frozen=True)
class FacilityRef:
    id: int
    name: str


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    header: InstanceHeader
    object_key: str
    size: int
    sha256: str


def ingest(
    runtime: Runtime,
    facility: FacilityRef,
    incoming: IncomingObject,
    *,
    expected_sop_class_uid: str | None = None,
    expected_sop_instance_uid: str | None = None,
    sender: Sender = UNKNOWN_SENDER,
) -> IngestResult:
    """Store the Part 10 instance written into ``incoming`` for ``facility``; raise IngestError
    on failure. The caller closes ``incoming`` afterwards (kept or not, its spool goes).

    ``sender``: who the audit trail names for what needs reconciling.
    """
    try:
        source = incoming.reader()
    except OSError as exc:
        raise IngestError(
            IngestFailure.STORAGE_UNAVAILABLE, f"could not spool the data set: {exc}"
        ) from exc
    try:  # structure to the last byte, pixel data against the header, UIDs (PS3.5 9.1)
        header = read_checked_header(source, max_inflated=runtime.settings.max_inflated_mb << 20)
    except MalformedDicom as exc:
        raise IngestError(IngestFailure.MALFORMED, str(exc)) from exc
    _check_expected(header, expected_sop_class_uid, expected_sop_instance_uid)
    size, digest = incoming.size, incoming.sha256
    policy = runtime.settings.duplicate_policy

    existing = _existing_instance(runtime, facility, header.sop_instance_uid)
    if existing is not None:
        if _same_data_set(runtime, existing, digest):
            return IngestResult(IngestOutcome.DUPLICATE, header, existing.object_key, size, digest)
        if policy is DuplicatePolicy.REJECT:
            raise _different_content(header)
        if policy is DuplicatePolicy.KEEP_FIRST:
            return _discard(runtime, facility, sender, header, existing, size, digest)

    usage = _check_quota(runtime, facility, header, size)
    key = _new_object_key(runtime, facility, header, usage.storage_pool)
    try:
        commit_incoming(runtime.store, incoming, key)
    except (StorageUnavailable, OSError) as exc:
        raise IngestError(IngestFailure.STORAGE_UNAVAILABLE, f"object store failed: {exc}") from exc
    except Exception as exc:
        raise IngestError(
            IngestFailure.STORAGE_UNAVAILABLE, f"object store failed: {type(exc).__name__}: {exc}"
        ) from exc

    try:
        outcome, indexed = _index(runtime, facility, header, key, size, digest)
    except SameContent as race:
        _remove_object(runtime, key)
        return IngestResult(IngestOutcome.DUPLICATE, header, race.object_key, size, digest)
    except DifferentContent as race:  # stored by a concurrent sender since our look-up
        _remove_object(runtime, key)
        if policy is not DuplicatePolicy.KEEP_FIRST:
            raise _different_content(header) from race
        return _discard(runtime, facility, sender, header, None, size, digest)
    except IngestError:
        _remove_object(runtime, key)
        raise
    except Exception as exc:
        _remove_object(runtime, key)
        reason = type(exc).__name__ if isinstance(exc, SQLAlchemyError) else str(exc)
        raise IngestError(IngestFailure.INDEX_UNAVAILABLE, f"index write failed: {reason}") from exc

    runtime.quotas.stored(facility.id, size)
    if indexed.replaced_key:
        _remove_object(runtime, indexed.replaced_key)
    if indexed.conflict is not None:
        _record_conflict(runtime, facility, sender, header, indexed.conflict)
    runtime.notices.stored(
        facility.name,
        header.study_instance_uid,
        header.series_instance_uid,
        header.sop_instance_uid,
        indexed.series_instances,
    )
    return IngestResult(outcome, header, key, size, digest)


def _different_content(header: InstanceHeader) -> IngestError:
    return IngestError(
        IngestFailure.CONFLICT,
        f"SOP Instance {header.sop_instance_uid} is already stored with a different data set",
    )


def _discard(
    runtime: Runtime,
    facility: FacilityRef,
    sender: Sender,
    header: InstanceHeader,
    kept: StoredContent | None,
    size: int,
    digest: str,
) -> IngestResult:
    """Policy keep-first: the stored instance stays, this copy is audited, counted and
    dropped, and the sender is answered Success."""
    if kept is None:
        kept = _existing_instance(runtime, facility, header.sop_instance_uid)
    log.warning(
        "SOP Instance %s arrived again with a different data set: the first one is kept",
        header.sop_instance_uid,
    )
    reconciliation.duplicate_discarded(
        runtime,
        facility.id,
        facility.name,
        sender,
        header,
        kept_sha256=kept.sha256 if kept else None,
        discarded_sha256=digest,
    )
    key = kept.object_key if kept else ""
    return IngestResult(IngestOutcome.DISCARDED, header, key, size, digest)


def _record_conflict(
    runtime: Runtime,
    facility: FacilityRef,
    sender: Sender,
    header: InstanceHeader,
    conflict: DemographicsConflict,
) -> None:
    log.warning(
        "study %s: patient %r demographics differ from the %s's stored ones; stored as "
        "received for this study, recorded for reconciliation",
        header.study_instance_uid,
        header.patient_id,
        conflict.compared_with,
    )
    reconciliation.demographics_conflict(
        runtime, facility.id, facility.name, sender, header, conflict
    )


def _check_expected(
    header: InstanceHeader, sop_class: str | None, sop_instance: str | None
) -> None:
    if sop_class and header.sop_class_uid != sop_class:
        raise IngestError(
            IngestFailure.MISMATCH,
            f"data set SOP Class {header.sop_class_uid} does not match the request's {sop_class}",
        )
    if sop_instance and header.sop_instance_uid != sop_instance:
        raise IngestError(
            IngestFailure.MISMATCH,
            f"data set SOP Instance {header.sop_instance_uid} does not match the request's "
            f"{sop_instance}",
        )


def _same_data_set(runtime: Runtime, existing: StoredContent, digest: str) -> bool:
    """Whether the stored instance holds this data set. Rows indexed before migration 0004 hold
    the digest of the whole file, File Meta included: when the digests differ, the stored
    object's data set is hashed again (a rare path: a re-send with other bytes), so that an
    instance stored then and sent again unchanged is still a plain duplicate."""
    if existing.sha256 == digest:
        return True
    recomputed = DataSetDigest()
    try:
        for chunk in runtime.store.iter_chunks(existing.object_key):
            recomputed.update(chunk)
    except Exception:  # a missing or unreadable object is not this data set
        log.warning("could not re-read stored object %s", existing.object_key, exc_info=True)
        return False
    return recomputed.hexdigest() == digest


def _check_quota(
    runtime: Runtime, facility: FacilityRef, header: InstanceHeader, size: int
) -> FacilityUsage:
    """The facility's usage (and storage pool); IngestError unless ``size`` more bytes of
    this study fit in its quotas."""
    try:
        return runtime.quotas.check(facility.id, header.study_instance_uid, size)
    except QuotaExceeded as exc:
        log.warning(
            "facility %s at its quota: SOP Instance %s refused (%s)",
            facility.name,
            header.sop_instance_uid,
            exc.message,
        )
        quota_metrics.refused(facility.name, exc.quota)
        raise IngestError(IngestFailure.QUOTA_EXCEEDED, exc.message) from exc
    except (SQLAlchemyError, LookupError) as exc:
        raise IngestError(
            IngestFailure.INDEX_UNAVAILABLE, f"index unavailable: {type(exc).__name__}"
        ) from exc


def _new_object_key(
    runtime: Runtime, facility: FacilityRef, header: InstanceHeader, pool: str | None
) -> str:
    # A fresh suffix per attempt: a failed attempt can always remove its own object without
    # touching an object that a concurrent attempt (same instance, same bytes) committed.
    suffix = uuid.uuid4().hex[:16]
    key = (
        f"{facility.name}/{header.study_instance_uid}/{header.series_instance_uid}/"
        f"{header.sop_instance_uid}.{suffix}.dcm"
    )
    if pool == runtime.settings.storage_pool:
        pool = None  # the Archive's own pool: the default store
    try:
        return key_for_pool(runtime.store, pool, key)
    except StorageUnavailable as exc:
        log.error("facility %s names a storage pool this process lacks: %s", facility.name, exc)
        raise IngestError(IngestFailure.POOL_UNAVAILABLE, str(exc)) from exc


def _existing_instance(
    runtime: Runtime, facility: FacilityRef, sop_uid: str
) -> StoredContent | None:
    try:
        return runtime.index.find_content(facility.id, sop_uid)
    except SQLAlchemyError as exc:
        raise IngestError(
            IngestFailure.INDEX_UNAVAILABLE, f"index unavailable: {type(exc).__name__}"
        ) from exc


def _remove_object(runtime: Runtime, key: str) -> None:
    try:
        runtime.store.delete(key)
    except Exception:
        # The object is unreferenced: the consistency check removes it after its grace period
        # (noctis.core.consistency). Never mask the original failure with this one.
        log.exception("could not remove unreferenced object %s", key)


def _index(
    runtime: Runtime,
    facility: FacilityRef,
    header: InstanceHeader,
    key: str,
    size: int,
    digest: str,
) -> tuple[IngestOutcome, IndexedInstance]:
    """The outcome and what the index write reports (a replaced object, the series' count, a
    demographics conflict); DifferentContent passes through (the caller applies the policy)."""
    replace = runtime.settings.duplicate_policy is DuplicatePolicy.REPLACE
    record = InstanceRecord(facility.id, header, key, size, digest, datetime.now(UTC), replace)
    try:
        indexed = runtime.index.write_instance(record)
    except MovedInstance as exc:
        raise IngestError(
            IngestFailure.CONFLICT, "a replacement may not move an instance to another series"
        ) from exc
    except SeriesOfAnotherStudy as exc:
        raise IngestError(
            IngestFailure.SERIES_OF_ANOTHER_STUDY,
            f"Series {header.series_instance_uid} belongs to study {exc.study_instance_uid}, "
            f"not {header.study_instance_uid}: refused, nothing stored",
        ) from exc
    except StudyOfAnotherPatient as exc:
        raise IngestError(
            IngestFailure.STUDY_OF_ANOTHER_PATIENT,
            f"Study {header.study_instance_uid} is filed under another patient (PatientID and "
            "IssuerOfPatientID differ): refused, nothing stored",
        ) from exc
    if indexed.replaced_key is not None:
        return IngestOutcome.REPLACED, indexed
    return IngestOutcome.STORED, indexed
