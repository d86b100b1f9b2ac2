"""Retention per facility: studies past it are deleted through the deletion path (audited,
objects swept), never one on legal hold, never another facility's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid
from sqlalchemy import select, update

from noctis.core.deletion import Actor, place_hold, sweep_tombstones
from noctis.core.facilities import apply_facility
from noctis.core.ingest import FacilityRef
from noctis.core.retention import expire_studies
from noctis.core.runtime import Runtime
from noctis.index.accounts import AuditRow
from noctis.index.models import Study
from noctis.specs.facility import FacilitySpec
from support.archive import indexed_objects, stored_object_keys
from support.incoming import ingest_file


def _facility(runtime: Runtime, name: str, retention: dict | None) -> FacilityRef:
    spec = FacilitySpec.model_validate({"displayName": name, "retention": retention})
    with runtime.sessions.begin() as session:
        row = apply_facility(session, name, spec)
        return FacilityRef(row.id, row.name)


def _study(runtime, facility, make_dicom, *, received_days_ago: int, study_date: str) -> str:
    study = generate_uid()
    ingest_file(runtime, facility, make_dicom(StudyInstanceUID=study, StudyDate=study_date))
    with runtime.sessions.begin() as session:
        session.execute(
            update(Study)
            .where(Study.study_instance_uid == study)
            .values(created_at=datetime.now(UTC) - timedelta(days=received_days_ago))
        )
    return study


def _studies(runtime: Runtime) -> set[str]:
    with runtime.reader() as session:
        return set(session.scalars(select(Study.study_instance_uid)))


def test_retention_deletes_what_is_past_it_and_nothing_else(runtime: Runtime, make_dicom) -> None:
    received = _facility(runtime, "received", {"days": 30, "after": "received"})
    dated = _facility(runtime, "dated", {"days": 365, "after": "studyDate"})
    forever = _facility(runtime, "forever", None)
    today = datetime.now(UTC).strftime("%Y%m%d")
    old_received = _study(runtime, received, make_dicom, received_days_ago=40, study_date=today)
    new_received = _study(runtime, received, make_dicom, received_days_ago=2, study_date="19990101")
    held = _study(runtime, received, make_dicom, received_days_ago=40, study_date=today)
    place_hold(runtime, received.id, held, "litigation", Actor("admin", "user", "127.0.0.1"))
    old_dated = _study(runtime, dated, make_dicom, received_days_ago=1, study_date="20000101")
    new_dated = _study(runtime, dated, make_dicom, received_days_ago=900, study_date=today)
    undated = _study(runtime, dated, make_dicom, received_days_ago=900, study_date="")
    kept = _study(runtime, forever, make_dicom, received_days_ago=9000, study_date="19900101")

    report = expire_studies(runtime)

    assert report.deleted == {"received": 1, "dated": 2}
    assert _studies(runtime) == {new_received, held, new_dated, kept}
    assert old_received not in _studies(runtime) and undated not in _studies(runtime)
    assert old_dated not in _studies(runtime)
    sweep_tombstones(runtime)
    assert stored_object_keys(runtime.store) == set(indexed_objects(runtime).values())
    runtime.audit.flush()
    with runtime.reader() as session:
        events = session.scalars(select(AuditRow).where(AuditRow.action == "delete")).all()
    assert {(e.actor, e.outcome) for e in events} == {("retention", "success")}
    assert {e.study_instance_uid for e in events} == {old_received, old_dated, undated}
    assert expire_studies(runtime).deleted == {}  # nothing more to do


def test_the_periodic_run_happens_once_per_interval_across_replicas(runtime: Runtime) -> None:
    assert not expire_studies(runtime, scheduled=True).skipped
    assert expire_studies(runtime, scheduled=True).skipped  # another replica's turn came early
    assert not expire_studies(runtime).skipped  # on demand (tests, tools): always
