"""The consistency check (objects vs index) and deletion under an S3 object lock."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio.commonconfig import GOVERNANCE
from minio.deleteobjects import DeleteObject
from minio.retention import Retention
from pydicom.uid import generate_uid

from noctis.core.consistency import check_consistency, finding_counts, metrics_text
from noctis.core.deletion import Actor, DeletionRefused, Target, delete, sweep_tombstones
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index import deletion as rows
from noctis.storage.s3 import S3Store
from support.archive import (
    embedded_settings,
    index_counts,
    indexed_objects,
    open_runtime,
    register_facility,
)
from support.incoming import ingest_file

ADMIN = Actor("admin", "user", "127.0.0.1")


def _two_instances(runtime: Runtime, facility: FacilityRef, make_dicom) -> tuple[str, list[str]]:
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid(), generate_uid()]
    for number, sop in enumerate(sops, start=1):
        path = make_dicom(
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            SOPInstanceUID=sop,
            InstanceNumber=number,
        )
        ingest_file(runtime, facility, path)
    return study, sops


def test_orphans_are_removed_after_the_grace_period_and_missing_objects_reported(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, sops = _two_instances(runtime, default_facility, make_dicom)
    objects = indexed_objects(runtime)
    orphan = f"{default_facility.name}/{study}/1.2.3/1.2.3.4.deadbeef.dcm"
    runtime.store.put(orphan, io.BytesIO(b"DICM"), 4)  # a crash between object and index
    runtime.store.purge(objects[sops[1]])  # a row whose object went away

    young = check_consistency(runtime, grace=timedelta(hours=1))
    assert (young.orphans_removed, young.orphans_young) == ([], 1)
    assert runtime.store.exists(orphan)  # possibly a store in progress: never touched
    assert young.missing == [objects[sops[1]]]

    report = check_consistency(runtime, grace=timedelta(0))

    assert report.orphans_removed == [orphan]
    assert not runtime.store.exists(orphan)
    assert report.missing == [objects[sops[1]]]
    assert len(indexed_objects(runtime)) == 2  # a row without its object is never deleted
    counts = finding_counts(runtime).by_kind_and_state
    assert counts == {("orphan", "removed"): 1, ("missing", "open"): 1}
    text = metrics_text(runtime).decode()
    assert 'noctis_consistency_findings{kind="missing",state="open"} 1.0' in text
    assert 'noctis_consistency_findings{kind="orphan",state="removed"} 1.0' in text

    # The object is restored (from a backup): the finding closes at the next check.
    runtime.store.put(objects[sops[1]], io.BytesIO(b"DICM"), 4)
    assert check_consistency(runtime, grace=timedelta(0)).missing == []
    assert finding_counts(runtime).by_kind_and_state[("missing", "resolved")] == 1


def test_derived_data_of_a_series_gone_from_the_index_is_an_orphan(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, sops = _two_instances(runtime, default_facility, make_dicom)
    series = _series_of(runtime, sops[0])
    kept = f"derived/{default_facility.name}/{study}/{series}/metadata.json"
    stale = f"derived/{default_facility.name}/{study}/1.2.999/metadata.json"
    for key in (kept, stale):
        runtime.store.put(key, io.BytesIO(b"{}"), 2)

    report = check_consistency(runtime, grace=timedelta(0))

    assert report.orphans_removed == [stale]
    assert runtime.store.exists(kept) and not runtime.store.exists(stale)


def test_objects_being_deleted_are_not_orphans(
    runtime: Runtime, default_facility: FacilityRef, make_dicom
) -> None:
    study, _ = _two_instances(runtime, default_facility, make_dicom)
    delete(runtime, Target(default_facility.id, study), ADMIN)  # tombstoned, not yet swept
    report = check_consistency(runtime, grace=timedelta(0))
    assert (report.orphans_removed, report.missing) == ([], [])
    assert sweep_tombstones(runtime).removed == 3


def test_one_checker_at_a_time_and_once_per_interval(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        lease = timedelta(minutes=5)
        assert rows.claim_lease(session, "consistency", "another", lease, scheduled=False)
    assert check_consistency(runtime).skipped  # another replica is checking
    assert check_consistency(runtime, scheduled=True).skipped
    with runtime.sessions.begin() as session:
        rows.release_lease(session, "consistency", "another", None)

    assert not check_consistency(runtime, scheduled=True).skipped
    # Checked: the other replicas' periodic jobs wait for the next interval, on demand runs.
    assert check_consistency(runtime, scheduled=True).skipped
    assert not check_consistency(runtime).skipped


@pytest.fixture
def locked_runtime(s3_server, tmp_path: Path) -> Iterator[Runtime]:
    """SQLite index and an S3 bucket made with object lock (hence versioning) on."""
    s3_server.up()
    bucket = f"locked-{secrets.token_hex(6)}"
    client = s3_server.client()
    client.make_bucket(bucket, object_lock=True)
    store = S3Store.connect(
        s3_server.endpoint,
        bucket,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        spool_dir=tmp_path / "spool",
    )
    (tmp_path / "spool").mkdir()
    runtime = open_runtime(embedded_settings(tmp_path), store=store)
    yield runtime
    runtime.close()
    versions = client.list_objects(bucket, recursive=True, include_version=True)
    doomed = [DeleteObject(v.object_name, v.version_id) for v in versions if v.object_name]
    for error in client.remove_objects(bucket, doomed, bypass_governance_mode=True):
        print("could not remove", error)
    client.remove_bucket(bucket)


def test_an_object_lock_refuses_deletion_with_its_date(locked_runtime: Runtime, make_dicom):
    runtime = locked_runtime
    facility = register_facility(runtime, "north")
    study, sops = _two_instances(runtime, facility, make_dicom)
    objects = indexed_objects(runtime)
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    store = runtime.store
    assert isinstance(store, S3Store)
    store.client.set_object_retention(store.bucket, objects[sops[0]], Retention(GOVERNANCE, until))
    before = index_counts(runtime)

    with pytest.raises(DeletionRefused, match=r"object lock .* until") as refused:
        delete(runtime, Target(facility.id, study), ADMIN)

    assert refused.value.retain_until == until
    assert index_counts(runtime) == before
    assert all(store.exists(key) for key in objects.values())
    # The other instance is not retained: it goes, every version of it.
    series = _series_of(runtime, sops[1])
    assert delete(runtime, Target(facility.id, study, series, sops[1]), ADMIN).instances == 1
    assert sweep_tombstones(runtime).failed == 0
    left = store.client.list_objects(store.bucket, prefix=objects[sops[1]], include_version=True)
    assert [v.version_id for v in left] == []


def _series_of(runtime: Runtime, sop: str) -> str:
    from sqlalchemy import select

    from noctis.index.models import Instance, Series

    with runtime.reader() as session:
        return str(
            session.scalar(
                select(Series.series_instance_uid)
                .join(Instance, Instance.series_pk == Series.id)
                .where(Instance.sop_instance_uid == sop)
            )
        )


def test_an_object_locked_after_its_deletion_stays_tombstoned_and_counted(
    locked_runtime: Runtime, make_dicom
) -> None:
    """The lock came between the deletion and the sweep: the sweep cannot remove the object,
    keeps its tombstone (retried at every sweep) and says so in the metrics."""
    runtime = locked_runtime
    facility = register_facility(runtime, "north")
    study, sops = _two_instances(runtime, facility, make_dicom)
    objects = indexed_objects(runtime)
    delete(runtime, Target(facility.id, study), ADMIN)
    store = runtime.store
    assert isinstance(store, S3Store)
    until = datetime.now(UTC) + timedelta(days=1)
    store.client.set_object_retention(store.bucket, objects[sops[0]], Retention(GOVERNANCE, until))

    report = sweep_tombstones(runtime)

    assert report.failed == 1
    assert not store.exists(objects[sops[1]])
    counts = finding_counts(runtime)
    assert (counts.tombstones_pending, counts.tombstones_failing) == (1, 1)
    assert "noctis_deletion_tombstones_failing 1.0" in metrics_text(runtime).decode()
