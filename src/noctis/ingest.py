"""THE write path. DIMSE C-STORE and DICOMweb STOW-RS both store instances through `ingest`.

Order of events, and why:
1. Parse the header (no pixels) and hash the bytes: a malformed data set is refused before
   anything is written.
2. Compare with what the index already holds for this SOP Instance UID: the same bytes again
   are a no-op success; different bytes follow the duplicate policy.
3. Put the object, as received (transfer syntax preserved), under a key no other attempt uses.
4. Upsert patient, study, series and instance in one transaction.
5. Success only after both are durable. If the index write fails, the object is removed, so
   no object is left that the index does not know, and nothing half-indexed remains.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from noctis.archive import Archive
from noctis.dicom.header import InstanceHeader, MalformedDicom, parse_instance_header
from noctis.index.models import Instance, Patient, Series, Study
from noctis.queue import INSTANCE_STORED, facility_queue
from noctis.settings import DuplicatePolicy
from noctis.storage import StorageUnavailable

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20


class IngestOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same bytes were already stored: nothing changed
    REPLACED = "replaced"  # different bytes replaced the earlier ones (policy "replace")


class IngestFailure(StrEnum):
    MALFORMED = "malformed"  # cannot be parsed or lacks required attributes
    MISMATCH = "mismatch"  # the data set does not match what the request announced
    CONFLICT = "conflict"  # different bytes under a stored SOP Instance UID (policy "reject")
    STORAGE_UNAVAILABLE = "storage-unavailable"
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
    archive: Archive,
    facility: FacilityRef,
    path: Path,
    *,
    expected_sop_class_uid: str | None = None,
    expected_sop_instance_uid: str | None = None,
) -> IngestResult:
    """Store the Part 10 file at ``path`` for ``facility``; raise IngestError on failure."""
    try:
        header = parse_instance_header(path)
    except MalformedDicom as exc:
        raise IngestError(IngestFailure.MALFORMED, str(exc)) from exc
    _check_expected(header, expected_sop_class_uid, expected_sop_instance_uid)
    size, digest = _size_and_sha256(path)

    existing = _existing_instance(archive, facility, header.sop_instance_uid)
    if existing is not None:
        if existing.sha256 == digest:
            return IngestResult(IngestOutcome.DUPLICATE, header, existing.object_key, size, digest)
        if archive.settings.duplicate_policy is DuplicatePolicy.REJECT:
            raise IngestError(
                IngestFailure.CONFLICT,
                f"SOP Instance {header.sop_instance_uid} is already stored with different content",
            )

    key = _new_object_key(facility, header)
    try:
        with path.open("rb") as stream:
            archive.store.put(key, stream, size)
    except (StorageUnavailable, OSError) as exc:
        raise IngestError(IngestFailure.STORAGE_UNAVAILABLE, f"object store failed: {exc}") from exc
    except Exception as exc:
        raise IngestError(
            IngestFailure.STORAGE_UNAVAILABLE, f"object store failed: {type(exc).__name__}: {exc}"
        ) from exc

    try:
        outcome, replaced_key = _index(archive, facility, header, key, size, digest)
    except _SameContentRace as race:
        _remove_object(archive, key)
        return IngestResult(IngestOutcome.DUPLICATE, header, race.object_key, size, digest)
    except IngestError:
        _remove_object(archive, key)
        raise
    except Exception as exc:
        _remove_object(archive, key)
        reason = type(exc).__name__ if isinstance(exc, SQLAlchemyError) else str(exc)
        raise IngestError(IngestFailure.INDEX_UNAVAILABLE, f"index write failed: {reason}") from exc

    if replaced_key:
        _remove_object(archive, replaced_key)
    archive.queue.send(
        INSTANCE_STORED,
        queue=facility_queue(facility.name),
        facility=facility.name,
        study_instance_uid=header.study_instance_uid,
        series_instance_uid=header.series_instance_uid,
        sop_instance_uid=header.sop_instance_uid,
    )
    return IngestResult(outcome, header, key, size, digest)


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


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _new_object_key(facility: FacilityRef, header: InstanceHeader) -> str:
    # A fresh suffix per attempt: a failed attempt can always remove its own object without
    # touching an object that a concurrent attempt (same instance, same bytes) committed.
    suffix = uuid.uuid4().hex[:16]
    return (
        f"{facility.name}/{header.study_instance_uid}/{header.series_instance_uid}/"
        f"{header.sop_instance_uid}.{suffix}.dcm"
    )


def _existing_instance(archive: Archive, facility: FacilityRef, sop_uid: str) -> Instance | None:
    try:
        with archive.sessions() as session:
            return session.scalar(_instance_query(facility.id, sop_uid))
    except SQLAlchemyError as exc:
        raise IngestError(
            IngestFailure.INDEX_UNAVAILABLE, f"index unavailable: {type(exc).__name__}"
        ) from exc


def _instance_query(facility_id: int, sop_uid: str) -> Select[tuple[Instance]]:
    return select(Instance).where(
        Instance.facility_id == facility_id, Instance.sop_instance_uid == sop_uid
    )


def _remove_object(archive: Archive, key: str) -> None:
    try:
        archive.store.delete(key)
    except Exception:
        # The object is unreferenced; an orphan sweep can remove it later. Never mask the
        # original failure with this one.
        log.exception("could not remove unreferenced object %s", key)


class _SameContentRace(Exception):
    """A concurrent attempt committed the same instance with the same bytes first."""

    def __init__(self, object_key: str) -> None:
        self.object_key = object_key


def _index(
    archive: Archive,
    facility: FacilityRef,
    header: InstanceHeader,
    key: str,
    size: int,
    digest: str,
) -> tuple[IngestOutcome, str | None]:
    now = datetime.now(UTC)
    with archive.sessions.begin() as session:
        patient_pk = _upsert_patient(session, facility.id, header)
        study_pk = _insert_or_get(
            session,
            Study,
            {
                "facility_id": facility.id,
                "study_instance_uid": header.study_instance_uid,
                "patient_pk": patient_pk,
                "study_date": header.study_date,
                "study_time": header.study_time,
                "accession_number": header.accession_number,
                "study_id": header.study_id,
                "study_description": header.study_description,
                "referring_physician_name": header.referring_physician_name,
                "created_at": now,
                "updated_at": now,
            },
            ("facility_id", "study_instance_uid"),
        )[0]
        # Lock the study row first: writers of one study serialize here, so counters and
        # ModalitiesInStudy stay exact with several SCP processes.
        session.execute(update(Study).where(Study.id == study_pk).values(updated_at=now))
        series_pk, series_is_new = _insert_or_get(
            session,
            Series,
            {
                "facility_id": facility.id,
                "study_pk": study_pk,
                "series_instance_uid": header.series_instance_uid,
                "modality": header.modality,
                "series_number": header.series_number,
                "series_description": header.series_description,
                "body_part_examined": header.body_part_examined,
                "series_date": header.series_date,
                "series_time": header.series_time,
                "created_at": now,
                "updated_at": now,
            },
            ("facility_id", "series_instance_uid"),
        )
        instance_values = {
            "facility_id": facility.id,
            "series_pk": series_pk,
            "sop_instance_uid": header.sop_instance_uid,
            "sop_class_uid": header.sop_class_uid,
            "instance_number": header.instance_number,
            "transfer_syntax_uid": header.transfer_syntax_uid,
            "rows": header.rows,
            "columns": header.columns,
            "number_of_frames": header.number_of_frames,
            "pixel_data_offset": header.pixel_data_offset,
            "object_key": key,
            "size_bytes": size,
            "sha256": digest,
            "created_at": now,
        }
        existing = session.scalar(
            _instance_query(facility.id, header.sop_instance_uid).with_for_update()
        )
        if existing is not None:
            return _replace(session, existing, instance_values, digest, now)
        _, inserted = _insert_or_get(
            session, Instance, instance_values, ("facility_id", "sop_instance_uid")
        )
        if not inserted:
            raise IngestError(IngestFailure.INDEX_UNAVAILABLE, "concurrent write, retry")
        session.execute(
            update(Series)
            .where(Series.id == series_pk)
            .values(number_of_instances=Series.number_of_instances + 1, updated_at=now)
        )
        study_changes: dict[str, Any] = {
            "number_of_instances": Study.number_of_instances + 1,
            "size_bytes": Study.size_bytes + size,
        }
        if series_is_new:
            study_changes["number_of_series"] = Study.number_of_series + 1
            study_changes["modalities_in_study"] = _modalities(session, study_pk)
        session.execute(update(Study).where(Study.id == study_pk).values(**study_changes))
    return IngestOutcome.STORED, None


def _replace(
    session: Session,
    existing: Instance,
    values: dict[str, Any],
    digest: str,
    now: datetime,
) -> tuple[IngestOutcome, str | None]:
    if existing.sha256 == digest:
        raise _SameContentRace(existing.object_key)
    if values["series_pk"] != existing.series_pk:
        raise IngestError(
            IngestFailure.CONFLICT,
            "a replacement may not move an instance to another series",
        )
    old_key, old_size = existing.object_key, existing.size_bytes
    for name, value in values.items():
        setattr(existing, name, value)
    series = session.get(Series, existing.series_pk)
    assert series is not None
    session.execute(
        update(Study)
        .where(Study.id == series.study_pk)
        .values(size_bytes=Study.size_bytes + values["size_bytes"] - old_size, updated_at=now)
    )
    return IngestOutcome.REPLACED, old_key


def _modalities(session: Session, study_pk: int) -> str:
    found = session.scalars(
        select(Series.modality).where(Series.study_pk == study_pk).distinct()
    ).all()
    return "\\".join(sorted(m for m in found if m))


def _upsert_patient(session: Session, facility_id: int, header: InstanceHeader) -> int:
    values = {
        "facility_id": facility_id,
        "patient_id": header.patient_id,
        "patient_name": header.patient_name,
        "patient_birth_date": header.patient_birth_date,
        "patient_sex": header.patient_sex,
    }
    statement = _dialect_insert(session, Patient).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["facility_id", "patient_id"],
        set_={
            "patient_name": statement.excluded.patient_name,
            "patient_birth_date": statement.excluded.patient_birth_date,
            "patient_sex": statement.excluded.patient_sex,
        },
    ).returning(Patient.id)
    return int(session.execute(statement).scalar_one())


def _insert_or_get(
    session: Session, model: type[Any], values: dict[str, Any], unique: tuple[str, ...]
) -> tuple[int, bool]:
    """Insert unless a row with the same unique key exists; (primary key, inserted?)."""
    statement = (
        _dialect_insert(session, model)
        .values(values)
        .on_conflict_do_nothing(index_elements=list(unique))
        .returning(model.id)
    )
    pk = session.execute(statement).scalar()
    if pk is not None:
        return int(pk), True
    where = [getattr(model, column) == values[column] for column in unique]
    return int(session.execute(select(model.id).where(*where)).scalar_one()), False


def _dialect_insert(session: Session, model: type[Any]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"the index supports PostgreSQL and SQLite, not {dialect}")
