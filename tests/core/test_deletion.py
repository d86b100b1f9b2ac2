"""Deletion through the index and the object store (SQLite + files, PostgreSQL + files,
PostgreSQL + S3): rows go at once, tombstones until the sweep, objects after it; legal holds
refuse; a re-sent instance is stored again; the audit trail names who deleted how much."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from noctis.core.deletion import (
    Actor,
    DeletionRefused,
    NothingToDelete,
    Target,
    clear_hold,
    delete,
    place_hold,
    sweep_tombstones,
)
from noctis.core.ingest import FacilityRef, IngestOutcome
from noctis.core.runtime import Runtime
from noctis.dicom.thumbnail import thumbnail_key
from noctis.index import deletion as rows
from noctis.index.accounts import AuditRow
from noctis.index.models import Study
from noctis.storage.filesystem import FilesystemStore
from support.archive import index_counts, indexed_objects, stored_object_keys
from support.incoming import ingest_file

ADMIN = Actor("admin", "user", "127.0.0.1")


def _store_study(runtime, facility, make_dicom, series_sizes=(3,)):
    """Ingest a study of ``series_sizes`` series; (study UID, series UIDs, SOP UIDs, paths)."""
    study = generate_uid()
    series_uids, sops, paths = [], [], []
    for number, size in enumerate(series_sizes, start=1):
        series_uid = generate_uid()
        series_uids.append(series_uid)
        for instance in range(1, size + 1):
            sop = generate_uid()
            path = make_dicom(
                StudyInstanceUID=study,
                SeriesInstanceUID=series_uid,
                SOPInstanceUID=sop,
                SeriesNumber=number,
                InstanceNumber=instance,
            )
            assert ingest_file(runtime, facility, path).outcome is IngestOutcome.STORED
            sops.append(sop)
            paths.append(path)
    return study, series_uids, sops, paths


def _put_derived(runtime: Runtime, key: str) -> None:
    runtime.store.put(key, io.BytesIO(b"{}"), 2)


def _tombstones(runtime: Runtime) -> int:
    with runtime.reader() as session:
        return rows.pending_tombstones(session)


def _audit(runtime: Runtime, action: str) -> list[AuditRow]:
    runtime.audit.flush()
    with runtime.reader() as session:
        return list(
            session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))
        )


def test_a_deleted_study_vanishes_at_once_and_its_objects_after_the_sweep(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, series, _sops, _ = _store_study(runtime, default_facility, make_dicom, (2, 3))
    keys = set(indexed_objects(runtime).values())
    bundle = f"derived/{default_facility.name}/{study}/{series[0]}/metadata.json"
    _put_derived(runtime, bundle)

    deleted = delete(runtime, Target(default_facility.id, study), ADMIN)

    assert (deleted.instances, deleted.study_removed) == (5, True)
    assert index_counts(runtime) == {"patient": 0, "study": 0, "series": 0, "instance": 0}
    assert keys <= stored_object_keys(runtime.store)  # not yet swept
    assert _tombstones(runtime) == 6  # five objects and the study's derived prefix

    report = sweep_tombstones(runtime)

    assert report.removed == 6 and report.failed == 0
    assert stored_object_keys(runtime.store) == set()
    if isinstance(runtime.store, FilesystemStore):  # no empty study or series directory left
        assert [p.name for p in runtime.store.root.iterdir()] in ([], ["derived"])
        assert not list(runtime.store.root.rglob(f"{study}*"))
    assert _tombstones(runtime) == 0
    [event] = _audit(runtime, "delete")
    assert (event.actor, event.outcome, event.study_instance_uid) == ("admin", "success", study)
    assert event.detail["instances"] == 5
    assert event.detail["bytes"] == deleted.size_bytes > 0
    with pytest.raises(NothingToDelete):  # a second delete finds nothing
        delete(runtime, Target(default_facility.id, study), ADMIN)


def test_deleting_instances_and_series_keeps_the_counts_right(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, series, sops, _ = _store_study(runtime, default_facility, make_dicom, (2, 3))

    kept_size = sum(_size(runtime, sop) for sop in sops if sop != sops[2])
    objects = indexed_objects(runtime)
    thumbnails = {
        sop: thumbnail_key(default_facility.name, study, series[1], objects[sop])
        for sop in sops[2:4]
    }
    for key in thumbnails.values():
        _put_derived(runtime, key)
    one = delete(runtime, Target(default_facility.id, study, series[1], sops[2]), ADMIN)
    assert (one.instances, one.study_removed) == (1, False)
    with runtime.reader() as session:
        row = session.scalars(select(Study).where(Study.study_instance_uid == study)).one()
        assert (row.number_of_instances, row.number_of_series) == (4, 2)
        assert row.size_bytes == kept_size

    sweep_tombstones(runtime)  # the deleted instance's thumbnail goes, its neighbour's stays
    assert not runtime.store.exists(thumbnails[sops[2]])
    assert runtime.store.exists(thumbnails[sops[3]])
    gone = delete(runtime, Target(default_facility.id, study, series[0]), ADMIN)
    assert (gone.instances, gone.study_removed) == (2, False)
    with runtime.reader() as session:
        row = session.scalars(select(Study).where(Study.study_instance_uid == study)).one()
        assert (row.number_of_instances, row.number_of_series) == (2, 1)
    sweep_tombstones(runtime)
    left = set(indexed_objects(runtime).values()) | {thumbnails[sops[3]]}
    assert stored_object_keys(runtime.store) == left
    assert len(indexed_objects(runtime)) == 2


def _size(runtime: Runtime, sop: str) -> int:
    from noctis.index.models import Instance

    with runtime.reader() as session:
        return int(
            session.scalar(select(Instance.size_bytes).where(Instance.sop_instance_uid == sop)) or 0
        )


def test_a_deleted_instance_sent_again_is_stored_again(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, series, sops, paths = _store_study(runtime, default_facility, make_dicom, (2,))
    delete(runtime, Target(default_facility.id, study, series[0], sops[0]), ADMIN)

    # Sent again before the sweep ran: stored under a new key, which no tombstone names.
    assert ingest_file(runtime, default_facility, paths[0]).outcome is IngestOutcome.STORED
    sweep_tombstones(runtime)

    objects = indexed_objects(runtime)
    assert set(objects) == set(sops)
    assert set(objects.values()) == stored_object_keys(runtime.store)


def test_a_legal_hold_refuses_deletion_until_cleared(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, series, sops, _ = _store_study(runtime, default_facility, make_dicom, (2,))
    place_hold(runtime, default_facility.id, study, "litigation 2026-114", ADMIN)
    before = (index_counts(runtime), stored_object_keys(runtime.store))

    for target in (
        Target(default_facility.id, study),
        Target(default_facility.id, study, series[0]),
        Target(default_facility.id, study, series[0], sops[1]),
    ):
        with pytest.raises(DeletionRefused, match=r"legal hold.*litigation 2026-114"):
            delete(runtime, target, ADMIN)

    assert (index_counts(runtime), stored_object_keys(runtime.store)) == before
    assert _tombstones(runtime) == 0
    clear_hold(runtime, default_facility.id, study, ADMIN)
    assert delete(runtime, Target(default_facility.id, study), ADMIN).instances == 2
    holds = [(e.outcome, e.detail["operation"]) for e in _audit(runtime, "legal-hold")]
    assert holds == [("success", "place"), ("success", "clear")]
    refusals = [e for e in _audit(runtime, "delete") if e.outcome == "failure"]
    assert len(refusals) == 3


def test_sweepers_claim_each_tombstone_once(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, *_ = _store_study(runtime, default_facility, make_dicom, (4,))
    delete(runtime, Target(default_facility.id, study), ADMIN)
    lease = timedelta(minutes=5)
    with runtime.sessions.begin() as session:
        first = rows.claim_tombstones(session, 3, lease)
    with runtime.sessions.begin() as session:
        second = rows.claim_tombstones(session, 10, lease)
    with runtime.sessions.begin() as session:
        third = rows.claim_tombstones(session, 10, lease)
    assert len(first) == 3 and len(second) == 2 and third == []
    assert not {t.id for t in first} & {t.id for t in second}
    # A sweeper that dies holding a claim: nobody else takes it until its lease runs out.
    with runtime.sessions.begin() as session:
        assert rows.claim_tombstones(session, 10, lease) == []
    with runtime.sessions.begin() as session:
        session.execute(rows.Tombstone.__table__.update().values(claimed_until=rows.utcnow()))
    assert sweep_tombstones(runtime).removed == 5
    assert stored_object_keys(runtime.store) == set()


def test_two_deletions_of_one_study_at_once_delete_it_once(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    study, *_ = _store_study(runtime, default_facility, make_dicom, (3,))

    def attempt() -> str:
        try:
            return f"deleted {delete(runtime, Target(default_facility.id, study), ADMIN).instances}"
        except NothingToDelete:
            return "not found"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda _: attempt(), range(2)))

    assert outcomes == ["deleted 3", "not found"]
    assert _tombstones(runtime) == 4  # three objects and the derived prefix, written once
